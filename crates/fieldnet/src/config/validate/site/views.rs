//! Each machine's agent sections (the site's, with its own overrides laid over them) and an
//! appliance's view of the site: its networks, peers and the paths to them, hub and uplinks.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use crate::config::wire::AGENT_SECTIONS;
use crate::config::*;

use super::super::{Checker, Overrides};
use super::{
    ApplianceParts, Entry, HubParts, Kind, NetworkDhcp, Sections, SiteHub, SiteLink, SiteNetwork,
};

impl Checker {
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
    pub(super) fn machine_agents(
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
    pub(super) fn appliance_view(
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
}
