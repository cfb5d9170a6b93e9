//! inventory's metrics, `fieldnet_inventory_*`.

use fieldnet::obs;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Devices by area, network, class and state (recounted on every change of the list).
    pub devices: IntGaugeVec,
    /// Device events (`joined`, `moved`, `gone`, `returned`).
    pub events: IntCounterVec,
    /// The last full sweep's wall time and finds, per network.
    pub sweep_seconds: GaugeVec,
    pub sweep_found: IntGaugeVec,
    /// Frames sent, by kind (`arp`, `icmp`, `tcp`).
    pub frames_sent: IntCounterVec,
    /// Service discovery requests answered, by job.
    pub sd_requests: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Metrics> {
        let metrics = obs::Metrics(registry);
        Ok(Metrics {
            devices: metrics.gauges(
                "fieldnet_inventory_devices",
                "Devices known, by area, network, class and state (present, gone).",
                &["area", "network", "class", "state"],
            )?,
            events: metrics.counters(
                "fieldnet_inventory_device_events_total",
                "Device events: joined, moved, gone, returned.",
                &["event"],
            )?,
            sweep_seconds: metrics.float_gauges(
                "fieldnet_inventory_sweep_seconds",
                "Wall time of the last full sweep of each network.",
                &["network"],
            )?,
            sweep_found: metrics.gauges(
                "fieldnet_inventory_sweep_found",
                "Hosts that answered the last full sweep of each network.",
                &["network"],
            )?,
            frames_sent: metrics.counters(
                "fieldnet_inventory_frames_sent_total",
                "Requests sent by sweeps and probes, by kind (arp, icmp, tcp).",
                &["kind"],
            )?,
            sd_requests: metrics.counters(
                "fieldnet_inventory_sd_requests_total",
                "Service discovery requests answered, by job.",
                &["job"],
            )?,
        })
    }
}
