//! Typed bodies of the bus topics. Every topic an agent publishes is named and typed here, so
//! publisher and subscribers agree at compile time; `docs/bus.md` lists them for humans.
//!
//! Every word with a fixed set of values (a reason, a health, a state) is an enum here, written
//! on the wire in snake_case; metric labels and logs use the same words (`as_str`). A test
//! checks that docs/bus.md names every value.

use serde::{Deserialize, Serialize};

pub use crate::config::PathKind;

/// A word that is not one of a vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{word:?} is not a {vocabulary} (see docs/bus.md)")]
pub struct UnknownWord {
    pub vocabulary: &'static str,
    pub word: String,
}

/// An enum of the bus vocabulary: serde with the given wire words, `as_str` for metric labels
/// and logs, `ALL` for the docs check.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $word)] $variant, )+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every value as written on the wire, in the order of [`Self::ALL`].
            pub const WORDS: &'static [&'static str] = &[$($word,)+];

            /// The wire word, also the metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;

            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == word)
                    .ok_or_else(|| UnknownWord {
                        vocabulary: stringify!($name),
                        word: word.to_owned(),
                    })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Why traffic moved to an uplink.
    pub enum UplinkReason {
        /// Chosen at start, nothing being active before.
        Initial = "initial",
        /// The default route already pointed at it when the agent started.
        Adopted = "adopted",
        /// The previous uplink's link went down.
        LinkDown = "link_down",
        /// The previous uplink stopped answering.
        Silent = "silent",
        /// The appliance the previous (remote) uplink belongs to died.
        PeerDown = "peer_down",
        /// The previous uplink was dampened for flapping.
        Suppressed = "suppressed",
        /// The previous uplink failed the HTTP check (a login page, or no service).
        Captive = "captive",
        /// This one scored clearly better for the hold time.
        Better = "better",
        /// The preferred uplink was back and stable.
        Preferred = "preferred",
    }
}

vocabulary! {
    /// An uplink's health.
    pub enum UplinkHealth {
        /// Not yet enough evidence either way.
        Unknown = "unknown",
        Up = "up",
        /// The kernel reports the link down.
        LinkDown = "link_down",
        /// Link up, every probe target silent.
        Silent = "silent",
        /// A remote uplink whose appliance is dead.
        PeerDown = "peer_down",
        /// Probes answered, the HTTP check not.
        Captive = "captive",
    }
}

vocabulary! {
    /// A peer's liveness over all its paths.
    pub enum PeerVerdict {
        /// Never heard from since start.
        Unknown = "unknown",
        /// Some path is up.
        Alive = "alive",
        /// Every path went down after it had been alive.
        Dead = "dead",
    }
}

vocabulary! {
    /// A heartbeat session on one path.
    pub enum PathState {
        Down = "down",
        /// Heard from, handshake not complete.
        Init = "init",
        Up = "up",
    }
}

vocabulary! {
    /// Why the routes to a peer (or, on a hub, an area) moved to a path.
    pub enum PathReason {
        /// The first path to come up.
        Initial = "initial",
        /// The path in use went down.
        PathDown = "path_down",
        /// A more preferred path has been up for the failback hold.
        Failback = "failback",
        /// On a hub: the area's tunnel changed.
        Hub = "hub",
    }
}

vocabulary! {
    /// What dhcp-takeover does with a network.
    pub enum DhcpNetworkState {
        /// Answering its own network.
        Own = "own",
        /// Its own, held by a peer until handed back.
        Waiting = "waiting",
        /// Answering for a dead peer.
        Taken = "taken",
        /// Giving a taken network back to its owner.
        HandingBack = "handing_back",
        /// Held when the agent restarted: gateway kept, not answering yet.
        Adopted = "adopted",
        /// A leg of another appliance's network, not answering.
        Standby = "standby",
    }
}

vocabulary! {
    /// A site network as whereami serves it.
    pub enum DnsRole {
        /// One of this appliance's networks.
        Own = "own",
        /// A dead peer's network, served here for now.
        Takeover = "takeover",
        /// Served by its own appliance; its askers still get the right answer here.
        Peer = "peer",
    }
}

vocabulary! {
    /// The upstream resolvers' health.
    pub enum UpstreamHealth {
        /// The last question sent upstream was answered.
        Ok = "ok",
        Failing = "failing",
        /// Nothing asked yet.
        Unknown = "unknown",
        /// No upstream configured.
        None = "none",
    }
}

