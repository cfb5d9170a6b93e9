//! uplink-monitor on a real lab site: the agent binary in the appliance namespace, real
//! routers, real faults, and a client streaming UDP every 10 ms through the appliance to an
//! echo server on the "internet". These tests check what happens (traffic moves, flows
//! survive, nothing flaps, nothing is lost on restart); outage times are measured and recorded
//! by `cargo xtask bench failover`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::{Direction, EchoServer, Lab, LabProcess, Netns, Site, SiteSpec, Stream, StreamReport};

const PATIENCE: Duration = Duration::from_secs(30);
const STREAM_INTERVAL: Duration = Duration::from_millis(10);

/// A site with uplink-monitor running on appliance 1 (and, with `both`, on appliance 2).
struct Running {
    lab: Lab,
    site: Site,
    agent: Option<LabProcess>,
    config: PathBuf,
    echo: EchoServer,
}

fn start(label: &str, areas: u8) -> Option<Running> {
    let mut lab = Lab::for_test(label)?;
    let spec = SiteSpec {
        areas,
        uplinks_per_area: 2,
        clients_per_area: 1,
        hub: false,
    };
    let site = lab.site(&spec).unwrap();
    let config = lab.dir().join("appliance-1.toml");
    std::fs::write(&config, lab::appliance_config(&site, 1, lab.dir(), "")).unwrap();
    let echo = EchoServer::start(&site.internet, "192.0.2.1:7".parse().unwrap()).unwrap();
    let mut running = Running {
        lab,
        site,
        agent: None,
        config,
        echo,
    };
    running.start_agent();
    Some(running)
}

