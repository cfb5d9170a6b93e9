//! The agent: a DHCP socket on the interface of every network served, the decision state
//! machine (`decide::Server`) fed from them, the conflict probes, and a committer thread that
//! owns the lease log.
//!
//! Group commit: decisions that store a lease hand it to the committer with their reply; the
//! committer takes everything queued, appends it in one write and one `fdatasync`, and hands
//! the batch back; only then are the replies sent and the leases published on the bus. While
//! one batch syncs the next one queues, so the disk sets the batch size, not a timer.
//!
//! Invariant: no ACK leaves before its lease is durable; a lease the log could not store is
//! never acknowledged (the client asks again).

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dhcproto::v4::MessageType;
use fieldnet::bus::{BusClient, topics};
use fieldnet::config::Config;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decide::{self, Decision, Destination, Reply, Server};
use crate::lease::{Lease, Leases};
use crate::plan::Plan;
use crate::probe::{ArpProber, Claimed};
use crate::store::{self, LeaseLog};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// Largest DHCP datagram read (a full Ethernet frame's worth).
const MAX_DATAGRAM: usize = 1500;
/// How often offers and leases are expired and the gauges updated.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Most records in one group commit.
const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone)]
pub struct Metrics {
    messages: IntCounterVec,
    replies: IntCounterVec,
    ignored: IntCounterVec,
    probes: IntCounterVec,
    leases: IntGaugeVec,
    pool: IntGaugeVec,
    serving: IntGaugeVec,
    commit_seconds: Histogram,
    commit_failures: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let metrics = Self {
            messages: IntCounterVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_messages_total",
                    "DHCP messages received, by type",
                ),
                &["type"],
            )?,
            replies: IntCounterVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_replies_total",
                    "DHCP replies sent, by type (offer, ack, nak)",
                ),
                &["type"],
            )?,
            ignored: IntCounterVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_ignored_total",
                    "Requests answered with nothing, by reason",
                ),
                &["reason"],
            )?,
            probes: IntCounterVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_probes_total",
                    "Conflict checks before offering, by result (free, in_use)",
                ),
                &["result"],
            )?,
            leases: IntGaugeVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_leases",
                    "Bound leases, by network and device class",
                ),
                &["network", "class"],
            )?,
            pool: IntGaugeVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_pool_addresses",
                    "Dynamic addresses per network: total, and used (bound, offered or quarantined)",
                ),
                &["network", "state"],
            )?,
            serving: IntGaugeVec::new(
                Opts::new(
                    "fieldnet_dhcp_takeover_serving",
                    "1 for each network served now, by role (own, takeover)",
                ),
                &["network", "role"],
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "fieldnet_dhcp_takeover_commit_seconds",
                    "Time to store one batch of leases durably",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
                ]),
            )?,
            commit_failures: IntCounter::new(
                "fieldnet_dhcp_takeover_commit_failures_total",
                "Batches the lease log could not store (their requests were not acknowledged)",
            )?,
        };
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.replies.clone()))?;
        registry.register(Box::new(metrics.ignored.clone()))?;
        registry.register(Box::new(metrics.probes.clone()))?;
        registry.register(Box::new(metrics.leases.clone()))?;
        registry.register(Box::new(metrics.pool.clone()))?;
        registry.register(Box::new(metrics.serving.clone()))?;
        registry.register(Box::new(metrics.commit_seconds.clone()))?;
        registry.register(Box::new(metrics.commit_failures.clone()))?;
        Ok(metrics)
    }
}

/// A datagram from a network's socket.
struct Packet {
    network: String,
    bytes: Vec<u8>,
}

/// Work for the committer thread.
// Store is the one sent per lease; boxing it to shrink the rare Compact would cost an
// allocation per lease for nothing.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A lease on its way to the disk, with the reply that waits for it.
    Store { lease: Lease, reply: Option<Reply> },
    /// Rewrite the log from these live records (everything queued before is in them).
    Compact(Vec<Lease>),
}

/// A batch back from the committer.
struct Committed {
    stored: Vec<(Lease, Option<Reply>)>,
    result: std::io::Result<()>,
    seconds: f64,
    /// Records in the log file now.
    log_records: usize,
    /// Whether this batch ended with a compaction (done or failed).
    compacted: bool,
}

/// One served network's edge.
struct Edge {
    socket: Arc<UdpSocket>,
    interface: String,
    prober: Option<ArpProber>,
}

