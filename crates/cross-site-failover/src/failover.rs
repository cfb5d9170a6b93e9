//! The agent's decisions as one machine: `Failover::step(now, input) -> outputs`. It owns every
//! path session, each peer's liveness and path choice, on a hub the pair and the routes of
//! every area, and the tunnels' health; the edge (`agent`) turns sockets, timers, `wg` and the
//! bus into inputs and carries out the outputs with netlink, sockets and the bus.
//!
//! Rules, in the order a step applies them:
//! - A heartbeat advances its path's session; time without one takes the path down after the
//!   peer's detection time (`session`). A peer is alive while any path is up (`PeerLiveness`).
//! - On an appliance, the routes to each peer's networks follow its path choice (`choice`):
//!   leave a path that went down at once, return to a better one only after the failback hold.
//!   Nothing moves until a path is known up, so a restart keeps the kernel's routes.
//! - On a hub, no path choice: each area rides its own appliance's tunnel while that is up,
//!   else the lowest-numbered appliance's that is up (`hub::area_carrier`); a write the edge
//!   reports failed is made again at the next change, or [`HUB_RETRY`] later. The partner hub's liveness feeds the pair
//!   (`HubPair`), which decides who owns the VPC routes; the AWS side is told only on a change.
//! - Each tunnel's health is judged from what the edge read and the sessions through it.
//!
//! Time and randomness are arguments: the heartbeat epoch and the send-time base come in the
//! `Seed`, `now` with every step, so tests drive it in simulated time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fieldnet::config::PathKind;

use crate::choice::{PathChoice, Switch};
use crate::hub::{self, HubPair, HubView, RouteOwner, TunnelReport};
use crate::packet::{Heartbeat, SessionState};
use crate::plan::{PeerPlan, PeerRole, Plan, WatchedTunnel};
use crate::session::{Liveness, PathSession, PeerLiveness, Sequence, Transition};
use crate::tunnel::{self, TunnelObservation, TunnelReading, TunnelVerdict};

/// A hub route write that failed is made again this much later (or at the next change).
pub const HUB_RETRY: Duration = Duration::from_secs(1);

/// The machine's randomness, drawn by the edge once per start.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    /// The heartbeat sequence's epoch (see `session`).
    pub epoch: u32,
    /// Where the microsecond send-time clock starts (never 0: 0 means "nothing to echo").
    pub clock_base: u64,
}

/// A fact, as the edge tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed; the edge sends this every few milliseconds.
    Tick,
    /// The heartbeat interval came round.
    SendHeartbeats,
    /// A verified heartbeat arrived on path `path` of peer `peer` (indexes into the plan).
    Heartbeat {
        peer: usize,
        path: usize,
        heartbeat: Heartbeat,
    },
    /// The latest reading of the watched tunnels.
    TunnelReadings(Vec<TunnelReading>),
    /// uplink-monitor's active uplink (the tunnel to the hub rides it).
    ActiveUplink(String),
    /// The reporting interval came round: every peer's state is reported again.
    Report,
    /// Writing the routes of `HubRoutes` failed; the kernel still routes as before.
    HubRoutesFailed { area: usize, before: Option<u8> },
}

/// A command to the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this heartbeat on path `path` of peer `peer` (if its socket is bound).
    Send {
        peer: usize,
        path: usize,
        heartbeat: Heartbeat,
    },
    /// A path session changed state.
    PathChanged {
        peer: usize,
        path: usize,
        transition: Transition,
    },
    /// A peer became alive or dead.
    Liveness { peer: usize, verdict: Liveness },
    /// A peer's state changed, or is due for its report: metrics and the bus.
    PeerReport { peer: usize },
    /// Appliance: route peer `peer`'s networks over its path `path`.
    MoveRoutes {
        peer: usize,
        path: usize,
        switch: Switch,
    },
    /// Hub: route the networks of appliance `area`'s area through the tunnel of appliance
    /// `carrier` (its path `path`). `before`: the carrier until now (its id).
    HubRoutes {
        area: usize,
        carrier: usize,
        path: usize,
        before: Option<u8>,
    },
    /// Hub: the partner's state, and so the VPC routes' owner, changed.
    HubPartner { partner_up: bool, owner: RouteOwner },
    /// Hub: what the AWS side should now act on.
    HubView(HubView),
    /// Tunnel `tunnel` (index into the plan's tunnels) was judged.
    TunnelJudged {
        tunnel: usize,
        observation: TunnelObservation,
        verdict: TunnelVerdict,
        /// The verdict differs from the previous one (or it is the first).
        changed: bool,
    },
    /// The active uplink changed: the tunnels' endpoints must be set again.
    ResetTunnelEndpoints { uplink: String },
}

