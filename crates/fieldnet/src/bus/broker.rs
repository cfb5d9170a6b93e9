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
//!
//! Who speaks: each connection's process is known by its credentials (`SO_PEERCRED`, then
//! `/proc/<pid>/exe`): an agent's topics ([`topics::OWNERS`], `agent/<name>`) are taken only
//! from that agent's program or fieldctl, an agent's name in `hello` only from its program, and
//! `from` is what the broker knows, not what the client says ([`Publishers::Anyone`] lifts
//! this, for tests that play an agent). Caps: [`MAX_CONNECTIONS`], [`MAX_PREFIXES`] per
//! client, [`MAX_RETAINED`] topics; past one, the line is refused with an `error`. The socket
//! path is unlinked only if it is a socket.

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
use super::topics::{self, AgentPresence, AgentsAlive, TOPIC_AGENTS};
use super::unix_millis;

/// Limits of one broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub max_line_bytes: usize,
    pub queue_depth: usize,
    pub publishers: Publishers,
}

/// Who may publish an agent's topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Publishers {
    /// The agent's own program, and fieldctl; told apart by the connecting process's
    /// credentials.
    #[default]
    Owners,
    /// Any process that can connect (`[bus] trust_any_publisher`: tests that play an agent).
    Anyone,
}

