//! The wire layer of the site file: serde types that mirror the TOML exactly.
//!
//! Nothing here is checked beyond its TOML type; `super::validate` turns these into the validated
//! types every agent uses. Unknown keys are rejected so a typo never silently becomes a default.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole `/etc/fieldnet/site.toml`, the same on every appliance and hub.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSiteFile {
    pub site: WireSite,
    #[serde(default)]
    pub areas: Vec<WireArea>,
    #[serde(default)]
    pub networks: Vec<WireNetwork>,
    #[serde(default)]
    pub appliances: Vec<WireAppliance>,
    #[serde(default)]
    pub links: Vec<WireLink>,
    pub hub: Option<WireHub>,
    #[serde(default)]
    pub hubs: Vec<WireHubMachine>,
    // The agent sections, site-wide; an appliance or hub may override any key of them. Read
    // here for their types only: the merge works on the tables (see `AGENT_SECTIONS`).
    #[allow(dead_code)]
    #[serde(default)]
    pub bus: WireBus,
    #[allow(dead_code)]
    #[serde(default)]
    pub uplink_monitor: WireUplinkMonitor,
    #[allow(dead_code)]
    #[serde(default)]
    pub cross_site_failover: WireCrossSiteFailover,
    #[allow(dead_code)]
    #[serde(default)]
    pub whereami: WireWhereami,
    #[allow(dead_code)]
    #[serde(default)]
    pub dhcp_takeover: WireDhcpTakeover,
    #[allow(dead_code)]
    #[serde(default)]
    pub imds_endpoint: WireImdsEndpoint,
    #[allow(dead_code)]
    #[serde(default)]
    pub inventory: WireInventory,
}

/// The agent sections a machine may override, key by key (only their types are read here: the
/// merge happens on the TOML tables, so each override is checked where it is written).
pub const AGENT_SECTIONS: [&str; 7] = [
    "bus",
    "uplink_monitor",
    "cross_site_failover",
    "whereami",
    "dhcp_takeover",
    "imds_endpoint",
    "inventory",
];

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
pub struct WireArea {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireNetwork {
    pub name: String,
    pub area: String,
    pub subnet: String,
    pub gateway: String,
    /// The interface carrying this network on every appliance, unless an appliance says
    /// otherwise in its `interfaces`.
    pub interface: Option<String>,
    pub vlan: Option<i64>,
    /// DHCP ranges, `"10.101.0.10-10.101.0.249"`; absent: the default pool.
    pub pools: Option<Vec<String>>,
    #[serde(default)]
    pub reservations: Vec<WireReservation>,
}

/// `[[networks.reservations]]`: a fixed address for one MAC.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReservation {
    pub mac: String,
    pub address: String,
    pub hostname: Option<String>,
    /// A device class of `[[dhcp_takeover.classes]]`, whatever the MAC's prefix says.
    pub class: Option<String>,
}

/// `[[appliances]]`: one area's appliance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAppliance {
    pub id: i64,
    pub name: String,
    /// The machine's host name, when it is not `name`.
    pub hostname: Option<String>,
    pub area: String,
    /// Network name → the interface carrying it on this appliance.
    #[serde(default)]
    pub interfaces: BTreeMap<String, String>,
    #[serde(default)]
    pub uplinks: Vec<WireUplink>,
    /// Other appliances' uplinks used through them, by name; absent: every other appliance's
    /// first uplink.
    pub remote_uplinks: Option<Vec<String>>,
    pub remote_preference: Option<i64>,
    /// This appliance's WireGuard interface to the hubs, and its address inside the tunnels.
    pub tunnel_interface: Option<String>,
    pub tunnel_address: Option<String>,
    // Overrides of the agent sections, read for their types only (see `AGENT_SECTIONS`).
    #[allow(dead_code)]
    pub bus: Option<WireBus>,
    #[allow(dead_code)]
    pub uplink_monitor: Option<WireUplinkMonitor>,
    #[allow(dead_code)]
    pub cross_site_failover: Option<WireCrossSiteFailover>,
    #[allow(dead_code)]
    pub whereami: Option<WireWhereami>,
    #[allow(dead_code)]
    pub dhcp_takeover: Option<WireDhcpTakeover>,
    #[allow(dead_code)]
    pub imds_endpoint: Option<WireImdsEndpoint>,
    #[allow(dead_code)]
    pub inventory: Option<WireInventory>,
}

/// `[[appliances.uplinks]]`: a router on one of the appliance's own ports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireUplink {
    pub name: String,
    pub interface: String,
    pub gateway: String,
    pub preference: Option<i64>,
    pub metered: Option<bool>,
}

/// `[[links]]`: a cable or wifi bridge between two appliances, both ends in one entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLink {
    pub kind: String,
    pub subnet: String,
    pub ends: Vec<WireLinkEnd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireLinkEnd {
    /// The appliance's name.
    pub appliance: String,
    pub interface: String,
    pub address: String,
}

