//! `cargo xtask bench dns`: dnsperf against whereami, dnsmasq and unbound, side by side in one
//! run, on one lab area: the servers run in the appliance namespace on its LAN gateway (one port
//! each), dnsperf runs on a client of that LAN, and a dnsmasq in the lab's internet namespace is
//! the upstream of all three.
//!
//! Two workloads: local answers (TXT `whereami.<zone>` and the A record of an appliance: what
//! each server answers from its own configuration) and cached forwarded answers (A records of
//! 200 names the upstream knows, asked once before the measurement so every later answer comes
//! from the server's cache). For each: the queries per second at saturation (dnsperf with 100
//! queries in flight for RUN seconds), the server's CPU time over that run (utime + stime of the
//! process, all threads) and so queries per server-core-second, then the p99 latency at a
//! steady 20k queries per second (dnsperf -v, every query's latency). Each measurement is
//! repeated ROUNDS times, servers interleaved; the table shows medians.
//!
//! Usage: dns-bench ROUNDS (WHEREAMI_BIN names the binary).

use std::fmt::Write as _;
use std::time::Duration;

use lab::{Lab, LabProcess, Netns, SiteSpec};

const ZONE: &str = "lab.fieldnet.example";
const UPSTREAM: &str = "192.0.2.53";
const SERVER: &str = "10.101.0.1";
/// Seconds of each saturation run.
const RUN_SECONDS: u32 = 8;
/// Seconds of each paced latency run.
const PACED_SECONDS: u32 = 5;
/// The paced rate for the latency figure.
const PACED_QPS: u32 = 20_000;
/// Forwarded names the upstream knows.
const FORWARDED_NAMES: usize = 200;

struct Server {
    name: &'static str,
    port: u16,
    process: LabProcess,
    /// Answers DNS (the floor only echoes).
    dns: bool,
}

#[derive(Clone, Copy, Default)]
struct Figures {
    qps: f64,
    cpu: f64,
    per_core_second: f64,
    p99_ms: f64,
    lost: f64,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let whereami_bin = std::env::var("WHEREAMI_BIN")?;

    let mut lab = Lab::new("bench-dns")?;
    let site = lab.site(&SiteSpec::lan(1, 1))?;
    let area = &site.areas[0];
    let appliance = area.appliance.clone();
    let client = area.clients[0].ns.clone();

    // The internet's resolver: every example.org name is 192.0.2.80, for an hour.
    lab.addr(
        &site.internet,
        lab::INTERNET_BRIDGE,
        &format!("{UPSTREAM}/24"),
    )?;
    let _upstream = dnsmasq(
        &mut lab,
        &site.internet,
        UPSTREAM,
        &["--address=/example.org/192.0.2.80", "--local-ttl=3600"],
    )?;

