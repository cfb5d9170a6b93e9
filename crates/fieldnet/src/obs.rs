//! Observability shared by every agent: logs to stderr, the Prometheus registry, the HTTP
//! listener for `/metrics` and `/healthz`, and systemd readiness and watchdog.
//!
//! The registry is created in `main` and passed down; nothing here is global except the tracing
//! subscriber, which is process-wide by nature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// The filter without `RUST_LOG`: info, but hickory's servers log every request at info.
const DEFAULT_LOG_FILTER: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn";

/// Logs to stderr (journald adds timestamps under systemd), filtered by `RUST_LOG`, default
/// [`DEFAULT_LOG_FILTER`].
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if under_journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// A fresh registry whose metrics all carry the fieldnet prefix by their own names.
pub fn new_registry() -> Registry {
    Registry::new()
}

/// How every agent registers its metrics: each one created under its documented name and put
/// in the registry `main` passed down, in one call. An agent's `Metrics::register` is then a
/// list of names, helps and labels.
#[derive(Debug, Clone, Copy)]
pub struct Metrics<'a>(pub &'a Registry);

impl Metrics<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: prometheus::Result<M>,
    ) -> anyhow::Result<M> {
        let metric = metric?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    pub fn counter(&self, name: &str, help: &str) -> anyhow::Result<prometheus::IntCounter> {
        self.add(prometheus::IntCounter::new(name, help))
    }

    pub fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<prometheus::IntCounterVec> {
        self.add(prometheus::IntCounterVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    pub fn gauge(&self, name: &str, help: &str) -> anyhow::Result<prometheus::IntGauge> {
        self.add(prometheus::IntGauge::new(name, help))
    }

    pub fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<prometheus::IntGaugeVec> {
        self.add(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    /// Gauges of fractional values (seconds, ratios).
    pub fn float_gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> anyhow::Result<prometheus::GaugeVec> {
        self.add(prometheus::GaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> anyhow::Result<prometheus::Histogram> {
        self.add(prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(name, help).buckets(buckets),
        ))
    }

    pub fn histograms(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> anyhow::Result<prometheus::HistogramVec> {
        self.add(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(name, help).buckets(buckets),
            labels,
        ))
    }
}

/// What `/healthz` reports: healthy unless some part of the agent says otherwise.
#[derive(Debug, Clone, Default)]
pub struct Health {
    problems: Arc<Mutex<Vec<(String, String)>>>,
}

impl Health {
    /// Marks `part` unhealthy with a reason, or healthy again with `None`.
    pub fn set(&self, part: &str, problem: Option<String>) {
        let mut problems = self.problems.lock().unwrap();
        problems.retain(|(name, _)| name != part);
        if let Some(problem) = problem {
            problems.push((part.to_owned(), problem));
        }
    }

    /// The current problems, as `part: reason` lines; empty when healthy.
    pub fn report(&self) -> Vec<String> {
        let problems = self.problems.lock().unwrap();
        problems
            .iter()
            .map(|(part, why)| format!("{part}: {why}"))
            .collect()
    }
}

/// Refusals of what a service would not take (connections over a cap, bad requests), said in
/// the log at WARN at most every `every`, with how many of each kind there were since: a
/// flood is seen without filling the journal.
#[derive(Debug, Clone)]
pub struct Refusals {
    /// What refuses, as the log line says it: "DHCP peer API", "DNS over TCP".
    what: &'static str,
    every: std::time::Duration,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<std::time::Instant>,
    counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Refusals {
    pub fn new(what: &'static str, every: std::time::Duration) -> Self {
        Self {
            what,
            every,
            seen: Arc::default(),
        }
    }

    /// Counts one refusal of `kind` (`detail`, such as the address, goes in the log) and says
    /// the lot when the last warning is `every` old.
    pub fn refused(&self, kind: &'static str, detail: &str) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *seen.counts.entry(kind).or_default() += 1;
        if seen.last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        seen.last = Some(std::time::Instant::now());
        let counts: Vec<String> = std::mem::take(&mut seen.counts)
            .into_iter()
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        tracing::warn!(
            latest = detail,
            refused = counts.join(", "),
            "{} refused connections or requests",
            self.what
        );
    }
}

#[derive(Clone)]
struct ObsState {
    registry: Registry,
    health: Health,
}

/// The router behind the metrics listener; agents may merge their own routes into it.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(ObsState { registry, health })
}

async fn metrics(State(state): State<ObsState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            error.to_string().into_bytes(),
        ),
    }
}

async fn healthz(State(state): State<ObsState>) -> impl IntoResponse {
    let problems = state.health.report();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

/// Binds the metrics listener now (so a taken port fails start-up) and serves it until shutdown.
/// Returns the bound address, which differs from `listen` when its port is 0.
pub async fn serve_http(
    listen: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener on {listen}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics listener failed");
        }
    });
    Ok((bound, task))
}

/// Tells systemd the service is ready (a no-op outside systemd) and, if the unit sets
/// `WatchdogSec`, keeps petting the watchdog at half the interval until shutdown.
pub fn notify_ready(shutdown: CancellationToken) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(period) = sd_notify::watchdog_enabled() {
        let interval = period / 2;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn metrics_and_health_are_served() {
        let registry = new_registry();
        let counter = prometheus::IntCounter::new("fieldnet_test_things_total", "things").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let health = Health::default();
        let app = router(registry, health.clone());

        let response = app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("fieldnet_test_things_total 1"));

        let response = app
            .clone()
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        health.set("bus", Some("broker unreachable".into()));
        let response = app
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&body), "bus: broker unreachable\n");
    }
}
