//! `cross-site-failover`: wiring only; the agent lives in the library (`edge::agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::CommonArgs;

/// Keeps the routes to every other area on the best live path and tells who is alive.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Hub mode: log the AWS calls that would change something (ReplaceRoute,
    /// UpdateHealthCheck, PutMetricData) instead of making them; reads still go to AWS.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fieldnet::rt::run_agent(
        "cross-site-failover",
        env!("CARGO_PKG_VERSION"),
        &args.common,
        |config| config.agents.cross_site_failover.common.metrics_listen,
        |context| {
            let options = cross_site_failover::edge::agent::Options {
                dry_run: args.dry_run,
            };
            cross_site_failover::edge::agent::run_with(context, options)
        },
    )
}
