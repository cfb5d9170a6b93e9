//! The site file: one TOML file describing the whole site, identical on every appliance and hub,
//! and each machine's validated view of it, which is what the agents read.
//!
//! Two layers: [`wire`] mirrors the TOML, [`SiteConfig`] and its per-machine [`Config`] views are
//! built only through validation, which checks the whole site (both ends of every link, overlaps,
//! pools) before any view exists. [`SiteConfig::from_str`] is pure; [`SiteConfig::load`] adds
//! the file; [`SiteConfig::select`] finds this machine in it. Every error names the file, the
//! line and the key, and says what would be valid.
mod select;
mod spans;
mod validate;
mod wire;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

pub use select::{Chosen, SelectError, Way};
pub use spans::KeyPath;

/// Where agents look for the site file when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/fieldnet/site.toml";
/// Environment variable naming this machine in the site file (as `--appliance` does).
pub const APPLIANCE_ENV: &str = "FIELDNET_APPLIANCE";
/// Preference of a remote uplink (another appliance's, used through it) that does not set one:
/// after the appliance's own uplinks at their default.
pub const DEFAULT_REMOTE_UPLINK_PREFERENCE: u32 = 200;
/// Default bus socket.
pub const DEFAULT_BUS_SOCKET: &str = "/run/fieldnet/bus.sock";
/// Longest bus line the broker accepts, in bytes; longer lines get an error and a disconnect.
pub const DEFAULT_BUS_MAX_LINE_BYTES: usize = 64 * 1024;
/// Messages queued per subscriber before it is told it lagged.
pub const DEFAULT_BUS_QUEUE_DEPTH: usize = 4096;
/// Preference of an uplink that does not set one; lower is preferred.
pub const DEFAULT_UPLINK_PREFERENCE: u32 = 100;
/// `[uplink_monitor]` defaults.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_STANDBY_INTERVAL: Duration = Duration::from_millis(1000);
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_millis(450);
pub const DEFAULT_HOLD: Duration = Duration::from_millis(3000);
pub const DEFAULT_MARGIN_PERCENT: u32 = 25;
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(30);
pub const DEFAULT_DAMPENING_HALF_LIFE: Duration = Duration::from_secs(15);
pub const DEFAULT_DAMPENING_SUPPRESS: u32 = 3000;
pub const DEFAULT_DAMPENING_REUSE: u32 = 1500;
pub const DEFAULT_ROUTE_TABLE_BASE: u32 = 200;
pub const DEFAULT_FWMARK_BASE: u32 = 0x4600;
pub const DEFAULT_HTTP_CHECK_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_CHECK_EXPECT: u16 = 204;
pub const DEFAULT_THROUGHPUT_TEST_INTERVAL: Duration = Duration::from_secs(600);
/// `[cross_site_failover]` defaults.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 47840;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
pub const DEFAULT_DETECT_MULTIPLIER: u8 = 3;
pub const DEFAULT_FAILBACK_HOLD: Duration = Duration::from_secs(10);
/// `[whereami]` defaults.
pub const DEFAULT_DNS_PORT: u16 = 53;
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_DNS_CACHE_SIZE: u64 = 10_000;
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
pub const DEFAULT_SERVE_STALE: Duration = Duration::from_secs(86_400);
/// `[cross_site_failover.hub]` defaults.
pub const DEFAULT_TAKEOVER_AFTER: Duration = Duration::from_millis(1000);
pub const DEFAULT_GIVEBACK_HOLD: Duration = Duration::from_secs(30);
pub const DEFAULT_CLOUDWATCH_NAMESPACE: &str = "fieldnet";
pub const DEFAULT_CLOUDWATCH_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest site key accepted, in bytes.
pub const MIN_SITE_KEY_BYTES: usize = 32;
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);
pub const DEFAULT_DHCP_STORE: &str = "/var/lib/fieldnet/dhcp";
pub const DEFAULT_CONFLICT_PROBE: Duration = Duration::from_millis(250);
pub const DEFAULT_OFFER_HOLD: Duration = Duration::from_secs(30);
/// TCP port of dhcp-takeover's peer API (lease replication, takeover and handback).
pub const DEFAULT_DHCP_PEER_PORT: u16 = 47842;
/// `[imds_endpoint]` defaults: EC2's address and hop limit, one-hour device sessions of which a
/// device always gets at least 30 minutes, nothing served with less than 25 minutes left.
pub const IMDS_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const DEFAULT_IMDS_PORT: u16 = 80;
pub const DEFAULT_IMDS_HOP_LIMIT: u8 = 1;
pub const DEFAULT_IMDS_CACHE: &str = "/var/lib/fieldnet/imds/credentials.json";
pub const DEFAULT_IMDS_SESSION: Duration = Duration::from_secs(3600);
pub const DEFAULT_IMDS_MIN_VALIDITY: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_IMDS_REFUSE_BELOW: Duration = Duration::from_secs(25 * 60);
/// The longest session a role can give (its `MaxSessionDuration` at most 12 h).
pub const DEFAULT_IMDS_RESERVE: Duration = Duration::from_secs(12 * 3600);
pub const DEFAULT_IMDS_TOKENS_PER_CLIENT: usize = 16;
pub const DEFAULT_IMDS_REQUESTS_PER_SECOND: u32 = 200;
/// AWS's shortest session; shorter ones are accepted only with a test endpoint.
pub const AWS_MIN_SESSION: Duration = Duration::from_secs(900);
/// `[inventory]` defaults: service discovery beside the metrics, a sweep a minute at most 2,000
/// frames a second (every device on the VLAN reads every broadcast), four tries 50 ms apart before a silent host counts
/// as a miss (a LAN answers ARP in well under a millisecond; a late answer still counts),
/// exporters probed every minute, a device gone after five silent minutes and forgotten after a
/// day.
pub const DEFAULT_INVENTORY_SD_PORT: u16 = 9716;
pub const DEFAULT_INVENTORY_STATE: &str = "/var/lib/fieldnet/inventory/devices.json";
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_SWEEP_RATE: u32 = 2000;
pub const DEFAULT_SWEEP_ATTEMPTS: u32 = 4;
pub const DEFAULT_REPLY_WAIT: Duration = Duration::from_millis(50);
pub const DEFAULT_EXPORTER_PROBE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_GONE_AFTER: Duration = Duration::from_secs(300);
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(86_400);
/// node_exporter's port: the one exporter job every device list has unless the file says
/// otherwise.
pub const DEFAULT_EXPORTER: (&str, u16) = ("node", 9100);
/// Vendor tables looked for when `oui_file` is not set: arp-scan's, then nmap's.
pub const OUI_FILES: [&str; 2] = [
    "/usr/share/arp-scan/ieee-oui.txt",
    "/usr/share/nmap/nmap-mac-prefixes",
];
/// Host addresses at the start of a subnet left out of the default pool, for appliances,
/// routers and printers configured by hand.
pub const DEFAULT_POOL_SKIP: u32 = 9;

