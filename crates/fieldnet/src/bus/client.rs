//! The agents' side of the bus: a handle that never blocks and a task that keeps the connection.
//!
//! Invariants: publishing never waits for the broker and never fails because it is down; while
//! disconnected the client keeps the latest value of every retained topic it published and the
//! newest [`PENDING_LIMIT`] other messages, and sends them after reconnecting; after every
//! reconnect it says hello and re-subscribes every prefix, so subscribers see one stream; a
//! subscription that reads gets every event (a full one makes the client wait, up to
//! [`LOCAL_PATIENCE`], so a retained snapshot of any size arrives whole), and one that stops
//! reading loses events and hears `Lagged` on its next `recv`, never later.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::io::{AsyncWriteExt as _, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, LinesCodec};

use super::frame::{self, Envelope, Frame, FrameError};
use super::unix_millis;

/// Non-retained messages kept while the broker is unreachable; older ones are dropped.
pub const PENDING_LIMIT: usize = 1024;
/// Events queued per local subscription before it is told it lagged.
pub const SUBSCRIPTION_DEPTH: usize = 4096;
/// How long the client waits for a full subscription to take an event before counting it as
/// stalled (it then loses events, and is told, until it has room again).
pub const LOCAL_PATIENCE: Duration = Duration::from_secs(1);
/// Reconnect backoff: first wait and ceiling.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest line a client accepts from the broker.
const MAX_INCOMING_LINE: usize = 16 * 1024 * 1024;

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    Message(Envelope),
    /// This many messages were dropped before reaching this subscription.
    Lagged {
        missed: u64,
    },
}

/// A stream of events for one topic prefix. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<BusEvent>,
    /// Events lost for this subscription and not yet told.
    missed: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event; `None` once the client is gone. Events lost since the last call are
    /// told first, as one `Lagged`.
    pub async fn recv(&mut self) -> Option<BusEvent> {
        loop {
            let missed = self.missed.swap(0, Ordering::Relaxed);
            if missed > 0 {
                return Some(BusEvent::Lagged { missed });
            }
            match self.events.recv().await? {
                // A wake-up: the count is in `missed`.
                BusEvent::Lagged { missed: 0 } => continue,
                event => return Some(event),
            }
        }
    }
}

enum Command {
    Publish(Envelope),
    Subscribe(String, mpsc::Sender<BusEvent>, Arc<AtomicU64>),
}

/// Handle to the bus. Cheap to clone; the connection lives as long as any handle.
#[derive(Debug, Clone)]
pub struct BusClient {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    connected: watch::Receiver<bool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Publish(envelope) => write!(f, "Publish({})", envelope.topic),
            Command::Subscribe(prefix, _, _) => write!(f, "Subscribe({prefix})"),
        }
    }
}

impl BusClient {
    /// Starts the connection task; it connects, and reconnects, by itself.
    pub fn spawn(socket: impl Into<PathBuf>, name: &str) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(false);
        let task = ClientTask {
            socket: socket.into(),
            name: name.to_owned(),
            retained: BTreeMap::new(),
            pending: VecDeque::new(),
            subscriptions: Vec::new(),
            connected: connected_tx,
            dropped_while_down: 0,
        };
        tokio::spawn(task.run(command_rx));
        Self {
            name: name.to_owned(),
            commands,
            connected,
        }
    }

    /// Publishes `body` on `topic`. Returns at once; fails only for a bad topic or body.
    pub fn publish<T: Serialize>(
        &self,
        topic: &str,
        body: &T,
        retain: bool,
    ) -> Result<(), FrameError> {
        frame::check_topic(topic)?;
        let body = serde_json::to_value(body).map_err(|e| FrameError::Json(e.to_string()))?;
        let envelope = Envelope {
            v: frame::VERSION,
            topic: topic.to_owned(),
            ts: unix_millis(),
            from: self.name.clone(),
            retain,
            body,
        };
        // A closed channel means the runtime is shutting down; nothing is left to deliver to.
        let _ = self.commands.send(Command::Publish(envelope));
        Ok(())
    }

    /// Subscribes to every topic starting with `prefix` ("" for all), retained values first.
    pub fn subscribe(&self, prefix: &str) -> Subscription {
        let (sender, events) = mpsc::channel(SUBSCRIPTION_DEPTH);
        let missed = Arc::new(AtomicU64::new(0));
        let _ = self.commands.send(Command::Subscribe(
            prefix.to_owned(),
            sender,
            Arc::clone(&missed),
        ));
        Subscription { events, missed }
    }

    /// Whether the broker connection is up right now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until connected or `timeout` passes; true if connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct LocalSubscription {
    prefix: String,
    sender: mpsc::Sender<BusEvent>,
    /// Shared with the [`Subscription`]: events lost and not yet told.
    missed: Arc<AtomicU64>,
    /// It did not take an event within [`LOCAL_PATIENCE`]: events are not waited for until it
    /// has room again.
    stalled: bool,
}

