//! `cargo xtask demo`: a three-area site in network namespaces, every agent that exists so far,
//! told in plain words. Each agent's issue adds its scene here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lab::{Lab, Netns, Site, SiteSpec};

use crate::util::{cmd, root, step};

/// Every program the demo starts. The demo builds exactly [`Program::ALL`], and it can only
/// name a binary through this type, so it never starts one it did not build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Bus,
    Fieldctl,
    UplinkMonitor,
    CrossSiteFailover,
    Whereami,
    DhcpTakeover,
}

impl Program {
    const ALL: [Program; 6] = [
        Program::Bus,
        Program::Fieldctl,
        Program::UplinkMonitor,
        Program::CrossSiteFailover,
        Program::Whereami,
        Program::DhcpTakeover,
    ];

    /// The package, which is also the binary's name.
    fn package(self) -> &'static str {
        match self {
            Program::Bus => "fieldnet-bus",
            Program::Fieldctl => "fieldctl",
            Program::UplinkMonitor => "uplink-monitor",
            Program::CrossSiteFailover => "cross-site-failover",
            Program::Whereami => "whereami",
            Program::DhcpTakeover => "dhcp-takeover",
        }
    }
}

/// Where the built programs are.
struct Binaries(PathBuf);

impl Binaries {
    fn path(&self, program: Program) -> PathBuf {
        self.0.join(program.package())
    }
}

struct Demo {
    interrupted: Arc<AtomicBool>,
    fast: bool,
}

impl Demo {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.interrupted.load(Ordering::SeqCst),
            "interrupted: tearing down"
        );
        Ok(())
    }

    /// A pause so a person can read, cut short by Ctrl-C.
    fn pause(&self, seconds: u64) -> anyhow::Result<()> {
        if !self.fast {
            let until = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < until {
                self.check()?;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.check()
    }
}

pub fn run(fast: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::util::is_root(),
        "the demo builds network namespaces: run it as root"
    );
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let demo = Demo { interrupted, fast };

    step("tools the lab needs");
    crate::ci::install_missing_peers()?;

    step("building fieldnet");
    let mut args = vec!["build", "--quiet", "--locked"];
    for program in Program::ALL {
        args.extend(["-p", program.package()]);
    }
    cmd("cargo", &args)?;
    let bin = Binaries(root().join("target/debug"));

    let mut lab = Lab::new("demo").context("creating the lab")?;
    let outcome = scenes(&demo, &mut lab, &bin);
    let prefix = lab.prefix().to_owned();
    step("tearing down");
    drop(lab);
    let left = leftover_namespaces(&prefix)?;
    anyhow::ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    println!("Every namespace, process and rule the demo made is gone.");
    outcome
}

