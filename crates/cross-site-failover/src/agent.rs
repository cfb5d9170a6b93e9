//! The appliance edge: heartbeat sockets on every path, the clock, and the routes to the other
//! areas. Decisions are `session` and `choice`'s; this module sends, receives and executes.
//!
//! Invariants: the routes to a peer's networks are only ever replaced (tagged with route
//! protocol 202), never deleted and re-added; until a path is known up nothing is changed, so a
//! restart keeps the routes the kernel holds.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use fieldnet::bus::BusClient;
use fieldnet::bus::topics;
use fieldnet::config::{Config, PathKind};
use ipnet::Ipv4Net;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::choice::{PathChoice, Switch};
use crate::packet::{self, HeartbeatKey, SessionState};
use crate::session::{Liveness, PathSession, PeerLiveness};

/// The route protocol number of cross-site-failover's routes (`ip route` shows `proto 202`).
pub const ROUTE_PROTOCOL: u8 = 202;
/// How often sessions are checked for timeouts, finer than the heartbeat interval.
const TICK: Duration = Duration::from_millis(5);

/// The wire code of a path kind.
pub fn path_code(kind: PathKind) -> u8 {
    match kind {
        PathKind::Cable => 0,
        PathKind::Wifi => 1,
        PathKind::Vpn => 2,
    }
}

/// One path to one peer, as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    pub kind: PathKind,
    pub interface: String,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
}

/// One peer: its paths and the networks routed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    pub id: u8,
    pub name: String,
    pub paths: Vec<PathPlan>,
    pub networks: Vec<Ipv4Net>,
}

/// The peers as the agent needs them, derived from the config alone.
pub fn plan(config: &Config) -> Vec<PeerPlan> {
    config
        .peers
        .iter()
        .map(|peer| PeerPlan {
            id: peer.id,
            name: peer.name.clone(),
            paths: peer
                .paths
                .iter()
                .map(|p| PathPlan {
                    kind: p.kind,
                    interface: p.interface.clone(),
                    local: p.local,
                    remote: p.remote,
                })
                .collect(),
            networks: config.networks_of(peer.id).map(|n| n.subnet).collect(),
        })
        .collect()
}

struct Metrics {
    path_up: IntGaugeVec,
    rtt_us: IntGaugeVec,
    switches: IntCounterVec,
    heartbeats: IntCounterVec,
    peer_alive: IntGaugeVec,
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
        })
    }
}

struct PeerState {
    plan: PeerPlan,
    sessions: Vec<PathSession>,
    sockets: Vec<Option<std::sync::Arc<UdpSocket>>>,
    liveness: PeerLiveness,
    choice: PathChoice,
}

/// A received datagram: which peer/path socket it came in on, and its bytes.
struct Received {
    peer: usize,
    path: usize,
    bytes: Vec<u8>,
}

