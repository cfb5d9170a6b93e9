//! The edge: heartbeat sockets on every path, the clock, the routes, tunnel health, the bus.
//! Decisions are `session`, `choice`, `tunnel` and `hub`'s; this module sends, receives and
//! executes them.
//!
//! On an appliance the routes to each peer's networks follow that peer's best path; the hub is
//! a heartbeat partner through the tunnel (its data plane) but carries no routes. On a hub
//! (`mode = "hub"`) the peers are the appliances, reached through one tunnel each, every area's
//! networks ride the tunnel `hub::area_carrier` picks, and the partner hub is watched over its
//! own path for the AWS side (`hub_aws`).
//!
//! Invariants: routes are only ever replaced (tagged with route protocol 202), never deleted
//! and re-added; until a path is known up nothing is changed, so a restart keeps the routes the
//! kernel holds. One socket per (interface, local address); a heartbeat belongs to the path
//! whose remote address sent it and whose peer id it carries.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fieldnet::bus::BusClient;
use fieldnet::bus::topics;
use fieldnet::config::{Config, PathKind};
use ipnet::Ipv4Net;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::choice::{PathChoice, Switch};
use crate::hub::{self, HubPair};
use crate::packet::{self, HeartbeatKey, SessionState};
use crate::session::{Liveness, PathSession, PeerLiveness, Sequence};
use crate::tunnel::{self, TunnelObservation, TunnelVerdict};

/// The route protocol number of cross-site-failover's routes (`ip route` shows `proto 202`).
pub const ROUTE_PROTOCOL: u8 = 202;
/// The id every hub uses in heartbeats: appliances address "the hub", whichever it is.
pub const HUB_ID: u8 = 0;
/// The path code of the heartbeats between the two hubs of the pair.
pub const PARTNER_PATH: u8 = 3;
/// How often sessions are checked for timeouts, finer than the heartbeat interval.
const TICK: Duration = Duration::from_millis(5);
/// How often tunnel health is read.
const TUNNEL_CHECK: Duration = Duration::from_secs(1);

/// The wire code of a path kind.
pub fn path_code(kind: PathKind) -> u8 {
    match kind {
        PathKind::Cable => 0,
        PathKind::Wifi => 1,
        PathKind::Vpn => 2,
    }
}

/// What a heartbeat partner is to this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// Another appliance (on a hub: every appliance). Its networks are routed.
    Appliance,
    /// The hub, seen from an appliance through its tunnel: the tunnel's data plane.
    Hub,
    /// The other hub of the pair, seen from a hub.
    Partner,
}

/// One path to one peer, as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    pub kind: PathKind,
    /// The path byte of its heartbeats: `path_code(kind)`, or [`PARTNER_PATH`].
    pub code: u8,
    pub interface: String,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
}

impl PathPlan {
    fn label(&self) -> &'static str {
        if self.code == PARTNER_PATH {
            "partner"
        } else {
            self.kind.as_str()
        }
    }
}

/// One peer: its paths and the networks routed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    pub id: u8,
    pub name: String,
    pub role: PeerRole,
    pub paths: Vec<PathPlan>,
    pub networks: Vec<Ipv4Net>,
}

/// The id this agent puts in its heartbeats.
pub fn own_wire_id(config: &Config) -> u8 {
    if config.agents.cross_site_failover.hub.is_some() {
        HUB_ID
    } else {
        config.appliance.id
    }
}

