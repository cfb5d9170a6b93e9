//! imds-endpoint's metrics, `fieldnet_imds_endpoint_*`.

use fieldnet::obs;

use crate::protocol::Outcome;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests by outcome (`token`, `credentials`, `unavailable`, `metadata`, `not_found`, …),
    /// indexed by `Outcome::index`: resolved once, so a request costs one atomic add.
    pub requests_by_outcome: Vec<IntCounter>,
    /// Refused askers by reason (`not_served`, `no_lease`, `no_neighbour`, `mac_mismatch`,
    /// `forgotten`).
    pub refused: IntCounterVec,
    pub connections_refused: IntCounter,
    /// STS calls by result (`ok`, `failed`).
    pub sts_calls: IntCounterVec,
    /// Seconds every class's devices stay served without STS; per class, and `all`.
    pub runway_seconds: GaugeVec,
    pub devices: IntGauge,
    pub tokens: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Metrics> {
        let metrics = obs::Metrics(registry);
        let requests = metrics.counters(
            "fieldnet_imds_endpoint_requests_total",
            "Metadata requests answered, by outcome.",
            &["outcome"],
        )?;
        Ok(Metrics {
            requests_by_outcome: Outcome::WORDS
                .iter()
                .map(|word| requests.with_label_values(&[word]))
                .collect(),
            refused: metrics.counters(
                "fieldnet_imds_endpoint_refused_total",
                "Askers refused as no device served here, by reason.",
                &["reason"],
            )?,
            connections_refused: metrics.counter(
                "fieldnet_imds_endpoint_connections_refused_total",
                "Connections closed at once for the connection limits.",
            )?,
            sts_calls: metrics.counters(
                "fieldnet_imds_endpoint_sts_calls_total",
                "STS AssumeRole calls, by result.",
                &["result"],
            )?,
            runway_seconds: metrics.float_gauges(
                "fieldnet_imds_endpoint_runway_seconds",
                "How long devices stay served if STS stays away, per class and for all (class=\"all\").",
                &["class"],
            )?,
            devices: metrics.gauge(
                "fieldnet_imds_endpoint_devices",
                "Devices with a session of their own.",
            )?,
            tokens: metrics.gauge(
                "fieldnet_imds_endpoint_tokens",
                "Live IMDSv2 tokens, all clients together.",
            )?,
        })
    }
}