fn wait_ready(agent: &LabProcess, uplinks: &[&str]) {
    for name in uplinks {
        let needle = format!("uplink health changed uplink={name} from=unknown to=up");
        agent
            .wait_for_log(&needle, PATIENCE)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

impl Running {
    fn start_agent(&mut self) {
        let area = &self.site.areas[0];
        let agent = self
            .lab
            .spawn(
                &area.appliance,
                env!("CARGO_BIN_EXE_uplink-monitor"),
                &["--config", self.config.to_str().unwrap()],
            )
            .unwrap();
        let names: Vec<&str> = area.uplinks.iter().map(|u| u.name.as_str()).collect();
        wait_ready(&agent, &names);
        self.agent = Some(agent);
    }

    fn agent(&self) -> &LabProcess {
        self.agent.as_ref().unwrap()
    }

    fn default_route(&self) -> String {
        self.site.areas[0]
            .appliance
            .ip_output(&["route", "show", "default"])
            .unwrap()
    }

    fn stream(&self) -> Stream {
        let client = &self.site.areas[0].clients[0].ns;
        let server: SocketAddr = self.echo.address;
        Stream::start(client, server, STREAM_INTERVAL, Duration::from_secs(120)).unwrap()
    }

    fn wait_for_log(&self, needle: &str) {
        self.agent()
            .wait_for_log(needle, PATIENCE)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    fn switches(&self) -> usize {
        self.agent().log().matches("default route moved").count()
    }
}

/// Lets the stream run on the new uplink for a while, then reports.
fn settle_and_finish(stream: Stream) -> StreamReport {
    std::thread::sleep(Duration::from_millis(500));
    stream.finish()
}

/// The stream recovered: replies kept coming after the longest gap, and the gap is the only
/// real hole (a few more stray losses are allowed, for a noisy machine).
fn assert_recovered(report: &StreamReport, what: &str) {
    let expected_in_gap =
        report.longest_gap.as_millis() as u64 / STREAM_INTERVAL.as_millis() as u64 + 5;
    assert!(
        report.received + expected_in_gap >= report.sent,
        "{what}: {report:?}"
    );
    eprintln!(
        "{what}: longest gap {:?} ({} of {} replies)",
        report.longest_gap, report.received, report.sent
    );
}

#[test]
fn carrier_loss_moves_the_default_route_and_the_flow_survives() {
    let Some(running) = start("um-carrier", 1) else {
        return;
    };
    let area = &running.site.areas[0];
    assert!(
        running.default_route().contains("dev wan0"),
        "{}",
        running.default_route()
    );
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let _cut = running
        .lab
        .link_down(&area.uplinks[0].router, &area.uplinks[0].router_lan_if)
        .unwrap();
    running.wait_for_log("default route moved from=a1-up1 to=a1-up2 reason=link_down");
    let report = settle_and_finish(stream);
    assert!(
        running.default_route().contains("dev wan1"),
        "{}",
        running.default_route()
    );
    assert_recovered(&report, "carrier loss");
    // The flow's old NAT binding was forgotten, which is why the same socket kept working.
    running.wait_for_log("forgot flows of the abandoned uplink uplink=a1-up1");
}

#[test]
fn silent_blackhole_with_carrier_up_is_detected_by_probes() {
    let Some(running) = start("um-blackhole", 1) else {
        return;
    };
    let area = &running.site.areas[0];
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let _dead = running
        .lab
        .blackhole(&area.uplinks[0].router, &area.uplinks[0].router_wan_if)
        .unwrap();
    running.wait_for_log("default route moved from=a1-up1 to=a1-up2 reason=silent");
    let report = settle_and_finish(stream);
    assert_recovered(&report, "blackhole");
    assert!(
        area.appliance.link("wan0").unwrap().has_carrier(),
        "the fault kept carrier up"
    );
}

#[test]
fn total_loss_towards_the_targets_on_one_uplink_moves_traffic() {
    let Some(running) = start("um-loss100", 1) else {
        return;
    };
    let area = &running.site.areas[0];
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let _loss = running
        .lab
        .loss(&area.uplinks[0].router, &area.uplinks[0].router_wan_if, 100)
        .unwrap();
    running.wait_for_log("default route moved from=a1-up1 to=a1-up2 reason=silent");
    let report = settle_and_finish(stream);
    assert_recovered(&report, "100 % loss");
}

#[test]
fn random_loss_on_every_uplink_never_switches() {
    // The CI variant of ten minutes: 20 s of 10 % loss on both uplinks. The same arithmetic
    // is soaked for ten simulated minutes in the monitor's unit tests.
    let Some(running) = start("um-loss10", 1) else {
        return;
    };
    let area = &running.site.areas[0];
    let _losses: Vec<_> = area
        .uplinks
        .iter()
        .map(|u| running.lab.loss(&u.router, &u.router_wan_if, 10).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(running.switches(), 0, "{}", running.agent().log());
    assert!(
        !running.agent().log().contains("to=silent"),
        "{}",
        running.agent().log()
    );
}

#[test]
fn a_flapping_uplink_is_dampened_and_traffic_ends_on_the_stable_one() {
    let Some(running) = start("um-flap", 1) else {
        return;
    };
    let area = &running.site.areas[0];
    let router = &area.uplinks[0].router;
    // 5 flaps a second for 10 s (the bench runs the full minute).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let down = running
            .lab
            .link_down(router, &area.uplinks[0].router_lan_if)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        down.undo().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(running.agent().is_running(), "{}", running.agent().log());
    let switches = running.switches();
    assert!(
        (1..=3).contains(&switches),
        "{switches} switches:\n{}",
        running.agent().log()
    );
    assert!(
        running.default_route().contains("dev wan1"),
        "{}",
        running.default_route()
    );
}

#[test]
fn sigkill_and_restart_lose_no_packet() {
    let Some(mut running) = start("um-restart", 1) else {
        return;
    };
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let pid = running.agent().pid();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    running.agent = None;
    std::thread::sleep(Duration::from_millis(300));
    running.start_agent();
    running.wait_for_log("adopting the kernel's default route uplink=a1-up1");
    std::thread::sleep(Duration::from_millis(500));
    let report = stream.finish();
    assert_eq!(report.received, report.sent, "{report:?}");
    assert_eq!(running.switches(), 0, "{}", running.agent().log());
}

#[test]
fn with_every_local_uplink_dead_traffic_flows_through_another_area() {
    let Some(running) = start("um-remote", 2) else {
        return;
    };
    let area = &running.site.areas[0];
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let _cuts: Vec<_> = area
        .uplinks
        .iter()
        .map(|u| running.lab.link_down(&u.router, &u.router_lan_if).unwrap())
        .collect();
    running.wait_for_log("to=a2-up1");
    let report = settle_and_finish(stream);
    assert!(
        running.default_route().contains("dev cab2"),
        "{}",
        running.default_route()
    );
    assert_recovered(&report, "via area 2");
}

/// A small topology whose routers reach the internet over delay links, for latency faults.
struct DelaySite {
    lab: Lab,
    appliance: Netns,
    client: Netns,
    links: Vec<lab::DelayLink>,
    agent: LabProcess,
}

fn delay_site(label: &str) -> Option<DelaySite> {
    let mut lab = Lab::for_test(label)?;
    let appliance = lab.netns("app").unwrap();
    let client = lab.netns("client").unwrap();
    let internet = lab.netns("inet").unwrap();
    appliance.sysctl("net.ipv4.ip_forward", "1").unwrap();
    lab.veth(&client, "eth0", &appliance, "lan0").unwrap();
    lab.addr(&client, "eth0", "10.101.0.101/24").unwrap();
    lab.addr(&appliance, "lan0", "10.101.0.1/24").unwrap();
    client
        .ip(&["route", "add", "default", "via", "10.101.0.1"])
        .unwrap();
    for host in lab::INTERNET_HOSTS {
        internet
            .ip(&["addr", "add", &format!("{host}/32"), "dev", "lo"])
            .unwrap();
    }
    let mut links = Vec::new();
    for k in 0..2u8 {
        let router = lab.netns(&format!("r{k}")).unwrap();
        router.sysctl("net.ipv4.ip_forward", "1").unwrap();
        let wan_if = format!("wan{k}");
        lab.veth(&router, "lan", &appliance, &wan_if).unwrap();
        lab.addr(&router, "lan", &format!("192.168.{}.1/24", 8 + k))
            .unwrap();
        lab.addr(&appliance, &wan_if, &format!("192.168.{}.2/24", 8 + k))
            .unwrap();
        let link = lab
            .delay_link(
                &router,
                "wan",
                &format!("198.51.100.{}", 1 + 2 * k),
                &internet,
                &format!("r{k}"),
                &format!("198.51.100.{}", 2 + 2 * k),
            )
            .unwrap();
        router
            .ip(&["route", "add", "default", "dev", "wan"])
            .unwrap();
        router
            .ip(&[
                "route",
                "add",
                "10.0.0.0/8",
                "via",
                &format!("192.168.{}.2", 8 + k),
            ])
            .unwrap();
        lab.nat(&router, "wan").unwrap();
        // 40 ms round trip on both to begin with.
        std::mem::forget(link.impair(
            Direction::AtoB,
            Duration::from_millis(20),
            Duration::ZERO,
            0,
        ));
        std::mem::forget(link.impair(
            Direction::BtoA,
            Duration::from_millis(20),
            Duration::ZERO,
            0,
        ));
        links.push(link);
    }
    appliance
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.168.8.1",
            "dev",
            "wan0",
        ])
        .unwrap();
    let config = lab.dir().join("app.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"lab\"\ndomain = \"lab.example\"\nkey = \"{}\"\n\n[appliance]\nid = 1\nname = \"app\"\narea = \"a\"\n\n[[areas]]\nname = \"a\"\nappliance = 1\n\n\
             [[uplinks]]\nname = \"up0\"\nkind = \"local\"\ninterface = \"wan0\"\ngateway = \"192.168.8.1\"\npreference = 10\n\n\
             [[uplinks]]\nname = \"up1\"\nkind = \"local\"\ninterface = \"wan1\"\ngateway = \"192.168.9.1\"\npreference = 20\n\n\
             [bus]\nsocket = \"{}\"\n\n[uplink_monitor]\ntargets = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\"]\n",
            "5a".repeat(32),
            lab.dir().join("bus.sock").display()
        ),
    )
    .unwrap();
    let agent = lab
        .spawn(
            &appliance,
            env!("CARGO_BIN_EXE_uplink-monitor"),
            &["--config", config.to_str().unwrap()],
        )
        .unwrap();
    wait_ready(&agent, &["up0", "up1"]);
    Some(DelaySite {
        lab,
        appliance,
        client,
        links,
        agent,
    })
}

#[test]
fn latency_raised_to_400_ms_moves_traffic_after_the_hold_time_without_flapping() {
    let Some(site) = delay_site("um-latency") else {
        return;
    };
    let raised = Instant::now();
    let _slow = site.links[0].impair(
        Direction::AtoB,
        Duration::from_millis(200),
        Duration::ZERO,
        0,
    );
    let _slow_back = site.links[0].impair(
        Direction::BtoA,
        Duration::from_millis(200),
        Duration::ZERO,
        0,
    );
    site.agent
        .wait_for_log(
            "default route moved from=up0 to=up1 reason=better",
            PATIENCE,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let switched = raised.elapsed();
    // Not before the hold time: a better uplink must stay better that long.
    assert!(
        switched >= fieldnet::config::DEFAULT_HOLD,
        "switched after {switched:?}"
    );
    std::thread::sleep(Duration::from_secs(10));
    let log = site.agent.log();
    assert_eq!(log.matches("default route moved").count(), 1, "{log}");
    assert!(
        !log.contains("to=silent"),
        "a slow uplink is not a dead one:\n{log}"
    );
    assert!(
        site.appliance
            .ip_output(&["route", "show", "default"])
            .unwrap()
            .contains("wan1")
    );
    let stats = site
        .client
        .ping("192.0.2.1", 5, Duration::from_millis(100))
        .unwrap();
    assert!(stats.received > 0, "{stats:?}");
    drop(site.lab);
}