/// The heartbeat partners as the agent needs them, derived from the config alone.
pub fn plan(config: &Config) -> Vec<PeerPlan> {
    let mut peers: Vec<PeerPlan> = config
        .peers
        .iter()
        .map(|peer| PeerPlan {
            id: peer.id,
            name: peer.name.clone(),
            role: PeerRole::Appliance,
            paths: peer
                .paths
                .iter()
                .map(|p| PathPlan {
                    kind: p.kind,
                    code: path_code(p.kind),
                    interface: p.interface.clone(),
                    local: p.local,
                    remote: p.remote,
                })
                .collect(),
            networks: config.networks_of(peer.id).map(|n| n.subnet).collect(),
        })
        .collect();
    match (&config.agents.cross_site_failover.hub, &config.hub) {
        (Some(hub_mode), _) => peers.push(PeerPlan {
            id: HUB_ID,
            name: "partner-hub".to_owned(),
            role: PeerRole::Partner,
            paths: vec![PathPlan {
                kind: PathKind::Vpn,
                code: PARTNER_PATH,
                interface: hub_mode.interface.clone(),
                local: hub_mode.local,
                remote: hub_mode.partner,
            }],
            networks: Vec::new(),
        }),
        (None, Some(hub)) => {
            // The appliance's own tunnel address is the local end of its VPN paths.
            let local = hub.interface.as_ref().and_then(|interface| {
                config
                    .peers
                    .iter()
                    .flat_map(|peer| &peer.paths)
                    .find(|path| path.kind == PathKind::Vpn && &path.interface == interface)
                    .map(|path| path.local)
            });
            if let (Some(interface), Some(local)) = (&hub.interface, local) {
                peers.push(PeerPlan {
                    id: HUB_ID,
                    name: "hub".to_owned(),
                    role: PeerRole::Hub,
                    paths: vec![PathPlan {
                        kind: PathKind::Vpn,
                        code: path_code(PathKind::Vpn),
                        interface: interface.clone(),
                        local,
                        remote: hub.tunnel_address,
                    }],
                    networks: Vec::new(),
                });
            }
        }
        (None, None) => {}
    }
    peers
}

/// The tunnels whose health is watched: on an appliance its tunnel to the hub; on a hub every
/// appliance's tunnel. (interface, the peer it leads to, for labels).
pub fn tunnels(config: &Config, peers: &[PeerPlan]) -> Vec<(String, String)> {
    if config.agents.cross_site_failover.hub.is_some() {
        let mut found: Vec<(String, String)> = Vec::new();
        for peer in peers.iter().filter(|p| p.role == PeerRole::Appliance) {
            for path in peer.paths.iter().filter(|p| p.kind == PathKind::Vpn) {
                if !found
                    .iter()
                    .any(|(interface, _)| interface == &path.interface)
                {
                    found.push((path.interface.clone(), peer.name.clone()));
                }
            }
        }
        found
    } else {
        config
            .hub
            .as_ref()
            .and_then(|hub| hub.interface.clone())
            .map(|interface| vec![(interface, "hub".to_owned())])
            .unwrap_or_default()
    }
}

struct Metrics {
    path_up: IntGaugeVec,
    rtt_us: IntGaugeVec,
    switches: IntCounterVec,
    heartbeats: IntCounterVec,
    peer_alive: IntGaugeVec,
    tunnel_interface_up: IntGaugeVec,
    tunnel_handshake_age: GaugeVec,
    tunnel_data_plane_up: IntGaugeVec,
    tunnel_healthy: IntGaugeVec,
}

