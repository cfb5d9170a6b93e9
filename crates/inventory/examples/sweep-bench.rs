//! `cargo xtask bench sweep`: a /22 with 300 responding devices (each a namespace of its own, a
//! real kernel answering ARP) on one bridge, swept from a scanner namespace by inventory's
//! sweeper (the agent's code, at the site file's defaults), by `arp-scan` and by `nmap -sn`,
//! side by side in one run: wall time, devices found, frames sent (the scanner's transmit
//! counter). inventory twice: a first sweep (nothing known) and the next one (what the first
//! learned: known devices asked by unicast, silent addresses once), as the agent sweeps every
//! minute. Then all again with 5 % of frames dropped at random on the bridge (nftables' bridge
//! family in the switch namespace: each copy of a broadcast and each reply, independently).
//! Rounds interleave the tools; the table shows medians (found: the worst).
//!
//! Last, HTTP service discovery with 2,000 targets: wrk against `/sd/node` served by the
//! agent's router, p50/p99 and requests per second.
//!
//! Usage: sweep-bench ROUNDS

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use fieldnet::bus::topics::{Device, DeviceState};
use inventory::edge::http::{self, Shared, Snapshot};
use inventory::edge::metrics::Metrics;
use inventory::edge::sweeper::{self, Method, Outcome, Pace, Request};
use inventory::sweep::Prior;
use ipnet::Ipv4Net;
use lab::{Lab, Netns};

const RANGE: &str = "10.200.0.0/22";
const SCANNER: &str = "10.200.0.1";
const DEVICES: usize = 300;
const LOSS_PERCENT: u32 = 5;
const SD_TARGETS: usize = 2_000;

