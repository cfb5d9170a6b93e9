//! The peer API between appliances: what one appliance asks another (`GET /dhcp/v1/sync`: the
//! lease records changed since a change number, and the answering appliance's status) and how
//! both directions are authenticated with the site key.
//!
//! Replication is pulled: each appliance asks every peer for what changed, every
//! [`SYNC_INTERVAL`] and at once when the peer nudges it (`POST /dhcp/v1/nudge`, sent after
//! every group commit). A pull after a partition is the same pull with an older change number,
//! so resync needs no second mechanism; a peer that restarted (another `epoch`) sends
//! everything.
//!
//! Invariants:
//! - A request carries an HMAC-SHA-256 tag of its path and query under the site key; a reply
//!   carries a tag of the request's fresh random nonce and the body. A reply is therefore
//!   believed only if it was made by a holder of the site key for this very request: an old
//!   reply replayed, or a reply altered, is refused.
//! - A request also carries its sender's clock (`ts`, signed with the rest): one older or newer
//!   than [`FRESH_WINDOW`] is refused, and so is one whose nonce was seen within it, so a
//!   request recorded on the way cannot be played again to read the lease table. `from` must
//!   be a configured peer.
//! - Nothing is trusted by source address alone, though the listener only takes connections
//!   from the peers' path addresses and loopback (see `replicate`).

use std::net::Ipv4Addr;
use std::time::Duration;

use fieldnet::auth::SiteAuth;
use fieldnet::config::PathKind;
use serde::{Deserialize, Serialize};

use crate::lease::Lease;

/// How often every peer is asked for changes when nothing nudges.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// How long one request may take before the peer counts as not answering.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);
/// Most records in one reply; the asker asks again at once when `more` is set.
pub const MAX_RECORDS: usize = 2000;
/// How far a request's clock may be from ours (either way); appliances without a clock source
/// further apart than this do not replicate (and say so), but are never taken for dead by it.
pub const FRESH_WINDOW: Duration = Duration::from_secs(300);
/// Largest reply body a peer may send (a full reply of `MAX_RECORDS` is far below this).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;
/// Header carrying the tag, on requests and replies.
pub const TAG_HEADER: &str = "x-fieldnet-tag";
pub const SYNC_PATH: &str = "/dhcp/v1/sync";
pub const NUDGE_PATH: &str = "/dhcp/v1/nudge";

/// The site key as the peer API uses it.
#[derive(Clone, Debug)]
pub struct PeerKey(SiteAuth);

impl PeerKey {
    pub fn new(site_key: &[u8]) -> Self {
        Self(SiteAuth::new(site_key, b"fieldnet dhcp v1\0"))
    }

    /// The tag of a request for `path_and_query`.
    pub fn sign_request(&self, path_and_query: &str) -> String {
        hex(&self.0.tag(&[b"request\0", path_and_query.as_bytes()]))
    }

    pub fn verify_request(&self, path_and_query: &str, tag: &str) -> bool {
        unhex(tag).is_some_and(|tag| {
            tag.len() == 32
                && self
                    .0
                    .verify(&[b"request\0", path_and_query.as_bytes()], &tag)
        })
    }

    /// The tag of a reply with `body` to the request that carried `nonce`.
    pub fn sign_reply(&self, nonce: &str, body: &[u8]) -> String {
        hex(&self.0.tag(&[b"reply\0", nonce.as_bytes(), b"\0", body]))
    }

