//! Leases: the record of which client holds which address until when, as stored in the lease
//! log and sent to the peers, and the table that indexes them by address and by client.
//!
//! Invariant: the table holds at most one record per address, and a client's index entry points
//! at the newest record that names it. A record is replaced only by a newer one (`updated`,
//! then the issuing appliance), so applying the same records in any order gives the same table.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What a client is known by: its client identifier (option 61) when it sends one, else its
/// hardware type and address, as RFC 2132 suggests.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub Vec<u8>);

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_hex(&text).map(ClientId).ok_or_else(|| {
            serde::de::Error::custom(format!("'{text}' is not hex bytes like 01:02:0a"))
        })
    }
}

/// A hardware (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_hex(&text)
            .and_then(|bytes| <[u8; 6]>::try_from(bytes).ok())
            .map(Mac)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a MAC address")))
    }
}

/// Hex bytes as written by `Display`; the empty string is no bytes (quarantine records name
/// no client).
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    fieldnet::names::parse_hex_bytes(text)
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// The client holds the address until `expires`.
    Bound,
    /// The client gave the address back; it stays associated with the client so it gets it
    /// again, but anyone may now be given it.
    Released,
    /// A client reported the address in use by someone else (DHCPDECLINE), or the conflict
    /// check found it answering: nobody gets it until `expires`.
    Declined,
}

/// One address's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub network: String,
    pub client: ClientId,
    pub mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub state: LeaseState,
    /// Milliseconds since the Unix epoch: the end of the lease (bound), of the quarantine
    /// (declined), or the moment of release.
    pub expires: u64,
    /// Milliseconds since the Unix epoch when this record was made; the newer record wins.
    pub updated: u64,
    /// The appliance that made this record.
    pub issued_by: u8,
}

impl Lease {
    /// Whether the client holds the address at `now`.
    pub fn is_bound(&self, now: u64) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }

    /// Whether nobody may be given the address at `now` (other than its own client, for a
    /// bound lease).
    pub fn blocks(&self, now: u64) -> bool {
        match self.state {
            LeaseState::Bound | LeaseState::Declined => self.expires > now,
            LeaseState::Released => false,
        }
    }

    /// Whether this record should replace `other` (for the same address).
    pub fn supersedes(&self, other: &Lease) -> bool {
        (self.updated, std::cmp::Reverse(self.issued_by))
            > (other.updated, std::cmp::Reverse(other.issued_by))
    }
}

/// The answer to "what changed since": the records, the change number they reach, and whether
/// more remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub records: Vec<Lease>,
    pub cursor: u64,
    pub more: bool,
}

/// Every known record, by address, with an index by network and client, and a change journal
/// (a sequence number per stored record) so peers can ask for what changed since they last
/// asked.
#[derive(Debug, Default, Clone)]
pub struct Leases {
    by_address: BTreeMap<Ipv4Addr, Lease>,
    by_client: HashMap<String, HashMap<ClientId, Ipv4Addr>>,
    /// The last change number given out (0: none yet).
    cursor: u64,
    /// The address of each change number still current; a newer change of the same address
    /// removes its older number.
    changes: BTreeMap<u64, Ipv4Addr>,
    change_of: HashMap<Ipv4Addr, u64>,
}

impl Leases {
    pub fn get(&self, address: Ipv4Addr) -> Option<&Lease> {
        self.by_address.get(&address)
    }

    /// The newest record naming `client` on `network`.
    pub fn of_client(&self, network: &str, client: &ClientId) -> Option<&Lease> {
        let address = self.by_client.get(network)?.get(client)?;
        self.by_address
            .get(address)
            .filter(|lease| &lease.client == client)
    }

    /// The records of the addresses `start..=end`, in address order.
    pub fn in_range(&self, start: Ipv4Addr, end: Ipv4Addr) -> impl Iterator<Item = &Lease> {
        self.by_address.range(start..=end).map(|(_, lease)| lease)
    }

    /// The `updated` stamp for a new record of `address` made at `now`: `now`, or just after
    /// the record it replaces when the clock says otherwise (stepped back, or the same
    /// millisecond), so a new record always supersedes the old one.
    pub fn stamp(&self, address: Ipv4Addr, now: u64) -> u64 {
        self.by_address
            .get(&address)
            .map_or(now, |existing| now.max(existing.updated + 1))
    }

    /// Stores `lease` unless a newer record for its address is already here; says whether it
    /// was stored.
    pub fn apply(&mut self, lease: Lease) -> bool {
        if let Some(existing) = self.by_address.get(&lease.address)
            && !lease.supersedes(existing)
        {
            return false;
        }
        let index = self.by_client.entry(lease.network.clone()).or_default();
        let newer_elsewhere = index
            .get(&lease.client)
            .and_then(|address| self.by_address.get(address))
            .is_some_and(|other| {
                other.address != lease.address
                    && other.client == lease.client
                    && other.updated > lease.updated
            });
        if !newer_elsewhere {
            index.insert(lease.client.clone(), lease.address);
        }
        let address = lease.address;
        self.by_address.insert(address, lease);
        self.touch(address);
        true
    }

    /// Puts `address` back to `to` (an older record, or none), whatever is there now: a record
    /// decided here that could not be stored is taken back. A change like any other for
    /// [`changed_since`](Self::changed_since).
    pub fn revert(&mut self, address: Ipv4Addr, to: Option<Lease>) {
        if let Some(current) = self.by_address.remove(&address)
            && let Some(index) = self.by_client.get_mut(&current.network)
            && index.get(&current.client) == Some(&address)
        {
            index.remove(&current.client);
        }
        if let Some(lease) = to {
            self.by_client
                .entry(lease.network.clone())
                .or_default()
                .entry(lease.client.clone())
                .or_insert(address);
            self.by_address.insert(address, lease);
        }
        self.touch(address);
    }

