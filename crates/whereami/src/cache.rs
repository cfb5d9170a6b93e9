//! The forwarding cache: answers from the upstreams, served until their TTL runs out, and after
//! that only while no upstream answers, for up to `serve_stale` (RFC 8767: uplinks drop, and a
//! stale address beats no address).
//!
//! Invariant: a fresh hit's records carry their remaining TTL; a stale one's carry
//! [`STALE_TTL`], so clients come back soon.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RData, Record, RecordType};

/// TTL of records served stale (RFC 8767 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// No entry is trusted for longer than a day, whatever its TTL says.
const MAX_TTL: u32 = 86_400;
/// Negative answers without an SOA to tell their TTL are kept this long.
const DEFAULT_NEGATIVE_TTL: u32 = 60;

/// The key: name and type (class is always IN here).
pub type Key = (LowerName, RecordType);

/// One upstream answer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub stored: Instant,
    pub ttl: Duration,
}

impl Entry {
    /// An entry for an upstream answer received `now`; its lifetime is the smallest TTL of the
    /// answers, or of a negative answer the SOA's (RFC 2308).
    pub fn new(
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        now: Instant,
    ) -> Entry {
        let ttl = if answers.is_empty() {
            authorities
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
                .min()
                .unwrap_or(DEFAULT_NEGATIVE_TTL)
        } else {
            answers.iter().map(|r| r.ttl).min().unwrap_or(0)
        };
        Entry {
            code,
            answers,
            authorities,
            stored: now,
            ttl: Duration::from_secs(u64::from(ttl.min(MAX_TTL))),
        }
    }
}

/// What the cache has for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Hit {
    /// Still within its TTL: records with the remaining TTL.
    Fresh(Entry),
    /// Expired, but within the serve-stale window: records with [`STALE_TTL`].
    Stale(Entry),
    Miss,
}

/// A bounded cache (moka: concurrent, evicts the least used when full).
#[derive(Debug)]
pub struct Cache {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    serve_stale: Duration,
}

impl Cache {
    pub fn new(capacity: u64, serve_stale: Duration) -> Cache {
        Cache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(u64::from(MAX_TTL)) + serve_stale)
                .build(),
            serve_stale,
        }
    }

    pub fn get(&self, key: &Key, now: Instant) -> Hit {
        let Some(entry) = self.entries.get(key) else {
            return Hit::Miss;
        };
        let age = now.saturating_duration_since(entry.stored);
        if age < entry.ttl {
            let elapsed = age.as_secs() as u32;
            Hit::Fresh(with_ttl(&entry, |ttl| ttl.saturating_sub(elapsed).max(1)))
        } else if age < entry.ttl + self.serve_stale {
            Hit::Stale(with_ttl(&entry, |_| STALE_TTL))
        } else {
            Hit::Miss
        }
    }

    pub fn put(&self, key: Key, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
    }
}

fn with_ttl(entry: &Entry, ttl: impl Fn(u32) -> u32) -> Entry {
    let adjust = |records: &[Record]| -> Vec<Record> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = ttl(r.ttl);
                r
            })
            .collect()
    };
    Entry {
        code: entry.code,
        answers: adjust(&entry.answers),
        authorities: adjust(&entry.authorities),
        stored: entry.stored,
        ttl: entry.ttl,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(name("example.org."), ttl, RData::A(A::new(192, 0, 2, 80)))
    }

    fn key() -> Key {
        (LowerName::from(name("example.org.")), RecordType::A)
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = Cache::new(100, Duration::from_secs(600));
        let t0 = Instant::now();
        cache.put(
            key(),
            Entry::new(ResponseCode::NoError, vec![a(300), a(120)], vec![], t0),
        );
        let Hit::Fresh(fresh) = cache.get(&key(), t0 + Duration::from_secs(20)) else {
            panic!("fresh")
        };
        assert_eq!(
            fresh.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [280, 100]
        );
        // The entry lives as long as its shortest TTL.
        let Hit::Stale(stale) = cache.get(&key(), t0 + Duration::from_secs(120)) else {
            panic!("stale")
        };
        assert!(stale.answers.iter().all(|r| r.ttl == STALE_TTL));
        assert_eq!(cache.get(&key(), t0 + Duration::from_secs(720)), Hit::Miss);
    }

    #[test]
    fn negative_answers_live_as_long_as_the_soa_says() {
        let soa = Record::from_rdata(
            name("org."),
            900,
            RData::SOA(SOA::new(
                name("a0.org."),
                name("h.org."),
                1,
                1800,
                900,
                604_800,
                45,
            )),
        );
        let entry = Entry::new(ResponseCode::NXDomain, vec![], vec![soa], Instant::now());
        assert_eq!(entry.ttl, Duration::from_secs(45));
        let bare = Entry::new(ResponseCode::NXDomain, vec![], vec![], Instant::now());
        assert_eq!(
            bare.ttl,
            Duration::from_secs(u64::from(DEFAULT_NEGATIVE_TTL))
        );
    }

    #[test]
    fn no_entry_outlives_a_day() {
        let entry = Entry::new(
            ResponseCode::NoError,
            vec![a(10_000_000)],
            vec![],
            Instant::now(),
        );
        assert_eq!(entry.ttl, Duration::from_secs(86_400));
    }
}