impl LocalSubscription {
    fn new(prefix: String, sender: mpsc::Sender<BusEvent>, missed: Arc<AtomicU64>) -> Self {
        Self {
            prefix,
            sender,
            missed,
            stalled: false,
        }
    }

    /// Hands `event` over, waiting for room (up to [`LOCAL_PATIENCE`]) unless stalled.
    async fn offer(&mut self, event: BusEvent) {
        use tokio::sync::mpsc::error::TrySendError;
        let event = match self.sender.try_send(event) {
            Ok(()) => {
                self.stalled = false;
                return;
            }
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(event)) => event,
        };
        if !self.stalled {
            match tokio::time::timeout(LOCAL_PATIENCE, self.sender.send(event)).await {
                Ok(_) => return,
                Err(_) => self.stalled = true,
            }
        }
        self.missed.fetch_add(1, Ordering::Relaxed);
    }

    /// The broker dropped `missed` events for this connection: told on the next `recv`.
    fn lagged(&self, missed: u64) {
        self.missed.fetch_add(missed, Ordering::Relaxed);
        // Wakes a `recv` waiting on an empty queue; a full queue wakes it anyway.
        let _ = self.sender.try_send(BusEvent::Lagged { missed: 0 });
    }
}

struct ClientTask {
    socket: PathBuf,
    name: String,
    retained: BTreeMap<String, Envelope>,
    pending: VecDeque<Envelope>,
    subscriptions: Vec<LocalSubscription>,
    connected: watch::Sender<bool>,
    dropped_while_down: u64,
}

enum Ended {
    /// Every handle is gone: stop.
    Closed,
    /// The connection broke: reconnect.
    Broken,
}

