//! `cargo xtask bench dhcp`: perfdhcp against dhcp-takeover and Kea (kea-dhcp4, memfile lease
//! store with persistence on), one at a time on the same lab area, interleaved, in one run.
//!
//! perfdhcp runs on a LAN client as a relay (its own address as giaddr), asking for full
//! DISCOVER/OFFER/REQUEST/ACK exchanges at a series of offered rates for RUN seconds each, in two
//! workloads on a /16 network: 200 returning clients (every exchange renews a known lease), and
//! new clients (a million MAC addresses: nearly every exchange allocates a fresh address, like a
//! site's gates opening). Every point starts the server afresh on an empty lease store. For
//! each server and rate: the 4-way exchanges per second achieved, the share of exchanges that
//! did not complete, and the server's CPU; the table shows, per server and workload, the highest
//! offered rate served with under 1 % unfinished, and the exchanges per server-core-second
//! (what each exchange costs the appliance, the figure that matters when, as here, perfdhcp
//! shares the two cores). Every ACK of dhcp-takeover is on disk (fdatasync) before it is sent,
//! after its conflict probe for a fresh address; Kea's memfile appends to its CSV without a sync
//! and does not probe, so dhcp-takeover also runs with its probe off (the like-for-like line).
//!
//! Usage: dhcp-bench ROUNDS (DHCP_TAKEOVER_BIN names the binary).

use std::fmt::Write as _;
use std::time::Duration;

use lab::{Lab, LabProcess, Netns, SiteSpec};

/// Offered rates, 4-way exchanges per second.
const RATES: &[u32] = &[2000, 4000, 8000, 12_000];
/// Seconds of each perfdhcp run.
const RUN_SECONDS: u32 = 6;
/// The workloads: name, perfdhcp's number of simulated clients, whether they get a lease first.
const WORKLOADS: &[(&str, u32, bool)] = &[
    ("200 returning clients", 200, true),
    ("new clients", 1_000_000, false),
];
/// The network: a /16, so new clients do not run out of addresses.
const SUBNET: &str = "10.101.0.0/16";

/// Starts one server on the lab and returns once it serves.
type Starter<'a> = Box<dyn Fn(&mut Lab) -> anyhow::Result<LabProcess> + 'a>;

#[derive(Clone, Copy, Default, Debug)]
struct Point {
    workload: usize,
    offered: u32,
    achieved: f64,
    unfinished_percent: f64,
    cpu: f64,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let binary = std::env::var("DHCP_TAKEOVER_BIN")?;
    // DHCP_BENCH_RATES="12000,24000" tries other offered rates (the table stays in this form).
    let rates: Vec<u32> = match std::env::var("DHCP_BENCH_RATES") {
        Ok(list) => list
            .split(',')
            .map(|rate| rate.trim().parse())
            .collect::<Result<_, _>>()?,
        Err(_) => RATES.to_vec(),
    };

    let mut lab = Lab::new("bench-dhcp")?;
    let site = lab.site(&SiteSpec::lan(1, 1))?;
    let area = &site.areas[0];
    let appliance = area.appliance.clone();
    let client = area.clients[0].ns.clone();
    let dir = lab.dir().to_owned();

