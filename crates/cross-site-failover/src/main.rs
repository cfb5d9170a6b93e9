//! `cross-site-failover`: wiring only; the agent lives in the library (`agent::run`).

use std::process::ExitCode;

use clap::Parser;
use fieldnet::cli::{CommonArgs, exit_code};
use fieldnet::obs;

/// Keeps the routes to every other area on the best live path and tells who is alive.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    obs::init_tracing();
    let config = match args.common.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit_code(Err(error.into())),
    };
    exit_code(runtime.block_on(async move {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "cross-site-failover starting"
        );
        let shutdown = obs::shutdown_on_signal();
        let registry = obs::new_registry();
        let health = obs::Health::default();
        health.set("paths", Some("starting".to_owned()));
        let listen = config.agents.cross_site_failover.common.metrics_listen;
        let router = obs::router(registry.clone(), health.clone());
        let (metrics_at, http) = obs::serve_http(listen, router, shutdown.clone()).await?;
        tracing::info!(metrics = %metrics_at, "metrics listening");
        let result =
            cross_site_failover::agent::run(config, registry, health, shutdown.clone()).await;
        obs::notify_stopping();
        shutdown.cancel();
        let _ = http.await;
        result
    }))
}
