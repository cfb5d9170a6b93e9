//! `cargo xtask bench cross-site`: the cross-site-failover acceptance scenarios on one real
//! two-area lab site with a WireGuard VPN through the hub, each repeated: the client-visible
//! outage (longest gap in a 10 ms UDP echo stream between the areas' clients) of a cable cut,
//! then of the wifi blackholed on top, then of the return to the cable; and the time from an
//! appliance's death (its agent SIGKILLed: every path falls silent) to the `peer/<id>` message
//! saying so on the survivor's bus. Prints a Markdown table; xtask records it.
//!
//! Usage: cross-site-bench RUNS (CROSS_SITE_FAILOVER_BIN and FIELDNET_BUS_BIN name the binaries).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use fieldnet::bus::topics;
use lab::{EchoServer, Lab, LabProcess, SiteSpec, Stream};

const PATIENCE: Duration = Duration::from_secs(30);
const HOLD_MS: u64 = 2000;

struct Running {
    lab: Lab,
    site: lab::Site,
    agents: Vec<Option<LabProcess>>,
    /// The site file every appliance starts from.
    config: String,
    agent_bin: String,
    _bus: LabProcess,
}

impl Running {
    fn agent(&self, index: usize) -> &LabProcess {
        self.agents[index].as_ref().expect("agent running")
    }

    fn start_agent(&mut self, index: usize) {
        let area = &self.site.areas[index];
        let process = self
            .lab
            .spawn(
                &area.appliance,
                &self.agent_bin,
                &[
                    "--config",
                    &self.config,
                    "--appliance",
                    &lab::appliance_name(area.id),
                ],
            )
            .expect("agent starts");
        self.agents[index] = Some(process);
    }

    /// Waits until `needle` appears at least `count` times in agent `index`'s log.
    fn wait_count(&self, index: usize, needle: &str, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.agent(index).log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "agent {} never logged {needle:?} {count} times:\n{}",
                index + 1,
                self.agent(index).log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stream(&self, echo: &EchoServer) -> Stream {
        Stream::start(
            &self.site.areas[0].clients[0].ns,
            echo.address,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )
        .expect("stream")
    }
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(10), |a| a.parse())?;
    let agent_bin = std::env::var("CROSS_SITE_FAILOVER_BIN")?;
    let bus_bin = std::env::var("FIELDNET_BUS_BIN")?;

    let mut lab = Lab::new("bench-cross-site")?;
    let site = lab.site(&SiteSpec {
        areas: 2,
        uplinks_per_area: 1,
        clients_per_area: 1,
        hub: true,
        vpn: true,
    })?;
    let extra = format!("[cross_site_failover]\nfailback_hold_ms = {HOLD_MS}\n");
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(&extra)
        .write()?
        .display()
        .to_string();
    let bus = lab.spawn(
        &site.areas[0].appliance,
        &bus_bin,
        &["--config", &config, "--appliance", &lab::appliance_name(1)],
    )?;
    let mut running = Running {
        lab,
        site,
        agents: vec![None, None],
        config,
        agent_bin,
        _bus: bus,
    };
    running.start_agent(0);
    running.start_agent(1);
    for index in 0..2 {
        running.wait_count(index, "to=cable reason=initial", 1);
    }
    let echo = EchoServer::start(
        &running.site.areas[1].clients[0].ns,
        "10.102.0.101:7".parse()?,
    )?;

    let (mut cable, mut wifi, mut back) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let a2 = running.site.areas[1].appliance.clone();
        let stream = running.stream(&echo);
        std::thread::sleep(Duration::from_millis(500));
        let cut = running.lab.link_down(&a2, "cab1")?;
        for index in 0..2 {
            running.wait_count(index, "to=wifi reason=path_down", run);
        }
        std::thread::sleep(Duration::from_millis(500));
        cable.push(stream.finish().longest_gap);

        let stream = running.stream(&echo);
        std::thread::sleep(Duration::from_millis(500));
        let silent = running.lab.blackhole(&a2, "wifi1")?;
        for index in 0..2 {
            running.wait_count(index, "to=vpn reason=path_down", run);
        }
        std::thread::sleep(Duration::from_millis(500));
        wifi.push(stream.finish().longest_gap);

