//! The DHCPv4 server's decisions (RFC 2131): a request in, what to do out. Pure: the time is an
//! argument, nothing here touches a socket, a disk or a clock.
//!
//! Outputs are commands for the edge: send a reply now, ask whether an address is in use
//! before offering it (`Probe`: the edge sends the ARP request and reports a claim with
//! [`Server::claimed`]; silence until the deadline, seen by [`Server::tick`], means free), or
//! store a lease durably and only then send the reply (`Commit`: an ACK never leaves before its
//! lease is on disk).
//!
//! Invariants: an address is offered or acknowledged to at most one client at a time; a client
//! gets its previous address back when it is still free; nobody is given a declined address,
//! a reserved address (other than its owner) or the gateway. A record decided here or learned
//! from a peer counts for decisions at once, but is *unstored* until the edge reports it on disk
//! ([`Server::stored`]): what peers, the bus and the counts see ([`Server::visible`],
//! [`Server::changed_since`]) is the last stored record, and a record that could not be stored
//! is taken back ([`Server::unstored`]).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};

use crate::lease::{Changes, ClientId, Lease, LeaseState, Leases, Mac};
use crate::plan::{ClientOptions, NetworkPlan, Plan};

/// An inclusive address range.
type Range = (Ipv4Addr, Ipv4Addr);

/// How long a declined or conflicting address is kept out of use.
pub const QUARANTINE_MS: u64 = 10 * 60 * 1000;
/// How many addresses one DISCOVER may probe before the server gives up (the client retries).
pub const MAX_PROBES: u8 = 4;
/// The floor of the per-network limits below, for small pools.
const LIMIT_FLOOR: u32 = 16;

/// What a LAN device can take of a network's pool, per network. `None`: the default, half the
/// pool (at least [`LIMIT_FLOOR`]); `Some(0)`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Offers (with their conflict checks) outstanding at once: a flood of DISCOVERs from
    /// made-up MACs cannot hold the whole pool.
    pub max_offers: Option<u32>,
    /// New clients (no lease, no reservation, no offer) taken at once, and again per minute:
    /// made-up MACs completing the exchange cannot fill the pool faster than in about a minute,
    /// time for the near-full warning. Returning clients are never limited.
    pub new_clients_per_minute: Option<u32>,
}

impl Limits {
    fn resolve(value: Option<u32>, pool_size: u32) -> Option<u32> {
        match value {
            None => Some((pool_size / 2).max(LIMIT_FLOOR)),
            Some(0) => None,
            Some(n) => Some(n),
        }
    }

    /// The offers `network` may have outstanding; `None`: no limit.
    pub fn offers(&self, pool_size: u32) -> Option<u32> {
        Self::resolve(self.max_offers, pool_size)
    }

    /// The new clients `network` takes at once and per minute; `None`: no limit.
    pub fn newcomers(&self, pool_size: u32) -> Option<u32> {
        Self::resolve(self.new_clients_per_minute, pool_size)
    }
}

/// A pool at least this full (leases and held offers) is reported near full.
pub const NEAR_FULL_PERCENT: u64 = 90;

/// A token bucket: `limit` at once, `limit` more per minute.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: u64,
}

impl Bucket {
    fn full(limit: u32, now: u64) -> Self {
        Self {
            tokens: f64::from(limit),
            at: now,
        }
    }

    fn refill(&mut self, limit: u32, now: u64) {
        let elapsed = now.saturating_sub(self.at) as f64;
        self.tokens = (self.tokens + elapsed * f64::from(limit) / 60_000.0).min(f64::from(limit));
        self.at = now.max(self.at);
    }

    fn has(&mut self, limit: u32, now: u64) -> bool {
        self.refill(limit, now);
        self.tokens >= 1.0
    }

