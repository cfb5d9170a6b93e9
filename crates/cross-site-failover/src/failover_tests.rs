//! The machine driven through simulated time: appliances and hubs exchange heartbeats through a
//! world that decides each one's fate on each link, and the tests assert on the routes, the
//! liveness and the hub pair. Minutes of a site run in milliseconds, with no root and no sleeps.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use fieldnet::config::{DEFAULT_FAILBACK_HOLD, HubRole, PathKind};

use super::*;
use crate::choice::ChoiceReason;
use crate::plan::{HUB_ID, PARTNER_PATH, PairPlan, PathPlan, path_code};

const STEP: Duration = Duration::from_millis(5);
const INTERVAL: Duration = Duration::from_millis(50);
const MULTIPLIER: u8 = 3;
const HOLD: Duration = DEFAULT_FAILBACK_HOLD;
const TAKEOVER: Duration = Duration::from_secs(1);
const GIVEBACK: Duration = Duration::from_secs(30);
/// The longest a path may take to be found down: the detection time, a heartbeat interval in
/// flight, and a tick.
const DETECT: Duration = Duration::from_millis(50 * 3 + 50 + 10);
/// The hubs' tunnel addresses' last byte.
const PRIMARY: u8 = 100;
const STANDBY: u8 = 101;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A link a heartbeat travels: the sending node, the receiving node, the path's label
/// (`cable`, `wifi`, `vpn`, `partner`).
struct Hop {
    from: usize,
    to: usize,
    kind: &'static str,
}

/// What happens to a heartbeat sent at `t` (since start) over `hop`: its delay, or `None` if
/// it is lost.
trait World {
    fn delay(&mut self, hop: &Hop, t: Duration) -> Option<Duration>;
}

impl<F: FnMut(&Hop, Duration) -> Option<Duration>> World for F {
    fn delay(&mut self, hop: &Hop, t: Duration) -> Option<Duration> {
        self(hop, t)
    }
}

/// Every heartbeat arrives after a millisecond.
fn perfect(_: &Hop, _: Duration) -> Option<Duration> {
    Some(ms(1))
}

fn path(kind: PathKind, me: u8, other: u8) -> PathPlan {
    let code = path_code(kind);
    let (interface, local, remote) = match kind {
        // Every VPN path rides the appliance's one tunnel, from its one tunnel address.
        PathKind::Vpn => (
            "wg0".to_owned(),
            Ipv4Addr::new(10, code, 0, me),
            Ipv4Addr::new(10, code, 0, other),
        ),
        _ => (
            format!("{}{other}", kind.as_str()),
            Ipv4Addr::new(10, code, me, other),
            Ipv4Addr::new(10, code, other, me),
        ),
    };
    PathPlan {
        kind,
        code,
        interface,
        local,
        remote,
    }
}

fn plan(own_id: u8, peers: Vec<PeerPlan>, tunnels: Vec<WatchedTunnel>) -> Plan {
    Plan {
        own_id,
        heartbeat_interval: INTERVAL,
        detect_multiplier: MULTIPLIER,
        failback_hold: HOLD,
        peers,
        tunnels,
        pair: None,
    }
}

/// Appliance `me` with the given paths to each peer appliance, and a tunnel to the primary hub.
fn appliance(me: u8, peers: &[(u8, &[PathKind])]) -> Plan {
    let mut plans: Vec<PeerPlan> = peers
        .iter()
        .map(|(id, kinds)| PeerPlan {
            id: *id,
            name: format!("appliance-{id}"),
            role: PeerRole::Appliance,
            paths: kinds.iter().map(|kind| path(*kind, me, *id)).collect(),
            networks: vec![format!("10.{}.0.0/24", 100 + id).parse().unwrap()],
        })
        .collect();
    plans.push(PeerPlan {
        id: HUB_ID,
        name: "hub".to_owned(),
        role: PeerRole::Hub,
        paths: vec![path(PathKind::Vpn, me, PRIMARY)],
        networks: Vec::new(),
    });
    let tunnel = WatchedTunnel {
        interface: "wg0".to_owned(),
        peer: "hub".to_owned(),
    };
    plan(me, plans, vec![tunnel])
}

