//! `cargo xtask bench dhcp`: perfdhcp against dhcp-takeover and Kea (kea-dhcp4, memfile lease
//! store with persistence on), one at a time on the same lab area, interleaved, in one run.
//!
//! perfdhcp runs on a LAN client as a relay (its own address as giaddr) with 200 simulated
//! clients, asking for full DISCOVER/OFFER/REQUEST/ACK exchanges at a series of offered rates
//! for RUN seconds each. For each server and rate: the 4-way exchanges per second achieved and
//! the share of exchanges that did not complete; the table shows, per server, the highest
//! offered rate it served with under 1 % unfinished, and what it achieved there, plus its CPU.
//! Every ACK of dhcp-takeover is on disk (fdatasync) before it is sent; Kea's memfile appends to
//! its CSV without a sync.
//!
//! Usage: dhcp-bench ROUNDS (DHCP_TAKEOVER_BIN names the binary).

use std::fmt::Write as _;
use std::time::Duration;

use lab::{Lab, LabProcess, Netns, SiteSpec};

/// Offered rates, 4-way exchanges per second.
const RATES: &[u32] = &[1000, 2000, 4000, 6000, 8000, 12_000];
/// Seconds of each perfdhcp run.
const RUN_SECONDS: u32 = 6;
/// Simulated clients.
const CLIENTS: u32 = 200;

/// Starts one server on the lab and returns once it serves.
type Starter<'a> = Box<dyn Fn(&mut Lab) -> anyhow::Result<LabProcess> + 'a>;

#[derive(Clone, Copy, Default, Debug)]
struct Point {
    offered: u32,
    achieved: f64,
    unfinished_percent: f64,
    cpu: f64,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let binary = std::env::var("DHCP_TAKEOVER_BIN")?;

    let mut lab = Lab::new("bench-dhcp")?;
    let site = lab.site(&SiteSpec::lan(1, 1))?;
    let area = &site.areas[0];
    let appliance = area.appliance.clone();
    let client = area.clients[0].ns.clone();
    let dir = lab.dir().to_owned();

