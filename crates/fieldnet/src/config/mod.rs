//! The appliance configuration: one TOML file read by every agent.
//!
//! Two layers: [`wire`] mirrors the TOML, [`Config`] is what agents use, built only through
//! validation. [`Config::from_str`] is pure; [`Config::load`] adds the file. Every error names
//! the file, the line and the key, and says what would be valid.

mod spans;
mod validate;
mod wire;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

pub use spans::KeyPath;

/// Where agents look for the file when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/fieldnet/fieldnet.toml";
/// Default bus socket.
pub const DEFAULT_BUS_SOCKET: &str = "/run/fieldnet/bus.sock";
/// Longest bus line the broker accepts, in bytes; longer lines get an error and a disconnect.
pub const DEFAULT_BUS_MAX_LINE_BYTES: usize = 64 * 1024;
/// Messages queued per subscriber before it is told it lagged.
pub const DEFAULT_BUS_QUEUE_DEPTH: usize = 4096;
/// Preference of an uplink that does not set one; lower is preferred.
pub const DEFAULT_UPLINK_PREFERENCE: u32 = 100;
/// Shortest site key accepted, in bytes.
pub const MIN_SITE_KEY_BYTES: usize = 32;

/// The validated configuration of one appliance.
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
    /// The key bytes, reading the key file if the key lives in one.
    pub fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context as _;
        match self {
            SiteKey::Inline(bytes) => Ok(bytes.clone()),
            SiteKey::File(path) => {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub socket: PathBuf,
    pub max_line_bytes: usize,
    pub queue_depth: usize,
    pub metrics_listen: SocketAddr,
}

/// Per-agent sections. Each agent's issue grows its own struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agents {
    pub uplink_monitor: AgentCommon,
    pub cross_site_failover: AgentCommon,
    pub whereami: AgentCommon,
    pub dhcp_takeover: AgentCommon,
    pub imds_endpoint: AgentCommon,
    pub inventory: AgentCommon,
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
}

impl Config {
    /// Parses and validates config text; `file` only names it in errors.
    pub fn from_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        validate::parse(text, file)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::from_str(&text, &path.display().to_string())?)
    }

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
