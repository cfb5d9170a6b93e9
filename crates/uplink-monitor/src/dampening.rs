//! Flap dampening in the manner of RFC 2439: every failure adds a penalty that decays
//! exponentially; above `suppress` the uplink is not used until the penalty falls below `reuse`.
//!
//! Invariant: the penalty is a pure function of the failure times and `now`; suppression has
//! hysteresis (suppress > reuse) so an uplink does not flip between usable and not.

use std::time::{Duration, Instant};

/// Penalty added per failure.
pub const PENALTY_PER_FLAP: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct Dampening {
    half_life: Duration,
    suppress: f64,
    reuse: f64,
    /// Penalty as of `at`.
    penalty: f64,
    at: Option<Instant>,
    suppressed: bool,
}

impl Dampening {
    pub fn new(half_life: Duration, suppress: u32, reuse: u32) -> Self {
        Self {
            half_life,
            suppress: f64::from(suppress),
            reuse: f64::from(reuse),
            penalty: 0.0,
            at: None,
            suppressed: false,
        }
    }

    /// The penalty decayed to `now`.
    pub fn penalty(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let halves =
                    now.saturating_duration_since(at).as_secs_f64() / self.half_life.as_secs_f64();
                self.penalty * 0.5f64.powf(halves)
            }
        }
    }

    /// Records a failure. The penalty is capped at four times `suppress`, so an uplink that
    /// flapped all night is usable again a bounded time after it settles.
    pub fn flap(&mut self, now: Instant) {
        self.penalty = (self.penalty(now) + PENALTY_PER_FLAP).min(4.0 * self.suppress);
        self.at = Some(now);
        self.update(now);
    }

    /// Whether the uplink is suppressed now; call it as time passes to let it be reused.
    pub fn update(&mut self, now: Instant) -> bool {
        let penalty = self.penalty(now);
        if self.suppressed && penalty < self.reuse {
            self.suppressed = false;
        } else if !self.suppressed && penalty > self.suppress {
            self.suppressed = true;
        }
        self.suppressed
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppress_after_repeated_flaps_and_reuse_after_decay() {
        let start = Instant::now();
        let mut dampening = Dampening::new(Duration::from_secs(15), 3000, 1500);
        // (seconds after start, flap?, expected suppressed after the step)
        let steps: &[(u64, bool, bool)] = &[
            (0, true, false),
            (1, true, false),
            (2, true, false),   // ≈ 2880: still under 3000
            (3, true, true),    // ≈ 3700: suppressed
            (20, false, true),  // ≈ 1740: above reuse
            (40, false, false), // ≈ 690: reused
        ];
        for &(second, flap, expected) in steps {
            let now = start + Duration::from_secs(second);
            if flap {
                dampening.flap(now);
            }
            assert_eq!(
                dampening.update(now),
                expected,
                "at {second} s, penalty {}",
                dampening.penalty(now)
            );
        }
    }

    #[test]
    fn penalty_is_capped() {
        let start = Instant::now();
        let mut dampening = Dampening::new(Duration::from_secs(15), 3000, 1500);
        for n in 0..1000 {
            dampening.flap(start + Duration::from_millis(n * 200));
        }
        let end = start + Duration::from_millis(1000 * 200);
        assert!(dampening.penalty(end) <= 12_000.0);
        // From the cap, three half-lives bring it under reuse.
        assert!(!dampening.update(end + Duration::from_secs(46)));
    }
}
