//! What the agent works from, derived from the config alone: its own heartbeat id, every
//! heartbeat partner with its paths and the networks routed to it, the tunnels whose health is
//! watched, the timing, and on a hub the pair's settings.
//!
//! Invariant: a plan is data. The machine (`failover`) is built from one and tests build plans
//! by hand; nothing here reads the kernel or the clock.

use std::net::Ipv4Addr;
use std::time::Duration;

use fieldnet::config::{Config, HubRole, PathKind};
use ipnet::Ipv4Net;

/// The id every hub uses in heartbeats: appliances address "the hub", whichever it is.
pub const HUB_ID: u8 = 0;
/// The path code of the heartbeats between the two hubs of the pair.
pub const PARTNER_PATH: u8 = 3;

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

/// One path to one peer.
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
    /// The path's name in logs and metric labels: its kind, or `partner`.
    pub fn label(&self) -> &'static str {
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

impl PeerPlan {
    /// The peer's name in metric labels: its id, `hub` or `partner`.
    pub fn label(&self) -> String {
        match self.role {
            PeerRole::Appliance => self.id.to_string(),
            PeerRole::Hub => "hub".to_owned(),
            PeerRole::Partner => "partner".to_owned(),
        }
    }
}

/// A tunnel whose health is watched, and the peer it leads to (for labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedTunnel {
    pub interface: String,
    pub peer: String,
}

/// The hub pair's settings, on a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairPlan {
    pub role: HubRole,
    pub takeover_after: Duration,
    pub giveback_hold: Duration,
}

/// Everything the machine is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The id this agent puts in its heartbeats.
    pub own_id: u8,
    pub heartbeat_interval: Duration,
    pub detect_multiplier: u8,
    pub failback_hold: Duration,
    pub peers: Vec<PeerPlan>,
    pub tunnels: Vec<WatchedTunnel>,
    /// `Some` on a hub.
    pub pair: Option<PairPlan>,
}

impl Plan {
    pub fn from_config(config: &Config) -> Self {
        let settings = &config.agents.cross_site_failover;
        let peers = peers(config);
        let tunnels = tunnels(config, &peers);
        Self {
            own_id: own_wire_id(config),
            heartbeat_interval: settings.heartbeat_interval,
            detect_multiplier: settings.detect_multiplier,
            failback_hold: settings.failback_hold,
            peers,
            tunnels,
            pair: settings.hub.as_ref().map(|hub| PairPlan {
                role: hub.role,
                takeover_after: hub.takeover_after,
                giveback_hold: hub.giveback_hold,
            }),
        }
    }
}

/// The id this agent puts in its heartbeats.
pub fn own_wire_id(config: &Config) -> u8 {
    if config.agents.cross_site_failover.hub.is_some() {
        HUB_ID
    } else {
        config.appliance.id
    }
}

/// The heartbeat partners: every peer appliance, and the hub (on an appliance) or the partner
/// hub (on a hub).
pub fn peers(config: &Config) -> Vec<PeerPlan> {
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
/// appliance's tunnel.
pub fn tunnels(config: &Config, peers: &[PeerPlan]) -> Vec<WatchedTunnel> {
    if config.agents.cross_site_failover.hub.is_some() {
        let mut found: Vec<WatchedTunnel> = Vec::new();
        for peer in peers.iter().filter(|p| p.role == PeerRole::Appliance) {
            for path in peer.paths.iter().filter(|p| p.kind == PathKind::Vpn) {
                if !found.iter().any(|t| t.interface == path.interface) {
                    found.push(WatchedTunnel {
                        interface: path.interface.clone(),
                        peer: peer.name.clone(),
                    });
                }
            }
        }
        found
    } else {
        config
            .hub
            .as_ref()
            .and_then(|hub| hub.interface.clone())
            .map(|interface| {
                vec![WatchedTunnel {
                    interface,
                    peer: "hub".to_owned(),
                }]
            })
            .unwrap_or_default()
    }
}
