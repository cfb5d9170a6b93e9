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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dhcproto::v4::MessageType;
use fieldnet::bus::topics::{self, DhcpNetworkState};
use fieldnet::bus::{BusClient, BusEvent};
use fieldnet::config::{Config, PathKind};
use ipnet::Ipv4Net;
use prometheus::Registry;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::decide::{self, Decision, Destination, Reply, Server};
use crate::edge::commit::{Committed, Job, commit_loop};
pub use crate::edge::metrics::Metrics;
use crate::edge::probe::{ArpProber, Claimed};
use crate::edge::replicate::{self, PeerEvent, PeerLink, SyncAsk};
use crate::edge::store::{self, LeaseLog};
use crate::lease::{Lease, Leases};
use crate::peer::{self, PeerKey, SyncReply, Synced};
use crate::plan::Plan;
use crate::takeover::{Action, Coordinator, Role};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// Largest DHCP datagram read (a full Ethernet frame's worth).
const MAX_DATAGRAM: usize = 1500;
/// How often offers and leases are expired and the gauges updated.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The part of `/healthz` that the lease store makes unhealthy.
const STORE_HEALTH: &str = "lease store";

/// How often who-serves-what is re-decided (besides after every peer reply).
const COORDINATE: Duration = Duration::from_millis(50);
/// Route protocol of dhcp-takeover's routes to a taken network (`ip route` shows `proto 203`).
pub const ROUTE_PROTOCOL: u8 = 203;

/// A datagram from a network's socket.
struct Packet {
    network: String,
    bytes: Vec<u8>,
}

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

