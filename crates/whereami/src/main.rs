//! `whereami`: wiring only; the agent lives in the library (`edge::agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::CommonArgs;

/// The area's DNS server: "which network am I on" answers, local names, a forwarding cache.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fieldnet::rt::run_agent(
        "whereami",
        env!("CARGO_PKG_VERSION"),
        &args.common,
        |config| config.agents.whereami.common.metrics_listen,
        whereami::edge::agent::run,
    )
}
