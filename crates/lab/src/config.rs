//! The site file of a lab site, written the way an operator would write it: one file for every
//! appliance and hub, each started from it with `--appliance <name>`, so tests, benches and the
//! demo run the agents on exactly the topology the lab built and exercise the format everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::site::{INTERNET_HOSTS, PathKind, Site};

/// The name of area `id`'s appliance in a lab site file.
pub fn appliance_name(id: u8) -> String {
    format!("appliance-{id}")
}

/// The bus socket of appliance `id` (each appliance has its own: they share the filesystem).
pub fn bus_socket(dir: &Path, id: u8) -> PathBuf {
    dir.join(format!("bus-{id}.sock"))
}

/// The lease store of appliance `id`'s dhcp-takeover.
pub fn lease_store(dir: &Path, id: u8) -> PathBuf {
    dir.join(format!("leases-{id}"))
}

/// The names of the hub pair in a lab site file, primary first.
pub const HUB_NAMES: [&str; 2] = ["hub-a", "hub-b"];

/// What a lab site file says about the hub pair's AWS side; the defaults name instances and no
/// route tables, for sites whose hubs run no agent.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub aws_region: String,
    pub route_tables: Vec<String>,
    /// Instance id of each hub, primary first.
    pub instance_ids: [String; 2],
    /// Route53 health check of each hub, primary first.
    pub health_checks: [Option<String>; 2],
    /// Each hub's AWS endpoint (a moto server, a proxy in front of it), primary first.
    pub aws_endpoints: [Option<String>; 2],
    /// More `[hub]` keys, as written (`takeover_after_ms = 1000`).
    pub keys: String,
}

impl Default for HubSettings {
    fn default() -> HubSettings {
        HubSettings {
            aws_region: "us-east-1".to_owned(),
            route_tables: Vec::new(),
            instance_ids: ["i-0a".to_owned(), "i-0b".to_owned()],
            health_checks: [None, None],
            aws_endpoints: [None, None],
            keys: String::new(),
        }
    }
}

/// A lab site's file, built up by a test: site-wide agent sections, keys for one network or one
/// appliance's agent section, the hubs' AWS side.
#[derive(Clone, Debug)]
pub struct SiteFile<'a> {
    site: &'a Site,
    dir: PathBuf,
    sections: String,
    networks: BTreeMap<u8, String>,
    overrides: BTreeMap<(u8, String), String>,
    hubs: HubSettings,
}

impl<'a> SiteFile<'a> {
    /// The file for `site`, whose appliances keep their bus sockets and lease stores in `dir`.
    pub fn new(site: &'a Site, dir: &Path) -> SiteFile<'a> {
        SiteFile {
            site,
            dir: dir.to_owned(),
            sections: String::new(),
            networks: BTreeMap::new(),
            overrides: BTreeMap::new(),
            hubs: HubSettings::default(),
        }
    }

    /// Site-wide agent sections, appended as written (`[whereami]\nupstreams = […]`). Without an
    /// `[uplink_monitor]` section, the file probes the lab's internet hosts.
    pub fn sections(mut self, text: &str) -> Self {
        self.sections.push_str(text);
        if !text.ends_with('\n') {
            self.sections.push('\n');
        }
        self
    }

    /// Keys and sub-tables of area `id`'s network, as written (`pools = [...]`,
    /// `[[networks.reservations]]` …).
    pub fn network(mut self, id: u8, text: &str) -> Self {
        self.networks.entry(id).or_default().push_str(text);
        self
    }

    /// Keys of appliance `id`'s own `[appliances.<section>]`, over the site-wide section.
    pub fn appliance(mut self, id: u8, section: &str, keys: &str) -> Self {
        let text = self.overrides.entry((id, section.to_owned())).or_default();
        text.push_str(keys);
        if !keys.ends_with('\n') {
            text.push('\n');
        }
        self
    }

    /// The hub pair's AWS side.
    pub fn hubs(mut self, hubs: HubSettings) -> Self {
        self.hubs = hubs;
        self
    }

    /// Writes the file as `<dir>/site.toml` and returns its path. The file is replaced whole
    /// (written beside it, then renamed), so an agent starting meanwhile never reads half of it.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("site.toml");
        let next = self.dir.join("site.toml.next");
        std::fs::write(&next, self.text())
            .and_then(|()| std::fs::rename(&next, &path))
            .map_err(|error| anyhow::anyhow!("writing {}: {error}", path.display()))?;
        Ok(path)
    }

