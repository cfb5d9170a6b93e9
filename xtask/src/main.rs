//! `cargo xtask …`: the project's own commands — CI, the demo, the lab, benchmarks.
//!
//! Everything here shells out to cargo and the system tools a Debian machine has (or that
//! `ci` installs), so a fresh root shell needs nothing but the Rust toolchain.

mod bench;
mod ci;
mod demo;
mod host;
mod labcmd;
#[cfg(test)]
mod monitoring;
mod peers;
#[cfg(test)]
mod shape;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "fieldnet project tasks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole check: test peers, fmt, clippy, all tests with the lab required, examples, fuzz.
    Ci {
        /// Seconds for each fuzz target (at least 2 minutes each in CI).
        #[arg(long, default_value_t = 120)]
        fuzz_seconds: u32,
    },
    /// A three-area site in network namespaces with every agent that exists so far.
    Demo {
        /// Do not pause between scenes.
        #[arg(long)]
        fast: bool,
    },
    /// Bring the demo topology up or down by hand, or remove leftovers of killed runs.
    Lab {
        #[command(subcommand)]
        action: labcmd::LabAction,
    },
    /// Run a benchmark and record its figures in docs/benchmarks.md.
    Bench {
        /// Which benchmark: bus, failover, cross-site, dns, dhcp.
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Ci { fuzz_seconds } => ci::run(fuzz_seconds),
        Command::Demo { fast } => demo::run(fast),
        Command::Lab { action } => labcmd::run(action),
        Command::Bench { name } => bench::run(&name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
