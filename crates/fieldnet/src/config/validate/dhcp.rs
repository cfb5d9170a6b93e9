//! `[dhcp_takeover]`: pools, reservations and device classes checked against the networks, so
//! the server never meets an address outside the network it serves.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::super::wire::{WireDhcpOptions, WireDhcpTakeover, WireNetwork};
use super::super::*;
use super::site::NetworkDhcp;
use super::values::{is_host, list};
use super::{Checker, METRICS_PORT_DHCP_TAKEOVER};

impl Checker {
    pub(super) fn dhcp_takeover(
        &mut self,
        wire: &WireDhcpTakeover,
        networks: &[Network],
        dhcp: &NetworkDhcp,
    ) -> Option<DhcpTakeoverConfig> {
        let path = KeyPath::root().key("dhcp_takeover");
        let common = self.common(
            "dhcp_takeover",
            wire.enabled,
            wire.metrics_listen.as_deref(),
            METRICS_PORT_DHCP_TAKEOVER,
        );
        let store = self.absolute_path(
            wire.store.as_deref(),
            DEFAULT_DHCP_STORE,
            &path.key("store"),
        );
        let conflict_probe = self
            .millis(
                wire.conflict_probe_ms,
                DEFAULT_CONFLICT_PROBE,
                0..=5_000,
                &path.key("conflict_probe_ms"),
            )
            .map(|probe| (!probe.is_zero()).then_some(probe));
        let offer_hold = self.seconds(
            wire.offer_hold_s,
            DEFAULT_OFFER_HOLD,
            1..=3600,
            &path.key("offer_hold_s"),
        );
        let peer_port = self.bounded(
            wire.peer_port,
            usize::from(DEFAULT_DHCP_PEER_PORT),
            1..=65535,
            &path.key("peer_port"),
        );
        // Absent: derived from each network's pool; 0: no limit.
        let mut limit = |value: Option<i64>, key: &str| match value {
            None => Some(None),
            Some(_) => self
                .bounded(value, 0, 0..=1_000_000, &path.key(key))
                .map(|n| Some(n as u32)),
        };
        let max_offers = limit(wire.max_offers, "max_offers");
        let new_clients_per_minute = limit(wire.new_clients_per_minute, "new_clients_per_minute");
        let mut options = self.dhcp_options(&wire.options, &path);
        if let Some(options) = &mut options {
            options.lease_time.get_or_insert(DEFAULT_LEASE_TIME);
        }

        let mut classes: Vec<DeviceClass> = Vec::new();
        let mut prefix_owner: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for (index, class) in wire.classes.iter().enumerate() {
            let key = path.key("classes").index(index);
            let name = self.name(&class.name, &key.key("name"));
            if let Some(name) = &name
                && classes.iter().any(|c| &c.name == name)
            {
                self.problem(key.key("name"), format!("class '{name}' is defined twice"));
            }
            let mut prefixes = Vec::new();
            if class.mac_prefixes.is_empty() {
                self.problem(
                    key.key("mac_prefixes"),
                    "a class needs at least one MAC prefix such as \"00:80:f0\"",
                );
            }
            for (i, prefix) in class.mac_prefixes.iter().enumerate() {
                match crate::names::parse_hex_bytes(prefix) {
                    Some(bytes) if (1..=5).contains(&bytes.len()) => {
                        if let Some(owner) = prefix_owner.get(&bytes) {
                            self.problem(
                                key.key("mac_prefixes").index(i),
                                format!("prefix {prefix} already belongs to class '{owner}'"),
                            );
                        } else {
                            prefix_owner.insert(bytes.clone(), class.name.clone());
                            prefixes.push(bytes);
                        }
                    }
                    _ => self.problem(
                        key.key("mac_prefixes").index(i),
                        format!("'{prefix}' is not a MAC prefix of 1 to 5 bytes such as 00:80:f0"),
                    ),
                }
            }
            let mut ranges = Vec::new();
            for (i, range) in class.ranges.iter().enumerate() {
                let range_key = key.key("ranges").index(i);
                let Some((start, end)) = parse_range(range) else {
                    self.problem(
                        range_key,
                        format!("'{range}' is not a range such as 10.101.0.20-10.101.0.49"),
                    );
                    continue;
                };
                let Some(network) = networks.iter().find(|n| n.subnet.contains(&start)) else {
                    self.problem(
                        range_key,
                        format!("{start} is not inside any network's subnet"),
                    );
                    continue;
                };
                if self.range_in(network, start, end, &range_key) {
                    ranges.push(DhcpPool {
                        network: network.name.clone(),
                        start,
                        end,
                    });
                }
            }
            let options = self.dhcp_options(&class.options, &key);
            if let (Some(name), Some(options)) = (name, options) {
                classes.push(DeviceClass {
                    name,
                    mac_prefixes: prefixes,
                    ranges,
                    options,
                });
            }
        }
        // A class range is the class's alone: no other pool may share an address with it.
        for (index, class) in classes.iter().enumerate() {
            for range in &class.ranges {
                let overlaps = dhcp.pools.iter().any(|pool| pool.overlaps(range));
                let other_class = classes
                    .iter()
                    .enumerate()
                    .any(|(other, c)| other != index && c.ranges.iter().any(|r| r.overlaps(range)));
                if overlaps || other_class {
                    self.problem(
                        path.key("classes").index(index).key("ranges"),
                        format!(
                            "{}-{} overlaps {}; a class range must not share addresses with a pool or another class",
                            range.start,
                            range.end,
                            if overlaps { "a pool" } else { "another class's range" }
                        ),
                    );
                }
            }
        }
        for (key, class) in &dhcp.reservation_classes {
            if !classes.iter().any(|known| &known.name == class) {
                self.problem(
                    key.clone(),
                    format!(
                        "'{class}' is not a class of [[dhcp_takeover.classes]]; known: {}",
                        list(classes.iter().map(|known| known.name.as_str()))
                    ),
                );
            }
        }
        Some(DhcpTakeoverConfig {
            common: common?,
            store: store?,
            conflict_probe: conflict_probe?,
            offer_hold: offer_hold?,
            peer_port: peer_port? as u16,
            max_offers: max_offers?,
            new_clients_per_minute: new_clients_per_minute?,
            options: options?,
            pools: dhcp.pools.clone(),
            reservations: dhcp.reservations.clone(),
            classes,
        })
    }

