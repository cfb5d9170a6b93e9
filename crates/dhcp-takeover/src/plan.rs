//! The address plan: for every network, which addresses are handed out to whom (the general
//! pool, each device class's ranges, reservations by MAC) and which options go with them.
//! Built once from the validated config; pure.
//!
//! Invariant: an address belongs to at most one of a network's pool, a class range or a
//! reservation, and never is the network's own, broadcast or gateway address.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use fieldnet::config::{Config, DEFAULT_LEASE_TIME, DEFAULT_POOL_SKIP, DhcpOptionSet, StaticRoute};
use ipnet::Ipv4Net;

use crate::lease::Mac;

/// What a client on a network is told besides its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub lease_time: Duration,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub ntp_servers: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    /// Classless static routes with their next hops resolved; the default route through the
    /// gateway is added when there are any (RFC 3442 clients ignore the router option then).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// One network's share of the plan.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The general pool, in address order.
    pub pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Each class's ranges on this network.
    pub class_ranges: HashMap<String, Vec<(Ipv4Addr, Ipv4Addr)>>,
}

#[derive(Debug, Clone)]
struct Class {
    name: String,
    prefixes: Vec<Vec<u8>>,
    options: DhcpOptionSet,
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub address: Ipv4Addr,
    pub network: String,
    pub hostname: Option<String>,
    /// The device's class, over its MAC prefix's.
    pub class: Option<String>,
}

impl NetworkPlan {
    /// Addresses handed out dynamically: the pool and every class range.
    pub fn pool_size(&self) -> u32 {
        self.pool
            .iter()
            .chain(self.class_ranges.values().flatten())
            .map(|&(start, end)| u32::from(end) - u32::from(start) + 1)
            .sum()
    }
}

/// The whole site's plan (every appliance holds all of it, so any can take over any network).
#[derive(Debug, Clone)]
pub struct Plan {
    pub networks: Vec<NetworkPlan>,
    classes: Vec<Class>,
    reservations: HashMap<Mac, Reservation>,
    reserved: BTreeSet<Ipv4Addr>,
    defaults: DhcpOptionSet,
    domain: String,
}

impl Plan {
    pub fn new(config: &Config) -> Self {
        let dhcp = &config.agents.dhcp_takeover;
        let reserved: BTreeSet<Ipv4Addr> = dhcp.reservations.iter().map(|r| r.address).collect();
        let networks = config
            .networks
            .iter()
            .map(|network| {
                let mut class_ranges: HashMap<String, Vec<(Ipv4Addr, Ipv4Addr)>> = HashMap::new();
                for class in &dhcp.classes {
                    for range in class.ranges.iter().filter(|r| r.network == network.name) {
                        class_ranges
                            .entry(class.name.clone())
                            .or_default()
                            .push((range.start, range.end));
                    }
                }
                let explicit: Vec<(Ipv4Addr, Ipv4Addr)> = dhcp
                    .pools
                    .iter()
                    .filter(|pool| pool.network == network.name)
                    .map(|pool| (pool.start, pool.end))
                    .collect();
                let pool = if explicit.is_empty() {
                    default_pool(network.subnet, &class_ranges)
                } else {
                    explicit
                };
                NetworkPlan {
                    name: network.name.clone(),
                    subnet: network.subnet,
                    gateway: network.gateway,
                    pool,
                    class_ranges,
                }
            })
            .collect();
        Self {
            networks,
            classes: dhcp
                .classes
                .iter()
                .map(|class| Class {
                    name: class.name.clone(),
                    prefixes: class.mac_prefixes.clone(),
                    options: class.options.clone(),
                })
                .collect(),
            reservations: dhcp
                .reservations
                .iter()
                .map(|r| {
                    (
                        Mac(r.mac),
                        Reservation {
                            address: r.address,
                            network: r.network.clone(),
                            hostname: r.hostname.clone(),
                            class: r.class.clone(),
                        },
                    )
                })
                .collect(),
            reserved,
            defaults: dhcp.options.clone(),
            domain: config.site.domain.clone(),
        }
    }