/// The whole site, validated: every appliance's and hub's view of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// The file it was read from, for messages.
    pub file: String,
    /// Appliances in file order, then hubs in file order.
    pub machines: Vec<Machine>,
}

/// One appliance or hub of the site, and the view its agents run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Its host name when that is not its name.
    pub hostname: Option<String>,
    pub role: MachineRole,
    pub config: Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineRole {
    Appliance,
    Hub(HubRole),
}

impl Machine {
    pub fn id(&self) -> u8 {
        self.config.appliance.id
    }

    pub fn name(&self) -> &str {
        &self.config.appliance.name
    }

    /// "appliance 'north' (id 1)" or "hub 'hub-a' (id 201)".
    pub fn describe(&self) -> String {
        let kind = match self.role {
            MachineRole::Appliance => "appliance",
            MachineRole::Hub(_) => "hub",
        };
        format!("{kind} '{}' (id {})", self.name(), self.id())
    }
}

/// The validated configuration of one appliance or hub: its view of the site file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub site: Site,
    pub appliance: Appliance,
    pub areas: Vec<Area>,
    pub networks: Vec<Network>,
    pub uplinks: Vec<Uplink>,
    pub peers: Vec<Peer>,
    pub hub: Option<Hub>,
    pub bus: Bus,
    pub agents: Agents,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    /// DNS zone of the site: local names and `whereami.<domain>` live under it.
    pub domain: String,
    pub key: SiteKey,
}

