//! What dhcp-takeover tells whereami over the bus, decided purely: which client names to add or
//! remove (`Leases`, from `dhcp/lease/<address>` and the clock), and what each network's role
//! is here given the networks taken over (`network_roles`). The agent reads the bus and applies
//! the changes to the views and the listeners.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use fieldnet::bus::topics::{self, DnsNetwork, DnsRole, Lease, Takeover};

use fieldnet::names::dns_label;

use crate::answer::NetworkView;

/// One message under `dhcp/`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpMessage {
    /// A lease on `address`, or its end (`None`).
    Lease(Ipv4Addr, Option<Lease>),
    /// A network taken over, or handed back (`None`).
    Takeover(String, Option<Takeover>),
}

impl DhcpMessage {
    /// Reads a message on `topic`. `Ok(None)`: a topic whereami does not follow.
    pub fn parse(topic: &str, body: &serde_json::Value) -> Result<Option<DhcpMessage>, String> {
        if let Some(address) = topic.strip_prefix(topics::TOPIC_DHCP_LEASES) {
            let address = address
                .parse()
                .map_err(|_| format!("lease topic {topic} does not end in an IPv4 address"))?;
            let lease = (!body.is_null())
                .then(|| serde_json::from_value(body.clone()))
                .transpose()
                .map_err(|e| format!("unreadable lease on {topic}: {e}"))?;
            return Ok(Some(DhcpMessage::Lease(address, lease)));
        }
        if let Some(network) = topic.strip_prefix(topics::TOPIC_DHCP_TAKEOVERS) {
            let takeover = (!body.is_null())
                .then(|| serde_json::from_value(body.clone()))
                .transpose()
                .map_err(|e| format!("unreadable takeover on {topic}: {e}"))?;
            return Ok(Some(DhcpMessage::Takeover(network.to_owned(), takeover)));
        }
        Ok(None)
    }
}

/// A change to the local names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameChange {
    Add { label: String, address: Ipv4Addr },
    Remove { label: String, address: Ipv4Addr },
}

/// The client names whereami answers, by leased address.
#[derive(Debug, Default)]
pub struct Leases {
    known: HashMap<Ipv4Addr, (String, u64)>,
}

impl Leases {
    /// A lease on `address` (or its end) heard at `now` (milliseconds since the Unix epoch).
    pub fn lease(&mut self, address: Ipv4Addr, lease: Option<&Lease>, now: u64) -> Vec<NameChange> {
        let wanted = lease.filter(|lease| lease.expires > now).and_then(|lease| {
            Some((
                lease.hostname.as_deref().and_then(dns_label)?,
                lease.expires,
            ))
        });
        match (self.known.get_mut(&address), wanted) {
            // A renewal under the same name only moves the expiry.
            (Some((label, expires)), Some((new_label, new_expires))) if *label == new_label => {
                *expires = new_expires;
                Vec::new()
            }
            (_, wanted) => {
                let mut changes: Vec<NameChange> = self.forget(address).into_iter().collect();
                if let Some((label, expires)) = wanted {
                    self.known.insert(address, (label.clone(), expires));
                    changes.push(NameChange::Add { label, address });
                }
                changes
            }
        }
    }

    /// Removes the names whose lease has ended by `now`, even if the event saying so was missed.
    pub fn expire(&mut self, now: u64) -> Vec<NameChange> {
        let ended: Vec<Ipv4Addr> = self
            .known
            .iter()
            .filter(|(_, (_, expires))| *expires <= now)
            .map(|(address, _)| *address)
            .collect();
        ended.into_iter().filter_map(|a| self.forget(a)).collect()
    }

    /// The views would not give `address` its name (a fixed one): it has none.
    pub fn refused(&mut self, address: Ipv4Addr) {
        self.known.remove(&address);
    }

    fn forget(&mut self, address: Ipv4Addr) -> Option<NameChange> {
        let (label, _) = self.known.remove(&address)?;
        Some(NameChange::Remove { label, address })
    }
}

