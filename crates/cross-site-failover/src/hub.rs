//! The hub pair's decisions, from the partner's liveness and the time: whether the partner hub
//! counts as up, and so which hub the VPC routes point at and whether the partner's Route53
//! switch is on. Also the hub's own routing rule: which appliance tunnel carries each area.
//!
//! Invariants: the partner counts as down only after it was dead for `takeover_after` without
//! a break, and as up again only after it was alive for `giveback_hold` without a break, so a
//! flapping partner never moves the routes back and forth; only the standby ever writes the VPC
//! routes (two writers could fight), and it starts by assuming the primary is up.

use std::time::{Duration, Instant};

use fieldnet::config::HubRole;

use crate::tunnel::TunnelVerdict;

/// Which hub the VPC route-table entries for the site networks point at, in the bus's words.
pub use fieldnet::bus::topics::RouteOwner;

/// The pair as one hub sees it.
#[derive(Debug, Clone)]
pub struct HubPair {
    role: HubRole,
    takeover_after: Duration,
    giveback_hold: Duration,
    partner_up: bool,
    /// The partner's latest liveness and since when it has held without a break.
    alive: bool,
    alive_since: Instant,
}

impl HubPair {
    pub fn new(
        role: HubRole,
        takeover_after: Duration,
        giveback_hold: Duration,
        now: Instant,
    ) -> Self {
        Self {
            role,
            takeover_after,
            giveback_hold,
            partner_up: true,
            alive: false,
            alive_since: now,
        }
    }

    /// Records the partner's liveness (heartbeat session up or not).
    pub fn observe(&mut self, now: Instant, alive: bool) {
        if alive != self.alive {
            self.alive = alive;
            self.alive_since = now;
        }
    }

    /// Re-decides whether the partner is up; returns the new value when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<bool> {
        let held = now.duration_since(self.alive_since);
        let next = match (self.partner_up, self.alive) {
            (true, false) if held >= self.takeover_after => false,
            (false, true) if held >= self.giveback_hold => true,
            (current, _) => current,
        };
        (next != self.partner_up).then(|| {
            self.partner_up = next;
            next
        })
    }

    pub fn partner_up(&self) -> bool {
        self.partner_up
    }

    /// Who the routes point at, as this hub wants them.
    pub fn owner(&self) -> RouteOwner {
        match (self.role, self.partner_up) {
            (HubRole::Standby, false) => RouteOwner::Standby,
            _ => RouteOwner::Primary,
        }
    }

    /// Whether this hub writes the VPC routes at all.
    pub fn writes_routes(&self) -> bool {
        self.role == HubRole::Standby
    }
}

/// One tunnel's latest health, as the hub reports it to AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelReport {
    pub interface: String,
    pub peer: String,
    pub verdict: TunnelVerdict,
    pub rtt: Option<Duration>,
    /// The WireGuard state could be read (a failed read is a failed collection).
    pub collected: bool,
}

/// What the hub's AWS side acts on (`hub_aws`).
#[derive(Debug, Clone, PartialEq)]
pub struct HubView {
    pub partner_up: bool,
    pub owner: RouteOwner,
    pub tunnels: Vec<TunnelReport>,
}

/// The hub's rule for one area: its own appliance's tunnel while that is up, else the tunnel of
/// the lowest-numbered appliance that is up (it reaches the area over the cable or wifi, or has
/// taken the area over). `up` lists the appliances whose tunnel heartbeats are up.
pub fn area_carrier(owner: u8, up: &[u8]) -> Option<u8> {
    if up.contains(&owner) {
        return Some(owner);
    }
    up.iter().copied().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAKEOVER: Duration = Duration::from_millis(1000);
    const GIVEBACK: Duration = Duration::from_secs(30);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pair(role: HubRole, t0: Instant) -> HubPair {
        let mut pair = HubPair::new(role, TAKEOVER, GIVEBACK, t0);
        pair.observe(t0, true);
        pair
    }

    #[test]
    fn the_standby_takes_the_routes_after_the_primary_is_dead_for_the_takeover_time() {
        let t0 = Instant::now();
        let mut standby = pair(HubRole::Standby, t0);
        assert_eq!(standby.owner(), RouteOwner::Primary);
        standby.observe(t0 + ms(100), false);
        assert_eq!(standby.tick(t0 + ms(1099)), None);
        assert_eq!(standby.owner(), RouteOwner::Primary);
        assert_eq!(standby.tick(t0 + ms(1100)), Some(false));
        assert_eq!(standby.owner(), RouteOwner::Standby);
        assert!(!standby.partner_up());
    }

    #[test]
    fn routes_go_back_only_after_the_primary_stayed_alive_for_the_hold() {
        let t0 = Instant::now();
        let mut standby = pair(HubRole::Standby, t0);
        standby.observe(t0, false);
        standby.tick(t0 + TAKEOVER);
        let back = t0 + ms(5000);
        standby.observe(back, true);
        assert_eq!(standby.tick(back + GIVEBACK - ms(1)), None);
        assert_eq!(standby.owner(), RouteOwner::Standby);
        assert_eq!(standby.tick(back + GIVEBACK), Some(true));
        assert_eq!(standby.owner(), RouteOwner::Primary);
    }

    #[test]
    fn a_flapping_primary_never_moves_the_routes() {
        let t0 = Instant::now();
        let mut standby = pair(HubRole::Standby, t0);
        // Dead for 600 ms, alive for 200 ms, over and over: never dead for the takeover time.
        let mut now = t0;
        for _ in 0..50 {
            standby.observe(now, false);
            now += ms(600);
            assert_eq!(standby.tick(now), None);
            standby.observe(now, true);
            now += ms(200);
            assert_eq!(standby.tick(now), None);
        }
        assert_eq!(standby.owner(), RouteOwner::Primary);
    }

    #[test]
    fn a_flapping_primary_after_a_takeover_keeps_the_routes_on_the_standby() {
        let t0 = Instant::now();
        let mut standby = pair(HubRole::Standby, t0);
        standby.observe(t0, false);
        standby.tick(t0 + TAKEOVER);
        let mut now = t0 + TAKEOVER;
        for _ in 0..20 {
            standby.observe(now, true);
            now += ms(20_000);
            assert_eq!(standby.tick(now), None);
            standby.observe(now, false);
            now += ms(500);
            assert_eq!(standby.tick(now), None);
        }
        assert_eq!(standby.owner(), RouteOwner::Standby);
    }

    #[test]
    fn the_primary_never_writes_routes_but_tracks_its_partner() {
        let t0 = Instant::now();
        let mut primary = pair(HubRole::Primary, t0);
        assert!(!primary.writes_routes());
        primary.observe(t0, false);
        assert_eq!(primary.tick(t0 + TAKEOVER), Some(false));
        assert_eq!(primary.owner(), RouteOwner::Primary);
    }

    #[test]
    fn at_start_the_primary_is_assumed_up_until_proven_dead() {
        let t0 = Instant::now();
        let mut standby = HubPair::new(HubRole::Standby, TAKEOVER, GIVEBACK, t0);
        // No heartbeat yet: the takeover time runs from the start.
        assert_eq!(standby.tick(t0 + ms(500)), None);
        assert_eq!(standby.owner(), RouteOwner::Primary);
        assert_eq!(standby.tick(t0 + TAKEOVER), Some(false));
    }

    #[test]
    fn an_area_rides_its_own_tunnel_else_the_lowest_live_one() {
        assert_eq!(area_carrier(2, &[1, 2, 3]), Some(2));
        assert_eq!(area_carrier(2, &[3, 1]), Some(1));
        assert_eq!(area_carrier(2, &[]), None);
    }
}
