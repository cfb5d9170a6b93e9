//! Typed bodies of the bus topics. Every topic an agent publishes is named and typed here, so
//! publisher and subscribers agree at compile time; `docs/bus.md` lists them for humans.

use serde::{Deserialize, Serialize};

/// Which program alone publishes under each prefix (besides fieldctl, the operator's tool):
/// the broker checks the connecting process's credentials against it. `agent/<name>` is
/// `name`'s; everything else is anyone's.
pub const OWNERS: &[(&str, &str)] = &[
    ("bus/", "fieldnet-bus"),
    ("uplink/", "uplink-monitor"),
    ("peer/", "cross-site-failover"),
    ("hub/", "cross-site-failover"),
    ("dhcp/", "dhcp-takeover"),
    ("dns/", "whereami"),
    ("imds/", "imds-endpoint"),
    ("inventory/", "inventory"),
];

/// The program that alone may publish `topic`, if any.
pub fn owner_of(topic: &str) -> Option<&str> {
    if let Some(name) = topic.strip_prefix("agent/") {
        return Some(name.split('/').next().unwrap_or(name));
    }
    OWNERS
        .iter()
        .find(|(prefix, _)| topic.starts_with(prefix))
        .map(|(_, owner)| *owner)
}

/// Whether `name` is an agent's name (its program's), which only that program may say hello
/// as.
pub fn is_agent_name(name: &str) -> bool {
    OWNERS.iter().any(|(_, owner)| *owner == name)
}

/// Retained, published by the broker itself: the named clients connected right now.
pub const TOPIC_AGENTS: &str = "bus/agents";

/// Body of [`TOPIC_AGENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsAlive {
    pub agents: Vec<AgentPresence>,
}

/// One connected agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    pub name: String,
    pub pid: u32,
    /// Connected since, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained, one per agent: `agent/<name>`, published by every agent at start with its version.
pub fn agent_topic(name: &str) -> String {
    format!("agent/{name}")
}

/// Body of `agent/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    pub version: String,
    pub pid: u32,
    /// Where its metrics and health endpoint listen.
    pub metrics: String,
}

/// Retained, published by uplink-monitor: the uplink carrying the default route.
pub const TOPIC_UPLINK_ACTIVE: &str = "uplink/active";

/// Body of [`TOPIC_UPLINK_ACTIVE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkActive {
    /// The uplink's name from the config.
    pub name: String,
    /// Why traffic moved to it: `initial`, `adopted`, `link_down`, `silent`, `peer_down`,
    /// `suppressed`, `better` or `preferred`.
    pub reason: String,
    /// The uplink it replaced, if any.
    pub previous: Option<String>,
    /// Since when, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained, one per uplink: `uplink/<name>/state`, published by uplink-monitor.
pub fn uplink_state_topic(name: &str) -> String {
    format!("uplink/{name}/state")
}

/// Body of `uplink/<name>/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkState {
    pub name: String,
    /// `unknown`, `up`, `link_down`, `silent` or `peer_down`.
    pub health: String,
    pub active: bool,
    /// Dampened for flapping.
    pub suppressed: bool,
    /// Lower is better; `None` before any reply.
    pub score: Option<f64>,
    pub latency_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    /// Recent loss fraction, 0 to 1.
    pub loss: Option<f64>,
}

/// Retained, one per peer appliance: `peer/<id>` (published by cross-site-failover).
pub fn peer_topic(id: u8) -> String {
    format!("peer/{id}")
}

/// Body of `peer/<id>`: the least every subscriber relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLiveness {
    pub alive: bool,
}