    fn take(&mut self, limit: u32, now: u64) {
        self.refill(limit, now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To 255.255.255.255:68 on the network's interface (the client has no address yet).
    Broadcast,
    /// To a client that has an address: ciaddr:68.
    Client(Ipv4Addr),
    /// To a relay agent: giaddr:67.
    Relay(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub network: String,
    pub message: Message,
    pub to: Destination,
}

/// What the edge does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Send(Reply),
    /// Ask on `network` whether anything uses `address`; report a claim with
    /// [`Server::claimed`].
    Probe {
        network: String,
        address: Ipv4Addr,
    },
    /// Store `lease` durably, then send `reply` (if any).
    Commit {
        lease: Lease,
        reply: Option<Reply>,
    },
    /// Nothing to send; the reason is for logs and metrics.
    Ignore(&'static str),
}

/// An address held for a client between OFFER (or the probe before it) and REQUEST.
#[derive(Debug, Clone)]
struct Hold {
    client: ClientId,
    until: u64,
}

/// The records of one address not yet on disk, oldest first, and the last stored record before
/// them.
#[derive(Debug, Clone, Default)]
struct Unstored {
    stored: Option<Lease>,
    pending: Vec<Lease>,
}

/// Whether `a` and `b` are the same record (of one address).
fn same_record(a: &Lease, b: &Lease) -> bool {
    a.updated == b.updated && a.issued_by == b.issued_by
}

/// A conflict check in flight: the DISCOVER it is for, and when silence means "free".
#[derive(Debug, Clone)]
struct PendingProbe {
    network: String,
    request: Message,
    attempt: u8,
    deadline: u64,
}

/// The server's state: the plan, the leases, the networks served now, the offers in flight.
#[derive(Debug)]
pub struct Server {
    /// Shared so a request's network can be borrowed while the state changes.
    plan: Arc<Plan>,
    appliance: u8,
    offer_hold_ms: u64,
    /// How long a conflict check waits for a claim; `None`: no checks.
    probe_ms: Option<u64>,
    leases: Leases,
    /// Addresses whose newest record is not on disk yet.
    unstored: HashMap<Ipv4Addr, Unstored>,
    serving: BTreeSet<String>,
    holds: HashMap<Ipv4Addr, Hold>,
    /// The address each client holds (at most one): the index of `holds`.
    held_by: HashMap<ClientId, Ipv4Addr>,
    probes: HashMap<Ipv4Addr, PendingProbe>,
    /// Per network and range set: addresses never given to anyone, lowest first.
    fresh: HashMap<(String, Option<String>), BTreeSet<u32>>,
    /// Networks answered for a dead peer: never-used addresses are taken from the top of the
    /// pool down, the owner's from the bottom up, so a split brain must fill the whole pool
    /// before the two sides could meet.
    from_top: BTreeSet<String>,
    limits: Limits,
    /// Per network: what is left of the new clients it may take ([`Limits`]).
    newcomers: HashMap<String, Bucket>,
}

/// The parts of a request every decision needs.
struct Asker<'a> {
    network: &'a NetworkPlan,
    client: ClientId,
    mac: Mac,
    class: Option<String>,
    hostname: Option<String>,
}

impl Server {
    pub fn new(
        plan: Plan,
        appliance: u8,
        offer_hold_ms: u64,
        probe_ms: Option<u64>,
        leases: Leases,
    ) -> Self {
        let mut server = Self {
            plan: Arc::new(plan),
            appliance,
            offer_hold_ms,
            probe_ms,
            leases,
            unstored: HashMap::new(),
            serving: BTreeSet::new(),
            holds: HashMap::new(),
            held_by: HashMap::new(),
            probes: HashMap::new(),
            fresh: HashMap::new(),
            from_top: BTreeSet::new(),
            limits: Limits::default(),
            newcomers: HashMap::new(),
        };
        server.rebuild_fresh();
        server
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn serving(&self) -> &BTreeSet<String> {
        &self.serving
    }

    /// Starts or stops answering on `network`.
    pub fn serve(&mut self, network: &str, on: bool) {
        if on {
            self.serving.insert(network.to_owned());
        } else {
            self.serving.remove(network);
            self.from_top.remove(network);
            let Some(subnet) = self.plan.network(network).map(|n| n.subnet) else {
                return;
            };
            let held: Vec<Ipv4Addr> = self
                .holds
                .keys()
                .filter(|address| subnet.contains(*address))
                .copied()
                .collect();
            self.drop_holds(&held);
        }
    }

    /// Starts answering on `network` for its dead owner: never-used addresses come from the top
    /// of the pool.
    pub fn serve_for_peer(&mut self, network: &str) {
        self.serving.insert(network.to_owned());
        self.from_top.insert(network.to_owned());
    }

    /// Takes in a record made elsewhere (a peer); says whether it was new. A new one is unstored
    /// until [`stored`](Self::stored).
    pub fn learn(&mut self, lease: Lease) -> bool {
        let address = lease.address;
        let network = lease.network.clone();
        let before = self.leases.get(address).cloned();
        let stored = self.leases.apply(lease.clone());
        if stored {
            self.unstored
                .entry(address)
                .or_insert_with(|| Unstored {
                    stored: before,
                    pending: Vec::new(),
                })
                .pending
                .push(lease);
            for ((net, _), fresh) in &mut self.fresh {
                if *net == network {
                    fresh.remove(&u32::from(address));
                }
            }
        }
        stored
    }

    /// `lease` (a record of a `Commit`) is on disk: peers, the bus and the counts may see it.
    pub fn stored(&mut self, lease: &Lease) {
        let Some(entry) = self.unstored.get_mut(&lease.address) else {
            return;
        };
        entry.pending.retain(|pending| !same_record(pending, lease));
        if entry
            .stored
            .as_ref()
            .is_none_or(|stored| lease.supersedes(stored))
        {
            entry.stored = Some(lease.clone());
        }
        if entry.pending.is_empty() {
            self.unstored.remove(&lease.address);
        }
        // A peer that asked meanwhile was given the older record: it hears of this one.
        self.leases.touch(lease.address);
    }

    /// `lease` (a record of a `Commit`) could not be stored, and its client was not answered:
    /// the address goes back to its newest record still on its way to disk, else to its last
    /// stored one (or to nobody, and among the fresh addresses).
    pub fn unstored(&mut self, lease: &Lease) {
        let address = lease.address;
        let Some(entry) = self.unstored.get_mut(&address) else {
            return;
        };
        entry.pending.retain(|pending| !same_record(pending, lease));
        let current_failed = self
            .leases
            .get(address)
            .is_some_and(|current| same_record(current, lease));
        let back = entry
            .pending
            .last()
            .cloned()
            .or_else(|| entry.stored.clone());
        if entry.pending.is_empty() {
            self.unstored.remove(&address);
        }
        if current_failed {
            let freed = back.is_none();
            self.leases.revert(address, back);
            if freed {
                self.drop_holds(&[address]);
            }
        }
    }

    /// The record of `address` that others may see: the last one stored.
    pub fn visible(&self, address: Ipv4Addr) -> Option<&Lease> {
        match self.unstored.get(&address) {
            Some(unstored) => unstored.stored.as_ref(),
            None => self.leases.get(address),
        }
    }

    /// Every record others may see (the last stored of each address), in address order.
    pub fn visible_leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases
            .iter()
            .filter_map(|lease| self.visible(lease.address))
    }

    /// What changed since change `since`, as peers may see it: [`Leases::changed_since`] with
    /// each unstored record replaced by the last stored one (when it is stored, it gets a new
    /// change number, so the asker hears of it then).
    pub fn changed_since(&self, since: u64, limit: usize) -> Changes {
        let mut changes = self.leases.changed_since(since, limit);
        changes.records = changes
            .records
            .into_iter()
            .filter_map(|lease| self.visible(lease.address).cloned())
            .collect();
        changes
    }

    /// Offers held now on `network` (with their conflict checks): addresses in use as much as
    /// leased ones, for the counts.
    pub fn held_on(&self, network: &str) -> usize {
        let Some(subnet) = self.plan.network(network).map(|n| n.subnet) else {
            return 0;
        };
        self.holds
            .keys()
            .filter(|address| subnet.contains(*address))
            .count()
    }

    /// Whether the asker is new to its network: no record of it, no reservation, no offer.
    fn is_newcomer(&self, asker: &Asker<'_>) -> bool {
        self.leases
            .of_client(&asker.network.name, &asker.client)
            .is_none()
            && self
                .plan
                .reservation(asker.mac)
                .is_none_or(|r| r.network != asker.network.name)
            && self.held(&asker.client).is_none()
    }

    /// Sets what a LAN device can take of each pool (the default until then).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.newcomers.clear();
    }

    /// Whether `network` has as many offers outstanding as it may.
    fn offers_full(&self, network: &NetworkPlan) -> bool {
        self.limits
            .offers(network.pool_size())
            .is_some_and(|limit| self.held_on(&network.name) >= limit as usize)
    }

    /// Whether the network may take a new client now.
    fn newcomer_allowed(&mut self, network: &NetworkPlan, now: u64) -> bool {
        let Some(limit) = self.limits.newcomers(network.pool_size()) else {
            return true;
        };
        self.newcomers
            .entry(network.name.clone())
            .or_insert_with(|| Bucket::full(limit, now))
            .has(limit, now)
    }

    /// A new client was offered an address (or given one without an offer) on `network`.
    fn newcomer_taken(&mut self, network: &NetworkPlan, now: u64) {
        let Some(limit) = self.limits.newcomers(network.pool_size()) else {
            return;
        };
        self.newcomers
            .entry(network.name.clone())
            .or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now);
    }

