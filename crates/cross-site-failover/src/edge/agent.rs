//! The edge: heartbeat sockets on every path, the clock, the routes, tunnel health, the bus.
//! Every decision is the machine's (`failover`): each `select!` arm turns one fact into an
//! input, and `Edge::execute` carries out what the step returns.
//!
//! On an appliance the routes to each peer's networks follow that peer's best path; the hub is
//! a heartbeat partner through the tunnel (its data plane) but carries no routes. On a hub
//! (`mode = "hub"`) the peers are the appliances, reached through one tunnel each, every area's
//! networks ride the tunnel `hub::area_carrier` picks, and the partner hub is watched over its
//! own path for the AWS side (`hub_aws`).
//!
//! Invariants: routes are only ever replaced (tagged with route protocol 202), never deleted
//! and re-added; until a path is known up nothing is changed, so a restart keeps the routes the
//! kernel holds. One socket per path, connected to the path's remote end; a heartbeat belongs
//! to the path whose socket received it and must carry that path's ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldnet::bus::{BusClient, BusEvent, topics};
use fieldnet::config::PathKind;
use fieldnet::rt::AgentContext;
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::heartbeats::{self, ARRIVALS, Arrived};
use super::metrics::Metrics;
use super::report;
use super::tunnels;
use crate::choice::Switch;
use crate::failover::{Failover, Input, Output, Peer, Seed};
use crate::hub::HubView;
use crate::packet::{self, HeartbeatKey};
use crate::plan::{PathPlan, PeerRole, Plan};
use crate::session::{Liveness, TransitionReason};

/// The route protocol number of cross-site-failover's routes (`ip route` shows `proto 202`).
pub const ROUTE_PROTOCOL: u8 = 202;
/// How often sessions are checked for timeouts, finer than the heartbeat interval.
const TICK: Duration = Duration::from_millis(5);

/// Options of the binary that are not in the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Log the AWS calls instead of making them.
    pub dry_run: bool,
}

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    run_with(context, Options::default()).await
}