    /// A network's `pools` and `reservations`, added to `dhcp`; a reservation's MAC and address
    /// are the site's to give once.
    pub(super) fn network_dhcp(
        &mut self,
        wire: &WireNetwork,
        network: &Network,
        path: &KeyPath,
        dhcp: &mut NetworkDhcp,
    ) {
        let mut own: Vec<DhcpPool> = Vec::new();
        for (index, text) in wire.pools.iter().flatten().enumerate() {
            let key = path.key("pools").index(index);
            let Some((start, end)) = parse_range(text) else {
                self.problem(
                    key,
                    format!(
                        "'{text}' is not a range such as {}-{}",
                        nth_host(network, 9),
                        nth_host(network, 249)
                    ),
                );
                continue;
            };
            if !self.range_in(network, start, end, &key) {
                continue;
            }
            if (start..=end).contains(&network.gateway) {
                self.problem(
                    key,
                    format!(
                        "{start}-{end} holds the gateway {}; start the pool after it or end it before",
                        network.gateway
                    ),
                );
                continue;
            }
            let pool = DhcpPool {
                network: network.name.clone(),
                start,
                end,
            };
            if let Some(other) = own.iter().find(|other| other.overlaps(&pool)) {
                self.problem(
                    key,
                    format!(
                        "{start}-{end} overlaps {}-{}, another pool of {}",
                        other.start, other.end, network.name
                    ),
                );
                continue;
            }
            own.push(pool);
        }
        dhcp.pools.extend(own);

        for (index, reservation) in wire.reservations.iter().enumerate() {
            let key = path.key("reservations").index(index);
            let mac = match crate::names::parse_hex_bytes(&reservation.mac) {
                Some(bytes) if bytes.len() == 6 => Some(<[u8; 6]>::try_from(bytes).expect("6")),
                _ => {
                    self.problem(
                        key.key("mac"),
                        format!(
                            "'{}' is not a MAC address such as 02:00:5e:10:00:01",
                            reservation.mac
                        ),
                    );
                    None
                }
            };
            let address = self.ipv4(&reservation.address, &key.key("address"));
            if let Some(address) = address
                && !usable(network, address)
            {
                self.problem(
                    key.key("address"),
                    format!(
                        "{address} is not a client address of {} ({}, gateway {}); use one between {} and {} other than the gateway",
                        network.name,
                        network.subnet,
                        network.gateway,
                        nth_host(network, 0),
                        network.subnet.hosts().last().expect("prefix ≤ 30 has hosts"),
                    ),
                );
                continue;
            }
            let hostname = match &reservation.hostname {
                Some(name) => self.hostname(name, &key.key("hostname")).map(Some),
                None => Some(None),
            };
            let (Some(mac), Some(address), Some(hostname)) = (mac, address, hostname) else {
                continue;
            };
            if let Some(other) = dhcp.reservations.iter().find(|r| r.mac == mac) {
                self.problem(
                    key.key("mac"),
                    format!(
                        "{} is already reserved ({} on {})",
                        reservation.mac, other.address, other.network
                    ),
                );
                continue;
            }
            if let Some(pool) = dhcp.pools.iter().find(|pool| {
                pool.network == network.name && (pool.start..=pool.end).contains(&address)
            }) {
                self.problem(
                    key.key("address"),
                    format!(
                        "{address} is inside the pool {}-{}: a fixed address must be outside the pools, or the pool could give it to another device first",
                        pool.start, pool.end
                    ),
                );
                continue;
            }
            if dhcp.reservations.iter().any(|r| r.address == address) {
                self.problem(
                    key.key("address"),
                    format!("{address} is already reserved for another MAC"),
                );
                continue;
            }
            if let Some(class) = &reservation.class {
                dhcp.reservation_classes
                    .push((key.key("class"), class.clone()));
            }
            dhcp.reservations.push(DhcpReservation {
                mac,
                address,
                network: network.name.clone(),
                hostname,
                class: reservation.class.clone(),
            });
        }
    }

