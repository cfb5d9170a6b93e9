//! The agent: a DHCP socket on the interface of every network served, the decision state
//! machine (`decide::Server`) fed from them, the conflict probes, and a committer thread that
//! owns the lease log.
//!
//! Group commit: decisions that store a lease hand it to the committer with their reply; the
//! committer takes everything queued, appends it in one write and one `fdatasync`, and hands
//! the batch back; only then are the replies sent and the leases published on the bus. While
//! one batch syncs the next one queues, so the disk sets the batch size, not a timer.
//!
//! Replication and takeover: the agent answers peers' sync requests from its lease table,
//! stores what it pulls from them (and only then reports it stored, which handback waits for),
//! and carries out what `takeover::Coordinator` decides: serving, pausing, and adding or
//! removing a taken network's gateway address and routes.
//!
//! Invariant: no ACK leaves before its lease is durable; a lease the log could not store is
//! never acknowledged (the client asks again).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fieldnet::bus::topics::{self, DhcpNetworkState};
use fieldnet::bus::{BusClient, BusEvent};
use fieldnet::rt::AgentContext;
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::decide::{self, Decision, Reply, Server};
use crate::edge::commit::{Committed, Job, commit_loop};
use crate::edge::dhcp::{self, Packet, type_label};
pub use crate::edge::metrics::Metrics;
use crate::edge::probe::{ArpProber, Claimed};
use crate::edge::replicate::{self, Peers};
pub use crate::edge::routes::ROUTE_PROTOCOL;

mod peers;
mod takeover;
use crate::edge::routes::{Leg, withdraw_address};
use crate::edge::store::{self, LeaseLog};
use crate::lease::{Lease, Leases};
use crate::plan::Plan;
use crate::summary::{self, NearFull, NearFullPools};
use crate::takeover::Coordinator;

/// How often offers and leases are expired and the gauges updated.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The part of `/healthz` that the lease store makes unhealthy.
const STORE_HEALTH: &str = "lease store";