/// The full body cross-site-failover publishes on `peer/<id>` (a superset of [`PeerLiveness`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    pub alive: bool,
    /// `unknown` (never heard since start), `alive` or `dead`.
    pub verdict: String,
    /// The path carrying the routes to the peer's networks: `cable`, `wifi` or `vpn`.
    pub active_path: Option<String>,
    pub paths: Vec<PeerPathState>,
    /// Since when the verdict holds, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// One path to a peer, in [`PeerState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerPathState {
    pub kind: String,
    pub interface: String,
    /// `down`, `init` or `up`.
    pub state: String,
    pub rtt_ms: Option<f64>,
}

/// Retained, one per DHCP lease: `dhcp/lease/<address>` (published by dhcp-takeover). A
/// retained `null` clears it when the lease ends (released or expired).
pub const TOPIC_DHCP_LEASES: &str = "dhcp/lease/";

pub fn lease_topic(address: std::net::Ipv4Addr) -> String {
    format!("{TOPIC_DHCP_LEASES}{address}")
}

/// Body of `dhcp/lease/<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: std::net::Ipv4Addr,
    /// The client's hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The host name the client asked for (option 12), if any.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The network (by name) the lease is on.
    pub network: String,
    /// When the lease ends, in milliseconds since the Unix epoch.
    pub expires: u64,
    /// The device class (by MAC prefix), if the device is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// Retained, one per network this appliance serves for a dead peer:
/// `dhcp/takeover/<network>` (published by dhcp-takeover once the network's gateway address is
/// on the interface). A retained `null` clears it when the network is handed back.
pub const TOPIC_DHCP_TAKEOVERS: &str = "dhcp/takeover/";

pub fn takeover_topic(network: &str) -> String {
    format!("{TOPIC_DHCP_TAKEOVERS}{network}")
}

/// Body of `dhcp/takeover/<network>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    pub network: String,
    /// The network's gateway (and DNS) address, now on this appliance.
    pub gateway: std::net::Ipv4Addr,
    /// The appliance whose network it is.
    pub owner: u8,
    /// Milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained: dhcp-takeover's networks, on every change (at most once a second).
pub const TOPIC_DHCP_STATE: &str = "dhcp/state";

/// Body of `dhcp/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpState {
    pub networks: Vec<DhcpNetwork>,
}

/// One network dhcp-takeover can serve, in [`DhcpState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpNetwork {
    pub name: String,
    /// `own` (answering its own network), `waiting` (own, held by a peer until handed back),
    /// `taken` (answering for a dead peer), `handing_back`, `adopted` (held when the agent
    /// restarted: gateway kept, not answering yet) or `standby` (a leg, not answering).
    pub state: String,
    /// The appliance whose network it is.
    pub owner: u8,
    /// Bound leases on it, as this appliance knows them.
    pub leases: u64,
    /// Dynamic addresses in use (bound, offered or quarantined) and in the pools.
    pub pool_used: u64,
    pub pool_total: u64,
}

/// Retained: whereami's state, on every change (at most once a second).
pub const TOPIC_DNS_STATE: &str = "dns/state";

/// Body of `dns/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsState {
    /// One entry per site network: what its askers are told and whether it is served here.
    pub networks: Vec<DnsNetwork>,
    pub upstreams: DnsUpstreams,
    /// Names answered locally (appliances, configured hosts, DHCP clients).
    pub local_names: usize,
}

/// One network in [`DnsState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNetwork {
    pub name: String,
    pub area: String,
    /// `own` (one of this appliance's networks), `takeover` (a dead peer's, served here for
    /// now) or `peer` (served by its own appliance; its askers still get the right answer here).
    pub role: String,
    /// Listening on the network's gateway address now.
    pub listening: bool,
}

/// The upstream resolvers in [`DnsState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsUpstreams {
    pub addresses: Vec<String>,
    /// `ok` (the last question sent upstream was answered), `failing`, `unknown` (nothing asked
    /// yet) or `none` (no upstream configured).
    pub health: String,
    /// Milliseconds since the Unix epoch.
    pub last_answer: Option<u64>,
    pub last_failure: Option<u64>,
    /// Questions no upstream answered, since start.
    pub failures: u64,
}
