//! The site's structure, checked once: areas and the appliance serving each, appliances and
//! hubs (ids, names, host names), networks with their pools, links with both ends, uplinks
//! local and remote, tunnels and the hub pair. Then each machine's view: the site as that
//! machine's agents see it, with its own overrides of the agent sections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;

use super::super::wire::*;
use super::super::*;
use super::{Checker, Overrides, is_dns_name, is_host, list};

/// The networks' DHCP pools and reservations, checked once for the whole site.
#[derive(Debug, Default)]
pub(in crate::config) struct NetworkDhcp {
    pub pools: Vec<DhcpPool>,
    pub reservations: Vec<DhcpReservation>,
}

/// One machine's agent sections: the site-wide ones with its overrides laid over them.
pub(super) struct Sections {
    pub bus: WireBus,
    pub uplink_monitor: WireUplinkMonitor,
    pub cross_site_failover: WireCrossSiteFailover,
    pub whereami: WireWhereami,
    pub dhcp_takeover: WireDhcpTakeover,
    pub imds_endpoint: WireAgent,
    pub inventory: WireAgent,
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

    /// Every appliance's uplinks have site-wide unique names; its remote uplinks (named, or by
    /// default every other appliance's first) each name another appliance's uplink, one per
    /// appliance.
    fn remote_uplinks(&mut self, entries: &[Entry<'_>], parts: &mut BTreeMap<u8, ApplianceParts>) {
        let mut owner: BTreeMap<String, (u8, String)> = BTreeMap::new();
        for entry in entries {
            let Some(own) = parts.get(&entry.id) else {
                continue;
            };
            for (index, uplink) in own.uplinks.iter().enumerate() {
                if let Some((_, other)) = owner.get(&uplink.name) {
                    self.problem(
                        entry.path.key("uplinks").index(index).key("name"),
                        format!(
                            "uplink '{}' is already appliance '{other}''s; uplink names are the site's",
                            uplink.name
                        ),
                    );
                } else {
                    owner.insert(uplink.name.clone(), (entry.id, entry.name.clone()));
                }
            }
        }
        for entry in entries {
            let Kind::Appliance(wire) = entry.kind else {
                continue;
            };
            let preference = match self
                .preference(wire.remote_preference, &entry.path.key("remote_preference"))
            {
                Some(value) => value.unwrap_or(DEFAULT_REMOTE_UPLINK_PREFERENCE),
                None => continue,
            };
            let mut remote: Vec<Uplink> = Vec::new();
            match &wire.remote_uplinks {
                None => {
                    for other in entries.iter().filter(|e| e.id != entry.id) {
                        if let Some(first) = parts.get(&other.id).and_then(|p| p.uplinks.first()) {
                            remote.push(Uplink {
                                name: first.name.clone(),
                                kind: UplinkKind::Remote { peer: other.id },
                                preference,
                                metered: false,
                            });
                        }
                    }
                }
                Some(names) => {
                    for (index, name) in names.iter().enumerate() {
                        let key = entry.path.key("remote_uplinks").index(index);
                        match owner.get(name) {
                            None => self.problem(
                                key,
                                format!(
                                    "no appliance has an uplink '{name}'; uplinks: {}",
                                    list(owner.keys())
                                ),
                            ),
                            Some((id, _)) if *id == entry.id => self.problem(
                                key,
                                format!(
                                    "'{name}' is this appliance's own uplink; remote uplinks are other appliances'"
                                ),
                            ),
                            Some((id, owner_name)) => {
                                let peer = *id;
                                if let Some(same) = remote.iter().find(
                                    |u| matches!(u.kind, UplinkKind::Remote { peer: p } if p == peer),
                                ) {
                                    self.problem(
                                        key,
                                        format!(
                                            "'{name}' goes through appliance '{owner_name}' like '{}' before it: traffic through an appliance leaves by whichever of its uplinks is active, so name one per appliance",
                                            same.name
                                        ),
                                    );
                                } else {
                                    remote.push(Uplink {
                                        name: name.clone(),
                                        kind: UplinkKind::Remote { peer },
                                        preference,
                                        metered: false,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            if let Some(own) = parts.get_mut(&entry.id) {
                own.remote = remote;
            }
        }
    }

    fn links(
        &mut self,
        wire: &[WireLink],
        entries: &[Entry<'_>],
        networks: &[SiteNetwork],
    ) -> Vec<SiteLink> {
        let mut links: Vec<SiteLink> = Vec::new();
        let mut subnets: Vec<(Ipv4Net, usize)> = Vec::new();
        let appliances: Vec<&Entry<'_>> = entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::Appliance(_)))
            .collect();
        for (index, link) in wire.iter().enumerate() {
            let path = KeyPath::root().key("links").index(index);
            let kind = match link.kind.as_str() {
                "cable" => Some(PathKind::Cable),
                "wifi" => Some(PathKind::Wifi),
                "vpn" => {
                    self.problem(
                        path.key("kind"),
                        "the VPN is not a link: it comes from the appliances' tunnel_interface and tunnel_address; valid kinds: cable, wifi",
                    );
                    None
                }
                other => {
                    self.problem(
                        path.key("kind"),
                        format!("'{other}' is not a link kind; valid: cable, wifi"),
                    );
                    None
                }
            };
            let subnet = self.subnet(&link.subnet, &path.key("subnet"), "10.255.12.0/30");
            if let Some(subnet) = subnet {
                for network in networks {
                    if overlap(network.network.subnet, subnet) {
                        self.problem(
                            path.key("subnet"),
                            format!(
                                "{subnet} overlaps network '{}' ({})",
                                network.network.name, network.network.subnet
                            ),
                        );
                    }
                }
                if let Some((other, at)) = subnets.iter().find(|(s, _)| overlap(*s, subnet)) {
                    self.problem(
                        path.key("subnet"),
                        format!("{subnet} overlaps links[{at}]'s subnet {other}"),
                    );
                } else {
                    subnets.push((subnet, index));
                }
            }
            if link.ends.len() != 2 {
                self.problem(
                    path.key("ends"),
                    format!(
                        "a link has two ends, one per appliance; this one has {}",
                        link.ends.len()
                    ),
                );
                continue;
            }
            let mut ends = Vec::new();
            for (end_index, end) in link.ends.iter().enumerate() {
                let key = path.key("ends").index(end_index);
                let appliance = appliances.iter().find(|e| e.name == end.appliance);
                if appliance.is_none() {
                    self.problem(
                        key.key("appliance"),
                        format!(
                            "'{}' is not an appliance; appliances: {}",
                            end.appliance,
                            list(appliances.iter().map(|e| e.name.as_str()))
                        ),
                    );
                }
                let interface = self.interface(&end.interface, &key.key("interface"));
                let address = self.ipv4(&end.address, &key.key("address"));
                if let (Some(subnet), Some(address)) = (subnet, address)
                    && !is_host(subnet, address)
                {
                    self.problem(
                        key.key("address"),
                        format!(
                            "{address} is not a host address of the link's subnet {subnet}; use {} or {}",
                            subnet.hosts().next().expect("prefix ≤ 30 has hosts"),
                            subnet.hosts().nth(1).expect("prefix ≤ 30 has two hosts"),
                        ),
                    );
                }
                if let (Some(appliance), Some(interface), Some(address)) =
                    (appliance, interface, address)
                {
                    ends.push(LinkEnd {
                        appliance: appliance.id,
                        interface,
                        address,
                    });
                }
            }
            if let [a, b] = ends.as_slice() {
                if a.appliance == b.appliance {
                    self.problem(
                        path.key("ends").index(1).key("appliance"),
                        "both ends are on the same appliance; a link joins two appliances",
                    );
                    continue;
                }
                if a.address == b.address {
                    self.problem(
                        path.key("ends").index(1).key("address"),
                        "both ends have the same address",
                    );
                    continue;
                }
            }
            if let (Some(kind), Ok(ends)) = (kind, <[LinkEnd; 2]>::try_from(ends)) {
                links.push(SiteLink { kind, ends });
            }
        }
        links
    }

    /// `[hub]` and `[[hubs]]`: both or neither, and the pair complete.
    fn hub_pair(
        &mut self,
        wire: &WireSiteFile,
        entries: &[Entry<'_>],
        parts: &BTreeMap<u8, ApplianceParts>,
        networks: &[SiteNetwork],
    ) -> (Option<SiteHub>, BTreeMap<u8, HubParts>) {
        let mut hubs = BTreeMap::new();
        let root = KeyPath::root();
        let hub = match (&wire.hub, wire.hubs.is_empty()) {
            (None, true) => {
                for entry in entries {
                    if parts.get(&entry.id).is_some_and(|p| p.tunnel.is_some()) {
                        self.problem(
                            entry.path.key("tunnel_interface"),
                            "a tunnel needs the hubs it leads to: add [hub] and the [[hubs]] pair, or remove the tunnel keys",
                        );
                    }
                }
                return (None, hubs);
            }
            (None, false) => {
                self.problem(
                    root.key("hubs"),
                    "the hubs need a [hub] table: tunnel_address (the hubs' address inside the tunnels) and aws_region",
                );
                None
            }
            (Some(_), true) => {
                self.problem(
                    root.key("hub"),
                    "[hub] describes the hub pair, but there is no [[hubs]] entry: add the primary and the standby, or remove [hub]",
                );
                None
            }
            (Some(hub), false) => self.site_hub(hub),
        };
        for entry in entries {
            let Kind::Hub(wire_hub) = entry.kind else {
                continue;
            };
            if let Some(own) = self.hub_parts(entry, wire_hub, entries, parts) {
                hubs.insert(entry.id, own);
            }
        }
        for role in [HubRole::Primary, HubRole::Standby] {
            let count = hubs.values().filter(|h| h.role == role).count();
            let word = match role {
                HubRole::Primary => "primary",
                HubRole::Standby => "standby",
            };
            if count == 0 && hubs.len() == wire.hubs.len() {
                self.problem(
                    root.key("hubs"),
                    format!(
                        "the hub pair is incomplete: no hub has role = \"{word}\" (a site has one primary and one standby)"
                    ),
                );
            } else if count > 1 {
                self.problem(
                    root.key("hubs"),
                    format!("{count} hubs have role = \"{word}\"; a site has one primary and one standby"),
                );
            }
        }
        if let Some(hub) = &hub {
            for network in networks {
                if network.network.subnet.contains(&hub.tunnel_address) {
                    self.problem(
                        root.key("hub").key("tunnel_address"),
                        format!(
                            "{} lies in network '{}' ({})",
                            hub.tunnel_address, network.network.name, network.network.subnet
                        ),
                    );
                }
            }
            let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
            seen.insert(hub.tunnel_address, "the hubs ([hub] tunnel_address)");
            for entry in entries {
                if let Some((_, address)) = parts.get(&entry.id).and_then(|p| p.tunnel.as_ref()) {
                    if let Some(other) = seen.get(address) {
                        self.problem(
                            entry.path.key("tunnel_address"),
                            format!("{address} is already {other}'s tunnel address"),
                        );
                    } else {
                        seen.insert(*address, &entry.name);
                    }
                }
            }
        }
        (hub, hubs)
    }

    fn site_hub(&mut self, wire: &WireHub) -> Option<SiteHub> {
        let path = KeyPath::root().key("hub");
        let tunnel_address = self.ipv4(&wire.tunnel_address, &path.key("tunnel_address"));
        const DAY_MS: std::ops::RangeInclusive<usize> = 0..=86_400_000;
        let mut millis =
            |value, default, key: &str| self.millis(value, default, DAY_MS, &path.key(key));
        let takeover_after = millis(
            wire.takeover_after_ms,
            DEFAULT_TAKEOVER_AFTER,
            "takeover_after_ms",
        );
        let giveback_hold = millis(
            wire.giveback_hold_ms,
            DEFAULT_GIVEBACK_HOLD,
            "giveback_hold_ms",
        );
        let cloudwatch_interval = millis(
            wire.cloudwatch_interval_ms,
            DEFAULT_CLOUDWATCH_INTERVAL,
            "cloudwatch_interval_ms",
        );
        let reconcile_interval = millis(
            wire.reconcile_interval_ms,
            DEFAULT_RECONCILE_INTERVAL,
            "reconcile_interval_ms",
        );
        let region_ok = !wire.aws_region.is_empty()
            && wire
                .aws_region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            self.problem(
                path.key("aws_region"),
                format!(
                    "'{}' is not an AWS region such as eu-west-1",
                    wire.aws_region
                ),
            );
        }
        let endpoint_ok =
            self.aws_endpoint(wire.aws_endpoint.as_deref(), &path.key("aws_endpoint"));
        let mut tables_ok = true;
        for (index, table) in wire.route_tables.iter().enumerate() {
            if !table.starts_with("rtb-") {
                self.problem(
                    path.key("route_tables").index(index),
                    format!("'{table}' is not a route table id (rtb-…)"),
                );
                tables_ok = false;
            }
        }
        let namespace = wire
            .cloudwatch_namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_CLOUDWATCH_NAMESPACE.to_owned());
        let namespace_ok = !namespace.is_empty() && !namespace.starts_with("AWS/");
        if !namespace_ok {
            self.problem(
                path.key("cloudwatch_namespace"),
                format!("'{namespace}' cannot be used: empty, or reserved for AWS (AWS/…)"),
            );
        }
        if !(region_ok && endpoint_ok && tables_ok && namespace_ok) {
            return None;
        }
        Some(SiteHub {
            tunnel_address: tunnel_address?,
            aws_region: wire.aws_region.clone(),
            aws_endpoint: wire.aws_endpoint.clone(),
            route_tables: wire.route_tables.clone(),
            takeover_after: takeover_after?,
            giveback_hold: giveback_hold?,
            cloudwatch_namespace: namespace,
            cloudwatch_interval: cloudwatch_interval?,
            reconcile_interval: reconcile_interval?,
        })
    }

    fn hub_parts(
        &mut self,
        entry: &Entry<'_>,
        wire: &WireHubMachine,
        entries: &[Entry<'_>],
        parts: &BTreeMap<u8, ApplianceParts>,
    ) -> Option<HubParts> {
        let path = &entry.path;
        let role = match wire.role.as_str() {
            "primary" => Some(HubRole::Primary),
            "standby" => Some(HubRole::Standby),
            other => {
                self.problem(
                    path.key("role"),
                    format!("'{other}' is not a hub role; valid: primary, standby"),
                );
                None
            }
        };
        let endpoint = match wire.endpoint.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    path.key("endpoint"),
                    format!(
                        "'{}' is not an address:port such as 203.0.113.10:51820",
                        wire.endpoint
                    ),
                );
                None
            }
        };
        let vpc_interface = self.interface(&wire.vpc_interface, &path.key("vpc_interface"));
        let vpc_address = self.ipv4(&wire.vpc_address, &path.key("vpc_address"));
        let instance_ok = wire.instance_id.starts_with("i-");
        if !instance_ok {
            self.problem(
                path.key("instance_id"),
                format!("'{}' is not an EC2 instance id (i-…)", wire.instance_id),
            );
        }
        let endpoint_ok =
            self.aws_endpoint(wire.aws_endpoint.as_deref(), &path.key("aws_endpoint"));
        let mut tunnels = Vec::new();
        for (appliance, interface) in &wire.tunnels {
            let key = path.key("tunnels").key(appliance);
            let Some(target) = entries
                .iter()
                .find(|e| &e.name == appliance && matches!(e.kind, Kind::Appliance(_)))
            else {
                self.problem(
                    key,
                    format!(
                        "'{appliance}' is not an appliance; appliances: {}",
                        list(
                            entries
                                .iter()
                                .filter(|e| matches!(e.kind, Kind::Appliance(_)))
                                .map(|e| e.name.as_str())
                        )
                    ),
                );
                continue;
            };
            if parts.get(&target.id).is_some_and(|p| p.tunnel.is_none()) {
                self.problem(
                    key.clone(),
                    format!(
                        "appliance '{appliance}' has no tunnel: give it tunnel_interface and tunnel_address"
                    ),
                );
            }
            let Some(interface) = self.interface(interface, &key) else {
                continue;
            };
            if let Some((other, _)) = tunnels.iter().find(|(_, i)| *i == interface) {
                let other_name = entries
                    .iter()
                    .find(|e| e.id == *other)
                    .map_or("", |e| e.name.as_str());
                self.problem(
                    key,
                    format!("{interface} already leads to appliance '{other_name}'"),
                );
                continue;
            }
            tunnels.push((target.id, interface));
        }
        tunnels.sort_by_key(|(appliance, _)| *appliance);
        if !(instance_ok && endpoint_ok) {
            return None;
        }
        Some(HubParts {
            role: role?,
            endpoint: endpoint?,
            vpc_interface: vpc_interface?,
            vpc_address: vpc_address?,
            instance_id: wire.instance_id.clone(),
            health_check: wire.health_check.clone(),
            aws_endpoint: wire.aws_endpoint.clone(),
            tunnels,
        })
    }

    /// No interface of one appliance is claimed for two things (two links, a link and an
    /// uplink, two networks…).
    fn interfaces_used_once(
        &mut self,
        entries: &[Entry<'_>],
        networks: &[SiteNetwork],
        parts: &BTreeMap<u8, ApplianceParts>,
        wire: &WireSiteFile,
    ) {
        for entry in entries {
            let Some(own) = parts.get(&entry.id) else {
                continue;
            };
            let Kind::Appliance(wire_appliance) = entry.kind else {
                continue;
            };
            let mut claims: Vec<(String, KeyPath, String)> = Vec::new();
            for network in networks {
                if let Some(interface) = own.interfaces.get(&network.network.name) {
                    let path = if wire_appliance
                        .interfaces
                        .contains_key(&network.network.name)
                    {
                        entry.path.key("interfaces").key(&network.network.name)
                    } else {
                        network.path.key("interface")
                    };
                    claims.push((
                        interface.clone(),
                        path,
                        format!("network {}", network.network.name),
                    ));
                }
            }
            for (index, uplink) in own.uplinks.iter().enumerate() {
                if let UplinkKind::Local { interface, .. } = &uplink.kind {
                    claims.push((
                        interface.clone(),
                        entry.path.key("uplinks").index(index).key("interface"),
                        format!("uplink {}", uplink.name),
                    ));
                }
            }
            for (index, link) in wire.links.iter().enumerate() {
                for (end_index, end) in link.ends.iter().enumerate() {
                    if end.appliance == entry.name {
                        claims.push((
                            end.interface.clone(),
                            KeyPath::root()
                                .key("links")
                                .index(index)
                                .key("ends")
                                .index(end_index)
                                .key("interface"),
                            format!("the {} link links[{index}]", link.kind),
                        ));
                    }
                }
            }
            if let Some((interface, _)) = &own.tunnel {
                claims.push((
                    interface.clone(),
                    entry.path.key("tunnel_interface"),
                    "the tunnel to the hubs".to_owned(),
                ));
            }
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            for (interface, path, what) in &claims {
                if let Some(first) = seen.get(interface.as_str()) {
                    self.problem(
                        path.clone(),
                        format!(
                            "{interface} on appliance '{}' already carries {first}; one interface, one use",
                            entry.name
                        ),
                    );
                } else {
                    seen.insert(interface, what);
                }
            }
        }
    }

    /// One machine's agent sections: the site's, with its own keys laid over them. While its
    /// sections are checked, problems with its own keys are reported where it wrote them.
    fn sections(&mut self, entry: &Entry<'_>, raw: &toml::Table) -> Option<Sections> {
        let own = raw
            .get(entry.list)
            .and_then(|list| list.as_array())
            .and_then(|list| list.get(entry.index))
            .and_then(|value| value.as_table());
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut merged: BTreeMap<&str, toml::Table> = BTreeMap::new();
        for section in AGENT_SECTIONS {
            let mut table = raw
                .get(section)
                .and_then(|value| value.as_table())
                .cloned()
                .unwrap_or_default();
            if let Some(over) = own
                .and_then(|own| own.get(section))
                .and_then(|value| value.as_table())
            {
                for (key, value) in over {
                    table.insert(key.clone(), value.clone());
                    keys.entry(section.to_owned())
                        .or_default()
                        .insert(key.clone());
                }
            }
            merged.insert(section, table);
        }
        self.overrides = Some(Overrides {
            entry: entry.path.clone(),
            keys,
        });
        let mut take = |section: &str| merged.remove(section).unwrap_or_default();
        Some(Sections {
            bus: self.section(take("bus"), &entry.path, "bus")?,
            uplink_monitor: self.section(take("uplink_monitor"), &entry.path, "uplink_monitor")?,
            cross_site_failover: self.section(
                take("cross_site_failover"),
                &entry.path,
                "cross_site_failover",
            )?,
            whereami: self.section(take("whereami"), &entry.path, "whereami")?,
            dhcp_takeover: self.section(take("dhcp_takeover"), &entry.path, "dhcp_takeover")?,
            imds_endpoint: self.section(take("imds_endpoint"), &entry.path, "imds_endpoint")?,
            inventory: self.section(take("inventory"), &entry.path, "inventory")?,
        })
    }

    /// A merged section as its wire type. Both layers were type-checked where written, so this
    /// fails only if the merge itself is wrong.
    fn section<T: DeserializeOwned>(
        &mut self,
        table: toml::Table,
        entry: &KeyPath,
        section: &str,
    ) -> Option<T> {
        match toml::Value::Table(table).try_into::<T>() {
            Ok(wire) => Some(wire),
            Err(error) => {
                self.problem(
                    entry.key(section),
                    format!(
                        "cannot combine with [{section}]: {}",
                        error.message().trim()
                    ),
                );
                None
            }
        }
    }

    /// Bus and agent settings of one machine, with its overrides.
    fn machine_agents(
        &mut self,
        entry: &Entry<'_>,
        raw: &toml::Table,
        uplink_count: usize,
        networks: &[Network],
        dhcp: &NetworkDhcp,
        hub_mode: Option<HubMode>,
    ) -> Option<(Bus, Agents)> {
        let sections = self.sections(entry, raw);
        let result = sections.and_then(|sections| {
            let bus = self.bus(&sections.bus);
            let agents = self.agents(
                &sections,
                bus.as_ref().map(|b| b.metrics_listen),
                uplink_count,
                networks,
                dhcp,
                hub_mode,
            );
            Some((bus?, agents?))
        });
        self.overrides = None;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn appliance_view(
        &mut self,
        entry: &Entry<'_>,
        raw: &toml::Table,
        site: &Site,
        areas: &[Area],
        networks: &[SiteNetwork],
        dhcp: &NetworkDhcp,
        entries: &[Entry<'_>],
        parts: &BTreeMap<u8, ApplianceParts>,
        links: &[SiteLink],
        hub: Option<&SiteHub>,
        hubs: &BTreeMap<u8, HubParts>,
    ) -> Option<Machine> {
        let own = parts.get(&entry.id)?;
        let networks: Vec<Network> = networks
            .iter()
            .map(|n| Network {
                interface: own.interfaces.get(&n.network.name).cloned(),
                ..n.network.clone()
            })
            .collect();
        let mut peers = Vec::new();
        for other in entries
            .iter()
            .filter(|e| e.id != entry.id && matches!(e.kind, Kind::Appliance(_)))
        {
            let mut paths: Vec<PeerPath> = links
                .iter()
                .filter_map(|link| {
                    let [a, b] = &link.ends;
                    let (near, far) = if a.appliance == entry.id && b.appliance == other.id {
                        (a, b)
                    } else if b.appliance == entry.id && a.appliance == other.id {
                        (b, a)
                    } else {
                        return None;
                    };
                    Some(PeerPath {
                        kind: link.kind,
                        interface: near.interface.clone(),
                        local: near.address,
                        remote: far.address,
                    })
                })
                .collect();
            paths.sort_by_key(|path| path.kind);
            let theirs = parts.get(&other.id).and_then(|p| p.tunnel.as_ref());
            if let (Some((interface, local)), Some((_, remote)), Some(_)) =
                (&own.tunnel, theirs, hub)
            {
                paths.push(PeerPath {
                    kind: PathKind::Vpn,
                    interface: interface.clone(),
                    local: *local,
                    remote: *remote,
                });
            }
            peers.push(Peer {
                id: other.id,
                name: other.name.clone(),
                paths,
            });
        }
        let hub_view = hub.map(|hub| {
            let mut pair: Vec<&HubParts> = hubs.values().collect();
            pair.sort_by_key(|h| h.role != HubRole::Primary);
            Hub {
                endpoints: pair.iter().map(|h| h.endpoint).collect(),
                tunnel_address: hub.tunnel_address,
                interface: own.tunnel.as_ref().map(|(interface, _)| interface.clone()),
            }
        });
        let uplinks: Vec<Uplink> = own.uplinks.iter().chain(&own.remote).cloned().collect();
        let (bus, agents) =
            self.machine_agents(entry, raw, uplinks.len(), &networks, dhcp, None)?;
        Some(Machine {
            hostname: entry.hostname.clone(),
            role: MachineRole::Appliance,
            config: Config {
                site: site.clone(),
                appliance: Appliance {
                    id: entry.id,
                    name: entry.name.clone(),
                    area: own.area.clone(),
                },
                areas: areas.to_vec(),
                networks,
                uplinks,
                peers,
                hub: hub_view,
                bus,
                agents,
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn hub_view(
        &mut self,
        entry: &Entry<'_>,
        raw: &toml::Table,
        site: &Site,
        areas: &[Area],
        networks: &[SiteNetwork],
        dhcp: &NetworkDhcp,
        entries: &[Entry<'_>],
        parts: &BTreeMap<u8, ApplianceParts>,
        hub: Option<&SiteHub>,
        hubs: &BTreeMap<u8, HubParts>,
    ) -> Option<Machine> {
        let own = hubs.get(&entry.id)?;
        let hub = hub?;
        let partner = hubs.values().find(|h| h.role != own.role)?;
        let peers = own
            .tunnels
            .iter()
            .filter_map(|(appliance, interface)| {
                let (_, remote) = parts.get(appliance)?.tunnel.as_ref()?;
                let name = entries.iter().find(|e| e.id == *appliance)?.name.clone();
                Some(Peer {
                    id: *appliance,
                    name,
                    paths: vec![PeerPath {
                        kind: PathKind::Vpn,
                        interface: interface.clone(),
                        local: hub.tunnel_address,
                        remote: *remote,
                    }],
                })
            })
            .collect();
        let hub_mode = HubMode {
            role: own.role,
            interface: own.vpc_interface.clone(),
            local: own.vpc_address,
            partner: partner.vpc_address,
            takeover_after: hub.takeover_after,
            giveback_hold: hub.giveback_hold,
            aws_region: hub.aws_region.clone(),
            aws_endpoint: own
                .aws_endpoint
                .clone()
                .or_else(|| hub.aws_endpoint.clone()),
            route_tables: hub.route_tables.clone(),
            instance_id: own.instance_id.clone(),
            partner_instance_id: partner.instance_id.clone(),
            partner_health_check: partner.health_check.clone(),
            own_health_check: own.health_check.clone(),
            cloudwatch_namespace: hub.cloudwatch_namespace.clone(),
            cloudwatch_interval: hub.cloudwatch_interval,
            reconcile_interval: hub.reconcile_interval,
        };
        let networks: Vec<Network> = networks.iter().map(|n| n.network.clone()).collect();
        let (bus, agents) = self.machine_agents(entry, raw, 0, &networks, dhcp, Some(hub_mode))?;
        Some(Machine {
            hostname: entry.hostname.clone(),
            role: MachineRole::Hub(own.role),
            config: Config {
                site: site.clone(),
                appliance: Appliance {
                    id: entry.id,
                    name: entry.name.clone(),
                    area: String::new(),
                },
                areas: areas.to_vec(),
                networks,
                uplinks: Vec::new(),
                peers,
                hub: None,
                bus,
                agents,
            },
        })
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

    /// An AWS endpoint URL, or none (AWS itself).
    fn aws_endpoint(&mut self, value: Option<&str>, path: &KeyPath) -> bool {
        let ok = value.is_none_or(|url| url.starts_with("http://") || url.starts_with("https://"));
        if !ok {
            self.problem(
                path.clone(),
                "must be a URL such as http://127.0.0.1:5000 (omit it to use AWS itself)",
            );
        }
        ok
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
