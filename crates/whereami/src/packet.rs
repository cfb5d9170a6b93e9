//! The answer cache: finished UDP responses, kept as wire bytes and keyed by what decides them
//! (the asker's view, the question, the flags that shape the answer), so a repeated question
//! is answered by copying bytes instead of decoding, deciding and encoding again. PowerDNS's
//! packet cache is the model.
//!
//! Only plain queries take this path: one question, no answer or authority records, and no
//! additional record except an OPT without options. Anything else (EDNS cookies, client
//! subnet, updates, notifies) goes through hickory in full. A hit copies the stored response,
//! puts in the asker's id and the asker's spelling of the question (so 0x20 case randomisation
//! works and compressed owner names follow), and counts the TTLs down by the entry's age.
//!
//! Invariant: an entry is served only while every TTL in it is still positive, only to an asker
//! whose view produced it, only while the views are those it was made from (`generation`), and
//! only if it fits in what the asker accepts over UDP.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Longest key: view and flags, then a question (at most 255 bytes of name, type and class).
pub const MAX_KEY: usize = 2 + 255 + 4;
/// The size of a DNS header.
const HEADER: usize = 12;
/// RR type of EDNS's OPT pseudo-record.
const OPT: u16 = 41;
/// Largest UDP response without EDNS.
const PLAIN_UDP: usize = 512;

/// The flags of a request that shape its response, in the key.
const KEY_RD: u8 = 1;
const KEY_CD: u8 = 2;
const KEY_EDNS: u8 = 4;
const KEY_DO: u8 = 8;

/// A plain query, parsed just enough to find its answer in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The question (name, type, class) in the request: copied into the response.
    pub question: Range<usize>,
    /// Largest response the asker accepts over UDP.
    pub max_size: usize,
    /// Bytes of the key in the buffer given to [`parse`].
    pub key_len: usize,
}

/// Parses `packet` as a plain query from an asker in view `view`, writing its cache key into
/// `key`. `None`: not a plain query (it takes the full path).
pub fn parse(packet: &[u8], view: u8, max_payload: u16, key: &mut [u8; MAX_KEY]) -> Option<Query> {
    if packet.len() < HEADER + 5 {
        return None;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    // QR=0 (a query), opcode 0 (QUERY), TC=0; RD and CD are kept in the key, the rest ignored.
    if flags & 0xfa00 != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    if questions != 1 || answers != 0 || authorities != 0 || additionals > 1 {
        return None;
    }
    let mut at = HEADER;
    let mut key_len = 2;
    loop {
        let length = usize::from(*packet.get(at)?);
        if length == 0 {
            break;
        }
        // Compression pointers and extended labels have no place in a question, and a name
        // is at most 255 bytes with its final zero.
        if length > 63 || at + 1 + length >= packet.len() || at + 1 + length + 1 - HEADER > 255 {
            return None;
        }
        key[key_len] = length as u8;
        for (slot, byte) in key[key_len + 1..=key_len + length]
            .iter_mut()
            .zip(&packet[at + 1..=at + length])
        {
            *slot = byte.to_ascii_lowercase();
        }
        key_len += 1 + length;
        at += 1 + length;
    }
    let end = at + 1 + 4;
    if end > packet.len() {
        return None;
    }
    key[key_len] = 0;
    key[key_len + 1..key_len + 5].copy_from_slice(&packet[at + 1..end]);
    key_len += 5;

    let mut bits = 0;
    if flags & 0x0100 != 0 {
        bits |= KEY_RD;
    }
    if flags & 0x0010 != 0 {
        bits |= KEY_CD;
    }
    let mut max_size = PLAIN_UDP;
    if additionals == 1 {
        // Exactly an OPT at the root without options: name 0, type, payload, ext-rcode,
        // version, flags, rdlength 0.
        let opt = packet.get(end..)?;
        if opt.len() != 11 || opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != OPT {
            return None;
        }
        let payload = u16::from_be_bytes([opt[3], opt[4]]);
        if opt[5] != 0 || opt[6] != 0 || opt[9] != 0 || opt[10] != 0 {
            return None;
        }
        bits |= KEY_EDNS;
        if opt[7] & 0x80 != 0 {
            bits |= KEY_DO;
        }
        max_size = usize::from(payload.clamp(512, max_payload));
    } else if end != packet.len() {
        return None;
    }
    key[0] = view;
    key[1] = bits;
    Some(Query {
        question: HEADER..end,
        max_size,
        key_len,
    })
}

/// The TTL fields of every record in `response` except OPT: (offset, value). `None`: the
/// response does not parse.
pub fn ttl_fields(response: &[u8]) -> Option<Vec<(usize, u32)>> {
    let count = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *response.get(at)?,
            *response.get(at + 1)?,
        ])))
    };
    let (questions, records) = (count(4)?, count(6)? + count(8)? + count(10)?);
    let mut at = HEADER;
    for _ in 0..questions {
        at = skip_name(response, at)? + 4;
    }
    let mut fields = Vec::with_capacity(records);
    for _ in 0..records {
        at = skip_name(response, at)?;
        let rtype = u16::from_be_bytes([*response.get(at)?, *response.get(at + 1)?]);
        let ttl = response.get(at + 4..at + 8)?;
        if rtype != OPT {
            fields.push((at + 4, u32::from_be_bytes(ttl.try_into().ok()?)));
        }
        let length = count(at + 8)?;
        at += 10 + length;
    }
    (at == response.len()).then_some(fields)
}