impl Metrics {
    fn register(registry: &Registry) -> anyhow::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntGaugeVec> {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntCounterVec> {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let handshake_age = GaugeVec::new(
            Opts::new(
                "fieldnet_cross_site_tunnel_handshake_age_seconds",
                "Age of the tunnel's newest WireGuard handshake (-1: never, or unreadable)",
            ),
            &["tunnel", "peer"],
        )?;
        registry.register(Box::new(handshake_age.clone()))?;
        Ok(Self {
            path_up: gauge(
                "fieldnet_cross_site_path_up",
                "1 while the path's session is up",
                &["peer", "path"],
            )?,
            rtt_us: gauge(
                "fieldnet_cross_site_path_rtt_microseconds",
                "Round trip from heartbeat echoes",
                &["peer", "path"],
            )?,
            switches: counter(
                "fieldnet_cross_site_switches_total",
                "Changes of the path carrying a peer's routes",
                &["peer", "reason"],
            )?,
            heartbeats: counter(
                "fieldnet_cross_site_heartbeats_total",
                "Heartbeats by outcome",
                &["outcome"],
            )?,
            peer_alive: gauge(
                "fieldnet_cross_site_peer_alive",
                "1 while the peer answers on any path",
                &["peer"],
            )?,
            tunnel_interface_up: gauge(
                "fieldnet_cross_site_tunnel_interface_up",
                "Tunnel layer 1: the interface exists and is up",
                &["tunnel", "peer"],
            )?,
            tunnel_handshake_age: handshake_age,
            tunnel_data_plane_up: gauge(
                "fieldnet_cross_site_tunnel_data_plane_up",
                "Tunnel layer 3: a heartbeat session through the tunnel is up",
                &["tunnel", "peer"],
            )?,
            tunnel_healthy: gauge(
                "fieldnet_cross_site_tunnel_healthy",
                "1 while interface, handshake and data plane are all healthy",
                &["tunnel", "peer"],
            )?,
        })
    }
}

struct PeerState {
    plan: PeerPlan,
    sessions: Vec<PathSession>,
    /// Each path's socket, once bound (its interface and address may come later).
    sockets: Vec<Option<Arc<UdpSocket>>>,
    liveness: PeerLiveness,
    choice: PathChoice,
}

/// A heartbeat verified by a path's receiver: which peer and path, and when it arrived.
struct Arrived {
    peer: usize,
    path: usize,
    heartbeat: packet::Heartbeat,
    at: Instant,
}

/// Verified heartbeats waiting for the main loop; more are dropped and counted (a full queue
/// means the loop is behind, and the newest heartbeat of each path follows soon).
const ARRIVALS: usize = 256;
/// Each path socket's receive buffer: bursts wait in the kernel, not on the wire.
const RECEIVE_BUFFER: usize = 1 << 20;

/// One tunnel's latest health, as the hub reports it to AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelReport {
    pub interface: String,
    pub peer: String,
    pub verdict: TunnelVerdict,
    pub rtt: Option<Duration>,
    /// The WireGuard state could be read (a failed read is a failed collection).
    pub collected: bool,
}

/// What the hub's AWS task acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct HubView {
    pub partner_up: bool,
    pub owner: hub::RouteOwner,
    pub tunnels: Vec<TunnelReport>,
}

/// Options of the binary that are not in the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Log the AWS calls instead of making them.
    pub dry_run: bool,
}

pub async fn run(
    config: Config,
    registry: Registry,
    health: fieldnet::obs::Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, registry, health, shutdown, Options::default()).await
}

