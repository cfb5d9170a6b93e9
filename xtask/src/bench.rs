//! `cargo xtask bench NAME`: runs a benchmark in release mode and records its table in
//! docs/benchmarks.md, between markers, next to the command that made it.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{cmd, root, step};

pub fn run_bench(name: &str) -> anyhow::Result<String> {
    let release = root().join("target/release");
    match name {
        "bus" => {
            let broker = release.join("fieldnet-bus");
            release_example(&["fieldnet-bus"], "bus-bench", &[broker.as_os_str()], &[])
        }
        "failover" => {
            ensure_root("failover")?;
            step("failover bench (about 20 minutes with the 10-minute soak)");
            let table = release_example(
                &["uplink-monitor", "fieldnet-bus"],
                "failover-bench",
                &["10".as_ref()],
                &[
                    ("UPLINK_MONITOR_BIN", release.join("uplink-monitor")),
                    ("FIELDNET_BUS_BIN", release.join("fieldnet-bus")),
                ],
            )?;
            let anchors = "\nAnchors (published figures, not measured here): the original field build switched in 4 s; \
                OpenWrt mwan3 takes 60–146 s at its defaults, pfSense dpinger ~14 s, keepalived 3.6 s, BFD 0.9 s.\n";
            Ok(table + anchors)
        }
        "cross-site" => {
            ensure_root("cross-site")?;
            step("cross-site bench (about 3 minutes)");
            let table = release_example(
                &["cross-site-failover", "fieldnet-bus"],
                "cross-site-bench",
                &["10".as_ref()],
                &[
                    (
                        "CROSS_SITE_FAILOVER_BIN",
                        release.join("cross-site-failover"),
                    ),
                    ("FIELDNET_BUS_BIN", release.join("fieldnet-bus")),
                ],
            )?;
            let anchors = "\nAnchors (published figures, not measured here): the original field build switched cable → wifi in 2 s with a script \
                and in 4–6 s when the VPN was involved; BFD at its defaults (300 ms × 3) detects in 0.9 s; Route53 health checks take 1.5–2.5 min.\n";
            Ok(table + anchors)
        }
        "dns" => {
            ensure_root("dns")?;
            step("dns bench (about 5 minutes)");
            let table = release_example(
                &["whereami"],
                "dns-bench",
                &["3".as_ref()],
                &[("WHEREAMI_BIN", release.join("whereami"))],
            )?;
            let anchors = "\nOn this 2-core machine dnsperf saturates its own core first, so the comparison that matters is \
                queries per server-core-second (how much CPU each answer costs the appliance).\n";
            Ok(table + anchors)
        }
        "dhcp" => {
            ensure_root("dhcp")?;
            step("dhcp bench (about 15 minutes)");
            let table = release_example(
                &["dhcp-takeover"],
                "dhcp-bench",
                &["3".as_ref()],
                &[("DHCP_TAKEOVER_BIN", release.join("dhcp-takeover"))],
            )?;
            let anchors = "\nKea's memfile appends each lease to its CSV without a sync; dhcp-takeover syncs before every ACK \
                (under load one fdatasync covers the leases of about 1 ms) and probes every fresh address with ARP first, \
                so its figures include the disk and the probe; the \"conflict probe off\" line is the like-for-like one. Target (issue 6): ≥ 1.5× Kea. \
                Anchor (issue 6, same machine class): Kea 2.2 memfile ~3.9k 4-way exchanges/s with < 1 % drops, server-bound.\n";
            Ok(table + anchors)
        }
        "takeover" => {
            ensure_root("takeover")?;
            step("takeover bench (about 4 minutes)");
            let table = release_example(
                &["dhcp-takeover", "cross-site-failover", "fieldnet-bus"],
                "takeover-bench",
                &["3".as_ref()],
                &[
                    ("DHCP_TAKEOVER_BIN", release.join("dhcp-takeover")),
                    (
                        "CROSS_SITE_FAILOVER_BIN",
                        release.join("cross-site-failover"),
                    ),
                    ("FIELDNET_BUS_BIN", release.join("fieldnet-bus")),
                ],
            )?;
            let anchors = "\nAnchors (published figures, not measured here): Kea HA (hot-standby, defaults) declares its partner down after \
                ≥ 60 s; ISC dhcpd failover needs an operator's partner-down; the original field build had no takeover.\n";
            Ok(table + anchors)
        }
        "imds" => {
            ensure_root("imds")?;
            step("imds bench (about 5 minutes)");
            let table = release_example(
                &["imds-endpoint", "fieldnet-bus", "dhcp-takeover"],
                "imds-bench",
                &["3".as_ref()],
                &[
                    ("IMDS_ENDPOINT_BIN", release.join("imds-endpoint")),
                    ("FIELDNET_BUS_BIN", release.join("fieldnet-bus")),
                    ("DHCP_TAKEOVER_BIN", release.join("dhcp-takeover")),
                ],
            )?;
            let anchors = "\nThe original site served this file from nginx on 169.254.169.254: stale credentials, one role for every asker, \
                no IMDSv2. nginx runs here as that site ran it, at its defaults; imds-endpoint's listener has TCP_DEFER_ACCEPT (a connection \
                reaches it with its request), which nginx would get with `listen … deferred`. Anchor (issue 17): SDKs fetch credentials \
                about every 45 minutes per process, so a site of a few hundred devices asks a few times a second; the figures are about \
                headroom and the cost per answer.\n";
            Ok(table + anchors)
        }
        "sweep" => {
            ensure_root("sweep")?;
            step("sweep bench (about 5 minutes)");
            let table = release_example(&["inventory"], "sweep-bench", &["3".as_ref()], &[])?;
            let anchors = "\nThe original site listed devices with a python script around `nmap -sn` and dhcpd's lease file. \
                arp-scan and nmap run at their defaults (arp-scan: 256 kbit/s, two retries, 500 ms timeout; nmap: its timing template T3), \
                as an operator would run them; inventory at the site file's defaults. Target (issue 18): the /22 in ≤ 2 s with every \
                responder found, ≥ 2× faster than arp-scan and ≥ 5× nmap, ≥ 99.9 % found with 5 % frame loss.\n";
            Ok(table + anchors)
        }
        other => {
            anyhow::bail!(
                "unknown benchmark '{other}'; known: bus, failover, cross-site, dns, dhcp, takeover, imds, sweep"
            )
        }
    }
}

