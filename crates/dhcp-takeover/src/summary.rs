//! What dhcp-takeover tells the site each second, from the leases others may see: bound leases
//! by network and class (the `dhcp_leases` gauge), addresses in use by network (leases that keep
//! their address and offers held: a flood of DISCOVERs shows as a full pool), the leases whose
//! publication on the bus is out of date, the `dhcp/state` body, and when a pool becomes near
//! full. Pure: the time and everything else are arguments.
//!
//! Invariants: a lease counts as bound only while bound at `now`, and a lease is in
//! [`Summary::changed`] exactly when its being bound differs from its being published.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;

use fieldnet::bus::topics::{DhcpNetwork, DhcpNetworkState, DhcpState};

use crate::decide::NEAR_FULL_PERCENT;
use crate::lease::Lease;

/// The leases counted at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bound leases by network and class (`""` without a class).
    pub bound: BTreeMap<(String, String), u64>,
    /// Addresses in use by network: leases that keep their address (bound, declined) and
    /// offers held.
    pub used: BTreeMap<String, u64>,
    /// Leases to publish (bound, not published) or to clear (published, no longer bound).
    pub changed: Vec<Lease>,
}

/// Counts `leases` (the records others may see) at `now`; `held` gives the offers held on each
/// network, `published` the addresses whose lease is on the bus.
pub fn summarise<'a>(
    now: u64,
    leases: impl IntoIterator<Item = &'a Lease>,
    held: impl IntoIterator<Item = (String, usize)>,
    published: &HashSet<Ipv4Addr>,
) -> Summary {
    // Counted under borrowed names: this runs over every lease every second.
    let mut bound: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut used: BTreeMap<&str, u64> = BTreeMap::new();
    let mut changed = Vec::new();
    for lease in leases {
        let is_bound = lease.is_bound(now);
        if is_bound {
            *bound
                .entry((&lease.network, lease.class.as_deref().unwrap_or_default()))
                .or_default() += 1;
        }
        if lease.blocks(now) {
            *used.entry(&lease.network).or_default() += 1;
        }
        if is_bound != published.contains(&lease.address) {
            changed.push(lease.clone());
        }
    }
    let mut summary = Summary {
        bound: bound
            .into_iter()
            .map(|((network, class), count)| ((network.to_owned(), class.to_owned()), count))
            .collect(),
        used: used
            .into_iter()
            .map(|(network, count)| (network.to_owned(), count))
            .collect(),
        changed,
    };
    for (network, offers) in held {
        *summary.used.entry(network).or_default() += offers as u64;
    }
    summary
}

impl Summary {
    /// Bound leases on `network`, every class.
    pub fn bound_on(&self, network: &str) -> u64 {
        self.bound
            .iter()
            .filter(|((name, _), _)| name == network)
            .map(|(_, count)| count)
            .sum()
    }

    /// Addresses in use on `network`.
    pub fn used_on(&self, network: &str) -> u64 {
        self.used.get(network).copied().unwrap_or(0)
    }

    /// The `dhcp/state` body: each network the coordinator knows, in its state, with its owner
    /// and pool size as `owner` and `pool_total` give them.
    pub fn state(
        &self,
        networks: impl IntoIterator<Item = (String, DhcpNetworkState)>,
        owner: impl Fn(&str) -> u8,
        pool_total: impl Fn(&str) -> u64,
    ) -> DhcpState {
        DhcpState {
            networks: networks
                .into_iter()
                .map(|(name, state)| DhcpNetwork {
                    owner: owner(&name),
                    state,
                    leases: self.bound_on(&name),
                    pool_used: self.used_on(&name),
                    pool_total: pool_total(&name),
                    name,
                })
                .collect(),
        }
    }
}

/// Whether a pool of `total` addresses with `in_use` of them taken is near full.
pub fn is_near_full(in_use: u64, total: u64) -> bool {
    total > 0 && in_use * 100 >= total * NEAR_FULL_PERCENT
}

/// A pool's crossing of the near-full line, to say once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearFull {
    Became,
    Ended,
}

/// The served pools near full now; says when one crosses the line, once each way.
#[derive(Debug, Clone, Default)]
pub struct NearFullPools {
    near: BTreeSet<String>,
}

