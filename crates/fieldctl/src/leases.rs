//! `fieldctl leases`: the bound DHCP leases this appliance knows (its own and its peers',
//! replicated), read from the retained `dhcp/lease/` topics dhcp-takeover keeps on the bus.

use std::path::Path;
use std::time::Duration;

use fieldnet::bus::topics::{Lease, TOPIC_DHCP_LEASES};

use crate::status::{human_duration, retained};

const BUS_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(socket: &Path, network: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut leases: Vec<Lease> = retained(socket, TOPIC_DHCP_LEASES, BUS_TIMEOUT).await?;
    leases.retain(|lease| network.is_none_or(|n| lease.network == n));
    leases.sort_by_key(|lease| (lease.network.clone(), lease.address));
    if json {
        println!("{}", serde_json::to_string_pretty(&leases)?);
        return Ok(());
    }
    for line in lines(&leases, fieldnet::bus::unix_millis()) {
        println!("{line}");
    }
    Ok(())
}

/// The table: one line per lease, then a count per network.
pub fn lines(leases: &[Lease], now: u64) -> Vec<String> {
    if leases.is_empty() {
        return vec!["no bound leases (is dhcp-takeover running? `fieldctl status`)".to_owned()];
    }
    let mut lines = vec![format!(
        "{:<10} {:<15} {:<17} {:<20} {:<10} {}",
        "network", "address", "mac", "hostname", "class", "expires in"
    )];
    for lease in leases {
        lines.push(format!(
            "{:<10} {:<15} {:<17} {:<20} {:<10} {}",
            lease.network,
            lease.address.to_string(),
            lease.mac,
            lease.hostname.as_deref().unwrap_or("-"),
            lease.class.as_deref().unwrap_or("-"),
            human_duration(lease.expires.saturating_sub(now))
        ));
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for lease in leases {
        *counts.entry(lease.network.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(network, count)| format!("{network} {count}"))
        .collect();
    lines.push(format!("{} leases: {}", leases.len(), summary.join(", ")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_read_as_a_table() {
        let lease = |address: &str, network: &str| Lease {
            client_id: None,
            address: address.parse().unwrap(),
            mac: "02:00:00:00:00:07".into(),
            hostname: Some("till-1".into()),
            network: network.into(),
            expires: 90_000,
            class: None,
        };
        let table = lines(
            &[
                lease("10.101.0.10", "NETWORK1"),
                lease("10.102.0.254", "NETWORK2"),
            ],
            30_000,
        );
        assert!(
            table[1].starts_with("NETWORK1   10.101.0.10     02:00:00:00:00:07 till-1"),
            "{}",
            table[1]
        );
        assert!(table[1].ends_with("1m00s"), "{}", table[1]);
        assert_eq!(table[3], "2 leases: NETWORK1 1, NETWORK2 1");
        assert!(lines(&[], 0)[0].starts_with("no bound leases"));
    }
}
