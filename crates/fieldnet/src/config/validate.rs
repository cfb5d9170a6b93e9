//! Site file → validated site. Collects every problem, not just the first, each with the key
//! path it belongs to; `parse` turns key paths into line numbers. The site's structure (areas,
//! machines, networks, links, hubs) is checked once in `site`; each machine's agent sections
//! are its site-wide sections with its own overrides laid over them, checked per machine, and a
//! problem with an overridden key is reported where the override is written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::DeTable;

mod dhcp;
mod dns;
mod imds;
mod inventory;
mod peers;
mod site;
mod uplinks;
mod values;

use site::Sections;

use super::spans::{KeyPath, Segment, key_at, line_of, span_of};
use super::wire::*;
use super::*;

/// Default metrics listeners, one port per agent so they can share an appliance.
const METRICS_PORT_BUS: u16 = 9700;
const METRICS_PORT_UPLINK_MONITOR: u16 = 9701;
const METRICS_PORT_CROSS_SITE_FAILOVER: u16 = 9702;
const METRICS_PORT_WHEREAMI: u16 = 9703;
const METRICS_PORT_DHCP_TAKEOVER: u16 = 9704;
const METRICS_PORT_IMDS_ENDPOINT: u16 = 9705;
const METRICS_PORT_INVENTORY: u16 = 9706;

pub(super) fn parse(text: &str, file: &str) -> Result<SiteConfig, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let document = DeTable::parse(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        fail(vec![Problem {
            line: line_of(text, offset),
            key: "(syntax)".to_owned(),
            message: error.message().trim().to_owned(),
        }])
    })?;
    // serde stops at the first key of a wrong type or name: a wrong value is replaced by one
    // of the expected type, an unknown key's line blanked (never adding or removing a line,
    // so line numbers keep), and the rest read again, to report every such key at once. The
    // checks below need the whole file; they run once the types are right.
    let mut patched = text.to_owned();
    let mut type_problems = Vec::new();
    let wire: WireSiteFile = loop {
        let error = match toml::from_str(&patched) {
            Ok(wire) => break wire,
            Err(error) => error,
        };
        let span = error.span().unwrap_or(0..0);
        let key = DeTable::parse(&patched)
            .map_or_else(
                |_| key_at(&document, span.start),
                |now| key_at(&now, span.start),
            )
            .to_string();
        // serde quotes the value it refused: never the site key.
        let message = if key == "site.key" {
            "must be the key as a string of hex digits in quotes (better: 'key_file')".to_owned()
        } else {
            explain_serde(error.message())
        };
        let problem = Problem {
            line: line_of(&patched, span.start),
            key,
            message,
        };
        if type_problems.last() == Some(&problem) {
            // The stand-in did not satisfy serde either: said once is enough.
            return Err(fail(type_problems));
        }
        let patch = set_aside(&mut patched, error.message(), span.clone());
        type_problems.push(problem);
        if !patch || type_problems.len() >= MAX_TYPE_PROBLEMS || DeTable::parse(&patched).is_err() {
            return Err(fail(type_problems));
        }
    };
    if !type_problems.is_empty() {
        return Err(fail(type_problems));
    }
    // The same text as plain tables, for laying a machine's overrides over the site's sections.
    let raw: toml::Table = toml::from_str(text).map_err(|error| {
        fail(vec![Problem {
            line: 1,
            key: "(syntax)".to_owned(),
            message: error.message().trim().to_owned(),
        }])
    })?;
    let mut checker = Checker::default();
    let machines = checker.site(&wire, &raw);
    if let Some(machines) = machines
        && checker.problems.is_empty()
    {
        return Ok(SiteConfig {
            file: file.to_owned(),
            machines,
        });
    }
    // Site-wide sections are checked once per machine: say each problem once.
    let mut seen = BTreeSet::new();
    let problems = checker
        .problems
        .into_iter()
        .filter(|(path, message)| seen.insert((path.to_string(), message.clone())))
        .map(|(path, message)| Problem {
            line: line_of(text, span_of(&document, &path).start),
            key: path.to_string(),
            message,
        })
        .collect();
    Err(fail(problems))
}

/// Keys of a wrong type or name reported at most in one go.
const MAX_TYPE_PROBLEMS: usize = 100;

