//! The site's structure, checked once: areas and the appliance serving each, appliances and
//! hubs (ids, names, host names), networks with their pools, links with both ends, uplinks
//! local and remote, tunnels and the hub pair. Then each machine's view: the site as that
//! machine's agents see it, with its own overrides of the agent sections.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use super::super::wire::*;
use super::super::*;
use super::Checker;
use super::values::{is_dns_name, is_host, list};

mod hub;
mod links;
mod views;

/// The networks' DHCP pools and reservations, checked once for the whole site.
#[derive(Debug, Default)]
pub(in crate::config) struct NetworkDhcp {
    pub pools: Vec<DhcpPool>,
    pub reservations: Vec<DhcpReservation>,
    /// Each reservation's `class` and where it is written, checked once the classes are known.
    pub reservation_classes: Vec<(KeyPath, String)>,
}

/// One machine's agent sections: the site-wide ones with its overrides laid over them.
pub(super) struct Sections {
    pub bus: WireBus,
    pub uplink_monitor: WireUplinkMonitor,
    pub cross_site_failover: WireCrossSiteFailover,
    pub whereami: WireWhereami,
    pub dhcp_takeover: WireDhcpTakeover,
    pub imds_endpoint: WireImdsEndpoint,
    pub inventory: WireInventory,
}

/// An appliance or hub entry whose id and name are valid.
struct Entry<'w> {
    /// `appliances[i]` or `hubs[i]`.
    path: KeyPath,
    /// `"appliances"` or `"hubs"`, and the index in it.
    list: &'static str,
    index: usize,
    id: u8,
    name: String,
    hostname: Option<String>,
    kind: Kind<'w>,
}

