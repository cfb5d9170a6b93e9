//! Requests per client per second: a token bucket per client address, refilled at `rate` a
//! second up to a burst of twice that. Pure: the clock is an argument.
//!
//! Invariant: a client is never allowed more than `2 × rate + rate × seconds` requests over
//! any span of `seconds`; idle buckets are dropped by [`RateLimits::sweep`].

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug)]
pub struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: HashMap<Ipv4Addr, (f64, u64)>,
}

impl RateLimits {
    pub fn new(per_second: u32) -> RateLimits {
        let rate = f64::from(per_second.max(1));
        RateLimits {
            rate,
            burst: 2.0 * rate,
            buckets: HashMap::new(),
        }
    }

    /// Whether `client` may make a request at `now` (milliseconds); counts it if so.
    pub fn allow(&mut self, now: u64, client: Ipv4Addr) -> bool {
        let (level, at) = self.buckets.entry(client).or_insert((self.burst, now));
        let elapsed = now.saturating_sub(*at) as f64 / 1000.0;
        *level = (*level + elapsed * self.rate).min(self.burst);
        *at = now.max(*at);
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets clients whose bucket is full again (they have been idle long enough).
    pub fn sweep(&mut self, now: u64) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, (level, at)| {
            *level + now.saturating_sub(*at) as f64 / 1000.0 * rate < burst
        });
    }

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 50);
    const B: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 51);

    #[test]
    fn a_burst_then_the_rate_and_each_client_on_its_own() {
        let mut limits = RateLimits::new(10);
        let allowed = (0..100).filter(|_| limits.allow(0, A)).count();
        assert_eq!(allowed, 20, "the burst");
        assert!(limits.allow(0, B), "another client is not held back");
        assert!(!limits.allow(50, A));
        assert!(limits.allow(100, A), "one more after a tenth of a second");
        let over_ten_seconds = (0..10_000u64)
            .filter(|ms| limits.allow(1_000 + ms, A))
            .count();
        assert!(
            (100..=121).contains(&over_ten_seconds),
            "{over_ten_seconds}"
        );
        limits.sweep(1_000_000);
        assert_eq!(limits.clients(), 0);
    }
}