struct Agent {
    server: Server,
    edges: BTreeMap<String, Edge>,
    commits: std::sync::mpsc::Sender<Job>,
    /// A compaction is on its way to the committer.
    compaction_queued: bool,
    bus: BusClient,
    /// Addresses whose lease is published (retained) on the bus now.
    published: HashSet<Ipv4Addr>,
    metrics: Metrics,
}

pub async fn run(
    config: Config,
    registry: Registry,
    health: fieldnet::obs::Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.agents.dhcp_takeover.clone();
    let metrics = Metrics::register(&registry)?;
    let bus = fieldnet::rt::announce(
        &config,
        "dhcp-takeover",
        env!("CARGO_PKG_VERSION"),
        settings.common.metrics_listen,
    )?;
    let (log, records, torn_bytes) = LeaseLog::open(&settings.store)?;
    let record_count = records.len();
    let mut leases = Leases::default();
    for record in records {
        leases.apply(record);
    }
    tracing::info!(
        store = %settings.store.display(),
        records = record_count,
        torn_bytes,
        leases = leases.len(),
        "lease log read"
    );
    let mut server = Server::new(
        Plan::new(&config),
        config.appliance.id,
        settings.offer_hold.as_millis() as u64,
        settings
            .conflict_probe
            .map(|probe| probe.as_millis() as u64),
        leases,
    );

    let (packets_tx, mut packets) = mpsc::channel::<Packet>(4096);
    let (claims_tx, mut claims) = mpsc::unbounded_channel::<Claimed>();
    let mut edges = BTreeMap::new();
    for network in config.own_networks() {
        let interface = network.interface.clone().with_context(|| {
            format!(
                "network {} has no interface in the config; dhcp-takeover answers on it",
                network.name
            )
        })?;
        let socket = Arc::new(bind(&interface)?);
        let prober = match settings.conflict_probe {
            Some(_) => Some(
                ArpProber::open(&interface, claims_tx.clone())
                    .with_context(|| format!("opening an ARP socket on {interface}"))?,
            ),
            None => None,
        };
        tokio::spawn(receive(
            Arc::clone(&socket),
            network.name.clone(),
            packets_tx.clone(),
            shutdown.clone(),
        ));
        server.serve(&network.name, true);
        metrics
            .serving
            .with_label_values(&[network.name.as_str(), "own"])
            .set(1);
        if let Some(plan) = server.plan().network(&network.name) {
            metrics
                .pool
                .with_label_values(&[network.name.as_str(), "total"])
                .set(i64::from(plan.pool_size()));
        }
        tracing::info!(network = %network.name, %interface, "serving DHCP");
        edges.insert(
            network.name.clone(),
            Edge {
                socket,
                interface,
                prober,
            },
        );
    }

    let (commits_tx, commits_rx) = std::sync::mpsc::channel::<Job>();
    let (committed_tx, mut committed) = mpsc::unbounded_channel::<Committed>();
    let committer = std::thread::Builder::new()
        .name("lease-log".to_owned())
        .spawn(move || commit_loop(log, commits_rx, committed_tx))
        .context("starting the lease-log thread")?;

    let mut agent = Agent {
        server,
        edges,
        commits: commits_tx,
        compaction_queued: false,
        bus,
        published: HashSet::new(),
        metrics,
    };
    agent.housekeeping();
    fieldnet::rt::ready(&health, &shutdown);

    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    loop {
        let next_deadline = agent.server.next_deadline();
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(packet) = packets.recv() => {
                agent.on_packet(&packet);
                // Take what else is waiting before the next select, so one wake-up serves a burst.
                while let Ok(packet) = packets.try_recv() {
                    agent.on_packet(&packet);
                }
            }
            Some(claim) = claims.recv() => agent.on_claim(&claim),
            Some(batch) = committed.recv() => agent.on_committed(batch),
            () = until(next_deadline) => agent.on_tick(),
            _ = housekeeping.tick() => {
                agent.on_tick();
                agent.housekeeping();
            }
        }
    }
    // Leases already decided are stored before the process ends.
    drop(agent.commits);
    let _ = tokio::task::spawn_blocking(move || committer.join()).await;
    while let Ok(batch) = committed.try_recv() {
        if batch.result.is_ok() {
            for (_, reply) in &batch.stored {
                if let Some(reply) = reply {
                    let _ = send_now(&agent.edges, reply);
                }
            }
        }
    }
    Ok(())
}