    pub fn verify_reply(&self, nonce: &str, body: &[u8], tag: &str) -> bool {
        unhex(tag).is_some_and(|tag| {
            tag.len() == 32
                && self
                    .0
                    .verify(&[b"reply\0", nonce.as_bytes(), b"\0", body], &tag)
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// A fresh random nonce for one request.
pub fn nonce() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The path and query of a sync request from appliance `from`, which has everything of the
/// asked appliance's generation `epoch` up to change `since`, sent at `ts` (milliseconds since
/// the Unix epoch).
pub fn sync_query(from: u8, epoch: u64, since: u64, nonce: &str, ts: u64) -> String {
    format!("{SYNC_PATH}?from={from}&epoch={epoch}&since={since}&nonce={nonce}&ts={ts}")
}

pub fn nudge_query(from: u8, nonce: &str, ts: u64) -> String {
    format!("{NUDGE_PATH}?from={from}&nonce={nonce}&ts={ts}")
}

/// Why a signed request is refused although its tag is right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// Its clock is this many milliseconds from ours (positive: ahead).
    Clock(i64),
    /// Its nonce was used before.
    Replayed,
}

/// The nonces of the requests taken within the last [`FRESH_WINDOW`]: a request is taken once.
#[derive(Debug, Default)]
pub struct Freshness {
    seen: std::collections::HashMap<String, u64>,
}

impl Freshness {
    /// Most nonces remembered; peers pull a few times a second, so this is never reached by
    /// them, and a flood of signed requests (from a key holder) cannot grow it without bound.
    const MAX_REMEMBERED: usize = 100_000;

    /// Takes a request with `params` at `now` (ms), or says why not.
    pub fn check(&mut self, params: &SyncParams, now: u64) -> Result<(), Stale> {
        let window = FRESH_WINDOW.as_millis() as u64;
        if params.ts.abs_diff(now) > window {
            let skew = i128::from(params.ts) - i128::from(now);
            return Err(Stale::Clock(
                skew.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            ));
        }
        if self.seen.len() >= Self::MAX_REMEMBERED {
            self.seen
                .retain(|_, at| now.saturating_sub(*at) <= 2 * window);
        }
        if self.seen.contains_key(&params.nonce) {
            return Err(Stale::Replayed);
        }
        if self.seen.len() >= Self::MAX_REMEMBERED {
            // Still full of fresh nonces: refuse rather than forget one that could be replayed.
            return Err(Stale::Replayed);
        }
        self.seen.insert(params.nonce.clone(), now);
        Ok(())
    }
}

/// The parameters of a sync or nudge request, parsed from its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncParams {
    pub from: u8,
    pub epoch: u64,
    pub since: u64,
    pub nonce: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub ts: u64,
}

impl SyncParams {
    /// `from`, `nonce` and `ts` are required; `epoch` and `since` default to 0. `None` when a
    /// required one is missing or a number does not parse, or the nonce is not 8 to 64 hex
    /// digits.
    pub fn parse(query: &str) -> Option<Self> {
        let (mut from, mut epoch, mut since, mut nonce, mut ts) = (None, 0, 0, None, None);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "from" => from = Some(value.parse().ok()?),
                "epoch" => epoch = value.parse().ok()?,
                "since" => since = value.parse().ok()?,
                "nonce" => nonce = Some(value.into_owned()),
                "ts" => ts = Some(value.parse().ok()?),
                _ => {}
            }
        }
        let nonce = nonce
            .filter(|n| (8..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_hexdigit()))?;
        Some(Self {
            from: from?,
            epoch,
            since,
            nonce,
            ts: ts?,
        })
    }
}

/// The answer to a sync request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// The answering appliance.
    pub from: u8,
    /// Its generation of change numbers (it restarts numbering when it restarts).
    pub epoch: u64,
    /// The number of the last change included.
    pub cursor: u64,
    /// The records changed after the asked number (all, when the asker's epoch is not this
    /// one), oldest change first.
    pub records: Vec<Lease>,
    /// More changes wait: ask again at once.
    pub more: bool,
    pub status: PeerStatus,
}

/// What an appliance tells its peers about itself with every sync reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Networks it answers DHCP on now, with the appliance each belongs to.
    pub serving: Vec<Served>,
    /// Networks of other appliances it has an interface on (could take over).
    pub legs: Vec<String>,
    /// Its own networks it is waiting to get back from a peer serving them.
    pub wants_back: Vec<String>,
    /// What it has stored durably from each peer: that peer's epoch and change number.
    pub synced: Vec<Synced>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub network: String,
    pub owner: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub peer: u8,
    pub epoch: u64,
    pub cursor: u64,
}

impl PeerStatus {
    pub fn serves(&self, network: &str) -> bool {
        self.serving.iter().any(|s| s.network == network)
    }

    pub fn synced_from(&self, peer: u8) -> Option<Synced> {
        self.synced.iter().find(|s| s.peer == peer).copied()
    }
}