/// Clients connected at once; more are refused.
pub const MAX_CONNECTIONS: usize = 256;
/// Prefixes one client may subscribe to.
pub const MAX_PREFIXES: usize = 64;
/// Retained topics the broker keeps (a /16's leases and more); a new one past it is refused.
pub const MAX_RETAINED: usize = 100_000;
/// The operator's tool, which may publish any topic.
const TOOL: &str = "fieldctl";

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
        let m = crate::obs::Metrics(registry);
        Ok(Self {
            clients: m.gauge("fieldnet_bus_clients", "Connected bus clients")?,
            published: m.counter("fieldnet_bus_published_total", "Messages published")?,
            delivered: m.counter(
                "fieldnet_bus_delivered_total",
                "Messages queued to subscribers",
            )?,
            dropped: m.counter(
                "fieldnet_bus_dropped_total",
                "Messages dropped for subscribers that read too slowly",
            )?,
            protocol_errors: m.counter(
                "fieldnet_bus_protocol_errors_total",
                "Connections dropped for a malformed or oversize line",
            )?,
            retained: m.gauge("fieldnet_bus_retained_topics", "Retained topics held")?,
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
    /// Clients connected now.
    connected: AtomicUsize,
    refusals: crate::obs::Refusals,
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
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt as _;
            anyhow::ensure!(
                metadata.file_type().is_socket(),
                "{} exists and is not a socket; refusing to remove it (is bus.socket right?)",
                path.display()
            );
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
            connected: AtomicUsize::new(0),
            refusals: crate::obs::Refusals::new("the bus broker", Duration::from_secs(10)),
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
                        if self.shared.connected.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                            self.shared.connected.fetch_sub(1, Ordering::Relaxed);
                            self.shared.refusals.refused("over the connection cap", "");
                            continue;
                        }
                        let shared = self.shared.clone();
                        let shutdown = shutdown.clone();
                        connections.spawn(async move {
                            serve_client(Arc::clone(&shared), stream, shutdown).await;
                            shared.connected.fetch_sub(1, Ordering::Relaxed);
                        });
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

/// The program of the process at the other end of `stream` (the file name of its
/// executable), when the kernel says.
fn program_of(stream: &UnixStream) -> Option<String> {
    let pid = stream.peer_cred().ok()?.pid()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_str()?;
    // An executable replaced since it started (an upgrade) reads "name (deleted)".
    Some(name.trim_end_matches(" (deleted)").to_owned())
}

/// Why `program` may not publish `topic`, if it may not.
fn may_not_publish(options: &BrokerOptions, program: Option<&str>, topic: &str) -> Option<String> {
    if options.publishers == Publishers::Anyone || program == Some(TOOL) {
        return None;
    }
    let owner = topics::owner_of(topic)?;
    (program != Some(owner)).then(|| {
        format!(
            "{topic:?} is published only by {owner} (this is {}); the connection is closed",
            program.unwrap_or("an unknown program")
        )
    })
}

async fn serve_client(shared: Arc<Shared>, stream: UnixStream, shutdown: CancellationToken) {
    let program = program_of(&stream);
    let (read_half, write_half) = stream.into_split();
    let (session, outgoing) = Session::new(&shared, program);
    let writer = tokio::spawn(write_lines(
        write_half,
        outgoing,
        Arc::clone(&session.out.counts),
    ));
    let mut session = session;
    let mut lines = FramedRead::new(
        read_half,
        LinesCodec::new_with_max_length(shared.options.max_line_bytes),
    );
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
        if let Err(ending) = session.on_line(&shared, &line) {
            break Some(ending);
        }
    };
    session.close(&shared, ending);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// One client's side of the broker: who it is, and its queue.
struct Session {
    id: u64,
    /// Its program, from its credentials.
    program: Option<String>,
    /// The name it said hello with.
    name: Option<String>,
    out: Outgoing,
}

impl Session {
    fn new(shared: &Shared, program: Option<String>) -> (Self, mpsc::UnboundedReceiver<Out>) {
        let (queue, outgoing) = mpsc::unbounded_channel::<Out>();
        shared.metrics.clients.inc();
        let session = Self {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            program,
            name: None,
            out: Outgoing {
                queue,
                counts: Arc::new(OutCounts::default()),
            },
        };
        (session, outgoing)
    }

    /// One line from the client: `Err` says why the connection closes.
    fn on_line(&mut self, shared: &Shared, line: &str) -> Result<(), String> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let frame = match frame::decode(line.as_bytes()) {
            Ok(frame) => frame,
            Err(error) => return Err(format!("{error}; the connection is closed")),
        };
        match frame {
            Frame::Hello { name: hello, pid } => {
                if shared.options.publishers == Publishers::Owners
                    && topics::is_agent_name(&hello)
                    && self.program.as_deref() != Some(hello.as_str())
                {
                    shared.refusals.refused("hello as another agent", &hello);
                    return Err(format!(
                        "only {hello} may say hello as {hello}; the connection is closed"
                    ));
                }
                let mut state = shared.state.lock().unwrap();
                state.agents.insert(
                    self.id,
                    AgentPresence {
                        name: hello.clone(),
                        pid,
                        since: unix_millis(),
                    },
                );
                self.name = Some(hello);
                publish_agents(shared, &mut state);
            }
            Frame::Sub { prefix } => {
                let mut state = shared.state.lock().unwrap();
                let state = &mut *state;
                let subscriber = state
                    .subscribers
                    .entry(self.id)
                    .or_insert_with(|| Subscriber {
                        prefixes: Vec::new(),
                        out: self.out.clone(),
                    });
                if !subscriber.prefixes.contains(&prefix) {
                    if subscriber.prefixes.len() >= MAX_PREFIXES {
                        return Err(format!(
                            "more than {MAX_PREFIXES} prefixes; the connection is closed"
                        ));
                    }
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
                        return Err(format!(
                            "subscribing to {prefix:?}: the client has not read its queue; the connection is closed"
                        ));
                    }
                    subscriber.prefixes.push(prefix);
                }
            }
            Frame::Unsub { prefix } => {
                let mut state = shared.state.lock().unwrap();
                if let Some(subscriber) = state.subscribers.get_mut(&self.id) {
                    subscriber.prefixes.retain(|p| p != &prefix);
                }
            }
            Frame::Pub(mut envelope) => {
                if let Some(refusal) =
                    may_not_publish(&shared.options, self.program.as_deref(), &envelope.topic)
                {
                    shared
                        .refusals
                        .refused("a topic of another agent", &envelope.topic);
                    return Err(refusal);
                }
                if envelope.ts == 0 {
                    envelope.ts = unix_millis();
                }
                if shared.options.publishers == Publishers::Owners {
                    // Who published is what the broker knows, not what the line says.
                    envelope.from = self
                        .name
                        .clone()
                        .or_else(|| self.program.clone())
                        .unwrap_or_default();
                } else if envelope.from.is_empty() {
                    envelope.from = self.name.clone().unwrap_or_default();
                }
                let mut state = shared.state.lock().unwrap();
                let new_retained = envelope.retain
                    && !envelope.body.is_null()
                    && !state.retained.contains_key(&envelope.topic);
                if new_retained && state.retained.len() >= MAX_RETAINED {
                    shared
                        .refusals
                        .refused("over the retained cap", &envelope.topic);
                    return Err(format!(
                        "{MAX_RETAINED} retained topics already; {:?} is refused and the connection is closed",
                        envelope.topic
                    ));
                }
                publish(shared, &mut state, envelope);
            }
            Frame::Ping => {
                // Dropped only when the client has stopped reading its control frames.
                let _ = self
                    .out
                    .control(Out::Control(frame::encode(&Frame::Pong).into()));
            }
            Frame::Msg(_) | Frame::Lagged { .. } | Frame::Error { .. } | Frame::Pong => {
                return Err("only hello, sub, unsub, pub and ping are sent to the broker; the connection is closed".to_owned());
            }
        }
        Ok(())
    }

    /// The client is gone (or sent `ending`, which it is told): it stops being an agent and
    /// a subscriber.
    fn close(self, shared: &Shared, ending: Option<String>) {
        {
            let mut state = shared.state.lock().unwrap();
            state.subscribers.remove(&self.id);
            if state.agents.remove(&self.id).is_some() {
                publish_agents(shared, &mut state);
            }
        }
        if let Some(message) = ending {
            shared.metrics.protocol_errors.inc();
            tracing::info!(client = self.id, name = self.name.as_deref().unwrap_or("-"), %message, "dropping client");
            let line: Arc<str> = frame::encode(&Frame::Error { message }).into();
            let _ = self.out.control(Out::Control(line));
        }
        shared.metrics.clients.dec();
    }
}