/// The per-site secret that authenticates traffic between appliances.
#[derive(Clone, PartialEq, Eq)]
pub enum SiteKey {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl fmt::Debug for SiteKey {
    // The key itself never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteKey::Inline(bytes) => write!(f, "SiteKey::Inline({} bytes)", bytes.len()),
            SiteKey::File(path) => write!(f, "SiteKey::File({})", path.display()),
        }
    }
}

impl SiteKey {
    /// The key bytes, reading the key file if the key lives in one; a key file that its group or
    /// others can read is refused.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context as _;
        match self {
            SiteKey::Inline(bytes) => Ok(bytes.clone()),
            SiteKey::File(path) => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(path)
                    .with_context(|| format!("reading site key file {}", path.display()))?
                    .permissions()
                    .mode();
                anyhow::ensure!(
                    mode & 0o044 == 0,
                    "site key file {} is readable by {} (mode {:04o}): anyone who reads it can speak for the site; `chmod 600 {}`",
                    path.display(),
                    if mode & 0o004 != 0 {
                        "everyone"
                    } else {
                        "its group"
                    },
                    mode & 0o7777,
                    path.display()
                );
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading site key file {}", path.display()))?;
                let bytes = validate::decode_key(text.trim())
                    .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
                Ok(bytes)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    /// 1..N; the lowest-numbered live appliance takes over a dead peer's network.
    pub id: u8,
    pub name: String,
    /// The area this appliance serves.
    pub area: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    pub name: String,
    /// The appliance that normally serves this area.
    pub appliance: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The name devices learn from `whereami`, such as `NETWORK1`.
    pub name: String,
    pub area: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The interface carrying this network on this appliance, if it is present here.
    pub interface: Option<String>,
    pub vlan: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkKind {
    /// A router on one of this appliance's ports.
    Local {
        interface: String,
        gateway: Ipv4Addr,
    },
    /// Another appliance's uplink, reached over a cross-area path.
    Remote { peer: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub kind: UplinkKind,
    /// Lower is preferred when uplinks score alike.
    pub preference: u32,
    /// Metered uplinks are probed more sparingly while on standby.
    pub metered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u8,
    pub name: String,
    pub paths: Vec<PeerPath>,
}

/// On the bus as `cable`, `wifi`, `vpn` (`bus::topics`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    Cable,
    Wifi,
    Vpn,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Cable => "cable",
            PathKind::Wifi => "wifi",
            PathKind::Vpn => "vpn",
        }
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for PathKind {
    type Err = String;

    fn from_str(word: &str) -> Result<Self, String> {
        [PathKind::Cable, PathKind::Wifi, PathKind::Vpn]
            .into_iter()
            .find(|kind| kind.as_str() == word)
            .ok_or_else(|| format!("{word:?} is not a path kind (cable, wifi or vpn)"))
    }
}

/// One way to reach a peer appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    pub kind: PathKind,
    pub interface: String,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hub {
    /// Public endpoints of the hub pair, primary first.
    pub endpoints: Vec<SocketAddr>,
    /// The hub's address inside the tunnels.
    pub tunnel_address: Ipv4Addr,
    /// This appliance's tunnel interface to the hub, whose health is watched (interface,
    /// handshake age, heartbeats to `tunnel_address` through it).
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub socket: PathBuf,
    pub max_line_bytes: usize,
    pub queue_depth: usize,
    pub metrics_listen: SocketAddr,
    /// Any process that can connect may publish any agent's topics (tests that play an
    /// agent); otherwise only that agent's program and fieldctl may.
    pub trust_any_publisher: bool,
}

/// Per-agent sections. Each agent's issue grows its own struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agents {
    pub uplink_monitor: UplinkMonitorConfig,
    pub cross_site_failover: CrossSiteFailoverConfig,
    pub whereami: WhereamiConfig,
    pub dhcp_takeover: DhcpTakeoverConfig,
    pub imds_endpoint: ImdsEndpointConfig,
    pub inventory: InventoryConfig,
}

/// `[uplink_monitor]`. Times are in milliseconds in the file, `Duration` here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkMonitorConfig {
    pub common: AgentCommon,
    /// What is probed over every uplink; an uplink is dead only when all stop answering.
    pub targets: Vec<ProbeTarget>,
    /// Probe interval per target on every uplink that is not a metered standby.
    pub probe_interval: Duration,
    /// Probe interval per target on a metered uplink while it is not active.
    pub standby_interval: Duration,
    /// Silence from every target before an uplink is declared dead (grown for slow links).
    pub dead_after: Duration,
    /// How long another uplink must stay better by `margin_percent` before traffic moves.
    pub hold: Duration,
    pub margin_percent: u32,
    /// How long a recovered uplink must stay up before traffic returns to it.
    pub failback_after: Duration,
    pub dampening_half_life: Duration,
    /// Flap penalty above which an uplink is not used; each flap adds 1000.
    pub dampening_suppress: u32,
    /// Penalty below which a suppressed uplink may be used again.
    pub dampening_reuse: u32,
    /// Uplink i (0-based, in file order) gets routing table `route_table_base + i`.
    pub route_table_base: u32,
    /// Uplink i's probes carry firewall mark `fwmark_base + i`.
    pub fwmark_base: u32,
    /// Masquerade traffic leaving through each local uplink (the 4G routers know only their LAN).
    pub masquerade: bool,
    /// The slower check for captive "link up, no internet" states, if configured.
    pub http_check: Option<HttpCheck>,
    /// The optional active throughput test (off unless a URL is configured).
    pub throughput_test: Option<ThroughputTest>,
}

