//! The hub pair: `[hub]`, each `[[hubs]]` entry (role, endpoint, VPC side, tunnels to the
//! appliances), and a hub's view of the site.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use crate::config::wire::*;
use crate::config::*;

use super::super::Checker;
use super::super::values::list;
use super::{ApplianceParts, Entry, HubParts, Kind, NetworkDhcp, SiteHub, SiteNetwork};

impl Checker {
    /// `[hub]` and `[[hubs]]`: both or neither, and the pair complete.
    pub(super) fn hub_pair(
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
        let region_ok = self.aws_region(&wire.aws_region, &path.key("aws_region"));
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn hub_view(
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
}