pub async fn run_with(context: AgentContext, options: Options) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.cross_site_failover.clone();
    let metrics = Metrics::register(&registry)?;
    let handle = fieldnet::net::connect()?;
    // Heartbeat sequences and send times start at random each run: see `session`.
    let seed = Seed {
        epoch: fastrand::u32(..),
        clock_base: fastrand::u64(1..1 << 62),
    };
    let mut failover = Failover::new(Plan::from_config(&config), Instant::now(), seed);

    // Hub mode: the AWS task carries out the pair's decisions.
    let hub_view = match (&settings.hub, failover.hub_view()) {
        (Some(hub_mode), Some(view)) => {
            let (sender, receiver) = watch::channel(view.clone());
            super::hub_aws::spawn(
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
    let (arrived_tx, mut arrived) = mpsc::channel::<Arrived>(ARRIVALS);
    let mut edge = Edge {
        key: HeartbeatKey::new(&config.site.key.bytes()?),
        port: settings.heartbeat_port,
        sockets: failover
            .peers()
            .iter()
            .map(|peer| vec![None; peer.plan().paths.len()])
            .collect(),
        arrived: arrived_tx,
        handle: handle.clone(),
        bus,
        metrics,
        hub_routes: failover.hub_view().map(|view| topics::HubRoutes {
            owner: view.owner,
            partner_up: view.partner_up,
            areas: Vec::new(),
        }),
        hub_view,
    };
    // Hub mode: the pair as it starts, before anything changes.
    edge.publish_hub_routes(|_| {});

    // The tunnel to the hub rides whichever uplink is active; when that changes, WireGuard's
    // cached source address must be forgotten (see `tunnel::reset_endpoints`).
    let mut uplink_changes = edge.bus.subscribe(topics::TOPIC_UPLINK_ACTIVE);
    let mut send = tokio::time::interval(settings.heartbeat_interval);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rebind = tokio::time::interval(Duration::from_secs(2));
    // Path states and round trips go to the bus at least this often (changes go at once).
    let mut report = tokio::time::interval(Duration::from_secs(1));
    // WireGuard is read by a task of its own (`wg` runs as a process): the heartbeat loop never
    // waits for it.
    let mut tunnel_readings = tunnels::spawn_tunnel_reader(
        handle,
        failover
            .tunnels()
            .iter()
            .map(|t| t.interface.clone())
            .collect(),
        shutdown.clone(),
    );
    fieldnet::rt::ready(&health, &shutdown);
    loop {
        let (now, input) = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = rebind.tick() => {
                edge.bind_missing(&failover);
                continue;
            }
            Some(event) = uplink_changes.recv() => match active_uplink(event) {
                Some(uplink) => (Instant::now(), Input::ActiveUplink(uplink)),
                None => continue,
            },
            _ = report.tick() => (Instant::now(), Input::Report),
            Some(readings) = tunnel_readings.recv() => (Instant::now(), Input::TunnelReadings(readings)),
            _ = send.tick() => (Instant::now(), Input::SendHeartbeats),
            _ = tick.tick() => (Instant::now(), Input::Tick),
            Some(Arrived { peer, path, heartbeat, at }) = arrived.recv() => {
                (at, Input::Heartbeat { peer, path, heartbeat })
            }
        };
        let outputs = failover.step(now, input);
        edge.execute(&mut failover, now, outputs).await;
    }
    Ok(())
}

/// The name of the active uplink, from a message on [`topics::TOPIC_UPLINK_ACTIVE`].
fn active_uplink(event: BusEvent) -> Option<String> {
    let BusEvent::Message(envelope) = event else {
        return None;
    };
    envelope
        .body_as::<topics::UplinkActive>()
        .ok()
        .map(|active| active.name)
}

/// What carries out the machine's outputs.
struct Edge {
    handle: rtnetlink::Handle,
    bus: BusClient,
    metrics: Metrics,
    key: HeartbeatKey,
    port: u16,
    /// Each path's socket, once bound (its interface and address may come later), by peer and
    /// path as in the plan.
    sockets: Vec<Vec<Option<Arc<UdpSocket>>>>,
    arrived: mpsc::Sender<Arrived>,
    /// Hub mode: what the AWS task acts on.
    hub_view: Option<watch::Sender<HubView>>,
    /// Hub mode: what `hub/routes` says (the pair, and the tunnel carrying each area).
    hub_routes: Option<topics::HubRoutes>,
}

impl Edge {
    /// Binds the paths whose interface or address was missing (a VPN not up yet), each with a
    /// receiver task.
    fn bind_missing(&mut self, failover: &Failover) {
        for (peer_index, peer) in failover.peers().iter().enumerate() {
            let plan = peer.plan();
            for (path_index, path) in plan.paths.iter().enumerate() {
                if self.sockets[peer_index][path_index].is_some() {
                    continue;
                }
                match heartbeats::bind(path, self.port) {
                    Ok(socket) => {
                        let socket = Arc::new(socket);
                        heartbeats::spawn_receiver(heartbeats::Receiver {
                            socket: Arc::clone(&socket),
                            key: self.key.clone(),
                            expect: (plan.id, path.code, failover.own_id()),
                            route: (peer_index, path_index),
                            arrived: self.arrived.clone(),
                            heartbeats: self.metrics.heartbeats.clone(),
                            interface: path.interface.clone(),
                        });
                        self.sockets[peer_index][path_index] = Some(socket);
                    }
                    Err(error) => {
                        tracing::debug!(interface = %path.interface, local = %path.local, remote = %path.remote, %error, "path socket not bound yet");
                    }
                }
            }
        }
    }

    /// Carries out a step's outputs; a failed hub route write goes back to the machine, and
    /// what it answers is carried out too.
    async fn execute(&mut self, failover: &mut Failover, now: Instant, outputs: Vec<Output>) {
        let mut pending = outputs;
        while !pending.is_empty() {
            let mut follow_up = Vec::new();
            for output in pending {
                if let Some(failed) = self.carry_out(failover, output).await {
                    follow_up.extend(failover.step(now, failed));
                }
            }
            pending = follow_up;
        }
    }

    /// One output; returns the input that reports its failure, if it failed.
    async fn carry_out(&mut self, failover: &Failover, output: Output) -> Option<Input> {
        let peers = failover.peers();
        match output {
            Output::Send {
                peer,
                path,
                heartbeat,
            } => {
                let socket = self.sockets[peer][path].as_ref()?;
                // Connected: a refusal (the peer's agent not running) is the session's silence
                // to judge, not an error here.
                if socket
                    .try_send(&packet::encode(&heartbeat, &self.key))
                    .is_ok()
                {
                    self.metrics.heartbeats.with_label_values(&["sent"]).inc();
                }
            }
            Output::PathChanged {
                peer,
                path,
                transition,
            } => {
                let plan = peers[peer].plan();
                let cause = match transition.reason {
                    TransitionReason::Timeout => "timeout",
                    TransitionReason::Handshake | TransitionReason::PeerSaysDown => "heartbeat",
                };
                tracing::info!(
                    peer = plan.id,
                    path = %plan.paths[path].interface,
                    kind = %plan.paths[path].label(),
                    from = %transition.from.as_str(),
                    to = %transition.to.as_str(),
                    %cause,
                    "path session changed"
                );
                // Every path change reaches the bus at once (other changes go at the next
                // report, within a second).
                report::path_metrics(&self.metrics, &peers[peer]);
                if plan.role == PeerRole::Appliance {
                    report::publish_peer(&self.bus, &peers[peer]);
                }
            }
            Output::Liveness { peer, verdict } => {
                let plan = peers[peer].plan();
                tracing::info!(
                    peer = plan.id,
                    alive = verdict == Liveness::Alive,
                    role = ?plan.role,
                    "peer liveness changed"
                );
                self.metrics
                    .peer_alive
                    .with_label_values(&[plan.label().as_str()])
                    .set(i64::from(verdict == Liveness::Alive));
            }
            Output::PeerReport { peer } => {
                report::path_metrics(&self.metrics, &peers[peer]);
                if peers[peer].plan().role == PeerRole::Appliance {
                    report::publish_peer(&self.bus, &peers[peer]);
                }
            }
            Output::MoveRoutes { peer, path, switch } => {
                self.move_routes(&peers[peer], path, switch).await;
            }
            Output::HubRoutes {
                area,
                carrier,
                path,
                before,
            } => {
                let owner = peers[area].plan();
                let path = &peers[carrier].plan().paths[path];
                if !route_networks(&self.handle, owner.id, &owner.networks, path).await {
                    return Some(Input::HubRoutesFailed { area, before });
                }
                self.metrics
                    .switches
                    .with_label_values(&[
                        owner.id.to_string().as_str(),
                        topics::PathReason::Hub.as_str(),
                    ])
                    .inc();
                tracing::info!(
                    area_of = owner.id,
                    from = %before.map_or("-".to_owned(), |id| id.to_string()),
                    via = peers[carrier].plan().id,
                    tunnel = %path.interface,
                    "hub routes moved"
                );
                let area = topics::HubArea {
                    area: owner.id,
                    via: peers[carrier].plan().id,
                    tunnel: path.interface.clone(),
                };
                self.publish_hub_routes(|routes| {
                    routes.areas.retain(|known| known.area != area.area);
                    routes.areas.push(area);
                    routes.areas.sort_by_key(|known| known.area);
                });
            }
            Output::HubPartner { partner_up, owner } => {
                tracing::info!(partner_up, owner = %owner.as_str(), "hub partner changed");
                self.publish_hub_routes(|routes| {
                    routes.owner = owner;
                    routes.partner_up = partner_up;
                });
            }
            Output::HubView(view) => {
                if let Some(sender) = &self.hub_view {
                    sender.send_replace(view);
                }
            }
            Output::TunnelJudged {
                tunnel,
                observation,
                verdict,
                changed,
            } => {
                report::tunnel_judged(
                    &self.metrics,
                    &self.bus,
                    &failover.tunnels()[tunnel],
                    &observation,
                    verdict,
                    changed,
                );
            }
            Output::ResetTunnelEndpoints { uplink } => {
                for watched in failover.tunnels() {
                    let interface = watched.interface.clone();
                    let uplink = uplink.clone();
                    let bus = self.bus.clone();
                    tokio::spawn(async move {
                        match tunnels::reset_endpoints(&interface).await {
                            Ok(peers) => {
                                tracing::info!(tunnel = %interface, %uplink, peers, "tunnel endpoint re-set for the new uplink");
                                let body = topics::TunnelEndpoint {
                                    uplink,
                                    peers,
                                    since: fieldnet::bus::unix_millis(),
                                };
                                let _ = bus.publish(
                                    &topics::tunnel_endpoint_topic(&interface),
                                    &body,
                                    true,
                                );
                            }
                            Err(error) => {
                                tracing::warn!(tunnel = %interface, error = format!("{error:#}"), "re-setting the tunnel endpoint")
                            }
                        }
                    });
                }
            }
        }
        None
    }

    /// Changes what `hub/routes` says and publishes it (hub mode only).
    fn publish_hub_routes(&mut self, change: impl FnOnce(&mut topics::HubRoutes)) {
        let Some(routes) = &mut self.hub_routes else {
            return;
        };
        change(routes);
        let _ = self.bus.publish(topics::TOPIC_HUB_ROUTES, &*routes, true);
    }

    async fn move_routes(&self, peer: &Peer, path: usize, switch: Switch) {
        let plan = peer.plan();
        let started = Instant::now();
        route_networks(&self.handle, plan.id, &plan.networks, &plan.paths[path]).await;
        let reason = topics::PathReason::from(switch.reason).as_str();
        self.metrics
            .switches
            .with_label_values(&[plan.id.to_string().as_str(), reason])
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
}

/// Replaces the routes to `networks` with ones via `path`'s remote end; whether all were.
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
