//! The broker: routes published lines to subscribers by topic prefix and keeps retained topics.
//!
//! Invariants: a publisher never waits on a subscriber (each subscriber has a bounded queue of
//! published messages; a full queue drops the message for that subscriber and counts it, and a
//! `lagged` notice goes into its stream at once, where the gap is); a new subscription gets the
//! retained values under its prefix whole, streamed to the socket at the reader's pace, before
//! anything newer on those topics — or, if the client has stopped reading altogether, the
//! subscription fails loudly and the connection is closed; control frames (`pong`, `lagged`,
//! the retained snapshot, `error`) never compete with published messages for queue room; a bad
//! or oversize line costs only its own connection.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Control items one connection may have queued (snapshots, pongs, lagged notices); more means
/// it has stopped reading.
const CONTROL_DEPTH: usize = 64;

/// What goes out to one client, in order.
enum Out {
    /// A published message (counted against the queue depth).
    Message(Arc<str>),
    /// A control frame.
    Control(Arc<str>),
    /// The retained values of a new subscription, written whole.
    Snapshot(Vec<Arc<str>>),
    /// Messages were dropped: write `lagged` with the count so far.
    Lagged,
}

/// One connection's outgoing queue: ordered, with published messages and control items
/// bounded separately.
#[derive(Clone)]
struct Outgoing {
    queue: mpsc::UnboundedSender<Out>,
    counts: Arc<OutCounts>,
}

#[derive(Default)]
struct OutCounts {
    messages: AtomicUsize,
    control: AtomicUsize,
    /// Messages dropped and not yet told.
    missed: AtomicU64,
}

impl Outgoing {
    /// Queues a published message unless `depth` are already queued; a drop is counted and
    /// announced in the stream at once.
    fn message(&self, line: &Arc<str>, depth: usize, metrics: &Metrics) {
        if self.counts.messages.load(Ordering::Relaxed) < depth {
            self.counts.messages.fetch_add(1, Ordering::Relaxed);
            if self.queue.send(Out::Message(line.clone())).is_ok() {
                metrics.delivered.inc();
                return;
            }
            self.counts.messages.fetch_sub(1, Ordering::Relaxed);
        }
        metrics.dropped.inc();
        if self.counts.missed.fetch_add(1, Ordering::Relaxed) == 0 {
            // The first drop since the last notice: the notice goes where the gap is.
            let _ = self.control(Out::Lagged);
        }
    }

    /// Queues a control item; fails when the client has stopped reading.
    fn control(&self, item: Out) -> Result<(), ()> {
        if self.counts.control.fetch_add(1, Ordering::Relaxed) >= CONTROL_DEPTH {
            self.counts.control.fetch_sub(1, Ordering::Relaxed);
            return Err(());
        }
        self.queue.send(item).map_err(|_| {
            self.counts.control.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

struct Subscriber {
    prefixes: Vec<String>,
    out: Outgoing,
}

impl Subscriber {
    fn wants(&self, topic: &str) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| topic.starts_with(prefix.as_str()))
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
    let (queue, outgoing) = mpsc::unbounded_channel::<Out>();
    let out = Outgoing {
        queue,
        counts: Arc::new(OutCounts::default()),
    };
    shared.metrics.clients.inc();
    let writer = tokio::spawn(write_lines(write_half, outgoing, Arc::clone(&out.counts)));
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
                    out: out.clone(),
                });
                if !subscriber.prefixes.contains(&prefix) {
                    // The retained values are queued under the same lock that registers the
                    // prefix, so nothing newer on a topic can overtake its retained value.
                    let snapshot: Vec<Arc<str>> = state
                        .retained
                        .range(prefix.clone()..)
                        .take_while(|(topic, _)| topic.starts_with(prefix.as_str()))
                        .filter(|(topic, _)| !subscriber.wants(topic))
                        .map(|(_, line)| line.clone())
                        .collect();
                    if !snapshot.is_empty()
                        && subscriber.out.control(Out::Snapshot(snapshot)).is_err()
                    {
                        break Some(format!(
                            "subscribing to {prefix:?}: the client has not read its queue; the connection is closed"
                        ));
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
                // Dropped only when the client has stopped reading its control frames.
                let _ = out.control(Out::Control(frame::encode(&Frame::Pong).into()));
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
        let _ = out.control(Out::Control(line));
    }
    drop(out);
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
    for subscriber in state.subscribers.values() {
        if subscriber.wants(&topic) {
            subscriber
                .out
                .message(&line, shared.options.queue_depth, &shared.metrics);
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

/// Writes what is queued, in order, flushing only when the queue is momentarily empty; a
/// snapshot is written whole, at the pace the client reads.
async fn write_lines(
    write_half: tokio::net::unix::OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Out>,
    counts: Arc<OutCounts>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(first) = outgoing.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if write_one(&mut writer, item, &counts).await.is_err() {
                return;
            }
            next = outgoing.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_one(
    writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    item: Out,
    counts: &OutCounts,
) -> std::io::Result<()> {
    match item {
        Out::Message(line) => {
            counts.messages.fetch_sub(1, Ordering::Relaxed);
            // A drop whose notice could not be queued is told here, before what follows it.
            let missed = counts.missed.swap(0, Ordering::Relaxed);
            if missed > 0 {
                let notice = frame::encode(&Frame::Lagged { missed });
                writer.write_all(notice.as_bytes()).await?;
            }
            writer.write_all(line.as_bytes()).await
        }
        Out::Control(line) => {
            counts.control.fetch_sub(1, Ordering::Relaxed);
            writer.write_all(line.as_bytes()).await
        }
        Out::Snapshot(lines) => {
            counts.control.fetch_sub(1, Ordering::Relaxed);
            for line in lines {
                writer.write_all(line.as_bytes()).await?;
            }
            Ok(())
        }
        Out::Lagged => {
            counts.control.fetch_sub(1, Ordering::Relaxed);
            let missed = counts.missed.swap(0, Ordering::Relaxed);
            if missed == 0 {
                return Ok(());
            }
            let line = frame::encode(&Frame::Lagged { missed });
            writer.write_all(line.as_bytes()).await
        }
    }
}