/// A download through every uplink now and then, to measure what it can carry; an uplink
/// measured below `min_kbps` scores worse in proportion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughputTest {
    pub address: SocketAddr,
    pub host: String,
    pub path: String,
    pub interval: Duration,
    pub min_kbps: u32,
}

/// An HTTP GET through every uplink that must answer with a known status; a captive portal
/// (or a router's "no service" page) answers something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Where to connect: an IPv4 address, so the check needs no DNS over a particular uplink.
    pub address: SocketAddr,
    /// The `Host` header and path of the request.
    pub host: String,
    pub path: String,
    pub interval: Duration,
    /// The status that means "the internet is really there", e.g. 204.
    pub expect: u16,
}

/// `[whereami]`: the area's DNS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhereamiConfig {
    pub common: AgentCommon,
    /// UDP and TCP port on every LAN gateway address.
    pub port: u16,
    /// Resolvers everything outside the site zone is forwarded to, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the answers whereami makes itself (whereami, local names).
    pub local_ttl: Duration,
    /// Forwarded answers kept.
    pub cache_size: u64,
    /// How long to wait for the upstreams before answering from a stale cache entry.
    pub upstream_timeout: Duration,
    /// How long after expiry a cached answer may still be served while no upstream answers.
    pub serve_stale: Duration,
    /// Local names under the site zone, besides the appliances.
    pub hosts: Vec<Host>,
}