/// A hub of the pair with a tunnel to each appliance.
fn hub(role: HubRole, appliances: &[u8]) -> Plan {
    let (me, partner) = match role {
        HubRole::Primary => (PRIMARY, STANDBY),
        HubRole::Standby => (STANDBY, PRIMARY),
    };
    let mut peers: Vec<PeerPlan> = appliances
        .iter()
        .map(|id| PeerPlan {
            id: *id,
            name: format!("appliance-{id}"),
            role: PeerRole::Appliance,
            paths: vec![PathPlan {
                interface: format!("wg-a{id}"),
                ..path(PathKind::Vpn, me, *id)
            }],
            networks: vec![format!("10.{}.0.0/24", 100 + id).parse().unwrap()],
        })
        .collect();
    peers.push(PeerPlan {
        id: HUB_ID,
        name: "partner-hub".to_owned(),
        role: PeerRole::Partner,
        paths: vec![PathPlan {
            kind: PathKind::Vpn,
            code: PARTNER_PATH,
            interface: "wg-hubs".to_owned(),
            local: Ipv4Addr::new(10, 3, 0, me),
            remote: Ipv4Addr::new(10, 3, 0, partner),
        }],
        networks: Vec::new(),
    });
    let tunnels = appliances
        .iter()
        .map(|id| WatchedTunnel {
            interface: format!("wg-a{id}"),
            peer: format!("appliance-{id}"),
        })
        .collect();
    Plan {
        pair: Some(PairPlan {
            role,
            takeover_after: TAKEOVER,
            giveback_hold: GIVEBACK,
        }),
        ..plan(HUB_ID, peers, tunnels)
    }
}

/// A heartbeat on its way: when it arrives, at which node, on which peer and path there.
struct InFlight {
    at: Instant,
    node: usize,
    peer: usize,
    path: usize,
    heartbeat: Heartbeat,
}

struct Sim<W> {
    machines: Vec<Failover>,
    /// Everything each machine output but heartbeats, with the time since start.
    logs: Vec<Vec<(Duration, Output)>>,
    /// (local, remote) of every path → (node, peer, path): where a heartbeat sent to `remote`
    /// from `local` lands.
    ends: HashMap<(Ipv4Addr, Ipv4Addr), (usize, usize, usize)>,
    in_flight: Vec<InFlight>,
    start: Instant,
    now: Instant,
    next_send: Instant,
    world: W,
    /// This many hub route writes fail before they succeed again.
    failing_writes: u32,
}

