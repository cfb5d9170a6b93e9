//! `cargo xtask lab up|down|clean`: the demo topology by hand, and cleanup of killed runs.

use anyhow::Context as _;

#[derive(Debug, clap::Subcommand)]
pub enum LabAction {
    /// Build the three-area demo topology and leave it running (no agents); prints how to enter it.
    Up,
    /// Remove the topology `lab up` left (and any other lab whose creator has exited).
    Down,
    /// Remove leftovers of killed test runs; with --all, every fieldnet lab namespace.
    Clean {
        /// Also remove labs whose creating process is still running.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(action: LabAction) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::util::is_root(),
        "the lab builds network namespaces: run as root"
    );
    match action {
        LabAction::Up => {
            let mut lab = lab::Lab::new("up").context("creating the lab")?;
            let site = lab
                .site(&lab::SiteSpec::default())
                .context("building the site")?;
            println!("{}", site.describe());
            let first = &site.areas[0];
            println!(
                "Enter a namespace:  ip netns exec {} bash",
                first.clients[0].ns.name()
            );
            println!("Remove it all:      cargo xtask lab down");
            // The topology outlives this process on purpose; `lab down` removes it by its prefix.
            drop(site);
            let prefix = lab.keep();
            println!("Lab {prefix}* is up.");
            Ok(())
        }
        LabAction::Down | LabAction::Clean { all: false } => report(lab::clean_stale()?),
        LabAction::Clean { all: true } => report(lab::clean_all()?),
    }
}

fn report(removed: Vec<String>) -> anyhow::Result<()> {
    if removed.is_empty() {
        println!("no lab namespaces to remove");
    } else {
        println!(
            "removed {} namespaces: {}",
            removed.len(),
            removed.join(" ")
        );
    }
    Ok(())
}