    let ours = dir.join("site-probe.toml");
    let store = lab::lease_store(&dir, 1);
    // Capacity is measured without the limits on new clients and offers (perfdhcp's made-up
    // clients are exactly what they hold back).
    let config = lab::SiteFile::new(&site, &dir)
        .sections("[dhcp_takeover]\nmax_offers = 0\nnew_clients_per_minute = 0\n")
        .text();
    let widened = config.replace(
        "subnet = \"10.101.0.0/24\"",
        &format!("subnet = \"{SUBNET}\""),
    );
    anyhow::ensure!(
        widened != config,
        "the lab's network is no longer 10.101.0.0/24"
    );
    std::fs::write(&ours, &widened)?;
    // The same without the conflict probe, as Kea 2.2 (which has none) runs.
    let unprobed = dir.join("site-no-probe.toml");
    let without_probe = widened.replacen(
        "[dhcp_takeover]\n",
        "[dhcp_takeover]\nconflict_probe_ms = 0\n",
        1,
    );
    anyhow::ensure!(
        without_probe != widened,
        "no [dhcp_takeover] in the lab's config"
    );
    std::fs::write(&unprobed, without_probe)?;
    let start_ours = |lab: &mut Lab, config: &std::path::Path| -> anyhow::Result<LabProcess> {
        let _ = std::fs::remove_dir_all(&store);
        let process = lab.spawn(
            &appliance,
            &binary,
            &[
                "--config",
                config.to_str().expect("utf-8 path"),
                "--appliance",
                &lab::appliance_name(1),
            ],
        )?;
        process.wait_for_log("serving DHCP", Duration::from_secs(30))?;
        Ok(process)
    };
    let kea = dir.join("kea.json");
    std::fs::write(
        &kea,
        format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["lan0"], "dhcp-socket-type": "udp" }},
  "control-socket": {{ "socket-type": "unix", "socket-name": "{dir}/kea.sock" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{dir}/kea-leases.csv", "lfc-interval": 3600 }},
  "valid-lifetime": 3600,
  "subnet4": [{{ "id": 1, "subnet": "{SUBNET}", "pools": [{{ "pool": "10.101.0.10 - 10.101.255.254" }}],
    "option-data": [{{ "name": "routers", "data": "10.101.0.1" }}, {{ "name": "domain-name-servers", "data": "10.101.0.1" }}] }}],
  "loggers": [{{ "name": "kea-dhcp4", "output_options": [{{ "output": "stderr" }}], "severity": "WARN" }}]
}}}}"#,
            dir = dir.display()
        ),
    )?;

    const OUR_STORAGE: &str = "lease log, fdatasync before every ACK (group commit)";
    // Name, lease storage, starter.
    let servers: [(&str, &str, Starter<'_>); 3] = [
        (
            "dhcp-takeover",
            OUR_STORAGE,
            Box::new(|lab: &mut Lab| start_ours(lab, &ours)),
        ),
        (
            "dhcp-takeover, conflict probe off",
            OUR_STORAGE,
            Box::new(|lab: &mut Lab| start_ours(lab, &unprobed)),
        ),
        (
            "Kea 2.2 (memfile)",
            "memfile CSV, no sync",
            Box::new(|lab: &mut Lab| {
                // Its PID and lock files go to the lab's directory, not /run/kea.
                let pid_dir = format!("KEA_PIDFILE_DIR={}", dir.display());
                let lock_dir = format!("KEA_LOCKFILE_DIR={}", dir.display());
                // Kea opens its control socket once its configuration (sockets included) is
                // in place; one left by the previous round says nothing.
                let socket = dir.join("kea.sock");
                let _ = std::fs::remove_file(&socket);
                // An empty lease file (and none of its cleanup's leftovers).
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    if entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("kea-leases.csv")
                    {
                        std::fs::remove_file(entry.path())?;
                    }
                }
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

    // results[server] = every round's points, in (workload, rate) order.
    let mut results: Vec<Vec<Vec<Point>>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for (index, (name, _, start)) in servers.iter().enumerate() {
            let mut points = Vec::new();
            for (workload, &(label, clients, warm_up)) in WORKLOADS.iter().enumerate() {
                for &rate in &rates {
                    let process = start(&mut lab)?;
                    if warm_up {
                        // Every simulated client gets its lease once.
                        perfdhcp(&client, 500, 2, clients)?;
                    }
                    let before = process.cpu_seconds()?;
                    let udp_before = udp_errors(&appliance)?;
                    let mut point = perfdhcp(&client, rate, RUN_SECONDS, clients)?;
                    point.workload = workload;
                    point.cpu = (process.cpu_seconds()? - before) / f64::from(RUN_SECONDS);
                    let udp = udp_errors(&appliance)?;
                    eprintln!(
                        "round {}: {name}, {label}, offered {rate}/s: {:.0} 4-way/s, {:.2} % unfinished, {:.2} cores; \
                         appliance UDP drops: receive buffer {}, send buffer {}",
                        round + 1,
                        point.achieved,
                        point.unfinished_percent,
                        point.cpu,
                        udp.0 - udp_before.0,
                        udp.1 - udp_before.1,
                    );
                    anyhow::ensure!(process.is_running(), "{name} died:\n{}", process.log());
                    process.kill()?;
                    points.push(point);
                }
            }
            results[index].push(points);
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "perfdhcp on a LAN client (as a relay) → each server alone on the appliance, on a {SUBNET} network, from an empty lease store; \
         offered {rates:?} 4-way exchanges/s for {RUN_SECONDS} s each; {rounds} rounds, servers interleaved, medians. \
         \"Per server core\" is 4-way exchanges per second of the server's CPU at the highest rate both servers served \
         with under 1 % unfinished: perfdhcp needs a core of its own, so neither server is pushed to its limit here.\n"
    );
    let _ = writeln!(
        table,
        "| workload | server | lease storage | highest offered rate with < 1 % unfinished | server CPU there (cores) | 4-way exchanges per server core-second | achieved at {} offered |",
        rates.last().copied().unwrap_or_default()
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let served = |point: &Point| point.unfinished_percent < 1.0;
    for (workload, &(label, _, _)) in WORKLOADS.iter().enumerate() {
        // The highest rate every server served in every round: where costs compare.
        let common = rates
            .iter()
            .copied()
            .filter(|&rate| {
                results
                    .iter()
                    .flatten()
                    .flatten()
                    .all(|p| p.workload != workload || p.offered != rate || served(p))
            })
            .max();
        for ((name, storage, _), runs) in servers.iter().zip(&results) {
            let of_workload = |points: &Vec<Point>| -> Vec<Point> {
                points
                    .iter()
                    .copied()
                    .filter(|p| p.workload == workload)
                    .collect()
            };
            let best = |points: &[Point]| {
                points
                    .iter()
                    .filter(|p| served(p))
                    .max_by_key(|p| p.offered)
                    .copied()
                    .unwrap_or_default()
            };
            let at = |points: &[Point], rate: Option<u32>| {
                points
                    .iter()
                    .find(|p| Some(p.offered) == rate)
                    .copied()
                    .unwrap_or_default()
            };
            let runs: Vec<Vec<Point>> = runs.iter().map(of_workload).collect();
            let best_rate = median(runs.iter().map(|p| f64::from(best(p).offered)).collect());
            let common_points: Vec<Point> = runs.iter().map(|p| at(p, common)).collect();
            let cpu = median(common_points.iter().map(|p| p.cpu).collect());
            let per_core = median(
                common_points
                    .iter()
                    .map(|p| if p.cpu > 0.0 { p.achieved / p.cpu } else { 0.0 })
                    .collect(),
            );
            let top = median(
                runs.iter()
                    .map(|p| at(p, rates.last().copied()).achieved)
                    .collect(),
            );
            let _ = writeln!(
                table,
                "| {label} | {name} | {storage} | {best_rate:.0} | {cpu:.2} at {} | {per_core:.0} | {top:.0} 4-way/s |",
                common.unwrap_or_default()
            );
        }
    }
    print!("{table}");
    Ok(())
}

/// The namespace's UDP RcvbufErrors and SndbufErrors counters.
fn udp_errors(ns: &Netns) -> anyhow::Result<(u64, u64)> {
    let snmp = String::from_utf8(ns.exec("cat", &["/proc/net/snmp"])?.stdout)?;
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        anyhow::bail!("no Udp lines in /proc/net/snmp");
    };
    let counter = |wanted: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == wanted)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0)
    };
    Ok((counter("RcvbufErrors"), counter("SndbufErrors")))
}

/// One perfdhcp run from `client` as `clients` simulated clients: the achieved rate and the
/// unfinished share.
fn perfdhcp(client: &Netns, rate: u32, seconds: u32, clients: u32) -> anyhow::Result<Point> {
    let output = client.exec_unchecked(
        "perfdhcp",
        &[
            "-4",
            "-l",
            "eth0",
            "-r",
            &rate.to_string(),
            "-R",
            &clients.to_string(),
            "-p",
            &seconds.to_string(),
            // Answers to the last requests still count (a fresh address is offered only after
            // dhcp-takeover's 250 ms conflict probe).
            "-W",
            "1000000",
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
        workload: 0,
        offered: rate,
        // perfdhcp's own rate counts the wait at the end too.
        achieved: acks / f64::from(seconds),
        unfinished_percent: if sent > 0.0 {
            (1.0 - acks / sent) * 100.0
        } else {
            100.0
        },
        cpu: 0.0,
    })
}