    fn dhcp_options(&mut self, wire: &WireDhcpOptions, path: &KeyPath) -> Option<DhcpOptionSet> {
        let lease_time = self
            .optional(
                wire.lease_time_s,
                10..=31_536_000,
                &path.key("lease_time_s"),
            )
            .map(|seconds| seconds.map(|s| Duration::from_secs(s as u64)));
        let mut ok = true;
        let ntp_servers = wire.ntp_servers.as_ref().map(|servers| {
            servers
                .iter()
                .enumerate()
                .filter_map(|(index, server)| {
                    let parsed = self.ipv4(server, &path.key("ntp_servers").index(index));
                    ok &= parsed.is_some();
                    parsed
                })
                .collect::<Vec<_>>()
        });
        let mtu = self
            .optional(wire.mtu, 576..=9216, &path.key("mtu"))
            .map(|mtu| mtu.map(|m| m as u16));
        let routes = wire.routes.as_ref().map(|routes| {
            routes
                .iter()
                .enumerate()
                .filter_map(|(index, route)| {
                    let parsed = parse_route(route);
                    if parsed.is_none() {
                        ok = false;
                        self.problem(
                            path.key("routes").index(index),
                            format!(
                                "'{route}' is not a route such as \"10.200.0.0/16\" (through the network's gateway) or \"10.200.0.0/16 via 10.101.0.5\""
                            ),
                        );
                    }
                    parsed
                })
                .collect::<Vec<_>>()
        });
        if !ok {
            return None;
        }
        Some(DhcpOptionSet {
            lease_time: lease_time?,
            ntp_servers,
            mtu: mtu?,
            routes,
        })
    }

    /// Whether `start..=end` is an ordered range of client addresses of `network`; says why not.
    fn range_in(
        &mut self,
        network: &Network,
        start: Ipv4Addr,
        end: Ipv4Addr,
        key: &KeyPath,
    ) -> bool {
        if start > end {
            self.problem(
                key.clone(),
                format!("the range starts at {start}, after its end {end}"),
            );
            return false;
        }
        for address in [start, end] {
            if !is_host(network.subnet, address) {
                self.problem(
                    key.clone(),
                    format!(
                        "{address} is not a host address of {} ({})",
                        network.name, network.subnet
                    ),
                );
                return false;
            }
        }
        true
    }

    fn hostname(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        if crate::names::is_dns_label(value) {
            Some(value.to_ascii_lowercase())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a host name; use 1 to 63 letters, digits or '-' (not at either end)"),
            );
            None
        }
    }
}

/// `"10.101.0.20-10.101.0.49"` → its two ends.
fn parse_range(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (start, end) = text.split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?))
}

/// The `n`th host address of `network` (0 is the first), for examples in messages.
fn nth_host(network: &Network, n: usize) -> Ipv4Addr {
    network
        .subnet
        .hosts()
        .nth(n)
        .or_else(|| network.subnet.hosts().last())
        .expect("prefix ≤ 30 has hosts")
}

fn parse_route(text: &str) -> Option<StaticRoute> {
    let mut words = text.split_whitespace();
    let destination = words.next()?.parse::<Ipv4Net>().ok()?;
    let via = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("via"), Some(gateway), None) => Some(gateway.parse().ok()?),
        _ => return None,
    };
    (destination == destination.trunc()).then_some(StaticRoute { destination, via })
}

/// A client may hold `address`: a host address of the subnet other than the gateway.
fn usable(network: &Network, address: Ipv4Addr) -> bool {
    is_host(network.subnet, address) && address != network.gateway
}
