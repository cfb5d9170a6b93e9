//! dhcp-takeover's metrics, registered once in the registry `main` passes down.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) messages: IntCounterVec,
    pub(crate) replies: IntCounterVec,
    pub(crate) ignored: IntCounterVec,
    pub(crate) probes: IntCounterVec,
    pub(crate) leases: IntGaugeVec,
    pub(crate) pool: IntGaugeVec,
    pub(crate) serving: IntGaugeVec,
    pub(crate) commit_seconds: Histogram,
    pub(crate) commit_failures: IntCounter,
    pub(crate) syncs: IntCounterVec,
    pub(crate) takeovers: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let m = fieldnet::obs::Metrics(registry);
        let metrics = Self {
            messages: m.counters("fieldnet_dhcp_takeover_messages_total", "DHCP messages received, by type", &["type"])?,
            replies: m.counters("fieldnet_dhcp_takeover_replies_total", "DHCP replies sent, by type (offer, ack, nak)", &["type"])?,
            ignored: m.counters("fieldnet_dhcp_takeover_ignored_total", "Requests answered with nothing, by reason", &["reason"])?,
            probes: m.counters("fieldnet_dhcp_takeover_probes_total", "Conflict checks before offering, by result (free, in_use)", &["result"])?,
            leases: m.gauges("fieldnet_dhcp_takeover_leases", "Bound leases, by network and device class", &["network", "class"])?,
            pool: m.gauges("fieldnet_dhcp_takeover_pool_addresses", "Dynamic addresses per network: total, and used (bound, offered or quarantined)", &["network", "state"])?,
            serving: m.gauges("fieldnet_dhcp_takeover_serving", "1 for each network this appliance can serve, by state (own, waiting, taken, handing_back, standby)", &["network", "state"])?,
            commit_seconds: m.histogram("fieldnet_dhcp_takeover_commit_seconds", "Time to store one batch of leases durably", vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
                ])?,
            commit_failures: m.counter("fieldnet_dhcp_takeover_commit_failures_total", "Batches the lease log could not store (their requests were not acknowledged)")?,
            syncs: m.counters("fieldnet_dhcp_takeover_peer_syncs_total", "Pulls of a peer's lease changes, by peer and result (ok, failed)", &["peer", "result"])?,
            takeovers: m.counters("fieldnet_dhcp_takeover_transitions_total", "Takeover transitions, by network and action (serve, pause, withdraw)", &["network", "action"])?,
        };
        Ok(metrics)
    }
}
