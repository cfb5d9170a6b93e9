//! The uplink-monitor lab harness shared by the lab tests and `cargo xtask bench failover`:
//! a site with the agent running on appliance 1, a UDP stream through it, and a small
//! topology with delay links for latency faults.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fieldnet::bus::topics::{self, UplinkActive, UplinkHealth, UplinkReason, UplinkState};
use lab::{
    BusWatch, Direction, EchoServer, Lab, LabProcess, Netns, Site, SiteSpec, Stream, StreamReport,
};

/// The agent under test: the test build's binary, or `UPLINK_MONITOR_BIN` (the bench passes
/// its release build).
pub fn agent_binary() -> String {
    std::env::var("UPLINK_MONITOR_BIN")
        .ok()
        .or(option_env!("CARGO_BIN_EXE_uplink-monitor").map(str::to_owned))
        .expect("UPLINK_MONITOR_BIN names the uplink-monitor binary")
}

/// The broker: `FIELDNET_BUS_BIN` (the bench passes its release build), or the one beside the
/// agent.
pub fn bus_binary() -> String {
    std::env::var("FIELDNET_BUS_BIN")
        .unwrap_or_else(|_| lab::sibling_binary(&agent_binary(), "fieldnet-bus", "fieldnet-bus"))
}

pub const PATIENCE: Duration = Duration::from_secs(30);

/// The broker on the agent's appliance, and waits on what uplink-monitor publishes there.
pub struct Bus {
    pub process: LabProcess,
    pub socket: PathBuf,
}

impl Bus {
    pub fn start(lab: &mut Lab, ns: &Netns, args: &[&str], socket: PathBuf) -> Self {
        Self {
            process: lab.spawn(ns, &bus_binary(), args).unwrap(),
            socket,
        }
    }

