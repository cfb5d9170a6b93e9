//! `uplink-monitor`: wiring only; the agent lives in the library (`edge::agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::CommonArgs;

/// Probes every uplink of a fieldnet appliance and keeps the default route on the best one.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fieldnet::rt::run_agent(
        "uplink-monitor",
        env!("CARGO_PKG_VERSION"),
        &args.common,
        |config| config.agents.uplink_monitor.common.metrics_listen,
        uplink_monitor::edge::agent::run,
    )
}