    /// How many addresses have a record not yet on disk.
    pub fn unstored_count(&self) -> usize {
        self.unstored.len()
    }

    /// The passing of time: conflict checks whose deadline passed without a claim find their
    /// address free (and offer it), then offers whose hold ended let their addresses go.
    pub fn tick(&mut self, now: u64) -> Vec<Decision> {
        let due: Vec<Ipv4Addr> = self
            .probes
            .iter()
            .filter(|(_, probe)| probe.deadline <= now)
            .map(|(address, _)| *address)
            .collect();
        let mut decisions = Vec::new();
        for address in due {
            decisions.extend(self.finish_probe(now, address, false));
        }
        let ended: Vec<Ipv4Addr> = self
            .holds
            .iter()
            .filter(|(_, hold)| hold.until <= now)
            .map(|(address, _)| *address)
            .collect();
        self.drop_holds(&ended);
        decisions
    }

    /// When the next conflict check ends, if one is in flight: the edge calls [`tick`]
    /// then.
    ///
    /// [`tick`]: Server::tick
    pub fn next_deadline(&self) -> Option<u64> {
        self.probes.values().map(|probe| probe.deadline).min()
    }

    /// A host on `network` claims `address` (it answered ARP, or sent ARP from it). If a
    /// conflict check of that address is in flight, the address is in use without a lease:
    /// it is quarantined (durably) and the client's DISCOVER goes on to the next address.
    pub fn claimed(&mut self, now: u64, network: &str, address: Ipv4Addr) -> Vec<Decision> {
        if self
            .probes
            .get(&address)
            .is_none_or(|probe| probe.network != network)
        {
            return Vec::new();
        }
        self.finish_probe(now, address, true)
    }

