//! The summary `ping -q` prints, parsed into numbers a test can assert on.
//! Invariant: parsing is pure; the figures come only from ping's own summary lines.

use std::time::Duration;

/// What one `ping -q` run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PingStats {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received (duplicates not counted).
    pub received: u32,
    /// Fraction lost, `1 - received / sent`, in 0.0..=1.0.
    pub loss: f64,
    /// Mean round-trip time of the replies (zero when none came back).
    pub rtt_avg: Duration,
    /// Shortest round-trip time.
    pub rtt_min: Duration,
    /// Longest round-trip time.
    pub rtt_max: Duration,
}

/// Parses the two summary lines of iputils (or busybox) `ping`:
/// `N packets transmitted, M received, …` and `rtt min/avg/max/mdev = a/b/c/d ms`.
pub(crate) fn parse_summary(text: &str) -> Option<PingStats> {
    let counts = text
        .lines()
        .find(|line| line.contains("packets transmitted"))?;
    let mut sent = None;
    let mut received = None;
    for part in counts.split(',') {
        let part = part.trim();
        let number = part.split_whitespace().next().and_then(|n| n.parse().ok());
        if part.ends_with("packets transmitted") {
            sent = number;
        } else if part.ends_with("received") || part.ends_with("packets received") {
            received = number;
        }
    }
    let (sent, received): (u32, u32) = (sent?, received?);
    let loss = if sent == 0 {
        1.0
    } else {
        (1.0 - f64::from(received) / f64::from(sent)).clamp(0.0, 1.0)
    };

    let mut stats = PingStats {
        sent,
        received,
        loss,
        rtt_avg: Duration::ZERO,
        rtt_min: Duration::ZERO,
        rtt_max: Duration::ZERO,
    };
    if let Some(rtt) = text
        .lines()
        .find(|line| line.starts_with("rtt ") || line.starts_with("round-trip "))
    {
        // "= 50.050/50.109/50.153/0.016 ms, pipe 3": the numbers end at the unit.
        let numbers = rtt.split('=').nth(1)?.trim();
        let numbers = numbers.split(" ms").next()?.trim();
        let values: Vec<f64> = numbers
            .split('/')
            .map(|value| value.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        if values.len() < 3
            || values
                .iter()
                .any(|value| !value.is_finite() || *value < 0.0)
        {
            return None;
        }
        // Rounded to whole nanoseconds so 0.100 ms is exactly 100 µs.
        let millis = |value: f64| Duration::from_nanos((value * 1_000_000.0).round() as u64);
        stats.rtt_min = millis(values[0]);
        stats.rtt_avg = millis(values[1]);
        stats.rtt_max = millis(values[2]);
    }
    Some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summaries() {
        let cases = [
            (
                "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 35ms\nrtt min/avg/max/mdev = 0.006/0.105/0.301/0.138 ms\n",
                (3, 3, 0.0, 6, 105, 301),
            ),
            (
                "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 1612ms\n",
                (3, 0, 1.0, 0, 0, 0),
            ),
            (
                "--- x ping statistics ---\n1000 packets transmitted, 800 received, +3 duplicates, 20% packet loss, time 5123ms\nrtt min/avg/max/mdev = 50.100/52.000/70.000/1.000 ms, pipe 3\n",
                (1000, 800, 0.2, 50_100, 52_000, 70_000),
            ),
            (
                "--- x ping statistics ---\n4 packets transmitted, 0 received, +4 errors, 100% packet loss, time 3004ms\n",
                (4, 0, 1.0, 0, 0, 0),
            ),
            (
                "--- x ping statistics ---\n2 packets transmitted, 2 packets received, 0% packet loss\nround-trip min/avg/max = 0.100/0.200/0.300 ms\n",
                (2, 2, 0.0, 100, 200, 300),
            ),
        ];
        for (text, (sent, received, loss, min_us, avg_us, max_us)) in cases {
            let stats = parse_summary(text).unwrap();
            assert_eq!((stats.sent, stats.received), (sent, received), "{text}");
            assert!((stats.loss - loss).abs() < 1e-9, "{text}");
            assert_eq!(stats.rtt_min, Duration::from_micros(min_us), "{text}");
            assert_eq!(stats.rtt_avg, Duration::from_micros(avg_us), "{text}");
            assert_eq!(stats.rtt_max, Duration::from_micros(max_us), "{text}");
        }
    }

    #[test]
    fn rejects_output_without_summary() {
        assert_eq!(
            parse_summary("ping: connect: Network is unreachable\n"),
            None
        );
        assert_eq!(
            parse_summary("3 packets transmitted, 3 received\nrtt min/avg/max/mdev = a/b/c/d ms"),
            None
        );
    }
}
