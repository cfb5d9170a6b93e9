//! `dhcp-takeover`: wiring only; the agent lives in the library (`edge::agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::CommonArgs;

/// The area's DHCPv4 server: durable leases, takeover of a dead peer's network.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fieldnet::rt::run_agent(
        "dhcp-takeover",
        env!("CARGO_PKG_VERSION"),
        &args.common,
        |config| config.agents.dhcp_takeover.common.metrics_listen,
        dhcp_takeover::edge::agent::run,
    )
}