/// One heartbeat partner as the machine holds it.
#[derive(Debug, Clone)]
pub struct Peer {
    plan: PeerPlan,
    sessions: Vec<PathSession>,
    liveness: PeerLiveness,
    choice: PathChoice,
}

impl Peer {
    pub fn plan(&self) -> &PeerPlan {
        &self.plan
    }

    /// One session per path, in the plan's order.
    pub fn sessions(&self) -> &[PathSession] {
        &self.sessions
    }

    pub fn liveness(&self) -> &PeerLiveness {
        &self.liveness
    }

    /// The path carrying this peer's routes (appliances only; `None` before any was up).
    pub fn active_path(&self) -> Option<PathKind> {
        self.choice.active()
    }

    fn any_up(&self) -> bool {
        self.sessions.iter().any(|s| s.state() == SessionState::Up)
    }
}

/// Hub mode's state.
#[derive(Debug, Clone)]
struct Hub {
    pair: HubPair,
    /// Area (appliance id) → the appliance whose tunnel carries it, as written to the kernel.
    routes: BTreeMap<u8, u8>,
    /// The view the AWS side was last given.
    published: HubView,
    /// A write failed: the areas are placed again at this time.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Failover {
    own_id: u8,
    started: Instant,
    clock_base: u64,
    sequence: Sequence,
    peers: Vec<Peer>,
    tunnels: Vec<WatchedTunnel>,
    reports: Vec<TunnelReport>,
    hub: Option<Hub>,
    active_uplink: Option<String>,
}

impl Failover {
    pub fn new(plan: Plan, now: Instant, seed: Seed) -> Self {
        let Plan {
            own_id,
            heartbeat_interval,
            detect_multiplier,
            failback_hold,
            peers,
            tunnels,
            pair,
        } = plan;
        let peers = peers
            .into_iter()
            .map(|plan| Peer {
                sessions: plan
                    .paths
                    .iter()
                    .map(|p| {
                        PathSession::new(
                            plan.id,
                            p.code,
                            heartbeat_interval,
                            detect_multiplier,
                            now,
                        )
                    })
                    .collect(),
                liveness: PeerLiveness::new(plan.id, now),
                choice: PathChoice::new(failback_hold),
                plan,
            })
            .collect();
        let hub = pair.map(|pair| {
            let pair = HubPair::new(pair.role, pair.takeover_after, pair.giveback_hold, now);
            Hub {
                published: HubView {
                    partner_up: pair.partner_up(),
                    owner: pair.owner(),
                    tunnels: Vec::new(),
                },
                pair,
                routes: BTreeMap::new(),
                retry_at: None,
            }
        });
        Self {
            own_id,
            started: now,
            clock_base: seed.clock_base.max(1),
            sequence: Sequence::new(seed.epoch),
            peers,
            tunnels,
            reports: Vec::new(),
            hub,
            active_uplink: None,
        }
    }