#[derive(Clone, Copy, Default)]
struct Run {
    seconds: f64,
    found: usize,
    frames: u64,
    /// Frames the lab's kernel dropped meanwhile (its per-CPU backlog overflowing: each
    /// broadcast is 300 copies on a 2-core machine), on top of the loss injected.
    dropped: u64,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let range: Ipv4Net = RANGE.parse()?;
    let mut lab = Lab::new("bench-sweep")?;
    let switch = lab.netns("switch")?;
    lab.bridge(&switch, "br0")?;
    let scanner = lab.netns("scanner")?;
    lab.veth(&scanner, "eth0", &switch, "scan")?;
    lab.enslave(&switch, "scan", "br0")?;
    lab.addr(&scanner, "eth0", &format!("{SCANNER}/22"))?;
    // 300 devices spread over the range (every third address but the scanner's).
    let hosts: Vec<Ipv4Addr> = range.hosts().filter(|h| h.to_string() != SCANNER).collect();
    let responders: Vec<Ipv4Addr> = hosts.iter().step_by(3).take(DEVICES).copied().collect();
    eprintln!("building {DEVICES} device namespaces");
    let started = Instant::now();
    for (index, address) in responders.iter().enumerate() {
        let device = lab.netns(&format!("d{index}"))?;
        let port = format!("p{index}");
        lab.veth(&device, "eth0", &switch, &port)?;
        lab.enslave(&switch, &port, "br0")?;
        lab.addr(&device, "eth0", &format!("{address}/22"))?;
    }
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());

    let defaults = fieldnet::config::InventoryConfig::clone(
        &fieldnet::config::SiteConfig::from_str(MINIMAL_SITE, "bench.toml")?
            .view("one")?
            .agents
            .inventory,
    );
    let pace = Pace {
        attempts: defaults.sweep_attempts,
        wait: defaults.reply_wait,
        rate: defaults.sweep_rate,
    };

    let mut table = String::new();
    writeln!(
        table,
        "A /22 (1,022 addresses) with {DEVICES} responding devices, each its own namespace on one bridge; medians of {rounds} rounds \
         (found: the fewest of any round). inventory at the site file's defaults: {} broadcasts/s, up to {} tries (as many as the loss it sees calls for), the first retry after {} ms and each next one twice as late.\n",
        pace.rate,
        pace.attempts,
        pace.wait.as_millis()
    )?;
    writeln!(
        table,
        "| frame loss | tool | wall time | devices found | frames sent | lab kernel drops (most of any round) |"
    )?;
    writeln!(table, "|---|---|---:|---:|---:|---:|")?;
    for loss in [0, LOSS_PERCENT] {
        if loss > 0 {
            set_loss(&switch, loss)?;
        }
        let mut runs: Vec<(&str, Vec<Run>)> = vec![
            ("inventory, first sweep", Vec::new()),
            ("inventory, next sweeps", Vec::new()),
            ("arp-scan", Vec::new()),
            ("nmap -sn", Vec::new()),
        ];
        for round in 0..rounds {
            let mut learned: Option<Outcome> = None;
            for (tool, results) in &mut runs {
                eprintln!("loss {loss} %, round {}, {tool}", round + 1);
                let dropped_before = backlog_drops()?;
                let mut run = match *tool {
                    "inventory, first sweep" => {
                        let priors = hosts.iter().map(|host| (*host, Prior::Unknown)).collect();
                        let (run, outcome) = inventory_sweep(&scanner, priors, pace)?;
                        learned = Some(outcome);
                        run
                    }
                    "inventory, next sweeps" => {
                        let first = learned.take().expect("the first sweep ran");
                        let priors = hosts
                            .iter()
                            .map(|host| {
                                let known = first
                                    .found
                                    .iter()
                                    .find(|(address, _)| address == host)
                                    .and_then(|(_, mac)| *mac);
                                let prior = Prior::of(known, first.missed.contains(host));
                                (*host, prior)
                            })
                            .collect();
                        inventory_sweep(&scanner, priors, pace)?.0
                    }
                    "arp-scan" => arp_scan(&scanner)?,
                    _ => nmap(&scanner)?,
                };
                run.dropped = backlog_drops()? - dropped_before;
                eprintln!(
                    "  {:.2} s, {} found, {} frames, {} dropped by the lab's kernel",
                    run.seconds, run.found, run.frames, run.dropped
                );
                results.push(run);
                // Neighbour entries the last tool left must not help the next.
                scanner.ip(&["neigh", "flush", "dev", "eth0"])?;
            }
        }
        for (tool, results) in &runs {
            let seconds = median(results.iter().map(|r| r.seconds).collect());
            let frames = median(results.iter().map(|r| r.frames as f64).collect());
            let found = results.iter().map(|r| r.found).min().unwrap_or(0);
            let dropped = results.iter().map(|r| r.dropped).max().unwrap_or(0);
            writeln!(
                table,
                "| {loss} % | {tool} | {seconds:.2} s | {found} of {DEVICES} ({:.1} %) | {frames:.0} | {dropped} |",
                found as f64 * 100.0 / DEVICES as f64
            )?;
        }
    }

    let (p50, p99, rps) = sd_latency()?;
    writeln!(
        table,
        "\nHTTP service discovery, `/sd/node` with {SD_TARGETS} targets (the agent's router, rendered once per change), wrk with 4 \
         keep-alive connections for 5 s: p50 {p50:.2} ms, p99 {p99:.2} ms, {rps:.0} requests/s. Target (issue 18): p99 ≤ 10 ms."
    )?;
    print!("{table}");
    drop(lab);
    Ok(())
}

const MINIMAL_SITE: &str = r#"
[site]
name = "bench"
domain = "bench.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.200.0.0/22"
gateway = "10.200.0.1"
interface = "eth0"

[[appliances]]
id = 1
name = "one"
area = "north"
"#;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Frames the host's kernel dropped from its per-CPU input backlogs since boot
/// (`/proc/net/softnet_stat`, second column; read only).
fn backlog_drops() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat")?;
    stat.lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|hex| u64::from_str_radix(hex, 16).map_err(anyhow::Error::from))
        .sum()
}

