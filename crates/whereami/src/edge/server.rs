//! The request handler: decide (`answer`), forward when told to, answer through hickory's
//! response builder.
//! Responses carry EDNS when the request did (payload capped at 1232 bytes, the DNS flag day
//! size); hickory truncates UDP answers that do not fit and sets TC, so clients retry over TCP.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_proto::op::{Edns, Metadata, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use crate::answer::{Decision, Views};
use crate::edge::forward::{Forwarder, Source};
use crate::packet::{AnswerCache, Validity};

/// Largest UDP answer offered to EDNS clients.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

#[derive(Debug, Clone)]
pub struct Metrics {
    pub queries: IntCounterVec,
    pub upstream_seconds: Histogram,
    /// Forwarded questions answered without asking upstream.
    pub cache_hits: IntCounter,
    /// Questions the upstreams did not answer (timed out, unreachable, SERVFAIL).
    pub upstream_failures: IntCounter,
    /// Queries answered from the answer cache (finished responses, local or forwarded).
    pub answer_cache_hits: IntCounter,
    /// UDP queries from a site address that arrived on an uplink: forged, dropped.
    pub spoofed: IntCounter,
    /// DNS-over-TCP connections open now.
    pub tcp_connections: IntGauge,
    /// DNS-over-TCP connections closed at once, by why (`client_cap`, `total_cap`).
    pub tcp_refused: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> anyhow::Result<Metrics> {
        let m = fieldnet::obs::Metrics(registry);
        let queries = m.counters("fieldnet_whereami_queries_total", "Queries by the asker's network (view), type and result (rcode, or where a forwarded answer came from)", &["view", "type", "result"])?;
        let upstream_seconds = m.histogram(
            "fieldnet_whereami_upstream_seconds",
            "Time the upstream resolvers took (misses of the cache)",
            vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
            ],
        )?;
        let cache_hits = m.counter(
            "fieldnet_whereami_cache_hits_total",
            "Forwarded questions answered from the cache, without asking upstream",
        )?;
        let upstream_failures = m.counter(
            "fieldnet_whereami_upstream_failures_total",
            "Questions no upstream answered (timeout, unreachable, failure)",
        )?;
        let answer_cache_hits = m.counter("fieldnet_whereami_answer_cache_hits_total", "UDP queries answered from the answer cache of finished responses (local and forwarded)")?;
        let spoofed = m.counter("fieldnet_whereami_spoofed_total", "UDP queries from a site address that arrived on an uplink (forged), dropped unanswered")?;
        let tcp_connections = m.gauge(
            "fieldnet_whereami_tcp_connections",
            "DNS-over-TCP connections open now",
        )?;
        let tcp_refused = m.counters(
            "fieldnet_whereami_tcp_refused_total",
            "DNS-over-TCP connections closed at once: over the cap per client or in total",
            &["reason"],
        )?;
        Ok(Metrics {
            queries,
            upstream_seconds,
            cache_hits,
            upstream_failures,
            answer_cache_hits,
            spoofed,
            tcp_connections,
            tcp_refused,
        })
    }
}

/// Shared by every listener.
#[derive(Debug)]
pub struct State {
    pub views: RwLock<Views>,
    pub forwarder: Forwarder,
    pub metrics: Metrics,
    pub answers: AnswerCache,
    /// The uplinks, where no site asker's query arrives.
    pub uplinks: crate::edge::uplinks::Uplinks,
}

/// What answering one request produced, beyond the response itself.
pub(crate) struct Answered {
    /// Whether the response may be served again from the answer cache.
    pub validity: Validity,
    /// The generation of the views it was decided under.
    pub generation: u64,
    /// What a hit on that cached response counts.
    pub on_hit: Vec<IntCounter>,
}

#[derive(Debug, Clone)]
pub struct Handler {
    pub state: Arc<State>,
}