impl ClientTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => {
                    backoff = BACKOFF_FIRST;
                    let _ = self.connected.send(true);
                    tracing::debug!(socket = %self.socket.display(), "bus connected");
                    let ended = self.connected_loop(stream, &mut commands).await;
                    let _ = self.connected.send(false);
                    if let Ended::Closed = ended {
                        return;
                    }
                    tracing::debug!(socket = %self.socket.display(), "bus connection lost");
                }
                Err(error) => {
                    tracing::trace!(%error, socket = %self.socket.display(), "bus connect failed");
                }
            }
            // Keep taking commands while waiting, so publishers never notice the outage.
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    command = commands.recv() => match command {
                        Some(command) => self.take_offline(command),
                        None => return,
                    },
                }
            }
        }
    }

    fn take_offline(&mut self, command: Command) {
        match command {
            Command::Publish(envelope) => self.remember(envelope, true),
            Command::Subscribe(prefix, sender, missed) => self
                .subscriptions
                .push(LocalSubscription::new(prefix, sender, missed)),
        }
    }

    /// Records a published envelope; `queue` also queues non-retained ones for later sending.
    fn remember(&mut self, envelope: Envelope, queue: bool) {
        if envelope.retain {
            if envelope.body.is_null() {
                self.retained.remove(&envelope.topic);
            } else {
                self.retained
                    .insert(envelope.topic.clone(), envelope.clone());
            }
            if queue && envelope.body.is_null() {
                self.pending.push_back(envelope);
            }
        } else if queue {
            if self.pending.len() == PENDING_LIMIT {
                self.pending.pop_front();
                self.dropped_while_down += 1;
            }
            self.pending.push_back(envelope);
        }
    }

    async fn connected_loop(
        &mut self,
        stream: UnixStream,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Ended {
        let (read_half, write_half) = stream.into_split();
        let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
        let mut lines = FramedRead::new(
            read_half,
            LinesCodec::new_with_max_length(MAX_INCOMING_LINE),
        );
        if self.send_greeting(&mut writer).await.is_err() {
            return Ended::Broken;
        }
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else {
                        let _ = writer.flush().await;
                        return Ended::Closed;
                    };
                    let mut next = Some(command);
                    // Batch everything already queued into one flush.
                    while let Some(command) = next.take() {
                        if self.send_command(&mut writer, command).await.is_err() {
                            return Ended::Broken;
                        }
                        next = commands.try_recv().ok();
                    }
                    if writer.flush().await.is_err() {
                        return Ended::Broken;
                    }
                }
                line = lines.next() => match line {
                    Some(Ok(line)) => self.deliver_line(&line).await,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "bad line from bus broker; reconnecting");
                        return Ended::Broken;
                    }
                    None => return Ended::Broken,
                },
            }
        }
    }

    async fn send_greeting(
        &mut self,
        writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
    ) -> std::io::Result<()> {
        let hello = Frame::Hello {
            name: self.name.clone(),
            pid: std::process::id(),
        };
        writer.write_all(frame::encode(&hello).as_bytes()).await?;
        self.subscriptions.retain(|s| !s.sender.is_closed());
        let mut prefixes: Vec<String> = self
            .subscriptions
            .iter()
            .map(|s| s.prefix.clone())
            .collect();
        prefixes.sort();
        prefixes.dedup();
        for prefix in prefixes {
            writer
                .write_all(frame::encode(&Frame::Sub { prefix }).as_bytes())
                .await?;
        }
        for envelope in self.retained.values() {
            writer
                .write_all(frame::encode(&Frame::Pub(envelope.clone())).as_bytes())
                .await?;
        }
        if self.dropped_while_down > 0 {
            tracing::warn!(
                dropped = self.dropped_while_down,
                "bus messages dropped while the broker was unreachable"
            );
            self.dropped_while_down = 0;
        }
        while let Some(envelope) = self.pending.pop_front() {
            if envelope.retain && !envelope.body.is_null() {
                continue; // already sent from `retained`
            }
            writer
                .write_all(frame::encode(&Frame::Pub(envelope)).as_bytes())
                .await?;
        }
        writer.flush().await
    }

    async fn send_command(
        &mut self,
        writer: &mut BufWriter<tokio::net::unix::OwnedWriteHalf>,
        command: Command,
    ) -> std::io::Result<()> {
        match command {
            Command::Publish(envelope) => {
                let line = frame::encode(&Frame::Pub(envelope.clone()));
                self.remember(envelope.clone(), false);
                if let Err(error) = writer.write_all(line.as_bytes()).await {
                    self.remember(envelope, true);
                    return Err(error);
                }
            }
            Command::Subscribe(prefix, sender, missed) => {
                let already = self
                    .subscriptions
                    .iter()
                    .any(|s| s.prefix == prefix && !s.sender.is_closed());
                self.subscriptions
                    .push(LocalSubscription::new(prefix.clone(), sender, missed));
                if already {
                    // The broker sends retained values only on the first sub of a prefix; ask
                    // again by re-subscribing after an unsub so the new local subscriber gets them.
                    writer
                        .write_all(
                            frame::encode(&Frame::Unsub {
                                prefix: prefix.clone(),
                            })
                            .as_bytes(),
                        )
                        .await?;
                }
                writer
                    .write_all(frame::encode(&Frame::Sub { prefix }).as_bytes())
                    .await?;
            }
        }
        Ok(())
    }

    async fn deliver_line(&mut self, line: &str) {
        match frame::decode(line.as_bytes()) {
            Ok(Frame::Msg(envelope)) => {
                self.subscriptions.retain(|s| !s.sender.is_closed());
                for subscription in &mut self.subscriptions {
                    if envelope.topic.starts_with(subscription.prefix.as_str()) {
                        subscription
                            .offer(BusEvent::Message(envelope.clone()))
                            .await;
                    }
                }
            }
            Ok(Frame::Lagged { missed }) => {
                for subscription in &self.subscriptions {
                    subscription.lagged(missed);
                }
            }
            Ok(Frame::Error { message }) => tracing::warn!(%message, "bus broker refused a line"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "undecodable line from bus broker"),
        }
    }
}

/// ±20 % so a site's agents do not reconnect in lockstep after a broker restart.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    base.mul_f64(factor)
}

/// Publishes one message on a fresh connection and waits until the broker has processed it.
/// For one-shot tools (`fieldctl publish`); agents use [`BusClient`].
pub async fn publish_once(
    socket: &Path,
    envelope: Envelope,
    timeout: Duration,
) -> anyhow::Result<()> {
    let work = async {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to the bus at {}", socket.display()))?;
        let (read_half, mut write_half) = stream.into_split();
        let mut out = frame::encode(&Frame::Pub(envelope));
        out.push_str(&frame::encode(&Frame::Ping));
        write_half.write_all(out.as_bytes()).await?;
        let mut lines = FramedRead::new(
            read_half,
            LinesCodec::new_with_max_length(MAX_INCOMING_LINE),
        );
        while let Some(line) = lines.next().await {
            match frame::decode(line?.as_bytes())? {
                Frame::Pong => return Ok(()),
                Frame::Error { message } => anyhow::bail!("the bus refused the message: {message}"),
                _ => {}
            }
        }
        anyhow::bail!("the bus closed the connection")
    };
    tokio::time::timeout(timeout, work).await.with_context(|| {
        format!(
            "no answer from the bus at {} within {timeout:?}",
            socket.display()
        )
    })?
}