/// The offset just past the name at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length {
            0 => return Some(at + 1),
            // A compression pointer ends the name.
            0xc0..=0xff => return Some(at + 2),
            1..=63 => at += 1 + usize::from(length),
            _ => return None,
        }
    }
}

/// How long a response may be served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Not at all (stale, failed, truncated or refused answers, errors).
    Never,
    /// Until the views change (local answers).
    UntilChange,
    /// While every TTL in it is still positive (forwarded answers).
    Ttl,
}

#[derive(Debug)]
struct Entry {
    response: Vec<u8>,
    ttls: Vec<(usize, u32)>,
    stored: Instant,
    /// Served until then (TTL entries) or forever (local ones).
    expires: Option<Instant>,
    generation: u64,
    /// Counted on every hit.
    counters: Vec<IntCounter>,
}

/// The cache. Bounded: when full, expired entries go, and if none had expired, all of them.
#[derive(Debug)]
pub struct AnswerCache {
    entries: RwLock<HashMap<Box<[u8]>, Entry>>,
    capacity: usize,
    generation: AtomicU64,
}

impl AnswerCache {
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            generation: AtomicU64::new(0),
        }
    }

    /// Forgets every entry made from the old views (call after changing them).
    pub fn views_changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The generation of the views now; give it back to [`insert`](Self::insert) for an
    /// answer decided after this call.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Writes the cached response to `query` (from `packet`, keyed in `key`) into `out`, and
    /// counts it. False: no usable entry.
    pub fn answer(
        &self,
        packet: &[u8],
        query: &Query,
        key: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get(key) else {
            return false;
        };
        if entry.generation != self.generation()
            || entry.expires.is_some_and(|expires| now >= expires)
            || entry.response.len() > query.max_size
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&entry.response);
        out[..2].copy_from_slice(&packet[..2]);
        out[query.question.clone()].copy_from_slice(&packet[query.question.clone()]);
        if entry.expires.is_some() {
            let age = now.saturating_duration_since(entry.stored).as_secs();
            let age = u32::try_from(age).unwrap_or(u32::MAX);
            for &(at, ttl) in &entry.ttls {
                out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
        }
        for counter in &entry.counters {
            counter.inc();
        }
        true
    }

    /// Keeps `response` (to a query keyed `key`, decided under views `generation`) if
    /// `validity` allows.
    pub fn insert(
        &self,
        key: &[u8],
        response: &[u8],
        validity: Validity,
        generation: u64,
        counters: Vec<IntCounter>,
        now: Instant,
    ) {
        // Truncated answers are retried over TCP; they are not worth keeping.
        if validity == Validity::Never || response.len() < HEADER || response[2] & 0x02 != 0 {
            return;
        }
        let Some(ttls) = ttl_fields(response) else {
            return;
        };
        let expires = match validity {
            Validity::Ttl => {
                let Some(lowest) = ttls.iter().map(|&(_, ttl)| ttl).min() else {
                    return;
                };
                if lowest == 0 {
                    return;
                }
                Some(now + Duration::from_secs(u64::from(lowest)))
            }
            _ => None,
        };
        let entry = Entry {
            response: response.to_vec(),
            ttls,
            stored: now,
            expires,
            generation,
            counters,
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            let current = self.generation();
            entries.retain(|_, e| {
                e.generation == current && e.expires.is_none_or(|expires| now < expires)
            });
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key.into(), entry);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as Question};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn request(name: &str, edns: Option<Edns>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Question::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        if let Some(edns) = edns {
            message.edns = Some(edns);
        }
        message.to_vec().unwrap()
    }

    fn response(name: &str, ttl: u32) -> Vec<u8> {
        let mut message = Message::response(0, OpCode::Query);
        message.metadata.message_type = MessageType::Response;
        message.metadata.recursion_desired = true;
        let name = Name::from_ascii(name).unwrap();
        message.add_query(Question::query(name.clone(), RecordType::A));
        message.add_answer(Record::from_rdata(
            name.clone(),
            ttl,
            RData::A(A::new(192, 0, 2, 80)),
        ));
        message.add_answer(Record::from_rdata(
            name.clone(),
            ttl + 100,
            RData::A(A::new(192, 0, 2, 81)),
        ));
        message.add_authority(Record::from_rdata(
            Name::from_ascii("example.org.").unwrap(),
            ttl + 200,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.example.org.").unwrap(),
                Name::from_ascii("host.example.org.").unwrap(),
                1,
                2,
                3,
                4,
                5,
            )),
        ));
        message.to_vec().unwrap()
    }

    fn parsed(packet: &[u8]) -> Option<(Query, Vec<u8>)> {
        let mut key = [0; MAX_KEY];
        parse(packet, 3, 1232, &mut key).map(|q| {
            let key = key[..q.key_len].to_vec();
            (q, key)
        })
    }

    #[test]
    fn a_plain_query_is_keyed_by_view_flags_and_lowercased_question() {
        let (query, key) = parsed(&request("WWW.Example.ORG.", None)).unwrap();
        assert_eq!(query.max_size, 512);
        assert_eq!(key[0], 3, "view");
        assert_eq!(key[1], KEY_RD);
        let (_, same) = parsed(&request("www.example.org.", None)).unwrap();
        assert_eq!(key, same, "case does not split the cache");
        assert_eq!(&key[2..6], b"\x03www");
    }

    #[test]
    fn edns_sets_the_size_and_the_key_and_options_take_the_full_path() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        let (query, key) = parsed(&request("www.example.org.", Some(edns.clone()))).unwrap();
        assert_eq!(query.max_size, 1232, "capped at what the server offers");
        assert_eq!(key[1], KEY_RD | KEY_EDNS);
        edns.set_dnssec_ok(true);
        let (_, key) = parsed(&request("www.example.org.", Some(edns))).unwrap();
        assert_eq!(key[1], KEY_RD | KEY_EDNS | KEY_DO);

        // An option (a cookie, say) after the OPT header: not plain.
        let mut packet = request("www.example.org.", Some(Edns::new()));
        let rdlength = packet.len() - 2;
        packet[rdlength + 1] = 8;
        packet.extend_from_slice(&[0, 10, 0, 4, 1, 2, 3, 4]);
        assert!(parsed(&packet).is_none());
    }

    #[test]
    fn what_is_not_a_plain_query_takes_the_full_path() {
        let plain = request("www.example.org.", None);
        assert!(parsed(&plain[..plain.len() - 1]).is_none(), "cut short");
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(parsed(&response).is_none(), "a response");
        let mut notify = plain.clone();
        notify[2] |= 4 << 3;
        assert!(parsed(&notify).is_none(), "another opcode");
        let mut trailing = plain.clone();
        trailing.push(0);
        assert!(parsed(&trailing).is_none(), "bytes after the question");
        let mut pointer = plain.clone();
        pointer[12] = 0xc0;
        assert!(parsed(&pointer).is_none(), "a compressed question");
        assert!(parsed(&[0; 11]).is_none());
    }

    #[test]
    fn names_longer_than_255_bytes_take_the_full_path() {
        // 3 × 64 + 63 bytes fit; one more label would run past the key (found by the fuzzer).
        let mut packet = request("a.", None);
        let question_end = packet.len() - 4;
        let mut name = Vec::new();
        for length in [63, 63, 63, 62, 63] {
            name.push(length);
            name.extend_from_slice(&vec![b'x'; usize::from(length)]);
        }
        name.push(0);
        packet.splice(12..question_end, name.iter().copied());
        assert!(parsed(&packet).is_none());
        // The longest legal name fits the key.
        let mut packet = request("a.", None);
        let question_end = packet.len() - 4;
        let mut name = Vec::new();
        for _ in 0..3 {
            name.push(63);
            name.extend_from_slice(&[b'x'; 63]);
        }
        name.push(61);
        name.extend_from_slice(&[b'y'; 61]);
        name.push(0);
        assert_eq!(name.len(), 255);
        packet.splice(12..question_end, name.iter().copied());
        let (query, _) = parsed(&packet).unwrap();
        assert_eq!(query.key_len, MAX_KEY);
    }

    #[test]
    fn ttl_fields_are_found_through_compressed_names() {
        let bytes = response("www.example.org.", 300);
        let fields = ttl_fields(&bytes).unwrap();
        let ttls: Vec<u32> = fields.iter().map(|&(_, t)| t).collect();
        assert_eq!(ttls, [300, 400, 500]);
        for (at, ttl) in fields {
            assert_eq!(
                u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()),
                ttl
            );
        }
        assert!(ttl_fields(&bytes[..bytes.len() - 1]).is_none());
    }

    fn counter() -> IntCounter {
        IntCounter::new("hits", "test").unwrap()
    }

    #[test]
    fn a_hit_takes_the_askers_id_and_spelling_and_counts_ttls_down() {
        let cache = AnswerCache::new(10);
        let stored = Instant::now();
        let asked = request("www.example.org.", None);
        let (query, key) = parsed(&asked).unwrap();
        let hits = counter();
        cache.insert(
            &key,
            &response("www.example.org.", 300),
            Validity::Ttl,
            cache.generation(),
            vec![hits.clone()],
            stored,
        );

        let mut asked = request("WwW.example.ORG.", None);
        asked[..2].copy_from_slice(&[0xab, 0xcd]);
        let mut out = Vec::new();
        let later = stored + Duration::from_secs(100);
        assert!(cache.answer(&asked, &query, &key, later, &mut out));
        let message = Message::from_vec(&out).unwrap();
        assert_eq!(message.metadata.id, 0xabcd);
        assert_eq!(message.queries[0].name().to_string(), "WwW.example.ORG.");
        let ttls: Vec<u32> = message
            .answers
            .iter()
            .chain(&message.authorities)
            .map(|r| r.ttl)
            .collect();
        assert_eq!(ttls, [200, 300, 400]);
        assert_eq!(hits.get(), 1);

        // Once the lowest TTL has run out, the entry is gone.
        assert!(!cache.answer(
            &asked,
            &query,
            &key,
            stored + Duration::from_secs(300),
            &mut out
        ));
    }

    #[test]
    fn local_answers_last_until_the_views_change_and_never_overflow_the_asker() {
        let cache = AnswerCache::new(10);
        let now = Instant::now();
        let asked = request("www.example.org.", None);
        let (query, key) = parsed(&asked).unwrap();
        cache.insert(
            &key,
            &response("www.example.org.", 0),
            Validity::UntilChange,
            cache.generation(),
            Vec::new(),
            now,
        );
        let mut out = Vec::new();
        let much_later = now + Duration::from_secs(86_400);
        assert!(cache.answer(&asked, &query, &key, much_later, &mut out));
        let small = Query {
            max_size: out.len() - 1,
            ..query.clone()
        };
        assert!(!cache.answer(&asked, &small, &key, much_later, &mut out));
        cache.views_changed();
        assert!(!cache.answer(&asked, &query, &key, much_later, &mut out));
    }

    #[test]
    fn what_must_not_be_kept_is_not() {
        let cache = AnswerCache::new(10);
        let now = Instant::now();
        let (_, key) = parsed(&request("www.example.org.", None)).unwrap();
        let good = response("www.example.org.", 300);
        cache.insert(&key, &good, Validity::Never, 0, Vec::new(), now);
        cache.insert(
            &key,
            &response("www.example.org.", 0),
            Validity::Ttl,
            0,
            Vec::new(),
            now,
        );
        let mut truncated = good.clone();
        truncated[2] |= 0x02;
        cache.insert(&key, &truncated, Validity::Ttl, 0, Vec::new(), now);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_everything() {
        let cache = AnswerCache::new(2);
        let now = Instant::now();
        let key = |name: &str| parsed(&request(name, None)).unwrap().1;
        let put = |name: &str, ttl: u32, at: Instant| {
            cache.insert(
                &key(name),
                &response(name, ttl),
                Validity::Ttl,
                0,
                Vec::new(),
                at,
            );
        };
        put("a.example.org.", 1, now);
        put("b.example.org.", 300, now);
        put("c.example.org.", 300, now + Duration::from_secs(2));
        assert_eq!(cache.len(), 2, "a expired and made room");
        put("d.example.org.", 300, now + Duration::from_secs(2));
        assert_eq!(cache.len(), 1, "nothing had expired: all went");
    }
}
