//! `cargo xtask bench NAME`: runs a benchmark in release mode and records its table in
//! docs/benchmarks.md, between markers, next to the command that made it.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{cmd, root, step};

pub fn run_bench(name: &str) -> anyhow::Result<String> {
    match name {
        "bus" => {
            step("building release broker and bench");
            cmd(
                "cargo",
                &[
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "fieldnet-bus",
                    "--bins",
                    "--examples",
                ],
            )?;
            step("bus bench");
            let release = root().join("target/release");
            let output = Command::new(release.join("examples/bus-bench"))
                .arg(release.join("fieldnet-bus"))
                .output()
                .context("running bus-bench")?;
            anyhow::ensure!(
                output.status.success(),
                "bus-bench failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(String::from_utf8(output.stdout)?)
        }
        "failover" => {
            anyhow::ensure!(
                crate::util::is_root(),
                "the failover bench builds lab sites: run it as root"
            );
            step("building release uplink-monitor and bench");
            cmd(
                "cargo",
                &[
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "uplink-monitor",
                    "--bins",
                    "--examples",
                ],
            )?;
            step("failover bench (about 20 minutes with the 10-minute soak)");
            let release = root().join("target/release");
            let output = Command::new(release.join("examples/failover-bench"))
                .arg("10")
                .env("UPLINK_MONITOR_BIN", release.join("uplink-monitor"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running failover-bench")?;
            anyhow::ensure!(output.status.success(), "failover-bench failed");
            let anchors = "\nAnchors (published figures, not measured here): the original field build switched in 4 s; \
                OpenWrt mwan3 takes 60–146 s at its defaults, pfSense dpinger ~14 s, keepalived 3.6 s, BFD 0.9 s.\n";
            Ok(String::from_utf8(output.stdout)? + anchors)
        }
        "cross-site" => {
            anyhow::ensure!(
                crate::util::is_root(),
                "the cross-site bench builds a lab site: run it as root"
            );
            step("building release cross-site-failover, broker and bench");
            cmd(
                "cargo",
                &[
                    "build",
                    "--release",
                    "--locked",
                    "-p",
                    "cross-site-failover",
                    "-p",
                    "fieldnet-bus",
                    "--bins",
                    "--examples",
                ],
            )?;
            step("cross-site bench (about 3 minutes)");
            let release = root().join("target/release");
            let output = Command::new(release.join("examples/cross-site-bench"))
                .arg("10")
                .env(
                    "CROSS_SITE_FAILOVER_BIN",
                    release.join("cross-site-failover"),
                )
                .env("FIELDNET_BUS_BIN", release.join("fieldnet-bus"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running cross-site-bench")?;
            anyhow::ensure!(output.status.success(), "cross-site-bench failed");
            let anchors = "\nAnchors (published figures, not measured here): the original field build switched cable → wifi in 2 s with a script \
                and in 4–6 s when the VPN was involved; BFD at its defaults (300 ms × 3) detects in 0.9 s; Route53 health checks take 1.5–2.5 min.\n";
            Ok(String::from_utf8(output.stdout)? + anchors)
        }
        other => anyhow::bail!("unknown benchmark '{other}'; known: bus, failover, cross-site"),
    }
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