    let mut servers = Vec::new();
    // whereami, logging at its production default.
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(&format!("[whereami]\nupstreams = [\"{UPSTREAM}\"]\n"))
        .write()?;
    let machine = lab::appliance_name(1);
    let whereami = lab.spawn(
        &appliance,
        &whereami_bin,
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--appliance",
            &machine,
        ],
    )?;
    whereami.wait_for_log("answering DNS", Duration::from_secs(30))?;
    servers.push(Server {
        name: "whereami",
        port: 53,
        process: whereami,
        dns: true,
    });

    // dnsmasq with the same local data and cache size.
    let local = dnsmasq(
        &mut lab,
        &appliance,
        SERVER,
        &[
            "--port=5301",
            "--cache-size=10000",
            &format!("--server={UPSTREAM}"),
            &format!("--local=/{ZONE}/"),
            &format!("--txt-record=whereami.{ZONE},NETWORK1"),
            &format!("--host-record=appliance-1.{ZONE},{SERVER}"),
        ],
    )?;
    servers.push(Server {
        name: "dnsmasq",
        port: 5301,
        process: local,
        dns: true,
    });

    // unbound: one thread, no validation (neither of the others validates), same local data.
    let unbound_conf = lab.dir().join("unbound.conf");
    std::fs::write(
        &unbound_conf,
        format!(
            "server:\n  interface: {SERVER}@5302\n  access-control: 10.0.0.0/8 allow\n  num-threads: 1\n  \
             chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  \
             logfile: \"\"\n  verbosity: 1\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  \
             do-ip6: no\n  msg-cache-size: 16m\n  rrset-cache-size: 32m\n  \
             local-zone: \"{ZONE}.\" static\n  local-data: \"whereami.{ZONE}. 60 IN TXT NETWORK1\"\n  \
             local-data: \"appliance-1.{ZONE}. 60 IN A {SERVER}\"\n\
             remote-control:\n  control-enable: no\n\
             forward-zone:\n  name: \".\"\n  forward-addr: {UPSTREAM}\n",
            dir = lab.dir().display()
        ),
    )?;
    let unbound = lab.spawn(
        &appliance,
        "unbound",
        &["-d", "-c", unbound_conf.to_str().expect("utf-8 path")],
    )?;
    servers.push(Server {
        name: "unbound",
        port: 5302,
        process: unbound,
        dns: true,
    });

    // The floor: the kernel's path for one datagram in and one out, with no DNS work.
    let floor_bin = std::env::current_exe()?.with_file_name("udp-floor");
    let floor = lab.spawn(
        &appliance,
        floor_bin.to_str().expect("utf-8 path"),
        &[&format!("{SERVER}:5303")],
    )?;
    floor.wait_for_log("echoing", Duration::from_secs(10))?;
    servers.push(Server {
        name: "floor: echo, no DNS",
        port: 5303,
        process: floor,
        dns: false,
    });

    let local = lab.dir().join("local.queries");
    std::fs::write(
        &local,
        format!("whereami.{ZONE} TXT\nappliance-1.{ZONE} A\n"),
    )?;
    let forwarded = lab.dir().join("forwarded.queries");
    std::fs::write(
        &forwarded,
        (0..FORWARDED_NAMES)
            .map(|i| format!("host{i}.example.org A\n"))
            .collect::<String>(),
    )?;
    // Every server answers before anything is measured; then the caches are filled.
    for server in &servers {
        wait_answering(&client, server)?;
        let warm = dnsperf(&client, server, &forwarded, &["-n", "1", "-q", "10"])?;
        anyhow::ensure!(
            warm.completed == FORWARDED_NAMES as u64,
            "{} answered {} of {FORWARDED_NAMES} warm-up queries",
            server.name,
            warm.completed
        );
    }

    let workloads = [
        ("local answers", &local),
        ("cached forwarded answers", &forwarded),
    ];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "dnsperf on a LAN client → each server on the appliance's gateway; upstream dnsmasq in the internet namespace. \
         {rounds} rounds, servers interleaved; medians. Saturation: {RUN_SECONDS} s, 100 queries in flight. \
         Latency: {PACED_SECONDS} s at {PACED_QPS} queries/s.\n"
    );
    let _ = writeln!(
        table,
        "| workload | server | qps at saturation | server CPU (cores) | queries per server-core-second | p99 at 20k qps | lost |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for (workload, file) in workloads {
        let mut figures: Vec<Vec<Figures>> = vec![Vec::new(); servers.len()];
        for round in 0..rounds {
            for (index, server) in servers.iter().enumerate() {
                let measured = measure(&client, server, file)?;
                eprintln!(
                    "{workload}, round {}: {} {:.0} qps, {:.2} cores, {:.0} q/core-s, p99 {:.3} ms",
                    round + 1,
                    server.name,
                    measured.qps,
                    measured.cpu,
                    measured.per_core_second,
                    measured.p99_ms
                );
                figures[index].push(measured);
            }
        }
        for (server, runs) in servers.iter().zip(&figures) {
            let median = |pick: fn(&Figures) -> f64| {
                let mut values: Vec<f64> = runs.iter().map(pick).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            let _ = writeln!(
                table,
                "| {workload} | {} | {:.0} | {:.2} | {:.0} | {:.3} ms | {:.2} % |",
                server.name,
                median(|f| f.qps),
                median(|f| f.cpu),
                median(|f| f.per_core_second),
                median(|f| f.p99_ms),
                median(|f| f.lost),
            );
        }
    }
    for server in &servers {
        anyhow::ensure!(
            server.process.is_running(),
            "{} died during the bench:\n{}",
            server.name,
            server.process.log()
        );
    }
    print!("{table}");
    Ok(())
}