        let stream = running.stream(&echo);
        std::thread::sleep(Duration::from_millis(500));
        drop(silent);
        drop(cut);
        for index in 0..2 {
            running.wait_count(index, "to=cable reason=failback", run);
        }
        std::thread::sleep(Duration::from_millis(500));
        back.push(stream.finish().longest_gap);
        eprintln!(
            "run {run}: cable cut {:?}, wifi blackholed {:?}, back to cable {:?}",
            cable[run - 1],
            wifi[run - 1],
            back[run - 1]
        );
    }
    let flaps: usize = (0..2)
        .map(|i| {
            running
                .agent(i)
                .log()
                .lines()
                .filter(|l| l.contains("routes to peer moved") && !l.contains("reason=initial"))
                .count()
        })
        .max()
        .unwrap_or(0);

    let socket = lab::bus_socket(running.lab.dir(), 1);
    let mut death = Vec::new();
    for run in 1..=runs {
        let mut bus = Subscriber::new(&socket, &topics::peer_topic(2))?;
        bus.wait_alive(true)?;
        // At a random point of the heartbeat interval: detection counts from the last heartbeat
        // heard, and the restarted peer was just heard from, so killing it at once would always
        // measure the longest case.
        std::thread::sleep(Duration::from_millis(500 + fastrand::u64(0..50)));
        let killed = Instant::now();
        running.agent(1).kill()?;
        bus.wait_alive(false)?;
        death.push(killed.elapsed());
        running.agents[1] = None;
        running.start_agent(1);
        running.wait_count(1, "to=cable reason=initial", 1);
        eprintln!("death {run}: {:?}", death[run - 1]);
    }

    println!(
        "Two areas, WireGuard (wireguard-go) through the hub namespace, heartbeats every 50 ms, detection after 3 misses, failback hold {HOLD_MS} ms (default 10 s); {runs} runs each, on one site."
    );
    println!();
    println!("| scenario | acceptance | measured | runs |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        row("cable cut (link down): cable → wifi", "≤ 300 ms", &cable)
    );
    println!(
        "{}",
        row(
            "then wifi blackholed (carrier up): wifi → VPN via the hub",
            "≤ 300 ms more",
            &wifi
        )
    );
    println!(
        "{}",
        row(
            "both restored: VPN → cable after the hold",
            "no flap",
            &back
        )
    );
    println!(
        "| route moves per appliance over all {runs} cycles (after start-up) | 3 per cycle = {} | {flaps} | {runs} |",
        3 * runs
    );
    let mut sorted = death.clone();
    sorted.sort();
    println!(
        "| appliance dead (agent SIGKILLed) → `peer/2` verdict `dead` on the survivor's bus | ≤ 300 ms | median {}, max {} | {runs} |",
        ms(sorted[sorted.len() / 2]),
        ms(*sorted.last().expect("runs"))
    );
    Ok(())
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn row(scenario: &str, bound: &str, samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    format!(
        "| {scenario} | {bound} | outage median {}, max {} | {} |",
        ms(sorted[sorted.len() / 2]),
        ms(*sorted.last().expect("runs > 0")),
        samples.len()
    )
}

/// A raw bus subscription (NDJSON over the broker's Unix socket, see docs/bus.md).
struct Subscriber {
    lines: BufReader<UnixStream>,
}

impl Subscriber {
    fn new(socket: &std::path::Path, prefix: &str) -> anyhow::Result<Self> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        writeln!(stream, r#"{{"op":"hello","name":"cross-site-bench"}}"#)?;
        writeln!(stream, r#"{{"op":"sub","prefix":"{prefix}"}}"#)?;
        Ok(Self {
            lines: BufReader::new(stream),
        })
    }

    /// Reads messages until the peer's verdict is alive (`want`) or not.
    fn wait_alive(&mut self, want: bool) -> anyhow::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(self.lines.read_line(&mut line)? > 0, "bus closed");
            let frame: serde_json::Value = serde_json::from_str(&line)?;
            if frame["op"] != "msg" {
                continue;
            }
            let liveness: topics::PeerLiveness = serde_json::from_value(frame["body"].clone())?;
            if (liveness.verdict == topics::PeerVerdict::Alive) == want {
                return Ok(());
            }
        }
    }
}