    /// Holds `address` for `client` until `until`; a client holds one address at a time.
    fn hold(&mut self, address: Ipv4Addr, client: &ClientId, until: u64) {
        if let Some(&previous) = self.held_by.get(client)
            && previous != address
        {
            self.drop_holds(&[previous]);
        }
        self.holds.insert(
            address,
            Hold {
                client: client.clone(),
                until,
            },
        );
        self.held_by.insert(client.clone(), address);
    }

    /// The address `client` holds, if any.
    fn held(&self, client: &ClientId) -> Option<Ipv4Addr> {
        self.held_by.get(client).copied()
    }

    /// Lets held addresses go (with any conflict check of them); one that was never leased goes
    /// back among the fresh ones.
    fn drop_holds(&mut self, addresses: &[Ipv4Addr]) {
        for &address in addresses {
            self.probes.remove(&address);
            if let Some(hold) = self.holds.remove(&address)
                && self.held_by.get(&hold.client) == Some(&address)
            {
                self.held_by.remove(&hold.client);
            }
            if self.leases.get(address).is_some() {
                continue;
            }
            let Some(network) = self.plan.network_of(address) else {
                continue;
            };
            let class = network
                .class_ranges
                .iter()
                .find(|(_, ranges)| ranges.iter().any(|&(s, e)| s <= address && address <= e))
                .map(|(class, _)| class.clone());
            if let Some(fresh) = self.fresh.get_mut(&(network.name.clone(), class)) {
                fresh.insert(u32::from(address));
            }
        }
    }

    fn rebuild_fresh(&mut self) {
        self.fresh.clear();
        for network in &self.plan.networks {
            let mut sets: Vec<(Option<String>, &[Range])> = vec![(None, network.pool.as_slice())];
            for (class, ranges) in &network.class_ranges {
                sets.push((Some(class.clone()), ranges.as_slice()));
            }
            for (class, ranges) in sets {
                let mut fresh = BTreeSet::new();
                for &(start, end) in ranges {
                    for address in u32::from(start)..=u32::from(end) {
                        let ip = Ipv4Addr::from(address);
                        if ip != network.gateway
                            && !self.plan.is_reserved(ip)
                            && self.leases.get(ip).is_none()
                        {
                            fresh.insert(address);
                        }
                    }
                }
                self.fresh.insert((network.name.clone(), class), fresh);
            }
        }
    }

    /// Decides what to do with `request`, which arrived on the interface of `ingress` (or
    /// through a relay, whose giaddr names the network).
    pub fn handle(&mut self, now: u64, ingress: Option<&str>, request: &Message) -> Decision {
        if request.opcode() != Opcode::BootRequest {
            return Decision::Ignore("not a request");
        }
        let Some(DhcpOption::MessageType(kind)) = request.opts().get(OptionCode::MessageType)
        else {
            return Decision::Ignore("no message type");
        };
        let plan = Arc::clone(&self.plan);
        let giaddr = request.giaddr();
        let network = match ingress.and_then(|name| plan.network(name)) {
            // On a served network's interface a relay can only speak for that network: a
            // device there must not reach another network's pool by setting giaddr.
            Some(network) if giaddr.is_unspecified() || network.subnet.contains(&giaddr) => {
                Some(network)
            }
            Some(_) => return Decision::Ignore("giaddr of another network from a served LAN"),
            None if giaddr.is_unspecified() => None,
            None => plan.network_of(giaddr),
        };
        let Some(network) = network else {
            return Decision::Ignore("no network for this request");
        };
        if !self.serving.contains(&network.name) {
            return Decision::Ignore("network not served here");
        }
        let Some(asker) = self.asker(network, request) else {
            return Decision::Ignore("no usable hardware address");
        };
        match kind {
            MessageType::Discover => self.discover(now, &asker, request, 0),
            MessageType::Request => self.request(now, &asker, request),
            MessageType::Release => self.release(now, &asker, request),
            MessageType::Decline => self.decline(now, &asker, request),
            MessageType::Inform => self.inform(&asker, request),
            _ => Decision::Ignore("not a client message"),
        }
    }