/// A UDP socket on 0.0.0.0:67 bound to `interface`, allowed to broadcast.
fn bind(interface: &str) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding the DHCP socket to {interface}"))?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT)).into())
        .with_context(|| format!("binding 0.0.0.0:{SERVER_PORT} on {interface}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}

async fn receive(
    socket: Arc<UdpSocket>,
    network: String,
    packets: mpsc::Sender<Packet>,
    shutdown: CancellationToken,
) {
    let mut buffer = vec![0_u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        match received {
            Ok((length, _from)) => {
                let packet = Packet {
                    network: network.clone(),
                    bytes: buffer[..length].to_vec(),
                };
                if packets.send(packet).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%network, %error, "receiving DHCP");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The committer thread: takes every queued lease, stores them with one sync and hands the
/// batch back; a compaction job (sent by the agent, which holds the live records) rewrites the
/// log after the leases queued before it.
fn commit_loop(
    mut log: LeaseLog,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Committed>,
) {
    let mut next = jobs.recv().ok();
    while let Some(first) = next.take() {
        let mut stored = Vec::new();
        let mut compaction = None;
        let mut job = Some(first);
        while let Some(current) = job.take() {
            match current {
                Job::Store { lease, reply } => stored.push((lease, reply)),
                Job::Compact(live) => {
                    compaction = Some(live);
                    break;
                }
            }
            if stored.len() < MAX_BATCH {
                job = jobs.try_recv().ok();
            }
        }
        let records: Vec<Lease> = stored.iter().map(|(lease, _)| lease.clone()).collect();
        let started = Instant::now();
        let result = if records.is_empty() {
            Ok(())
        } else {
            log.append(&records)
        };
        let seconds = started.elapsed().as_secs_f64();
        let compacted = compaction.is_some();
        if let Some(live) = compaction
            && let Err(error) = log.compact(live.iter())
        {
            tracing::warn!(%error, "compacting the lease log (it keeps growing; nothing is lost)");
        }
        let batch = Committed {
            stored,
            result,
            seconds,
            log_records: log.records(),
            compacted,
        };
        if done.send(batch).is_err() {
            return;
        }
        next = jobs.recv().ok();
    }
}

/// Sleeps until `deadline` (milliseconds since the epoch), or for ever without one.
async fn until(deadline: Option<u64>) {
    match deadline {
        Some(deadline) => {
            tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now_ms()))).await;
        }
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    fieldnet::bus::unix_millis()
}

fn type_label(kind: Option<MessageType>) -> &'static str {
    match kind {
        Some(MessageType::Discover) => "discover",
        Some(MessageType::Offer) => "offer",
        Some(MessageType::Request) => "request",
        Some(MessageType::Decline) => "decline",
        Some(MessageType::Ack) => "ack",
        Some(MessageType::Nak) => "nak",
        Some(MessageType::Release) => "release",
        Some(MessageType::Inform) => "inform",
        _ => "other",
    }
}

/// Sends `reply` on its network's socket.
fn send_now(edges: &BTreeMap<String, Edge>, reply: &Reply) -> std::io::Result<()> {
    let Some(edge) = edges.get(&reply.network) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no DHCP socket for {}", reply.network),
        ));
    };
    let to = match reply.to {
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
        Destination::Client(address) => SocketAddrV4::new(address, CLIENT_PORT),
        Destination::Relay(address) => SocketAddrV4::new(address, SERVER_PORT),
    };
    edge.socket
        .try_send_to(&decide::encode(&reply.message), to.into())
        .map(|_| ())
}

impl Agent {
    fn on_packet(&mut self, packet: &Packet) {
        let Some(request) = decide::decode(&packet.bytes) else {
            self.metrics
                .ignored
                .with_label_values(&["undecodable"])
                .inc();
            return;
        };
        let kind = decide::message_type(&request);
        self.metrics
            .messages
            .with_label_values(&[type_label(kind)])
            .inc();
        tracing::trace!(network = %packet.network, kind = type_label(kind), xid = request.xid(), "request");
        let decision = self
            .server
            .handle(now_ms(), Some(&packet.network), &request);
        self.execute(decision);
    }

    fn execute(&mut self, decision: Decision) {
        match decision {
            Decision::Send(reply) => self.send(&reply),
            Decision::Commit { lease, reply } => {
                // The committer only stops when the agent does.
                let _ = self.commits.send(Job::Store { lease, reply });
            }
            Decision::Probe { network, address } => self.probe(&network, address),
            Decision::Ignore(reason) => {
                self.metrics.ignored.with_label_values(&[reason]).inc();
                tracing::debug!(reason, "request not answered");
            }
        }
    }