/// How often who-serves-what is re-decided (besides after every peer reply).
const COORDINATE: Duration = Duration::from_millis(50);
/// One network's edge: own, or a leg into another appliance's network.
struct Edge {
    socket: Arc<UdpSocket>,
    interface: String,
    prober: ArpProber,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
    /// The appliance whose network it is.
    owner: u8,
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
    coordinator: Coordinator,
    peers: Peers,
    netlink: rtnetlink::Handle,
    me: u8,
    /// The last `dhcp/state` published.
    state: Option<topics::DhcpState>,
    /// `/healthz`: unhealthy while the lease store fails.
    health: fieldnet::obs::Health,
    /// Served networks whose pool is near full now.
    near_full: NearFullPools,
}

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.dhcp_takeover.clone();
    let metrics = Metrics::register(&registry)?;
    let store::Opened {
        log,
        leases: records,
        torn_bytes,
        damage,
    } = LeaseLog::open(&settings.store)?;
    let record_count = records.len();
    let mut leases = Leases::default();
    for record in records {
        leases.apply(record);
    }
    if let Some(damage) = &damage {
        tracing::error!(
            store = %settings.store.display(),
            offset = damage.offset,
            bad_bytes = damage.bad_bytes,
            records_after = damage.records_after,
            saved_as = %damage.saved_as.display(),
            "the lease log was damaged before whole records: every whole record was kept and the damaged file saved; check the disk"
        );
    }
    if torn_bytes > 0 {
        tracing::warn!(
            store = %settings.store.display(),
            torn_bytes,
            "the lease log ended in a torn record (a write cut short by a crash, never acknowledged): cut off"
        );
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
    server.set_limits(decide::Limits {
        max_offers: settings.max_offers,
        new_clients_per_minute: settings.new_clients_per_minute,
    });

    let (packets_tx, mut packets) = mpsc::channel::<Packet>(4096);
    let (claims_tx, mut claims) = mpsc::unbounded_channel::<Claimed>();
    let netlink = fieldnet::net::connect()?;
    let mut edges = BTreeMap::new();
    // Legs whose network the previous run left held.
    let mut adopted = Vec::new();
    let own_area = config.appliance.area.clone();
    for network in &config.networks {
        let own = network.area == own_area;
        let Some(interface) = network.interface.clone() else {
            anyhow::ensure!(
                !own,
                "network {} has no interface in the config; dhcp-takeover answers on it",
                network.name
            );
            continue;
        };
        let owner = config
            .areas
            .iter()
            .find(|area| area.name == network.area)
            .map_or(config.appliance.id, |area| area.appliance);
        let opened = dhcp::bind(&interface).and_then(|socket| {
            let prober = ArpProber::open(&interface, claims_tx.clone())
                .with_context(|| format!("opening an ARP socket on {interface}"))?;
            Ok((socket, prober))
        });
        let (socket, prober) = match opened {
            Ok(opened) => opened,
            Err(error) if own => return Err(error),
            Err(error) => {
                tracing::error!(network = %network.name, %interface, error = format!("{error:#}"), "cannot open the leg into a peer's network; it cannot be taken over from here");
                continue;
            }
        };
        let socket = Arc::new(socket);
        tokio::spawn(dhcp::receive(
            Arc::clone(&socket),
            network.name.clone(),
            packets_tx.clone(),
            shutdown.clone(),
        ));
        if let Some(plan) = server.plan().network(&network.name) {
            metrics
                .pool
                .with_label_values(&[network.name.as_str(), "total"])
                .set(i64::from(plan.pool_size()));
        }
        let edge = Edge {
            socket,
            interface,
            prober,
            gateway: network.gateway,
            subnet: network.subnet,
            owner,
        };
        if !own {
            match fieldnet::net::has_address(&netlink, &edge.interface, edge.gateway).await {
                Ok(true) => {
                    // The previous run ended while holding it (SIGKILL, a crash): adopted, so
                    // the network's traffic keeps flowing; the coordinator decides what next.
                    tracing::warn!(network = %network.name, interface = %edge.interface, gateway = %edge.gateway, "a takeover left by the previous run: adopted, address kept");
                    adopted.push(network.name.clone());
                }
                held => {
                    if let Err(error) = held {
                        tracing::warn!(network = %network.name, error = format!("{error:#}"), "reading the leg's addresses");
                    }
                    // Nothing held: clear any route or announcement left behind.
                    withdraw_address(&netlink, &edge.leg()).await;
                    let _ = bus.publish(
                        &topics::takeover_topic(&network.name),
                        &serde_json::Value::Null,
                        true,
                    );
                }
            }
        }
        tracing::info!(network = %network.name, interface = %edge.interface, own, "DHCP socket open");
        edges.insert(network.name.clone(), edge);
    }

    let (commits_tx, commits_rx) = std::sync::mpsc::channel::<Job>();
    let (committed_tx, mut committed) = mpsc::unbounded_channel::<Committed>();
    let committer = std::thread::Builder::new()
        .name("lease-log".to_owned())
        .spawn(move || commit_loop(log, commits_rx, committed_tx))
        .context("starting the lease-log thread")?;

    // The peers: the API they ask, and a task per peer that asks them.
    let me = config.appliance.id;
    let replicate::Started {
        peers,
        mut asks,
        mut events,
    } = replicate::start(&config, settings.peer_port, &shutdown).await?;

    let own: Vec<String> = config.own_networks().map(|n| n.name.clone()).collect();
    let legs: Vec<(String, u8)> = edges
        .iter()
        .filter(|(name, _)| !own.contains(name))
        .map(|(name, edge)| (name.clone(), edge.owner))
        .collect();
    let mut coordinator = Coordinator::new(
        me,
        now_ms(),
        now_ms(),
        own,
        legs,
        config.peers.iter().map(|p| p.id),
    );
    for network in &adopted {
        coordinator.adopt(network);
    }
    let mut liveness = bus.subscribe(topics::TOPIC_PEERS);

    let mut agent = Agent {
        server,
        edges,
        commits: commits_tx,
        compaction_queued: false,
        bus: bus.clone(),
        published: HashSet::new(),
        metrics,
        coordinator,
        peers,
        netlink,
        me,
        state: None,
        health: health.clone(),
        near_full: NearFullPools::default(),
    };
    agent.coordinate().await;
    agent.housekeeping();
    fieldnet::rt::ready(&health, &shutdown);

    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut coordinate = tokio::time::interval(COORDINATE);
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
            Some(ask) = asks.recv() => agent.on_ask(ask),
            Some(event) = events.recv() => {
                agent.on_peer(event);
                agent.coordinate().await;
            }
            event = liveness.recv() => match event {
                Some(BusEvent::Message(envelope)) => {
                    agent.on_liveness(&envelope.topic, &envelope.body);
                    agent.coordinate().await;
                }
                Some(BusEvent::Lagged { .. }) | None => {
                    // Retained: subscribing again reads every peer's current state.
                    drop(liveness);
                    liveness = bus.subscribe(topics::TOPIC_PEERS);
                }
            },
            () = until(next_deadline) => agent.on_tick(),
            _ = coordinate.tick() => agent.coordinate().await,
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
    // A taken network is left to its owner (or the next in line) when this agent stops.
    let taken: Vec<String> = agent
        .coordinator
        .states()
        .into_iter()
        .filter(|(_, state)| {
            matches!(
                state,
                DhcpNetworkState::Taken | DhcpNetworkState::HandingBack | DhcpNetworkState::Adopted
            )
        })
        .map(|(network, _)| network)
        .collect();
    for network in taken {
        if let Some(edge) = agent.edges.get(&network) {
            withdraw_address(&agent.netlink, &edge.leg()).await;
        }
        let _ = agent.bus.publish(
            &topics::takeover_topic(&network),
            &serde_json::Value::Null,
            true,
        );
    }
    Ok(())
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

/// Sends `reply` on its network's socket.
fn send_now(edges: &BTreeMap<String, Edge>, reply: &Reply) -> std::io::Result<()> {
    let Some(edge) = edges.get(&reply.network) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no DHCP socket for {}", reply.network),
        ));
    };
    dhcp::send(&edge.socket, reply)
}

