//! `cargo xtask demo`: a three-area site in network namespaces, every agent that exists so far,
//! told in plain words. Each agent's issue adds its scene here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldnet::bus::topics::{self, DhcpNetworkState, PathKind, PeerVerdict};
use lab::{BusWatch, Lab, Netns, Site};

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
    ImdsEndpoint,
    Inventory,
}

impl Program {
    const ALL: [Program; 8] = [
        Program::Bus,
        Program::Fieldctl,
        Program::UplinkMonitor,
        Program::CrossSiteFailover,
        Program::Whereami,
        Program::DhcpTakeover,
        Program::ImdsEndpoint,
        Program::Inventory,
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
            Program::ImdsEndpoint => "imds-endpoint",
            Program::Inventory => "inventory",
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
    crate::peers::install_missing_peers()?;

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

/// The example site file every machine of the demo starts from.
const EXAMPLE: &str = "deploy/examples/riverside/site.toml";
/// Where moto, standing in for AWS, listens: on the internet's hub-side gateway.
const MOTO: &str = "203.0.113.1:5000";

/// The agents of one machine, started in order: the bus, then the others.
struct Agents {
    bus: lab::LabProcess,
    others: Vec<(Program, lab::LabProcess)>,
}

impl Agents {
    fn get(&self, program: Program) -> &lab::LabProcess {
        if program == Program::Bus {
            return &self.bus;
        }
        self.others
            .iter()
            .find(|(p, _)| *p == program)
            .map(|(_, process)| process)
            .expect("the demo started it")
    }

    /// SIGKILL, every one: the machine lost power.
    fn kill(self) -> anyhow::Result<()> {
        for (_, process) in self.others {
            process.kill_now()?;
        }
        self.bus.kill_now().map(drop)
    }
}

/// Starts `programs` on `machine` with nothing but the machine's own files: the bus first.
fn start_agents(
    lab: &mut Lab,
    machine: &lab::Machine,
    bin: &Binaries,
    programs: &[Program],
    env: &[&str],
) -> anyhow::Result<Agents> {
    let bus = lab.spawn_on(
        machine,
        bin.path(Program::Bus).to_str().context("UTF-8 path")?,
        &[],
    )?;
    wait_for_socket(&machine.bus_socket())?;
    let mut others = Vec::new();
    for program in programs {
        let path = bin.path(*program);
        let path = path.to_str().context("UTF-8 path")?;
        let process = if env.is_empty() {
            lab.spawn_on(machine, path, &[])?
        } else {
            let mut args: Vec<&str> = env.to_vec();
            args.push(path);
            lab.spawn_on(machine, "env", &args)?
        };
        others.push((*program, process));
    }
    Ok(Agents { bus, others })
}

/// The appliances' agents, after the bus.
const APPLIANCE_AGENTS: [Program; 6] = [
    Program::UplinkMonitor,
    Program::CrossSiteFailover,
    Program::Whereami,
    Program::DhcpTakeover,
    Program::ImdsEndpoint,
    Program::Inventory,
];

/// The hubs' agents, after the bus: cross-site-failover, and inventory for their WireGuard
/// peers.
const HUB_AGENTS: [Program; 2] = [Program::CrossSiteFailover, Program::Inventory];

/// moto's test credentials for a hub's AWS calls, and an appliance's own for STS (which
/// imds-endpoint turns into the devices' sessions).
const MOTO_CREDENTIALS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID=testing",
    "AWS_SECRET_ACCESS_KEY=testing",
    "AWS_EC2_METADATA_DISABLED=true",
];

fn scenes(demo: &Demo, lab: &mut Lab, bin: &Binaries) -> anyhow::Result<()> {
    step(&format!("the site file: {EXAMPLE}"));
    let example = root().join(EXAMPLE);
    let text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let file = example.to_string_lossy();
    let fieldctl = bin.path(Program::Fieldctl);
    let says = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new(&fieldctl)
            .arg("--config")
            .arg(&example)
            .args(args)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    print!("{}", says(&["check-config"])?);
    println!("What each machine will do with it (`fieldctl site`):");
    for line in says(&["site"])?.lines() {
        println!("  {line}");
    }
    demo.pause(2)?;

    step("building that site in network namespaces: three appliances, two hubs");
    let site = lab
        .site_from_file(&text, &file, 2)
        .context("building the site")?;
    println!("{}", site.describe());
    println!(
        "Each appliance and hub is a machine of its own: its host name, /etc/fieldnet/site.toml (the file above), /run and /var/lib. Every agent starts with no flags at all, as on site."
    );
    let parsed = fieldnet::config::SiteConfig::from_str(&text, &file)?;
    let zone = format!(
        "whereami.{}",
        parsed.machines[0].config.site.domain.trim_end_matches('.')
    );
    demo.pause(2)?;

    step("moto stands in for AWS");
    let ids = stand_in_aws(lab, &site, &parsed)?;
    for machine in &site.machines {
        machine.put("/etc/fieldnet/site.toml", &ids.text)?;
    }
    println!(
        "moto listens on {MOTO} in the internet namespace, with the VPC route table {}, the hubs' instances {} and {}, and their Route53 health checks. Every machine's site file now names these instead of the example's, and [hub] aws_endpoint points at moto: nothing else changed.",
        ids.route_table, ids.instances[0], ids.instances[1]
    );
    demo.pause(1)?;

    step("starting the agents on every machine, each finding itself by host name");
    let north_machine = site.machine("north").context("north")?;
    let stage_machine = site.machine("stage").context("stage")?;
    // Appliances first, then hubs (the site's machines in that order): appliances run every
    // agent, hubs cross-site-failover and inventory, with moto's test credentials.
    let mut appliances = Vec::new();
    let mut hubs = Vec::new();
    for (index, machine) in site.machines.iter().enumerate() {
        let hub = index >= site.areas.len();
        let (programs, env): (&[Program], &[&str]) = if hub {
            (&HUB_AGENTS, &MOTO_CREDENTIALS)
        } else {
            (&APPLIANCE_AGENTS, &MOTO_CREDENTIALS)
        };
        let agents = start_agents(lab, machine, bin, programs, env)?;
        let crosser = agents.get(Program::CrossSiteFailover);
        crosser.wait_for_log("this machine is", Duration::from_secs(20))?;
        println!(
            "{}: {}",
            machine.hostname,
            last_line(&crosser.log(), "this machine is")
        );
        if hub { &mut hubs } else { &mut appliances }.push(agents);
    }
    for (area, machine) in site.areas.iter().zip(&site.machines) {
        // What each agent says on the appliance's bus.
        for uplink in &area.uplinks {
            on_bus::<topics::UplinkState>(
                machine,
                &topics::uplink_state_topic(&uplink.name),
                &format!("{} up", uplink.name),
                |state| state.health == topics::UplinkHealth::Up,
            )?;
        }
        for other in site.areas.iter().filter(|other| other.id != area.id) {
            on_bus::<topics::PeerState>(
                machine,
                &topics::peer_topic(other.id),
                &format!("appliance {} alive", other.id),
                |peer| peer.verdict == PeerVerdict::Alive,
            )?;
        }
        on_bus::<topics::DnsState>(
            machine,
            topics::TOPIC_DNS_STATE,
            "DNS answered on the own network",
            |dns| {
                dns.networks
                    .iter()
                    .any(|n| n.role == topics::DnsRole::Own && n.listening)
            },
        )?;
        on_bus::<topics::DhcpState>(
            machine,
            topics::TOPIC_DHCP_STATE,
            "DHCP answered on the own network",
            |dhcp| {
                dhcp.networks
                    .iter()
                    .any(|n| n.owner == area.id && n.state == DhcpNetworkState::Own)
            },
        )?;
        println!(
            "appliance {}: uplink-monitor probes its {} {} and the others' through them; heartbeats every 50 ms to {} appliances over cable, wifi and the VPN; DNS and DHCP on {}",
            area.id,
            area.uplinks.len(),
            if area.uplinks.len() == 1 {
                "uplink"
            } else {
                "uplinks"
            },
            site.areas.len() - 1,
            area.network
        );
    }
    let (hub_a_machine, hub_b_machine) = (
        &site.machines[site.areas.len()],
        &site.machines[site.areas.len() + 1],
    );
    for area in &site.areas {
        on_bus::<topics::HubRoutes>(
            hub_a_machine,
            topics::TOPIC_HUB_ROUTES,
            &format!("hub-a routing area {}", area.id),
            |routes| routes.areas.iter().any(|known| known.area == area.id),
        )?;
    }
    on_bus::<topics::HubRoutes>(
        hub_b_machine,
        topics::TOPIC_HUB_ROUTES,
        "hub-b seeing hub-a up",
        |routes| routes.partner_up,
    )?;
    println!(
        "hub-a routes every area into its appliance's tunnel; hub-b watches hub-a over the VPC."
    );
    demo.pause(1)?;

    step("whereami: every device learns which network it is on");
    println!("A device in each area asks its DNS server for TXT {zone}:");
    for area in &site.areas {
        let client = &area.clients[0];
        let (_, answer) = ask_whereami(&client.ns, &area.gateway, &zone)?;
        println!("  {} in area {}: {answer}", client.addr, area.id);
    }
    let outsider = &site.areas[0].uplinks[0].router;
    let (status, _) = ask_whereami(outsider, &site.areas[0].gateway, &zone)?;
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
        "A device in area north ({}) reaches an internet host (192.0.2.1) through uplink {}: {internet}",
        client.addr, north.uplinks[0].name
    );
    let cross = ping_line(&client.ns, &stage.clients[0].addr)?;
    println!(
        "It reaches a device in area stage ({}) over the cable: {cross}",
        stage.clients[0].addr
    );
    demo.pause(2)?;

