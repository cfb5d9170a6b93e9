//! `fieldctl devices`: the devices inventory knows on this appliance, in plain words, read from
//! the retained `dev/` topics it keeps on the bus.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fieldnet::bus::topics::{Device, DeviceState, TOPIC_DEVICES};

use crate::status::{human_duration, retained};

const BUS_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(socket: &Path, all: bool, json: bool) -> anyhow::Result<()> {
    let mut devices: Vec<Device> = retained(socket, TOPIC_DEVICES, BUS_TIMEOUT).await?;
    devices.retain(|device| all || device.state == DeviceState::Present);
    devices.sort_by(|a, b| (&a.network, a.address).cmp(&(&b.network, b.address)));
    if json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    for line in lines(&devices, fieldnet::bus::unix_millis()) {
        println!("{line}");
    }
    Ok(())
}

/// The table: one line per device, then a count per network and class.
pub fn lines(devices: &[Device], now: u64) -> Vec<String> {
    if devices.is_empty() {
        return vec![
            "no devices known (is inventory running? `fieldctl status`; --all lists gone ones too)"
                .to_owned(),
        ];
    }
    let mut lines = vec![format!(
        "{:<10} {:<15} {:<20} {:<10} {:<18} {:<8} {}",
        "network", "address", "name", "class", "vendor", "state", "seen"
    )];
    for device in devices {
        let vendor: String = device
            .vendor
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(18)
            .collect();
        let seen = match device.state {
            DeviceState::Present => format!(
                "{} ago by {}",
                human_duration(now.saturating_sub(device.last_seen)),
                sources(device)
            ),
            DeviceState::Gone => format!(
                "gone for {} (last seen {} ago)",
                human_duration(now.saturating_sub(device.since)),
                human_duration(now.saturating_sub(device.last_seen))
            ),
        };
        lines.push(format!(
            "{:<10} {:<15} {:<20} {:<10} {:<18} {:<8} {}",
            device.network,
            device.address.to_string(),
            device.name,
            device.class.as_deref().unwrap_or("-"),
            vendor,
            device.state.as_str(),
            seen
        ));
    }
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for device in devices {
        *counts
            .entry((device.network.as_str(), device.state.as_str()))
            .or_default() += 1;
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|((network, state), count)| format!("{network} {count} {state}"))
        .collect();
    lines.push(format!("{} devices: {}", devices.len(), summary.join(", ")));
    lines
}

/// The sources that saw the device most recently first, e.g. `arp, lease`.
fn sources(device: &Device) -> String {
    let mut seen = device.sources.clone();
    seen.sort_by_key(|seen| std::cmp::Reverse(seen.at));
    let words: Vec<&str> = seen.iter().map(|seen| seen.source.as_str()).collect();
    if words.is_empty() {
        "-".to_owned()
    } else {
        words.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use fieldnet::bus::topics::{DeviceSource, SourceSeen};

    use super::*;

    fn device(name: &str, address: &str, state: DeviceState) -> Device {
        Device {
            id: format!("id-{name}"),
            mac: None,
            client_id: None,
            address: address.parse().unwrap(),
            network: "NETWORK1".into(),
            area: Some("north".into()),
            class: Some("cameras".into()),
            vendor: Some("Panasonic Corporation of North America".into()),
            hostname: None,
            name: name.into(),
            state,
            since: 40_000,
            first_seen: 0,
            last_seen: 30_000,
            sources: vec![
                SourceSeen {
                    source: DeviceSource::Lease,
                    at: 10_000,
                },
                SourceSeen {
                    source: DeviceSource::Arp,
                    at: 30_000,
                },
            ],
            ports: vec![9100],
        }
    }

    #[test]
    fn devices_read_as_a_table_in_plain_words() {
        let table = lines(
            &[
                device("cam-1", "10.101.0.50", DeviceState::Present),
                device("cam-2", "10.101.0.51", DeviceState::Gone),
            ],
            100_000,
        );
        assert!(
            table[1].starts_with("NETWORK1   10.101.0.50     cam-1                cameras    Panasonic Corporat present  1m10s ago by arp, lease"),
            "{}",
            table[1]
        );
        assert!(
            table[2].ends_with("gone for 1m00s (last seen 1m10s ago)"),
            "{}",
            table[2]
        );
        assert_eq!(table[3], "2 devices: NETWORK1 1 gone, NETWORK1 1 present");
        assert!(lines(&[], 0)[0].starts_with("no devices known"));
    }
}
