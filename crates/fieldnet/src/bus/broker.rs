//! The broker: routes published lines to subscribers by topic prefix and keeps retained topics.
//!
//! Invariants: a publisher never waits on a subscriber (each subscriber has a bounded queue; a
//! full queue drops the message for that subscriber and counts it, and the subscriber is told
//! how many it missed); a retained topic's latest value is delivered to every new subscriber
//! before anything newer on that topic; a bad or oversize line costs only its own connection.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncWriteExt as _, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use super::frame::{self, Envelope, Frame};
use super::topics::{AgentPresence, AgentsAlive, TOPIC_AGENTS};
use super::unix_millis;

/// Limits of one broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub max_line_bytes: usize,
    pub queue_depth: usize,
}

/// The broker's metrics, registered in the registry `main` passes down.
#[derive(Debug, Clone)]
struct Metrics {
    clients: IntGauge,
    published: IntCounter,
    delivered: IntCounter,
    dropped: IntCounter,
    protocol_errors: IntCounter,
    retained: IntGauge,
}

impl Metrics {
    fn register(registry: &Registry) -> anyhow::Result<Self> {
        let gauge = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        Ok(Self {
            clients: gauge("fieldnet_bus_clients", "Connected bus clients")?,
            published: counter("fieldnet_bus_published_total", "Messages published")?,
            delivered: counter(
                "fieldnet_bus_delivered_total",
                "Messages queued to subscribers",
            )?,
            dropped: counter(
                "fieldnet_bus_dropped_total",
                "Messages dropped for subscribers that read too slowly",
            )?,
            protocol_errors: counter(
                "fieldnet_bus_protocol_errors_total",
                "Connections dropped for a malformed or oversize line",
            )?,
            retained: gauge("fieldnet_bus_retained_topics", "Retained topics held")?,
        })
    }
}

struct Subscriber {
    prefixes: Vec<String>,
    queue: mpsc::Sender<Arc<str>>,
    /// Messages dropped since the subscriber was last told.
    missed: u64,
}

impl Subscriber {
    fn wants(&self, topic: &str) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| topic.starts_with(prefix.as_str()))
    }

    /// Queues a line without waiting; tells the subscriber first if it missed any.
    fn offer(&mut self, line: &Arc<str>, metrics: &Metrics) {
        if self.missed > 0 {
            let notice: Arc<str> = frame::encode(&Frame::Lagged {
                missed: self.missed,
            })
            .into();
            if self.queue.try_send(notice).is_err() {
                self.missed += 1;
                metrics.dropped.inc();
                return;
            }
            self.missed = 0;
        }
        match self.queue.try_send(line.clone()) {
            Ok(()) => metrics.delivered.inc(),
            Err(_) => {
                self.missed += 1;
                metrics.dropped.inc();
            }
        }
    }
}

#[derive(Default)]
struct State {
    subscribers: HashMap<u64, Subscriber>,
    /// Topic → the encoded `msg` line of its latest retained value.
    retained: BTreeMap<String, Arc<str>>,
    agents: BTreeMap<u64, AgentPresence>,
}

struct Shared {
    state: Mutex<State>,
    options: BrokerOptions,
    metrics: Metrics,
    next_id: AtomicU64,
}

/// A bound broker, ready to serve.
#[derive(Debug)]
pub struct Broker {
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("options", &self.options)
            .finish()
    }
}

impl Broker {
    /// Binds the socket (mode 0660, replacing a stale socket file) and registers metrics.
    pub fn bind(path: &Path, options: BrokerOptions, registry: &Registry) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // A socket left by a killed broker would make bind fail; a live broker would answer.
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("{}: another broker is already listening", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod 0660 {}", path.display()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            options,
            metrics: Metrics::register(registry)?,
            next_id: AtomicU64::new(1),
        });
        Ok(Self {
            listener,
            path: path.to_owned(),
            shared,
        })
    }

    /// Serves until `shutdown` is cancelled, then removes the socket file.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shared = self.shared.clone();
                        let shutdown = shutdown.clone();
                        connections.spawn(async move { serve_client(shared, stream, shutdown).await });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
        std::fs::remove_file(&self.path)
            .with_context(|| format!("removing {}", self.path.display()))?;
        Ok(())
    }
}

