//! The life of an agent process, the same for every agent: runtime, signals, metrics listener,
//! a bus announcement, readiness, a bounded shutdown. An agent's `main` parses its flags and
//! hands its `run` to [`run_agent`], which announces the agent on the bus and hands `run` one
//! [`AgentContext`]; `run` calls [`ready`] once it serves.
//!
//! Invariant: `/healthz` reports "starting" until the agent says it is ready, so systemd and a
//! monitoring system see the same thing.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::bus::BusClient;
use crate::bus::topics::{AgentStarted, agent_topic};
use crate::cli::{CommonArgs, exit_code};
use crate::config::Config;
use crate::obs::{self, Health};

/// What every agent's `run` is handed: its config, the registry its metrics go in, its
/// `/healthz`, the shutdown signal and its bus connection (already announced).
#[derive(Debug)]
pub struct AgentContext {
    pub config: Config,
    pub registry: Registry,
    pub health: Health,
    pub shutdown: CancellationToken,
    pub bus: BusClient,
}

/// The health part that stays unhealthy until [`ready`].
const STARTUP: &str = "startup";

/// Loads the config (honouring `--check-config`), then runs `run` on a single-threaded runtime
/// with logs, the metrics listener on `metrics_listen(&config)`, signal handling and the bus
/// (`agent/<name>` published, with the address the metrics listener got); maps the outcome to
/// the exit code.
pub fn run_agent<F, Fut>(
    name: &'static str,
    version: &'static str,
    common: &CommonArgs,
    metrics_listen: impl FnOnce(&Config) -> SocketAddr,
    run: F,
) -> ExitCode
where
    F: FnOnce(AgentContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    obs::init_tracing();
    let config = match common.load() {
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
    let listen = metrics_listen(&config);
    exit_code(runtime.block_on(async move {
        tracing::info!(version, "{name} starting");
        let shutdown = obs::shutdown_on_signal();
        let registry = obs::new_registry();
        let health = Health::default();
        health.set(STARTUP, Some("starting".to_owned()));
        let router = obs::router(registry.clone(), health.clone());
        let (metrics_at, http) = obs::serve_http(listen, router, shutdown.clone()).await?;
        tracing::info!(metrics = %metrics_at, "metrics listening");
        let bus = announce(&config, name, version, metrics_at)?;
        let context = AgentContext {
            config,
            registry,
            health,
            shutdown: shutdown.clone(),
            bus,
        };
        let result = run(context).await;
        obs::notify_stopping();
        shutdown.cancel();
        let _ = http.await;
        result
    }))
}

/// Tells systemd and `/healthz` that the agent serves.
pub fn ready(health: &Health, shutdown: &CancellationToken) {
    obs::notify_ready(shutdown.clone());
    health.set(STARTUP, None);
}

/// Connects to the bus as `name` and publishes the retained `agent/<name>` announcement.
fn announce(
    config: &Config,
    name: &str,
    version: &str,
    metrics: SocketAddr,
) -> anyhow::Result<BusClient> {
    let bus = BusClient::spawn(config.bus.socket.clone(), name);
    let started = AgentStarted {
        version: version.to_owned(),
        pid: std::process::id(),
        metrics: metrics.to_string(),
    };
    bus.publish(&agent_topic(name), &started, true)?;
    Ok(bus)
}