    step("scene 2: the bus carries what agents say");
    let fieldctl_on = |machine: &lab::Machine, args: &[&str]| -> anyhow::Result<String> {
        let output = machine.exec(fieldctl.to_str().unwrap_or_default(), args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    fieldctl_on(
        north_machine,
        &[
            "publish",
            "site/note",
            r#"{"text":"stage power restored"}"#,
            "--retain",
        ],
    )?;
    println!("An operator on north published a note; anyone following the bus sees it:");
    print!(
        "  {}",
        fieldctl_on(north_machine, &["events", "site/", "--count", "1"])?
    );
    println!("And `fieldctl status` on north (no flags: it finds its site file and itself) says:");
    for line in fieldctl_on(north_machine, &["status"])?.lines() {
        println!("  {line}");
    }
    // inventory swept north's network when it started: its devices are on the bus.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let devices = loop {
        let listing = fieldctl_on(north_machine, &["devices"])?;
        if listing.contains(&format!("{} ", client.addr)) {
            break listing;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "inventory on north did not list {} within 30 s; it said:\n{listing}",
            client.addr
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("`fieldctl devices` on north: what inventory found (ARP sweep, leases, neighbours):");
    for line in devices.lines() {
        println!("  {line}");
    }
    demo.pause(2)?;

    step("scene 3: an uplink's cable is pulled");
    let echo = lab::EchoServer::start(&site.internet, "192.0.2.1:7".parse()?)?;
    println!(
        "A device in area north sends a small packet every 10 ms to an internet host, which answers each."
    );
    let first = &north.uplinks[0];
    let moved_from = |name: &str| format!("default route moved from={name} to=");
    let north_monitor = appliances[0].get(Program::UplinkMonitor);
    let left = |name: &str| {
        let name = name.to_owned();
        move || {
            on_bus::<topics::UplinkActive>(
                north_machine,
                topics::TOPIC_UPLINK_ACTIVE,
                &format!("traffic off {name}"),
                |active| active.previous.as_deref() == Some(name.as_str()),
            )
        }
    };
    let cut = failover(
        &client.ns,
        echo.address,
        north_monitor,
        &moved_from(&first.name),
        left(&first.name),
        || {
            println!(
                "Now the cable between north and its router {} is pulled.",
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
        north_monitor,
        &moved_from(&second.name),
        left(&second.name),
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
    println!("What an operator sees on north:");
    for line in fieldctl_on(north_machine, &["status"])?.lines() {
        println!("  {line}");
    }
    drop(silent);
    drop(cut);
    demo.pause(2)?;

    step("scene 5: the cable between north and stage is cut");
    let far = lab::EchoServer::start(
        &stage.clients[0].ns,
        format!("{}:7", stage.clients[0].addr).parse()?,
    )?;
    println!(
        "A device in area north sends a small packet every 10 ms to a device in area stage, which answers each."
    );
    let north_crosser = appliances[0].get(Program::CrossSiteFailover);
    let stage_cable = stage
        .path(lab::PathKind::Cable, north.id)
        .context("stage's cable to north")?
        .ifname
        .clone();
    let routed_via = |path: PathKind| {
        move || {
            on_bus::<topics::PeerState>(
                north_machine,
                &topics::peer_topic(stage.id),
                &format!("routes to stage via {path}"),
                |peer| peer.active_path == Some(path),
            )
        }
    };
    let cable = failover(
        &client.ns,
        far.address,
        north_crosser,
        &format!("routes to peer moved peer={} from=cable to=wifi", stage.id),
        routed_via(PathKind::Wifi),
        || {
            println!("The cable between the two areas is cut.");
            lab.link_down(&stage.appliance, &stage_cable)
        },
    )?;
    println!(
        "Heartbeats stopped on the cable, so both appliances moved the routes to the wifi bridge."
    );
    demo.pause(1)?;

    step("scene 6: rain on the wifi bridge too: the VPN through the hub");
    let stage_wifi = stage
        .path(lab::PathKind::Wifi, north.id)
        .context("stage's wifi to north")?
        .ifname
        .clone();
    let rain = failover(
        &client.ns,
        far.address,
        north_crosser,
        &format!("routes to peer moved peer={} from=wifi to=vpn", stage.id),
        routed_via(PathKind::Vpn),
        || {
            println!(
                "With the cable still cut, the wifi bridge goes silent: its link stays up, nothing gets through."
            );
            lab.blackhole(&stage.appliance, &stage_wifi)
        },
    )?;
    let route = north
        .appliance
        .ip_output(&["route", "show", &stage.network])?;
    println!("  route on north: {}", route.trim());
    println!(
        "The routes moved to the WireGuard tunnel through hub-a, which was up and hot all along."
    );
    // Tunnel health is judged every second.
    std::thread::sleep(Duration::from_millis(1200));
    if let Some(health) = north_crosser
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

    step("scene 7: stage loses power; north takes its network over, then hands it back");
    let network = parsed
        .view(&stage_machine.name)?
        .own_networks()
        .next()
        .map(|n| n.name.clone())
        .context("stage serves a network")?;
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
        "A laptop in area stage asks for an address: {}",
        dhcp_once(&laptop.ns)?
    );
    std::thread::sleep(Duration::from_millis(500));
    println!("stage's power is cut: every agent on it dies, its switch keeps switching.");
    let cut = std::time::Instant::now();
    let cut_ms = fieldnet::bus::unix_millis();
    appliances.remove(1).kill()?;
    let power = lab.power_off(&stage.appliance)?;
    let taker = appliances[0].get(Program::DhcpTakeover);
    let patience = Duration::from_secs(30);
    let mut taken = BusWatch::subscribe(
        &north_machine.bus_socket(),
        &topics::takeover_topic(&network),
        patience,
    )?;
    taken.wait_for::<Option<topics::Takeover>>(
        "north takes the network",
        patience,
        |_, taken| taken.as_ref().is_some_and(|t| t.since >= cut_ms),
    )?;
    println!(
        "  north took {network} over {:.1} s after the cut: {}",
        cut.elapsed().as_secs_f64(),
        last_line(&taker.log(), "network taken over")
    );
    println!(
        "  the laptop keeps its address and its gateway {} (now on north): {}",
        stage.gateway,
        ping_line(&laptop.ns, &stage.gateway)?
    );
    println!(
        "  and reaches a device in area north through it: {}",
        ping_line(&laptop.ns, &north.clients[0].addr)?
    );
    let newcomer = &stage.clients[0];
    println!(
        "  a device arriving now gets an address from north: {}",
        dhcp_once(&newcomer.ns)?
    );
    let (_, answer) = ask_whereami(&newcomer.ns, &stage.gateway, &zone)?;
    println!(
        "  and its DNS (north now answers on {}) still says: {answer}",
        stage.gateway
    );
    println!("  `fieldctl status` on north:");
    for line in fieldctl_on(north_machine, &["status"])?
        .lines()
        .skip_while(|line| !line.starts_with("dhcp"))
    {
        println!("    {line}");
    }
    demo.pause(2)?;

    println!(
        "Power is back on stage: its agents start, it fetches the leases issued in its absence, then gets its network back."
    );
    power.undo()?;
    let back = std::time::Instant::now();
    let restarted = start_agents(
        lab,
        stage_machine,
        bin,
        &[Program::CrossSiteFailover, Program::DhcpTakeover],
        &[],
    )?;
    // The takeover cleared on north's bus: handed back.
    taken.wait_for::<Option<topics::Takeover>>(
        "the network handed back",
        patience,
        |_, taken| taken.is_none(),
    )?;
    on_bus::<topics::DhcpState>(
        stage_machine,
        topics::TOPIC_DHCP_STATE,
        "stage answers its network",
        |dhcp| {
            dhcp.networks
                .iter()
                .any(|n| n.name == network && n.state == DhcpNetworkState::Own)
        },
    )?;
    println!(
        "  handed back {:.1} s after power-on (agents' start included): {}",
        back.elapsed().as_secs_f64(),
        last_line(&taker.log(), "network handed back")
    );
    println!("  `fieldctl leases --network {network}` on stage (the taker's lease included):");
    for line in fieldctl_on(stage_machine, &["leases", "--network", &network])?.lines() {
        println!("    {line}");
    }
    drop(restarted);
    demo.pause(1)?;

    step("scene 8: the primary hub dies; the standby takes the VPC routes");
    let hub_a = hubs.remove(0);
    let standby = hubs[0].get(Program::CrossSiteFailover);
    println!(
        "The VPC route table {} sends the site's networks to hub-a ({}).",
        ids.route_table,
        route_target(&site.internet, &ids)?
    );
    let died = std::time::Instant::now();
    hub_a.kill()?;
    on_bus::<topics::HubRoutes>(
        &site.machines[site.areas.len() + 1],
        topics::TOPIC_HUB_ROUTES,
        "hub-b taking the routes",
        |routes| !routes.partner_up && routes.owner == topics::RouteOwner::Standby,
    )?;
    // The VPC route itself, as AWS has it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while route_target(&site.internet, &ids)? != ids.instances[1] {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the VPC route never moved to hub-b's instance"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  hub-a died; {:.1} s later hub-b took the routes: {}",
        died.elapsed().as_secs_f64(),
        last_line(&standby.log(), "VPC route replaced")
    );
    println!(
        "  the route table now sends them to {} (hub-b).",
        route_target(&site.internet, &ids)?
    );
    demo.pause(1)?;

    step("scene 9: a camera with no AWS keys sends to SQS, also with its area's uplinks cut");
    let camera = &north.clients[1];
    camera_lease(lab, &camera.ns, CAMERA_MAC)?;
    on_bus::<topics::ImdsState>(
        north_machine,
        topics::TOPIC_IMDS_STATE,
        "credentials ready on north",
        |state| state.runway_s.unwrap_or(0) > 0 && state.devices > 0,
    )?;
    let sent = camera_sends(lab, &camera.ns, &ids.queue)?;
    println!(
        "A camera in north (MAC {CAMERA_MAC}, no AWS keys, no AWS_* variables) asked 169.254.169.254 for credentials like any EC2 instance: it got a session of the role riverside-cameras of its own (named after it, its MAC as source identity), and boto3 sent message {sent} to SQS."
    );
    let cut: Vec<lab::Fault> = north
        .uplinks
        .iter()
        .map(|uplink| lab.link_down(&uplink.router, &uplink.router_lan_if))
        .collect::<Result<_, _>>()?;
    on_bus::<topics::UplinkActive>(
        north_machine,
        topics::TOPIC_UPLINK_ACTIVE,
        "north on another area's uplink",
        |active| {
            !north
                .uplinks
                .iter()
                .any(|uplink| uplink.name == active.name)
        },
    )?;
    let sent = camera_sends(lab, &camera.ns, &ids.queue)?;
    println!(
        "Both of north's uplinks are cut. The camera still gets its credentials (they never needed the uplink: STS is called ahead of time, and each class keeps a reserve for hours without internet) and its message {sent} reached SQS through another area's uplink."
    );
    for line in fieldctl_on(north_machine, &["status"])?
        .lines()
        .filter(|line| line.starts_with("credentials"))
    {
        println!("  {line}");
    }
    drop(cut);
    demo.pause(1)?;

    drop(hubs);
    drop(appliances);
    Ok(())
}

/// The demo's camera: a MAC of riverside's `cameras` class.
const CAMERA_MAC: &str = "02:ca:00:00:00:01";

/// Gives `client` the MAC `mac` and a DHCP lease (udhcpc, with the lab's hook that touches
/// only the namespace's interface and route).
fn camera_lease(lab: &Lab, client: &Netns, mac: &str) -> anyhow::Result<()> {
    for args in [
        &["link", "set", "eth0", "down"][..],
        &["link", "set", "eth0", "address", mac],
        &["link", "set", "eth0", "up"],
        &["addr", "flush", "dev", "eth0"],
    ] {
        client.ip(args)?;
    }
    let hook = lab::udhcpc_hook(lab.dir())?;
    client.exec_timeout(
        "udhcpc",
        &[
            "-f",
            "-q",
            "-n",
            "-t",
            "10",
            "-i",
            "eth0",
            "-s",
            hook.to_str().context("UTF-8 path")?,
        ],
        Duration::from_secs(30),
    )?;
    Ok(())
}

/// boto3 in `client` with an empty environment sends one message to `queue`; its MessageId.
fn camera_sends(lab: &Lab, client: &Netns, queue: &str) -> anyhow::Result<String> {
    const DEVICE: &str = "import sys, boto3\n\
        sqs = boto3.session.Session(region_name='eu-west-1').client('sqs', endpoint_url=sys.argv[1])\n\
        print(sqs.send_message(QueueUrl=sys.argv[2], MessageBody='hello from a camera')['MessageId'])\n";
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()?;
    let python = String::from_utf8_lossy(&python.stdout).trim().to_owned();
    let home = format!("HOME={}", lab.dir().display());
    let endpoint = format!("http://{MOTO}");
    let output = client.exec_timeout(
        "env",
        &[
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            &home,
            &python,
            "-c",
            DEVICE,
            &endpoint,
            queue,
        ],
        Duration::from_secs(60),
    )?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// What moto made for the hubs, and the site file naming it.
struct StandIn {
    text: String,
    route_table: String,
    instances: [String; 2],
    /// The SQS queue the devices send to.
    queue: String,
}

/// Starts moto in the internet namespace, creates the VPC route table (routes to every site
/// network via hub-a's instance), both instances and both health checks, and returns the site
/// file with those ids in place of the example's and `aws_endpoint` pointing at moto.
fn stand_in_aws(
    lab: &mut Lab,
    site: &Site,
    parsed: &fieldnet::config::SiteConfig,
) -> anyhow::Result<StandIn> {
    use fieldnet_aws::testing::fixtures::{first_text, health_check_request, route_fixture};
    let (host, port) = MOTO.split_once(':').context("MOTO is host:port")?;
    // It lives as long as the lab.
    let log = lab.spawn_daemon(
        &site.internet,
        fieldnet_aws::testing::MOTO_SERVER_PROGRAM,
        &["-H", host, "-p", port],
    )?;
    let listening = site.internet.run(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(MOTO).is_err() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    })?;
    anyhow::ensure!(
        listening,
        "moto did not listen on {MOTO} within 30 s:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let modes: Vec<fieldnet::config::HubMode> = parsed
        .hubs()
        .filter_map(|hub| hub.config.agents.cross_site_failover.hub.clone())
        .collect();
    anyhow::ensure!(modes.len() == 2, "the example has a hub pair");
    let region = modes[0].aws_region.clone();
    let networks: Vec<String> = parsed.machines[0]
        .config
        .networks
        .iter()
        .map(|n| n.subnet.to_string())
        .collect();
    let (fixture, checks) = aws_in(&site.internet, &region, move |client| async move {
        let refs: Vec<&str> = networks.iter().map(String::as_str).collect();
        let fixture = route_fixture(&client, &refs).await;
        let mut checks = Vec::new();
        for reference in ["hub-a", "hub-b"] {
            let created = client
                .rest_xml(
                    fieldnet_aws::Service::Route53,
                    reqwest::Method::POST,
                    "/2013-04-01/healthcheck",
                    Some(health_check_request(reference)),
                )
                .await
                .expect("CreateHealthCheck");
            checks.push(first_text(&created, "Id"));
        }
        (fixture, checks)
    })?;
    let mut text = std::fs::read_to_string(root().join(EXAMPLE))?;
    let mut swap = |old: &str, new: &str| -> anyhow::Result<()> {
        anyhow::ensure!(text.contains(old), "{old} is not in the example");
        text = text.replace(old, new);
        Ok(())
    };
    let tables: Vec<String> = modes[0]
        .route_tables
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect();
    swap(
        &format!("route_tables = [{}]", tables.join(", ")),
        &format!("route_tables = [\"{}\"]", fixture.route_table),
    )?;
    swap(&modes[0].instance_id, &fixture.instance_a)?;
    swap(&modes[1].instance_id, &fixture.instance_b)?;
    for (mode, check) in modes.iter().zip(&checks) {
        if let Some(old) = &mode.own_health_check {
            swap(old, check)?;
        }
    }
    swap(
        "[hub]\n",
        &format!("[hub]\naws_endpoint = \"http://{MOTO}\"\n"),
    )?;
    swap(
        "[imds_endpoint]\n",
        &format!("[imds_endpoint]\naws_endpoint = \"http://{MOTO}\"\n"),
    )?;
    let queue = aws_in(&site.internet, &region, |client| async move {
        let created = client
            .query(
                fieldnet_aws::Service::Sqs,
                "CreateQueue",
                &[("QueueName".to_owned(), "riverside".to_owned())],
            )
            .await
            .expect("CreateQueue");
        first_text(&created, "QueueUrl")
    })?;
    Ok(StandIn {
        text,
        route_table: fixture.route_table,
        instances: [fixture.instance_a, fixture.instance_b],
        queue,
    })
}

/// Runs `calls` against moto from inside `ns` (moto listens there).
fn aws_in<T: Send + 'static, F: std::future::Future<Output = T>>(
    ns: &Netns,
    region: &str,
    calls: impl FnOnce(fieldnet_aws::Client) -> F + Send + 'static,
) -> anyhow::Result<T> {
    let region = region.to_owned();
    ns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = fieldnet_aws::ClientConfig {
            endpoint: Some(format!("http://{MOTO}")),
            ..fieldnet_aws::ClientConfig::new(&region)
        };
        runtime.block_on(calls(fieldnet_aws::Client::with_static_credentials(
            config, "testing", "testing", None,
        )))
    })
}

/// The instance the route table sends the first site network to.
fn route_target(internet: &Netns, ids: &StandIn) -> anyhow::Result<String> {
    use fieldnet_aws::AwsApi as _;
    let table = ids.route_table.clone();
    aws_in(internet, "eu-west-1", move |client| async move {
        let routes = client.describe_routes(&[table]).await.unwrap_or_default();
        routes
            .iter()
            .find(|route| route.destination.starts_with("10.101."))
            .and_then(|route| route.instance_id.clone())
            .unwrap_or_else(|| "nothing".to_owned())
    })
}

/// `dig TXT <zone name>` from `ns` to `server`: (status, the answer's text).
fn ask_whereami(ns: &Netns, server: &str, name: &str) -> anyhow::Result<(String, String)> {
    let reply = ns.dig(&["+tries=1", "+time=2", &format!("@{server}"), "TXT", name])?;
    let answer = reply.values().into_iter().next().unwrap_or_default();
    Ok((reply.status, answer))
}

/// Streams from `client` while `inject` breaks something, waits until `moved` sees the move
/// on the bus, and tells what the device saw and `agent`'s last log line with `needle` (the
/// move in its words). Returns the fault, still in force.
fn failover(
    client: &Netns,
    echo: std::net::SocketAddr,
    agent: &lab::LabProcess,
    needle: &str,
    moved: impl FnOnce() -> anyhow::Result<()>,
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
    moved()?;
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

/// Waits until a message under `prefix` on `machine`'s bus, read as `T`, satisfies `check`.
fn on_bus<T: serde::de::DeserializeOwned>(
    machine: &lab::Machine,
    prefix: &str,
    what: &str,
    mut check: impl FnMut(&T) -> bool,
) -> anyhow::Result<()> {
    let patience = Duration::from_secs(20);
    BusWatch::subscribe(&machine.bus_socket(), prefix, patience)?.wait_for::<T>(
        what,
        patience,
        |_, body| check(body),
    )?;
    Ok(())
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