async fn serve_client(shared: Arc<Shared>, stream: UnixStream, shutdown: CancellationToken) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (read_half, write_half) = stream.into_split();
    let (queue, outgoing) = mpsc::channel::<Arc<str>>(shared.options.queue_depth);
    shared.metrics.clients.inc();
    let writer = tokio::spawn(write_lines(write_half, outgoing));
    let mut lines = FramedRead::new(
        read_half,
        LinesCodec::new_with_max_length(shared.options.max_line_bytes),
    );
    let mut name: Option<String> = None;
    let ending = loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break None,
            next = lines.next() => next,
        };
        let line = match next {
            None => break None,
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                break Some(format!(
                    "line longer than {} bytes; the connection is closed",
                    shared.options.max_line_bytes
                ));
            }
            Some(Err(LinesCodecError::Io(error))) => {
                // Invalid UTF-8 surfaces here too, as InvalidData.
                if error.kind() == std::io::ErrorKind::InvalidData {
                    break Some("line is not UTF-8; the connection is closed".to_owned());
                }
                break None;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let frame = match frame::decode(line.as_bytes()) {
            Ok(frame) => frame,
            Err(error) => break Some(format!("{error}; the connection is closed")),
        };
        match frame {
            Frame::Hello { name: hello, pid } => {
                let mut state = shared.state.lock().unwrap();
                state.agents.insert(
                    id,
                    AgentPresence {
                        name: hello.clone(),
                        pid,
                        since: unix_millis(),
                    },
                );
                name = Some(hello);
                publish_agents(&shared, &mut state);
            }
            Frame::Sub { prefix } => {
                let mut state = shared.state.lock().unwrap();
                let state = &mut *state;
                let subscriber = state.subscribers.entry(id).or_insert_with(|| Subscriber {
                    prefixes: Vec::new(),
                    queue: queue.clone(),
                    missed: 0,
                });
                if !subscriber.prefixes.contains(&prefix) {
                    // Retained values go out under the same lock that registers the prefix, so
                    // nothing newer on a topic can overtake its retained value.
                    for (topic, line) in state.retained.range(prefix.clone()..) {
                        if !topic.starts_with(prefix.as_str()) {
                            break;
                        }
                        if !subscriber.wants(topic) {
                            subscriber.offer(line, &shared.metrics);
                        }
                    }
                    subscriber.prefixes.push(prefix);
                }
            }
            Frame::Unsub { prefix } => {
                let mut state = shared.state.lock().unwrap();
                if let Some(subscriber) = state.subscribers.get_mut(&id) {
                    subscriber.prefixes.retain(|p| p != &prefix);
                }
            }
            Frame::Pub(mut envelope) => {
                if envelope.ts == 0 {
                    envelope.ts = unix_millis();
                }
                if envelope.from.is_empty() {
                    envelope.from = name.clone().unwrap_or_default();
                }
                let mut state = shared.state.lock().unwrap();
                publish(&shared, &mut state, envelope);
            }
            Frame::Ping => {
                let _ = queue.try_send(frame::encode(&Frame::Pong).into());
            }
            Frame::Msg(_) | Frame::Lagged { .. } | Frame::Error { .. } | Frame::Pong => {
                break Some("only hello, sub, unsub, pub and ping are sent to the broker; the connection is closed".to_owned());
            }
        }
    };
    {
        let mut state = shared.state.lock().unwrap();
        state.subscribers.remove(&id);
        if state.agents.remove(&id).is_some() {
            publish_agents(&shared, &mut state);
        }
    }
    if let Some(message) = ending {
        shared.metrics.protocol_errors.inc();
        tracing::info!(client = id, name = name.as_deref().unwrap_or("-"), %message, "dropping client");
        let line: Arc<str> = frame::encode(&Frame::Error { message }).into();
        let _ = tokio::time::timeout(Duration::from_secs(1), queue.send(line)).await;
    }
    drop(queue);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    shared.metrics.clients.dec();
}

fn publish(shared: &Shared, state: &mut State, envelope: Envelope) {
    shared.metrics.published.inc();
    let topic = envelope.topic.clone();
    let retain = envelope.retain;
    let clear = retain && envelope.body.is_null();
    let line: Arc<str> = frame::encode(&Frame::Msg(envelope)).into();
    if clear {
        state.retained.remove(&topic);
    } else if retain {
        state.retained.insert(topic.clone(), line.clone());
    }
    shared.metrics.retained.set(state.retained.len() as i64);
    for subscriber in state.subscribers.values_mut() {
        if subscriber.wants(&topic) {
            subscriber.offer(&line, &shared.metrics);
        }
    }
}

/// The broker's own retained topic: which named agents are connected right now.
fn publish_agents(shared: &Shared, state: &mut State) {
    let mut agents: Vec<AgentPresence> = state.agents.values().cloned().collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let envelope = Envelope {
        v: frame::VERSION,
        topic: TOPIC_AGENTS.to_owned(),
        ts: unix_millis(),
        from: "fieldnet-bus".to_owned(),
        retain: true,
        body: serde_json::to_value(AgentsAlive { agents }).expect("serializable"),
    };
    publish(shared, state, envelope);
}

/// Writes queued lines, flushing only when the queue is momentarily empty.
async fn write_lines(
    write_half: tokio::net::unix::OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Arc<str>>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(line) = outgoing.recv().await {
        if writer.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        while let Ok(line) = outgoing.try_recv() {
            if writer.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