/// `[hub]`: what the hub pair shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHub {
    pub tunnel_address: String,
    pub aws_region: String,
    pub aws_endpoint: Option<String>,
    #[serde(default)]
    pub route_tables: Vec<String>,
    pub takeover_after_ms: Option<i64>,
    pub giveback_hold_ms: Option<i64>,
    pub cloudwatch_namespace: Option<String>,
    pub cloudwatch_interval_ms: Option<i64>,
    pub reconcile_interval_ms: Option<i64>,
}

/// `[[hubs]]`: one hub of the pair in the AWS transit VPC.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireHubMachine {
    pub id: i64,
    pub name: String,
    pub hostname: Option<String>,
    pub role: String,
    /// Where appliances' WireGuard reaches it, `address:port`.
    pub endpoint: String,
    /// The interface and address the partner hub is watched over.
    pub vpc_interface: String,
    pub vpc_address: String,
    pub instance_id: String,
    /// Its Route53 health check, used as the on/off switch of its endpoint record.
    pub health_check: Option<String>,
    /// This hub's AWS endpoint, when it differs from `[hub] aws_endpoint`.
    pub aws_endpoint: Option<String>,
    /// Appliance name → this hub's tunnel interface to it.
    #[serde(default)]
    pub tunnels: BTreeMap<String, String>,
    // Overrides of the agent sections, read for their types only (see `AGENT_SECTIONS`).
    #[allow(dead_code)]
    pub bus: Option<WireBus>,
    #[allow(dead_code)]
    pub uplink_monitor: Option<WireUplinkMonitor>,
    #[allow(dead_code)]
    pub cross_site_failover: Option<WireCrossSiteFailover>,
    #[allow(dead_code)]
    pub whereami: Option<WireWhereami>,
    #[allow(dead_code)]
    pub dhcp_takeover: Option<WireDhcpTakeover>,
    #[allow(dead_code)]
    pub imds_endpoint: Option<WireImdsEndpoint>,
    #[allow(dead_code)]
    pub inventory: Option<WireInventory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBus {
    pub socket: Option<String>,
    pub max_line_bytes: Option<i64>,
    pub queue_depth: Option<i64>,
    pub metrics_listen: Option<String>,
    pub trust_any_publisher: Option<bool>,
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

/// `[dhcp_takeover]`: the common agent keys plus DHCP: lease time, options, device classes (pools
/// and reservations belong to their network).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDhcpTakeover {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub store: Option<String>,
    pub conflict_probe_ms: Option<i64>,
    pub offer_hold_s: Option<i64>,
    pub peer_port: Option<i64>,
    pub max_offers: Option<i64>,
    pub new_clients_per_minute: Option<i64>,
    #[serde(flatten)]
    pub options: WireDhcpOptions,
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

/// `[imds_endpoint]`: the common agent keys plus the metadata endpoint, the sessions and the
/// roles of the device classes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireImdsEndpoint {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub port: Option<i64>,
    pub hop_limit: Option<i64>,
    pub aws_region: Option<String>,
    pub aws_endpoint: Option<String>,
    pub cache: Option<String>,
    pub session_duration_s: Option<i64>,
    pub min_validity_s: Option<i64>,
    pub refuse_below_s: Option<i64>,
    pub tokens_per_client: Option<i64>,
    pub requests_per_second: Option<i64>,
    #[serde(default)]
    pub roles: Vec<WireImdsRole>,
}

/// `[[imds_endpoint.roles]]`: the IAM role the devices of one class get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireImdsRole {
    pub class: String,
    pub role_arn: String,
    pub imdsv1: Option<bool>,
    pub reserve_duration_s: Option<i64>,
}

/// `[inventory]`: the common agent keys plus discovery (sweeps, probes, when a device is gone)
/// and its outputs (HTTP service discovery, the state file).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireInventory {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub sd_listen: Option<String>,
    pub state: Option<String>,
    pub sweep_interval_s: Option<i64>,
    pub sweep_rate: Option<i64>,
    pub sweep_attempts: Option<i64>,
    pub reply_wait_ms: Option<i64>,
    pub probe_interval_s: Option<i64>,
    pub gone_after_s: Option<i64>,
    pub forget_after_s: Option<i64>,
    pub oui_file: Option<String>,
    pub routed: Option<Vec<String>>,
    pub exporters: Option<Vec<WireExporter>>,
}

/// `[[inventory.exporters]]`: a Prometheus job whose targets are the devices answering on `port`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireExporter {
    pub job: String,
    pub port: i64,
}

/// `[cross_site_failover]`: the common agent keys plus heartbeats and path failback. Hub mode
/// comes from the machine being one of `[[hubs]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCrossSiteFailover {
    pub enabled: Option<bool>,
    pub metrics_listen: Option<String>,
    pub heartbeat_port: Option<i64>,
    pub heartbeat_interval_ms: Option<i64>,
    pub detect_multiplier: Option<i64>,
    pub failback_hold_ms: Option<i64>,
}