/// A local name: `<name>.<site domain>` → address.
/// `[dhcp_takeover]`, validated: every address here lies inside a configured network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpTakeoverConfig {
    pub common: AgentCommon,
    /// Directory of the lease log.
    pub store: PathBuf,
    /// How long to wait for an answer when checking that a free address is unused; `None` when
    /// the check is off.
    pub conflict_probe: Option<Duration>,
    /// How long an offered address is kept for the client it was offered to.
    pub offer_hold: Duration,
    /// TCP port of the peer API, on every peer path address.
    pub peer_port: u16,
    /// Offers outstanding at once per network; `None`: half the pool (at least 16); `Some(0)`:
    /// no limit.
    pub max_offers: Option<u32>,
    /// New clients per network at once and per minute; `None`: half the pool (at least 16);
    /// `Some(0)`: no limit.
    pub new_clients_per_minute: Option<u32>,
    /// Options every client gets, unless its class says otherwise.
    pub options: DhcpOptionSet,
    pub pools: Vec<DhcpPool>,
    pub reservations: Vec<DhcpReservation>,
    pub classes: Vec<DeviceClass>,
}

/// Client options; in a class, `None` means "as site-wide".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DhcpOptionSet {
    pub lease_time: Option<Duration>,
    pub ntp_servers: Option<Vec<Ipv4Addr>>,
    pub mtu: Option<u16>,
    pub routes: Option<Vec<StaticRoute>>,
}

/// A classless static route (option 121); `via: None` is the network's own gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub destination: Ipv4Net,
    pub via: Option<Ipv4Addr>,
}

/// An inclusive address range on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPool {
    pub network: String,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl DhcpPool {
    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &DhcpPool) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReservation {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub network: String,
    pub hostname: Option<String>,
    /// The device's class, over what its MAC prefix says.
    pub class: Option<String>,
}

impl DhcpTakeoverConfig {
    /// The class of the device with `mac`: its reservation's, else the class with the longest
    /// matching MAC prefix.
    pub fn class_of(&self, mac: [u8; 6]) -> Option<&str> {
        if let Some(class) = self
            .reservations
            .iter()
            .find(|reservation| reservation.mac == mac)
            .and_then(|reservation| reservation.class.as_deref())
        {
            return Some(class);
        }
        self.classes
            .iter()
            .flat_map(|class| class.mac_prefixes.iter().map(move |p| (p, class)))
            .filter(|(prefix, _)| mac.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, class)| class.name.as_str())
    }
}

/// `[inventory]`: how devices are found and when one counts as gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryConfig {
    pub common: AgentCommon,
    /// Where Prometheus HTTP service discovery (`/sd/<job>`) and the device list are served.
    pub sd_listen: SocketAddr,
    /// The device list kept across restarts (written by atomic rename).
    pub state: PathBuf,
    pub sweep_interval: Duration,
    /// Frames a second, all sweeps and probes together.
    pub sweep_rate: u32,
    /// Requests to a silent host in one sweep before it counts as a miss.
    pub sweep_attempts: u32,
    /// How long a sweep round waits for late replies before trying the silent hosts again.
    pub reply_wait: Duration,
    /// How often every present device's exporter ports are tried.
    pub probe_interval: Duration,
    /// Silence (no lease renewal, no neighbour confirmation, no answer) after which a device
    /// is gone.
    pub gone_after: Duration,
    /// How long a gone device stays listed (as gone) before it is forgotten.
    pub forget_after: Duration,
    /// The vendor table (`XXXXXX<tab>vendor` lines); `None`: the first of [`OUI_FILES`] there.
    pub oui_file: Option<PathBuf>,
    /// Ranges behind a router, swept by ICMP (their devices' MACs are not seen here).
    pub routed: Vec<Ipv4Net>,
    pub exporters: Vec<Exporter>,
}

/// `[[inventory.exporters]]`, validated: a job of HTTP service discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporter {
    pub job: String,
    pub port: u16,
}

