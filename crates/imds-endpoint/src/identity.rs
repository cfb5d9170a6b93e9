//! Who is asking: client IP → MAC (the DHCP lease, confirmed by the kernel's neighbour table)
//! → device class (the site file's reservations and MAC prefixes). Pure: the leases and the
//! networks served come from the bus, the neighbour's MAC from the edge, the clock is an
//! argument.
//!
//! Invariant: a device is named only when its address is on a network served here, it holds
//! an unexpired lease there, the neighbour table shows the lease's MAC for that address, and
//! the operator has not forgotten it. Anything else is a [`Refusal`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use fieldnet::bus::topics::Lease;
use fieldnet::config::{Config, DhcpTakeoverConfig};
use ipnet::Ipv4Net;

pub use fieldnet::names::Mac;

/// A device recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub mac: Mac,
    pub address: Ipv4Addr,
    /// Its host name, else its MAC.
    pub name: String,
    pub class: Option<String>,
    pub network: String,
}

/// Why an asker is not a device served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not on a network this appliance serves (the uplink side, another area).
    NotServed,
    /// No lease (or an expired one) for the address.
    NoLease,
    /// The kernel knows no MAC for the address.
    NoNeighbour,
    /// The neighbour table shows another MAC than the lease's: a spoofed address.
    MacMismatch,
    /// The operator said `fieldctl device forget`.
    Forgotten,
}

impl Refusal {
    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotServed => "not_served",
            Refusal::NoLease => "no_lease",
            Refusal::NoNeighbour => "no_neighbour",
            Refusal::MacMismatch => "mac_mismatch",
            Refusal::Forgotten => "forgotten",
        }
    }

    pub const ALL: [Refusal; 5] = [
        Refusal::NotServed,
        Refusal::NoLease,
        Refusal::NoNeighbour,
        Refusal::MacMismatch,
        Refusal::Forgotten,
    ];
}

#[derive(Debug, Clone)]
struct LeaseEntry {
    mac: Mac,
    hostname: Option<String>,
    network: String,
    expires: u64,
}

/// The device classes of the site file (reservations and MAC prefixes).
#[derive(Debug, Clone)]
pub struct Classes(DhcpTakeoverConfig);

impl Classes {
    pub fn new(dhcp: &DhcpTakeoverConfig) -> Classes {
        Classes(dhcp.clone())
    }

    pub fn class_of(&self, mac: Mac) -> Option<&str> {
        self.0.class_of(mac.0)
    }

    fn reserved_name(&self, mac: Mac) -> Option<&str> {
        self.0
            .reservations
            .iter()
            .find(|reservation| reservation.mac == mac.0)
            .and_then(|reservation| reservation.hostname.as_deref())
    }
}

/// Leases, served networks and forgotten devices.
#[derive(Debug)]
pub struct Identity {
    classes: Classes,
    /// Every site network, by name.
    subnets: BTreeMap<String, Ipv4Net>,
    /// This appliance's own networks.
    own: BTreeSet<String>,
    /// Networks taken over from dead peers.
    taken: BTreeSet<String>,
    /// The subnets of `own` and `taken`, asked on every request.
    served_subnets: Vec<Ipv4Net>,
    leases: HashMap<Ipv4Addr, LeaseEntry>,
    forgotten: BTreeSet<Mac>,
}

impl Identity {
    pub fn from_config(config: &Config) -> Identity {
        let mut identity = Identity {
            classes: Classes::new(&config.agents.dhcp_takeover),
            subnets: config
                .networks
                .iter()
                .map(|network| (network.name.clone(), network.subnet))
                .collect(),
            own: config
                .networks
                .iter()
                .filter(|network| network.area == config.appliance.area)
                .map(|network| network.name.clone())
                .collect(),
            taken: BTreeSet::new(),
            served_subnets: Vec::new(),
            leases: HashMap::new(),
            forgotten: BTreeSet::new(),
        };
        identity.serve_subnets();
        identity
    }

    fn serve_subnets(&mut self) {
        self.served_subnets = self
            .own
            .union(&self.taken)
            .filter_map(|name| self.subnets.get(name).copied())
            .collect();
    }

    /// A lease heard on the bus (`None`: it ended). Returns the device it names, if any.
    pub fn lease(&mut self, address: Ipv4Addr, lease: Option<&Lease>) -> Option<(Mac, String)> {
        let Some(lease) = lease else {
            self.leases.remove(&address);
            return None;
        };
        let mac: Mac = lease.mac.parse().ok()?;
        let hostname = lease
            .hostname
            .clone()
            .or_else(|| self.classes.reserved_name(mac).map(str::to_owned));
        let name = hostname.clone().unwrap_or_else(|| mac.dashed());
        self.leases.insert(
            address,
            LeaseEntry {
                mac,
                hostname,
                network: lease.network.clone(),
                expires: lease.expires,
            },
        );
        Some((mac, name))
    }

    /// The class of a MAC, from the site file.
    pub fn class_of(&self, mac: Mac) -> Option<&str> {
        self.classes.class_of(mac)
    }

    /// A network taken over (or handed back).
    pub fn taken(&mut self, network: &str, taken: bool) {
        if taken {
            self.taken.insert(network.to_owned());
        } else {
            self.taken.remove(network);
        }
        self.serve_subnets();
    }