/// Every site network's role here: `own` (its gateway is one of `own`), `takeover` (its
/// gateway is among `takeovers`) or `peer`, and whether its gateway is being `listening` on.
pub fn network_roles(
    networks: &[NetworkView],
    own: &[Ipv4Addr],
    takeovers: &BTreeMap<String, Ipv4Addr>,
    listening: &[IpAddr],
) -> Vec<DnsNetwork> {
    networks
        .iter()
        .map(|network| {
            let inside = |gateway: &&Ipv4Addr| network.subnet.contains(*gateway);
            let (role, gateway) = match (own.iter().find(inside), takeovers.values().find(inside)) {
                (Some(gateway), _) => (DnsRole::Own, Some(gateway)),
                (None, Some(gateway)) => (DnsRole::Takeover, Some(gateway)),
                (None, None) => (DnsRole::Peer, None),
            };
            DnsNetwork {
                name: network.name.clone(),
                area: network.area.clone(),
                role,
                listening: gateway.is_some_and(|g| listening.contains(&IpAddr::V4(*g))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn lease(hostname: Option<&str>, expires: u64) -> Lease {
        Lease {
            client_id: None,
            address: "10.101.0.57".parse().unwrap(),
            mac: "02:00:00:00:00:57".into(),
            hostname: hostname.map(str::to_owned),
            network: "NETWORK1".into(),
            expires,
            class: None,
        }
    }

    fn add(label: &str) -> NameChange {
        NameChange::Add {
            label: label.into(),
            address: "10.101.0.57".parse().unwrap(),
        }
    }

    fn remove(label: &str) -> NameChange {
        NameChange::Remove {
            label: label.into(),
            address: "10.101.0.57".parse().unwrap(),
        }
    }

    #[test]
    fn a_lease_names_its_client_until_released_renamed_or_expired() {
        let address = "10.101.0.57".parse().unwrap();
        let mut leases = Leases::default();
        let first = lease(Some("Laptop-7"), NOW + 60_000);
        assert_eq!(leases.lease(address, Some(&first), NOW), [add("laptop-7")]);
        // Renewed under the same name: nothing changes but the expiry.
        let renewed = lease(Some("laptop-7"), NOW + 120_000);
        assert!(leases.lease(address, Some(&renewed), NOW).is_empty());
        assert!(leases.expire(NOW + 90_000).is_empty(), "the renewal counts");
        // Renamed.
        let renamed = lease(Some("desk"), NOW + 120_000);
        assert_eq!(
            leases.lease(address, Some(&renamed), NOW),
            [remove("laptop-7"), add("desk")]
        );
        // Released.
        assert_eq!(leases.lease(address, None, NOW), [remove("desk")]);
        assert!(leases.lease(address, None, NOW).is_empty());
        // Expired without a word.
        leases.lease(address, Some(&renamed), NOW);
        assert_eq!(leases.expire(NOW + 120_000), [remove("desk")]);
    }

    #[test]
    fn leases_without_a_usable_name_or_already_over_name_nobody() {
        let address = "10.101.0.57".parse().unwrap();
        let mut leases = Leases::default();
        assert!(
            leases
                .lease(address, Some(&lease(None, NOW + 1)), NOW)
                .is_empty()
        );
        assert!(
            leases
                .lease(address, Some(&lease(Some("..."), NOW + 1)), NOW)
                .is_empty()
        );
        assert!(
            leases
                .lease(address, Some(&lease(Some("old"), NOW)), NOW)
                .is_empty()
        );
        // A name the views refused is not removed later.
        leases.lease(address, Some(&lease(Some("appliance-1"), NOW + 1)), NOW);
        leases.refused(address);
        assert!(leases.lease(address, None, NOW).is_empty());
    }

    #[test]
    fn dhcp_topics_are_read_and_bad_ones_named() {
        let body = serde_json::to_value(lease(Some("x"), 1)).unwrap();
        assert_eq!(
            DhcpMessage::parse("dhcp/lease/10.101.0.57", &body),
            Ok(Some(DhcpMessage::Lease(
                "10.101.0.57".parse().unwrap(),
                Some(lease(Some("x"), 1))
            )))
        );
        assert_eq!(
            DhcpMessage::parse("dhcp/takeover/NETWORK2", &serde_json::Value::Null),
            Ok(Some(DhcpMessage::Takeover("NETWORK2".into(), None)))
        );
        assert_eq!(DhcpMessage::parse("dhcp/other", &body), Ok(None));
        let error = DhcpMessage::parse("dhcp/lease/nowhere", &body).unwrap_err();
        assert!(error.contains("dhcp/lease/nowhere"), "{error}");
        let error =
            DhcpMessage::parse("dhcp/takeover/NETWORK2", &serde_json::json!({"x": 1})).unwrap_err();
        assert!(error.contains("unreadable takeover"), "{error}");
    }

    #[test]
    fn networks_are_own_taken_over_or_their_peers() {
        let network = |n: u8| NetworkView {
            subnet: format!("10.10{n}.0.0/24").parse().unwrap(),
            name: format!("NETWORK{n}"),
            area: format!("area{n}"),
        };
        let own = ["10.101.0.1".parse().unwrap()];
        let takeovers = BTreeMap::from([("NETWORK3".to_owned(), "10.103.0.1".parse().unwrap())]);
        let listening = ["10.101.0.1".parse().unwrap()];
        let roles: Vec<(DnsRole, bool)> = network_roles(
            &[network(1), network(2), network(3)],
            &own,
            &takeovers,
            &listening,
        )
        .into_iter()
        .map(|n| (n.role, n.listening))
        .collect();
        assert_eq!(
            roles,
            [
                (DnsRole::Own, true),
                (DnsRole::Peer, false),
                (DnsRole::Takeover, false)
            ]
        );
    }
}