    /// The conflict check of `address` ended: `in_use` if something claimed it. Can be two
    /// decisions: storing the address's quarantine, then the next check or the offer.
    fn finish_probe(&mut self, now: u64, address: Ipv4Addr, in_use: bool) -> Vec<Decision> {
        let Some(probe) = self.probes.remove(&address) else {
            return Vec::new();
        };
        let whole = Arc::clone(&self.plan);
        let Some(plan) = whole.network(&probe.network) else {
            return vec![Decision::Ignore("no network for this request")];
        };
        if !self.serving.contains(&probe.network) {
            return vec![Decision::Ignore("network not served here")];
        }
        let Some(asker) = self.asker(plan, &probe.request) else {
            return vec![Decision::Ignore("no usable hardware address")];
        };
        if self.held(&asker.client) != Some(address) {
            // The client chose another server, or its hold was let go meanwhile.
            return vec![Decision::Ignore("offer withdrawn")];
        }
        if in_use {
            // Something answers there without a lease from us: keep it out of use, durably, so
            // a restart does not hand it out either.
            self.drop_holds(&[address]);
            let lease = self.quarantine(now, &probe.network, address);
            let next = self.discover(now, &asker, &probe.request, probe.attempt + 1);
            return vec![Decision::Commit { lease, reply: None }, next];
        }
        vec![self.offer(now, &asker, &probe.request, address)]
    }

    /// Keeps `address` out of use for QUARANTINE_MS (declined, or found in use).
    fn quarantine(&mut self, now: u64, network: &str, address: Ipv4Addr) -> Lease {
        let lease = Lease {
            address,
            network: network.to_owned(),
            client: ClientId(Vec::new()),
            mac: Mac::default(),
            hostname: None,
            class: None,
            state: LeaseState::Declined,
            expires: now + QUARANTINE_MS,
            updated: self.leases.stamp(address, now),
            issued_by: self.appliance,
        };
        self.record(lease.clone());
        lease
    }

    /// Takes in a record this server made; it always supersedes what was there, since its
    /// stamp comes from [`Leases::stamp`].
    fn record(&mut self, lease: Lease) {
        let stored = self.learn(lease);
        debug_assert!(
            stored,
            "a record made here is newer than the one it replaces"
        );
    }