    pub fn forget(&mut self, mac: Mac, forgotten: bool) {
        if forgotten {
            self.forgotten.insert(mac);
        } else {
            self.forgotten.remove(&mac);
        }
    }

    /// The name of the leased device with `mac`, if it holds a lease.
    pub fn leased_name(&self, mac: Mac) -> Option<String> {
        self.leases
            .values()
            .find(|lease| lease.mac == mac)
            .map(|lease| lease.hostname.clone().unwrap_or_else(|| mac.dashed()))
    }

    /// The devices forgotten, in MAC order.
    pub fn forgotten(&self) -> impl Iterator<Item = Mac> + '_ {
        self.forgotten.iter().copied()
    }

    pub fn is_forgotten(&self, mac: Mac) -> bool {
        self.forgotten.contains(&mac)
    }

    /// Whether `address` is on a network served here.
    pub fn is_served(&self, address: Ipv4Addr) -> bool {
        self.served_subnets
            .iter()
            .any(|subnet| subnet.contains(&address))
    }

    /// Who `address` is at `now`, given the MAC the neighbour table shows for it.
    pub fn who(
        &self,
        now: u64,
        address: Ipv4Addr,
        neighbour: Option<Mac>,
    ) -> Result<Device, Refusal> {
        if !self.is_served(address) {
            return Err(Refusal::NotServed);
        }
        let lease = self
            .leases
            .get(&address)
            .filter(|lease| lease.expires > now)
            .ok_or(Refusal::NoLease)?;
        let seen = neighbour.ok_or(Refusal::NoNeighbour)?;
        if seen != lease.mac {
            return Err(Refusal::MacMismatch);
        }
        if self.forgotten.contains(&lease.mac) {
            return Err(Refusal::Forgotten);
        }
        Ok(Device {
            mac: lease.mac,
            address,
            name: lease.hostname.clone().unwrap_or_else(|| lease.mac.dashed()),
            class: self.classes.class_of(lease.mac).map(str::to_owned),
            network: lease.network.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::testing::config()
    }

    fn lease(mac: &str, network: &str, expires: u64) -> Lease {
        Lease {
            client_id: None,
            address: Ipv4Addr::UNSPECIFIED,
            mac: mac.to_owned(),
            hostname: None,
            network: network.to_owned(),
            expires,
            class: None,
        }
    }

    const CAMERA: &str = "00:80:f0:00:00:01";

    #[test]
    fn a_device_is_its_lease_confirmed_by_the_neighbour_table() {
        let mut identity = Identity::from_config(&config());
        let address = Ipv4Addr::new(10, 101, 0, 50);
        let camera: Mac = CAMERA.parse().unwrap();
        assert_eq!(
            identity.who(0, address, Some(camera)),
            Err(Refusal::NoLease)
        );
        assert_eq!(
            identity.lease(address, Some(&lease(CAMERA, "NETWORK1", 1_000))),
            Some((camera, "00-80-f0-00-00-01".to_owned()))
        );
        let device = identity.who(10, address, Some(camera)).unwrap();
        assert_eq!(device.class.as_deref(), Some("cameras"));
        assert_eq!(
            identity.leased_name(camera).as_deref(),
            Some("00-80-f0-00-00-01")
        );
        // Someone else on that address, or nobody the kernel knows.
        let other: Mac = "02:00:00:00:00:09".parse().unwrap();
        assert_eq!(
            identity.who(10, address, Some(other)),
            Err(Refusal::MacMismatch)
        );
        assert_eq!(identity.who(10, address, None), Err(Refusal::NoNeighbour));
        // The lease runs out, or ends.
        assert_eq!(
            identity.who(1_000, address, Some(camera)),
            Err(Refusal::NoLease)
        );
        identity.lease(address, None);
        assert_eq!(
            identity.who(10, address, Some(camera)),
            Err(Refusal::NoLease)
        );
    }

    #[test]
    fn only_served_networks_are_answered_and_a_forgotten_device_is_not() {
        let mut identity = Identity::from_config(&config());
        let camera: Mac = CAMERA.parse().unwrap();
        let theirs = Ipv4Addr::new(10, 102, 0, 50);
        identity.lease(theirs, Some(&lease(CAMERA, "NETWORK2", 1_000)));
        assert_eq!(
            identity.who(0, theirs, Some(camera)),
            Err(Refusal::NotServed)
        );
        assert_eq!(
            identity.who(0, Ipv4Addr::new(192, 168, 8, 1), Some(camera)),
            Err(Refusal::NotServed),
            "the uplink side"
        );
        identity.taken("NETWORK2", true);
        assert!(identity.who(0, theirs, Some(camera)).is_ok());
        identity.forget(camera, true);
        assert_eq!(
            identity.who(0, theirs, Some(camera)),
            Err(Refusal::Forgotten)
        );
        identity.forget(camera, false);
        identity.taken("NETWORK2", false);
        assert_eq!(
            identity.who(0, theirs, Some(camera)),
            Err(Refusal::NotServed)
        );
    }

    #[test]
    fn macs_read_and_write() {
        let mac: Mac = "02-00-5E-10-00-01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:00:5e:10:00:01");
        assert_eq!(mac.dashed(), "02-00-5e-10-00-01");
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:00:5e:10:00:01\""
        );
        assert!("02:00:5e".parse::<Mac>().is_err());
    }
}
