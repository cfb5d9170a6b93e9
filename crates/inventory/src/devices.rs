//! The device list: every sighting from every source (a lease, the neighbour table, a sweep's
//! answer, an exporter's port, a WireGuard handshake) merged into one entry per device.
//!
//! Rules, as the tests read:
//! - A device is its MAC; a lease whose client identifier belongs to a device with another MAC
//!   is that device with a new MAC. Without a MAC (behind a router, a VPN peer) it is its
//!   address or its WireGuard key; once its MAC is seen, that entry becomes the MAC's.
//! - Only addresses of the site are devices: a site network, a routed range, or the VPN. The
//!   networks' gateways are the appliances, not devices.
//! - A device is gone after `gone_after` with no sighting at all (one miss is not enough), and
//!   forgotten `forget_after` later. Seen again, it has returned; seen on another network, it
//!   has moved; a new device has joined.
//! - An update goes out on every change, and at most once a minute while a device is only
//!   seen again, so the bus is not flooded by sweeps.
//!
//! Pure: time is an argument (milliseconds since the Unix epoch), nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use fieldnet::bus::topics::{Device, DeviceEvent, DeviceSource, DeviceState, Lease, SourceSeen};
use fieldnet::config::{Config, DhcpTakeoverConfig, InventoryConfig};
use fieldnet::names::Mac;
use ipnet::Ipv4Net;

use crate::oui::Vendors;

/// An unchanged device is published again after this long of being seen.
pub const REPUBLISH_MS: u64 = 60_000;
/// The network name of WireGuard peers.
pub const VPN_NETWORK: &str = "vpn";

/// One source's word that a device is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub source: DeviceSource,
    pub address: Ipv4Addr,
    pub mac: Option<Mac>,
    pub client_id: Option<String>,
    /// A WireGuard peer's public key.
    pub peer: Option<String>,
    pub hostname: Option<String>,
    /// The network the source names (a lease's); otherwise found from the address.
    pub network: Option<String>,
}

impl Sighting {
    pub fn new(source: DeviceSource, address: Ipv4Addr) -> Sighting {
        Sighting {
            source,
            address,
            mac: None,
            client_id: None,
            peer: None,
            hostname: None,
            network: None,
        }
    }

    pub fn mac(mut self, mac: Mac) -> Sighting {
        self.mac = Some(mac);
        self
    }

    /// A lease on the bus (`dhcp/lease/<address>`'s body): its device, with what it called
    /// itself and the network it was leased on. `None` when the MAC is not one.
    pub fn lease(address: Ipv4Addr, lease: Lease) -> Option<Sighting> {
        let mac = lease.mac.parse::<Mac>().ok()?;
        let mut sighting = Sighting::new(DeviceSource::Lease, address).mac(mac);
        sighting.client_id = lease.client_id;
        sighting.hostname = lease.hostname;
        sighting.network = Some(lease.network);
        Some(sighting)
    }
}

/// What the edge publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// `dev/<id>` with this body; `event` when something happened to the device.
    Changed {
        event: Option<DeviceEvent>,
        device: Box<Device>,
    },
    /// `dev/<id>` cleared.
    Forgotten { id: String },
}

/// A network devices are on: a site network, or a routed range (named by itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    range: Ipv4Net,
    network: String,
    area: Option<String>,
    gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
struct Entry {
    device: Device,
    /// `last_seen` when the device was last handed out in an update.
    reported_seen: u64,
}

/// The merged list.
#[derive(Debug)]
pub struct Devices {
    places: Vec<Place>,
    dhcp: DhcpTakeoverConfig,
    vendors: Vendors,
    gone_after: u64,
    forget_after: u64,
    entries: BTreeMap<String, Entry>,
    /// Counts the changes of the list (see [`Devices::generation`]).
    generation: u64,
}

