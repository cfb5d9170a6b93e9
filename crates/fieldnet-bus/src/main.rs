//! `fieldnet-bus`: the appliance's local message broker. Wiring only; the broker lives in
//! `fieldnet::bus::broker`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fieldnet::bus::{Broker, BrokerOptions};
use fieldnet::cli::{CommonArgs, exit_code};
use fieldnet::obs;

/// Local message bus of a fieldnet appliance (newline-delimited JSON over a Unix socket).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Listen on this socket instead of the config's `bus.socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    obs::init_tracing();
    let config = match args.common.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return exit_code(Err(error.into())),
    };
    exit_code(runtime.block_on(run(config, args.socket)))
}

async fn run(config: fieldnet::config::Config, socket: Option<PathBuf>) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "fieldnet-bus starting");
    let shutdown = obs::shutdown_on_signal();
    let registry = obs::new_registry();
    let health = obs::Health::default();
    let socket = socket.unwrap_or(config.bus.socket.clone());
    let options = BrokerOptions {
        max_line_bytes: config.bus.max_line_bytes,
        queue_depth: config.bus.queue_depth,
        publishers: if config.bus.trust_any_publisher {
            fieldnet::bus::Publishers::Anyone
        } else {
            fieldnet::bus::Publishers::Owners
        },
    };
    let broker = Broker::bind(&socket, options, &registry)?;
    let (metrics_at, http) = obs::serve_http(
        config.bus.metrics_listen,
        obs::router(registry, health),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(socket = %socket.display(), metrics = %metrics_at, "listening");
    obs::notify_ready(shutdown.clone());
    let served = broker.serve(shutdown.clone()).await;
    obs::notify_stopping();
    shutdown.cancel();
    let _ = http.await;
    served
}