    fn asker<'a>(&self, network: &'a NetworkPlan, request: &Message) -> Option<Asker<'a>> {
        let chaddr = request.chaddr();
        let mac = Mac(chaddr.get(..6)?.try_into().ok()?);
        // No device has these: an address given to one would be held by nobody who can renew it.
        if mac.0 == [0; 6] || mac.0 == [0xff; 6] || mac.0[0] & 1 == 1 {
            return None;
        }
        let client = match request.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => ClientId(id.clone()),
            _ => {
                let mut id = vec![u8::from(request.htype())];
                id.extend_from_slice(&mac.0);
                ClientId(id)
            }
        };
        let hostname = match request.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(name)) => fieldnet::names::dns_label(name),
            _ => None,
        };
        let reservation = self.plan.reservation(mac);
        Some(Asker {
            network,
            client,
            mac,
            class: self.plan.class_of(mac).map(str::to_owned),
            hostname: reservation.and_then(|r| r.hostname.clone()).or(hostname),
        })
    }

    /// Whether `address` may be given to the asker at `now`.
    fn available(&self, now: u64, asker: &Asker<'_>, address: Ipv4Addr) -> bool {
        if !asker.network.subnet.contains(&address) || address == asker.network.gateway {
            return false;
        }
        let reserved_for_asker = self
            .plan
            .reservation(asker.mac)
            .is_some_and(|r| r.address == address && r.network == asker.network.name);
        if !reserved_for_asker
            && !self
                .plan
                .allows(asker.network, asker.class.as_deref(), address)
        {
            return false;
        }
        if let Some(hold) = self.holds.get(&address)
            && hold.client != asker.client
            && hold.until > now
        {
            return false;
        }
        match self.leases.get(address) {
            Some(lease) if lease.client == asker.client => {
                lease.state != LeaseState::Declined || lease.expires <= now
            }
            Some(lease) => !lease.blocks(now),
            None => true,
        }
    }

    /// The address to offer: the reservation, the client's current or previous address, the
    /// one it asks for, a never-used one, or the longest-free one.
    fn choose(
        &mut self,
        now: u64,
        asker: &Asker<'_>,
        request: &Message,
    ) -> Option<(Ipv4Addr, bool)> {
        if let Some(reservation) = self.plan.reservation(asker.mac)
            && reservation.network == asker.network.name
        {
            let address = reservation.address;
            return self
                .available(now, asker, address)
                .then_some((address, false));
        }
        if let Some(lease) = self.leases.of_client(&asker.network.name, &asker.client)
            && self.available(now, asker, lease.address)
        {
            // Its own address: probing it would find the client itself.
            return Some((lease.address, false));
        }
        if let Some(address) = self.held(&asker.client)
            && asker.network.subnet.contains(&address)
        {
            return Some((address, false));
        }
        if let Some(DhcpOption::RequestedIpAddress(wanted)) =
            request.opts().get(OptionCode::RequestedIpAddress)
            && self.available(now, asker, *wanted)
        {
            return Some((*wanted, true));
        }
        let key = (asker.network.name.clone(), asker.class.clone());
        let key = if self.fresh.contains_key(&key) {
            key
        } else {
            (asker.network.name.clone(), None)
        };
        let from_top = self.from_top.contains(&asker.network.name);
        while let Some(address) = self.fresh.get_mut(&key).and_then(|set| {
            if from_top {
                set.pop_last()
            } else {
                set.pop_first()
            }
        }) {
            let ip = Ipv4Addr::from(address);
            if self.available(now, asker, ip) {
                return Some((ip, true));
            }
        }
        // No never-used address left: the free one whose lease ended longest ago.
        let ranges = self.plan.ranges_for(asker.network, asker.class.as_deref());
        ranges
            .iter()
            .flat_map(|&(start, end)| self.leases.in_range(start, end))
            .filter(|lease| self.available(now, asker, lease.address))
            .min_by_key(|lease| lease.expires)
            .map(|lease| (lease.address, true))
    }

    fn discover(
        &mut self,
        now: u64,
        asker: &Asker<'_>,
        request: &Message,
        attempt: u8,
    ) -> Decision {
        if attempt >= MAX_PROBES {
            return Decision::Ignore("every probed address is in use");
        }
        if attempt == 0 && self.is_newcomer(asker) {
            if self.offers_full(asker.network) {
                return Decision::Ignore("too many offers outstanding on this network");
            }
            if !self.newcomer_allowed(asker.network, now) {
                return Decision::Ignore("new clients arriving faster than the network allows");
            }
            // Taken at the offer: a flood of DISCOVERs spends the allowance, not the pool.
            self.newcomer_taken(asker.network, now);
        }
        let Some((address, probe)) = self.choose(now, asker, request) else {
            return Decision::Ignore("no free address");
        };
        if self.probes.contains_key(&address) {
            // A retransmitted DISCOVER: the check of its address is still running.
            return Decision::Ignore("conflict check in progress");
        }
        if let (true, Some(probe_ms)) = (probe, self.probe_ms) {
            // Held through the check and the offer after it.
            self.hold(address, &asker.client, now + probe_ms + self.offer_hold_ms);
            self.probes.insert(
                address,
                PendingProbe {
                    network: asker.network.name.clone(),
                    request: request.clone(),
                    attempt,
                    deadline: now + probe_ms,
                },
            );
            return Decision::Probe {
                network: asker.network.name.clone(),
                address,
            };
        }
        self.offer(now, asker, request, address)
    }

    fn offer(
        &mut self,
        now: u64,
        asker: &Asker<'_>,
        request: &Message,
        address: Ipv4Addr,
    ) -> Decision {
        self.hold(address, &asker.client, now + self.offer_hold_ms);
        let options = self.plan.options(asker.network, asker.class.as_deref());
        let message = reply(
            request,
            MessageType::Offer,
            address,
            Some(&options),
            asker.network.gateway,
        );
        Decision::Send(Reply {
            network: asker.network.name.clone(),
            message,
            to: destination(request, false),
        })
    }

    fn request(&mut self, now: u64, asker: &Asker<'_>, request: &Message) -> Decision {
        let server_id = match request.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(id)) => Some(*id),
            _ => None,
        };
        let requested = match request.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(address)) => Some(*address),
            _ => None,
        };
        if let Some(id) = server_id
            && id != asker.network.gateway
        {
            // SELECTING, and the client chose another server: let our offer go.
            if let Some(offered) = self.held(&asker.client) {
                self.drop_holds(&[offered]);
            }
            return Decision::Ignore("client chose another server");
        }
        let ciaddr = request.ciaddr();
        let address = match (server_id, requested) {
            // SELECTING or INIT-REBOOT: the address is in option 50.
            (_, Some(address)) if ciaddr.is_unspecified() => address,
            // RENEWING or REBINDING: the address is the client's own.
            _ if !ciaddr.is_unspecified() => ciaddr,
            _ => return self.nak(asker, request, "request without an address"),
        };
        if !asker.network.subnet.contains(&address) {
            return self.nak(asker, request, "address is not on this network");
        }
        if server_id.is_some() {
            // SELECTING: only what we offered (or what the client already holds).
            let offered = self.held(&asker.client) == Some(address);
            let holds_it = self
                .leases
                .get(address)
                .is_some_and(|lease| lease.client == asker.client && lease.is_bound(now));
            if !offered && !holds_it {
                return self.nak(asker, request, "address was not offered to this client");
            }
        }
        // Authoritative for the networks it serves: an address that is free and allowed is
        // confirmed even without a record (a client keeping its address across a server's
        // lost disk or a takeover), anything else is refused.
        if !self.available(now, asker, address) {
            return self.nak(asker, request, "address is not available to this client");
        }
        // A new client without an offer (straight to REQUEST) counts against the same limit;
        // it is not refused (a NAK would take a returning client's address away), only not
        // answered until the network takes new clients again.
        if self.is_newcomer(asker) {
            if !self.newcomer_allowed(asker.network, now) {
                return Decision::Ignore("new clients arriving faster than the network allows");
            }
            self.newcomer_taken(asker.network, now);
        }
        let options = self.plan.options(asker.network, asker.class.as_deref());
        let lease = Lease {
            address,
            network: asker.network.name.clone(),
            client: asker.client.clone(),
            mac: asker.mac,
            hostname: asker.hostname.clone(),
            class: asker.class.clone(),
            state: LeaseState::Bound,
            expires: now + options.lease_time.as_millis() as u64,
            updated: self.leases.stamp(address, now),
            issued_by: self.appliance,
        };
        self.record(lease.clone());
        self.drop_holds(&[address]);
        let message = reply(
            request,
            MessageType::Ack,
            address,
            Some(&options),
            asker.network.gateway,
        );
        Decision::Commit {
            lease,
            reply: Some(Reply {
                network: asker.network.name.clone(),
                message,
                to: destination(request, false),
            }),
        }
    }

    fn nak(&mut self, asker: &Asker<'_>, request: &Message, why: &'static str) -> Decision {
        let mut message = reply(
            request,
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            None,
            asker.network.gateway,
        );
        message
            .opts_mut()
            .insert(DhcpOption::Message(why.to_owned()));
        Decision::Send(Reply {
            network: asker.network.name.clone(),
            message,
            to: destination(request, true),
        })
    }

    fn release(&mut self, now: u64, asker: &Asker<'_>, request: &Message) -> Decision {
        let address = request.ciaddr();
        match self.leases.get(address) {
            Some(lease) if lease.client == asker.client && lease.state == LeaseState::Bound => {
                let mut lease = lease.clone();
                lease.state = LeaseState::Released;
                lease.expires = now;
                lease.updated = self.leases.stamp(address, now);
                lease.issued_by = self.appliance;
                self.record(lease.clone());
                Decision::Commit { lease, reply: None }
            }
            _ => Decision::Ignore("release of an address the client does not hold"),
        }
    }

    fn decline(&mut self, now: u64, asker: &Asker<'_>, request: &Message) -> Decision {
        let Some(DhcpOption::RequestedIpAddress(address)) =
            request.opts().get(OptionCode::RequestedIpAddress)
        else {
            return Decision::Ignore("decline without an address");
        };
        let ours = self
            .leases
            .get(*address)
            .is_some_and(|lease| lease.client == asker.client)
            || self.held(&asker.client) == Some(*address);
        if !ours {
            return Decision::Ignore("decline of an address the client was not given");
        }
        let lease = self.quarantine(now, &asker.network.name, *address);
        self.drop_holds(&[*address]);
        Decision::Commit { lease, reply: None }
    }

    fn inform(&mut self, asker: &Asker<'_>, request: &Message) -> Decision {
        let options = self.plan.options(asker.network, asker.class.as_deref());
        let mut message = reply(
            request,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Some(&options),
            asker.network.gateway,
        );
        // RFC 2131 3.4: no lease time in an answer to DHCPINFORM.
        for code in [
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ] {
            message.opts_mut().remove(code);
        }
        let to = if request.ciaddr().is_unspecified() {
            destination(request, false)
        } else {
            Destination::Client(request.ciaddr())
        };
        Decision::Send(Reply {
            network: asker.network.name.clone(),
            message,
            to,
        })
    }
}