/// Sets aside what serde refused at `span` (with `message`) so the rest can be read: a value
/// of the wrong type becomes a value of the expected one, an unknown key's line is blanked.
/// `false` when neither applies (a missing key, a table header): nothing more can be read.
fn set_aside(text: &mut String, message: &str, span: std::ops::Range<usize>) -> bool {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let expected = message.rsplit("expected ").next().unwrap_or_default();
        let stand_in = if ["i64", "u8", "u16", "u32", "u64", "integer"]
            .iter()
            .any(|t| expected.contains(t))
        {
            "0"
        } else if expected.contains("f64") || expected.contains("float") {
            "0.0"
        } else if expected.contains("bool") {
            "false"
        } else if expected.contains("string") {
            "\"\""
        } else if expected.contains("sequence") || expected.contains("array") {
            "[]"
        } else if expected.contains("map") || expected.contains("struct") {
            "{}"
        } else {
            return false;
        };
        if end == start {
            return false;
        }
        // A value over several lines keeps its line breaks, as blank lines.
        let lines = text[start..end].matches('\n').count();
        text.replace_range(start..end, &format!("{stand_in}{}", "\n".repeat(lines)));
        return true;
    }
    if !message.starts_with("unknown field") {
        return false;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim_start();
    if line.is_empty() || line.starts_with('[') || line.starts_with('#') {
        return false;
    }
    text.replace_range(line_start..line_end, "");
    true
}

/// serde's messages are fine, but name the valid keys in a friendlier order.
fn explain_serde(message: &str) -> String {
    message.trim().replace('`', "'")
}

pub(super) fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be hex digits (at least {} of them, e.g. from `openssl rand -hex 32`)",
            MIN_SITE_KEY_BYTES * 2
        ));
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("checked hex"))
        .collect();
    if bytes.len() < MIN_SITE_KEY_BYTES {
        return Err(format!(
            "is {} bytes; a site key needs at least {MIN_SITE_KEY_BYTES} bytes ({} hex digits)",
            bytes.len(),
            MIN_SITE_KEY_BYTES * 2
        ));
    }
    Ok(bytes)
}
#[derive(Default)]
struct Checker {
    problems: Vec<(KeyPath, String)>,
    /// While one machine's sections are checked: the keys it overrides, per section, and where
    /// its entry is (`appliances[0]`).
    overrides: Option<Overrides>,
}

/// The keys one machine sets over the site-wide agent sections.
struct Overrides {
    entry: KeyPath,
    keys: BTreeMap<String, BTreeSet<String>>,
}