    fn send(&self, reply: &Reply) {
        let kind = type_label(decide::message_type(&reply.message));
        match send_now(&self.edges, reply) {
            Ok(()) => self.metrics.replies.with_label_values(&[kind]).inc(),
            Err(error) => {
                tracing::debug!(network = %reply.network, %error, kind, "sending a DHCP reply");
            }
        }
    }

    /// Sends the ARP request of a conflict check; the server has its deadline. A request that
    /// cannot be sent leaves the check to its deadline (the address counts as free).
    fn probe(&mut self, network: &str, address: Ipv4Addr) {
        let gateway = self.server.plan().network(network).map(|n| n.gateway);
        if let (Some(edge), Some(gateway)) = (self.edges.get(network), gateway)
            && let Some(prober) = &edge.prober
            && let Err(error) = prober.ask(address, gateway)
        {
            tracing::warn!(interface = %edge.interface, %error, "sending an ARP probe");
        }
    }

    /// A host claimed an address on an interface: tell the server, for the network there.
    fn on_claim(&mut self, claim: &Claimed) {
        let Some(network) = self
            .edges
            .iter()
            .find(|(_, edge)| edge.interface == claim.interface)
            .map(|(network, _)| network.clone())
        else {
            return;
        };
        let decisions = self.server.claimed(now_ms(), &network, claim.address);
        if !decisions.is_empty() {
            tracing::info!(address = %claim.address, %network, "address in use without a lease; kept out of use");
            self.metrics.probes.with_label_values(&["in_use"]).inc();
        }
        for decision in decisions {
            self.execute(decision);
        }
    }

    /// Time passed: conflict checks that ended in silence, offers whose hold ended.
    fn on_tick(&mut self) {
        let decisions = self.server.tick(now_ms());
        for decision in decisions {
            if matches!(decision, Decision::Send(_)) {
                self.metrics.probes.with_label_values(&["free"]).inc();
            }
            self.execute(decision);
        }
    }

    fn on_committed(&mut self, batch: Committed) {
        self.metrics.commit_seconds.observe(batch.seconds);
        if batch.compacted {
            self.compaction_queued = false;
        }
        if let Err(error) = &batch.result {
            self.metrics.commit_failures.inc();
            tracing::error!(%error, records = batch.stored.len(), "cannot store leases; not acknowledging them");
            return;
        }
        for (lease, reply) in batch.stored {
            if let Some(reply) = &reply {
                self.send(reply);
            }
            self.publish(&lease);
        }
        if !self.compaction_queued
            && store::worth_compacting(batch.log_records, self.server.leases().len())
        {
            // Queued behind everything appended so far, so the snapshot holds all of it.
            let live = self.server.leases().iter().cloned().collect();
            self.compaction_queued = self.commits.send(Job::Compact(live)).is_ok();
        }
    }

    /// Publishes a bound lease on the bus, or clears one that ended.
    fn publish(&mut self, lease: &Lease) {
        let topic = topics::lease_topic(lease.address);
        if lease.is_bound(now_ms()) {
            let body = topics::Lease {
                address: lease.address,
                mac: lease.mac.to_string(),
                hostname: lease.hostname.clone(),
                network: lease.network.clone(),
                expires: lease.expires,
                class: lease.class.clone(),
            };
            if self.bus.publish(&topic, &body, true).is_ok() {
                self.published.insert(lease.address);
            }
        } else if self.published.remove(&lease.address) {
            let _ = self.bus.publish(&topic, &serde_json::Value::Null, true);
        }
    }

    /// Every second: the bus made to match the bound leases (published, or cleared once they
    /// ended), and the gauges.
    fn housekeeping(&mut self) {
        let now = now_ms();
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        let mut changed = Vec::new();
        for lease in self.server.leases().iter() {
            let bound = lease.is_bound(now);
            if bound {
                *counts
                    .entry((
                        lease.network.clone(),
                        lease.class.clone().unwrap_or_default(),
                    ))
                    .or_default() += 1;
            }
            if lease.blocks(now) {
                *used.entry(lease.network.clone()).or_default() += 1;
            }
            if bound != self.published.contains(&lease.address) {
                changed.push(lease.clone());
            }
        }
        for lease in changed {
            self.publish(&lease);
        }
        self.metrics.leases.reset();
        for ((network, class), count) in counts {
            self.metrics
                .leases
                .with_label_values(&[network.as_str(), class.as_str()])
                .set(count);
        }
        for network in self.server.serving() {
            self.metrics
                .pool
                .with_label_values(&[network.as_str(), "used"])
                .set(used.get(network).copied().unwrap_or(0));
        }
    }
}