    fn watch(&self, prefix: &str) -> BusWatch {
        BusWatch::subscribe(&self.socket, prefix, PATIENCE).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until every uplink named is up.
    pub fn wait_ready(&self, uplinks: &[&str]) {
        for name in uplinks {
            self.watch(&topics::uplink_state_topic(name))
                .wait_for::<UplinkState>(&format!("{name} up"), PATIENCE, |_, state| {
                    state.health == UplinkHealth::Up
                })
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

    /// Waits until traffic is on `to`, moved there from `from` (when given) for `reason` (when
    /// given), and returns what was published.
    pub fn wait_active(
        &self,
        to: &str,
        from: Option<&str>,
        reason: Option<UplinkReason>,
    ) -> UplinkActive {
        let what = format!("traffic on {to} (from {from:?}, {reason:?})");
        self.watch(topics::TOPIC_UPLINK_ACTIVE)
            .wait_for::<UplinkActive>(&what, PATIENCE, |_, active| {
                active.name == to
                    && from.is_none_or(|from| active.previous.as_deref() == Some(from))
                    && reason.is_none_or(|reason| active.reason == reason)
            })
            .unwrap_or_else(|e| panic!("{e:#}"))
            .1
    }

    /// Waits for `uplink/<name>/state` to hold what `wanted` asks of it; that state.
    pub fn wait_state(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(&UplinkState) -> bool,
    ) -> UplinkState {
        self.watch(&topics::uplink_state_topic(name))
            .wait_for::<UplinkState>(&format!("{name}: {what}"), PATIENCE, |_, state| {
                wanted(state)
            })
            .unwrap_or_else(|e| panic!("{e:#}"))
            .1
    }
}
pub const STREAM_INTERVAL: Duration = Duration::from_millis(10);

/// A site with uplink-monitor running on appliance 1 (and, with `both`, on appliance 2).
pub struct Running {
    pub lab: Lab,
    pub site: Site,
    pub agent: Option<LabProcess>,
    pub bus: Bus,
    pub config: PathBuf,
    pub echo: EchoServer,
    /// A connectivity-check endpoint answering 204 on 192.0.2.1:80.
    pub check: lab::HttpResponder,
}

pub fn start(label: &str, areas: u8) -> Option<Running> {
    start_with(label, areas, 2, "")
}

/// A site of `areas` areas with `uplinks` uplinks each; `extra` holds site-wide agent sections
/// of the site file. The agent runs on appliance 1.
pub fn start_with(label: &str, areas: u8, uplinks: u8, extra: &str) -> Option<Running> {
    let mut lab = Lab::for_test(label)?;
    let spec = SiteSpec {
        areas,
        uplinks_per_area: uplinks,
        clients_per_area: 1,
        hub: false,
        vpn: false,
    };
    let site = lab.site(&spec).unwrap();
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(extra)
        .write()
        .unwrap();
    let echo = EchoServer::start(&site.internet, "192.0.2.1:7".parse().unwrap()).unwrap();
    let check =
        lab::HttpResponder::start(&site.internet, "192.0.2.1:80".parse().unwrap(), 204).unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--appliance",
        &lab::appliance_name(1),
    ];
    let socket = lab::bus_socket(lab.dir(), 1);
    let bus = Bus::start(&mut lab, &site.areas[0].appliance, &args, socket);
    let mut running = Running {
        lab,
        site,
        agent: None,
        bus,
        config,
        echo,
        check,
    };
    running.start_agent();
    Some(running)
}

impl Running {
    pub fn start_agent(&mut self) {
        let area = &self.site.areas[0];
        let agent = self
            .lab
            .spawn(
                &area.appliance,
                &agent_binary(),
                &[
                    "--config",
                    self.config.to_str().unwrap(),
                    "--appliance",
                    &lab::appliance_name(1),
                ],
            )
            .unwrap();
        let names: Vec<&str> = area.uplinks.iter().map(|u| u.name.as_str()).collect();
        self.bus.wait_ready(&names);
        self.agent = Some(agent);
    }

    pub fn agent(&self) -> &LabProcess {
        self.agent.as_ref().unwrap()
    }

    pub fn default_route(&self) -> String {
        self.site.areas[0]
            .appliance
            .ip_output(&["route", "show", "default"])
            .unwrap()
    }

    pub fn stream(&self) -> Stream {
        let client = &self.site.areas[0].clients[0].ns;
        let server: SocketAddr = self.echo.address;
        Stream::start(client, server, STREAM_INTERVAL, Duration::from_secs(120)).unwrap()
    }

    pub fn wait_for_log(&self, needle: &str) {
        self.agent()
            .wait_for_log(needle, PATIENCE)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Pulls the cable of every local uplink of area 1 (carrier lost at the appliance).
    pub fn cut_local_uplinks(&self) -> Vec<lab::Fault> {
        self.site.areas[0]
            .uplinks
            .iter()
            .map(|u| self.lab.link_down(&u.router, &u.router_lan_if).unwrap())
            .collect()
    }

    /// Flaps uplink 1's cable five times a second (100 ms down, 100 ms up) for `duration`.
    pub fn flap_first_uplink(&self, duration: Duration) {
        let uplink = &self.site.areas[0].uplinks[0];
        let until = std::time::Instant::now() + duration;
        while std::time::Instant::now() < until {
            let down = self
                .lab
                .link_down(&uplink.router, &uplink.router_lan_if)
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            down.undo().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn switches(&self) -> usize {
        self.agent().log().matches("default route moved").count()
    }
}

/// Lets the stream run on the new uplink for a while, then reports.
pub fn settle_and_finish(stream: Stream) -> StreamReport {
    std::thread::sleep(Duration::from_millis(500));
    stream.finish()
}

/// The stream recovered: replies kept coming after the longest gap, and the gap is the only
/// real hole (a few more stray losses are allowed, for a noisy machine).
pub fn assert_recovered(report: &StreamReport, what: &str) {
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

/// A small topology whose routers reach the internet over delay links, for latency faults.
impl DelaySite {
    /// Raises uplink 0's round trip from 40 ms to 400 ms (200 ms more each way) while the
    /// faults live.
    pub fn slow_first_uplink(&self) -> (lab::Fault, lab::Fault) {
        let more = Duration::from_millis(200);
        (
            self.links[0].impair(Direction::AtoB, more, Duration::ZERO, 0),
            self.links[0].impair(Direction::BtoA, more, Duration::ZERO, 0),
        )
    }
}

pub struct DelaySite {
    pub lab: Lab,
    pub appliance: Netns,
    pub client: Netns,
    pub links: Vec<lab::DelayLink>,
    pub agent: LabProcess,
    pub bus: Bus,
}

pub fn delay_site(label: &str) -> Option<DelaySite> {
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
    // A one-appliance site file of its own: this topology is not a lab site.
    let config = lab.dir().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"lab\"\ndomain = \"lab.example\"\nkey = \"{}\"\n\n[[areas]]\nname = \"a\"\n\n\
             [[networks]]\nname = \"NETWORK1\"\narea = \"a\"\nsubnet = \"10.101.0.0/24\"\ngateway = \"10.101.0.1\"\ninterface = \"lan0\"\n\n\
             [[appliances]]\nid = 1\nname = \"app\"\narea = \"a\"\nuplinks = [\n\
             \x20 {{ name = \"up0\", interface = \"wan0\", gateway = \"192.168.8.1\", preference = 10 }},\n\
             \x20 {{ name = \"up1\", interface = \"wan1\", gateway = \"192.168.9.1\", preference = 20 }},\n]\n\n\
             [bus]\nsocket = \"{}\"\n\n[uplink_monitor]\ntargets = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\"]\n",
            "5a".repeat(32),
            lab.dir().join("bus.sock").display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--appliance", "app"];
    let socket = lab.dir().join("bus.sock");
    let bus = Bus::start(&mut lab, &appliance, &args, socket);
    let agent = lab.spawn(&appliance, &agent_binary(), &args).unwrap();
    bus.wait_ready(&["up0", "up1"]);
    Some(DelaySite {
        lab,
        appliance,
        client,
        links,
        agent,
        bus,
    })
}