fn scenes(demo: &Demo, lab: &mut Lab, bin: &Binaries) -> anyhow::Result<()> {
    step("building a three-area site in network namespaces");
    let mut site = lab
        .site(&SiteSpec::default())
        .context("building the site")?;
    // Every appliance gets a leg (in production a VLAN over the cable) into the other areas'
    // LANs, so it can take over a dead neighbour's network.
    lab.legs(&mut site).context("adding the legs")?;
    println!("{}", site.describe());
    demo.pause(2)?;

    step("one site file for every appliance");
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections("[dhcp_takeover]\nlease_time_s = 300\n")
        .write()?;
    let fieldctl_says = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new(bin.path(Program::Fieldctl))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    print!("{}", fieldctl_says(&["check-config"])?);
    println!("What each appliance will do with it (`fieldctl site`):");
    for line in fieldctl_says(&["site"])?.lines() {
        println!("  {line}");
    }
    let sockets: Vec<PathBuf> = site
        .areas
        .iter()
        .map(|area| lab::bus_socket(lab.dir(), area.id))
        .collect();
    demo.pause(2)?;

    step("starting the bus on every appliance");
    let mut brokers = spawn_everywhere(lab, &site, &config, &bin.path(Program::Bus))?;
    for (area, socket) in site.areas.iter().zip(&sockets) {
        wait_for_socket(socket)?;
        println!(
            "appliance {}: fieldnet-bus listening on {}",
            area.id,
            socket.display()
        );
    }
    step("starting uplink-monitor on every appliance");
    let mut monitors = spawn_everywhere(lab, &site, &config, &bin.path(Program::UplinkMonitor))?;
    for (area, monitor) in site.areas.iter().zip(&monitors) {
        for uplink in &area.uplinks {
            monitor.wait_for_log(
                &format!("uplink={} from=unknown to=up", uplink.name),
                Duration::from_secs(20),
            )?;
        }
        println!(
            "appliance {}: uplink-monitor probes {} uplinks, {} of them its own",
            area.id,
            area.uplinks.len() + site.areas.len() - 1,
            area.uplinks.len()
        );
    }
    step("starting cross-site-failover on every appliance");
    let mut crossers =
        spawn_everywhere(lab, &site, &config, &bin.path(Program::CrossSiteFailover))?;
    for (area, agent) in site.areas.iter().zip(&crossers) {
        for other in site.areas.iter().filter(|other| other.id != area.id) {
            agent.wait_for_log(
                &format!("peer liveness changed peer={}", other.id),
                Duration::from_secs(20),
            )?;
        }
        println!(
            "appliance {}: heartbeats every 50 ms over cable and wifi; sees {} other appliances alive",
            area.id,
            site.areas.len() - 1
        );
    }
    step("starting whereami (the area's DNS) on every appliance");
    let mut resolvers = spawn_everywhere(lab, &site, &config, &bin.path(Program::Whereami))?;
    for (area, resolver) in site.areas.iter().zip(&resolvers) {
        resolver.wait_for_log("answering DNS", Duration::from_secs(20))?;
        println!(
            "appliance {}: whereami answers DNS on {}",
            area.id, area.gateway
        );
    }
    step("starting dhcp-takeover (the area's DHCP) on every appliance");
    let mut dhcp = spawn_everywhere(lab, &site, &config, &bin.path(Program::DhcpTakeover))?;
    for (area, server) in site.areas.iter().zip(&dhcp) {
        server.wait_for_log("serving DHCP on own network", Duration::from_secs(20))?;
        println!(
            "appliance {}: dhcp-takeover answers DHCP on {}; its leases are replicated to the others",
            area.id, area.network
        );
    }
    demo.pause(1)?;

    step("whereami: every device learns which network it is on");
    println!("A device in each area asks its DNS server for TXT whereami.lab.fieldnet.example:");
    for area in &site.areas {
        let client = &area.clients[0];
        let (_, answer) = ask_whereami(&client.ns, &area.gateway)?;
        println!("  {} in area {}: {answer}", client.addr, area.id);
    }
    let outsider = &site.areas[0].uplinks[0].router;
    let (status, _) = ask_whereami(outsider, &site.areas[0].gateway)?;
    println!(
        "The 4G router on the uplink side asks the same and gets {status}: not an open resolver."
    );
    demo.pause(1)?;

    step("scene 1: the site is connected");
    let north = &site.areas[0];
    let stage = &site.areas[1];
    let client = &north.clients[0];
    let internet = ping_line(&client.ns, "192.0.2.1")?;
    println!(
        "A device in area 1 ({}) reaches an internet host (192.0.2.1) through uplink {}: {internet}",
        client.addr, north.uplinks[0].name
    );
    let cross = ping_line(&client.ns, &stage.clients[0].addr)?;
    println!(
        "It reaches a device in area 2 ({}) over the cable: {cross}",
        stage.clients[0].addr
    );
    demo.pause(2)?;

    step("scene 2: the bus carries what agents say");
    let socket = &sockets[0];
    let socket = socket.to_str().context("socket path is UTF-8")?;
    let fieldctl = bin.path(Program::Fieldctl);
    let fieldctl = fieldctl.to_str().unwrap_or_default();
    north.appliance.exec(
        fieldctl,
        &[
            "--socket",
            socket,
            "publish",
            "site/note",
            r#"{"text":"stage power restored"}"#,
            "--retain",
        ],
    )?;
    println!("An operator published a note; anyone following the bus sees it:");
    let events = north.appliance.exec(
        fieldctl,
        &["--socket", socket, "events", "site/", "--count", "1"],
    )?;
    print!("  {}", String::from_utf8_lossy(&events.stdout));
    println!("And `fieldctl status` on appliance 1 says:");
    let status = north.appliance.exec(
        fieldctl,
        &[
            "--socket",
            socket,
            "--config",
            &config.to_string_lossy(),
            "--appliance",
            &lab::appliance_name(1),
            "status",
        ],
    );
    // status exits 0 only with the bus up; the other agents are not written yet, so it lists them as absent.
    let status = status?;
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {line}");
    }
    demo.pause(2)?;

    step("scene 3: an uplink's cable is pulled");
    let echo = lab::EchoServer::start(&site.internet, "192.0.2.1:7".parse()?)?;
    println!(
        "A device in area 1 sends a small packet every 10 ms to an internet host, which answers each."
    );
    let first = &north.uplinks[0];
    let moved_from = |name: &str| format!("default route moved from={name} to=");
    let cut = failover(
        &client.ns,
        echo.address,
        &monitors[0],
        &moved_from(&first.name),
        || {
            println!(
                "Now the cable between appliance 1 and its router {} is pulled.",
                first.name
            );
            lab.link_down(&first.router, &first.router_lan_if)
        },
    )?;
    println!("uplink-monitor saw the link go down and moved traffic.");
    demo.pause(2)?;

    step("scene 4: the next uplink dies silently (carrier up, nothing gets through)");
    let second = &north.uplinks[1];
    let silent = failover(
        &client.ns,
        echo.address,
        &monitors[0],
        &moved_from(&second.name),
        || {
            println!(
                "Router {}'s connection to the internet goes dead; its cable stays plugged in.",
                second.name
            );
            lab.blackhole(&second.router, &second.router_wan_if)
        },
    )?;
    println!(
        "Its probes went unanswered, so uplink-monitor moved traffic to another area's uplink over the cable."
    );
    println!("What an operator sees on appliance 1:");
    let status = north.appliance.exec(
        fieldctl,
        &[
            "--socket",
            socket,
            "--config",
            &config.to_string_lossy(),
            "--appliance",
            &lab::appliance_name(1),
            "status",
        ],
    )?;
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {line}");
    }
    drop(silent);
    drop(cut);
    demo.pause(2)?;

    step("scene 5: the cable between areas 1 and 2 is cut");
    let far = lab::EchoServer::start(
        &stage.clients[0].ns,
        format!("{}:7", stage.clients[0].addr).parse()?,
    )?;
    println!(
        "A device in area 1 sends a small packet every 10 ms to a device in area 2, which answers each."
    );
    let cable = failover(
        &client.ns,
        far.address,
        &crossers[0],
        "routes to peer moved peer=2 from=cable to=wifi",
        || {
            println!("The cable between the two areas is cut.");
            lab.link_down(&stage.appliance, "cab1")
        },
    )?;
    println!(
        "Heartbeats stopped on the cable, so both appliances moved the routes to the wifi bridge."
    );
    demo.pause(1)?;

    step("scene 6: rain on the wifi bridge too: the VPN through the hub");
    let rain = failover(
        &client.ns,
        far.address,
        &crossers[0],
        "routes to peer moved peer=2 from=wifi to=vpn",
        || {
            println!(
                "With the cable still cut, the wifi bridge goes silent: its link stays up, nothing gets through."
            );
            lab.blackhole(&stage.appliance, "wifi1")
        },
    )?;
    let route = north
        .appliance
        .ip_output(&["route", "show", &stage.network])?;
    println!("  route on appliance 1: {}", route.trim());
    println!(
        "The routes moved to the WireGuard tunnel through the hub, which was up and hot all along."
    );
    // Tunnel health is judged every second.
    std::thread::sleep(Duration::from_millis(1200));
    if let Some(health) = crossers[0]
        .log()
        .lines()
        .rev()
        .find(|line| line.contains("tunnel health changed"))
    {
        println!("The tunnel's health, judged on interface, handshake and heartbeats through it:");
        println!("  {}", health.trim());
    }
    drop(rain);
    drop(cable);
    demo.pause(1)?;

    step(
        "scene 7: appliance 2 loses power; appliance 1 takes its network over, then hands it back",
    );
    let laptop = &stage.clients[1];
    let hook = lab::udhcpc_hook(lab.dir())?;
    let hook = hook.to_str().context("hook path is UTF-8")?.to_owned();
    let dhcp_once = |ns: &Netns| -> anyhow::Result<String> {
        ns.ip(&["addr", "flush", "dev", "eth0"])?;
        ns.exec(
            "udhcpc",
            &[
                "-q", "-n", "-f", "-i", "eth0", "-s", &hook, "-t", "10", "-T", "1",
            ],
        )?;
        Ok(ns
            .ipv4("eth0")
            .map_or_else(|| "none".to_owned(), |address| address.to_string()))
    };
    println!(
        "A laptop in area 2 asks for an address: {}",
        dhcp_once(&laptop.ns)?
    );
    std::thread::sleep(Duration::from_millis(500));
    println!("Appliance 2's power is cut: every agent on it dies, its switch keeps switching.");
    let cut = std::time::Instant::now();
    for agents in [
        &mut dhcp,
        &mut resolvers,
        &mut crossers,
        &mut monitors,
        &mut brokers,
    ] {
        agents[1].kill_now()?;
    }
    let power = lab.power_off(&stage.appliance)?;
    dhcp[0].wait_for_log("network taken over", Duration::from_secs(20))?;
    println!(
        "  appliance 1 took NETWORK2 over {:.1} s after the cut: {}",
        cut.elapsed().as_secs_f64(),
        last_line(&dhcp[0].log(), "network taken over")
    );
    println!(
        "  the laptop keeps its address and its gateway {} (now on appliance 1): {}",
        stage.gateway,
        ping_line(&laptop.ns, &stage.gateway)?
    );
    println!(
        "  and reaches a device in area 1 through it: {}",
        ping_line(&laptop.ns, &north.clients[0].addr)?
    );
    let newcomer = &stage.clients[0];
    println!(
        "  a device arriving now gets an address from appliance 1: {}",
        dhcp_once(&newcomer.ns)?
    );
    let (_, answer) = ask_whereami(&newcomer.ns, &stage.gateway)?;
    println!(
        "  and its DNS (appliance 1 now answers on {}) still says: {answer}",
        stage.gateway
    );
    println!("  `fieldctl status` on appliance 1:");
    let status = std::process::Command::new(bin.path(Program::Fieldctl))
        .arg("--config")
        .arg(&config)
        .args(["--appliance", &lab::appliance_name(1)])
        .arg("status")
        .output()?;
    for line in String::from_utf8_lossy(&status.stdout)
        .lines()
        .skip_while(|line| !line.starts_with("dhcp"))
    {
        println!("    {line}");
    }
    demo.pause(2)?;

    println!(
        "Power is back on appliance 2: its agents start, it fetches the leases issued in its absence, then gets its network back."
    );
    power.undo()?;
    let back = std::time::Instant::now();
    let config = config.to_str().context("config path is UTF-8")?;
    let stage_name = lab::appliance_name(2);
    let mut restarted = Vec::new();
    for program in [
        Program::Bus,
        Program::CrossSiteFailover,
        Program::DhcpTakeover,
    ] {
        restarted.push(lab.spawn(
            &stage.appliance,
            bin.path(program).to_str().context("binary path is UTF-8")?,
            &["--config", config, "--appliance", &stage_name],
        )?);
        if program == Program::Bus {
            wait_for_socket(&sockets[1])?;
        }
    }
    dhcp[0].wait_for_log("network handed back", Duration::from_secs(30))?;
    restarted[2].wait_for_log("serving DHCP on own network", Duration::from_secs(30))?;
    println!(
        "  handed back {:.1} s after power-on (agents' start included): {}",
        back.elapsed().as_secs_f64(),
        last_line(&dhcp[0].log(), "network handed back")
    );
    let leases = std::process::Command::new(bin.path(Program::Fieldctl))
        .arg("--config")
        .arg(config)
        .args(["--appliance", &lab::appliance_name(2)])
        .args(["leases", "--network", "NETWORK2"])
        .output()?;
    println!("  `fieldctl leases --network NETWORK2` on appliance 2 (the taker's lease included):");
    for line in String::from_utf8_lossy(&leases.stdout).lines() {
        println!("    {line}");
    }
    drop(restarted);
    demo.pause(1)?;

    drop(dhcp);
    drop(resolvers);
    drop(crossers);
    drop(monitors);
    drop(brokers);
    Ok(())
}