/// Where the reply to `request` goes (RFC 2131 4.1): the relay, else the client's address, else
/// broadcast. A server without a raw socket cannot unicast to a client without an address, so
/// those replies are broadcast, which every client accepts.
fn destination(request: &Message, nak: bool) -> Destination {
    if !request.giaddr().is_unspecified() {
        Destination::Relay(request.giaddr())
    } else if !nak && !request.ciaddr().is_unspecified() {
        Destination::Client(request.ciaddr())
    } else {
        Destination::Broadcast
    }
}

/// A reply to `request` of `kind`, carrying `address` and (unless a NAK) `options`.
fn reply(
    request: &Message,
    kind: MessageType,
    address: Ipv4Addr,
    options: Option<&ClientOptions>,
    server_id: Ipv4Addr,
) -> Message {
    let mut message = Message::default();
    message
        .set_opcode(Opcode::BootReply)
        .set_htype(request.htype())
        .set_xid(request.xid())
        .set_flags(request.flags())
        .set_giaddr(request.giaddr())
        .set_chaddr(request.chaddr())
        .set_yiaddr(address);
    if kind == MessageType::Ack && !request.ciaddr().is_unspecified() {
        message.set_ciaddr(request.ciaddr());
    }
    let opts = message.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server_id));
    if let Some(DhcpOption::ClientIdentifier(id)) = request.opts().get(OptionCode::ClientIdentifier)
    {
        // RFC 6842: echo the client identifier.
        opts.insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    let Some(options) = options else {
        return message;
    };
    let seconds = options.lease_time.as_secs().min(u64::from(u32::MAX - 1)) as u32;
    opts.insert(DhcpOption::AddressLeaseTime(seconds));
    opts.insert(DhcpOption::Renewal(seconds / 2));
    opts.insert(DhcpOption::Rebinding(seconds / 8 * 7));
    opts.insert(DhcpOption::SubnetMask(options.subnet.netmask()));
    opts.insert(DhcpOption::BroadcastAddr(options.subnet.broadcast()));
    opts.insert(DhcpOption::Router(vec![options.gateway]));
    opts.insert(DhcpOption::DomainNameServer(options.dns.clone()));
    opts.insert(DhcpOption::DomainName(options.domain.clone()));
    if !options.ntp_servers.is_empty() {
        opts.insert(DhcpOption::NtpServers(options.ntp_servers.clone()));
    }
    if let Some(mtu) = options.mtu {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    if !options.routes.is_empty() {
        opts.insert(DhcpOption::ClasslessStaticRoute(options.routes.clone()));
    }
    message
}

/// A message's type, for logs and metrics.
pub fn message_type(message: &Message) -> Option<MessageType> {
    match message.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(kind)) => Some(*kind),
        _ => None,
    }
}

