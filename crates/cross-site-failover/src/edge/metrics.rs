//! cross-site-failover's metrics, registered once in the registry `main` passes down (the AWS
//! side registers its own, in `hub_aws`).

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) path_up: IntGaugeVec,
    pub(crate) rtt_us: IntGaugeVec,
    pub(crate) switches: IntCounterVec,
    pub(crate) heartbeats: IntCounterVec,
    pub(crate) peer_alive: IntGaugeVec,
    pub(crate) tunnel_interface_up: IntGaugeVec,
    pub(crate) tunnel_handshake_age: GaugeVec,
    pub(crate) tunnel_data_plane_up: IntGaugeVec,
    pub(crate) tunnel_healthy: IntGaugeVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let add = fieldnet::obs::Metrics(registry);
        Ok(Self {
            path_up: add.gauges(
                "fieldnet_cross_site_path_up",
                "1 while the path's session is up",
                &["peer", "path"],
            )?,
            rtt_us: add.gauges(
                "fieldnet_cross_site_path_rtt_microseconds",
                "Round trip from heartbeat echoes",
                &["peer", "path"],
            )?,
            switches: add.counters(
                "fieldnet_cross_site_switches_total",
                "Changes of the path carrying a peer's routes",
                &["peer", "reason"],
            )?,
            heartbeats: add.counters(
                "fieldnet_cross_site_heartbeats_total",
                "Heartbeats by outcome",
                &["outcome"],
            )?,
            peer_alive: add.gauges(
                "fieldnet_cross_site_peer_alive",
                "1 while the peer answers on any path",
                &["peer"],
            )?,
            tunnel_interface_up: add.gauges(
                "fieldnet_cross_site_tunnel_interface_up",
                "Tunnel layer 1: the interface exists and is up",
                &["tunnel", "peer"],
            )?,
            tunnel_handshake_age: add.float_gauges(
                "fieldnet_cross_site_tunnel_handshake_age_seconds",
                "Age of the tunnel's newest WireGuard handshake (-1: never, or unreadable)",
                &["tunnel", "peer"],
            )?,
            tunnel_data_plane_up: add.gauges(
                "fieldnet_cross_site_tunnel_data_plane_up",
                "Tunnel layer 3: a heartbeat session through the tunnel is up",
                &["tunnel", "peer"],
            )?,
            tunnel_healthy: add.gauges(
                "fieldnet_cross_site_tunnel_healthy",
                "1 while interface, handshake and data plane are all healthy",
                &["tunnel", "peer"],
            )?,
        })
    }
}