vocabulary! {
    /// What cross-site-failover's check of a tunnel found: its interface, its WireGuard
    /// handshake, and a heartbeat's round trip through it.
    pub enum TunnelVerdict {
        Healthy = "healthy",
        InterfaceDown = "interface_down",
        NoHandshake = "no_handshake",
        HandshakeStale = "handshake_stale",
        DataPlaneDown = "data_plane_down",
    }
}

vocabulary! {
    /// Which hub of the pair the VPC routes point at.
    pub enum RouteOwner {
        Primary = "primary",
        Standby = "standby",
    }
}

vocabulary! {
    /// How STS answered imds-endpoint lately.
    pub enum StsHealth {
        /// The last call gave a session.
        Ok = "ok",
        /// The last call failed (no uplink, throttled, refused).
        Failing = "failing",
        /// Nothing asked yet.
        Unknown = "unknown",
    }
}

/// Which program alone publishes under each prefix (besides fieldctl, the operator's tool):
/// the broker checks the connecting process's credentials against it. `agent/<name>` is
/// `name`'s; everything else is anyone's.
pub const OWNERS: &[(&str, &str)] = &[
    ("bus/", "fieldnet-bus"),
    ("uplink/", "uplink-monitor"),
    ("peer/", "cross-site-failover"),
    ("hub/", "cross-site-failover"),
    ("tunnel/", "cross-site-failover"),
    ("dhcp/", "dhcp-takeover"),
    ("dns/", "whereami"),
    ("imds/", "imds-endpoint"),
    ("inventory/", "inventory"),
    ("dev/", "inventory"),
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
    pub reason: UplinkReason,
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
    pub health: UplinkHealth,
    pub active: bool,
    /// Dampened for flapping.
    pub suppressed: bool,
    /// Lower is better; `None` before any reply.
    pub score: Option<f64>,
    pub latency_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    /// Recent loss fraction, 0 to 1.
    pub loss: Option<f64>,
    /// The interface the uplink's traffic leaves by: its own port, or for a remote uplink the
    /// path to its appliance in use now.
    #[serde(default)]
    pub via: String,
    /// Its capacity as the last throughput test measured it, kilobits per second.
    #[serde(default)]
    pub capacity_kbps: Option<f64>,
}

/// Retained, one per peer appliance: `peer/<id>` (published by cross-site-failover).
pub const TOPIC_PEERS: &str = "peer/";

pub fn peer_topic(id: u8) -> String {
    format!("{TOPIC_PEERS}{id}")
}

/// The peer's id in a `peer/<id>` topic.
pub fn parse_peer_topic(topic: &str) -> Option<u8> {
    topic.strip_prefix(TOPIC_PEERS)?.parse().ok()
}

/// Body of `peer/<id>`: the least every subscriber relies on (the rest of [`PeerState`] is
/// ignored when read as this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLiveness {
    pub verdict: PeerVerdict,
}

/// The full body cross-site-failover publishes on `peer/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    pub verdict: PeerVerdict,
    /// The path carrying the routes to the peer's networks.
    pub active_path: Option<PathKind>,
    pub paths: Vec<PeerPathState>,
    /// Since when the verdict holds, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// One path to a peer, in [`PeerState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerPathState {
    pub kind: PathKind,
    pub interface: String,
    pub state: PathState,
    pub rtt_ms: Option<f64>,
}

/// Retained, one per tunnel cross-site-failover watches: `tunnel/<interface>`, on every change of
/// verdict.
pub const TOPIC_TUNNELS: &str = "tunnel/";

pub fn tunnel_topic(interface: &str) -> String {
    format!("{TOPIC_TUNNELS}{interface}")
}

/// Body of `tunnel/<interface>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelState {
    pub interface: String,
    /// Who is at the other end (`hub`, `appliance-2`).
    pub peer: String,
    pub verdict: TunnelVerdict,
    /// Seconds since the last WireGuard handshake; `None` without one.
    pub handshake_age_s: Option<u64>,
    /// A heartbeat made it through the tunnel lately.
    pub data_plane_up: bool,
    /// Since when the verdict holds, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained, one per tunnel: `tunnel/<interface>/endpoint`, each time its peers' endpoints are
/// set again because the active uplink changed.
pub fn tunnel_endpoint_topic(interface: &str) -> String {
    format!("{TOPIC_TUNNELS}{interface}/endpoint")
}

