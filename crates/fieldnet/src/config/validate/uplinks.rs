//! `[uplink_monitor]`: probe targets and timings, failback and dampening, route tables and
//! marks, the HTTP check and the throughput test.

use std::net::Ipv4Addr;

use super::super::wire::WireUplinkMonitor;
use super::super::*;
use super::Checker;
use super::values::parse_http_url;

impl Checker {
    pub(super) fn uplink_monitor(
        &mut self,
        wire: &WireUplinkMonitor,
        common: Option<AgentCommon>,
        uplink_count: usize,
    ) -> Option<UplinkMonitorConfig> {
        let path = KeyPath::root().key("uplink_monitor");
        let mut targets = Vec::new();
        for (index, target) in wire.targets.iter().flatten().enumerate() {
            if let Ok(address) = target.parse::<Ipv4Addr>() {
                targets.push(ProbeTarget::Icmp(address));
            } else if let Ok(socket) = target.parse::<std::net::SocketAddrV4>() {
                targets.push(ProbeTarget::Udp(socket));
            } else {
                self.problem(
                    path.key("targets").index(index),
                    format!("'{target}' is neither an IPv4 address (probed with ICMP echo) nor address:port (probed over UDP), e.g. \"192.0.2.1\" or \"198.51.100.53:53\""),
                );
            }
        }
        if targets.len() > 16 {
            self.problem(
                path.key("targets"),
                format!("{} targets is too many; list at most 16", targets.len()),
            );
        }
        let enabled = common.as_ref().is_some_and(|c| c.enabled);
        if enabled && uplink_count > 0 && wire.targets.as_ref().is_none_or(|t| t.is_empty()) {
            self.problem(
                path.key("targets"),
                "list the addresses to probe over every uplink, e.g. the hub's public address and two public anycast resolvers: targets = [\"203.0.113.10\", \"198.51.100.53\"]",
            );
        }
        let mut millis = |key: &str,
                          value: Option<i64>,
                          default: Duration,
                          range: std::ops::RangeInclusive<usize>| {
            self.millis(value, default, range, &path.key(key))
        };
        let probe_interval = millis(
            "probe_interval_ms",
            wire.probe_interval_ms,
            DEFAULT_PROBE_INTERVAL,
            10..=60_000,
        );
        let standby_interval = millis(
            "standby_interval_ms",
            wire.standby_interval_ms,
            DEFAULT_STANDBY_INTERVAL,
            10..=600_000,
        );
        let dead_after = millis(
            "dead_after_ms",
            wire.dead_after_ms,
            DEFAULT_DEAD_AFTER,
            50..=60_000,
        );
        let hold = millis("hold_ms", wire.hold_ms, DEFAULT_HOLD, 0..=600_000);
        let failback_after = millis(
            "failback_after_ms",
            wire.failback_after_ms,
            DEFAULT_FAILBACK_AFTER,
            0..=3_600_000,
        );
        let dampening_half_life = millis(
            "dampening_half_life_ms",
            wire.dampening_half_life_ms,
            DEFAULT_DAMPENING_HALF_LIFE,
            1000..=3_600_000,
        );
        let http_check_interval = millis(
            "http_check_interval_ms",
            wire.http_check_interval_ms,
            DEFAULT_HTTP_CHECK_INTERVAL,
            1000..=3_600_000,
        );
        let throughput_interval = millis(
            "throughput_test_interval_ms",
            wire.throughput_test_interval_ms,
            DEFAULT_THROUGHPUT_TEST_INTERVAL,
            10_000..=86_400_000,
        );
        let margin_percent = self.bounded(
            wire.margin_percent,
            DEFAULT_MARGIN_PERCENT as usize,
            0..=100,
            &path.key("margin_percent"),
        );
        let dampening_suppress = self.bounded(
            wire.dampening_suppress,
            DEFAULT_DAMPENING_SUPPRESS as usize,
            1000..=100_000,
            &path.key("dampening_suppress"),
        );
        let dampening_reuse = self.bounded(
            wire.dampening_reuse,
            DEFAULT_DAMPENING_REUSE as usize,
            1..=100_000,
            &path.key("dampening_reuse"),
        );
        if let (Some(suppress), Some(reuse)) = (dampening_suppress, dampening_reuse)
            && reuse >= suppress
        {
            self.problem(
                path.key("dampening_reuse"),
                format!("{reuse} must be below dampening_suppress ({suppress})"),
            );
        }
        let route_table_base = self.bounded(
            wire.route_table_base,
            DEFAULT_ROUTE_TABLE_BASE as usize,
            1..=u32::MAX as usize - 256,
            &path.key("route_table_base"),
        );
        if let Some(base) = route_table_base
            && base < 253
            && base + uplink_count > 252
        {
            self.problem(
                path.key("route_table_base"),
                format!("tables {base}..{} would reach the kernel's reserved tables 253-255 (default, main, local); pick a base below {} or at least 256", base + uplink_count, 253 - uplink_count),
            );
        }
        let fwmark_base = self.bounded(
            wire.fwmark_base,
            DEFAULT_FWMARK_BASE as usize,
            1..=u32::MAX as usize - 256,
            &path.key("fwmark_base"),
        );
        let http_check = match &wire.http_check_url {
            None => None,
            Some(url) => {
                let interval = http_check_interval;
                let expect = self.bounded(
                    wire.http_check_expect,
                    usize::from(DEFAULT_HTTP_CHECK_EXPECT),
                    100..=599,
                    &path.key("http_check_expect"),
                );
                let target = parse_http_url(url);
                if let Err(message) = &target {
                    self.problem(path.key("http_check_url"), message.clone());
                }
                match (target, interval, expect) {
                    (Ok((address, host, url_path)), Some(interval), Some(expect)) => {
                        Some(HttpCheck {
                            address,
                            host,
                            path: url_path,
                            interval,
                            expect: expect as u16,
                        })
                    }
                    _ => None,
                }
            }
        };
        let min_kbps = self.bounded(
            wire.min_throughput_kbps,
            0,
            0..=10_000_000,
            &path.key("min_throughput_kbps"),
        );
        let throughput_test = match &wire.throughput_test_url {
            None => {
                if wire.min_throughput_kbps.is_some_and(|k| k > 0) {
                    self.problem(
                        path.key("min_throughput_kbps"),
                        "needs throughput_test_url: without the test there is nothing to compare with",
                    );
                }
                None
            }
            Some(url) => {
                let target = parse_http_url(url);
                if let Err(message) = &target {
                    self.problem(path.key("throughput_test_url"), message.clone());
                }
                match (target, throughput_interval, min_kbps) {
                    (Ok((address, host, url_path)), Some(interval), Some(min_kbps)) => {
                        Some(ThroughputTest {
                            address,
                            host,
                            path: url_path,
                            interval,
                            min_kbps: min_kbps as u32,
                        })
                    }
                    _ => None,
                }
            }
        };
        Some(UplinkMonitorConfig {
            common: common?,
            http_check,
            throughput_test,
            targets,
            probe_interval: probe_interval?,
            standby_interval: standby_interval?,
            dead_after: dead_after?,
            hold: hold?,
            margin_percent: margin_percent? as u32,
            failback_after: failback_after?,
            dampening_half_life: dampening_half_life?,
            dampening_suppress: dampening_suppress? as u32,
            dampening_reuse: dampening_reuse? as u32,
            route_table_base: route_table_base? as u32,
            fwmark_base: fwmark_base? as u32,
            masquerade: wire.masquerade.unwrap_or(true),
        })
    }
}
