//! `[cross_site_failover]`: the heartbeat (port, interval, detect multiplier) and the
//! failback hold; a hub's mode comes from the site.

use super::super::wire::WireCrossSiteFailover;
use super::super::*;
use super::{Checker, METRICS_PORT_CROSS_SITE_FAILOVER};

impl Checker {
    pub(super) fn cross_site_failover(
        &mut self,
        wire: &WireCrossSiteFailover,
        hub: Option<HubMode>,
    ) -> Option<CrossSiteFailoverConfig> {
        let path = KeyPath::root().key("cross_site_failover");
        let common = self.common(
            "cross_site_failover",
            wire.enabled,
            wire.metrics_listen.as_deref(),
            METRICS_PORT_CROSS_SITE_FAILOVER,
        );
        let port = self.bounded(
            wire.heartbeat_port,
            usize::from(DEFAULT_HEARTBEAT_PORT),
            1..=65535,
            &path.key("heartbeat_port"),
        );
        let interval = self.millis(
            wire.heartbeat_interval_ms,
            DEFAULT_HEARTBEAT_INTERVAL,
            10..=10_000,
            &path.key("heartbeat_interval_ms"),
        );
        let multiplier = self.bounded(
            wire.detect_multiplier,
            usize::from(DEFAULT_DETECT_MULTIPLIER),
            2..=50,
            &path.key("detect_multiplier"),
        );
        let hold = self.millis(
            wire.failback_hold_ms,
            DEFAULT_FAILBACK_HOLD,
            0..=3_600_000,
            &path.key("failback_hold_ms"),
        );
        Some(CrossSiteFailoverConfig {
            common: common?,
            heartbeat_port: port? as u16,
            heartbeat_interval: interval?,
            detect_multiplier: multiplier? as u8,
            failback_hold: hold?,
            hub,
        })
    }
}