impl NearFullPools {
    /// `network` has `in_use` of `total` addresses taken now: whether it crossed the line.
    pub fn update(&mut self, network: &str, in_use: u64, total: u64) -> Option<NearFull> {
        let near = is_near_full(in_use, total);
        if near && !self.near.contains(network) {
            self.near.insert(network.to_owned());
            Some(NearFull::Became)
        } else if !near && self.near.remove(network) {
            Some(NearFull::Ended)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{ClientId, LeaseState, Mac};

    const NOW: u64 = 1_000_000;

    fn lease(
        network: &str,
        last: u8,
        class: Option<&str>,
        state: LeaseState,
        expires: u64,
    ) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 0, last),
            network: network.to_owned(),
            client: ClientId(vec![1, last]),
            mac: Mac([2, 0, 0, 0, 0, last]),
            hostname: None,
            class: class.map(str::to_owned),
            state,
            expires,
            updated: 0,
            issued_by: 1,
        }
    }

    fn leases() -> Vec<Lease> {
        vec![
            lease("office", 10, None, LeaseState::Bound, NOW + 1),
            lease("office", 11, Some("printers"), LeaseState::Bound, NOW + 1),
            lease("office", 12, None, LeaseState::Bound, NOW), // ended just now
            lease("office", 13, None, LeaseState::Declined, NOW + 1),
            lease("office", 14, None, LeaseState::Released, NOW + 1),
            lease("stage", 20, None, LeaseState::Bound, NOW + 1),
        ]
    }

    #[test]
    fn counts_bound_leases_by_class_and_addresses_in_use_with_held_offers() {
        let leases = leases();
        let summary = summarise(
            NOW,
            &leases,
            [("office".to_owned(), 2), ("bar".to_owned(), 1)],
            &HashSet::new(),
        );
        let bound: Vec<((&str, &str), u64)> = summary
            .bound
            .iter()
            .map(|((n, c), count)| ((n.as_str(), c.as_str()), *count))
            .collect();
        assert_eq!(
            bound,
            [
                (("office", ""), 1),
                (("office", "printers"), 1),
                (("stage", ""), 1)
            ]
        );
        // office: two bound, one declined, two offers held; the ended and released ones free.
        assert_eq!(summary.used_on("office"), 5);
        assert_eq!(summary.used_on("bar"), 1);
        assert_eq!(summary.used_on("nowhere"), 0);
        assert_eq!(summary.bound_on("office"), 2);
    }

    #[test]
    fn changed_are_the_leases_whose_publication_is_out_of_date() {
        let leases = leases();
        // .10 is published and bound (fine); .12 is published but ended (clear it); .11 and
        // .20 are bound but not published (publish them).
        let published: HashSet<Ipv4Addr> = [10, 12].map(|l| Ipv4Addr::new(10, 0, 0, l)).into();
        let summary = summarise(NOW, &leases, [], &published);
        let changed: Vec<u8> = summary
            .changed
            .iter()
            .map(|lease| lease.address.octets()[3])
            .collect();
        assert_eq!(changed, [11, 12, 20]);
    }

    #[test]
    fn the_state_tells_each_network_with_its_owner_counts_and_pool() {
        let leases = leases();
        let summary = summarise(NOW, &leases, [("office".to_owned(), 1)], &HashSet::new());
        let state = summary.state(
            [
                ("office".to_owned(), DhcpNetworkState::Own),
                ("stage".to_owned(), DhcpNetworkState::Taken),
            ],
            |name| if name == "office" { 1 } else { 2 },
            |name| if name == "office" { 100 } else { 50 },
        );
        assert_eq!(
            state.networks,
            [
                DhcpNetwork {
                    name: "office".into(),
                    state: DhcpNetworkState::Own,
                    owner: 1,
                    leases: 2,
                    pool_used: 4,
                    pool_total: 100
                },
                DhcpNetwork {
                    name: "stage".into(),
                    state: DhcpNetworkState::Taken,
                    owner: 2,
                    leases: 1,
                    pool_used: 1,
                    pool_total: 50
                },
            ]
        );
    }

    #[test]
    fn a_pool_crossing_the_near_full_line_is_said_once_each_way() {
        assert!(!is_near_full(0, 0), "no pool is never near full");
        assert!(!is_near_full(89, 100));
        assert!(is_near_full(90, 100));
        let mut pools = NearFullPools::default();
        assert_eq!(pools.update("office", 50, 100), None);
        assert_eq!(pools.update("office", 90, 100), Some(NearFull::Became));
        assert_eq!(pools.update("office", 95, 100), None);
        assert_eq!(pools.update("stage", 95, 100), Some(NearFull::Became));
        assert_eq!(pools.update("office", 89, 100), Some(NearFull::Ended));
        assert_eq!(pools.update("office", 10, 100), None);
    }
}