    let ours = dir.join("appliance-1.toml");
    std::fs::write(
        &ours,
        lab::appliance_config(
            &site,
            1,
            &dir,
            &format!(
                "[dhcp_takeover]\nstore = \"{}\"\n",
                dir.join("leases").display()
            ),
        ),
    )?;
    let kea = dir.join("kea.json");
    std::fs::write(
        &kea,
        format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["lan0"], "dhcp-socket-type": "udp" }},
  "control-socket": {{ "socket-type": "unix", "socket-name": "{dir}/kea.sock" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{dir}/kea-leases.csv", "lfc-interval": 3600 }},
  "valid-lifetime": 3600,
  "subnet4": [{{ "id": 1, "subnet": "10.101.0.0/24", "pools": [{{ "pool": "10.101.0.10 - 10.101.0.254" }}],
    "option-data": [{{ "name": "routers", "data": "10.101.0.1" }}, {{ "name": "domain-name-servers", "data": "10.101.0.1" }}] }}],
  "loggers": [{{ "name": "kea-dhcp4", "output_options": [{{ "output": "stderr" }}], "severity": "WARN" }}]
}}}}"#,
            dir = dir.display()
        ),
    )?;

    let servers: [(&str, Starter<'_>); 2] = [
        (
            "dhcp-takeover",
            Box::new(|lab: &mut Lab| {
                let process = lab.spawn(
                    &appliance,
                    &binary,
                    &["--config", ours.to_str().expect("utf-8 path")],
                )?;
                process.wait_for_log("serving DHCP", Duration::from_secs(30))?;
                Ok(process)
            }),
        ),
        (
            "Kea 2.2 (memfile)",
            Box::new(|lab: &mut Lab| {
                // Its PID and lock files go to the lab's directory, not /run/kea.
                let pid_dir = format!("KEA_PIDFILE_DIR={}", dir.display());
                let lock_dir = format!("KEA_LOCKFILE_DIR={}", dir.display());
                // Kea opens its control socket once its configuration (sockets included) is
                // in place; one left by the previous round says nothing.
                let socket = dir.join("kea.sock");
                let _ = std::fs::remove_file(&socket);
                let process = lab.spawn(
                    &appliance,
                    "env",
                    &[
                        &pid_dir,
                        &lock_dir,
                        "kea-dhcp4",
                        "-c",
                        kea.to_str().expect("utf-8 path"),
                    ],
                )?;
                for _ in 0..100 {
                    anyhow::ensure!(
                        process.is_running(),
                        "kea-dhcp4 stopped:\n{}",
                        process.log()
                    );
                    if socket.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                anyhow::ensure!(
                    socket.exists(),
                    "kea-dhcp4 never opened {}",
                    socket.display()
                );
                Ok(process)
            }),
        ),
    ];

    let mut results: Vec<Vec<Vec<Point>>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for (index, (name, start)) in servers.iter().enumerate() {
            let process = start(&mut lab)?;
            // Warm-up: every simulated client gets its lease once.
            perfdhcp(&client, 500, 2)?;
            let mut points = Vec::new();
            for &rate in RATES {
                let before = process.cpu_seconds()?;
                let mut point = perfdhcp(&client, rate, RUN_SECONDS)?;
                point.cpu = (process.cpu_seconds()? - before) / f64::from(RUN_SECONDS);
                eprintln!(
                    "round {}: {name} offered {rate}/s: {:.0} 4-way/s, {:.2} % unfinished, {:.2} cores",
                    round + 1,
                    point.achieved,
                    point.unfinished_percent,
                    point.cpu
                );
                points.push(point);
            }
            anyhow::ensure!(process.is_running(), "{name} died:\n{}", process.log());
            process.kill()?;
            results[index].push(points);
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "perfdhcp on a LAN client (as a relay, {CLIENTS} simulated clients) → each server alone on the appliance, \
         offered {RATES:?} 4-way exchanges/s for {RUN_SECONDS} s each; {rounds} rounds, servers interleaved, medians.\n"
    );
    let _ = writeln!(
        table,
        "| server | lease storage | highest offered rate with < 1 % unfinished | 4-way exchanges/s there | server CPU there (cores) | at 12000/s offered |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for ((name, _), runs) in servers.iter().zip(&results) {
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let mut best_rate = Vec::new();
        let mut best_achieved = Vec::new();
        let mut best_cpu = Vec::new();
        let mut top = Vec::new();
        for points in runs {
            let best = points
                .iter()
                .filter(|p| p.unfinished_percent < 1.0)
                .max_by_key(|p| p.offered)
                .copied()
                .unwrap_or_default();
            best_rate.push(f64::from(best.offered));
            best_achieved.push(best.achieved);
            best_cpu.push(best.cpu);
            let last = points.last().copied().unwrap_or_default();
            top.push(last.achieved);
        }
        let storage = if name.starts_with("dhcp") {
            "lease log, fdatasync before every ACK (group commit)"
        } else {
            "memfile CSV, no sync"
        };
        let _ = writeln!(
            table,
            "| {name} | {storage} | {:.0} | {:.0} | {:.2} | {:.0} 4-way/s |",
            median(&mut best_rate),
            median(&mut best_achieved),
            median(&mut best_cpu),
            median(&mut top),
        );
    }
    print!("{table}");
    Ok(())
}

/// One perfdhcp run from `client`: the achieved rate and the unfinished share.
fn perfdhcp(client: &Netns, rate: u32, seconds: u32) -> anyhow::Result<Point> {
    let output = client.exec_unchecked(
        "perfdhcp",
        &[
            "-4",
            "-l",
            "eth0",
            "-r",
            &rate.to_string(),
            "-R",
            &CLIENTS.to_string(),
            "-p",
            &seconds.to_string(),
            "10.101.0.1",
        ],
        Duration::from_secs(u64::from(seconds) + 30),
    )?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let number = |line: &str| -> Option<f64> {
        line.split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let achieved = text
        .lines()
        .find(|l| l.starts_with("Rate:"))
        .and_then(number)
        .ok_or_else(|| anyhow::anyhow!("perfdhcp printed no rate:\n{text}"))?;
    // Exchanges started (DISCOVERs sent) against ACKs received.
    let mut sent = None;
    let mut acks = None;
    let mut section = "";
    for line in text.lines() {
        if let Some(name) = line.trim_matches('*').strip_prefix("Statistics for: ") {
            section = if name.starts_with("DISCOVER") {
                "do"
            } else {
                "ra"
            };
        } else if line.starts_with("sent packets:") && section == "do" {
            sent = number(line);
        } else if line.starts_with("received packets:") && section == "ra" {
            acks = number(line);
        }
    }
    let (Some(sent), Some(acks)) = (sent, acks) else {
        anyhow::bail!("perfdhcp printed no packet counts:\n{text}");
    };
    Ok(Point {
        offered: rate,
        achieved,
        unfinished_percent: if sent > 0.0 {
            (1.0 - acks / sent) * 100.0
        } else {
            100.0
        },
        cpu: 0.0,
    })
}