    /// Gives `address` a new change number, so a peer that asked before hears of it again.
    pub fn touch(&mut self, address: Ipv4Addr) {
        self.cursor += 1;
        if let Some(previous) = self.change_of.insert(address, self.cursor) {
            self.changes.remove(&previous);
        }
        self.changes.insert(self.cursor, address);
    }

    /// The number of the last change stored here.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The current record of every address changed after change `since` (0: everything),
    /// oldest change first, at most `limit` of them: what a peer that has everything up to
    /// `since` asks for.
    pub fn changed_since(&self, since: u64, limit: usize) -> Changes {
        let mut changes = Changes {
            records: Vec::new(),
            cursor: self.cursor,
            more: false,
        };
        let newer = self
            .changes
            .range(since.saturating_add(1)..)
            .filter_map(|(change, address)| Some((*change, self.by_address.get(address)?)));
        for (change, lease) in newer {
            if changes.records.len() == limit {
                changes.more = true;
                break;
            }
            changes.records.push(lease.clone());
            changes.cursor = change;
        }
        if !changes.more {
            // Nothing left to send: the asker has everything up to the last change here.
            changes.cursor = self.cursor;
        }
        changes
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_address.values()
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: u8, client: u8, updated: u64, issued_by: u8) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 101, 0, address),
            network: "NETWORK1".to_owned(),
            client: ClientId(vec![1, 2, client]),
            mac: Mac([2, 0, 0, 0, 0, client]),
            hostname: None,
            class: None,
            state: LeaseState::Bound,
            expires: updated + 3_600_000,
            updated,
            issued_by,
        }
    }

    #[test]
    fn newer_records_win_in_any_order() {
        let records = [
            lease(10, 1, 100, 1),
            lease(10, 2, 200, 2),
            lease(10, 3, 200, 1),
        ];
        let mut forward = Leases::default();
        let mut backward = Leases::default();
        for record in &records {
            forward.apply(record.clone());
        }
        for record in records.iter().rev() {
            backward.apply(record.clone());
        }
        // Same time: the lower-numbered appliance's record wins.
        let winner = forward.get(Ipv4Addr::new(10, 101, 0, 10)).unwrap();
        assert_eq!(winner.client, ClientId(vec![1, 2, 3]));
        assert_eq!(backward.get(winner.address), Some(winner));
        assert!(
            !forward.apply(lease(10, 1, 50, 1)),
            "an older record is refused"
        );
    }

    #[test]
    fn client_index_follows_the_newest_record() {
        let mut leases = Leases::default();
        leases.apply(lease(10, 1, 100, 1));
        leases.apply(lease(11, 1, 200, 1));
        let client = ClientId(vec![1, 2, 1]);
        assert_eq!(
            leases.of_client("NETWORK1", &client).map(|l| l.address),
            Some(Ipv4Addr::new(10, 101, 0, 11))
        );
        // An old record arriving late (replication) does not move the index back.
        let mut late = Leases::default();
        late.apply(lease(11, 1, 200, 1));
        late.apply(lease(10, 1, 100, 1));
        assert_eq!(
            late.of_client("NETWORK1", &client).map(|l| l.address),
            Some(Ipv4Addr::new(10, 101, 0, 11))
        );
        // Someone else taking address 11 leaves the client with no current record there.
        leases.apply(lease(11, 9, 300, 1));
        assert_eq!(leases.of_client("NETWORK1", &client), None);
    }

    #[test]
    fn the_journal_gives_each_changed_address_once_at_its_newest() {
        let mut leases = Leases::default();
        leases.apply(lease(10, 1, 100, 1));
        leases.apply(lease(11, 2, 100, 1));
        let after_two = leases.cursor();
        assert_eq!(after_two, 2);
        leases.apply(lease(10, 3, 200, 2));
        // Refused records are no change.
        assert!(!leases.apply(lease(11, 2, 50, 1)));
        assert_eq!(leases.cursor(), 3);
        let since = |n, limit| -> (Vec<(u8, u8)>, u64, bool) {
            let changes = leases.changed_since(n, limit);
            let records = changes
                .records
                .iter()
                .map(|l| (l.address.octets()[3], l.client.0[2]))
                .collect();
            (records, changes.cursor, changes.more)
        };
        assert_eq!(
            since(0, 10),
            (vec![(11, 2), (10, 3)], 3, false),
            "everything, oldest change first"
        );
        assert_eq!(since(after_two, 10), (vec![(10, 3)], 3, false));
        assert_eq!(since(3, 10), (vec![], 3, false));
        assert_eq!(since(u64::MAX, 10), (vec![], 3, false));
        // Cut at the limit: the cursor is the last change sent, and more remain.
        assert_eq!(since(0, 1), (vec![(11, 2)], 2, true));
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut record = lease(10, 1, 100, 1);
        record.hostname = Some("till-1".to_owned());
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains("\"mac\":\"02:00:00:00:00:01\""), "{text}");
        assert_eq!(serde_json::from_str::<Lease>(&text).unwrap(), record);
        assert!(serde_json::from_str::<Lease>(&text.replace("02:00:00:00:00:01", "zz")).is_err());
    }
}
