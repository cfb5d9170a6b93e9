//! The wire layer of the appliance file: serde types that mirror the TOML exactly.
//!
//! Nothing here is checked beyond its TOML type; `super::validate` turns these into the validated
//! types every agent uses. Unknown keys are rejected so a typo never silently becomes a default.

use serde::Deserialize;

/// The whole `/etc/fieldnet/fieldnet.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    pub site: WireSite,
    pub appliance: WireAppliance,
    #[serde(default)]
    pub areas: Vec<WireArea>,
    #[serde(default)]
    pub networks: Vec<WireNetwork>,
    #[serde(default)]
    pub uplinks: Vec<WireUplink>,
    #[serde(default)]
    pub peers: Vec<WirePeer>,
    pub hub: Option<WireHub>,
    #[serde(default)]
    pub bus: WireBus,
    #[serde(default)]
    pub uplink_monitor: WireUplinkMonitor,
    #[serde(default)]
    pub cross_site_failover: WireCrossSiteFailover,
    #[serde(default)]
    pub whereami: WireWhereami,
    #[serde(default)]
    pub dhcp_takeover: WireDhcpTakeover,
    #[serde(default)]
    pub imds_endpoint: WireAgent,
    #[serde(default)]
    pub inventory: WireAgent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSite {
    pub name: String,
    pub domain: String,
    pub key: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAppliance {
    pub id: i64,
    pub name: String,
    /// Required on an appliance; a hub (`[cross_site_failover] mode = "hub"`) serves no area.
    pub area: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireArea {
    pub name: String,
    pub appliance: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireNetwork {
    pub name: String,
    pub area: String,
    pub subnet: String,
    pub gateway: String,
    pub interface: Option<String>,
    pub vlan: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireUplink {
    pub name: String,
    pub kind: String,
    pub interface: Option<String>,
    pub gateway: Option<String>,
    pub peer: Option<i64>,
    pub preference: Option<i64>,
    pub metered: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePeer {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub paths: Vec<WirePath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePath {
    pub kind: String,
    pub interface: String,
    pub local: String,
    pub remote: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHub {
    pub endpoints: Vec<String>,
    pub tunnel_address: String,
    pub interface: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBus {
    pub socket: Option<String>,
    pub max_line_bytes: Option<i64>,
    pub queue_depth: Option<i64>,
    pub metrics_listen: Option<String>,
}

/// The part every agent section shares; agent issues add their own keys here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAgent {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
}

/// `[uplink_monitor]`: the common agent keys plus probing and steering.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireUplinkMonitor {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub targets: Option<Vec<String>>,
    pub probe_interval_ms: Option<i64>,
    pub standby_interval_ms: Option<i64>,
    pub dead_after_ms: Option<i64>,
    pub hold_ms: Option<i64>,
    pub margin_percent: Option<i64>,
    pub failback_after_ms: Option<i64>,
    pub dampening_half_life_ms: Option<i64>,
    pub dampening_suppress: Option<i64>,
    pub dampening_reuse: Option<i64>,
    pub route_table_base: Option<i64>,
    pub fwmark_base: Option<i64>,
    pub masquerade: Option<bool>,
    pub http_check_url: Option<String>,
    pub http_check_interval_ms: Option<i64>,
    pub http_check_expect: Option<i64>,
    pub throughput_test_url: Option<String>,
    pub throughput_test_interval_ms: Option<i64>,
    pub min_throughput_kbps: Option<i64>,
}

/// `[whereami]`: the common agent keys plus DNS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireWhereami {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub port: Option<i64>,
    pub upstreams: Option<Vec<String>>,
    pub local_ttl_s: Option<i64>,
    pub cache_size: Option<i64>,
    pub upstream_timeout_ms: Option<i64>,
    pub serve_stale_s: Option<i64>,
    #[serde(default)]
    pub hosts: Vec<WireHost>,
}

/// `[[whereami.hosts]]`: a local name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHost {
    pub name: String,
    pub address: String,
}

/// `[dhcp_takeover]`: the common agent keys plus DHCP: lease time, options, pools, reservations,
/// device classes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDhcpTakeover {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub store: Option<String>,
    pub conflict_probe_ms: Option<i64>,
    pub offer_hold_s: Option<i64>,
    pub peer_port: Option<i64>,
    #[serde(flatten)]
    pub options: WireDhcpOptions,
    #[serde(default)]
    pub pools: Vec<WirePool>,
    #[serde(default)]
    pub reservations: Vec<WireReservation>,
    #[serde(default)]
    pub classes: Vec<WireClass>,
}

/// The options a client is given, site-wide or per class.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDhcpOptions {
    pub lease_time_s: Option<i64>,
    pub ntp_servers: Option<Vec<String>>,
    pub mtu: Option<i64>,
    pub routes: Option<Vec<String>>,
}

/// `[[dhcp_takeover.pools]]`: a dynamic range on one network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePool {
    pub network: String,
    pub start: String,
    pub end: String,
}

/// `[[dhcp_takeover.reservations]]`: a fixed address for one MAC.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReservation {
    pub mac: String,
    pub address: String,
    pub hostname: Option<String>,
}

/// `[[dhcp_takeover.classes]]`: devices known by MAC prefix, with their own ranges and options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireClass {
    pub name: String,
    pub mac_prefixes: Vec<String>,
    #[serde(default)]
    pub ranges: Vec<String>,
    #[serde(flatten)]
    pub options: WireDhcpOptions,
}

/// `[cross_site_failover]`: the common agent keys plus heartbeats and path failback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCrossSiteFailover {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub heartbeat_port: Option<i64>,
    pub heartbeat_interval_ms: Option<i64>,
    pub detect_multiplier: Option<i64>,
    pub failback_hold_ms: Option<i64>,
    pub mode: Option<String>,
    pub hub: Option<WireHubMode>,
}

/// `[cross_site_failover.hub]`: what a hub of the pair needs (only with `mode = "hub"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHubMode {
    pub role: String,
    pub interface: String,
    pub local: String,
    pub partner: String,
    pub takeover_after_ms: Option<i64>,
    pub giveback_hold_ms: Option<i64>,
    pub aws_region: String,
    pub aws_endpoint: Option<String>,
    #[serde(default)]
    pub route_tables: Vec<String>,
    pub instance_id: String,
    pub partner_instance_id: String,
    pub partner_health_check: Option<String>,
    pub own_health_check: Option<String>,
    pub cloudwatch_namespace: Option<String>,
    pub cloudwatch_interval_ms: Option<i64>,
    pub reconcile_interval_ms: Option<i64>,
}