impl Devices {
    pub fn from_config(config: &Config, vendors: Vendors) -> Devices {
        let settings: &InventoryConfig = &config.agents.inventory;
        let mut places: Vec<Place> = config
            .networks
            .iter()
            .map(|network| Place {
                range: network.subnet,
                network: network.name.clone(),
                area: Some(network.area.clone()),
                gateway: Some(network.gateway),
            })
            .collect();
        places.extend(settings.routed.iter().map(|range| Place {
            range: *range,
            network: range.to_string(),
            area: Some(config.appliance.area.clone()),
            gateway: None,
        }));
        Devices {
            places,
            dhcp: config.agents.dhcp_takeover.clone(),
            vendors,
            gone_after: settings.gone_after.as_millis() as u64,
            forget_after: settings.forget_after.as_millis() as u64,
            entries: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Takes back the list saved before a restart (their times kept, so a device silent
    /// across the restart is gone on time).
    pub fn restore(&mut self, saved: Vec<Device>) {
        for device in saved {
            let reported_seen = device.last_seen;
            self.entries.insert(
                device.id.clone(),
                Entry {
                    device,
                    reported_seen,
                },
            );
        }
        self.generation += 1;
    }

    /// Every device, by id.
    pub fn list(&self) -> impl Iterator<Item = &Device> {
        self.entries.values().map(|entry| &entry.device)
    }

    pub fn get(&self, id: &str) -> Option<&Device> {
        self.entries.get(id).map(|entry| &entry.device)
    }

    /// A number that changes whenever the list does (renderings are cached by it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The network and area an address is on, if it is a device's address of the site.
    fn place_of(&self, address: Ipv4Addr) -> Option<&Place> {
        self.places
            .iter()
            .filter(|place| place.range.contains(&address))
            .max_by_key(|place| place.range.prefix_len())
    }

    /// A source saw a device.
    pub fn seen(&mut self, now: u64, sighting: Sighting) -> Vec<Update> {
        let (source, address) = (sighting.source, sighting.address);
        // The networks' gateways are the appliances, whichever source names them.
        if self
            .places
            .iter()
            .any(|place| place.gateway == Some(address))
        {
            return Vec::new();
        }
        let place = if source == DeviceSource::Wireguard {
            Some(Place {
                range: Ipv4Net::from(address),
                network: VPN_NETWORK.to_owned(),
                area: None,
                gateway: None,
            })
        } else {
            // The network the source names when it is one of the site's and holds the
            // address (a name from elsewhere is not taken on trust); else the address's.
            let named = sighting.network.as_deref().and_then(|name| {
                self.places
                    .iter()
                    .find(|place| place.network == name && place.range.contains(&address))
            });
            named.or_else(|| self.place_of(address)).cloned()
        };
        let Some(place) = place else {
            return Vec::new();
        };
        let id = match (sighting.mac, &sighting.peer) {
            (Some(mac), _) => mac.to_string(),
            (None, Some(key)) => format!("wg-{}", url_safe(key)),
            (None, None) => format!("ip-{address}"),
        };
        let mut updates = Vec::new();
        // The same device under an older id: its MAC changed (same client identifier), or it
        // was known by its address before its MAC was seen.
        let mut earlier: Option<Entry> = None;
        if !self.entries.contains_key(&id) {
            let older = self
                .entries
                .iter()
                .find(|(other, entry)| {
                    sighting.mac.is_some()
                        && (sighting.client_id.is_some()
                            && entry.device.client_id == sighting.client_id
                            || **other == format!("ip-{address}"))
                })
                .map(|(other, _)| other.clone());
            if let Some(older) = older {
                earlier = self.entries.remove(&older);
                updates.push(Update::Forgotten { id: older });
            }
        }
        let class = sighting
            .mac
            .and_then(|mac| self.dhcp.class_of(mac.0))
            .map(str::to_owned);
        let reservation_name = sighting.mac.and_then(|mac| {
            self.dhcp
                .reservations
                .iter()
                .find(|reservation| reservation.mac == mac.0)
                .and_then(|reservation| reservation.hostname.clone())
        });
        let vendor = sighting
            .mac
            .and_then(|mac| self.vendors.lookup(mac))
            .map(str::to_owned);

        let existing = self.entries.remove(&id).or(earlier);
        let (mut entry, event) = match existing {
            None => (
                Entry {
                    device: Device {
                        id: id.clone(),
                        mac: sighting.mac,
                        client_id: None,
                        address,
                        network: place.network.clone(),
                        area: place.area.clone(),
                        class: None,
                        vendor: None,
                        hostname: None,
                        name: String::new(),
                        state: DeviceState::Present,
                        since: now,
                        first_seen: now,
                        last_seen: now,
                        sources: Vec::new(),
                        ports: Vec::new(),
                    },
                    reported_seen: 0,
                },
                Some(DeviceEvent::Joined),
            ),
            Some(entry) => {
                let event = if entry.device.state == DeviceState::Gone {
                    Some(DeviceEvent::Returned)
                } else if entry.device.network != place.network {
                    Some(DeviceEvent::Moved)
                } else {
                    None
                };
                (entry, event)
            }
        };
        let before = entry.device.clone();
        let device = &mut entry.device;
        device.id = id.clone();
        device.mac = sighting.mac.or(device.mac);
        device.client_id = sighting.client_id.or(device.client_id.take());
        device.address = address;
        device.network = place.network;
        device.area = place.area;
        device.class = class.or(device.class.take());
        device.vendor = vendor.or(device.vendor.take());
        device.hostname = sighting.hostname.or(device.hostname.take());
        device.name = device
            .hostname
            .clone()
            .or(reservation_name)
            .unwrap_or_else(|| id.clone());
        if device.state == DeviceState::Gone {
            device.state = DeviceState::Present;
            device.since = now;
        }
        device.last_seen = device.last_seen.max(now);
        match device.sources.iter_mut().find(|seen| seen.source == source) {
            Some(seen) => seen.at = seen.at.max(now),
            None => {
                device.sources.push(SourceSeen { source, at: now });
                device.sources.sort_by_key(|seen| seen.source.as_str());
            }
        }
        let material = event.is_some() || !same_but_times(&before, device);
        if material || device.last_seen >= entry.reported_seen + REPUBLISH_MS {
            entry.reported_seen = device.last_seen;
            updates.push(Update::Changed {
                event,
                device: Box::new(device.clone()),
            });
        }
        if material {
            self.generation += 1;
        }
        self.entries.insert(id, entry);
        updates
    }

    /// The exporter ports of device `id` that took a connection at the last probe (a port
    /// answering is a sighting of its own).
    pub fn ports(&mut self, now: u64, id: &str, open: BTreeSet<u16>) -> Vec<Update> {
        let Some(entry) = self.entries.get_mut(id) else {
            return Vec::new();
        };
        let open: Vec<u16> = open.into_iter().collect();
        let changed = entry.device.ports != open;
        if changed {
            entry.device.ports.clone_from(&open);
            self.generation += 1;
        }
        let device = entry.device.clone();
        let mut updates = Vec::new();
        if !open.is_empty() {
            let mut sighting = Sighting::new(DeviceSource::Exporter, device.address);
            sighting.mac = device.mac;
            sighting.network = Some(device.network.clone());
            updates = self.seen(now, sighting);
        }
        if changed
            && updates.is_empty()
            && let Some(entry) = self.entries.get_mut(id)
        {
            entry.reported_seen = entry.device.last_seen;
            updates.push(Update::Changed {
                event: None,
                device: Box::new(entry.device.clone()),
            });
        }
        updates
    }

    /// Marks the silent devices gone and forgets the long-gone ones.
    pub fn tick(&mut self, now: u64) -> Vec<Update> {
        let mut updates = Vec::new();
        let mut forgotten = Vec::new();
        for (id, entry) in &mut self.entries {
            let device = &mut entry.device;
            match device.state {
                DeviceState::Present if now >= device.last_seen + self.gone_after => {
                    device.state = DeviceState::Gone;
                    device.since = now;
                    device.ports.clear();
                    entry.reported_seen = device.last_seen;
                    updates.push(Update::Changed {
                        event: Some(DeviceEvent::Gone),
                        device: Box::new(device.clone()),
                    });
                }
                DeviceState::Gone if now >= device.since + self.forget_after => {
                    forgotten.push(id.clone());
                }
                _ => {}
            }
        }
        for id in forgotten {
            self.entries.remove(&id);
            updates.push(Update::Forgotten { id });
        }
        if !updates.is_empty() {
            self.generation += 1;
        }
        updates
    }

    /// Present devices with a MAC on the network `network`: what a sweep asks by unicast first.
    pub fn known_on(&self, network: &str) -> Vec<(Ipv4Addr, Option<Mac>)> {
        self.list()
            .filter(|device| device.network == network && device.state == DeviceState::Present)
            .map(|device| (device.address, device.mac))
            .collect()
    }

    /// The present devices' ids and addresses: what the exporter probe tries.
    pub fn present(&self) -> Vec<(String, Ipv4Addr)> {
        self.list()
            .filter(|device| device.state == DeviceState::Present)
            .map(|device| (device.id.clone(), device.address))
            .collect()
    }
}

/// Whether `a` and `b` differ only in when they were last seen.
fn same_but_times(a: &Device, b: &Device) -> bool {
    let strip = |device: &Device| {
        let mut device = device.clone();
        device.last_seen = 0;
        for seen in &mut device.sources {
            seen.at = 0;
        }
        device
    };
    strip(a) == strip(b)
}

/// A WireGuard key (base64) as one topic and URL segment: `+` → `-`, `/` → `_`, no padding.
pub fn url_safe(key: &str) -> String {
    key.trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect()
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
