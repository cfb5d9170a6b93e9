//! Forwarding: the cache first, then the upstream resolvers (hickory's resolver, over whichever
//! uplink carries the default route: the sockets are unbound, the kernel picks), and the stale
//! cache when no upstream answers in time.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{Resolver, TokioResolver};

use fieldnet::bus::topics::{DnsUpstreams, UpstreamHealth};

use crate::cache::{Cache, Entry, Hit};

/// Where a forwarded answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Upstream,
    /// Expired cache entry, served because no upstream answered.
    Stale,
    /// No upstream answered and nothing was cached: SERVFAIL.
    Failed,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
            Source::Stale => "stale",
            Source::Failed => "failed",
        }
    }
}

/// A forwarded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub source: Source,
    /// How long the upstream took, when it was asked.
    pub upstream_time: Option<Duration>,
}

#[derive(Debug)]
pub struct Forwarder {
    resolver: Option<TokioResolver>,
    cache: Cache,
    timeout: Duration,
    upstreams: Vec<SocketAddr>,
    health: Mutex<Health>,
}

/// What the upstreams did lately.
#[derive(Debug, Default, Clone)]
struct Health {
    /// Whether the last question sent upstream was answered.
    last_ok: Option<bool>,
    last_answer: Option<u64>,
    last_failure: Option<u64>,
    failures: u64,
}

impl Forwarder {
    /// A forwarder to `upstreams` (none: every forwarded question fails).
    pub fn new(
        upstreams: &[SocketAddr],
        cache_size: u64,
        timeout: Duration,
        serve_stale: Duration,
    ) -> anyhow::Result<Forwarder> {
        let resolver = if upstreams.is_empty() {
            None
        } else {
            let servers = upstreams
                .iter()
                .map(|upstream| {
                    let mut server = NameServerConfig::udp_and_tcp(upstream.ip());
                    for connection in &mut server.connections {
                        connection.port = upstream.port();
                    }
                    server
                })
                .collect();
            let config = ResolverConfig::from_parts(None, vec![], servers);
            let mut options = ResolverOpts::default();
            // The cache is ours (it serves stale answers); the resolver's would only hide misses.
            options.cache_size = 0;
            options.timeout = timeout;
            options.attempts = 1;
            options.use_hosts_file = ResolveHosts::Never;
            options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
            options.preserve_intermediates = true;
            options.num_concurrent_reqs = 1;
            Some(
                Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                    .with_options(options)
                    .build()?,
            )
        };
        Ok(Forwarder {
            resolver,
            cache: Cache::new(cache_size, serve_stale),
            timeout,
            upstreams: upstreams.to_vec(),
            health: Mutex::new(Health::default()),
        })
    }

    /// The upstreams and how they did lately, for `dns/state`.
    pub fn upstreams(&self) -> DnsUpstreams {
        let health = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        DnsUpstreams {
            addresses: self.upstreams.iter().map(ToString::to_string).collect(),
            health: match (self.resolver.is_some(), health.last_ok) {
                (false, _) => UpstreamHealth::None,
                (true, None) => UpstreamHealth::Unknown,
                (true, Some(true)) => UpstreamHealth::Ok,
                (true, Some(false)) => UpstreamHealth::Failing,
            },
            last_answer: health.last_answer,
            last_failure: health.last_failure,
            failures: health.failures,
        }
    }

    fn record(&self, answered: bool) {
        let now = fieldnet::bus::unix_millis();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        health.last_ok = Some(answered);
        if answered {
            health.last_answer = Some(now);
        } else {
            health.last_failure = Some(now);
            health.failures += 1;
        }
    }

    /// The answer to `name`/`qtype`.
    pub async fn resolve(&self, name: &LowerName, qtype: RecordType) -> Forwarded {
        let key = (name.clone(), qtype);
        let stale = match self.cache.get(&key, Instant::now()) {
            Hit::Fresh(entry) => return forwarded(entry, Source::Cache, None),
            Hit::Stale(entry) => Some(entry),
            Hit::Miss => None,
        };
        let Some(resolver) = &self.resolver else {
            return fallback(stale, None);
        };
        let started = Instant::now();
        let asked = tokio::time::timeout(
            self.timeout,
            resolver.lookup(Name::from(name.clone()), qtype),
        )
        .await;
        let took = Some(started.elapsed());
        let entry = match asked {
            Ok(Ok(lookup)) => {
                let message = lookup.message();
                Entry::new(
                    ResponseCode::NoError,
                    message.answers.clone(),
                    message.authorities.clone(),
                    Instant::now(),
                )
            }
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(none)))) => Entry::new(
                none.response_code,
                Vec::new(),
                none.soa
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default(),
                Instant::now(),
            ),
            Ok(Err(error)) => {
                tracing::debug!(%name, %qtype, %error, "no upstream answer");
                self.record(false);
                return fallback(stale, took);
            }
            Err(_) => {
                tracing::debug!(%name, %qtype, "upstreams did not answer in time");
                self.record(false);
                return fallback(stale, took);
            }
        };
        self.record(true);
        self.cache.put(key, entry.clone());
        forwarded(entry, Source::Upstream, took)
    }
}

fn forwarded(entry: Entry, source: Source, upstream_time: Option<Duration>) -> Forwarded {
    Forwarded {
        code: entry.code,
        answers: entry.answers,
        authorities: entry.authorities,
        source,
        upstream_time,
    }
}

/// No upstream answer: the stale entry if there is one, else SERVFAIL.
fn fallback(stale: Option<Entry>, took: Option<Duration>) -> Forwarded {
    match stale {
        Some(entry) => forwarded(entry, Source::Stale, took),
        None => Forwarded {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            authorities: Vec::new(),
            source: Source::Failed,
            upstream_time: took,
        },
    }
}
