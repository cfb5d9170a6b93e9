//! Which path carries the routes to one peer's areas, decided from the path sessions and time.
//!
//! Invariants: a path that is not up is left at once, for the most preferred path that is up
//! (cable, then wifi, then VPN); traffic returns to a more preferred path only after that path
//! has been up without interruption for the failback hold, so a flapping cable never pulls
//! traffic back and forth; with no path up nothing moves (the peer is dead, which liveness
//! reports).

use std::time::{Duration, Instant};

use fieldnet::config::PathKind;

/// After the first path comes up, a better one coming up this soon is taken at once, not after
/// the failback hold: sessions come up a few heartbeats apart at start, in any order.
pub const INITIAL_GRACE: Duration = Duration::from_millis(1000);

/// Why the routes to a peer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceReason {
    /// First path to come up.
    Initial,
    /// The path in use went down.
    PathDown,
    /// A more preferred path has been up for the failback hold.
    Failback,
}

impl From<ChoiceReason> for fieldnet::bus::topics::PathReason {
    fn from(reason: ChoiceReason) -> Self {
        match reason {
            ChoiceReason::Initial => Self::Initial,
            ChoiceReason::PathDown => Self::PathDown,
            ChoiceReason::Failback => Self::Failback,
        }
    }
}

/// A change of path for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub from: Option<PathKind>,
    pub to: PathKind,
    pub reason: ChoiceReason,
}

/// The path choice for one peer.
#[derive(Debug, Clone)]
pub struct PathChoice {
    failback_hold: Duration,
    active: Option<PathKind>,
    /// When the first path was chosen.
    initial_at: Option<Instant>,
    /// Since when each path has been up without interruption.
    up_since: Vec<(PathKind, Instant)>,
}

impl PathChoice {
    pub fn new(failback_hold: Duration) -> Self {
        Self {
            failback_hold,
            active: None,
            initial_at: None,
            up_since: Vec::new(),
        }
    }

    pub fn active(&self) -> Option<PathKind> {
        self.active
    }

    /// Re-decides from which paths are up now.
    pub fn step(&mut self, now: Instant, up: &[PathKind]) -> Option<Switch> {
        self.up_since.retain(|(kind, _)| up.contains(kind));
        for kind in up {
            if !self.up_since.iter().any(|(k, _)| k == kind) {
                self.up_since.push((*kind, now));
            }
        }
        let best_up = up.iter().min().copied();
        let switch = |to: PathKind, reason| Switch {
            from: self.active,
            to,
            reason,
        };
        let decision = match (self.active, best_up) {
            (_, None) => None,
            (None, Some(best)) => {
                self.initial_at = Some(now);
                Some(switch(best, ChoiceReason::Initial))
            }
            (Some(active), Some(best))
                if best < active
                    && up.contains(&active)
                    && self
                        .initial_at
                        .is_some_and(|at| now.saturating_duration_since(at) < INITIAL_GRACE) =>
            {
                Some(switch(best, ChoiceReason::Initial))
            }
            (Some(active), Some(best)) if !up.contains(&active) => {
                Some(switch(best, ChoiceReason::PathDown))
            }
            // Back only to the most preferred path that is up, once it has held: when cable and
            // wifi return a moment apart, traffic goes straight to the cable in one move.
            (Some(active), Some(best)) if best < active => self
                .up_since
                .iter()
                .find(|(kind, _)| *kind == best)
                .filter(|(_, since)| now.saturating_duration_since(*since) >= self.failback_hold)
                .map(|_| switch(best, ChoiceReason::Failback)),
            (Some(_), Some(_)) => None,
        };
        if let Some(decision) = decision {
            self.active = Some(decision.to);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathKind::*;

    const HOLD: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `up(t)` every 10 ms for `duration`; returns the switches with their times.
    fn run(
        choice: &mut PathChoice,
        start: Instant,
        duration: Duration,
        up: impl Fn(Duration) -> Vec<PathKind>,
    ) -> Vec<(Duration, Switch)> {
        let mut switches = Vec::new();
        let mut t = Duration::ZERO;
        while t <= duration {
            if let Some(switch) = choice.step(start + t, &up(t)) {
                switches.push((t, switch));
            }
            t += ms(10);
        }
        switches
    }

    #[test]
    fn cable_cut_then_wifi_dead_then_both_restored() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        let switches = run(&mut choice, start, ms(30_000), |t| {
            let cable = t < ms(5_000) || t >= ms(15_000);
            let wifi = t < ms(10_000) || t >= ms(15_000);
            let mut up = vec![Vpn];
            if cable {
                up.push(Cable);
            }
            if wifi {
                up.push(Wifi);
            }
            up
        });
        let seen: Vec<(u64, Option<PathKind>, PathKind, ChoiceReason)> = switches
            .iter()
            .map(|(t, s)| (t.as_millis() as u64, s.from, s.to, s.reason))
            .collect();
        assert_eq!(
            seen,
            [
                (0, None, Cable, ChoiceReason::Initial),
                (5_000, Some(Cable), Wifi, ChoiceReason::PathDown),
                (10_000, Some(Wifi), Vpn, ChoiceReason::PathDown),
                // Both back at 15 s: cable takes over after the hold, and wifi is never used.
                (20_000, Some(Vpn), Cable, ChoiceReason::Failback),
            ]
        );
    }

    #[test]
    fn wifi_and_cable_back_a_moment_apart_is_one_move_straight_to_the_cable() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        let switches = run(&mut choice, start, ms(30_000), |t| {
            let mut up = vec![Vpn];
            if t < ms(5_000) || t >= ms(15_050) {
                up.push(Cable);
            }
            if t < ms(5_000) || t >= ms(15_000) {
                up.push(Wifi);
            }
            up
        });
        let seen: Vec<(u64, PathKind)> = switches
            .iter()
            .map(|(t, s)| (t.as_millis() as u64, s.to))
            .collect();
        assert_eq!(seen, [(0, Cable), (5_000, Vpn), (20_050, Cable)]);
    }