    /// The id this agent puts in its heartbeats.
    pub fn own_id(&self) -> u8 {
        self.own_id
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn tunnels(&self) -> &[WatchedTunnel] {
        &self.tunnels
    }

    /// On a hub, what the AWS side is to act on now.
    pub fn hub_view(&self) -> Option<&HubView> {
        self.hub.as_ref().map(|hub| &hub.published)
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick => {
                let mut changed = false;
                for index in 0..self.peers.len() {
                    let peer = &mut self.peers[index];
                    for path in 0..peer.sessions.len() {
                        if let Some(transition) = peer.sessions[path].tick(now) {
                            out.push(Output::PathChanged {
                                peer: index,
                                path,
                                transition,
                            });
                            changed = true;
                        }
                    }
                    changed |= self.settle(index, now, &mut out);
                }
                self.hub_step(now, changed, &mut out);
            }
            Input::Heartbeat {
                peer,
                path,
                heartbeat,
            } => {
                let now_us = self.clock(now);
                let Some(session) = self
                    .peers
                    .get_mut(peer)
                    .and_then(|p| p.sessions.get_mut(path))
                else {
                    return out;
                };
                let mut changed = false;
                if let Some(transition) = session.receive(now, now_us, &heartbeat) {
                    out.push(Output::PathChanged {
                        peer,
                        path,
                        transition,
                    });
                    changed = true;
                }
                changed |= self.settle(peer, now, &mut out);
                self.hub_step(now, changed, &mut out);
            }
            Input::SendHeartbeats => {
                let now_us = self.clock(now);
                let seq = self.sequence.advance();
                for (index, peer) in self.peers.iter().enumerate() {
                    for (path, session) in peer.sessions.iter().enumerate() {
                        out.push(Output::Send {
                            peer: index,
                            path,
                            heartbeat: session.heartbeat(self.own_id, seq, now, now_us),
                        });
                    }
                }
            }
            Input::TunnelReadings(readings) => {
                self.judge_tunnels(&readings, &mut out);
                self.publish_view(&mut out);
            }
            Input::ActiveUplink(uplink) => {
                // A hub's tunnels do not ride an uplink-monitor uplink.
                if self.hub.is_none() && self.active_uplink.as_deref() != Some(uplink.as_str()) {
                    self.active_uplink = Some(uplink.clone());
                    if !self.tunnels.is_empty() {
                        out.push(Output::ResetTunnelEndpoints { uplink });
                    }
                }
            }
            Input::Report => {
                out.extend((0..self.peers.len()).map(|peer| Output::PeerReport { peer }));
            }
            Input::HubRoutesFailed { area, before } => {
                if let (Some(hub), Some(peer)) = (&mut self.hub, self.peers.get(area)) {
                    match before {
                        Some(carrier) => hub.routes.insert(peer.plan.id, carrier),
                        None => hub.routes.remove(&peer.plan.id),
                    };
                    hub.retry_at = Some(now + HUB_RETRY);
                }
            }
        }
        out
    }

    /// The microsecond clock heartbeats are stamped and echoed with.
    fn clock(&self, now: Instant) -> u64 {
        self.clock_base + now.saturating_duration_since(self.started).as_micros() as u64
    }

    /// After any session change of peer `index`: its liveness and, on an appliance, its path
    /// choice. Returns whether anything changed.
    fn settle(&mut self, index: usize, now: Instant, out: &mut Vec<Output>) -> bool {
        let route_by_choice = self.hub.is_none();
        let peer = &mut self.peers[index];
        let liveness = peer.liveness.update(now, &peer.sessions);
        let mut switched = false;
        if route_by_choice && peer.plan.role == PeerRole::Appliance {
            let up: Vec<PathKind> = peer
                .plan
                .paths
                .iter()
                .zip(&peer.sessions)
                .filter(|(_, s)| s.state() == SessionState::Up)
                .map(|(p, _)| p.kind)
                .collect();
            if let Some(switch) = peer.choice.step(now, &up) {
                switched = true;
                if let Some(path) = peer.plan.paths.iter().position(|p| p.kind == switch.to) {
                    out.push(Output::MoveRoutes {
                        peer: index,
                        path,
                        switch,
                    });
                }
            }
        }
        if let Some(verdict) = liveness {
            out.push(Output::Liveness {
                peer: index,
                verdict,
            });
        }
        let changed = switched || liveness.is_some();
        if changed {
            out.push(Output::PeerReport { peer: index });
        }
        changed
    }

