//! Per-target measurements and the uplink score: pure arithmetic, no clock of its own.
//!
//! Invariant: a score only ever goes down when the uplink measurably got better; lower is
//! better, and every term is in "milliseconds of round trip" so the weights read plainly.

use std::time::Duration;

/// Weight of sustained loss: 10 % long-run loss costs as much as 100 ms of round trip.
const LOSS_LONG_WEIGHT: f64 = 1000.0;
/// Weight of recent loss, squared so a few lost probes barely count but a burst does.
const LOSS_SHORT_WEIGHT: f64 = 400.0;
/// Jitter counts twice: it hurts interactive traffic more than steady latency.
const JITTER_WEIGHT: f64 = 2.0;
/// Smoothing of round-trip time and its variation, as TCP does (RFC 6298).
const RTT_ALPHA: f64 = 0.125;
const RTTVAR_BETA: f64 = 0.25;
/// Loss averages: short ≈ the last 20 probes of a target, long ≈ the last 500.
const LOSS_SHORT_ALPHA: f64 = 0.05;
const LOSS_LONG_ALPHA: f64 = 0.002;

/// What one target has shown over one uplink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetStats {
    /// Smoothed round trip in milliseconds; `None` until the first reply.
    pub srtt_ms: Option<f64>,
    /// Smoothed round-trip variation (jitter) in milliseconds.
    pub rttvar_ms: f64,
    /// Fraction of probes lost, recent and long-run.
    pub loss_short: f64,
    pub loss_long: f64,
}

impl TargetStats {
    /// Folds in one answered probe.
    pub fn reply(&mut self, rtt: Duration) {
        let sample = rtt.as_secs_f64() * 1000.0;
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(sample);
                self.rttvar_ms = sample / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms =
                    (1.0 - RTTVAR_BETA) * self.rttvar_ms + RTTVAR_BETA * (srtt - sample).abs();
                self.srtt_ms = Some((1.0 - RTT_ALPHA) * srtt + RTT_ALPHA * sample);
            }
        }
        self.loss(false);
    }

    /// Folds in one probe outcome for the loss averages.
    pub fn loss(&mut self, lost: bool) {
        let x = if lost { 1.0 } else { 0.0 };
        self.loss_short = (1.0 - LOSS_SHORT_ALPHA) * self.loss_short + LOSS_SHORT_ALPHA * x;
        self.loss_long = (1.0 - LOSS_LONG_ALPHA) * self.loss_long + LOSS_LONG_ALPHA * x;
    }

    /// How long an answer may take before it counts as lost: three round trips and four
    /// variations, as a retransmission timer would wait, never below `floor`.
    pub fn patience(&self, floor: Duration) -> Duration {
        match self.srtt_ms {
            None => floor,
            Some(srtt) => floor.max(Duration::from_secs_f64(
                (3.0 * srtt + 4.0 * self.rttvar_ms) / 1000.0,
            )),
        }
    }
}

/// The figures an uplink is judged by, combined over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UplinkFigures {
    pub latency_ms: f64,
    pub jitter_ms: f64,
    pub loss_short: f64,
    pub loss_long: f64,
}

impl UplinkFigures {
    /// Latency and jitter of the best-answering target (the uplink is as good as its best
    /// path); loss averaged over targets that have ever answered, so one dead target does not
    /// make a healthy uplink look lossy.
    pub fn combine<'a>(targets: impl IntoIterator<Item = &'a TargetStats>) -> Option<Self> {
        let mut best: Option<&TargetStats> = None;
        let (mut count, mut loss_short, mut loss_long) = (0.0, 0.0, 0.0);
        for target in targets {
            let Some(srtt) = target.srtt_ms else { continue };
            if best.is_none_or(|b| srtt < b.srtt_ms.expect("answered")) {
                best = Some(target);
            }
            count += 1.0;
            loss_short += target.loss_short;
            loss_long += target.loss_long;
        }
        let best = best?;
        Some(Self {
            latency_ms: best.srtt_ms.expect("answered"),
            jitter_ms: best.rttvar_ms,
            loss_short: loss_short / count,
            loss_long: loss_long / count,
        })
    }

    /// The score: lower is better. `preference` (0–1000) counts as milliseconds.
    pub fn score(&self, preference: u32) -> f64 {
        self.latency_ms
            + JITTER_WEIGHT * self.jitter_ms
            + LOSS_LONG_WEIGHT * self.loss_long
            + LOSS_SHORT_WEIGHT * self.loss_short * self.loss_short
            + f64::from(preference)
    }
}

/// Whether `candidate` beats `current` by the configured margin: `margin_percent` of the
/// current score, and never less than `floor_ms`, so near-equal links never trade places.
pub fn clearly_better(candidate: f64, current: f64, margin_percent: u32, floor_ms: f64) -> bool {
    let margin = (current * f64::from(margin_percent) / 100.0).max(floor_ms);
    candidate + margin < current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rtt_smoothing_follows_rfc6298() {
        let mut stats = TargetStats::default();
        stats.reply(ms(100));
        assert_eq!((stats.srtt_ms, stats.rttvar_ms), (Some(100.0), 50.0));
        stats.reply(ms(20));
        // rttvar = 0.75·50 + 0.25·|100−20| = 57.5; srtt = 0.875·100 + 0.125·20 = 90
        assert_eq!((stats.srtt_ms, stats.rttvar_ms), (Some(90.0), 57.5));
        assert_eq!(stats.patience(ms(300)), Duration::from_secs_f64(0.5));
        assert_eq!(TargetStats::default().patience(ms(300)), ms(300));
    }

    #[test]
    fn scores_rank_uplinks_the_way_a_person_would() {
        let figures = |latency_ms, jitter_ms, loss_long| UplinkFigures {
            latency_ms,
            jitter_ms,
            loss_short: 0.0,
            loss_long,
        };
        // (description, better, worse)
        let cases = [
            (
                "lower latency",
                figures(40.0, 2.0, 0.0),
                figures(400.0, 2.0, 0.0),
            ),
            (
                "less jitter",
                figures(50.0, 1.0, 0.0),
                figures(50.0, 30.0, 0.0),
            ),
            (
                "less loss",
                figures(60.0, 2.0, 0.0),
                figures(40.0, 2.0, 0.05),
            ),
        ];
        for (what, better, worse) in cases {
            assert!(better.score(0) < worse.score(0), "{what}");
        }
        assert!(
            figures(40.0, 2.0, 0.0).score(10) < figures(40.0, 2.0, 0.0).score(20),
            "preference breaks ties"
        );
    }

    #[test]
    fn one_dead_target_does_not_make_an_uplink_lossy() {
        let mut alive = TargetStats::default();
        alive.reply(ms(30));
        let dead = TargetStats {
            loss_short: 1.0,
            loss_long: 1.0,
            ..TargetStats::default()
        };
        let figures = UplinkFigures::combine(&[alive, dead]).unwrap();
        assert_eq!((figures.latency_ms, figures.loss_long), (30.0, 0.0));
        assert!(UplinkFigures::combine(&[TargetStats::default()]).is_none());
    }

    #[test]
    fn margin_has_a_floor() {
        assert!(clearly_better(40.0, 400.0, 25, 20.0));
        assert!(!clearly_better(90.0, 100.0, 25, 20.0));
        assert!(
            !clearly_better(0.5, 10.0, 25, 20.0),
            "sub-floor differences never switch"
        );
        assert!(clearly_better(70.0, 100.0, 25, 20.0));
    }
}