pub async fn run(
    config: Config,
    registry: Registry,
    health: fieldnet::obs::Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.agents.cross_site_failover.clone();
    let key = HeartbeatKey::new(&config.site.key.bytes()?);
    let own_id = config.appliance.id;
    let metrics = Metrics::register(&registry)?;
    let bus = fieldnet::rt::announce(
        &config,
        "cross-site-failover",
        env!("CARGO_PKG_VERSION"),
        settings.common.metrics_listen,
    )?;
    let handle = fieldnet::net::connect()?;

    let started = Instant::now();
    let (received_tx, mut received) = mpsc::unbounded_channel::<Received>();
    let mut peers: Vec<PeerState> = plan(&config)
        .into_iter()
        .map(|plan| PeerState {
            sessions: plan
                .paths
                .iter()
                .map(|p| {
                    PathSession::new(
                        plan.id,
                        path_code(p.kind),
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
    let mut send = tokio::time::interval(settings.heartbeat_interval);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rebind = tokio::time::interval(Duration::from_secs(2));
    // Path states and round trips go to the bus at least this often (changes go at once).
    let mut report = tokio::time::interval(Duration::from_secs(1));
    fieldnet::rt::ready(&health, &shutdown);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = rebind.tick() => {
                // Paths whose interface or address is missing (a VPN not up yet) bind later.
                for (peer_index, peer) in peers.iter_mut().enumerate() {
                    for (path_index, path) in peer.plan.paths.iter().enumerate() {
                        if peer.sockets[path_index].is_none() {
                            match bind(path, settings.heartbeat_port) {
                                Ok(socket) => {
                                    let socket = std::sync::Arc::new(socket);
                                    spawn_receiver(socket.clone(), peer_index, path_index, received_tx.clone());
                                    peer.sockets[path_index] = Some(socket);
                                }
                                Err(error) => tracing::debug!(peer = peer.plan.id, path = %path.interface, %error, "path socket not bound yet"),
                            }
                        }
                    }
                }
            }
            _ = report.tick() => {
                for peer in &peers {
                    publish_peer(&bus, peer);
                }
            }
            _ = send.tick() => {
                let now = Instant::now();
                let now_us = now.duration_since(started).as_micros() as u64 + 1;
                // The sequence follows the wall clock, so it keeps growing across restarts.
                let seq = fieldnet::bus::unix_millis() * 1000 + u64::from(now.duration_since(started).subsec_micros() % 1000);
                for peer in &peers {
                    for (path_index, path) in peer.plan.paths.iter().enumerate() {
                        let Some(socket) = &peer.sockets[path_index] else { continue };
                        let heartbeat = peer.sessions[path_index].heartbeat(own_id, seq, now, now_us);
                        let datagram = packet::encode(&heartbeat, &key);
                        let target = SocketAddr::V4(SocketAddrV4::new(path.remote, settings.heartbeat_port));
                        if socket.try_send_to(&datagram, target).is_ok() {
                            metrics.heartbeats.with_label_values(&["sent"]).inc();
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for peer in &mut peers {
                    for index in 0..peer.sessions.len() {
                        if let Some(transition) = peer.sessions[index].tick(now) {
                            log_transition(&peer.plan, index, transition.from, transition.to, "timeout");
                            publish_peer(&bus, peer);
                        }
                    }
                    settle(&handle, &bus, &metrics, peer, now).await;
                }
            }
            Some(datagram) = received.recv() => {
                let now = Instant::now();
                let now_us = now.duration_since(started).as_micros() as u64 + 1;
                let peer = &mut peers[datagram.peer];
                match packet::decode(&datagram.bytes, &key) {
                    Ok(heartbeat) if heartbeat.from == peer.plan.id && heartbeat.to == own_id
                        && heartbeat.path == path_code(peer.plan.paths[datagram.path].kind) => {
                        metrics.heartbeats.with_label_values(&["accepted"]).inc();
                        if let Some(transition) = peer.sessions[datagram.path].receive(now, now_us, &heartbeat) {
                            log_transition(&peer.plan, datagram.path, transition.from, transition.to, "heartbeat");
                            publish_peer(&bus, peer);
                        }
                        settle(&handle, &bus, &metrics, peer, now).await;
                    }
                    Ok(_) => metrics.heartbeats.with_label_values(&["misaddressed"]).inc(),
                    Err(error) => {
                        metrics.heartbeats.with_label_values(&["rejected"]).inc();
                        tracing::debug!(%error, "heartbeat rejected");
                    }
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
        kind = %plan.paths[path].kind.as_str(),
        from = %from.as_str(),
        to = %to.as_str(),
        %cause,
        "path session changed"
    );
}

/// After any session change: liveness, path choice, routes, bus, metrics.
async fn settle(
    handle: &rtnetlink::Handle,
    bus: &BusClient,
    metrics: &Metrics,
    peer: &mut PeerState,
    now: Instant,
) {
    let peer_label = peer.plan.id.to_string();
    for (index, path) in peer.plan.paths.iter().enumerate() {
        let session = &peer.sessions[index];
        let labels = [peer_label.as_str(), path.kind.as_str()];
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
    let up: Vec<PathKind> = peer
        .plan
        .paths
        .iter()
        .zip(&peer.sessions)
        .filter(|(_, s)| s.state() == SessionState::Up)
        .map(|(p, _)| p.kind)
        .collect();
    let liveness_changed = peer.liveness.update(now, &peer.sessions);
    let switch = peer.choice.step(now, &up);
    if let Some(switch) = switch {
        apply_switch(handle, metrics, &peer.plan, switch).await;
    }
    if let Some(verdict) = liveness_changed {
        tracing::info!(
            peer = peer.plan.id,
            alive = verdict == Liveness::Alive,
            "peer liveness changed"
        );
        metrics
            .peer_alive
            .with_label_values(&[peer_label.as_str()])
            .set(i64::from(verdict == Liveness::Alive));
    }
    if switch.is_some() || liveness_changed.is_some() {
        publish_peer(bus, peer);
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
    let interface = match fieldnet::net::find_link(handle, &path.interface).await {
        Ok(Some(link)) => link.header.index,
        Ok(None) | Err(_) => {
            tracing::error!(peer = plan.id, path = %path.interface, "cannot route over a path whose interface is gone");
            return;
        }
    };
    let hop = fieldnet::net::NextHop {
        gateway: path.remote,
        interface,
    };
    for network in &plan.networks {
        let replaced = fieldnet::net::replace_route(
            handle,
            fieldnet::net::TABLE_MAIN,
            *network,
            hop,
            ROUTE_PROTOCOL,
        )
        .await;
        if let Err(error) = replaced {
            tracing::error!(peer = plan.id, %network, error = format!("{error:#}"), "replacing the route to a peer's network");
        }
    }
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

/// A UDP socket on the path's own address and interface.
fn bind(path: &PathPlan, port: u16) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddrV4::new(path.local, port))?;
    socket.set_nonblocking(true)?;
    let device = path.interface.as_bytes();
    // SAFETY: `device` is valid for its length for the duration of the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    UdpSocket::from_std(socket)
}

fn spawn_receiver(
    socket: std::sync::Arc<UdpSocket>,
    peer: usize,
    path: usize,
    received: mpsc::UnboundedSender<Received>,
) {
    tokio::spawn(async move {
        let mut buffer = [0u8; 256];
        loop {
            let Ok((n, _)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            if received
                .send(Received {
                    peer,
                    path,
                    bytes: buffer[..n].to_vec(),
                })
                .is_err()
            {
                return;
            }
        }
    });
}