fn tx_packets(scanner: &Netns) -> anyhow::Result<u64> {
    let output = scanner.exec("cat", &["/sys/class/net/eth0/statistics/tx_packets"])?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// Drops `percent` % of the frames the bridge forwards, at random: each copy of a broadcast
/// and each reply independently. (Scanners read frames off packet sockets, which see a frame
/// before the host's ARP and IP hooks would drop it: the loss has to be on the wire.)
fn set_loss(switch: &Netns, percent: u32) -> anyhow::Result<()> {
    let rules = format!(
        "table bridge loss {{\n chain forward {{ type filter hook forward priority 0; numgen random mod 100 < {percent} drop; }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("sweep-bench-loss-{}.nft", std::process::id()));
    std::fs::write(&path, rules)?;
    let result = switch.exec("nft", &["-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    result.map(drop)
}

fn inventory_sweep(
    scanner: &Netns,
    hosts: Vec<(Ipv4Addr, Prior)>,
    pace: Pace,
) -> anyhow::Result<(Run, Outcome)> {
    let before = tx_packets(scanner)?;
    let request = Request {
        network: "NETWORK1".into(),
        method: Method::Arp {
            interface: "eth0".into(),
            sender: SCANNER.parse()?,
        },
        hosts,
        full: true,
    };
    let outcome = scanner.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(sweeper::run(request, pace))
    })??;
    let run = Run {
        seconds: outcome.took.as_secs_f64(),
        found: outcome.found.len(),
        frames: tx_packets(scanner)? - before,
        dropped: 0,
    };
    Ok((run, outcome))
}

fn arp_scan(scanner: &Netns) -> anyhow::Result<Run> {
    timed(
        scanner,
        "arp-scan",
        &["--interface=eth0", "--plain", RANGE],
        |line| line.split_whitespace().next()?.parse::<Ipv4Addr>().ok(),
    )
}

fn nmap(scanner: &Netns) -> anyhow::Result<Run> {
    timed(scanner, "nmap", &["-sn", "-n", "-oG", "-", RANGE], |line| {
        let rest = line.strip_prefix("Host: ")?;
        if !line.contains("Status: Up") {
            return None;
        }
        rest.split_whitespace().next()?.parse::<Ipv4Addr>().ok()
    })
}

/// Runs a scanner, timing it; `address_of` picks a found host out of a line of its output.
fn timed(
    scanner: &Netns,
    program: &str,
    args: &[&str],
    address_of: impl Fn(&str) -> Option<Ipv4Addr>,
) -> anyhow::Result<Run> {
    let before = tx_packets(scanner)?;
    let started = Instant::now();
    let output = scanner.exec_timeout(program, args, Duration::from_secs(300))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut found: Vec<Ipv4Addr> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(&address_of)
        .filter(|address| address.to_string() != SCANNER)
        .collect();
    found.sort();
    found.dedup();
    Ok(Run {
        seconds,
        found: found.len(),
        frames: tx_packets(scanner)? - before,
        dropped: 0,
    })
}

/// wrk against `/sd/node` with [`SD_TARGETS`] targets: (p50 ms, p99 ms, requests/s).
fn sd_latency() -> anyhow::Result<(f64, f64, f64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let registry = prometheus::Registry::new();
    let shared = Shared::new(Metrics::register(&registry)?);
    let devices: Vec<Device> = (0..SD_TARGETS)
        .map(|index| {
            let address = Ipv4Addr::from_bits(0x0a64_0000 + index as u32 + 10);
            Device {
                id: format!("02:00:00:00:{:02x}:{:02x}", index / 256, index % 256),
                mac: None,
                client_id: None,
                address,
                network: "NETWORK1".into(),
                area: Some("north".into()),
                class: Some("cameras".into()),
                vendor: None,
                hostname: None,
                name: format!("camera-{index}"),
                state: DeviceState::Present,
                since: 0,
                first_seen: 0,
                last_seen: 0,
                sources: Vec::new(),
                ports: vec![9100],
            }
        })
        .collect();
    let groups = inventory::sd::target_groups(devices.iter(), 9100);
    let mut snapshot = Snapshot::default();
    snapshot
        .jobs
        .insert("node".into(), inventory::sd::render(&groups).into());
    shared.replace(snapshot);
    let router = http::router(shared);
    runtime.spawn(async move { axum::serve(listener, router).await });
    let output = std::process::Command::new("wrk")
        .args([
            "-t1",
            "-c4",
            "-d5s",
            "--latency",
            &format!("http://127.0.0.1:{port}/sd/node"),
        ])
        .output()?;
    anyhow::ensure!(output.status.success(), "wrk failed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let millis = |label: &str| -> Option<f64> {
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(label))?;
        let value = line.split_whitespace().nth(1)?;
        let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            _ => return None,
        })
    };
    let rps: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0);
    let (Some(p50), Some(p99)) = (millis("50%"), millis("99%")) else {
        anyhow::bail!("wrk printed no latency distribution:\n{text}");
    };
    Ok((p50, p99, rps))
}