    pub fn network(&self, name: &str) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The network whose subnet holds `address` (a relay's giaddr, a client's ciaddr).
    pub fn network_of(&self, address: Ipv4Addr) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.subnet.contains(&address))
    }

    /// The class of a device: its reservation's, else the longest matching MAC prefix's (as
    /// [`fieldnet::config::DhcpTakeoverConfig::class_of`], which imds-endpoint uses).
    pub fn class_of(&self, mac: Mac) -> Option<&str> {
        if let Some(class) = self.reservations.get(&mac).and_then(|r| r.class.as_deref()) {
            return Some(class);
        }
        self.classes
            .iter()
            .flat_map(|class| class.prefixes.iter().map(move |p| (p, class)))
            .filter(|(prefix, _)| mac.0.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, class)| class.name.as_str())
    }

    pub fn reservation(&self, mac: Mac) -> Option<&Reservation> {
        self.reservations.get(&mac)
    }

    pub fn is_reserved(&self, address: Ipv4Addr) -> bool {
        self.reserved.contains(&address)
    }

    /// The ranges a device of `class` is given addresses from on `network`: its class's ranges
    /// there, else the general pool.
    pub fn ranges_for<'a>(
        &'a self,
        network: &'a NetworkPlan,
        class: Option<&str>,
    ) -> &'a [(Ipv4Addr, Ipv4Addr)] {
        class
            .and_then(|class| network.class_ranges.get(class))
            .map_or(&network.pool, |ranges| ranges)
    }

    /// Whether a device of `class` may hold `address` on `network` (a dynamic address from its
    /// ranges; reservations are checked separately).
    pub fn allows(&self, network: &NetworkPlan, class: Option<&str>, address: Ipv4Addr) -> bool {
        !self.is_reserved(address)
            && self
                .ranges_for(network, class)
                .iter()
                .any(|&(start, end)| start <= address && address <= end)
    }

    /// The options for a device of `class` on `network`.
    pub fn options(&self, network: &NetworkPlan, class: Option<&str>) -> ClientOptions {
        let class = class.and_then(|name| self.classes.iter().find(|c| c.name == name));
        let pick = |get: fn(&DhcpOptionSet) -> Option<_>| {
            class
                .and_then(|c| get(&c.options))
                .or_else(|| get(&self.defaults))
        };
        let lease_time = class
            .and_then(|c| c.options.lease_time)
            .or(self.defaults.lease_time)
            .unwrap_or(DEFAULT_LEASE_TIME);
        let routes: Vec<StaticRoute> = class
            .and_then(|c| c.options.routes.clone())
            .or_else(|| self.defaults.routes.clone())
            .unwrap_or_default();
        let mut resolved: Vec<(Ipv4Net, Ipv4Addr)> = routes
            .iter()
            .map(|route| (route.destination, route.via.unwrap_or(network.gateway)))
            .collect();
        if !resolved.is_empty() && !resolved.iter().any(|(d, _)| d.prefix_len() == 0) {
            resolved.push((Ipv4Net::default(), network.gateway));
        }
        ClientOptions {
            lease_time,
            subnet: network.subnet,
            gateway: network.gateway,
            dns: vec![network.gateway],
            domain: self.domain.clone(),
            ntp_servers: class
                .and_then(|c| c.options.ntp_servers.clone())
                .or_else(|| self.defaults.ntp_servers.clone())
                .unwrap_or_default(),
            mtu: pick(|o| o.mtu),
            routes: resolved,
        }
    }
}

/// The default pool: every host address after the first `DEFAULT_POOL_SKIP`, minus the class
/// ranges.
fn default_pool(
    subnet: Ipv4Net,
    class_ranges: &HashMap<String, Vec<(Ipv4Addr, Ipv4Addr)>>,
) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let start = (first + DEFAULT_POOL_SKIP).min(last);
    let mut taken: Vec<(u32, u32)> = class_ranges
        .values()
        .flatten()
        .map(|&(s, e)| (u32::from(s), u32::from(e)))
        .collect();
    taken.sort_unstable();
    let mut pool = Vec::new();
    let mut cursor = start;
    for (s, e) in taken {
        if s > cursor {
            pool.push((cursor, (s - 1).min(last)));
        }
        cursor = cursor.max(e.saturating_add(1));
    }
    if cursor <= last {
        pool.push((cursor, last));
    }
    pool.into_iter()
        .filter(|(s, e)| s <= e)
        .map(|(s, e)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pool_skips_the_start_and_the_class_ranges() {
        let subnet: Ipv4Net = "10.101.0.0/24".parse().unwrap();
        let mut classes = HashMap::new();
        classes.insert(
            "cameras".to_owned(),
            vec![(Ipv4Addr::new(10, 101, 0, 20), Ipv4Addr::new(10, 101, 0, 49))],
        );
        assert_eq!(
            default_pool(subnet, &classes),
            vec![
                (Ipv4Addr::new(10, 101, 0, 10), Ipv4Addr::new(10, 101, 0, 19)),
                (
                    Ipv4Addr::new(10, 101, 0, 50),
                    Ipv4Addr::new(10, 101, 0, 254)
                ),
            ]
        );
        assert_eq!(
            default_pool("10.0.0.0/30".parse().unwrap(), &HashMap::new()),
            vec![(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 2))]
        );
    }
}