enum Kind<'w> {
    Appliance(&'w WireAppliance),
    Hub(&'w WireHubMachine),
}

/// A network, and the interface appliances carry it on unless they say otherwise.
struct SiteNetwork {
    network: Network,
    interface: Option<String>,
    path: KeyPath,
}

struct LinkEnd {
    appliance: u8,
    interface: String,
    address: Ipv4Addr,
}

struct SiteLink {
    kind: PathKind,
    ends: [LinkEnd; 2],
}

/// What an appliance's own keys say, checked.
#[derive(Default)]
struct ApplianceParts {
    area: String,
    /// Network name → interface, for every network this appliance carries.
    interfaces: BTreeMap<String, String>,
    uplinks: Vec<Uplink>,
    remote: Vec<Uplink>,
    /// Its WireGuard interface and address inside the tunnels.
    tunnel: Option<(String, Ipv4Addr)>,
}

/// `[hub]`, checked.
struct SiteHub {
    tunnel_address: Ipv4Addr,
    aws_region: String,
    aws_endpoint: Option<String>,
    route_tables: Vec<String>,
    takeover_after: Duration,
    giveback_hold: Duration,
    cloudwatch_namespace: String,
    cloudwatch_interval: Duration,
    reconcile_interval: Duration,
}

/// One `[[hubs]]` entry's own keys, checked.
struct HubParts {
    role: HubRole,
    endpoint: SocketAddr,
    vpc_interface: String,
    vpc_address: Ipv4Addr,
    instance_id: String,
    health_check: Option<String>,
    aws_endpoint: Option<String>,
    /// Appliance id → this hub's tunnel interface to it.
    tunnels: Vec<(u8, String)>,
}

impl Checker {
    /// The whole site: its structure, then every machine's view (appliances first, then hubs,
    /// each in file order). `None` when anything is wrong; the problems say what.
    pub(super) fn site(&mut self, wire: &WireSiteFile, raw: &toml::Table) -> Option<Vec<Machine>> {
        let root = KeyPath::root();
        let site = self.site_section(&wire.site, &root.key("site"));
        let area_names = self.area_names(&wire.areas);
        let entries = self.entries(wire, &area_names);
        let (networks, dhcp) = self.site_networks(&wire.networks, &area_names);
        let areas = self.areas_served(&wire.areas, &area_names, &entries);
        let mut parts: BTreeMap<u8, ApplianceParts> = BTreeMap::new();
        for entry in &entries {
            if let Kind::Appliance(appliance) = entry.kind {
                let own = self.appliance_parts(entry, appliance, &area_names, &networks);
                parts.insert(entry.id, own);
            }
        }
        self.remote_uplinks(&entries, &mut parts);
        let links = self.links(&wire.links, &entries, &networks);
        let (hub, hubs) = self.hub_pair(wire, &entries, &parts, &networks);
        self.interfaces_used_once(&entries, &networks, &parts, wire);

        let site = site?;
        let mut machines = Vec::new();
        let mut complete = true;
        for entry in &entries {
            let machine = match entry.kind {
                Kind::Appliance(_) => self.appliance_view(
                    entry,
                    raw,
                    &site,
                    &areas,
                    &networks,
                    &dhcp,
                    &entries,
                    &parts,
                    &links,
                    hub.as_ref(),
                    &hubs,
                ),
                Kind::Hub(_) => self.hub_view(
                    entry,
                    raw,
                    &site,
                    &areas,
                    &networks,
                    &dhcp,
                    &entries,
                    &parts,
                    hub.as_ref(),
                    &hubs,
                ),
            };
            match machine {
                Some(machine) => machines.push(machine),
                None => complete = false,
            }
        }
        complete.then_some(machines)
    }

    fn area_names(&mut self, wire: &[WireArea]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (index, area) in wire.iter().enumerate() {
            let path = KeyPath::root().key("areas").index(index);
            if let Some(name) = self.name(&area.name, &path.key("name")) {
                if names.contains(&name) {
                    self.problem(path.key("name"), format!("area '{name}' is defined twice"));
                } else {
                    names.push(name);
                }
            }
        }
        if wire.is_empty() {
            self.problem(
                KeyPath::root().key("areas"),
                "a site needs at least one area: [[areas]] name = \"north\"",
            );
        }
        names
    }

    /// Appliances, then hubs, with valid and unique ids, names and host names.
    fn entries<'w>(&mut self, wire: &'w WireSiteFile, areas: &[String]) -> Vec<Entry<'w>> {
        let mut entries: Vec<Entry<'w>> = Vec::new();
        let listed = wire
            .appliances
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let kind = Kind::Appliance(a);
                ("appliances", index, a.id, &a.name, &a.hostname, kind)
            })
            .chain(wire.hubs.iter().enumerate().map(|(index, h)| {
                let kind = Kind::Hub(h);
                ("hubs", index, h.id, &h.name, &h.hostname, kind)
            }));
        for (list_name, index, id, name, hostname, kind) in listed {
            let path = KeyPath::root().key(list_name).index(index);
            let id = self.appliance_id(id, &path.key("id"));
            let mut name = self.name(name, &path.key("name"));
            let mut hostname = match hostname {
                Some(host) => self.host_name(host, &path.key("hostname")),
                None => None,
            };
            // `--appliance 2` means id 2: a name of digits alone could be someone else's id.
            for (key, word) in [("name", &mut name), ("hostname", &mut hostname)] {
                if let Some(digits) = word.take_if(|w| w.bytes().all(|b| b.is_ascii_digit())) {
                    self.problem(
                        path.key(key),
                        format!("'{digits}' would be read as an id by --appliance; give it a letter, e.g. 'a{digits}'"),
                    );
                }
            }
            if let Some(id) = id
                && let Some(other) = entries.iter().find(|e| e.id == id)
            {
                self.problem(
                    path.key("id"),
                    format!(
                        "id {id} is already {}'s; every appliance and hub needs its own id",
                        other.name
                    ),
                );
                continue;
            }
            // A machine finds itself by name or host name: no two entries may answer to one.
            let taken = |word: &String| {
                entries
                    .iter()
                    .any(|e| &e.name == word || e.hostname.as_ref() == Some(word))
            };
            let clash = [("name", &name), ("hostname", &hostname)]
                .into_iter()
                .find_map(|(key, word)| word.as_ref().filter(|w| taken(w)).map(|w| (key, w)));
            if let Some((key, word)) = clash {
                self.problem(
                    path.key(key),
                    format!("'{word}' is already the name or host name of another entry"),
                );
                continue;
            }
            if let (Some(id), Some(name)) = (id, name) {
                entries.push(Entry {
                    path,
                    list: list_name,
                    index,
                    id,
                    name,
                    hostname,
                    kind,
                });
            }
        }
        if wire.appliances.is_empty() {
            self.problem(
                KeyPath::root().key("appliances"),
                format!(
                    "a site needs an appliance for each area ({}): [[appliances]] id = 1, name = \"…\", area = \"…\"",
                    list(areas.iter())
                ),
            );
        }
        entries
    }

    /// Each area with the appliance serving it; every area needs exactly one.
    fn areas_served(
        &mut self,
        wire: &[WireArea],
        names: &[String],
        entries: &[Entry<'_>],
    ) -> Vec<Area> {
        let mut areas = Vec::new();
        for name in names {
            let serving: Vec<&Entry<'_>> = entries
                .iter()
                .filter(|e| matches!(e.kind, Kind::Appliance(a) if &a.area == name))
                .collect();
            let index = wire.iter().position(|a| &a.name == name).unwrap_or(0);
            match serving.as_slice() {
                [one] => areas.push(Area {
                    name: name.clone(),
                    appliance: one.id,
                }),
                [] => self.problem(
                    KeyPath::root().key("areas").index(index).key("name"),
                    format!("no appliance serves area '{name}'; give one `area = \"{name}\"`"),
                ),
                [first, more @ ..] => {
                    for other in more {
                        self.problem(
                            other.path.key("area"),
                            format!(
                                "area '{name}' is already served by appliance '{}' (id {}); an area has one appliance",
                                first.name, first.id
                            ),
                        );
                    }
                    areas.push(Area {
                        name: name.clone(),
                        appliance: first.id,
                    });
                }
            }
        }
        areas
    }

    fn site_networks(
        &mut self,
        wire: &[WireNetwork],
        areas: &[String],
    ) -> (Vec<SiteNetwork>, NetworkDhcp) {
        let mut networks: Vec<SiteNetwork> = Vec::new();
        let mut dhcp = NetworkDhcp::default();
        for (index, network) in wire.iter().enumerate() {
            let path = KeyPath::root().key("networks").index(index);
            let name = self.name(&network.name, &path.key("name"));
            let area = if areas.contains(&network.area) {
                Some(network.area.clone())
            } else {
                self.problem(
                    path.key("area"),
                    format!(
                        "area '{}' is not defined; defined areas: {}",
                        network.area,
                        list(areas.iter())
                    ),
                );
                None
            };
            let subnet = self.subnet(&network.subnet, &path.key("subnet"), "10.101.0.0/24");
            let gateway = self.ipv4(&network.gateway, &path.key("gateway"));
            if let (Some(subnet), Some(gateway)) = (subnet, gateway)
                && !is_host(subnet, gateway)
            {
                self.problem(
                    path.key("gateway"),
                    format!(
                        "{gateway} is not a host address of {subnet}; use one between {} and {}",
                        subnet.hosts().next().expect("prefix ≤ 30 has hosts"),
                        subnet.hosts().last().expect("prefix ≤ 30 has hosts"),
                    ),
                );
            }
            if let Some(subnet) = subnet {
                for other in &networks {
                    if overlap(other.network.subnet, subnet) {
                        self.problem(
                            path.key("subnet"),
                            format!(
                                "{subnet} overlaps network '{}' ({})",
                                other.network.name, other.network.subnet
                            ),
                        );
                    }
                }
            }
            let interface = match &network.interface {
                Some(interface) => self.interface(interface, &path.key("interface")),
                None => None,
            };
            let vlan = match network.vlan {
                None => None,
                Some(vlan @ 1..=4094) => Some(vlan as u16),
                Some(other) => {
                    self.problem(
                        path.key("vlan"),
                        format!("{other} is not a VLAN id; valid: 1 to 4094"),
                    );
                    None
                }
            };
            let (Some(name), Some(area), Some(subnet), Some(gateway)) =
                (name, area, subnet, gateway)
            else {
                continue;
            };
            if networks.iter().any(|n| n.network.name == name) {
                self.problem(
                    path.key("name"),
                    format!("network '{name}' is defined twice"),
                );
                continue;
            }
            let validated = Network {
                name,
                area,
                subnet,
                gateway,
                interface: None,
                vlan,
            };
            self.network_dhcp(network, &validated, &path, &mut dhcp);
            networks.push(SiteNetwork {
                network: validated,
                interface,
                path,
            });
        }
        (networks, dhcp)
    }

    /// An appliance's area, interfaces, own uplinks and tunnel.
    fn appliance_parts(
        &mut self,
        entry: &Entry<'_>,
        wire: &WireAppliance,
        areas: &[String],
        networks: &[SiteNetwork],
    ) -> ApplianceParts {
        let path = &entry.path;
        let mut parts = ApplianceParts::default();
        if areas.contains(&wire.area) {
            parts.area = wire.area.clone();
        } else {
            self.problem(
                path.key("area"),
                format!(
                    "area '{}' is not defined; defined areas: {}",
                    wire.area,
                    list(areas.iter())
                ),
            );
        }
        for (network, interface) in &wire.interfaces {
            let key = path.key("interfaces").key(network);
            if !networks.iter().any(|n| &n.network.name == network) {
                self.problem(
                    key,
                    format!(
                        "network '{network}' is not defined; defined networks: {}",
                        list(networks.iter().map(|n| n.network.name.as_str()))
                    ),
                );
            } else if let Some(interface) = self.interface(interface, &key) {
                parts.interfaces.insert(network.clone(), interface);
            }
        }
        for network in networks {
            if let Some(default) = &network.interface {
                parts
                    .interfaces
                    .entry(network.network.name.clone())
                    .or_insert_with(|| default.clone());
            }
            if network.network.area == parts.area
                && !parts.interfaces.contains_key(&network.network.name)
            {
                self.problem(
                    path.key("interfaces"),
                    format!(
                        "appliance '{}' serves {}, but no interface carries it here: set `interface` on the network or `interfaces = {{ {} = \"lan0\" }}` here",
                        entry.name, network.network.name, network.network.name
                    ),
                );
            }
        }
        for (index, uplink) in wire.uplinks.iter().enumerate() {
            let key = path.key("uplinks").index(index);
            let name = self.name(&uplink.name, &key.key("name"));
            let interface = self.interface(&uplink.interface, &key.key("interface"));
            let gateway = self.ipv4(&uplink.gateway, &key.key("gateway"));
            let preference = self.preference(uplink.preference, &key.key("preference"));
            if let (Some(name), Some(interface), Some(gateway), Some(preference)) =
                (name, interface, gateway, preference)
            {
                parts.uplinks.push(Uplink {
                    name,
                    kind: UplinkKind::Local { interface, gateway },
                    preference: preference.unwrap_or(DEFAULT_UPLINK_PREFERENCE),
                    metered: uplink.metered.unwrap_or(false),
                });
            }
        }
        parts.tunnel = match (&wire.tunnel_interface, &wire.tunnel_address) {
            (None, None) => None,
            (Some(interface), Some(address)) => {
                let interface = self.interface(interface, &path.key("tunnel_interface"));
                let address = self.ipv4(address, &path.key("tunnel_address"));
                interface.zip(address)
            }
            (Some(_), None) => {
                self.problem(
                    path.key("tunnel_interface"),
                    "needs tunnel_address too (this appliance's address inside the tunnels, e.g. 10.253.0.1)",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    path.key("tunnel_address"),
                    "needs tunnel_interface too (the WireGuard interface to the hubs, e.g. wg-hub)",
                );
                None
            }
        };
        parts
    }

    /// An uplink preference, 0 (most preferred) to 1000; `Some(None)` when left out.
    fn preference(&mut self, value: Option<i64>, path: &KeyPath) -> Option<Option<u32>> {
        match value {
            None => Some(None),
            Some(value @ 0..=1000) => Some(Some(value as u32)),
            Some(other) => {
                self.problem(
                    path.clone(),
                    format!("{other} is out of range; valid: 0 (most preferred) to 1000"),
                );
                None
            }
        }
    }

    /// A subnet written without host bits and short enough to hold hosts.
    fn subnet(&mut self, value: &str, path: &KeyPath, example: &str) -> Option<Ipv4Net> {
        match value.parse::<Ipv4Net>() {
            Ok(subnet) if subnet != subnet.trunc() => {
                self.problem(
                    path.clone(),
                    format!(
                        "'{value}' has host bits set; did you mean '{}'?",
                        subnet.trunc()
                    ),
                );
                None
            }
            Ok(subnet) if subnet.prefix_len() > 30 => {
                self.problem(
                    path.clone(),
                    "prefix is too long to hold two hosts; use /30 or shorter",
                );
                None
            }
            Ok(subnet) => Some(subnet),
            Err(_) => {
                self.problem(
                    path.clone(),
                    format!("'{value}' is not an IPv4 subnet; write it like {example}"),
                );
                None
            }
        }
    }

    /// A host name: DNS labels separated by dots.
    fn host_name(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        if is_dns_name(value) {
            Some(value.to_ascii_lowercase())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a host name such as north-1 or north-1.site.example"),
            );
            None
        }
    }
}

/// Whether two subnets share an address.
fn overlap(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
