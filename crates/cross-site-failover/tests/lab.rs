//! cross-site-failover on a real two-area lab site: the agent on both appliances, heartbeats
//! over the real cable and wifi veths, a client in area 1 streaming UDP to a client in area 2.
//! Outage times are for `cargo xtask bench cross-site`; these tests check what happens.

use std::time::Duration;

use fieldnet::bus::topics::{self, PathKind, PathState, PeerState, PeerVerdict};
use lab::{BusWatch, EchoServer, Lab, LabProcess, SiteSpec, Stream};

const PATIENCE: Duration = Duration::from_secs(30);

fn wait(agent: &LabProcess, needle: &str) {
    agent
        .wait_for_log(needle, PATIENCE)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// One appliance's view of its peer, as cross-site-failover publishes it on `peer/<id>`, with
/// every change of verdict and active path seen so far.
struct PeerWatch {
    watch: BusWatch,
    topic: String,
    verdicts: Vec<PeerVerdict>,
    paths: Vec<Option<PathKind>>,
    /// Each time a path's session left `up`, that path.
    downs: Vec<PathKind>,
    /// The latest state of each path.
    states: Vec<(PathKind, PathState)>,
}

impl PeerWatch {
    fn new(socket: &std::path::Path, peer: u8) -> Self {
        let topic = topics::peer_topic(peer);
        Self {
            watch: BusWatch::subscribe(socket, &topic, PATIENCE).unwrap(),
            topic,
            verdicts: Vec::new(),
            paths: Vec::new(),
            downs: Vec::new(),
            states: Vec::new(),
        }
    }

    fn record(&mut self, topic: &str, state: &PeerState) {
        if topic != self.topic {
            return;
        }
        if self.verdicts.last() != Some(&state.verdict) {
            self.verdicts.push(state.verdict);
        }
        if self.paths.last() != Some(&state.active_path) {
            self.paths.push(state.active_path);
        }
        for path in &state.paths {
            let before = self.states.iter().find(|(kind, _)| *kind == path.kind);
            if before.is_some_and(|(_, was)| *was == PathState::Up) && path.state != PathState::Up {
                self.downs.push(path.kind);
            }
        }
        self.states = state.paths.iter().map(|p| (p.kind, p.state)).collect();
    }

    /// Waits until the peer's published state satisfies `check`.
    fn until(&mut self, what: &str, check: impl Fn(&PeerState) -> bool) {
        let topic = self.topic.clone();
        let mut seen = Vec::new();
        let result = self
            .watch
            .wait_for::<PeerState>(what, PATIENCE, |t, state| {
                seen.push((t.to_owned(), state.clone()));
                t == topic && check(state)
            });
        for (t, state) in seen {
            self.record(&t, &state);
        }
        result.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits until the routes to the peer ride `path`.
    fn routed_via(&mut self, path: PathKind) {
        self.until(&format!("routes via {path}"), |state| {
            state.verdict == PeerVerdict::Alive && state.active_path == Some(path)
        });
    }

    /// Records what is published for `duration`.
    fn watch_for(&mut self, duration: Duration) {
        let mut seen = Vec::new();
        self.watch
            .watch_for::<PeerState>(duration, |t, state| {
                seen.push((t.to_owned(), state.clone()))
            })
            .unwrap();
        for (t, state) in seen {
            self.record(&t, &state);
        }
    }

    /// Forgets the history but the present: what changes from now on.
    fn forget_history(&mut self) {
        self.verdicts.drain(..self.verdicts.len().saturating_sub(1));
        self.paths.drain(..self.paths.len().saturating_sub(1));
        self.downs.clear();
    }
}

/// Each appliance's watch on the other (a two-area site: appliances 1 and 2).
fn watch_peers(lab: &Lab, site: &lab::Site) -> Vec<PeerWatch> {
    site.areas
        .iter()
        .map(|area| PeerWatch::new(&lab::bus_socket(lab.dir(), area.id), 3 - area.id))
        .collect()
}

/// A two-area site with cross-site-failover on both appliances; `extra` goes into each config.
/// With `vpn`, each appliance also has a WireGuard tunnel to the hub.
/// Each appliance runs a broker too (the second list), and the agent is started with it.
#[allow(clippy::type_complexity)]
fn start(
    label: &str,
    extra: &str,
    vpn: bool,
) -> Option<(Lab, lab::Site, Vec<LabProcess>, Vec<LabProcess>)> {
    let mut lab = Lab::for_test(label)?;
    let spec = SiteSpec {
        areas: 2,
        uplinks_per_area: 1,
        clients_per_area: 1,
        hub: vpn,
        vpn,
    };
    let site = lab.site(&spec).unwrap();
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(extra)
        .write()
        .unwrap();
    let broker = sibling("fieldnet-bus", "fieldnet-bus");
    let (mut agents, mut brokers) = (Vec::new(), Vec::new());
    for area in &site.areas {
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--appliance",
            &lab::appliance_name(area.id),
        ];
        // The tests wait on what the agents publish (an agent started before its broker
        // publishes again once it connects).
        brokers.push(lab.spawn(&area.appliance, &broker, &args).unwrap());
        let program = env!("CARGO_BIN_EXE_cross-site-failover");
        agents.push(lab.spawn(&area.appliance, program, &args).unwrap());
    }
    Some((lab, site, agents, brokers))
}

#[test]
fn cable_cut_moves_the_routes_to_wifi_and_back_after_the_hold() {
    let Some((lab, site, _agents, _brokers)) = start(
        "csf-cable",
        "[cross_site_failover]\nfailback_hold_ms = 2000\n",
        false,
    ) else {
        return;
    };
    let mut peers = watch_peers(&lab, &site);
    for peer in &mut peers {
        peer.routed_via(PathKind::Cable);
        peer.forget_history();
    }
    let a1 = &site.areas[0].appliance;
    let route = a1.ip_output(&["route", "show", "10.102.0.0/24"]).unwrap();
    assert!(
        route.contains("via 10.255.12.2 dev cab2 proto 202"),
        "{route}"
    );

    let echo = EchoServer::start(
        &site.areas[1].clients[0].ns,
        "10.102.0.101:7".parse().unwrap(),
    )
    .unwrap();
    let stream = Stream::start(
        &site.areas[0].clients[0].ns,
        echo.address,
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let cut = lab.link_down(&site.areas[1].appliance, "cab1").unwrap();
    for peer in &mut peers {
        peer.routed_via(PathKind::Wifi);
    }
    std::thread::sleep(Duration::from_millis(500));
    let report = stream.finish();
    let route = a1.ip_output(&["route", "show", "10.102.0.0/24"]).unwrap();
    assert!(route.contains("dev wifi2 proto 202"), "{route}");
    let lost_in_gap = report.longest_gap.as_millis() as u64 / 10 + 5;
    assert!(report.received + lost_in_gap >= report.sent, "{report:?}");
    eprintln!("cable cut: longest gap {:?}", report.longest_gap);
    // The cable returns: routes go back after the 2 s hold, and only once.
    drop(cut);
    for peer in &mut peers {
        peer.routed_via(PathKind::Cable);
    }
    for peer in &mut peers {
        peer.watch_for(Duration::from_secs(3));
        let wifi_then_cable = [
            Some(PathKind::Cable),
            Some(PathKind::Wifi),
            Some(PathKind::Cable),
        ];
        assert_eq!(peer.paths, wifi_then_cable);
        // Neither appliance thought the other dead: one path was enough.
        assert_eq!(peer.verdicts, [PeerVerdict::Alive]);
    }
    let route = a1.ip_output(&["route", "show", "10.102.0.0/24"]).unwrap();
    assert!(route.contains("dev cab2 proto 202"), "{route}");
}

#[test]
fn a_dead_peer_is_detected_on_every_path() {
    let Some((lab, site, agents, _brokers)) = start("csf-dead", "", false) else {
        return;
    };
    let mut peers = watch_peers(&lab, &site);
    for peer in &mut peers {
        peer.until("alive", |state| state.verdict == PeerVerdict::Alive);
    }
    // Appliance 2 loses power: its agent dies and its paths fall silent.
    agents[1].kill().unwrap();
    peers[0].until("peer 2 dead", |state| state.verdict == PeerVerdict::Dead);
}

#[test]
fn cable_cut_then_wifi_blackholed_moves_to_the_vpn_through_the_hub_and_back_to_cable() {
    let Some((lab, site, _agents, _brokers)) = start(
        "csf-vpn",
        "[cross_site_failover]\nfailback_hold_ms = 2000\n",
        true,
    ) else {
        return;
    };
    let mut peers = watch_peers(&lab, &site);
    for peer in &mut peers {
        peer.routed_via(PathKind::Cable);
        peer.forget_history();
    }
    let a1 = &site.areas[0].appliance;
    let vpn_if = &site.areas[0].vpn.as_ref().unwrap().ifname;
    let echo = EchoServer::start(
        &site.areas[1].clients[0].ns,
        "10.102.0.101:7".parse().unwrap(),
    )
    .unwrap();
    let stream = || {
        Stream::start(
            &site.areas[0].clients[0].ns,
            echo.address,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )
        .unwrap()
    };
    let check = |report: lab::StreamReport, what: &str| {
        eprintln!("{what}: longest gap {:?} ({report:?})", report.longest_gap);
        let lost_in_gap = report.longest_gap.as_millis() as u64 / 10 + 5;
        assert!(
            report.received + lost_in_gap >= report.sent,
            "{what}: {report:?}"
        );
    };
    let cable_stream = stream();
    std::thread::sleep(Duration::from_millis(500));
    let cable = lab.link_down(&site.areas[1].appliance, "cab1").unwrap();
    for peer in &mut peers {
        peer.routed_via(PathKind::Wifi);
    }
    std::thread::sleep(Duration::from_millis(500));
    check(cable_stream.finish(), "cable cut");

    // The wifi bridge goes silent (rain): packets vanish, the link stays up.
    let wifi_stream = stream();
    std::thread::sleep(Duration::from_millis(500));
    let wifi = lab.blackhole(&site.areas[1].appliance, "wifi1").unwrap();
    for peer in &mut peers {
        peer.routed_via(PathKind::Vpn);
    }
    std::thread::sleep(Duration::from_millis(500));
    check(wifi_stream.finish(), "wifi blackholed");
    let route = a1.ip_output(&["route", "show", "10.102.0.0/24"]).unwrap();
    assert!(
        route.contains(&format!("via 10.253.0.2 dev {vpn_if} proto 202")),
        "{route}"
    );
    // The client's traffic really crosses the hub: its tunnel interface counts it.
    let hub = site.hub.as_ref().unwrap();
    let hub_if = &site.areas[0].vpn.as_ref().unwrap().hub_ifname;
    let received = || -> u64 {
        let counter = format!("/sys/class/net/{hub_if}/statistics/rx_packets");
        let output = hub.exec("cat", &[&counter]).unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    let before = received();
    let probe = stream();
    std::thread::sleep(Duration::from_millis(500));
    let through_hub = probe.finish();
    let after = received();
    assert!(
        after >= before + through_hub.received,
        "hub tunnel saw {} packets, the client got {} answers",
        after - before,
        through_hub.received
    );
    assert!(through_hub.received > 20, "{through_hub:?}");

    // Both come back: after the 2 s hold the routes return to the cable, once.
    drop(wifi);
    drop(cable);
    for peer in &mut peers {
        peer.routed_via(PathKind::Cable);
    }
    for peer in &mut peers {
        peer.watch_for(Duration::from_secs(3));
        let moves = [
            Some(PathKind::Cable),
            Some(PathKind::Wifi),
            Some(PathKind::Vpn),
            Some(PathKind::Cable),
        ];
        assert_eq!(peer.paths, moves, "wifi, vpn, failback");
        assert_eq!(peer.verdicts, [PeerVerdict::Alive], "never dead");
    }
    let route = a1.ip_output(&["route", "show", "10.102.0.0/24"]).unwrap();
    assert!(route.contains("dev cab2 proto 202"), "{route}");
}

/// Another workspace binary, built next to this crate's (built first if it is not there yet).
fn sibling(package: &str, binary: &str) -> String {
    lab::sibling_binary(env!("CARGO_BIN_EXE_cross-site-failover"), package, binary)
}

#[test]
fn the_vpn_follows_the_uplink_when_uplink_monitor_moves_traffic() {
    let Some(mut lab) = Lab::for_test("csf-vpn-uplink") else {
        return;
    };
    let site = lab
        .site(&SiteSpec {
            areas: 2,
            uplinks_per_area: 2,
            clients_per_area: 0,
            hub: true,
            vpn: true,
        })
        .unwrap();
    let (broker, monitor) = (
        sibling("fieldnet-bus", "fieldnet-bus"),
        sibling("uplink-monitor", "uplink-monitor"),
    );
    let config = lab::SiteFile::new(&site, lab.dir()).write().unwrap();
    let mut agents = Vec::new();
    for area in &site.areas {
        let name = lab::appliance_name(area.id);
        let args = ["--config", config.to_str().unwrap(), "--appliance", &name];
        agents.push(lab.spawn(&area.appliance, &broker, &args).unwrap());
        agents.push(lab.spawn(&area.appliance, &monitor, &args).unwrap());
        agents.push(
            lab.spawn(
                &area.appliance,
                env!("CARGO_BIN_EXE_cross-site-failover"),
                &args,
            )
            .unwrap(),
        );
    }
    let crosser = &agents[2];
    let bus = lab::bus_socket(lab.dir(), 1);
    let tunnel = site.areas[0].vpn.as_ref().unwrap().ifname.clone();
    let endpoint_reset = |uplink: Option<&str>| {
        BusWatch::subscribe(&bus, &topics::tunnel_endpoint_topic(&tunnel), PATIENCE)
            .and_then(|mut watch| {
                watch.wait_for::<topics::TunnelEndpoint>(
                    &format!("{tunnel}'s endpoint re-set for {uplink:?}"),
                    PATIENCE,
                    |_, reset| uplink.is_none_or(|uplink| reset.uplink == uplink),
                )
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
    };
    BusWatch::subscribe(&bus, &topics::tunnel_topic(&tunnel), PATIENCE)
        .and_then(|mut watch| {
            watch.wait_for::<topics::TunnelState>(
                &format!("{tunnel} healthy"),
                PATIENCE,
                |_, state| state.verdict == topics::TunnelVerdict::Healthy,
            )
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    endpoint_reset(None);

    // Appliance 1's first uplink loses its cable: uplink-monitor moves the default route, and
    // the tunnel to the hub must follow it at once.
    let uplink = &site.areas[0].uplinks[0];
    let _cut = lab
        .link_down(&uplink.router, &uplink.router_lan_if)
        .unwrap();
    BusWatch::subscribe(
        &lab::bus_socket(lab.dir(), 1),
        topics::TOPIC_UPLINK_ACTIVE,
        PATIENCE,
    )
    .unwrap()
    .wait_for::<topics::UplinkActive>("traffic on a1-up2", PATIENCE, |_, active| {
        active.name == "a1-up2" && active.previous.as_deref() == Some("a1-up1")
    })
    .unwrap();
    endpoint_reset(Some("a1-up2"));
    std::thread::sleep(Duration::from_secs(2));
    let log = crosser.log();
    let last_vpn = log
        .lines()
        .rfind(|l| l.contains("path session changed") && l.contains("kind=vpn"))
        .unwrap_or_default();
    assert!(last_vpn.contains("to=up"), "the VPN path is not up:\n{log}");
}

/// Finding 10: heartbeat sequences were the sender's wall clock, so a peer whose clock stepped
/// back (here: restarted an hour behind) was ignored while alive; and a flood of forged
/// heartbeats on one path, verified in the loop that judges every path, made the peer flap.
#[test]
fn heartbeats_and_the_clock_a_peer_an_hour_behind_is_believed_and_a_forged_flood_downs_nothing() {
    let Some((mut lab, site, agents, _brokers)) = start("csf-clock", "", false) else {
        return;
    };
    let mut peers = watch_peers(&lab, &site);
    for peer in &mut peers {
        peer.until("alive", |state| state.verdict == PeerVerdict::Alive);
    }
    agents[1].kill().unwrap();
    peers[0].until("peer 2 dead", |state| state.verdict == PeerVerdict::Dead);
    // What the killed agent published is read and done with: what follows on appliance 2's
    // bus is the restarted agent's.
    peers[1].watch_for(Duration::from_millis(500));
    // Appliance 2's agent comes back with its wall clock an hour behind (the monotonic clock
    // is the kernel's, as after a GPS or NTP step).
    let config = lab.dir().join("site.toml");
    let _restarted = lab
        .spawn(
            &site.areas[1].appliance,
            "env",
            &[
                "FAKETIME_DONT_FAKE_MONOTONIC=1",
                "faketime",
                "-f",
                "-1h",
                env!("CARGO_BIN_EXE_cross-site-failover"),
                "--config",
                config.to_str().unwrap(),
                "--appliance",
                &lab::appliance_name(2),
            ],
        )
        .unwrap();
    peers[1].until("peer 1 alive for the restarted agent", |state| {
        state.verdict == PeerVerdict::Alive
    });
    peers[0].until("peer 2 alive again", |state| {
        state.verdict == PeerVerdict::Alive
    });

    // Forged heartbeats (right magic and version, wrong tag) on the wifi path from appliance
    // 2's wifi address, 4 s from another port, then 4 s from the heartbeat port itself. What
    // appliance 1 published meanwhile says what went down.
    let mut flood = |port: &str, watcher: &mut PeerWatch| {
        watcher.watch_for(Duration::from_millis(100));
        watcher.forget_history();
        let flood = lab
            .spawn(
                &site.areas[1].appliance,
                "python3",
                &[
                    "-c",
                    FORGED_FLOOD,
                    "10.254.12.2",
                    port,
                    "10.254.12.1",
                    "47840",
                    "4",
                ],
            )
            .unwrap();
        wait(&flood, "flooded");
        eprintln!("from port {port}: {}", flood.log().trim());
        watcher.watch_for(Duration::from_millis(300));
        let downs = |kind| watcher.downs.iter().filter(|k| **k == kind).count();
        let died = watcher.verdicts.contains(&PeerVerdict::Dead);
        (downs(PathKind::Wifi), downs(PathKind::Cable), died)
    };
    // From anywhere but the peer's heartbeat port the kernel drops them: the path socket is
    // connected to it. (Before, each reached the agent's loop: the path flapped.)
    let (wifi, cable, died) = flood("47841", &mut peers[0]);
    assert_eq!((wifi, cable, died), (0, 0, false));
    // Forged from the peer's own address and port, each costs a check of its tag. The
    // receiver of that path alone pays: the other paths and the peer never go down (the
    // flooded path may, when the flood outruns the checks: as a jammer could).
    let (wifi, cable, died) = flood("47840", &mut peers[0]);
    assert_eq!((cable, died), (0, false));
    eprintln!(
        "the wifi path went down {wifi} times under a flood from its peer's address and port"
    );
}

/// Sends forged heartbeats from argv[1] port argv[2] to argv[3] port argv[4], as fast as it
/// can for argv[5] seconds; says how many.
const FORGED_FLOOD: &str = r#"
import socket, struct, sys, time
src, sport, dst, dport, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.bind((src, 0))
payload = b"FNHB" + bytes([1]) + bytes(55)
datagram = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        try:
            s.sendto(datagram, (dst, 0))
            sent += 1
        except OSError:
            pass
print("flooded", sent, "datagrams", flush=True)
"#;