/// Body of `tunnel/<interface>/endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelEndpoint {
    /// The uplink whose change it followed.
    pub uplink: String,
    /// Peers whose endpoint was set again.
    pub peers: usize,
    /// When, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// Retained, published by a hub's cross-site-failover: which tunnel carries each area's
/// networks, and the pair's state.
pub const TOPIC_HUB_ROUTES: &str = "hub/routes";

/// Body of [`TOPIC_HUB_ROUTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubRoutes {
    /// The hub the VPC routes should point at, as this hub sees it.
    pub owner: RouteOwner,
    pub partner_up: bool,
    /// Each area whose networks are routed, in area order.
    pub areas: Vec<HubArea>,
}

/// One area in [`HubRoutes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubArea {
    /// The appliance whose area it is.
    pub area: u8,
    /// The appliance whose tunnel carries it (itself, or a neighbour when it is cut off).
    pub via: u8,
    pub tunnel: String,
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
    /// The client's identifier (option 61, else its hardware type and address), hex bytes
    /// `01:aa:bb:…`: a device's identity when its MAC changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
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
    pub state: DhcpNetworkState,
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
    pub role: DnsRole,
    /// Listening on the network's gateway address now.
    pub listening: bool,
}

/// The upstream resolvers in [`DnsState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsUpstreams {
    pub addresses: Vec<String>,
    pub health: UpstreamHealth,
    /// Milliseconds since the Unix epoch.
    pub last_answer: Option<u64>,
    pub last_failure: Option<u64>,
    /// Questions no upstream answered, since start.
    pub failures: u64,
}

/// Retained: imds-endpoint's state, on every change (at most once a second).
pub const TOPIC_IMDS_STATE: &str = "imds/state";

/// Body of `imds/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImdsState {
    /// How long every class's devices stay served if STS stays away, in seconds: the
    /// shortest of the classes' runways. `None` without roles.
    pub runway_s: Option<u64>,
    pub classes: Vec<ImdsClass>,
    /// Devices with a session of their own.
    pub devices: usize,
    pub sts: StsHealth,
    /// Milliseconds since the Unix epoch.
    pub last_sts_answer: Option<u64>,
}

/// One device class with a role, in [`ImdsState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImdsClass {
    pub class: String,
    pub role: String,
    pub runway_s: u64,
    /// When its reserve session ends, milliseconds since the Unix epoch.
    pub reserve_expires: Option<u64>,
}

/// Retained, one per device the operator forgot: `imds/forget/<mac>` (published by
/// `fieldctl device forget`). A retained `null` lifts it.
pub const TOPIC_IMDS_FORGET: &str = "imds/forget/";

pub fn imds_forget_topic(mac: &str) -> String {
    format!("{TOPIC_IMDS_FORGET}{mac}")
}

/// Body of `imds/forget/<mac>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceForgotten {
    /// Milliseconds since the Unix epoch.
    pub since: u64,
}

vocabulary! {
    /// How inventory learned of a device.
    pub enum DeviceSource {
        /// A DHCP lease (ACKed, from dhcp-takeover on the bus).
        Lease = "lease",
        /// The kernel's neighbour table confirmed it reachable.
        Neighbour = "neighbour",
        /// It answered an ARP request of a sweep.
        Arp = "arp",
        /// It answered an ICMP echo of a sweep (routed ranges).
        Icmp = "icmp",
        /// One of its exporter ports took a TCP connection.
        Exporter = "exporter",
        /// A WireGuard peer of the hub with a recent handshake.
        Wireguard = "wireguard",
    }
}

vocabulary! {
    /// Whether a device is there.
    pub enum DeviceState {
        Present = "present",
        /// Silent for longer than `gone_after_s`; listed until `forget_after_s`.
        Gone = "gone",
    }
}

vocabulary! {
    /// What happened to a device.
    pub enum DeviceEvent {
        /// Seen for the first time (or again after it was forgotten).
        Joined = "joined",
        /// Seen on another network than before.
        Moved = "moved",
        /// Silent for longer than `gone_after_s`.
        Gone = "gone",
        /// Seen again after it was gone.
        Returned = "returned",
    }
}

/// Retained, one per device inventory knows: `dev/<id>` (published on a change, and at most
/// once a minute as it keeps being seen). A retained `null` when the device is forgotten.
pub const TOPIC_DEVICES: &str = "dev/";

