//! `[inventory]`: where service discovery listens, how fast and how often networks are swept,
//! when a silent device is gone and then forgotten (in that order), the ranges behind routers
//! and the exporter jobs (each a unique name with one port).

use super::super::wire::{WireExporter, WireInventory};
use super::super::*;
use super::{Checker, METRICS_PORT_INVENTORY};

/// The widest routed range swept: a /16 is 65,534 hosts, over half a minute at the default rate.
const WIDEST_ROUTED_PREFIX: u8 = 16;

impl Checker {
    pub(super) fn inventory(&mut self, wire: &WireInventory) -> Option<InventoryConfig> {
        let path = KeyPath::root().key("inventory");
        let common = self.common(
            "inventory",
            wire.enabled,
            wire.metrics_listen.as_deref(),
            METRICS_PORT_INVENTORY,
        );
        let sd_listen = self.listen(
            wire.sd_listen.as_deref(),
            DEFAULT_INVENTORY_SD_PORT,
            &path.key("sd_listen"),
        );
        let state = self.absolute_path(
            wire.state.as_deref(),
            DEFAULT_INVENTORY_STATE,
            &path.key("state"),
        );
        let sweep_interval = self.seconds(
            wire.sweep_interval_s,
            DEFAULT_SWEEP_INTERVAL,
            5..=86_400,
            &path.key("sweep_interval_s"),
        );
        let sweep_rate = self.bounded(
            wire.sweep_rate,
            DEFAULT_SWEEP_RATE as usize,
            10..=100_000,
            &path.key("sweep_rate"),
        );
        let sweep_attempts = self.bounded(
            wire.sweep_attempts,
            DEFAULT_SWEEP_ATTEMPTS as usize,
            1..=10,
            &path.key("sweep_attempts"),
        );
        let reply_wait = self.millis(
            wire.reply_wait_ms,
            DEFAULT_REPLY_WAIT,
            10..=5_000,
            &path.key("reply_wait_ms"),
        );
        let probe_interval = self.seconds(
            wire.probe_interval_s,
            DEFAULT_EXPORTER_PROBE_INTERVAL,
            5..=86_400,
            &path.key("probe_interval_s"),
        );
        let gone_after = self.seconds(
            wire.gone_after_s,
            DEFAULT_GONE_AFTER,
            2..=7 * 86_400,
            &path.key("gone_after_s"),
        );
        let forget_after = self.seconds(
            wire.forget_after_s,
            DEFAULT_FORGET_AFTER,
            60..=365 * 86_400,
            &path.key("forget_after_s"),
        );
        if let (Some(gone), Some(forget)) = (gone_after, forget_after)
            && forget <= gone
        {
            self.problem(
                path.key("forget_after_s"),
                format!(
                    "{} s must be longer than gone_after_s ({} s): a device is forgotten only after it is gone",
                    forget.as_secs(),
                    gone.as_secs()
                ),
            );
        }
        let oui_file = match wire.oui_file.as_deref() {
            None => Some(None),
            Some(text) => self
                .absolute_path(Some(text), OUI_FILES[0], &path.key("oui_file"))
                .map(Some),
        };
        let routed = self.routed(wire.routed.as_deref().unwrap_or_default(), &path);
        let exporters = self.exporters(wire.exporters.as_deref(), &path);
        Some(InventoryConfig {
            common: common?,
            sd_listen: sd_listen?,
            state: state?,
            sweep_interval: sweep_interval?,
            sweep_rate: sweep_rate? as u32,
            sweep_attempts: sweep_attempts? as u32,
            reply_wait: reply_wait?,
            probe_interval: probe_interval?,
            gone_after: gone_after?,
            forget_after: forget_after?,
            oui_file: oui_file?,
            routed: routed?,
            exporters: exporters?,
        })
    }

    fn routed(&mut self, ranges: &[String], path: &KeyPath) -> Option<Vec<Ipv4Net>> {
        let mut routed = Vec::new();
        let mut ok = true;
        for (index, text) in ranges.iter().enumerate() {
            let key = path.key("routed").index(index);
            match text.parse::<Ipv4Net>() {
                Ok(range) if range.prefix_len() < WIDEST_ROUTED_PREFIX => {
                    self.problem(
                        key,
                        format!(
                            "{range} is wider than a /{WIDEST_ROUTED_PREFIX}; list the ranges devices are in"
                        ),
                    );
                    ok = false;
                }
                Ok(range) if routed.contains(&range.trunc()) => {
                    self.problem(key, format!("{range} is listed twice"));
                    ok = false;
                }
                Ok(range) => routed.push(range.trunc()),
                Err(_) => {
                    self.problem(
                        key,
                        format!("'{text}' is not an IPv4 range such as 10.60.0.0/24"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(routed)
    }

    fn exporters(
        &mut self,
        wire: Option<&[WireExporter]>,
        path: &KeyPath,
    ) -> Option<Vec<Exporter>> {
        let Some(wire) = wire else {
            let (job, port) = DEFAULT_EXPORTER;
            return Some(vec![Exporter {
                job: job.to_owned(),
                port,
            }]);
        };
        let mut exporters: Vec<Exporter> = Vec::new();
        let mut ok = true;
        for (index, exporter) in wire.iter().enumerate() {
            let key = path.key("exporters").index(index);
            let mut job_ok = is_job_name(&exporter.job);
            if !job_ok {
                self.problem(
                    key.key("job"),
                    format!(
                        "'{}' is not a job name: letters, digits, '-' and '_', starting with a letter (it is the URL /sd/<job>)",
                        exporter.job
                    ),
                );
            } else if exporters.iter().any(|other| other.job == exporter.job) {
                self.problem(
                    key.key("job"),
                    format!("job '{}' is listed twice", exporter.job),
                );
                job_ok = false;
            }
            let port = self.bounded(Some(exporter.port), 9100, 1..=65535, &key.key("port"));
            match port {
                Some(port) if job_ok => exporters.push(Exporter {
                    job: exporter.job.clone(),
                    port: port as u16,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(exporters)
    }
}

/// A Prometheus job name that is also one URL path segment.
fn is_job_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
