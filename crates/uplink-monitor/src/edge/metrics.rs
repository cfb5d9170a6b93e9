//! uplink-monitor's metrics: per uplink its probe results, score and traffic, and the switches.

use prometheus::{GaugeVec, IntCounterVec, IntGauge, Registry};

/// uplink-monitor's metrics, registered once in the registry `main` passes down.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) latency: GaugeVec,
    pub(crate) jitter: GaugeVec,
    pub(crate) loss: GaugeVec,
    pub(crate) score: GaugeVec,
    pub(crate) up: GaugeVec,
    pub(crate) active: GaugeVec,
    pub(crate) probes_sent: IntCounterVec,
    pub(crate) probes_lost: IntCounterVec,
    pub(crate) switches: IntCounterVec,
    pub(crate) last_switch: IntGauge,
    pub(crate) errors: IntCounterVec,
    pub(crate) throughput: GaugeVec,
    pub(crate) capacity: GaugeVec,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> anyhow::Result<Self> {
        let m = fieldnet::obs::Metrics(registry);
        let uplink = &["uplink"];
        let last_switch = m.gauge(
            "fieldnet_uplink_monitor_last_switch_timestamp_seconds",
            "Unix time of the last change of active uplink (0: none since start)",
        )?;
        Ok(Self {
            latency: m.float_gauges(
                "fieldnet_uplink_monitor_latency_milliseconds",
                "Smoothed round trip of the best target",
                uplink,
            )?,
            jitter: m.float_gauges(
                "fieldnet_uplink_monitor_jitter_milliseconds",
                "Smoothed round-trip variation",
                uplink,
            )?,
            loss: m.float_gauges(
                "fieldnet_uplink_monitor_loss_ratio",
                "Recent probe loss, 0 to 1",
                uplink,
            )?,
            score: m.float_gauges(
                "fieldnet_uplink_monitor_score",
                "Uplink score, lower is better",
                uplink,
            )?,
            up: m.float_gauges(
                "fieldnet_uplink_monitor_up",
                "1 when the uplink answers probes",
                uplink,
            )?,
            active: m.float_gauges(
                "fieldnet_uplink_monitor_active",
                "1 for the uplink carrying the default route",
                uplink,
            )?,
            probes_sent: m.counters(
                "fieldnet_uplink_monitor_probes_sent_total",
                "Probes sent",
                &["uplink"],
            )?,
            probes_lost: m.counters(
                "fieldnet_uplink_monitor_probes_lost_total",
                "Probes unanswered",
                &["uplink"],
            )?,
            switches: m.counters(
                "fieldnet_uplink_monitor_switches_total",
                "Changes of active uplink",
                &["reason"],
            )?,
            last_switch,
            errors: m.counters(
                "fieldnet_uplink_monitor_errors_total",
                "Failed kernel operations",
                &["operation"],
            )?,
            capacity: m.float_gauges(
                "fieldnet_uplink_monitor_capacity_kilobits_per_second",
                "Last result of the active throughput test",
                uplink,
            )?,
            throughput: m.float_gauges(
                "fieldnet_uplink_monitor_throughput_bits_per_second",
                "Traffic through the uplink's interface, from its counters",
                &["uplink", "direction"],
            )?,
        })
    }
}