impl Checker {
    fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        let path = self.located(path);
        self.problems.push((path, message.into()));
    }

    /// `uplink_monitor.hold_ms` is reported at `appliances[1].uplink_monitor.hold_ms` while
    /// that machine's own value is the one being checked.
    fn located(&self, path: KeyPath) -> KeyPath {
        let Some(overrides) = &self.overrides else {
            return path;
        };
        if let [Segment::Key(section), Segment::Key(key), ..] = path.0.as_slice()
            && overrides
                .keys
                .get(section)
                .is_some_and(|keys| keys.contains(key))
        {
            let mut moved = overrides.entry.clone();
            moved.0.extend(path.0.iter().cloned());
            return moved;
        }
        path
    }

    fn site_section(&mut self, wire: &WireSite, path: &KeyPath) -> Option<Site> {
        let name = self.name(&wire.name, &path.key("name"));
        let domain = self.domain(&wire.domain, &path.key("domain"));
        let key = match (&wire.key, &wire.key_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    path.key("key_file"),
                    "set either 'key' or 'key_file', not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    path.clone(),
                    "missing 'key_file' (path to a file holding the hex site key) or 'key' (hex, at least 64 digits)",
                );
                None
            }
            (Some(key), None) => match decode_key(key) {
                Ok(bytes) => Some(SiteKey::Inline(bytes)),
                Err(message) => {
                    self.problem(path.key("key"), message);
                    None
                }
            },
            (None, Some(file)) if file.starts_with('/') => Some(SiteKey::File(PathBuf::from(file))),
            (None, Some(_)) => {
                self.problem(
                    path.key("key_file"),
                    "must be an absolute path such as /etc/fieldnet/site.key",
                );
                None
            }
        };
        Some(Site {
            name: name?,
            domain: domain?,
            key: key?,
        })
    }

    fn bus(&mut self, wire: &WireBus) -> Option<Bus> {
        let path = KeyPath::root().key("bus");
        let socket = self.absolute_path(
            wire.socket.as_deref(),
            DEFAULT_BUS_SOCKET,
            &path.key("socket"),
        );
        let max_line_bytes = self.bounded(
            wire.max_line_bytes,
            DEFAULT_BUS_MAX_LINE_BYTES,
            1024..=16 * 1024 * 1024,
            &path.key("max_line_bytes"),
        );
        let queue_depth = self.bounded(
            wire.queue_depth,
            DEFAULT_BUS_QUEUE_DEPTH,
            16..=1_000_000,
            &path.key("queue_depth"),
        );
        let metrics_listen = self.listen(
            wire.metrics_listen.as_deref(),
            METRICS_PORT_BUS,
            &path.key("metrics_listen"),
        );
        Some(Bus {
            socket: socket?,
            max_line_bytes: max_line_bytes?,
            queue_depth: queue_depth?,
            metrics_listen: metrics_listen?,
            trust_any_publisher: wire.trust_any_publisher.unwrap_or(false),
        })
    }

    /// Every agent's settings for one machine from its merged sections; `hub_mode` is `Some`
    /// on a hub.
    fn agents(
        &mut self,
        sections: &Sections,
        bus_metrics: Option<SocketAddr>,
        uplink_count: usize,
        networks: &[Network],
        dhcp: &site::NetworkDhcp,
        hub_mode: Option<HubMode>,
    ) -> Option<Agents> {
        let uplink_common = self.common(
            "uplink_monitor",
            sections.uplink_monitor.enabled,
            sections.uplink_monitor.metrics_listen.as_deref(),
            METRICS_PORT_UPLINK_MONITOR,
        );
        let uplink_monitor =
            self.uplink_monitor(&sections.uplink_monitor, uplink_common, uplink_count);
        let cross_site = self.cross_site_failover(&sections.cross_site_failover, hub_mode);
        let whereami = self.whereami(&sections.whereami);
        let dhcp_takeover = self.dhcp_takeover(&sections.dhcp_takeover, networks, dhcp);
        let classes = dhcp_takeover
            .as_ref()
            .map_or(&[][..], |dhcp| dhcp.classes.as_slice());
        let imds_endpoint = self.imds_endpoint(&sections.imds_endpoint, classes);
        let inventory = self.inventory(&sections.inventory);
        let agents = Agents {
            uplink_monitor: uplink_monitor?,
            cross_site_failover: cross_site?,
            whereami: whereami?,
            dhcp_takeover: dhcp_takeover?,
            imds_endpoint: imds_endpoint?,
            inventory: inventory?,
        };
        // Two agents on one port would fail at start-up, far from the file; say it here.
        let mut by_listen: BTreeMap<SocketAddr, &str> = BTreeMap::new();
        if let Some(bus) = bus_metrics {
            by_listen.insert(bus, "bus");
        }
        for (section, common) in [
            ("uplink_monitor", &agents.uplink_monitor.common),
            ("cross_site_failover", &agents.cross_site_failover.common),
            ("whereami", &agents.whereami.common),
            ("dhcp_takeover", &agents.dhcp_takeover.common),
            ("imds_endpoint", &agents.imds_endpoint.common),
            ("inventory", &agents.inventory.common),
        ] {
            if let Some(other) = by_listen.insert(common.metrics_listen, section) {
                self.problem(
                    KeyPath::root().key(section).key("metrics_listen"),
                    format!("{} is already used by [{other}]", common.metrics_listen),
                );
            }
        }
        if let Some(other) = by_listen.insert(agents.inventory.sd_listen, "inventory") {
            self.problem(
                KeyPath::root().key("inventory").key("sd_listen"),
                format!(
                    "{} is already used by [{other}]",
                    agents.inventory.sd_listen
                ),
            );
        }
        Some(agents)
    }

    fn common(
        &mut self,
        section: &str,
        enabled: Option<bool>,
        metrics_listen: Option<&str>,
        port: u16,
    ) -> Option<AgentCommon> {
        let path = KeyPath::root().key(section);
        let metrics_listen = self.listen(metrics_listen, port, &path.key("metrics_listen"))?;
        Some(AgentCommon {
            enabled: enabled.unwrap_or(true),
            metrics_listen,
        })
    }
}