/// `dig TXT whereami.<lab zone>` from `ns` to `server`: (status, the answer's text).
fn ask_whereami(ns: &Netns, server: &str) -> anyhow::Result<(String, String)> {
    let reply = ns.dig(&[
        "+tries=1",
        "+time=2",
        &format!("@{server}"),
        "TXT",
        "whereami.lab.fieldnet.example",
    ])?;
    let answer = reply.values().into_iter().next().unwrap_or_default();
    Ok((reply.status, answer))
}

/// Starts `program --config <the site file> --appliance <its name>` on every appliance.
fn spawn_everywhere(
    lab: &mut Lab,
    site: &Site,
    config: &Path,
    program: &Path,
) -> anyhow::Result<Vec<lab::LabProcess>> {
    let program = program.to_str().context("binary path is UTF-8")?;
    let config = config.to_str().context("config path is UTF-8")?;
    site.areas
        .iter()
        .map(|area| {
            lab.spawn(
                &area.appliance,
                program,
                &[
                    "--config",
                    config,
                    "--appliance",
                    &lab::appliance_name(area.id),
                ],
            )
        })
        .collect()
}

/// Streams from `client` while `inject` breaks something, waits until `agent` logs `needle`
/// (the move it made), and tells what the device saw. Returns the fault, still in force.
fn failover(
    client: &Netns,
    echo: std::net::SocketAddr,
    agent: &lab::LabProcess,
    needle: &str,
    inject: impl FnOnce() -> anyhow::Result<lab::Fault>,
) -> anyhow::Result<lab::Fault> {
    let stream = lab::Stream::start(
        client,
        echo,
        Duration::from_millis(10),
        Duration::from_secs(30),
    )?;
    std::thread::sleep(Duration::from_millis(700));
    let fault = inject()?;
    agent.wait_for_log(needle, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(700));
    let report = stream.finish();
    println!("  {}", last_line(&agent.log(), needle));
    println!(
        "The device's longest wait for an answer was {:.0} ms ({} of {} answers arrived).",
        report.longest_gap.as_secs_f64() * 1000.0,
        report.received,
        report.sent
    );
    Ok(fault)
}

/// The last log line containing `needle`, without its timestamp.
fn last_line(log: &str, needle: &str) -> String {
    log.lines()
        .rev()
        .find(|line| line.contains(needle))
        .map(|line| {
            line.split_once("INFO ")
                .map_or(line, |(_, rest)| rest)
                .to_owned()
        })
        .unwrap_or_default()
}

/// One line of ping results in plain words.
fn ping_line(from: &Netns, target: &str) -> anyhow::Result<String> {
    let stats = from.ping(target, 20, Duration::from_millis(20))?;
    if stats.received == 0 {
        return Ok(format!(
            "no replies ({} of {} lost)",
            stats.sent, stats.sent
        ));
    }
    Ok(format!(
        "{} of {} replies, {:.0} % lost, round trip {:.2} ms",
        stats.received,
        stats.sent,
        stats.loss * 100.0,
        stats.rtt_avg.as_secs_f64() * 1000.0
    ))
}

fn wait_for_socket(socket: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn leftover_namespaces(prefix: &str) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}