    pub fn text(&self) -> String {
        let site = self.site;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# The lab's site file: every appliance and hub of this lab site.\n[site]\nname = \"lab\"\ndomain = \"lab.fieldnet.example\"\nkey = \"{}\"\n",
            "5a".repeat(32)
        );
        for area in &site.areas {
            let _ = writeln!(text, "[[areas]]\nname = \"area{}\"\n", area.id);
        }
        for area in &site.areas {
            let _ = writeln!(
                text,
                "[[networks]]\nname = \"NETWORK{0}\"\narea = \"area{0}\"\nsubnet = \"{1}\"\ngateway = \"{2}\"",
                area.id, area.network, area.gateway
            );
            if let Some(extra) = self.networks.get(&area.id) {
                text.push_str(extra);
            }
            text.push('\n');
        }
        for area in &site.areas {
            let _ = writeln!(
                text,
                "[[appliances]]\nid = {0}\nname = \"{1}\"\narea = \"area{0}\"",
                area.id,
                appliance_name(area.id)
            );
            // The own LAN, and a leg into each other area's LAN where the lab built one.
            let mut interfaces = vec![format!("NETWORK{} = \"{}\"", area.id, area.lan_if)];
            for leg in &area.legs {
                interfaces.push(format!("NETWORK{} = \"{}\"", leg.peer, leg.ifname));
            }
            let _ = writeln!(text, "interfaces = {{ {} }}", interfaces.join(", "));
            let uplinks: Vec<String> = area
                .uplinks
                .iter()
                .enumerate()
                .map(|(index, uplink)| {
                    format!(
                        "  {{ name = \"{}\", interface = \"{}\", gateway = \"{}\", preference = {} }},",
                        uplink.name,
                        uplink.appliance_if,
                        uplink.router_lan_addr,
                        10 * (index + 1)
                    )
                })
                .collect();
            let _ = writeln!(text, "uplinks = [\n{}\n]", uplinks.join("\n"));
            if let Some(vpn) = &area.vpn {
                let _ = writeln!(
                    text,
                    "tunnel_interface = \"{}\"\ntunnel_address = \"{}\"",
                    vpn.ifname, vpn.addr
                );
            }
            let mut own: BTreeMap<&str, String> = BTreeMap::new();
            own.insert(
                "bus",
                format!(
                    "socket = \"{}\"\n",
                    bus_socket(&self.dir, area.id).display()
                ),
            );
            own.insert(
                "dhcp_takeover",
                format!(
                    "store = \"{}\"\n",
                    lease_store(&self.dir, area.id).display()
                ),
            );
            for ((id, section), keys) in &self.overrides {
                if *id == area.id {
                    own.entry(section.as_str()).or_default().push_str(keys);
                }
            }
            for (section, keys) in own {
                let _ = writeln!(text, "\n[appliances.{section}]\n{keys}");
            }
            text.push('\n');
        }
        for (index, area) in site.areas.iter().enumerate() {
            for other in &site.areas[index + 1..] {
                for kind in [PathKind::Cable, PathKind::Wifi] {
                    let (Some(near), Some(far)) =
                        (area.path(kind, other.id), other.path(kind, area.id))
                    else {
                        continue;
                    };
                    let subnet = subnet_of(&near.addr);
                    let address = |addr: &str| addr.split('/').next().unwrap_or(addr).to_owned();
                    let _ = writeln!(
                        text,
                        "[[links]]\nkind = \"{}\"\nsubnet = \"{subnet}\"\nends = [\n  {{ appliance = \"{}\", interface = \"{}\", address = \"{}\" }},\n  {{ appliance = \"{}\", interface = \"{}\", address = \"{}\" }},\n]\n",
                        match kind {
                            PathKind::Cable => "cable",
                            PathKind::Wifi => "wifi",
                        },
                        appliance_name(area.id),
                        near.ifname,
                        address(&near.addr),
                        appliance_name(other.id),
                        far.ifname,
                        address(&far.addr),
                    );
                }
            }
        }
        if site.hub.is_some() {
            self.hub_text(&mut text);
        }
        text.push_str(&self.sections);
        if !self.sections.contains("[uplink_monitor]") {
            let targets: Vec<String> = INTERNET_HOSTS.iter().map(|h| format!("\"{h}\"")).collect();
            let _ = writeln!(
                text,
                "\n[uplink_monitor]\ntargets = [{}]",
                targets.join(", ")
            );
        }
        text
    }

    /// `[hub]` and the pair: hub-a (the lab's hub, with a tunnel to every appliance) and hub-b
    /// beside it on the internet, 203.0.113.11 (a test builds its namespace when it runs it).
    fn hub_text(&self, text: &mut String) {
        let hubs = &self.hubs;
        let tables: Vec<String> = hubs
            .route_tables
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect();
        let _ = writeln!(
            text,
            "[hub]\ntunnel_address = \"{}\"\naws_region = \"{}\"\nroute_tables = [{}]\n{}",
            self.site.hub_tunnel_addr,
            hubs.aws_region,
            tables.join(", "),
            hubs.keys
        );
        for (index, (name, role)) in HUB_NAMES.iter().zip(["primary", "standby"]).enumerate() {
            let address = format!("203.0.113.{}", 10 + index);
            let _ = writeln!(
                text,
                "[[hubs]]\nid = {}\nname = \"{name}\"\nrole = \"{role}\"\nendpoint = \"{address}:51820\"\nvpc_interface = \"eth0\"\nvpc_address = \"{address}\"\ninstance_id = \"{}\"",
                201 + index,
                hubs.instance_ids[index]
            );
            if let Some(check) = &hubs.health_checks[index] {
                let _ = writeln!(text, "health_check = \"{check}\"");
            }
            if let Some(endpoint) = &hubs.aws_endpoints[index] {
                let _ = writeln!(text, "aws_endpoint = \"{endpoint}\"");
            }
            if index == 0 {
                let tunnels: Vec<String> = self
                    .site
                    .areas
                    .iter()
                    .filter_map(|area| {
                        let vpn = area.vpn.as_ref()?;
                        Some(format!(
                            "\"{}\" = \"{}\"",
                            appliance_name(area.id),
                            vpn.hub_ifname
                        ))
                    })
                    .collect();
                let _ = writeln!(text, "tunnels = {{ {} }}", tunnels.join(", "));
            }
            let _ = writeln!(
                text,
                "\n[hubs.bus]\nsocket = \"{}\"\n",
                self.dir.join(format!("bus-{name}.sock")).display()
            );
        }
    }
}

/// `10.255.12.2/30` → `10.255.12.0/30`.
fn subnet_of(address: &str) -> String {
    let Some((ip, prefix)) = address.split_once('/') else {
        return address.to_owned();
    };
    let (Ok(ip), Ok(prefix)) = (ip.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>()) else {
        return address.to_owned();
    };
    let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
    format!(
        "{}/{prefix}",
        std::net::Ipv4Addr::from(u32::from(ip) & mask)
    )
}

/// The path of another workspace binary next to `own_binary` (a test's
/// `env!("CARGO_BIN_EXE_…")`), built with `cargo build -p package` first if it is not there.
pub fn sibling_binary(own_binary: &str, package: &str, binary: &str) -> String {
    let path = Path::new(own_binary).with_file_name(binary);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", package, "--bin", binary])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {binary}");
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_subnets_are_the_pair_addresses_network() {
        assert_eq!(subnet_of("10.255.12.2/30"), "10.255.12.0/30");
        assert_eq!(subnet_of("10.254.23.1/30"), "10.254.23.0/30");
    }
}
