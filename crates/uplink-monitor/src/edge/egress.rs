//! What traffic leaving through an uplink needs besides a route: masquerade (a 4G router only
//! knows its own LAN), a conntrack mark naming the uplink (so its flows can be forgotten when
//! traffic moves), and loose reverse-path filtering (probe replies arrive on uplinks that are
//! not the default route).
//!
//! Invariant: the nftables table `ip fieldnet_uplink` belongs to uplink-monitor alone and is
//! replaced whole, atomically, by one `nft -f` transaction.

use std::fmt::Write as _;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The nftables table this agent owns.
pub const TABLE: &str = "fieldnet_uplink";

/// One local uplink's egress: its interface and the conntrack mark its flows get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub interface: String,
    pub mark: u32,
}

/// The ruleset text for `nft -f`: delete-and-create in one transaction.
pub fn ruleset(egresses: &[Egress], masquerade: bool) -> String {
    let mut text = format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    text.push_str(
        "  chain tag_flows {\n    type filter hook postrouting priority mangle; policy accept;\n",
    );
    for egress in egresses {
        let _ = writeln!(
            text,
            "    ct state new oifname \"{}\" ct mark set {:#x}",
            egress.interface, egress.mark
        );
    }
    text.push_str("  }\n");
    if masquerade {
        text.push_str("  chain masquerade_out {\n    type nat hook postrouting priority srcnat; policy accept;\n");
        for egress in egresses {
            let _ = writeln!(text, "    oifname \"{}\" masquerade", egress.interface);
        }
        text.push_str("  }\n");
    }
    text.push_str("}\n");
    text
}

/// Installs the egress table.
pub async fn apply(egresses: &[Egress], masquerade: bool) -> anyhow::Result<()> {
    let text = ruleset(egresses, masquerade);
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    let mut stdin = child.stdin.take().context("nft stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    anyhow::ensure!(
        output.status.success(),
        "nft refused the egress table: {}\n{text}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Forgets every tracked flow that left through the uplink with `mark`, so its packets take
/// the new default route (and a fresh NAT binding) at once. Returns how many were dropped.
pub async fn flush_conntrack(mark: u32) -> anyhow::Result<u64> {
    let mut attempt = 0;
    loop {
        let output = Command::new("conntrack")
            .args(["-D", "--mark", &mark.to_string()])
            .output()
            .await
            .context("running conntrack (is the conntrack tool installed?)")?;
        // Its summary line says how many were deleted, also when that is none.
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(deleted) = deleted_count(&stderr) {
            return Ok(deleted);
        }
        // An entry that expired between listing and deleting stops the tool; go again.
        attempt += 1;
        if stderr.contains("such conntrack doesn't exist") && attempt < 3 {
            continue;
        }
        anyhow::bail!("conntrack -D --mark {mark} failed: {}", stderr.trim());
    }
}

/// `conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.` → 3
fn deleted_count(stderr: &str) -> Option<u64> {
    let (before, _) = stderr.split_once(" flow entries have been deleted")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Sets reverse-path filtering on `interface` to loose (2) unless it is already off or loose.
pub fn loosen_rp_filter(interface: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/rp_filter");
    let current = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    if current.trim() == "1" {
        std::fs::write(&path, "2").with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_marks_and_masquerades_each_uplink() {
        let egresses = [
            Egress {
                interface: "wan0".into(),
                mark: 0x4600,
            },
            Egress {
                interface: "wan1".into(),
                mark: 0x4601,
            },
        ];
        let text = ruleset(&egresses, true);
        assert!(text.starts_with("table ip fieldnet_uplink\ndelete table ip fieldnet_uplink\n"));
        assert!(text.contains("ct state new oifname \"wan1\" ct mark set 0x4601"));
        assert!(text.contains("oifname \"wan0\" masquerade"));
        assert!(!ruleset(&egresses, false).contains("masquerade"));
    }

    #[test]
    fn conntrack_summary_is_read() {
        let line = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n";
        assert_eq!(deleted_count(line), Some(3));
        assert_eq!(
            deleted_count("conntrack v1.4.7 (conntrack-tools): Operation not permitted"),
            None
        );
    }
}