/// `dev/<id>`; `id` is the device's MAC (`aa:bb:cc:dd:ee:ff`), `wg-<key>` for a WireGuard peer
/// or `ip-<address>` for a device behind a router.
pub fn device_topic(id: &str) -> String {
    format!("{TOPIC_DEVICES}{id}")
}

/// Body of `dev/<id>`: everything inventory knows of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<crate::names::Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub address: std::net::Ipv4Addr,
    /// The network's name (a routed range's `a.b.c.d/n`, `vpn` for a WireGuard peer).
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// From the MAC's vendor prefix, when the vendor table knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// What the device called itself (DHCP option 12), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its host name, else its reservation's, else its id.
    pub name: String,
    pub state: DeviceState,
    /// In that state since, in milliseconds since the Unix epoch.
    pub since: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    /// When each source last saw it.
    pub sources: Vec<SourceSeen>,
    /// Exporter ports that took a connection at the last probe.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// One source's last sighting of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSeen {
    pub source: DeviceSource,
    pub at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_words_are_snake_case_and_read_back() {
        for reason in UplinkReason::ALL {
            let json = serde_json::to_string(reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(
                serde_json::from_str::<UplinkReason>(&json).unwrap(),
                *reason
            );
        }
        assert_eq!(PathReason::PathDown.as_str(), "path_down");
        assert_eq!(DhcpNetworkState::HandingBack.to_string(), "handing_back");
        assert!(serde_json::from_str::<PeerVerdict>("\"Alive\"").is_err());
        assert_eq!("peer_down".parse(), Ok(UplinkHealth::PeerDown));
        assert!("Up".parse::<UplinkHealth>().is_err());
        // Padding applies, as in fieldctl's columns.
        assert_eq!(format!("[{:<6}]", UplinkHealth::Up), "[up    ]");
    }

    #[test]
    fn a_peer_topic_reads_back_and_nothing_else_does() {
        assert_eq!(parse_peer_topic(&peer_topic(7)), Some(7));
        for topic in ["peer/", "peer/x", "peer/256", "peers/1", "uplink/1"] {
            assert_eq!(parse_peer_topic(topic), None, "{topic}");
        }
    }

    #[test]
    fn a_peer_state_reads_as_its_liveness() {
        let state = PeerState {
            verdict: PeerVerdict::Dead,
            active_path: Some(PathKind::Wifi),
            paths: vec![PeerPathState {
                kind: PathKind::Wifi,
                interface: "wl0".to_owned(),
                state: PathState::Init,
                rtt_ms: None,
            }],
            since: 1,
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["active_path"], "wifi");
        assert_eq!(json["paths"][0]["state"], "init");
        let liveness: PeerLiveness = serde_json::from_value(json).unwrap();
        assert_eq!(liveness.verdict, PeerVerdict::Dead);
    }

    /// docs/bus.md names every value of every enum, in backquotes.
    #[test]
    fn docs_bus_md_lists_every_value() {
        let docs = include_str!("../../../../docs/bus.md");
        let vocabularies: [(&str, &[&str]); 15] = [
            ("UplinkReason", UplinkReason::WORDS),
            ("UplinkHealth", UplinkHealth::WORDS),
            ("PeerVerdict", PeerVerdict::WORDS),
            ("PathState", PathState::WORDS),
            ("PathReason", PathReason::WORDS),
            ("DhcpNetworkState", DhcpNetworkState::WORDS),
            ("DnsRole", DnsRole::WORDS),
            ("UpstreamHealth", UpstreamHealth::WORDS),
            ("TunnelVerdict", TunnelVerdict::WORDS),
            ("RouteOwner", RouteOwner::WORDS),
            ("StsHealth", StsHealth::WORDS),
            ("DeviceSource", DeviceSource::WORDS),
            ("DeviceState", DeviceState::WORDS),
            ("DeviceEvent", DeviceEvent::WORDS),
            ("PathKind", &["cable", "wifi", "vpn"]),
        ];
        let missing: Vec<String> = vocabularies
            .iter()
            .flat_map(|(name, words)| {
                words
                    .iter()
                    .filter(|word| !docs.contains(&format!("`{word}`")))
                    .map(move |word| format!("{name}::{word}"))
            })
            .collect();
        assert!(missing.is_empty(), "docs/bus.md does not name: {missing:?}");
    }
}