/// `[imds_endpoint]`: the EC2 metadata endpoint the area's devices get credentials from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsEndpointConfig {
    pub common: AgentCommon,
    /// TCP port on [`IMDS_ADDRESS`].
    pub port: u16,
    /// IP TTL of the token PUT's answer: 1 keeps it from crossing a router.
    pub hop_limit: u8,
    pub aws_region: String,
    /// One endpoint URL for STS (a test server such as moto); `None` means AWS.
    pub aws_endpoint: Option<String>,
    /// The sessions kept across restarts (0600, written atomically).
    pub cache: PathBuf,
    /// Length of each device's own session.
    pub session_duration: Duration,
    /// Devices are always handed credentials valid at least this long, while any are.
    pub min_validity: Duration,
    /// Below this much validity nothing is handed out (a non-`Success` answer instead).
    pub refuse_below: Duration,
    /// Live IMDSv2 tokens one client may hold; the oldest goes first.
    pub tokens_per_client: usize,
    /// Requests one client may make per second (twice that in a burst).
    pub requests_per_second: u32,
    /// The role of each device class that gets credentials; a device in no listed class gets
    /// none.
    pub roles: Vec<ImdsRole>,
}

impl ImdsEndpointConfig {
    pub fn role_of(&self, class: &str) -> Option<&ImdsRole> {
        self.roles.iter().find(|role| role.class == class)
    }
}

/// `[[imds_endpoint.roles]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsRole {
    pub class: String,
    /// `arn:aws:iam::<account>:role/<path/><name>`.
    pub role_arn: String,
    /// Requests without an IMDSv2 token are answered for this class.
    pub imdsv1: bool,
    /// Length of the class's reserve session (the role's `MaxSessionDuration`).
    pub reserve_duration: Duration,
}

impl ImdsRole {
    /// The role's name: the ARN's last path segment.
    pub fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap_or(&self.role_arn)
    }

    /// The 12-digit account of the ARN.
    pub fn account_id(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }
}

/// Devices whose MAC starts with one of `mac_prefixes`: they get addresses from `ranges` (on
/// the networks those lie in) and `options` over the site-wide ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceClass {
    pub name: String,
    pub mac_prefixes: Vec<Vec<u8>>,
    pub ranges: Vec<DhcpPool>,
    pub options: DhcpOptionSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub address: std::net::IpAddr,
}

/// `[cross_site_failover]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSiteFailoverConfig {
    pub common: AgentCommon,
    /// UDP port heartbeats are sent to and received on, on every path address.
    pub heartbeat_port: u16,
    pub heartbeat_interval: Duration,
    /// Heartbeats missed before a path is down.
    pub detect_multiplier: u8,
    /// How long a more preferred path must stay up before routes return to it.
    pub failback_hold: Duration,
    /// `Some` on a hub of the AWS hub pair (`mode = "hub"`), `None` on an appliance.
    pub hub: Option<HubMode>,
}

/// The role of a hub in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubRole {
    /// Normally carries the site: the VPC routes point at it.
    Primary,
    /// Takes the VPC routes when the primary is dead, and gives them back.
    Standby,
}

/// `[cross_site_failover.hub]`: the hub pair and its AWS side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubMode {
    pub role: HubRole,
    /// The interface and own address the partner hub is watched over.
    pub interface: String,
    pub local: Ipv4Addr,
    pub partner: Ipv4Addr,
    /// How long the partner must be dead before the standby takes the VPC routes.
    pub takeover_after: Duration,
    /// How long a returned primary must stay alive before the routes go back to it.
    pub giveback_hold: Duration,
    pub aws_region: String,
    /// One endpoint URL for every AWS service (a test server such as moto); `None` means AWS.
    pub aws_endpoint: Option<String>,
    /// VPC route tables whose site-network routes follow the live hub.
    pub route_tables: Vec<String>,
    pub instance_id: String,
    pub partner_instance_id: String,
    /// Route53 health checks used as on/off switches (`Inverted`) for each hub's endpoint.
    pub partner_health_check: Option<String>,
    pub own_health_check: Option<String>,
    pub cloudwatch_namespace: String,
    pub cloudwatch_interval: Duration,
    /// How often the AWS state is read back and corrected even without a change.
    pub reconcile_interval: Duration,
}

