//! Site file → validated site. Collects every problem, not just the first, each with the key
//! path it belongs to; `parse` turns key paths into line numbers. The site's structure (areas,
//! machines, networks, links, hubs) is checked once in `site`; each machine's agent sections
//! are its site-wide sections with its own overrides laid over them, checked per machine, and a
//! problem with an overridden key is reported where the override is written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use toml::de::DeTable;

mod dhcp;
mod site;

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
        let mut agent = |section: &str, wire: &WireAgent, port: u16| {
            self.common(section, wire.enabled, wire.metrics_listen.as_deref(), port)
        };
        let agents = Agents {
            uplink_monitor: uplink_monitor?,
            cross_site_failover: cross_site?,
            whereami: whereami?,
            dhcp_takeover: dhcp_takeover?,
            imds_endpoint: agent(
                "imds_endpoint",
                &sections.imds_endpoint,
                METRICS_PORT_IMDS_ENDPOINT,
            )?,
            inventory: agent("inventory", &sections.inventory, METRICS_PORT_INVENTORY)?,
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
            ("imds_endpoint", &agents.imds_endpoint),
            ("inventory", &agents.inventory),
        ] {
            if let Some(other) = by_listen.insert(common.metrics_listen, section) {
                self.problem(
                    KeyPath::root().key(section).key("metrics_listen"),
                    format!("{} is already used by [{other}]", common.metrics_listen),
                );
            }
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

    fn cross_site_failover(
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

    fn whereami(&mut self, wire: &WireWhereami) -> Option<WhereamiConfig> {
        let path = KeyPath::root().key("whereami");
        let common = self.common(
            "whereami",
            wire.enabled,
            wire.metrics_listen.as_deref(),
            METRICS_PORT_WHEREAMI,
        );
        let port = self.bounded(
            wire.port,
            usize::from(DEFAULT_DNS_PORT),
            1..=65535,
            &path.key("port"),
        );
        let mut upstreams = Vec::new();
        for (index, upstream) in wire.upstreams.iter().flatten().enumerate() {
            let parsed = upstream.parse::<SocketAddr>().ok().or_else(|| {
                upstream
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(address) => upstreams.push(address),
                None => self.problem(
                    path.key("upstreams").index(index),
                    format!("'{upstream}' is not an address or address:port such as 192.0.2.53 or 192.0.2.53:5353"),
                ),
            }
        }
        let local_ttl = self.seconds(
            wire.local_ttl_s,
            DEFAULT_LOCAL_TTL,
            0..=86_400,
            &path.key("local_ttl_s"),
        );
        let serve_stale = self.seconds(
            wire.serve_stale_s,
            DEFAULT_SERVE_STALE,
            0..=604_800,
            &path.key("serve_stale_s"),
        );
        let cache_size = self.bounded(
            wire.cache_size,
            DEFAULT_DNS_CACHE_SIZE as usize,
            0..=10_000_000,
            &path.key("cache_size"),
        );
        let upstream_timeout = self.millis(
            wire.upstream_timeout_ms,
            DEFAULT_UPSTREAM_TIMEOUT,
            50..=30_000,
            &path.key("upstream_timeout_ms"),
        );
        let mut hosts = Vec::new();
        for (index, host) in wire.hosts.iter().enumerate() {
            let key = path.key("hosts").index(index);
            let name = self.name(&host.name, &key.key("name"));
            let address = match host.address.parse::<IpAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.problem(
                        key.key("address"),
                        format!("'{}' is not an IPv4 or IPv6 address", host.address),
                    );
                    None
                }
            };
            if let (Some(name), Some(address)) = (name, address) {
                hosts.push(Host { name, address });
            }
        }
        Some(WhereamiConfig {
            common: common?,
            port: port? as u16,
            upstreams,
            local_ttl: local_ttl?,
            cache_size: cache_size? as u64,
            upstream_timeout: upstream_timeout?,
            serve_stale: serve_stale?,
            hosts,
        })
    }

    fn uplink_monitor(
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

    fn bounded(
        &mut self,
        value: Option<i64>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<usize> {
        match value {
            None => Some(default),
            Some(value) if value >= 0 && range.contains(&(value as usize)) => Some(value as usize),
            Some(value) => {
                self.problem(
                    path.clone(),
                    format!(
                        "{value} is out of range; valid: {} to {} (default {default})",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A number that may be left out (then `None`: no default applies), within `range`.
    fn optional(
        &mut self,
        value: Option<i64>,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Option<usize>> {
        match value {
            None => Some(None),
            Some(value) if value >= 0 && range.contains(&(value as usize)) => {
                Some(Some(value as usize))
            }
            Some(value) => {
                self.problem(
                    path.clone(),
                    format!(
                        "{value} is out of range; valid: {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// An absolute path, `default` when left out.
    fn absolute_path(
        &mut self,
        value: Option<&str>,
        default: &str,
        path: &KeyPath,
    ) -> Option<PathBuf> {
        match value {
            None => Some(PathBuf::from(default)),
            Some(text) if text.starts_with('/') => Some(PathBuf::from(text)),
            Some(text) => {
                self.problem(
                    path.clone(),
                    format!("'{text}' is not an absolute path such as {default}"),
                );
                None
            }
        }
    }

    /// A duration given in milliseconds, within `range` (in milliseconds).
    fn millis(
        &mut self,
        value: Option<i64>,
        default: Duration,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Duration> {
        self.bounded(value, default.as_millis() as usize, range, path)
            .map(|ms| Duration::from_millis(ms as u64))
    }

    /// A duration given in seconds, within `range` (in seconds).
    fn seconds(
        &mut self,
        value: Option<i64>,
        default: Duration,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Duration> {
        self.bounded(value, default.as_secs() as usize, range, path)
            .map(|s| Duration::from_secs(s as u64))
    }

    fn listen(
        &mut self,
        value: Option<&str>,
        default_port: u16,
        path: &KeyPath,
    ) -> Option<SocketAddr> {
        match value {
            None => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                default_port,
            )),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.problem(
                        path.clone(),
                        format!("'{text}' is not an address:port such as 127.0.0.1:{default_port} or [::]:{default_port}"),
                    );
                    None
                }
            },
        }
    }

    fn appliance_id(&mut self, value: i64, path: &KeyPath) -> Option<u8> {
        match value {
            1..=254 => Some(value as u8),
            other => {
                self.problem(
                    path.clone(),
                    format!("{other} is not an appliance id; valid: 1 to 254"),
                );
                None
            }
        }
    }

    fn name(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        let valid = !value.is_empty()
            && value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Some(value.to_owned())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a valid name; use 1 to 63 letters, digits, '-' or '_'"),
            );
            None
        }
    }

    fn domain(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        let value = value.trim_end_matches('.');
        if is_dns_name(value) {
            Some(value.to_ascii_lowercase())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a DNS domain; write it like site.example.com"),
            );
            None
        }
    }

    fn interface(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        // The kernel's limit is IFNAMSIZ - 1 = 15 bytes, no '/', no whitespace.
        let valid = !value.is_empty()
            && value.len() <= 15
            && value != "."
            && value != ".."
            && !value
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
        if valid {
            Some(value.to_owned())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not an interface name; use 1 to 15 characters without '/', ':' or spaces"),
            );
            None
        }
    }

    fn ipv4(&mut self, value: &str, path: &KeyPath) -> Option<Ipv4Addr> {
        match value.parse::<Ipv4Addr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    path.clone(),
                    format!("'{value}' is not an IPv4 address such as 10.101.0.1"),
                );
                None
            }
        }
    }
}

/// Whether `value` is a DNS name: 1 to 253 bytes of labels separated by dots.
fn is_dns_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(crate::names::is_dns_label)
}

/// Whether `address` is a host address of `subnet` (inside it, not its network or broadcast
/// address).
fn is_host(subnet: Ipv4Net, address: Ipv4Addr) -> bool {
    subnet.contains(&address) && address != subnet.network() && address != subnet.broadcast()
}

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|item| item.to_string()).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// `http://192.0.2.10/generate_204` → (192.0.2.10:80, "192.0.2.10", "/generate_204").
fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let hint = "write it like http://203.0.113.10/generate_204 (plain http, an IPv4 address, so no DNS is needed over a particular uplink)";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL; {hint}"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = match authority.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => match authority.parse::<Ipv4Addr>() {
            Ok(ip) => SocketAddr::new(IpAddr::V4(ip), 80),
            Err(_) => {
                return Err(format!(
                    "'{authority}' in '{url}' is not an IPv4 address[:port]; {hint}"
                ));
            }
        },
    };
    Ok((address, authority.to_owned(), path.to_owned()))
}
