//! Prometheus service discovery from the device list: for each exporter job, one target group
//! per present device whose port took a connection, labelled `area`, `network`, `class` and
//! `name` (a label without a value is left out). The same JSON serves HTTP SD (`/sd/<job>`) and
//! file_sd. One address is one target: if two present devices claim it, the one seen last.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use fieldnet::bus::topics::{Device, DeviceState};
use serde::Serialize;

/// One target group as Prometheus reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<&'static str, String>,
}

/// The groups of the job whose exporter listens on `port`, by address.
pub fn target_groups<'d>(devices: impl Iterator<Item = &'d Device>, port: u16) -> Vec<TargetGroup> {
    let mut by_address: BTreeMap<Ipv4Addr, &Device> = BTreeMap::new();
    for device in devices {
        if device.state != DeviceState::Present || !device.ports.contains(&port) {
            continue;
        }
        let newer = by_address
            .get(&device.address)
            .is_none_or(|other| other.last_seen < device.last_seen);
        if newer {
            by_address.insert(device.address, device);
        }
    }
    by_address
        .into_values()
        .map(|device| {
            let mut labels = BTreeMap::new();
            labels.insert("network", device.network.clone());
            labels.insert("name", device.name.clone());
            if let Some(area) = &device.area {
                labels.insert("area", area.clone());
            }
            if let Some(class) = &device.class {
                labels.insert("class", class.clone());
            }
            TargetGroup {
                targets: vec![format!("{}:{port}", device.address)],
                labels,
            }
        })
        .collect()
}

/// The JSON body of `/sd/<job>` and of the job's file_sd file.
pub fn render(groups: &[TargetGroup]) -> Vec<u8> {
    serde_json::to_vec(groups).expect("target groups serialise")
}

#[cfg(test)]
pub(crate) mod tests {
    use fieldnet::bus::topics::DeviceState;

    use super::*;

    pub(crate) fn device(id: &str, address: &str, ports: &[u16], last_seen: u64) -> Device {
        Device {
            id: id.into(),
            mac: None,
            client_id: None,
            address: address.parse().unwrap(),
            network: "NETWORK1".into(),
            area: Some("north".into()),
            class: None,
            vendor: None,
            hostname: None,
            name: id.into(),
            state: DeviceState::Present,
            since: 0,
            first_seen: 0,
            last_seen,
            sources: Vec::new(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn only_present_devices_with_the_port_open_are_targets() {
        let mut camera = device("cam-1", "10.101.0.50", &[9100], 5);
        camera.class = Some("cameras".into());
        let silent = device("till-1", "10.101.0.51", &[], 5);
        let mut gone = device("old", "10.101.0.52", &[9100], 5);
        gone.state = DeviceState::Gone;
        let other_port = device("snmp", "10.101.0.53", &[9116], 5);
        let groups = target_groups([camera, silent, gone, other_port].iter(), 9100);
        let json = String::from_utf8(render(&groups)).unwrap();
        assert_eq!(
            json,
            r#"[{"targets":["10.101.0.50:9100"],"labels":{"area":"north","class":"cameras","name":"cam-1","network":"NETWORK1"}}]"#
        );
    }

    #[test]
    fn an_address_claimed_twice_is_the_device_seen_last() {
        let old = device("old", "10.101.0.50", &[9100], 5);
        let new = device("new", "10.101.0.50", &[9100], 9);
        let groups = target_groups([new, old].iter(), 9100);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].labels["name"], "new");
        assert_eq!(render(&target_groups([].iter(), 9100)), b"[]");
    }
}
