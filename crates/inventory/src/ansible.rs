//! The Ansible dynamic inventory (`inventory ansible --list` / `--host NAME`): the present
//! devices as hosts, grouped by area (`area_<name>`), network (`network_<name>`) and class
//! (`class_<name>`), with `_meta.hostvars` so Ansible asks once. Group names are what Ansible
//! accepts without warning (letters, digits, `_`); a host name two devices share gets each
//! device's id after it.

use std::collections::{BTreeMap, BTreeSet};

use fieldnet::bus::topics::{Device, DeviceState};
use serde_json::{Value, json};

/// `--list`.
pub fn list<'d>(devices: impl Iterator<Item = &'d Device>) -> Value {
    let hosts = hosts(devices);
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hostvars = serde_json::Map::new();
    for (name, device) in &hosts {
        let mut member_of = vec![group("network", &device.network)];
        if let Some(area) = &device.area {
            member_of.push(group("area", area));
        }
        if let Some(class) = &device.class {
            member_of.push(group("class", class));
        }
        for group in member_of {
            groups.entry(group).or_default().insert(name.clone());
        }
        hostvars.insert(name.clone(), vars(device));
    }
    let mut inventory = serde_json::Map::new();
    inventory.insert("_meta".into(), json!({ "hostvars": hostvars }));
    inventory.insert(
        "all".into(),
        json!({ "children": groups.keys().cloned().chain(["ungrouped".to_owned()]).collect::<Vec<_>>() }),
    );
    for (group, members) in groups {
        inventory.insert(group, json!({ "hosts": members }));
    }
    Value::Object(inventory)
}

/// `--host NAME`: that host's variables (`{}` for a host not known, as Ansible expects).
pub fn host<'d>(devices: impl Iterator<Item = &'d Device>, name: &str) -> Value {
    hosts(devices)
        .into_iter()
        .find(|(host, _)| host == name)
        .map_or_else(|| json!({}), |(_, device)| vars(device))
}

/// The present devices by host name, names made unique.
fn hosts<'d>(devices: impl Iterator<Item = &'d Device>) -> Vec<(String, &'d Device)> {
    let present: Vec<&Device> = devices
        .filter(|device| device.state == DeviceState::Present)
        .collect();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for device in &present {
        *count.entry(device.name.as_str()).or_default() += 1;
    }
    let mut hosts: Vec<(String, &Device)> = present
        .iter()
        .map(|device| {
            let name = if count[device.name.as_str()] > 1 {
                format!("{}_{}", device.name, device.id)
            } else {
                device.name.clone()
            };
            (name, *device)
        })
        .collect();
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    hosts
}

fn vars(device: &Device) -> Value {
    json!({
        "ansible_host": device.address.to_string(),
        "fieldnet_id": device.id,
        "fieldnet_mac": device.mac.map(|mac| mac.to_string()),
        "fieldnet_network": device.network,
        "fieldnet_area": device.area,
        "fieldnet_class": device.class,
        "fieldnet_vendor": device.vendor,
        "fieldnet_ports": device.ports,
    })
}

/// `kind_name`, lower case, anything but letters and digits turned into `_`.
fn group(kind: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{kind}_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sd::tests::device;

    #[test]
    fn hosts_are_grouped_by_area_network_and_class_with_their_vars() {
        let mut camera = device("00:80:f0:00:00:01", "10.101.0.50", &[9100], 1);
        camera.name = "cam-1".into();
        camera.class = Some("cameras".into());
        let mut routed = device("ip-10.60.0.5", "10.60.0.5", &[], 1);
        routed.network = "10.60.0.0/24".into();
        let mut gone = device("old", "10.101.0.9", &[], 1);
        gone.state = DeviceState::Gone;
        let devices = [camera, routed, gone];
        let inventory = list(devices.iter());
        assert_eq!(
            inventory["area_north"]["hosts"],
            json!(["cam-1", "ip-10.60.0.5"])
        );
        assert_eq!(inventory["network_network1"]["hosts"], json!(["cam-1"]));
        assert_eq!(
            inventory["network_10_60_0_0_24"]["hosts"],
            json!(["ip-10.60.0.5"])
        );
        assert_eq!(inventory["class_cameras"]["hosts"], json!(["cam-1"]));
        assert_eq!(
            inventory["_meta"]["hostvars"]["cam-1"]["ansible_host"],
            "10.101.0.50"
        );
        assert!(
            inventory["_meta"]["hostvars"].get("old").is_none(),
            "gone devices are not hosts"
        );
        assert!(
            inventory["all"]["children"]
                .as_array()
                .unwrap()
                .contains(&json!("class_cameras"))
        );
        assert_eq!(host(devices.iter(), "cam-1")["fieldnet_class"], "cameras");
        assert_eq!(host(devices.iter(), "nobody"), json!({}));
    }

    #[test]
    fn a_shared_name_is_made_unique_by_id() {
        let mut a = device("aa", "10.101.0.50", &[], 1);
        let mut b = device("bb", "10.101.0.51", &[], 1);
        a.name = "printer".into();
        b.name = "printer".into();
        let inventory = list([a, b].iter());
        assert_eq!(
            inventory["network_network1"]["hosts"],
            json!(["printer_aa", "printer_bb"])
        );
    }
}