/// Starts a foreground dnsmasq in `ns` logging to stderr, answering only on `address`, with
/// `extra`.
fn dnsmasq(lab: &mut Lab, ns: &Netns, address: &str, extra: &[&str]) -> anyhow::Result<LabProcess> {
    let listen = format!("--listen-address={address}");
    let mut args = vec![
        "--keep-in-foreground",
        "--log-facility=-",
        "--no-resolv",
        "--no-hosts",
        "--pid-file",
        "--user=root",
        "--bind-interfaces",
        &listen,
    ];
    args.extend_from_slice(extra);
    let process = lab.spawn(ns, "dnsmasq", &args)?;
    process.wait_for_log("started", Duration::from_secs(10))?;
    Ok(process)
}

fn wait_answering(client: &Netns, server: &Server) -> anyhow::Result<()> {
    if !server.dns {
        return Ok(());
    }
    for _ in 0..100 {
        let reply = client.dig(&[
            "+tries=1",
            "+time=1",
            "-p",
            &server.port.to_string(),
            &format!("@{SERVER}"),
            &format!("whereami.{ZONE}"),
            "TXT",
        ])?;
        if reply.values() == ["\"NETWORK1\""] {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{} never answered:\n{}", server.name, server.process.log())
}

fn measure(client: &Netns, server: &Server, file: &std::path::Path) -> anyhow::Result<Figures> {
    let before = server.process.cpu_seconds()?;
    let run = dnsperf(client, server, file, &["-l", &RUN_SECONDS.to_string()])?;
    let cpu = (server.process.cpu_seconds()? - before) / run.seconds;
    let paced = dnsperf(
        client,
        server,
        file,
        &[
            "-l",
            &PACED_SECONDS.to_string(),
            "-Q",
            &PACED_QPS.to_string(),
            "-v",
        ],
    )?;
    Ok(Figures {
        qps: run.qps,
        cpu,
        per_core_second: run.qps / cpu,
        p99_ms: percentile(&paced.latencies, 0.99) * 1000.0,
        lost: run.lost_percent,
    })
}

struct Run {
    completed: u64,
    qps: f64,
    seconds: f64,
    lost_percent: f64,
    latencies: Vec<f64>,
}

fn dnsperf(
    client: &Netns,
    server: &Server,
    file: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Run> {
    let port = server.port.to_string();
    let mut args = vec![
        "-s",
        SERVER,
        "-p",
        &port,
        "-d",
        file.to_str().expect("utf-8 path"),
        "-t",
        "2",
    ];
    args.extend_from_slice(extra);
    let output = client.exec("dnsperf", &args)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |label: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .ok_or_else(|| anyhow::anyhow!("dnsperf printed no {label:?}:\n{text}"))?;
        let value = line[line.find(':').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .next()
            .unwrap_or("");
        value
            .parse()
            .map_err(|_| anyhow::anyhow!("dnsperf {label:?} is {value:?}"))
    };
    let latencies = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    let lost_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Queries lost:"))
        .unwrap_or("");
    let lost_percent = lost_line
        .split('(')
        .nth(1)
        .and_then(|p| p.trim_end_matches("%)").trim().parse().ok())
        .unwrap_or(0.0);
    Ok(Run {
        completed: field("Queries completed:")? as u64,
        qps: field("Queries per second:")?,
        seconds: field("Run time (s):")?,
        lost_percent,
        latencies,
    })
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
