//! The device list's rules, one test each, in simulated time.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use fieldnet::bus::topics::{DeviceEvent, DeviceSource, DeviceState};
use fieldnet::names::Mac;

use super::*;

/// Two areas' networks, a routed range, cameras by MAC prefix, a reserved printer; a device is
/// gone after 30 s of silence and forgotten 10 minutes later.
const SITE: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[areas]]
name = "south"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"

[[networks.reservations]]
mac = "00:22:33:00:00:09"
address = "10.101.0.9"
hostname = "printer-north"

[[networks]]
name = "NETWORK2"
area = "south"
subnet = "10.102.0.0/24"
gateway = "10.102.0.1"
interface = "lan1"

[[appliances]]
id = 1
name = "one"
area = "north"

[[appliances]]
id = 2
name = "two"
area = "south"

[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80:f0"]

[inventory]
gone_after_s = 30
forget_after_s = 600
routed = ["10.60.0.0/24"]
"#;

const CAMERA: Mac = Mac([0, 0x80, 0xf0, 0, 0, 1]);
const PHONE: Mac = Mac([0x02, 0x11, 0x22, 0, 0, 7]);
const PRINTER: Mac = Mac([0, 0x22, 0x33, 0, 0, 9]);

fn devices() -> Devices {
    let config = fieldnet::config::SiteConfig::from_str(SITE, "test.toml")
        .unwrap()
        .view("one")
        .unwrap()
        .clone();
    Devices::from_config(&config, Vendors::parse("0080F0\tPanasonic\n"))
}

fn address(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn arp(at: &str, mac: Mac) -> Sighting {
    Sighting::new(DeviceSource::Arp, address(at)).mac(mac)
}

fn events(updates: &[Update]) -> Vec<(Option<DeviceEvent>, String)> {
    updates
        .iter()
        .map(|update| match update {
            Update::Changed { event, device } => (*event, device.id.clone()),
            Update::Forgotten { id } => (None, format!("forgotten {id}")),
        })
        .collect()
}

#[test]
fn a_new_device_joins_with_its_network_area_class_vendor_and_source() {
    let mut devices = devices();
    let updates = devices.seen(1_000, arp("10.101.0.50", CAMERA));
    assert_eq!(
        events(&updates),
        [(Some(DeviceEvent::Joined), CAMERA.to_string())]
    );
    let device = devices.get(&CAMERA.to_string()).unwrap();
    assert_eq!(device.network, "NETWORK1");
    assert_eq!(device.area.as_deref(), Some("north"));
    assert_eq!(device.class.as_deref(), Some("cameras"));
    assert_eq!(device.vendor.as_deref(), Some("Panasonic"));
    assert_eq!(device.state, DeviceState::Present);
    assert_eq!(device.sources[0].source, DeviceSource::Arp);
    assert_eq!(device.name, CAMERA.to_string());
}

#[test]
fn names_come_from_the_lease_else_the_reservation_else_the_id() {
    let mut devices = devices();
    devices.seen(1_000, arp("10.101.0.9", PRINTER));
    assert_eq!(
        devices.get(&PRINTER.to_string()).unwrap().name,
        "printer-north"
    );
    let mut lease = arp("10.101.0.60", PHONE);
    lease.source = DeviceSource::Lease;
    lease.hostname = Some("anna-phone".into());
    devices.seen(1_000, lease);
    let phone = devices.get(&PHONE.to_string()).unwrap();
    assert_eq!(phone.name, "anna-phone");
    // A locally administered MAC has no vendor.
    assert_eq!(phone.vendor, None);
}

#[test]
fn addresses_outside_the_site_and_the_gateways_are_not_devices() {
    let mut devices = devices();
    // The 4G router on an uplink, and the appliance itself.
    assert!(devices.seen(1_000, arp("192.168.8.1", PHONE)).is_empty());
    assert!(devices.seen(1_000, arp("10.101.0.1", PHONE)).is_empty());
    // Nor as a WireGuard peer's tunnel address (found by the fuzz target).
    let mut peer = Sighting::new(DeviceSource::Wireguard, address("10.101.0.1"));
    peer.peer = Some("KEY=".into());
    assert!(devices.seen(1_000, peer).is_empty());
    assert_eq!(devices.list().count(), 0);
}

#[test]
fn a_network_a_source_names_counts_only_when_the_site_has_it_there() {
    // Found by the fuzz target: a lease naming a network the site does not have put the
    // device on it.
    let mut devices = devices();
    let mut lease = Sighting::new(DeviceSource::Lease, address("10.101.0.50")).mac(CAMERA);
    lease.network = Some("elsewhere".into());
    devices.seen(1_000, lease.clone());
    assert_eq!(
        devices.get(&CAMERA.to_string()).unwrap().network,
        "NETWORK1"
    );
    // NETWORK2 is the site's, but not where 10.101.0.50 is.
    lease.network = Some("NETWORK2".into());
    devices.seen(2_000, lease);
    assert_eq!(
        devices.get(&CAMERA.to_string()).unwrap().network,
        "NETWORK1"
    );
}

#[test]
fn one_miss_is_not_gone_silence_for_gone_after_is() {
    let mut devices = devices();
    devices.seen(0, arp("10.101.0.50", CAMERA));
    assert!(devices.tick(29_999).is_empty());
    devices.seen(20_000, arp("10.101.0.50", CAMERA));
    assert!(
        devices.tick(49_999).is_empty(),
        "seen at 20 s: not gone before 50 s"
    );
    let updates = devices.tick(50_000);
    assert_eq!(
        events(&updates),
        [(Some(DeviceEvent::Gone), CAMERA.to_string())]
    );
    assert_eq!(
        devices.get(&CAMERA.to_string()).unwrap().state,
        DeviceState::Gone
    );
    // Still listed as gone, then forgotten ten minutes after it went.
    assert!(devices.tick(649_999).is_empty());
    assert_eq!(
        events(&devices.tick(650_000)),
        [(None, format!("forgotten {CAMERA}"))]
    );
    assert_eq!(devices.list().count(), 0);
}

#[test]
fn a_gone_device_seen_again_has_returned() {
    let mut devices = devices();
    devices.seen(0, arp("10.101.0.50", CAMERA));
    devices.tick(30_000);
    let updates = devices.seen(40_000, arp("10.101.0.50", CAMERA));
    assert_eq!(
        events(&updates),
        [(Some(DeviceEvent::Returned), CAMERA.to_string())]
    );
    let device = devices.get(&CAMERA.to_string()).unwrap();
    assert_eq!((device.state, device.since), (DeviceState::Present, 40_000));
    assert_eq!(device.first_seen, 0);
}

#[test]
fn a_device_that_changes_network_keeps_its_identity_and_has_moved() {
    let mut devices = devices();
    devices.seen(0, arp("10.101.0.50", CAMERA));
    let updates = devices.seen(5_000, arp("10.102.0.77", CAMERA));
    assert_eq!(
        events(&updates),
        [(Some(DeviceEvent::Moved), CAMERA.to_string())]
    );
    let device = devices.get(&CAMERA.to_string()).unwrap();
    assert_eq!(
        (device.network.as_str(), device.area.as_deref()),
        ("NETWORK2", Some("south"))
    );
    assert_eq!(device.first_seen, 0);
    assert_eq!(devices.list().count(), 1);
}

#[test]
fn a_new_mac_with_a_known_client_identifier_is_the_same_device() {
    let mut devices = devices();
    let mut first = arp("10.101.0.60", PHONE);
    first.client_id = Some("ff:00:11:22:33".into());
    first.source = DeviceSource::Lease;
    devices.seen(0, first);
    let other_mac = Mac([0x06, 0x99, 0x88, 0, 0, 1]);
    let mut second = arp("10.102.0.61", other_mac);
    second.client_id = Some("ff:00:11:22:33".into());
    second.source = DeviceSource::Lease;
    let updates = devices.seen(1_000, second);
    assert_eq!(
        events(&updates),
        [
            (None, format!("forgotten {PHONE}")),
            (Some(DeviceEvent::Moved), other_mac.to_string())
        ]
    );
    assert_eq!(devices.list().count(), 1);
    assert_eq!(devices.get(&other_mac.to_string()).unwrap().first_seen, 0);
}

#[test]
fn a_routed_device_is_its_address_until_its_mac_is_seen() {
    let mut devices = devices();
    devices.seen(0, Sighting::new(DeviceSource::Icmp, address("10.60.0.5")));
    let device = devices.get("ip-10.60.0.5").unwrap();
    assert_eq!(device.network, "10.60.0.0/24");
    assert_eq!(device.area.as_deref(), Some("north"));
    let updates = devices.seen(1_000, arp("10.60.0.5", CAMERA));
    assert_eq!(events(&updates)[0], (None, "forgotten ip-10.60.0.5".into()));
    assert_eq!(devices.list().count(), 1);
    assert_eq!(devices.get(&CAMERA.to_string()).unwrap().first_seen, 0);
}

#[test]
fn a_wireguard_peer_is_its_key_on_the_vpn() {
    let mut devices = devices();
    let mut peer = Sighting::new(DeviceSource::Wireguard, address("10.253.0.40"));
    peer.peer = Some("ab+cd/ef==".into());
    devices.seen(0, peer);
    let device = devices.get("wg-ab-cd_ef").unwrap();
    assert_eq!(device.network, VPN_NETWORK);
}

#[test]
fn seen_again_unchanged_is_published_at_most_once_a_minute() {
    let mut devices = devices();
    devices.seen(0, arp("10.101.0.50", CAMERA));
    let generation = devices.generation();
    assert!(devices.seen(10_000, arp("10.101.0.50", CAMERA)).is_empty());
    assert!(devices.seen(59_999, arp("10.101.0.50", CAMERA)).is_empty());
    assert_eq!(
        devices.generation(),
        generation,
        "nothing that renders changed"
    );
    let again = devices.seen(60_000, arp("10.101.0.50", CAMERA));
    assert_eq!(events(&again), [(None, CAMERA.to_string())]);
    // A second source is a change: published at once.
    let mut lease = arp("10.101.0.50", CAMERA);
    lease.source = DeviceSource::Lease;
    assert_eq!(devices.seen(61_000, lease).len(), 1);
    assert_eq!(devices.get(&CAMERA.to_string()).unwrap().sources.len(), 2);
}

#[test]
fn exporter_ports_are_kept_and_an_open_port_is_a_sighting() {
    let mut devices = devices();
    devices.seen(0, arp("10.101.0.50", CAMERA));
    let id = CAMERA.to_string();
    let updates = devices.ports(5_000, &id, BTreeSet::from([9100]));
    assert_eq!(updates.len(), 1);
    let device = devices.get(&id).unwrap();
    assert_eq!(device.ports, [9100]);
    assert_eq!(device.last_seen, 5_000);
    // Closed again: published, and no longer a sighting.
    assert_eq!(devices.ports(6_000, &id, BTreeSet::new()).len(), 1);
    assert!(devices.get(&id).unwrap().ports.is_empty());
    assert!(devices.ports(7_000, &id, BTreeSet::new()).is_empty());
    assert_eq!(devices.get(&id).unwrap().last_seen, 5_000);
    // A gone device has no open ports (nothing scrapes it).
    devices.ports(8_000, &id, BTreeSet::from([9100]));
    devices.tick(38_000);
    assert!(devices.get(&id).unwrap().ports.is_empty());
}

#[test]
fn a_restored_list_keeps_its_times() {
    let mut before = devices();
    before.seen(0, arp("10.101.0.50", CAMERA));
    let saved: Vec<_> = before.list().cloned().collect();
    let mut after = devices();
    after.restore(saved);
    assert!(after.tick(29_000).is_empty());
    assert_eq!(
        after.tick(30_000).len(),
        1,
        "gone on time across the restart"
    );
}