/// The addresses a peer is tried on, most likely first: the path the bus says is active,
/// then the others in configured order.
pub fn addresses(paths: &[(PathKind, Ipv4Addr)], active: Option<PathKind>) -> Vec<Ipv4Addr> {
    let mut ordered: Vec<Ipv4Addr> = paths
        .iter()
        .filter(|(kind, _)| Some(*kind) == active)
        .map(|(_, address)| *address)
        .collect();
    for (_, address) in paths {
        if !ordered.contains(address) {
            ordered.push(*address);
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's tag is HMAC-SHA-256 over the domain, "request\0" and the path (computed
    /// independently, with Python's hmac): builds of either side interoperate.
    #[test]
    fn the_request_tag_is_the_documented_hmac() {
        let key = PeerKey::new(&[7; 32]);
        let path = "/dhcp/v1/sync?from=2&nonce=0011223344556677&ts=5";
        assert_eq!(
            key.sign_request(path),
            "717e66661bf2eaa3eb13acd85984344e7631a9948d9fee0421f3d64e2e9e958a"
        );
        assert!(key.verify_request(path, &key.sign_request(path)));
        assert!(
            !key.verify_request(path, &key.sign_request(path)[..32]),
            "cut short"
        );
    }

    #[test]
    fn requests_verify_only_unaltered_under_the_site_key() {
        let key = PeerKey::new(&[7; 32]);
        let query = sync_query(1, 42, 17, "00ff00ff", 5);
        let tag = key.sign_request(&query);
        assert!(key.verify_request(&query, &tag));
        assert!(!key.verify_request(&query.replace("since=17", "since=0"), &tag));
        assert!(!PeerKey::new(&[8; 32]).verify_request(&query, &tag));
        assert!(!key.verify_request(&query, "zz"));
        assert!(!key.verify_request(&query, ""));
        assert!(!key.verify_request(&query, &tag[..30]));
    }

    #[test]
    fn replies_are_bound_to_their_request_nonce() {
        let key = PeerKey::new(&[7; 32]);
        let body = br#"{"from":2}"#;
        let tag = key.sign_reply("aaaa", body);
        assert!(key.verify_reply("aaaa", body, &tag));
        assert!(
            !key.verify_reply("bbbb", body, &tag),
            "replayed to another request"
        );
        assert!(!key.verify_reply("aaaa", br#"{"from":3}"#, &tag), "altered");
        // The request and reply tags are not interchangeable.
        assert!(!key.verify_request("aaaa", &tag));
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn queries_parse_back() {
        let query = sync_query(3, 42, 17, "00ff00ff", 1_800_000_000_000);
        let params = SyncParams::parse(query.split_once('?').unwrap().1).unwrap();
        assert_eq!(
            params,
            SyncParams {
                from: 3,
                epoch: 42,
                since: 17,
                nonce: "00ff00ff".into(),
                ts: 1_800_000_000_000,
            }
        );
        let nudge = nudge_query(2, "abababab", 9);
        assert_eq!(
            SyncParams::parse(nudge.split_once('?').unwrap().1)
                .unwrap()
                .since,
            0
        );
        assert_eq!(SyncParams::parse("from=300&nonce=abababab&ts=1"), None);
        assert_eq!(SyncParams::parse("from=1&ts=1"), None);
        assert_eq!(SyncParams::parse("from=1&nonce=abababab"), None, "no clock");
        assert_eq!(
            SyncParams::parse("from=1&nonce=ab&ts=1"),
            None,
            "short nonce"
        );
        assert_eq!(SyncParams::parse("from=1&nonce=zzzzzzzz&ts=1"), None);
        assert_eq!(
            SyncParams::parse("from=1&nonce=abababab&ts=1&since=x"),
            None
        );
    }

    /// Audit finding 8 (replay): a signed request could be replayed for ever and returned the
    /// whole lease table. Now a request is taken once, and only near our clock.
    #[test]
    fn peer_api_a_signed_request_is_taken_once_and_only_while_fresh() {
        const NOW: u64 = 1_800_000_000_000;
        let window = FRESH_WINDOW.as_millis() as u64;
        let params = |nonce: &str, ts: u64| {
            SyncParams::parse(sync_query(2, 0, 0, nonce, ts).split_once('?').unwrap().1).unwrap()
        };
        let mut fresh = Freshness::default();
        assert_eq!(fresh.check(&params("a1a1a1a1", NOW), NOW), Ok(()));
        assert_eq!(
            fresh.check(&params("a1a1a1a1", NOW), NOW + 10),
            Err(Stale::Replayed)
        );
        assert_eq!(fresh.check(&params("b2b2b2b2", NOW - window), NOW), Ok(()));
        assert_eq!(
            fresh.check(&params("c3c3c3c3", NOW - window - 1), NOW),
            Err(Stale::Clock(-(window as i64) - 1))
        );
        assert_eq!(
            fresh.check(&params("d4d4d4d4", NOW + 3_600_000), NOW),
            Err(Stale::Clock(3_600_000))
        );
    }

    #[test]
    fn the_active_path_is_tried_first() {
        let paths = [
            (PathKind::Cable, Ipv4Addr::new(10, 255, 12, 2)),
            (PathKind::Wifi, Ipv4Addr::new(10, 254, 12, 2)),
        ];
        assert_eq!(addresses(&paths, None), [paths[0].1, paths[1].1]);
        assert_eq!(
            addresses(&paths, Some(PathKind::Wifi)),
            [paths[1].1, paths[0].1]
        );
    }

    #[test]
    fn status_round_trips_and_answers() {
        let status = PeerStatus {
            serving: vec![Served {
                network: "NETWORK2".into(),
                owner: 2,
            }],
            legs: vec!["NETWORK2".into()],
            wants_back: vec![],
            synced: vec![Synced {
                peer: 2,
                epoch: 5,
                cursor: 9,
            }],
        };
        let text = serde_json::to_string(&status).unwrap();
        let back: PeerStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        assert!(back.serves("NETWORK2"));
        assert!(!back.serves("NETWORK1"));
        assert_eq!(back.synced_from(2).map(|s| s.cursor), Some(9));
        assert_eq!(back.synced_from(3), None);
    }
}
