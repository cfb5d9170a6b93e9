//! `[whereami]`: the DNS server's port, upstreams, TTLs, cache and its local hosts.

use std::net::{IpAddr, SocketAddr};

use super::super::wire::WireWhereami;
use super::super::*;
use super::{Checker, METRICS_PORT_WHEREAMI};

impl Checker {
    pub(super) fn whereami(&mut self, wire: &WireWhereami) -> Option<WhereamiConfig> {
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
}