impl<W: World> Sim<W> {
    fn new(plans: Vec<Plan>, world: W) -> Self {
        let start = Instant::now();
        let mut ends = HashMap::new();
        for (node, plan) in plans.iter().enumerate() {
            for (peer, peer_plan) in plan.peers.iter().enumerate() {
                for (index, path) in peer_plan.paths.iter().enumerate() {
                    ends.insert((path.local, path.remote), (node, peer, index));
                }
            }
        }
        let machines: Vec<Failover> = plans
            .into_iter()
            .enumerate()
            .map(|(node, plan)| {
                let seed = Seed {
                    epoch: 7 + node as u32,
                    clock_base: 1_000_000 * (node as u64 + 1),
                };
                Failover::new(plan, start, seed)
            })
            .collect();
        Self {
            logs: vec![Vec::new(); machines.len()],
            machines,
            ends,
            in_flight: Vec::new(),
            start,
            now: start,
            next_send: start,
            world,
            failing_writes: 0,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    fn run_until(&mut self, t: Duration) {
        while self.t() < t {
            self.now += STEP;
            let now = self.now;
            let due: Vec<InFlight>;
            (due, self.in_flight) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|h| h.at <= now);
            for h in due {
                let input = Input::Heartbeat {
                    peer: h.peer,
                    path: h.path,
                    heartbeat: h.heartbeat,
                };
                self.step(h.node, input);
            }
            if now >= self.next_send {
                self.next_send += INTERVAL;
                for node in 0..self.machines.len() {
                    self.step(node, Input::SendHeartbeats);
                }
            }
            for node in 0..self.machines.len() {
                self.step(node, Input::Tick);
            }
        }
    }

    fn step(&mut self, node: usize, input: Input) {
        let t = self.t();
        let mut pending = self.machines[node].step(self.now, input);
        while !pending.is_empty() {
            let mut follow_up = Vec::new();
            for output in pending {
                match output {
                    Output::Send {
                        peer,
                        path,
                        heartbeat,
                    } => self.send(node, peer, path, heartbeat),
                    Output::HubRoutes { area, before, .. } if self.failing_writes > 0 => {
                        self.failing_writes -= 1;
                        follow_up.extend(
                            self.machines[node]
                                .step(self.now, Input::HubRoutesFailed { area, before }),
                        );
                    }
                    other => self.logs[node].push((t, other)),
                }
            }
            pending = follow_up;
        }
    }

    fn send(&mut self, node: usize, peer: usize, path: usize, heartbeat: Heartbeat) {
        let plan = &self.machines[node].peers()[peer].plan().paths[path];
        let Some(&(to, to_peer, to_path)) = self.ends.get(&(plan.remote, plan.local)) else {
            return;
        };
        let hop = Hop {
            from: node,
            to,
            kind: plan.label(),
        };
        if let Some(delay) = self.world.delay(&hop, self.t()) {
            self.in_flight.push(InFlight {
                at: self.now + delay,
                node: to,
                peer: to_peer,
                path: to_path,
                heartbeat,
            });
        }
    }

    /// The route moves of `node`: when, the peer's id, to which path, why.
    fn moves(&self, node: usize) -> Vec<(Duration, u8, PathKind, ChoiceReason)> {
        self.logs[node]
            .iter()
            .filter_map(|(t, output)| match output {
                Output::MoveRoutes { peer, switch, .. } => Some((
                    *t,
                    self.machines[node].peers()[*peer].plan().id,
                    switch.to,
                    switch.reason,
                )),
                _ => None,
            })
            .collect()
    }

    /// The liveness changes `node` saw of the peer with id `id`.
    fn liveness(&self, node: usize, id: u8) -> Vec<(Duration, Liveness)> {
        self.logs[node]
            .iter()
            .filter_map(|(t, output)| match output {
                Output::Liveness { peer, verdict }
                    if self.machines[node].peers()[*peer].plan().id == id =>
                {
                    Some((*t, *verdict))
                }
                _ => None,
            })
            .collect()
    }

    /// A hub's area route writes: when, the area's appliance id, the carrier's id.
    fn hub_routes(&self, node: usize) -> Vec<(Duration, u8, u8)> {
        let id = |index: usize| self.machines[node].peers()[index].plan().id;
        self.logs[node]
            .iter()
            .filter_map(|(t, output)| match output {
                Output::HubRoutes { area, carrier, .. } => Some((*t, id(*area), id(*carrier))),
                _ => None,
            })
            .collect()
    }

    /// Where each area's routes point now, as the hub wrote them: (area id, carrier id).
    fn carriers(&self, node: usize) -> Vec<(u8, u8)> {
        let mut last = std::collections::BTreeMap::new();
        for (_, area, carrier) in self.hub_routes(node) {
            last.insert(area, carrier);
        }
        last.into_iter().collect()
    }

    fn partner_changes(&self, node: usize) -> Vec<(Duration, bool, RouteOwner)> {
        self.logs[node]
            .iter()
            .filter_map(|(t, output)| match output {
                Output::HubPartner { partner_up, owner } => Some((*t, *partner_up, *owner)),
                _ => None,
            })
            .collect()
    }

    fn path_state(&self, node: usize, peer: usize, kind: PathKind) -> SessionState {
        let peer = &self.machines[node].peers()[peer];
        let index = peer
            .plan()
            .paths
            .iter()
            .position(|p| p.kind == kind)
            .unwrap();
        peer.sessions()[index].state()
    }
}

/// Whether `t` lies in any of the windows.
fn within(t: Duration, windows: &[(u64, u64)]) -> bool {
    windows
        .iter()
        .any(|&(from, to)| t >= secs(from) && t < secs(to))
}

/// Two appliances joined by cable, wifi and the VPN, each with a tunnel to the hub.
fn pair_of_appliances() -> Vec<Plan> {
    let all: &[PathKind] = &[PathKind::Cable, PathKind::Wifi, PathKind::Vpn];
    vec![appliance(1, &[(2, all)]), appliance(2, &[(1, all)])]
}

#[test]
fn the_first_routes_take_the_best_path_and_nothing_moves_before_a_path_is_up() {
    let mut sim = Sim::new(pair_of_appliances(), |hop: &Hop, t: Duration| {
        // Appliance 2 starts a second late.
        (t >= secs(1) || (hop.from != 1 && hop.to != 1)).then_some(ms(1))
    });
    sim.run_until(ms(990));
    assert!(
        sim.moves(0).is_empty(),
        "nothing moves while the peer is silent"
    );
    sim.run_until(secs(3));
    for node in 0..2 {
        let moves = sim.moves(node);
        assert_eq!(moves.len(), 1, "{moves:?}");
        let (_, _, to, reason) = moves[0];
        assert_eq!((to, reason), (PathKind::Cable, ChoiceReason::Initial));
    }
    assert_eq!(
        sim.liveness(0, 2),
        vec![(sim.liveness(0, 2)[0].0, Liveness::Alive)]
    );
}

#[test]
fn a_cable_cut_moves_the_routes_to_wifi_at_once_and_back_only_after_the_hold() {
    let mut sim = Sim::new(pair_of_appliances(), |hop: &Hop, t: Duration| {
        (hop.kind != "cable" || !within(t, &[(5, 8)])).then_some(ms(1))
    });
    sim.run_until(secs(30));
    for node in 0..2 {
        let moves = sim.moves(node);
        assert_eq!(moves.len(), 3, "initial, down, back: {moves:?}");
        let (down_at, _, to, reason) = moves[1];
        assert_eq!((to, reason), (PathKind::Wifi, ChoiceReason::PathDown));
        assert!(
            down_at > secs(5) && down_at <= secs(5) + DETECT,
            "{down_at:?}"
        );
        let (back_at, _, to, reason) = moves[2];
        assert_eq!((to, reason), (PathKind::Cable, ChoiceReason::Failback));
        assert!(
            back_at >= secs(8) + HOLD,
            "not before the hold: {back_at:?}"
        );
        assert!(back_at <= secs(8) + HOLD + secs(1), "{back_at:?}");
        // The peer was reachable all along.
        assert_eq!(sim.liveness(node, if node == 0 { 2 } else { 1 }).len(), 1);
    }
}

#[test]
fn a_one_way_wifi_blackhole_takes_the_path_down_on_both_sides_and_the_vpn_carries() {
    // The cable is cut; then heartbeats from appliance 2 to appliance 1 on wifi vanish.
    let mut sim = Sim::new(pair_of_appliances(), |hop: &Hop, t: Duration| {
        let lost = (hop.kind == "cable" && t >= secs(5))
            || (hop.kind == "wifi" && hop.from == 1 && within(t, &[(10, 15)]));
        (!lost).then_some(ms(1))
    });
    sim.run_until(secs(14));
    // Appliance 1 hears nothing on wifi; appliance 2 hears "down" and can get no further than
    // init: neither carries traffic over it.
    assert_eq!(sim.path_state(0, 0, PathKind::Wifi), SessionState::Down);
    assert_eq!(sim.path_state(1, 0, PathKind::Wifi), SessionState::Init);
    for node in 0..2 {
        let moves = sim.moves(node);
        let last = moves.last().unwrap();
        assert_eq!(
            (last.2, last.3),
            (PathKind::Vpn, ChoiceReason::PathDown),
            "{moves:?}"
        );
        assert!(
            last.0 > secs(10) && last.0 <= secs(10) + DETECT + INTERVAL,
            "{moves:?}"
        );
    }
    assert_eq!(sim.liveness(0, 2).len(), 1, "the peer never died");
    // Wifi returns: back to it after the hold, not before.
    sim.run_until(secs(40));
    for node in 0..2 {
        let moves = sim.moves(node);
        assert_eq!(moves.len(), 4, "{moves:?}");
        let (at, _, to, reason) = moves[3];
        assert_eq!((to, reason), (PathKind::Wifi, ChoiceReason::Failback));
        assert!(at >= secs(15) + HOLD, "{at:?}");
    }
}

#[test]
fn with_cable_and_wifi_gone_the_vpn_carries_and_when_both_return_a_moment_apart_one_move_goes_to_the_cable()
 {
    let mut sim = Sim::new(pair_of_appliances(), |hop: &Hop, t: Duration| {
        let lost = (hop.kind == "cable" && within(t, &[(5, 14)]))
            || (hop.kind == "wifi" && within(t, &[(5, 12)]));
        (!lost).then_some(ms(1))
    });
    sim.run_until(secs(40));
    let moves = sim.moves(0);
    let kinds: Vec<(PathKind, ChoiceReason)> = moves.iter().map(|m| (m.2, m.3)).collect();
    assert_eq!(
        kinds,
        vec![
            (PathKind::Cable, ChoiceReason::Initial),
            (PathKind::Vpn, ChoiceReason::PathDown),
            (PathKind::Cable, ChoiceReason::Failback),
        ],
        "{moves:?}"
    );
    assert!(moves[2].0 >= secs(14) + HOLD);
}

#[test]
fn a_flapping_cable_never_pulls_the_routes_back_and_they_return_once_it_holds() {
    // Down 1 s, up 1 s, ten times, from 5 s; steady from 25 s.
    let flaps: Vec<(u64, u64)> = (0..10).map(|n| (5 + 2 * n, 6 + 2 * n)).collect();
    let mut sim = Sim::new(pair_of_appliances(), move |hop: &Hop, t: Duration| {
        (hop.kind != "cable" || !within(t, &flaps)).then_some(ms(1))
    });
    sim.run_until(secs(60));
    let moves = sim.moves(0);
    assert_eq!(moves.len(), 3, "initial, down, back once: {moves:?}");
    assert_eq!(moves[1].2, PathKind::Wifi);
    assert!(moves[1].0 < secs(6));
    assert_eq!(moves[2].2, PathKind::Cable);
    assert!(moves[2].0 >= secs(24) + HOLD, "{:?}", moves[2]);
}

#[test]
fn a_dead_peer_is_declared_dead_within_the_detection_time_and_no_route_moves() {
    let mut sim = Sim::new(pair_of_appliances(), |hop: &Hop, t: Duration| {
        let dead = (hop.from == 1 || hop.to == 1) && within(t, &[(5, 10)]);
        (!dead).then_some(ms(1))
    });
    sim.run_until(secs(20));
    let seen = sim.liveness(0, 2);
    assert_eq!(
        seen.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        vec![Liveness::Alive, Liveness::Dead, Liveness::Alive],
        "{seen:?}"
    );
    assert!(
        seen[1].0 > secs(5) && seen[1].0 <= secs(5) + DETECT,
        "{seen:?}"
    );
    // With no path up there is nowhere to move to, and when all return the cable is still in
    // use: the initial move is the only one.
    assert_eq!(sim.moves(0).len(), 1, "{:?}", sim.moves(0));
}

#[test]
fn a_standby_hub_takes_the_routes_after_takeover_after_and_gives_them_back_after_the_hold() {
    let plans = vec![
        hub(HubRole::Primary, &[1]),
        hub(HubRole::Standby, &[1]),
        appliance(1, &[]),
    ];
    // The primary is gone from 5 s to 20 s, and blinks for 5 s at 30 s.
    let mut sim = Sim::new(plans, |hop: &Hop, t: Duration| {
        let primary_down = within(t, &[(5, 20), (30, 35)]);
        (!(primary_down && (hop.from == 0 || hop.to == 0))).then_some(ms(1))
    });
    sim.run_until(secs(4));
    assert_eq!(
        sim.machines[1].hub_view().unwrap().owner,
        RouteOwner::Primary,
        "the standby starts by assuming the primary is up"
    );
    sim.run_until(secs(80));
    let changes = sim.partner_changes(1);
    assert_eq!(changes.len(), 2, "one takeover, one giveback: {changes:?}");
    let (at, up, owner) = changes[0];
    assert_eq!((up, owner), (false, RouteOwner::Standby));
    assert!(
        at >= secs(5) + TAKEOVER && at <= secs(5) + TAKEOVER + DETECT,
        "{at:?}"
    );
    let (at, up, owner) = changes[1];
    assert_eq!((up, owner), (true, RouteOwner::Primary));
    // Back after the primary held for the giveback hold: it returned at 20 s, blinked at 30 s,
    // and has held since 35 s.
    assert!(
        at >= secs(35) + GIVEBACK && at < secs(35) + GIVEBACK + secs(1),
        "{at:?}"
    );
    // The AWS side was told each owner once.
    let views: Vec<RouteOwner> = sim.logs[1]
        .iter()
        .filter_map(|(_, o)| match o {
            Output::HubView(view) => Some(view.owner),
            _ => None,
        })
        .collect();
    assert_eq!(views, vec![RouteOwner::Standby, RouteOwner::Primary]);
    // The primary never wants the routes elsewhere.
    assert!(
        sim.partner_changes(0)
            .iter()
            .all(|(_, _, owner)| *owner == RouteOwner::Primary)
    );
}

#[test]
fn a_hub_routes_an_area_through_another_appliance_while_its_own_tunnel_is_down() {
    let plans = vec![
        hub(HubRole::Primary, &[1, 2, 3]),
        appliance(1, &[]),
        appliance(2, &[]),
        appliance(3, &[]),
    ];
    // Appliance 3's tunnel is down from 5 s to 10 s; then appliance 1's from 15 s to 20 s.
    let mut sim = Sim::new(plans, |hop: &Hop, t: Duration| {
        let down = (hop.from == 3 || hop.to == 3) && within(t, &[(5, 10)])
            || (hop.from == 1 || hop.to == 1) && within(t, &[(15, 20)]);
        (!down).then_some(ms(1))
    });
    sim.run_until(secs(4));
    let settled = sim.hub_routes(0).len();
    assert_eq!(
        sim.carriers(0),
        vec![(1, 1), (2, 2), (3, 3)],
        "each area on its own tunnel"
    );
    sim.run_until(secs(30));
    let later: Vec<(u8, u8)> = sim.hub_routes(0)[settled..]
        .iter()
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(
        later,
        vec![(3, 1), (3, 3), (1, 2), (1, 1)],
        "area 3 via the lowest appliance up, back, then area 1 via 2, back"
    );
    let moved_at = sim.hub_routes(0)[settled].0;
    assert!(
        moved_at > secs(5) && moved_at <= secs(5) + DETECT,
        "{moved_at:?}"
    );
}

#[test]
fn a_hub_route_write_that_failed_is_made_again_a_second_later_until_it_holds() {
    let plans = vec![
        hub(HubRole::Primary, &[1, 2]),
        appliance(1, &[]),
        appliance(2, &[]),
    ];
    let mut sim = Sim::new(plans, |hop: &Hop, t: Duration| {
        let down = (hop.from == 2 || hop.to == 2) && within(t, &[(5, 12)]);
        (!down).then_some(ms(1))
    });
    sim.run_until(secs(4));
    let settled = sim.hub_routes(0).len();
    // Area 2 onto appliance 1's tunnel fails twice, with nothing else changing.
    sim.failing_writes = 2;
    sim.run_until(secs(20));
    let later = &sim.hub_routes(0)[settled..];
    assert_eq!(
        later.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        vec![(2, 1), (2, 2)],
        "{later:?}"
    );
    let written_at = later[0].0;
    assert!(
        written_at >= secs(5) + HUB_RETRY * 2 && written_at <= secs(5) + DETECT + HUB_RETRY * 2,
        "{written_at:?}"
    );
}

#[test]
fn tunnel_health_names_the_first_failing_layer_and_reaches_the_aws_view() {
    let plans = vec![hub(HubRole::Primary, &[1]), appliance(1, &[])];
    let mut sim = Sim::new(plans, |hop: &Hop, t: Duration| {
        (!((hop.from == 1 || hop.to == 1) && t >= secs(5))).then_some(ms(1))
    });
    let reading = |up: bool, age: Option<u64>| {
        Input::TunnelReadings(vec![TunnelReading {
            interface: "wg-a1".to_owned(),
            interface_up: up,
            handshake_age: age.map(secs),
            collected: true,
        }])
    };
    let judged = |sim: &Sim<_>| -> Vec<(TunnelVerdict, bool)> {
        sim.logs[0]
            .iter()
            .filter_map(|(_, o)| match o {
                Output::TunnelJudged {
                    verdict, changed, ..
                } => Some((*verdict, *changed)),
                _ => None,
            })
            .collect()
    };
    sim.run_until(secs(2));
    sim.step(0, reading(true, Some(3)));
    sim.step(0, reading(true, Some(4)));
    assert_eq!(
        judged(&sim),
        vec![
            (TunnelVerdict::Healthy, true),
            (TunnelVerdict::Healthy, false)
        ]
    );
    let view = sim.machines[0].hub_view().unwrap();
    assert_eq!(view.tunnels.len(), 1);
    assert!(
        view.tunnels[0].rtt.is_some(),
        "the round trip of the session through it"
    );
    sim.step(0, reading(true, None));
    sim.step(0, reading(false, None));
    sim.run_until(secs(6));
    sim.step(0, reading(true, Some(2)));
    let verdicts: Vec<TunnelVerdict> = judged(&sim)[2..].iter().map(|j| j.0).collect();
    assert_eq!(
        verdicts,
        vec![
            TunnelVerdict::NoHandshake,
            TunnelVerdict::InterfaceDown,
            TunnelVerdict::DataPlaneDown
        ]
    );
    let view = sim.machines[0].hub_view().unwrap();
    assert_eq!(view.tunnels[0].verdict, TunnelVerdict::DataPlaneDown);
}

#[test]
fn a_new_active_uplink_resets_the_tunnel_endpoints_once_and_never_on_a_hub() {
    let mut sim = Sim::new(
        vec![appliance(1, &[]), hub(HubRole::Primary, &[1])],
        perfect,
    );
    for uplink in ["lte", "lte", "starlink", "lte"] {
        sim.step(0, Input::ActiveUplink(uplink.to_owned()));
        sim.step(1, Input::ActiveUplink(uplink.to_owned()));
    }
    let resets: Vec<String> = sim.logs[0]
        .iter()
        .filter_map(|(_, o)| match o {
            Output::ResetTunnelEndpoints { uplink } => Some(uplink.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resets, vec!["lte", "starlink", "lte"]);
    assert!(sim.logs[1].is_empty(), "{:?}", sim.logs[1]);
}

#[test]
fn a_report_covers_every_peer_and_heartbeats_go_on_every_path_with_one_sequence() {
    let mut sim = Sim::new(pair_of_appliances(), perfect);
    sim.step(0, Input::Report);
    let reported: Vec<usize> = sim.logs[0]
        .iter()
        .filter_map(|(_, o)| match o {
            Output::PeerReport { peer } => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(reported, vec![0, 1]);
    let sent = sim.machines[0].step(sim.now, Input::SendHeartbeats);
    let heartbeats: Vec<Heartbeat> = sent
        .iter()
        .filter_map(|o| match o {
            Output::Send { heartbeat, .. } => Some(*heartbeat),
            _ => None,
        })
        .collect();
    assert_eq!(
        heartbeats.len(),
        4,
        "three paths to the peer, one to the hub"
    );
    assert!(
        heartbeats
            .iter()
            .all(|h| h.seq == heartbeats[0].seq && h.from == 1)
    );
    assert_eq!(
        heartbeats
            .iter()
            .map(|h| (h.to, h.path))
            .collect::<Vec<_>>(),
        vec![(2, 0), (2, 1), (2, 2), (HUB_ID, 2)]
    );
}