/// The peers as the agent reaches them.
struct Peers {
    /// Per peer: wake its task to nudge it (we have news).
    news: BTreeMap<u8, Arc<Notify>>,
    /// Per peer: the path the bus says is active.
    active: BTreeMap<u8, watch::Sender<Option<PathKind>>>,
    /// What has been stored durably from each peer.
    synced: BTreeMap<u8, Synced>,
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
    near_full: BTreeSet<String>,
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
        let opened = bind(&interface).and_then(|socket| {
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
        tokio::spawn(receive(
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
                    withdraw_address(&netlink, &edge).await;
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
    let key = PeerKey::new(&config.site.key.bytes()?);
    let (asks_tx, mut asks) = mpsc::channel::<SyncAsk>(64);
    let (events_tx, mut events) = mpsc::channel::<PeerEvent>(64);
    let client = reqwest::Client::builder()
        .timeout(peer::REQUEST_TIMEOUT)
        .connect_timeout(peer::REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the peer HTTP client")?;
    let mut peers = Peers {
        news: BTreeMap::new(),
        active: BTreeMap::new(),
        synced: BTreeMap::new(),
    };
    let mut nudged = BTreeMap::new();
    for configured in &config.peers {
        let (active_tx, active_rx) = watch::channel(None);
        let news = Arc::new(Notify::new());
        let nudge = Arc::new(Notify::new());
        let link = PeerLink {
            me,
            peer: configured.id,
            paths: configured
                .paths
                .iter()
                .map(|path| (path.kind, path.remote))
                .collect(),
            port: settings.peer_port,
            active: active_rx,
            nudged: Arc::clone(&nudge),
            news: Arc::clone(&news),
        };
        tokio::spawn(replicate::run_peer(
            link,
            key.clone(),
            client.clone(),
            events_tx.clone(),
            shutdown.clone(),
        ));
        nudged.insert(configured.id, nudge);
        peers.news.insert(configured.id, news);
        peers.active.insert(configured.id, active_tx);
    }
    let access = replicate::PeerAccess {
        locals: config
            .peers
            .iter()
            .flat_map(|peer| peer.paths.iter().map(|path| path.local))
            .collect(),
        peers: config
            .peers
            .iter()
            .map(|peer| (peer.id, peer.paths.iter().map(|path| path.remote).collect()))
            .collect(),
    };
    replicate::serve(
        settings.peer_port,
        access,
        key,
        asks_tx,
        nudged,
        shutdown.clone(),
    )
    .await?;

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
        near_full: BTreeSet::new(),
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
            withdraw_address(&agent.netlink, edge).await;
        }
        let _ = agent.bus.publish(
            &topics::takeover_topic(&network),
            &serde_json::Value::Null,
            true,
        );
    }
    Ok(())
}

/// The two halves of `subnet`: routes to them out of a leg are more specific than any route
/// to the whole subnet (cross-site-failover's, towards the dead owner), so they win without
/// touching it.
fn halves(subnet: Ipv4Net) -> Vec<Ipv4Net> {
    match subnet.prefix_len() {
        32 => vec![subnet],
        len => subnet
            .subnets(len + 1)
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

/// Puts a taken network's gateway address on its leg, and routes its subnet out of the leg.
async fn take_address(netlink: &rtnetlink::Handle, edge: &Edge) -> anyhow::Result<()> {
    fieldnet::net::add_address(
        netlink,
        &edge.interface,
        edge.gateway,
        edge.subnet.prefix_len(),
    )
    .await?;
    let index = fieldnet::net::link_index(netlink, &edge.interface).await?;
    for half in halves(edge.subnet) {
        fieldnet::net::replace_link_route(
            netlink,
            fieldnet::net::TABLE_MAIN,
            half,
            index,
            ROUTE_PROTOCOL,
        )
        .await?;
    }
    Ok(())
}

/// Removes a taken network's routes and gateway address from its leg (nothing if absent).
async fn withdraw_address(netlink: &rtnetlink::Handle, edge: &Edge) {
    for half in halves(edge.subnet) {
        if let Err(error) =
            fieldnet::net::delete_route(netlink, fieldnet::net::TABLE_MAIN, half, ROUTE_PROTOCOL)
                .await
        {
            tracing::warn!(%half, error = format!("{error:#}"), "removing a takeover route");
        }
    }
    if let Err(error) = fieldnet::net::remove_address(netlink, &edge.interface, edge.gateway).await
    {
        tracing::warn!(interface = %edge.interface, error = format!("{error:#}"), "removing a takeover address");
    }
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
        // Counted under borrowed names: this runs over every lease every second.
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut used: BTreeMap<&str, i64> = BTreeMap::new();
        let mut changed = Vec::new();
        for lease in self.server.visible_leases() {
            let bound = lease.is_bound(now);
            if bound {
                *counts
                    .entry((&lease.network, lease.class.as_deref().unwrap_or_default()))
                    .or_default() += 1;
            }
            if lease.blocks(now) {
                *used.entry(&lease.network).or_default() += 1;
            }
            if bound != self.published.contains(&lease.address) {
                changed.push(lease.clone());
            }
        }
        let counts: BTreeMap<(String, String), i64> = counts
            .into_iter()
            .map(|((network, class), count)| ((network.to_owned(), class.to_owned()), count))
            .collect();
        let mut used: BTreeMap<String, i64> = used
            .into_iter()
            .map(|(network, count)| (network.to_owned(), count))
            .collect();
        // Held offers are in use too: a flood of DISCOVERs shows as a full pool.
        for network in self.server.serving().clone() {
            let held = self.server.held_on(&network) as i64;
            *used.entry(network).or_default() += held;
        }
        self.warn_near_full(&used);
        for lease in changed {
            self.publish(&lease);
        }
        self.metrics.leases.reset();
        for ((network, class), count) in &counts {
            self.metrics
                .leases
                .with_label_values(&[network.as_str(), class.as_str()])
                .set(*count);
        }
        for network in self.server.serving() {
            self.metrics
                .pool
                .with_label_values(&[network.as_str(), "used"])
                .set(used.get(network).copied().unwrap_or(0));
        }
        let networks = self
            .coordinator
            .states()
            .into_iter()
            .map(|(name, state)| {
                let bound: i64 = counts
                    .iter()
                    .filter(|((network, _), _)| *network == name)
                    .map(|(_, count)| *count)
                    .sum();
                topics::DhcpNetwork {
                    owner: self.edges.get(&name).map_or(self.me, |edge| edge.owner),
                    state,
                    leases: bound as u64,
                    pool_used: used.get(&name).copied().unwrap_or(0) as u64,
                    pool_total: self
                        .server
                        .plan()
                        .network(&name)
                        .map_or(0, |plan| u64::from(plan.pool_size())),
                    name,
                }
            })
            .collect();
        let state = topics::DhcpState { networks };
        if self.state.as_ref() != Some(&state)
            && self
                .bus
                .publish(topics::TOPIC_DHCP_STATE, &state, true)
                .is_ok()
        {
            self.state = Some(state);
        }
    }
}

impl Agent {
    /// Says once, at WARN, when a served pool becomes near full (and at INFO when it is not).
    fn warn_near_full(&mut self, used: &BTreeMap<String, i64>) {
        for network in self.server.serving().clone() {
            let total = self
                .server
                .plan()
                .network(&network)
                .map_or(0, |plan| u64::from(plan.pool_size()));
            let in_use = used.get(&network).copied().unwrap_or(0).max(0) as u64;
            let near = total > 0 && in_use * 100 >= total * decide::NEAR_FULL_PERCENT;
            if near && self.near_full.insert(network.clone()) {
                tracing::warn!(%network, in_use, total, "DHCP pool near full (leases and held offers)");
            } else if !near && self.near_full.remove(&network) {
                tracing::info!(%network, in_use, total, "DHCP pool no longer near full");
            }
        }
    }
}

impl Agent {
    /// Wakes every peer's task to nudge its peer: something here changed.
    fn tell_peers(&self) {
        for news in self.peers.news.values() {
            news.notify_one();
        }
    }

    /// A peer asks for our changes since its cursor: answered from the lease table.
    fn on_ask(&mut self, ask: SyncAsk) {
        let since = if ask.params.epoch == self.coordinator.epoch() {
            ask.params.since.min(self.server.leases().cursor())
        } else {
            0
        };
        // Only what is on disk here: a record that could still be taken back never leaves.
        let changes = self.server.changed_since(since, peer::MAX_RECORDS);
        let synced = self.peers.synced.values().copied().collect();
        let reply = SyncReply {
            from: self.me,
            epoch: self.coordinator.epoch(),
            cursor: changes.cursor,
            records: changes.records,
            more: changes.more,
            status: self.coordinator.status(now_ms(), synced),
        };
        let _ = ask.answer.send(reply);
    }

    /// A peer answered (or did not): its records go to the log, then a mark saying up to where.
    fn on_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Reply { peer, reply } => {
                self.metrics
                    .syncs
                    .with_label_values(&[peer.to_string().as_str(), "ok"])
                    .inc();
                self.coordinator.reply(peer, now_ms(), reply.status);
                for lease in reply.records {
                    if self.server.learn(lease.clone()) {
                        let _ = self.commits.send(Job::Store { lease, reply: None });
                    }
                }
                let mark = Synced {
                    peer,
                    epoch: reply.epoch,
                    cursor: reply.cursor,
                };
                if self.peers.synced.get(&peer) != Some(&mark) {
                    let _ = self.commits.send(Job::Mark(mark));
                }
            }
            PeerEvent::Failed { peer, error } => {
                self.metrics
                    .syncs
                    .with_label_values(&[peer.to_string().as_str(), "failed"])
                    .inc();
                tracing::debug!(peer, %error, "no sync reply from a peer");
            }
        }
    }

    /// `peer/<id>` from cross-site-failover: the bus's verdict and the active path.
    fn on_liveness(&mut self, topic: &str, body: &serde_json::Value) {
        let Some(id) = topics::parse_peer_topic(topic) else {
            return;
        };
        let state: Option<topics::PeerState> = serde_json::from_value(body.clone()).ok();
        let verdict = state.as_ref().and_then(|s| match s.verdict {
            topics::PeerVerdict::Alive => Some(true),
            topics::PeerVerdict::Dead => Some(false),
            topics::PeerVerdict::Unknown => None,
        });
        self.coordinator.bus(id, verdict);
        if let Some(active) = self.peers.active.get(&id) {
            let path = state.and_then(|s| s.active_path);
            active.send_if_modified(|current| {
                let changed = *current != path;
                *current = path;
                changed
            });
        }
    }

    /// Re-decides who serves what, and carries it out.
    async fn coordinate(&mut self) {
        let actions = self
            .coordinator
            .tick(now_ms(), self.server.leases().cursor());
        if actions.is_empty() {
            return;
        }
        for action in actions {
            self.carry_out(action).await;
        }
        self.metrics.serving.reset();
        for (network, state) in self.coordinator.states() {
            self.metrics
                .serving
                .with_label_values(&[network.as_str(), state.as_str()])
                .set(1);
        }
        // Our status changed: the peers should hear it now, not at their next pull.
        self.tell_peers();
    }

    async fn carry_out(&mut self, action: Action) {
        let (network, word) = match &action {
            Action::Serve { network, .. } => (network.clone(), "serve"),
            Action::Pause { network } => (network.clone(), "pause"),
            Action::Withdraw { network } => (network.clone(), "withdraw"),
        };
        self.metrics
            .takeovers
            .with_label_values(&[network.as_str(), word])
            .inc();
        let Some(edge) = self.edges.get(&network) else {
            return;
        };
        match action {
            Action::Serve {
                role: Role::Own, ..
            } => {
                self.server.serve(&network, true);
                tracing::info!(%network, "serving DHCP on own network");
            }
            Action::Serve {
                role: Role::Taken, ..
            } => {
                if let Err(error) = take_address(&self.netlink, edge).await {
                    // Serving without the gateway address would hand out leases whose router
                    // is unreachable: keep trying on the next decision instead.
                    tracing::error!(%network, error = format!("{error:#}"), "cannot add the taken network's gateway address");
                    return;
                }
                self.server.serve_for_peer(&network);
                let body = topics::Takeover {
                    network: network.clone(),
                    gateway: edge.gateway,
                    owner: edge.owner,
                    since: now_ms(),
                };
                let _ = self
                    .bus
                    .publish(&topics::takeover_topic(&network), &body, true);
                tracing::warn!(%network, owner = edge.owner, gateway = %edge.gateway, "owner dead: network taken over");
            }
            Action::Pause { .. } => {
                self.server.serve(&network, false);
                tracing::info!(%network, "owner is back: stopped answering, waiting for it to store our leases");
            }
            Action::Withdraw { .. } => {
                self.server.serve(&network, false);
                withdraw_address(&self.netlink, edge).await;
                let _ = self.bus.publish(
                    &topics::takeover_topic(&network),
                    &serde_json::Value::Null,
                    true,
                );
                tracing::info!(%network, owner = edge.owner, "network handed back");
            }
        }
        // Whoever answers now tells the clients where the gateway is.
        if self.server.serving().contains(&network)
            && let Err(error) = edge.prober.ask(edge.gateway, edge.gateway)
        {
            tracing::warn!(%network, %error, "sending gratuitous ARP");
        }
    }
}
