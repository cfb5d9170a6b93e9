//! inventory's inputs from the network and from other programs never panic, and what it makes
//! of them keeps its rules. The first byte picks the input:
//! - 0: a frame off the wire (an ARP message from a packet socket, an IPv4 packet from the ICMP
//!   socket): what the parsers return is what the bytes say;
//! - 1: text (a vendor table, `wg show all dump`): connected peers shook hands lately;
//! - 2: a lease body from the bus (JSON), merged into the device list;
//! - 3: a script of sightings from every source, ticks and probes, in 4-byte steps.
//!
//! After 2 and 3 the list keeps its rules: one device per MAC, only the site's addresses, and
//! the outputs stay what Prometheus and Ansible read (`/sd/<job>` groups with only `targets` and
//! `labels`, one Ansible host per present device, group names of letters, digits and `_`).
#![no_main]

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use fieldnet::bus::topics::{DeviceSource, DeviceState, Lease};
use fieldnet::config::{Config, SiteConfig};
use fieldnet::names::Mac;
use inventory::devices::{Devices, Sighting, VPN_NETWORK};
use inventory::oui::Vendors;
use inventory::{ansible, frames, sd, wireguard};
use libfuzzer_sys::fuzz_target;

const SITE: &str = r#"
[site]
name = "fuzz"
domain = "fuzz.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[areas]]
name = "north"
[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"
[[appliances]]
id = 1
name = "one"
area = "north"
[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80:f0"]
[inventory]
routed = ["10.60.0.0/24"]
"#;

const NOW: u64 = 1_800_000_000_000;
const PORT: u16 = 9100;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        SiteConfig::from_str(SITE, "fuzz.toml")
            .unwrap()
            .view("one")
            .unwrap()
            .clone()
    })
}

fn devices() -> Devices {
    Devices::from_config(config(), Vendors::parse("0080F0\tPanasonic\n"))
}

/// The list's rules and its outputs' shapes.
fn check(devices: &Devices) {
    let mut macs = HashSet::new();
    let mut present = 0;
    for device in devices.list() {
        if let Some(mac) = device.mac {
            assert!(macs.insert(mac), "two devices with {mac}");
        }
        let on_site = device.network == "NETWORK1"
            || device.network == "10.60.0.0/24"
            || device.network == VPN_NETWORK;
        assert!(on_site, "{} on {}", device.id, device.network);
        assert_ne!(
            device.address,
            Ipv4Addr::new(10, 101, 0, 1),
            "the gateway is no device"
        );
        assert!(device.first_seen <= device.last_seen);
        if device.state == DeviceState::Present {
            present += 1;
        }
    }
    let body = sd::render(&sd::target_groups(devices.list(), PORT));
    let groups: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for group in groups.as_array().unwrap() {
        let keys: BTreeSet<&str> = group
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["labels", "targets"]));
        for target in group["targets"].as_array().unwrap() {
            assert!(target.as_str().unwrap().ends_with(":9100"));
        }
    }
    let inventory = ansible::list(devices.list());
    let hostvars = inventory["_meta"]["hostvars"].as_object().unwrap();
    assert_eq!(
        hostvars.len(),
        present,
        "one Ansible host per present device"
    );
    for group in inventory.as_object().unwrap().keys() {
        assert!(
            group == "_meta" || group.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "group {group:?}"
        );
    }
}

fn frame(data: &[u8]) {
    if let Some((address, mac)) = frames::arp_sender(data) {
        assert_eq!(&data[8..14], &mac.0);
        assert_eq!(&data[14..18], &address.octets());
    }
    let identifier = u16::from_be_bytes([*data.first().unwrap_or(&0), *data.get(1).unwrap_or(&0)]);
    if let Some(address) = frames::echo_reply_from(data, identifier) {
        assert_eq!(data[0] >> 4, 4);
        assert_eq!(&data[12..16], &address.octets());
    }
}

fn text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vendors = Vendors::parse(&text);
    if let Some(bytes) = data.get(..6) {
        let mac = Mac(bytes.try_into().unwrap());
        if vendors.lookup(mac).is_some() {
            assert_eq!(mac.0[0] & 0x02, 0, "a local MAC has no vendor");
        }
    }
    let now_s = NOW / 1000;
    for peer in wireguard::connected_peers(&text, now_s) {
        assert!(now_s.saturating_sub(peer.handshake) <= wireguard::HANDSHAKE_FRESH_S);
    }
}

fn lease(data: &[u8]) {
    let Ok(lease) = serde_json::from_slice::<Lease>(data) else {
        return;
    };
    let mut devices = devices();
    if let Some(sighting) = Sighting::lease(lease.address, lease) {
        devices.seen(NOW, sighting);
    }
    check(&devices);
}

fn script(data: &[u8]) {
    const SOURCES: [DeviceSource; 6] = [
        DeviceSource::Lease,
        DeviceSource::Neighbour,
        DeviceSource::Arp,
        DeviceSource::Icmp,
        DeviceSource::Exporter,
        DeviceSource::Wireguard,
    ];
    let mut devices = devices();
    let mut now = NOW;
    for step in data.chunks_exact(4) {
        let [op, place, id, wait] = [step[0], step[1], step[2], step[3]];
        now += u64::from(wait) * 5_000;
        let address = match place {
            0..128 => Ipv4Addr::new(10, 101, 0, place),
            128..200 => Ipv4Addr::new(10, 60, 0, place - 128),
            200..240 => Ipv4Addr::new(10, 99, 0, place - 200),
            _ => Ipv4Addr::new(203, 0, 113, place),
        };
        match op >> 6 {
            0 => {
                devices.tick(now);
            }
            1 => {
                let some_id = devices
                    .list()
                    .nth(usize::from(id) % 8)
                    .map(|d| d.id.clone());
                if let Some(some_id) = some_id {
                    let open = if op & 1 == 1 {
                        BTreeSet::from([PORT])
                    } else {
                        BTreeSet::new()
                    };
                    devices.ports(now, &some_id, open);
                }
            }
            _ => {
                let mut sighting =
                    Sighting::new(SOURCES[usize::from(op & 0x07) % SOURCES.len()], address);
                if op & 0x08 != 0 {
                    sighting.mac = Some(Mac([0, 0x80, 0xf0, 0, 0, id]));
                }
                if op & 0x10 != 0 {
                    sighting.client_id = Some(format!("01:{:02x}", id % 4));
                }
                if op & 0x20 != 0 {
                    sighting.network =
                        Some(if id & 1 == 0 { "NETWORK1" } else { "elsewhere" }.into());
                    sighting.hostname = Some(format!("h{}", id % 3));
                }
                if sighting.source == DeviceSource::Wireguard {
                    sighting.peer = Some(format!("key{}", id % 5));
                }
                devices.seen(now, sighting);
            }
        }
        check(&devices);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => frame(rest),
        1 => text(rest),
        2 => lease(rest),
        _ => script(rest),
    }
});
