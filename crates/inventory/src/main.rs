//! `inventory`: wiring only; the agent lives in the library (`edge::agent::run`), the Ansible
//! inventory in `ansible`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::{CommonArgs, EXIT_CONFIG, EXIT_RUNTIME};

/// Finds every device of the site and publishes them for Prometheus, Ansible and the bus.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The devices as an Ansible dynamic inventory, read from the agent's state file (an
    /// inventory script runs `inventory ansible --list` or `--host NAME`).
    Ansible {
        /// Every present device in its groups, with `_meta.hostvars`.
        #[arg(long, conflicts_with = "host")]
        list: bool,
        /// One host's variables.
        #[arg(long)]
        host: Option<String>,
        /// The state file (default: `[inventory] state` of the site file).
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        None => fieldnet::rt::run_agent(
            "inventory",
            env!("CARGO_PKG_VERSION"),
            &args.common,
            |config| config.agents.inventory.common.metrics_listen,
            inventory::edge::agent::run,
        ),
        Some(Command::Ansible { list, host, state }) => {
            let state = match state {
                Some(state) => state,
                None => match args.common.load() {
                    Ok(config) => config.agents.inventory.state,
                    Err(code) => return code,
                },
            };
            if !list && host.is_none() {
                eprintln!("inventory ansible: say --list or --host NAME");
                return ExitCode::from(EXIT_CONFIG);
            }
            match inventory::edge::store::ansible(&state, host.as_deref()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("inventory ansible: {error:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}