impl Handler {
    /// Answers `request` through `response`.
    pub(crate) async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> Answered {
        let never = || Answered {
            validity: Validity::Never,
            generation: 0,
            on_hit: Vec::new(),
        };
        let edns = request.edns.as_ref().map(|requested| {
            let mut edns = Edns::new();
            edns.set_max_payload(requested.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            metadata.response_code = ResponseCode::FormErr;
            send(
                response
                    .send_response(builder.build_no_records(metadata))
                    .await,
            );
            return never();
        };
        let source = request.src().ip();
        let (name, original) = (info.query.name(), info.query.original().name());
        let (qtype, qclass) = (info.query.query_type(), info.query.query_class());
        // Read before the views: an answer is kept only under the views it was decided by.
        let generation = self.state.answers.generation();
        let (decision, view) = {
            let views = self.state.views.read().unwrap_or_else(|p| p.into_inner());
            let view = views.view_of(source).map_or_else(
                || {
                    if source.is_loopback() {
                        "local"
                    } else {
                        "outside"
                    }
                    .to_owned()
                },
                |v| v.name.clone(),
            );
            (views.decide(source, name, original, qtype, qclass), view)
        };
        let counter = |result: &str| {
            self.state.metrics.queries.with_label_values(&[
                view.as_str(),
                qtype.to_string().as_str(),
                result,
            ])
        };
        let validity;
        let mut on_hit = Vec::new();
        let (answers, authorities): (Vec<Record>, Vec<Record>) = match decision {
            Decision::Refused => {
                counter("refused").inc();
                metadata.response_code = ResponseCode::Refused;
                send(
                    response
                        .send_response(builder.build_no_records(metadata))
                        .await,
                );
                return never();
            }
            Decision::Local { code, answers, soa } => {
                let counter = counter(code.to_str());
                counter.inc();
                on_hit.push(counter);
                validity = Validity::UntilChange;
                metadata.authoritative = true;
                metadata.response_code = code;
                (answers, soa.into_iter().map(|soa| *soa).collect())
            }
            Decision::Forward => {
                let started = Instant::now();
                let forwarded = self.state.forwarder.resolve(name, qtype).await;
                if let Some(took) = forwarded.upstream_time {
                    self.state
                        .metrics
                        .upstream_seconds
                        .observe(took.as_secs_f64());
                }
                counter(match forwarded.source {
                    Source::Upstream => forwarded.code.to_str(),
                    other => other.as_str(),
                })
                .inc();
                match forwarded.source {
                    Source::Cache => self.state.metrics.cache_hits.inc(),
                    Source::Stale | Source::Failed if forwarded.upstream_time.is_some() => {
                        self.state.metrics.upstream_failures.inc();
                    }
                    _ => {}
                }
                validity = match (forwarded.source, forwarded.code) {
                    (
                        Source::Cache | Source::Upstream,
                        ResponseCode::NoError | ResponseCode::NXDomain,
                    ) => Validity::Ttl,
                    _ => Validity::Never,
                };
                on_hit.push(counter(Source::Cache.as_str()));
                on_hit.push(self.state.metrics.cache_hits.clone());
                if forwarded.source == Source::Stale {
                    tracing::debug!(%name, %qtype, waited_ms = started.elapsed().as_millis() as u64, "served stale");
                }
                metadata.response_code = forwarded.code;
                // The question is answered under the asker's spelling of the name.
                let rename = |records: Vec<Record>| -> Vec<Record> {
                    records
                        .into_iter()
                        .map(|mut record| {
                            if record.name == *original {
                                record.name = original.clone();
                            }
                            record
                        })
                        .collect()
                };
                (rename(forwarded.answers), forwarded.authorities)
            }
        };
        let message = builder.build(metadata, answers.iter(), authorities.iter(), [], []);
        send(response.send_response(message).await);
        on_hit.push(self.state.metrics.answer_cache_hits.clone());
        Answered {
            validity,
            generation,
            on_hit,
        }
    }
}

/// Says a response that could not be sent (nothing was captured: the caller answers SERVFAIL).
fn send(result: Result<ResponseInfo, hickory_server::net::NetError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "sending a DNS response");
    }
}