/// Feeds `data`, split into lines (the first byte of each picks the client), to a broker
/// without sockets, as two clients take turns (an unknown program, dhcp-takeover): the fuzz
/// target of the broker's frame handling.
/// A client whose line is refused is replaced by a new one of the same program.
#[doc(hidden)]
pub fn fuzz_lines(data: &[u8]) {
    let shared = Shared {
        state: Mutex::new(State::default()),
        options: BrokerOptions {
            max_line_bytes: 4096,
            queue_depth: 16,
            publishers: Publishers::Owners,
        },
        metrics: Metrics::register(&Registry::new()).expect("fresh registry"),
        next_id: AtomicU64::new(1),
        connected: AtomicUsize::new(0),
        refusals: crate::obs::Refusals::new("fuzz", Duration::from_secs(3600)),
    };
    let programs = [None, Some("dhcp-takeover")];
    let mut sessions: Vec<(Session, mpsc::UnboundedReceiver<Out>)> = programs
        .iter()
        .map(|p| Session::new(&shared, p.map(str::to_owned)))
        .collect();
    for line in data.split(|b| *b == b'\n') {
        let Some((&turn, line)) = line.split_first() else {
            continue;
        };
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let index = usize::from(turn) % sessions.len();
        let (session, outgoing) = &mut sessions[index];
        if let Err(ending) = session.on_line(&shared, line) {
            let fresh = Session::new(&shared, programs[index].map(str::to_owned));
            let (old, _) = std::mem::replace(&mut sessions[index], fresh);
            old.close(&shared, Some(ending));
        } else {
            // What a client is sent is read, as a client would.
            while outgoing.try_recv().is_ok() {}
        }
        let state = shared.state.lock().unwrap();
        assert!(state.retained.len() <= MAX_RETAINED);
        // No client here is any other agent: nothing of another agent's is kept.
        assert!(state.retained.keys().all(|topic| matches!(
            topics::owner_of(topic),
            None | Some("dhcp-takeover" | "fieldnet-bus")
        )));
    }
    for (session, _) in sessions {
        session.close(&shared, None);
    }
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