/// One probe target: an address answered with ICMP echo, or an `address:port` answered over
/// UDP (a DNS-shaped query; DNS servers and UDP echo services both answer it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeTarget {
    Icmp(Ipv4Addr),
    Udp(std::net::SocketAddrV4),
}

impl ProbeTarget {
    pub fn address(&self) -> Ipv4Addr {
        match self {
            ProbeTarget::Icmp(address) => *address,
            ProbeTarget::Udp(socket) => *socket.ip(),
        }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeTarget::Icmp(address) => write!(f, "icmp {address}"),
            ProbeTarget::Udp(socket) => write!(f, "udp {socket}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommon {
    pub enabled: bool,
    pub metrics_listen: SocketAddr,
}

/// One thing wrong with a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Everything wrong with a config file. Displays one `file:line: key: message` per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, problem.line, problem.key, problem.message
            )?;
        }
        Ok(())
    }
}

/// Why a file could not even be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Select(#[from] SelectError),
}

/// Reads the site file at `path` and finds this machine in it: by `given` (`--appliance` or
/// [`APPLIANCE_ENV`]) when set, else by the host name. Returns the machine's view and a line
/// saying which entry it is and how it was found.
pub fn load_view(path: &Path, given: Option<&str>) -> Result<(Config, String), LoadError> {
    let (machine, chosen) = load_machine(path, given)?;
    Ok((machine.config, chosen))
}

/// [`load_view`], with the machine's role (appliance or hub) too.
pub fn load_machine(path: &Path, given: Option<&str>) -> Result<(Machine, String), LoadError> {
    let site = SiteConfig::load(path)?;
    let host_name = select::host_name();
    let chosen = site.select(given, host_name.as_deref())?;
    Ok((chosen.machine.clone(), chosen.describe()))
}

impl SiteConfig {
    /// Parses and validates site file text; `file` only names it in errors.
    pub fn from_str(text: &str, file: &str) -> Result<SiteConfig, ConfigError> {
        validate::parse(text, file)
    }

    /// Reads, parses and validates the site file at `path`.
    pub fn load(path: &Path) -> Result<SiteConfig, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_str(&text, &path.display().to_string())?)
    }

    /// The appliances, in file order.
    pub fn appliances(&self) -> impl Iterator<Item = &Machine> {
        self.machines
            .iter()
            .filter(|machine| machine.role == MachineRole::Appliance)
    }

    /// The hubs, in file order.
    pub fn hubs(&self) -> impl Iterator<Item = &Machine> {
        self.machines
            .iter()
            .filter(|machine| matches!(machine.role, MachineRole::Hub(_)))
    }

    /// The view of the machine named `name_or_id` (its name, host name or id), as
    /// [`select`](Self::select) finds it.
    pub fn view(&self, name_or_id: &str) -> Result<&Config, SelectError> {
        self.select(Some(name_or_id), None)
            .map(|chosen| &chosen.machine.config)
    }
}

impl Config {
    /// The area network this appliance serves in normal operation.
    pub fn own_networks(&self) -> impl Iterator<Item = &Network> {
        self.networks
            .iter()
            .filter(|network| network.area == self.appliance.area)
    }

    /// The networks normally served by appliance `id`.
    pub fn networks_of(&self, id: u8) -> impl Iterator<Item = &Network> {
        let areas: Vec<&str> = self
            .areas
            .iter()
            .filter(|area| area.appliance == id)
            .map(|area| area.name.as_str())
            .collect();
        self.networks
            .iter()
            .filter(move |network| areas.contains(&network.area.as_str()))
    }
}

#[cfg(test)]
mod tests;
