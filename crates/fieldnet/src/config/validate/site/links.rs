//! Between appliances: remote uplinks (other appliances' uplinks, one per appliance), cable
//! and wifi links with both ends, and every interface claimed for one use only.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::config::wire::*;
use crate::config::*;

use super::super::Checker;
use super::super::values::{is_host, list};
use super::{ApplianceParts, Entry, Kind, LinkEnd, SiteLink, SiteNetwork, overlap};

impl Checker {
    /// Every appliance's uplinks have site-wide unique names; its remote uplinks (named, or by
    /// default every other appliance's first) each name another appliance's uplink, one per
    /// appliance.
    pub(super) fn remote_uplinks(
        &mut self,
        entries: &[Entry<'_>],
        parts: &mut BTreeMap<u8, ApplianceParts>,
    ) {
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

    pub(super) fn links(
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

    /// No interface of one appliance is claimed for two things (two links, a link and an
    /// uplink, two networks…).
    pub(super) fn interfaces_used_once(
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
}
