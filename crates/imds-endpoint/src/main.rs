//! `imds-endpoint`: wiring only; the agent lives in the library (`edge::agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::CommonArgs;

/// Every connection allocates its task, buffers, request and reply: mimalloc serves those
/// small, short-lived allocations faster than glibc's malloc (docs/benchmarks.md, imds).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The EC2 instance metadata endpoint of the area's devices: credentials of their class's role,
/// no keys on any device.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    fieldnet::rt::run_agent(
        "imds-endpoint",
        env!("CARGO_PKG_VERSION"),
        &args.common,
        |config| config.agents.imds_endpoint.common.metrics_listen,
        imds_endpoint::edge::agent::run,
    )
}