/// Lab benches need root, and the peers they compare with (dnsperf, dnsmasq, unbound,
/// perfdhcp, Kea, …), installed the way CI installs them when missing.
fn ensure_root(bench: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::util::is_root(),
        "the {bench} bench builds lab sites: run it as root"
    );
    crate::peers::install_missing_peers()
}

/// Builds `packages` (binaries and examples) in release mode, runs `example` with `args` and
/// `envs` (its progress on our stderr), and returns what it printed: the table.
fn release_example(
    packages: &[&str],
    example: &str,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, std::path::PathBuf)],
) -> anyhow::Result<String> {
    step(&format!(
        "building release {} and {example}",
        packages.join(", ")
    ));
    let mut build = vec!["build", "--release", "--locked", "--bins", "--examples"];
    for package in packages {
        build.extend(["-p", package]);
    }
    cmd("cargo", &build)?;
    let output = Command::new(root().join("target/release/examples").join(example))
        .args(args)
        .envs(envs.iter().map(|(key, value)| (*key, value)))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {example}"))?;
    anyhow::ensure!(output.status.success(), "{example} failed");
    Ok(String::from_utf8(output.stdout)?)
}

pub fn run(name: &str) -> anyhow::Result<()> {
    let table = run_bench(name)?;
    print!("{table}");
    record(name, &table)
}

/// Replaces (or appends) the section of `name` in docs/benchmarks.md.
fn record(name: &str, table: &str) -> anyhow::Result<()> {
    let path = root().join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let machine = machine_line();
    let section =
        format!("{begin}\nCommand: `cargo xtask bench {name}` · {machine}\n\n{table}{end}");
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{section}{}", &text[..start], &text[stop + end.len()..])
        }
        _ => format!("{}\n## {name}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("recorded in {}", path.display());
    Ok(())
}

fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{date}, {cores} cores, release build")
}