    /// Hub mode, after every step: the partner's liveness into the pair, and after a change
    /// every area onto the tunnel `hub::area_carrier` picks.
    fn hub_step(&mut self, now: Instant, changed: bool, out: &mut Vec<Output>) {
        let Some(hub) = &mut self.hub else {
            return;
        };
        if let Some(partner) = self.peers.iter().find(|p| p.plan.role == PeerRole::Partner) {
            hub.pair
                .observe(now, partner.liveness.verdict() == Liveness::Alive);
        }
        if let Some(partner_up) = hub.pair.tick(now) {
            out.push(Output::HubPartner {
                partner_up,
                owner: hub.pair.owner(),
            });
        }
        let retry = hub.retry_at.is_some_and(|at| now >= at);
        if changed || retry {
            hub.retry_at = None;
            let appliances = || {
                self.peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.plan.role == PeerRole::Appliance)
            };
            let up: Vec<u8> = appliances()
                .filter(|(_, p)| p.any_up())
                .map(|(_, p)| p.plan.id)
                .collect();
            for (area, owner) in appliances() {
                let Some(carrier_id) = hub::area_carrier(owner.plan.id, &up) else {
                    continue;
                };
                if hub.routes.get(&owner.plan.id) == Some(&carrier_id) {
                    continue;
                }
                let Some((carrier, path)) = appliances()
                    .find(|(_, p)| p.plan.id == carrier_id)
                    .and_then(|(index, p)| {
                        let path = p.plan.paths.iter().position(|p| p.kind == PathKind::Vpn)?;
                        Some((index, path))
                    })
                else {
                    continue;
                };
                let before = hub.routes.insert(owner.plan.id, carrier_id);
                out.push(Output::HubRoutes {
                    area,
                    carrier,
                    path,
                    before,
                });
            }
        }
        self.publish_view(out);
    }

    /// Hub mode: the view for the AWS side, when it differs from the one it has.
    fn publish_view(&mut self, out: &mut Vec<Output>) {
        let Some(hub) = &mut self.hub else {
            return;
        };
        let next = HubView {
            partner_up: hub.pair.partner_up(),
            owner: hub.pair.owner(),
            tunnels: self.reports.clone(),
        };
        if next != hub.published {
            hub.published = next.clone();
            out.push(Output::HubView(next));
        }
    }

    /// Judges every watched tunnel from its reading and the heartbeat sessions through it.
    fn judge_tunnels(&mut self, readings: &[TunnelReading], out: &mut Vec<Output>) {
        let mut reports = Vec::new();
        for (index, watched) in self.tunnels.iter().enumerate() {
            let Some(reading) = readings.iter().find(|r| r.interface == watched.interface) else {
                continue;
            };
            let through: Vec<&PathSession> = self
                .peers
                .iter()
                .flat_map(|peer| peer.plan.paths.iter().zip(&peer.sessions))
                .filter(|(path, _)| path.interface == watched.interface)
                .map(|(_, session)| session)
                .filter(|session| session.state() == SessionState::Up)
                .collect();
            let observation = TunnelObservation {
                interface_up: reading.interface_up,
                handshake_age: reading.handshake_age,
                data_plane_up: !through.is_empty(),
            };
            let verdict = tunnel::verdict(&observation);
            let before = self
                .reports
                .iter()
                .find(|r| r.interface == watched.interface);
            out.push(Output::TunnelJudged {
                tunnel: index,
                observation,
                verdict,
                changed: before.map(|r| r.verdict) != Some(verdict),
            });
            reports.push(TunnelReport {
                interface: watched.interface.clone(),
                peer: watched.peer.clone(),
                verdict,
                rtt: through.iter().filter_map(|s| s.rtt()).min(),
                collected: reading.collected,
            });
        }
        self.reports = reports;
    }
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod tests;