/// Decodes a datagram; `None` for anything that is not a DHCP message.
pub fn decode(datagram: &[u8]) -> Option<Message> {
    use dhcproto::Decodable as _;
    // dhcproto does not check the magic cookie: without it the packet is not DHCP (BOOTP
    // without options at best, which this server does not answer).
    if datagram.get(236..240) != Some(&MAGIC_COOKIE[..]) || !lengths_dhcproto_accepts(datagram) {
        return None;
    }
    let message = v4::Message::decode(&mut v4::Decoder::new(datagram)).ok()?;
    // dhcproto 0.15 accepts any hlen but `chaddr()` slices the 16-byte field with it, so a
    // packet claiming more than 16 bytes would panic there (found by the fuzz target).
    (usize::from(message.hlen()) <= 16).then_some(message)
}

/// RFC 2131 §3: the first four octets of the options field.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Whether every option whose length dhcproto 0.15 takes for granted has that length. Its
/// decoder asserts them (`debug_assert!`, or `len - 3` that underflows), so in a debug build
/// one crafted packet would panic the server; a DHCP server has no use for such a packet.
fn lengths_dhcproto_accepts(datagram: &[u8]) -> bool {
    const OPTIONS_START: usize = 240;
    let mut at = OPTIONS_START;
    while at < datagram.len() {
        let code = datagram[at];
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => return true,
            _ => {}
        }
        let Some(&length) = datagram.get(at + 1) else {
            return true;
        };
        let fits = match code {
            80 => length == 0,
            81 => length >= 3,
            94 => length == 3,
            151 => length >= 1,
            152..=155 => length == 4,
            _ => true,
        };
        if !fits {
            return false;
        }
        at += 2 + usize::from(length);
    }
    true
}

/// Encodes a reply.
pub fn encode(message: &Message) -> Vec<u8> {
    use dhcproto::Encodable as _;
    let mut buffer = Vec::with_capacity(548);
    let mut encoder = v4::Encoder::new(&mut buffer);
    message
        .encode(&mut encoder)
        .expect("a message built here always encodes");
    buffer
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