impl Edge {
    fn leg(&self) -> Leg<'_> {
        Leg {
            interface: &self.interface,
            gateway: self.gateway,
            subnet: self.subnet,
        }
    }
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
        if let Some(edge) = self.edges.get(network)
            && let Err(error) = edge.prober.ask(address, edge.gateway)
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
            tracing::error!(%error, records = batch.stored.len(), "cannot store leases; not acknowledging them, and taking them back");
            for (lease, _) in &batch.stored {
                self.server.unstored(lease);
            }
            self.health.set(
                STORE_HEALTH,
                Some(format!("the lease store fails: {error}")),
            );
            return;
        }
        if !batch.stored.is_empty() {
            self.health.set(STORE_HEALTH, None);
        }
        for mark in batch.marks {
            self.peers.synced.insert(mark.peer, mark);
        }
        if batch
            .stored
            .iter()
            .any(|(lease, _)| lease.issued_by == self.me)
        {
            self.tell_peers();
        }
        for (lease, reply) in batch.stored {
            self.server.stored(&lease);
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
                client_id: Some(lease.client.to_string()),
            };
            if self.bus.publish(&topic, &body, true).is_ok() {
                self.published.insert(lease.address);
            }
        } else if self.published.remove(&lease.address) {
            let _ = self.bus.publish(&topic, &serde_json::Value::Null, true);
        }
    }

    /// Every second: the bus made to match the bound leases (published, or cleared once they
    /// ended), the gauges, the near-full warnings and `dhcp/state`.
    fn housekeeping(&mut self) {
        let held: Vec<(String, usize)> = self
            .server
            .serving()
            .iter()
            .map(|network| (network.clone(), self.server.held_on(network)))
            .collect();
        let summary = summary::summarise(
            now_ms(),
            self.server.visible_leases(),
            held,
            &self.published,
        );
        for lease in &summary.changed {
            self.publish(lease);
        }
        self.metrics.leases.reset();
        for ((network, class), count) in &summary.bound {
            self.metrics
                .leases
                .with_label_values(&[network.as_str(), class.as_str()])
                .set(*count as i64);
        }
        for network in self.server.serving().clone() {
            let in_use = summary.used_on(&network);
            let total = self.pool_total(&network);
            self.metrics
                .pool
                .with_label_values(&[network.as_str(), "used"])
                .set(in_use as i64);
            match self.near_full.update(&network, in_use, total) {
                Some(NearFull::Became) => {
                    tracing::warn!(%network, in_use, total, "DHCP pool near full (leases and held offers)");
                }
                Some(NearFull::Ended) => {
                    tracing::info!(%network, in_use, total, "DHCP pool no longer near full");
                }
                None => {}
            }
        }
        let state = summary.state(
            self.coordinator.states(),
            |network| self.edges.get(network).map_or(self.me, |edge| edge.owner),
            |network| self.pool_total(network),
        );
        if self.state.as_ref() != Some(&state)
            && self
                .bus
                .publish(topics::TOPIC_DHCP_STATE, &state, true)
                .is_ok()
        {
            self.state = Some(state);
        }
    }

    fn pool_total(&self, network: &str) -> u64 {
        self.server
            .plan()
            .network(network)
            .map_or(0, |plan| u64::from(plan.pool_size()))
    }
}