pub async fn run_with(
    config: Config,
    registry: Registry,
    health: fieldnet::obs::Health,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<()> {
    let settings = config.agents.cross_site_failover.clone();
    let key = HeartbeatKey::new(&config.site.key.bytes()?);
    let own_id = own_wire_id(&config);
    let metrics = Metrics::register(&registry)?;
    let bus = fieldnet::rt::announce(
        &config,
        "cross-site-failover",
        env!("CARGO_PKG_VERSION"),
        settings.common.metrics_listen,
    )?;
    let handle = fieldnet::net::connect()?;

    let started = Instant::now();
    let plans = plan(&config);
    let watched_tunnels = tunnels(&config, &plans);
    let mut peers: Vec<PeerState> = plans
        .into_iter()
        .map(|plan| PeerState {
            sessions: plan
                .paths
                .iter()
                .map(|p| {
                    PathSession::new(
                        plan.id,
                        p.code,
                        settings.heartbeat_interval,
                        settings.detect_multiplier,
                        started,
                    )
                })
                .collect(),
            sockets: vec![None; plan.paths.len()],
            liveness: PeerLiveness::new(plan.id, started),
            choice: PathChoice::new(settings.failback_hold),
            plan,
        })
        .collect();

    // Hub mode: the pair's decisions and the AWS task that carries them out.
    let mut pair = settings
        .hub
        .as_ref()
        .map(|h| HubPair::new(h.role, h.takeover_after, h.giveback_hold, started));
    let mut hub_routes: BTreeMap<u8, u8> = BTreeMap::new();
    let mut tunnel_reports: Vec<TunnelReport> = Vec::new();
    let hub_view = match (&settings.hub, &pair) {
        (Some(hub_mode), Some(pair)) => {
            let (sender, receiver) = watch::channel(HubView {
                partner_up: pair.partner_up(),
                owner: pair.owner(),
                tunnels: Vec::new(),
            });
            crate::hub_aws::spawn(
                &config,
                hub_mode.clone(),
                options.dry_run,
                receiver,
                &registry,
                shutdown.clone(),
            )
            .await?;
            Some(sender)
        }
        _ => None,
    };

    // The tunnel to the hub rides whichever uplink is active; when that changes, WireGuard's
    // cached source address must be forgotten (see `tunnel::reset_endpoints`).
    let mut uplink_changes = bus.subscribe(topics::TOPIC_UPLINK_ACTIVE);
    let mut active_uplink: Option<String> = None;
    let (arrived_tx, mut arrived) = mpsc::channel::<Arrived>(ARRIVALS);
    // Heartbeat sequences and send times start at random each run: see `session`.
    let mut sequence = Sequence::new(fastrand::u32(..));
    let clock_base = fastrand::u64(1..1 << 62);
    let clock = move |at: Instant| clock_base + at.duration_since(started).as_micros() as u64;
    let mut send = tokio::time::interval(settings.heartbeat_interval);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rebind = tokio::time::interval(Duration::from_secs(2));
    // Path states and round trips go to the bus at least this often (changes go at once).
    let mut report = tokio::time::interval(Duration::from_secs(1));
    // WireGuard is read by a task of its own (`wg` runs as a process): the heartbeat loop never
    // waits for it.
    let mut tunnel_readings = spawn_tunnel_reader(
        handle.clone(),
        watched_tunnels
            .iter()
            .map(|(interface, _)| interface.clone())
            .collect(),
        shutdown.clone(),
    );
    fieldnet::rt::ready(&health, &shutdown);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = rebind.tick() => {
                // Paths whose interface or address is missing (a VPN not up yet) bind later.
                for (peer_index, peer) in peers.iter_mut().enumerate() {
                    for (path_index, path) in peer.plan.paths.iter().enumerate() {
                        if peer.sockets[path_index].is_some() {
                            continue;
                        }
                        match bind(path, settings.heartbeat_port) {
                            Ok(socket) => {
                                let socket = Arc::new(socket);
                                spawn_receiver(Receiver {
                                    socket: Arc::clone(&socket),
                                    key: key.clone(),
                                    expect: (peer.plan.id, path.code, own_id),
                                    route: (peer_index, path_index),
                                    arrived: arrived_tx.clone(),
                                    heartbeats: metrics.heartbeats.clone(),
                                    interface: path.interface.clone(),
                                });
                                peer.sockets[path_index] = Some(socket);
                            }
                            Err(error) => tracing::debug!(interface = %path.interface, local = %path.local, remote = %path.remote, %error, "path socket not bound yet"),
                        }
                    }
                }
            }
            Some(event) = uplink_changes.recv() => {
                let fieldnet::bus::BusEvent::Message(envelope) = event else { continue };
                let Ok(active) = envelope.body_as::<topics::UplinkActive>() else { continue };
                if active_uplink.as_deref() == Some(active.name.as_str()) || pair.is_some() {
                    continue;
                }
                active_uplink = Some(active.name.clone());
                for (interface, _) in &watched_tunnels {
                    let interface = interface.clone();
                    let uplink = active.name.clone();
                    tokio::spawn(async move {
                        match tunnel::reset_endpoints(&interface).await {
                            Ok(peers) => tracing::info!(tunnel = %interface, %uplink, peers, "tunnel endpoint re-set for the new uplink"),
                            Err(error) => tracing::warn!(tunnel = %interface, error = format!("{error:#}"), "re-setting the tunnel endpoint"),
                        }
                    });
                }
            }
            _ = report.tick() => {
                for peer in &peers {
                    path_metrics(&metrics, peer);
                }
                for peer in peers.iter().filter(|p| p.plan.role == PeerRole::Appliance) {
                    publish_peer(&bus, peer);
                }
            }
            Some(readings) = tunnel_readings.recv() => {
                tunnel_reports = judge_tunnels(&metrics, &watched_tunnels, &peers, &readings, &tunnel_reports);
            }
            _ = send.tick() => {
                let now = Instant::now();
                let now_us = clock(now);
                let seq = sequence.advance();
                for peer in &peers {
                    for path_index in 0..peer.plan.paths.len() {
                        let Some(socket) = &peer.sockets[path_index] else { continue };
                        let heartbeat = peer.sessions[path_index].heartbeat(own_id, seq, now, now_us);
                        let datagram = packet::encode(&heartbeat, &key);
                        // Connected: a refusal (the peer's agent not running) is the session's
                        // silence to judge, not an error here.
                        if socket.try_send(&datagram).is_ok() {
                            metrics.heartbeats.with_label_values(&["sent"]).inc();
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let mut changed = false;
                for peer in &mut peers {
                    for index in 0..peer.sessions.len() {
                        if let Some(transition) = peer.sessions[index].tick(now) {
                            log_transition(&peer.plan, index, transition.from, transition.to, "timeout");
                            path_metrics(&metrics, peer);
                            changed = true;
                        }
                    }
                    changed |= settle(&handle, &bus, &metrics, peer, now, pair.is_none()).await;
                }
                if let Some(pair) = &mut pair {
                    hub_step(&handle, &metrics, &peers, pair, &mut hub_routes, now, changed).await;
                    if let Some(view) = &hub_view {
                        publish_view(view, pair, &tunnel_reports);
                    }
                }
            }
            Some(Arrived { peer: peer_index, path: path_index, heartbeat, at }) = arrived.recv() => {
                let now = at;
                let now_us = clock(at);
                let peer = &mut peers[peer_index];
                let mut changed = false;
                if let Some(transition) = peer.sessions[path_index].receive(now, now_us, &heartbeat) {
                    log_transition(&peer.plan, path_index, transition.from, transition.to, "heartbeat");
                    path_metrics(&metrics, peer);
                    changed = true;
                }
                changed |= settle(&handle, &bus, &metrics, peer, now, pair.is_none()).await;
                if let Some(pair) = &mut pair {
                    hub_step(&handle, &metrics, &peers, pair, &mut hub_routes, now, changed).await;
                }
            }
        }
    }
    Ok(())
}

fn log_transition(plan: &PeerPlan, path: usize, from: SessionState, to: SessionState, cause: &str) {
    tracing::info!(
        peer = plan.id,
        path = %plan.paths[path].interface,
        kind = %plan.paths[path].label(),
        from = %from.as_str(),
        to = %to.as_str(),
        %cause,
        "path session changed"
    );
}

/// After any session change: liveness, metrics and, on an appliance, the path choice and
/// routes. Returns whether anything changed.
async fn settle(
    handle: &rtnetlink::Handle,
    bus: &BusClient,
    metrics: &Metrics,
    peer: &mut PeerState,
    now: Instant,
    route_by_choice: bool,
) -> bool {
    let liveness_changed = peer.liveness.update(now, &peer.sessions);
    let mut switch = None;
    if route_by_choice && peer.plan.role == PeerRole::Appliance {
        let up: Vec<PathKind> = peer
            .plan
            .paths
            .iter()
            .zip(&peer.sessions)
            .filter(|(_, s)| s.state() == SessionState::Up)
            .map(|(p, _)| p.kind)
            .collect();
        switch = peer.choice.step(now, &up);
        if let Some(switch) = switch {
            apply_switch(handle, metrics, &peer.plan, switch).await;
        }
    }
    if let Some(verdict) = liveness_changed {
        tracing::info!(
            peer = peer.plan.id,
            alive = verdict == Liveness::Alive,
            role = ?peer.plan.role,
            "peer liveness changed"
        );
        metrics
            .peer_alive
            .with_label_values(&[peer_label(&peer.plan).as_str()])
            .set(i64::from(verdict == Liveness::Alive));
    }
    let changed = switch.is_some() || liveness_changed.is_some();
    if changed {
        path_metrics(metrics, peer);
    }
    if changed && peer.plan.role == PeerRole::Appliance {
        publish_peer(bus, peer);
    }
    changed
}

/// Path state and round trip of every path of `peer` (on changes and once a second; the
/// heartbeat loop does not pay for them on every tick).
fn path_metrics(metrics: &Metrics, peer: &PeerState) {
    let peer_label = peer_label(&peer.plan);
    for (path, session) in peer.plan.paths.iter().zip(&peer.sessions) {
        let labels = [peer_label.as_str(), path.label()];
        metrics
            .path_up
            .with_label_values(&labels)
            .set(i64::from(session.state() == SessionState::Up));
        if let Some(rtt) = session.rtt() {
            metrics
                .rtt_us
                .with_label_values(&labels)
                .set(rtt.as_micros() as i64);
        }
    }
}

fn peer_label(plan: &PeerPlan) -> String {
    match plan.role {
        PeerRole::Appliance => plan.id.to_string(),
        PeerRole::Hub => "hub".to_owned(),
        PeerRole::Partner => "partner".to_owned(),
    }
}

async fn apply_switch(
    handle: &rtnetlink::Handle,
    metrics: &Metrics,
    plan: &PeerPlan,
    switch: Switch,
) {
    let Some(path) = plan.paths.iter().find(|p| p.kind == switch.to) else {
        return;
    };
    let started = Instant::now();
    route_networks(handle, plan.id, &plan.networks, path).await;
    let reason = format!("{:?}", switch.reason).to_lowercase();
    metrics
        .switches
        .with_label_values(&[plan.id.to_string().as_str(), reason.as_str()])
        .inc();
    tracing::info!(
        peer = plan.id,
        from = %switch.from.map_or("-", PathKind::as_str),
        to = %switch.to.as_str(),
        reason = %reason,
        took_us = started.elapsed().as_micros() as u64,
        "routes to peer moved"
    );
}

/// Replaces the routes to `networks` with ones via `path`'s remote end.
async fn route_networks(
    handle: &rtnetlink::Handle,
    peer: u8,
    networks: &[Ipv4Net],
    path: &PathPlan,
) -> bool {
    let interface = match fieldnet::net::find_link(handle, &path.interface).await {
        Ok(Some(link)) => link.header.index,
        Ok(None) | Err(_) => {
            tracing::error!(peer, path = %path.interface, "cannot route over a path whose interface is gone");
            return false;
        }
    };
    let hop = fieldnet::net::NextHop {
        gateway: path.remote,
        interface,
    };
    let mut all = true;
    for network in networks {
        let replaced = fieldnet::net::replace_route(
            handle,
            fieldnet::net::TABLE_MAIN,
            *network,
            hop,
            ROUTE_PROTOCOL,
        )
        .await;
        if let Err(error) = replaced {
            all = false;
            tracing::error!(peer, %network, error = format!("{error:#}"), "replacing the route to a peer's network");
        }
    }
    all
}

/// Hub mode, after any change: the partner's liveness into the pair, and every area's networks
/// onto the tunnel `hub::area_carrier` picks.
async fn hub_step(
    handle: &rtnetlink::Handle,
    metrics: &Metrics,
    peers: &[PeerState],
    pair: &mut HubPair,
    routes: &mut BTreeMap<u8, u8>,
    now: Instant,
    changed: bool,
) {
    if let Some(partner) = peers.iter().find(|p| p.plan.role == PeerRole::Partner) {
        pair.observe(now, partner.liveness.verdict() == Liveness::Alive);
    }
    if let Some(partner_up) = pair.tick(now) {
        tracing::info!(
            partner_up,
            owner = %pair.owner().as_str(),
            "hub partner changed"
        );
    }
    if !changed {
        return;
    }
    let appliances: Vec<&PeerState> = peers
        .iter()
        .filter(|p| p.plan.role == PeerRole::Appliance)
        .collect();
    let up: Vec<u8> = appliances
        .iter()
        .filter(|p| p.sessions.iter().any(|s| s.state() == SessionState::Up))
        .map(|p| p.plan.id)
        .collect();
    for owner in &appliances {
        let Some(carrier) = hub::area_carrier(owner.plan.id, &up) else {
            continue;
        };
        if routes.get(&owner.plan.id) == Some(&carrier) {
            continue;
        }
        let Some(path) = appliances
            .iter()
            .find(|p| p.plan.id == carrier)
            .and_then(|p| p.plan.paths.iter().find(|path| path.kind == PathKind::Vpn))
        else {
            continue;
        };
        if route_networks(handle, owner.plan.id, &owner.plan.networks, path).await {
            let from = routes.insert(owner.plan.id, carrier);
            metrics
                .switches
                .with_label_values(&[owner.plan.id.to_string().as_str(), "hub"])
                .inc();
            tracing::info!(
                area_of = owner.plan.id,
                from = %from.map_or("-".to_owned(), |id| id.to_string()),
                via = carrier,
                tunnel = %path.interface,
                "hub routes moved"
            );
        }
    }
}

fn publish_view(view: &watch::Sender<HubView>, pair: &HubPair, tunnels: &[TunnelReport]) {
    let next = HubView {
        partner_up: pair.partner_up(),
        owner: pair.owner(),
        tunnels: tunnels.to_vec(),
    };
    view.send_if_modified(|current| {
        if *current == next {
            false
        } else {
            *current = next;
            true
        }
    });
}

/// What was read of one tunnel's interface and WireGuard state.
#[derive(Debug, Clone)]
struct TunnelReading {
    interface: String,
    interface_up: bool,
    handshake_age: Option<Duration>,
    /// The WireGuard state could be read.
    collected: bool,
}

/// Reads every tunnel's interface and WireGuard state every [`TUNNEL_CHECK`], in a task of its
/// own, and sends the readings.
fn spawn_tunnel_reader(
    handle: rtnetlink::Handle,
    interfaces: Vec<String>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Vec<TunnelReading>> {
    let (sender, receiver) = mpsc::channel(1);
    if interfaces.is_empty() {
        return receiver;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TUNNEL_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let mut readings = Vec::new();
            for interface in &interfaces {
                readings.push(read_tunnel(&handle, interface).await);
            }
            if sender.send(readings).await.is_err() {
                return;
            }
        }
    });
    receiver
}

async fn read_tunnel(handle: &rtnetlink::Handle, interface: &str) -> TunnelReading {
    let interface_up = match fieldnet::net::find_link(handle, interface).await {
        Ok(Some(link)) => link
            .header
            .flags
            .contains(rtnetlink::packet_route::link::LinkFlags::Up),
        _ => false,
    };
    let wireguard = if interface_up {
        tunnel::read_wireguard(interface).await
    } else {
        Err(anyhow::anyhow!("interface {interface} is down or missing"))
    };
    if let Err(error) = &wireguard {
        tracing::debug!(tunnel = %interface, error = format!("{error:#}"), "reading WireGuard state");
    }
    TunnelReading {
        interface: interface.to_owned(),
        interface_up,
        collected: wireguard.is_ok(),
        handshake_age: wireguard
            .ok()
            .and_then(|peers| tunnel::newest_handshake_age(&peers, SystemTime::now())),
    }
}

/// Judges every watched tunnel from its reading and the heartbeat sessions through it, updates
/// the metrics, logs verdict changes.
fn judge_tunnels(
    metrics: &Metrics,
    watched: &[(String, String)],
    peers: &[PeerState],
    readings: &[TunnelReading],
    previous: &[TunnelReport],
) -> Vec<TunnelReport> {
    let mut reports = Vec::new();
    for (interface, peer_name) in watched {
        let Some(reading) = readings.iter().find(|r| &r.interface == interface) else {
            continue;
        };
        let through: Vec<&PathSession> = peers
            .iter()
            .flat_map(|peer| peer.plan.paths.iter().zip(&peer.sessions))
            .filter(|(path, _)| &path.interface == interface)
            .map(|(_, session)| session)
            .collect();
        let data_plane_up = through.iter().any(|s| s.state() == SessionState::Up);
        let rtt = through
            .iter()
            .filter(|s| s.state() == SessionState::Up)
            .filter_map(|s| s.rtt())
            .min();
        let observation = TunnelObservation {
            interface_up: reading.interface_up,
            handshake_age: reading.handshake_age,
            data_plane_up,
        };
        let verdict = tunnel::verdict(&observation);
        let labels = [interface.as_str(), peer_name.as_str()];
        metrics
            .tunnel_interface_up
            .with_label_values(&labels)
            .set(i64::from(reading.interface_up));
        metrics
            .tunnel_handshake_age
            .with_label_values(&labels)
            .set(reading.handshake_age.map_or(-1.0, |age| age.as_secs_f64()));
        metrics
            .tunnel_data_plane_up
            .with_label_values(&labels)
            .set(i64::from(data_plane_up));
        metrics
            .tunnel_healthy
            .with_label_values(&labels)
            .set(i64::from(verdict == TunnelVerdict::Healthy));
        let before = previous.iter().find(|r| &r.interface == interface);
        if before.map(|r| r.verdict) != Some(verdict) {
            tracing::info!(
                tunnel = %interface,
                peer = %peer_name,
                verdict = %verdict.as_str(),
                handshake_age_s = reading.handshake_age.map(|a| a.as_secs()),
                "tunnel health changed"
            );
        }
        reports.push(TunnelReport {
            interface: interface.clone(),
            peer: peer_name.clone(),
            verdict,
            rtt,
            collected: reading.collected,
        });
    }
    reports
}

fn publish_peer(bus: &BusClient, peer: &PeerState) {
    let paths = peer
        .plan
        .paths
        .iter()
        .zip(&peer.sessions)
        .map(|(path, session)| topics::PeerPathState {
            kind: path.kind.as_str().to_owned(),
            interface: path.interface.clone(),
            state: session.state().as_str().to_owned(),
            rtt_ms: session.rtt().map(|r| r.as_secs_f64() * 1000.0),
        })
        .collect();
    let body = topics::PeerState {
        alive: peer.liveness.verdict() == Liveness::Alive,
        verdict: format!("{:?}", peer.liveness.verdict()).to_lowercase(),
        active_path: peer.choice.active().map(|kind| kind.as_str().to_owned()),
        paths,
        since: fieldnet::bus::unix_millis()
            .saturating_sub(peer.liveness.since().elapsed().as_millis() as u64),
    };
    let _ = bus.publish(&topics::peer_topic(peer.plan.id), &body, true);
}

/// A UDP socket on the path's own address and interface, connected to the peer's end: the
/// kernel drops what comes from anywhere else. The device is bound before the address, and
/// the address is shared (`SO_REUSEADDR`): several interfaces may carry one address (a hub's
/// tunnels all carry its tunnel address), and several peers may be reached from one.
fn bind(path: &PathPlan, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(path.interface.as_bytes()))?;
    // What the kernel grants (up to net.core.rmem_max) is enough: this only makes it larger.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(path.local, port)).into())?;
    socket.connect(&SocketAddr::V4(SocketAddrV4::new(path.remote, port)).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// What a path's receiver needs.
struct Receiver {
    socket: Arc<UdpSocket>,
    key: HeartbeatKey,
    /// The peer's id, the path's code and this agent's id, as a heartbeat must say them.
    expect: (u8, u8, u8),
    /// (peer, path) indexes, for the main loop.
    route: (usize, usize),
    arrived: mpsc::Sender<Arrived>,
    heartbeats: IntCounterVec,
    interface: String,
}

/// Receives one path's heartbeats in a task of its own: verifies each (a flood of forged ones
/// costs this task, not the loop that judges the paths) and passes the good ones on. It ends
/// only when the agent does; a receive error is counted, said at most every 10 s, and waited
/// out.
fn spawn_receiver(receiver: Receiver) {
    tokio::spawn(async move {
        let Receiver {
            socket,
            key,
            expect,
            route,
            arrived,
            heartbeats,
            interface,
        } = receiver;
        let mut buffer = [0u8; 256];
        let mut last_warning: Option<Instant> = None;
        loop {
            let n = match socket.recv(&mut buffer).await {
                Ok(n) => n,
                // An ICMP refusal of an earlier send (the peer's agent not running): nothing
                // to read, nothing wrong here.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(error) => {
                    heartbeats.with_label_values(&["receive_error"]).inc();
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(%interface, %error, "receiving heartbeats failed; trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let at = Instant::now();
            let heartbeat = match packet::decode(&buffer[..n], &key) {
                Ok(heartbeat) => heartbeat,
                Err(error) => {
                    heartbeats.with_label_values(&["rejected"]).inc();
                    tracing::debug!(%interface, %error, "heartbeat rejected");
                    continue;
                }
            };
            if (heartbeat.from, heartbeat.path, heartbeat.to) != expect {
                heartbeats.with_label_values(&["misaddressed"]).inc();
                continue;
            }
            let (peer, path) = route;
            match arrived.try_send(Arrived {
                peer,
                path,
                heartbeat,
                at,
            }) {
                Ok(()) => heartbeats.with_label_values(&["accepted"]).inc(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    heartbeats.with_label_values(&["dropped"]).inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
}