    #[test]
    fn a_flapping_cable_does_not_keep_traffic_off_a_stable_wifi() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        // On the VPN since 1 s; wifi back for good at 2 s; the cable up 2 s, down 1 s, forever.
        let switches = run(&mut choice, start, ms(30_000), |t| {
            let mut up = vec![Vpn];
            if t < ms(1_000) || (t >= ms(2_000) && (t.as_millis() / 1_000) % 3 != 2) {
                up.push(Cable);
            }
            if t < ms(1_000) || t >= ms(2_000) {
                up.push(Wifi);
            }
            up
        });
        let to: Vec<PathKind> = switches.iter().map(|(_, s)| s.to).collect();
        assert_eq!(to, [Cable, Vpn, Wifi], "{switches:?}");
    }

    #[test]
    fn a_flapping_cable_never_pulls_traffic_back() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        // Cable up 2 s, down 1 s, repeatedly, from 1 s on; wifi always up.
        let switches = run(&mut choice, start, ms(30_000), |t| {
            let flapping = t >= ms(1_000) && (t.as_millis() / 1_000) % 3 == 2;
            if flapping {
                vec![Wifi]
            } else {
                vec![Cable, Wifi]
            }
        });
        let to: Vec<PathKind> = switches.iter().map(|(_, s)| s.to).collect();
        assert_eq!(to, [Cable, Wifi], "{switches:?}");
    }

    #[test]
    fn at_start_a_better_path_coming_up_a_moment_later_is_taken_at_once() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        let switches = run(&mut choice, start, ms(10_000), |t| {
            let mut up = vec![Vpn];
            if t >= ms(50) {
                up.push(Cable);
            }
            up
        });
        let seen: Vec<(u64, PathKind, ChoiceReason)> = switches
            .iter()
            .map(|(t, s)| (t.as_millis() as u64, s.to, s.reason))
            .collect();
        assert_eq!(
            seen,
            [
                (0, Vpn, ChoiceReason::Initial),
                (50, Cable, ChoiceReason::Initial)
            ]
        );
        // After the grace, the failback hold applies again.
        let mut late = PathChoice::new(HOLD);
        let switches = run(&mut late, start, ms(10_000), |t| {
            let mut up = vec![Vpn];
            if t >= ms(2_000) {
                up.push(Cable);
            }
            up
        });
        assert_eq!(switches.last().unwrap().0, ms(7_000));
    }

    #[test]
    fn nothing_up_moves_nothing() {
        let start = Instant::now();
        let mut choice = PathChoice::new(HOLD);
        assert_eq!(choice.step(start, &[]), None);
        choice.step(start, &[Wifi]);
        assert_eq!(choice.step(start + ms(100), &[]), None);
        assert_eq!(choice.active(), Some(Wifi));
    }
}
