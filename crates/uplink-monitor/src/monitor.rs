//! The uplink monitor's decisions: which uplink carries traffic, fed by facts, answering with
//! commands. No sockets, no clock, no randomness: `step(now, input)` is all there is.
//!
//! Invariants: every uplink is probed all the time (metered standbys more slowly); an uplink is
//! dead only when every target has been silent for its patience, or the kernel says its link is
//! gone; a dead active uplink is left at once, a live one only for an uplink clearly better for
//! the hold time; a flapping uplink is suppressed; a recovered uplink takes traffic back only
//! after it has been stable for `failback_after`; nothing switches before the first evidence
//! is in, so a restart adopts what the kernel holds without a blip.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fieldnet::config::UplinkMonitorConfig;

use crate::dampening::Dampening;
use crate::score::{TargetStats, UplinkFigures, clearly_better};

/// Margin below which score differences never switch, in score points (≈ ms).
const MARGIN_FLOOR: f64 = 20.0;
/// Score points per point of flap penalty: each recent failure (1000) costs 10 ms-equivalents,
/// decaying with the dampening half-life. This is the uplink's reliability history.
const RELIABILITY_WEIGHT: f64 = 0.01;
/// Unanswered probes (over all targets) before silence can mean death: at 10 % random loss,
/// six in a row happen once in a million.
const MIN_UNANSWERED: u32 = 6;
/// Score points for an uplink measured with no throughput at all; proportionally less for
/// one measured between nothing and `min_throughput_kbps`.
const SLOW_WEIGHT: f64 = 300.0;
/// Time between the first throughput tests of successive uplinks.
const THROUGHPUT_TEST_SPACING: Duration = Duration::from_secs(5);
/// Consecutive failed HTTP checks before an answering uplink counts as captive.
const CAPTIVE_AFTER: u32 = 2;
/// Probes a target may have outstanding; older ones are written off as lost.
const MAX_PENDING: usize = 64;

/// An uplink's health, in the bus's own words: `Unknown` (not yet enough evidence either way),
/// `Up`, `LinkDown` (the kernel reports the link down), `Silent` (every target silent longer
/// than its patience), `PeerDown` (a remote uplink whose appliance is dead), `Captive` (probes
/// answered, the HTTP check not: a login page or a router's "no service" page).
pub use fieldnet::bus::topics::UplinkHealth as Health;

/// Why traffic moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// Nothing was active yet (first decision after start without a route to adopt).
    Initial,
    /// The active uplink's link went down.
    LinkDown,
    /// The active uplink stopped answering.
    Silent,
    /// The active uplink's peer appliance died.
    PeerDown,
    /// The active uplink is being dampened for flapping.
    Suppressed,
    /// The active uplink fails the HTTP check (captive).
    Captive,
    /// Another uplink scored clearly better for the hold time.
    Better,
    /// A more preferred uplink, recovered and stable, is not clearly worse: fail back to it.
    Preferred,
}

impl SwitchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Initial => "initial",
            SwitchReason::LinkDown => "link_down",
            SwitchReason::Silent => "silent",
            SwitchReason::PeerDown => "peer_down",
            SwitchReason::Suppressed => "suppressed",
            SwitchReason::Captive => "captive",
            SwitchReason::Better => "better",
            SwitchReason::Preferred => "preferred",
        }
    }
}

impl From<SwitchReason> for fieldnet::bus::topics::UplinkReason {
    fn from(reason: SwitchReason) -> Self {
        match reason {
            SwitchReason::Initial => Self::Initial,
            SwitchReason::LinkDown => Self::LinkDown,
            SwitchReason::Silent => Self::Silent,
            SwitchReason::PeerDown => Self::PeerDown,
            SwitchReason::Suppressed => Self::Suppressed,
            SwitchReason::Captive => Self::Captive,
            SwitchReason::Better => Self::Better,
            SwitchReason::Preferred => Self::Preferred,
        }
    }
}

/// Facts from the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed; the edge sends this at least every few milliseconds.
    Tick,
    /// The kernel's default route at start points at this uplink (or at none of ours).
    Adopt { uplink: Option<usize> },
    /// An echo reply to a probe the monitor asked for.
    Reply {
        uplink: usize,
        target: usize,
        seq: u16,
    },
    /// The probe could not even be sent (no route, interface gone): lost at once.
    SendFailed {
        uplink: usize,
        target: usize,
        seq: u16,
    },
    /// The kernel's view of a local uplink's link: carrier, interface present, address present.
    Link { uplink: usize, up: bool },
    /// The carrier of one path (by its index in [`UplinkSpec::paths`]) to a remote uplink's
    /// appliance. The uplink goes by the first path that has carrier, and is down without one.
    PathLink {
        uplink: usize,
        path: usize,
        up: bool,
    },
    /// For remote uplinks: whether the owning appliance is alive.
    Peer { peer: u8, alive: bool },
    /// The outcome of an HTTP check the monitor asked for.
    HttpResult { uplink: usize, ok: bool },
    /// The outcome of a throughput test: kilobits per second, or `None` if it failed.
    ThroughputResult { uplink: usize, kbps: Option<f64> },
}

/// Commands to the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    SendProbe {
        uplink: usize,
        target: usize,
        seq: u16,
    },
    /// Run the HTTP check through `uplink` and answer with `Input::HttpResult`.
    HttpCheck { uplink: usize },
    /// Run the throughput test through `uplink` and answer with `Input::ThroughputResult`.
    ThroughputTest { uplink: usize },
    /// Make `uplink` the default route; forget the conntrack entries pinned to `previous`.
    Activate {
        uplink: usize,
        previous: Option<usize>,
        reason: SwitchReason,
    },
    /// Send a remote uplink's traffic (its own table, and the default route when
    /// `carries_default`) by path `path` from now on.
    UsePath {
        uplink: usize,
        path: usize,
        carries_default: bool,
    },
    /// An uplink's health changed (for logs, metrics and the bus).
    HealthChanged {
        uplink: usize,
        from: Health,
        to: Health,
    },
}

/// One uplink as the monitor needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSpec {
    pub name: String,
    pub preference: u32,
    pub metered: bool,
    /// For a remote uplink, the appliance that owns it.
    pub peer: Option<u8>,
    /// For a remote uplink, how many paths lead to its appliance, preferred first (none for a
    /// local uplink). Traffic goes by the first at start.
    pub paths: usize,
}

#[derive(Debug)]
struct Pending {
    seq: u16,
    sent: Instant,
}

#[derive(Debug)]
struct Target {
    stats: TargetStats,
    pending: VecDeque<Pending>,
    next_probe: Instant,
    last_reply: Option<Instant>,
}

#[derive(Debug)]
struct Uplink {
    spec: UplinkSpec,
    targets: Vec<Target>,
    health: Health,
    link_up: bool,
    /// A remote uplink's paths: whether each has carrier, and the one traffic goes by.
    path_up: Vec<bool>,
    path: usize,
    peer_alive: bool,
    /// When the uplink last came back after having been down or silent; `None` if it has
    /// been fine since start. A recovered uplink must prove itself before taking traffic back.
    recovered_at: Option<Instant>,
    /// Down or silent since it was last up (or since start).
    troubled: bool,
    /// Since when it has been eligible to be judged silent (link up, probing).
    watched_since: Instant,
    dampening: Dampening,
    seq: u16,
    /// Probes sent since the last reply from any target.
    unanswered: u32,
    /// HTTP check: when next, whether one is running, consecutive failures.
    next_http_check: Instant,
    http_running: bool,
    http_failures: u32,
    /// Throughput test: when next, whether one is running, the last measured capacity.
    next_throughput_test: Instant,
    throughput_running: bool,
    capacity_kbps: Option<f64>,
    /// The interval the targets are currently staggered over.
    interval: Duration,
    probes_sent: u64,
    probes_lost: u64,
}

/// What `fieldctl status` and the metrics show of one uplink.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UplinkView {
    pub name: String,
    pub health: Health,
    pub active: bool,
    pub suppressed: bool,
    pub score: Option<f64>,
    pub latency_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub loss: Option<f64>,
    pub probes_sent: u64,
    pub probes_lost: u64,
    pub penalty: f64,
    /// Last measured capacity, from the throughput test.
    pub capacity_kbps: Option<f64>,
}

/// The decision state of the whole agent.
#[derive(Debug)]
pub struct Monitor {
    settings: UplinkMonitorConfig,
    uplinks: Vec<Uplink>,
    active: Option<usize>,
    /// Candidate and since when it has been clearly better than the active uplink.
    better: Option<(usize, Instant)>,
    started: Instant,
}

impl Monitor {
    pub fn new(settings: UplinkMonitorConfig, specs: Vec<UplinkSpec>, now: Instant) -> Self {
        let target_count = settings.targets.len().max(1) as u32;
        let uplinks = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| Uplink {
                targets: (0..settings.targets.len())
                    .map(|index| Target {
                        stats: TargetStats::default(),
                        pending: VecDeque::new(),
                        // Targets are staggered over the interval so replies arrive evenly
                        // and silence is noticed one stagger after it starts.
                        next_probe: now + settings.probe_interval * index as u32 / target_count,
                        last_reply: None,
                    })
                    .collect(),
                path_up: vec![true; spec.paths],
                path: 0,
                spec,
                health: Health::Unknown,
                link_up: true,
                peer_alive: true,
                recovered_at: None,
                troubled: false,
                watched_since: now,
                dampening: Dampening::new(
                    settings.dampening_half_life,
                    settings.dampening_suppress,
                    settings.dampening_reuse,
                ),
                seq: 0,
                unanswered: 0,
                next_http_check: now,
                http_running: false,
                http_failures: 0,
                // Spread the tests out so uplinks are not measured all at once.
                next_throughput_test: now + THROUGHPUT_TEST_SPACING * (index as u32 + 1),
                throughput_running: false,
                capacity_kbps: None,
                interval: settings.probe_interval,
                probes_sent: 0,
                probes_lost: 0,
            })
            .collect();
        Self {
            settings,
            uplinks,
            active: None,
            better: None,
            started: now,
        }
    }

    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// The path a remote uplink's traffic goes by (0 for a local uplink).
    pub fn path(&self, uplink: usize) -> usize {
        self.uplinks.get(uplink).map_or(0, |u| u.path)
    }

    pub fn uplink_name(&self, uplink: usize) -> &str {
        &self.uplinks[uplink].spec.name
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Adopt { uplink } => {
                if let Some(uplink) = uplink.filter(|&u| u < self.uplinks.len()) {
                    self.active = Some(uplink);
                }
            }
            Input::Reply {
                uplink,
                target,
                seq,
            } => self.reply(now, uplink, target, seq),
            Input::SendFailed {
                uplink,
                target,
                seq,
            } => {
                if let Some(t) = self
                    .uplinks
                    .get_mut(uplink)
                    .and_then(|u| u.targets.get_mut(target))
                    && let Some(position) = t.pending.iter().position(|p| p.seq == seq)
                {
                    t.pending.remove(position);
                    t.stats.loss(true);
                    self.uplinks[uplink].probes_lost += 1;
                }
            }
            Input::Link { uplink, up } => self.link(now, uplink, up),
            Input::PathLink { uplink, path, up } => self.path_link(now, uplink, path, up, &mut out),
            Input::HttpResult { .. } => {}
            Input::ThroughputResult { uplink, kbps } => {
                if let Some(u) = self.uplinks.get_mut(uplink) {
                    u.throughput_running = false;
                    // A failed test says nothing about capacity; probes judge liveness.
                    if let Some(kbps) = kbps {
                        u.capacity_kbps = Some(kbps);
                    }
                }
            }
            Input::Peer { peer, alive } => {
                for u in &mut self.uplinks {
                    if u.spec.peer == Some(peer) && u.peer_alive != alive {
                        u.peer_alive = alive;
                        if alive {
                            u.watched_since = now;
                        }
                    }
                }
            }
        }
        if let Input::HttpResult { uplink, ok } = input
            && let Some(u) = self.uplinks.get_mut(uplink)
        {
            u.http_running = false;
            u.http_failures = if ok { 0 } else { u.http_failures + 1 };
        }
        self.expire(now);
        self.update_health(now, &mut out);
        self.decide(now, &mut out);
        self.probe(now, &mut out);
        out
    }

    fn link(&mut self, now: Instant, uplink: usize, up: bool) {
        if let Some(u) = self.uplinks.get_mut(uplink)
            && u.link_up != up
        {
            u.link_up = up;
            if up {
                // Evidence starts afresh: the link is back, replies will tell.
                u.watched_since = now;
                u.unanswered = 0;
                for target in &mut u.targets {
                    target.pending.clear();
                }
            }
        }
    }

    /// A remote uplink keeps to the first of its paths with carrier: when that changes, its
    /// traffic moves there (the default route too, if it carries it); with none, it is down
    /// and stays on the path it had.
    fn path_link(
        &mut self,
        now: Instant,
        uplink: usize,
        path: usize,
        up: bool,
        out: &mut Vec<Output>,
    ) {
        let active = self.active == Some(uplink);
        let Some(u) = self.uplinks.get_mut(uplink) else {
            return;
        };
        let Some(known) = u.path_up.get_mut(path) else {
            return;
        };
        *known = up;
        let live = u.path_up.iter().position(|&up| up);
        if let Some(live) = live
            && live != u.path
        {
            u.path = live;
            out.push(Output::UsePath {
                uplink,
                path: live,
                carries_default: active,
            });
        }
        self.link(now, uplink, live.is_some());
    }

    fn reply(&mut self, now: Instant, uplink: usize, target: usize, seq: u16) {
        let Some(u) = self.uplinks.get_mut(uplink) else {
            return;
        };
        let Some(t) = u.targets.get_mut(target) else {
            return;
        };
        // A reply to a probe already written off (or never sent) proves nothing about now.
        let Some(position) = t.pending.iter().position(|p| p.seq == seq) else {
            return;
        };
        let sent = t.pending[position].sent;
        t.pending.remove(position);
        t.stats.reply(now.saturating_duration_since(sent));
        t.last_reply = Some(now);
        u.unanswered = 0;
    }

    /// Writes off probes older than their target's patience.
    fn expire(&mut self, now: Instant) {
        let floor = self.settings.dead_after;
        for u in &mut self.uplinks {
            for t in &mut u.targets {
                let patience = t.stats.patience(floor);
                while let Some(oldest) = t.pending.front() {
                    if now.saturating_duration_since(oldest.sent) < patience
                        && t.pending.len() <= MAX_PENDING
                    {
                        break;
                    }
                    t.pending.pop_front();
                    // Probes lost while the uplink is known down are the outage itself, which
                    // the flap penalty remembers; they do not also count as quality loss.
                    if matches!(u.health, Health::Up | Health::Unknown) {
                        t.stats.loss(true);
                    }
                    u.probes_lost += 1;
                }
            }
        }
    }

    fn probe_interval(&self, uplink: usize) -> Duration {
        let u = &self.uplinks[uplink];
        if u.spec.metered && self.active != Some(uplink) {
            self.settings.standby_interval
        } else {
            self.settings.probe_interval
        }
    }

    /// How long every target may be silent before the uplink counts as dead: the patience of
    /// its most patient target plus one stagger, so the regular gap between replies never
    /// counts as silence.
    fn silence_allowed(&self, uplink: usize) -> Duration {
        let u = &self.uplinks[uplink];
        let patience = u
            .targets
            .iter()
            .map(|t| t.stats.patience(self.settings.dead_after))
            .max()
            .unwrap_or(self.settings.dead_after);
        patience + self.probe_interval(uplink) / u.targets.len().max(1) as u32
    }

    fn update_health(&mut self, now: Instant, out: &mut Vec<Output>) {
        for index in 0..self.uplinks.len() {
            let silence_allowed = self.silence_allowed(index);
            let u = &mut self.uplinks[index];
            let last_reply = u.targets.iter().filter_map(|t| t.last_reply).max();
            let heard_since_watched = last_reply.is_some_and(|r| r >= u.watched_since);
            // Silence needs both time and evidence: enough probes went unanswered that loss
            // alone cannot explain it (this matters for slowly probed standbys).
            let enough_unanswered = u.unanswered >= MIN_UNANSWERED;
            let health = if !u.link_up {
                Health::LinkDown
            } else if !u.peer_alive {
                Health::PeerDown
            } else if heard_since_watched {
                let last = last_reply.expect("heard");
                if now.saturating_duration_since(last) > silence_allowed && enough_unanswered {
                    Health::Silent
                } else if u.http_failures >= CAPTIVE_AFTER {
                    Health::Captive
                } else {
                    Health::Up
                }
            } else if now.saturating_duration_since(u.watched_since) > silence_allowed
                && enough_unanswered
            {
                Health::Silent
            } else {
                Health::Unknown
            };
            if health != u.health {
                let from = u.health;
                if from == Health::Up {
                    u.dampening.flap(now);
                }
                match health {
                    Health::LinkDown | Health::Silent | Health::PeerDown | Health::Captive => {
                        u.troubled = true
                    }
                    Health::Up if u.troubled => {
                        u.troubled = false;
                        u.recovered_at = Some(now);
                    }
                    Health::Up | Health::Unknown => {}
                }
                u.health = health;
                out.push(Output::HealthChanged {
                    uplink: index,
                    from,
                    to: health,
                });
            }
            u.dampening.update(now);
        }
    }

    fn score(&self, uplink: usize, now: Instant) -> Option<f64> {
        let u = &self.uplinks[uplink];
        let figures = UplinkFigures::combine(u.targets.iter().map(|t| &t.stats))?;
        let slow = match (&self.settings.throughput_test, u.capacity_kbps) {
            (Some(test), Some(kbps)) if test.min_kbps > 0 && kbps < f64::from(test.min_kbps) => {
                (1.0 - kbps / f64::from(test.min_kbps)) * SLOW_WEIGHT
            }
            _ => 0.0,
        };
        Some(
            figures.score(u.spec.preference) + u.dampening.penalty(now) * RELIABILITY_WEIGHT + slow,
        )
    }

    /// Usable at all: answering and not dampened.
    fn usable(&self, uplink: usize) -> bool {
        let u = &self.uplinks[uplink];
        u.health == Health::Up && !u.dampening.is_suppressed()
    }

    /// Usable, and stable long enough to be trusted with traffic (or already carrying it).
    fn trusted(&self, uplink: usize, now: Instant) -> bool {
        self.usable(uplink)
            && (self.active == Some(uplink)
                || self.uplinks[uplink].recovered_at.is_none_or(|since| {
                    now.saturating_duration_since(since) >= self.settings.failback_after
                }))
    }

    /// The best of `candidates` by score, then preference, then file order.
    fn best(&self, candidates: impl Iterator<Item = usize>, now: Instant) -> Option<usize> {
        candidates.min_by(|&a, &b| {
            let score = |u| self.score(u, now).unwrap_or(f64::MAX);
            score(a)
                .partial_cmp(&score(b))
                .expect("finite scores")
                .then(
                    self.uplinks[a]
                        .spec
                        .preference
                        .cmp(&self.uplinks[b].spec.preference),
                )
                .then(a.cmp(&b))
        })
    }

    fn decide(&mut self, now: Instant, out: &mut Vec<Output>) {
        let all = 0..self.uplinks.len();
        let active_ok = self.active.is_some_and(|a| self.usable(a));
        if !active_ok {
            // With nothing adopted, wait until every uplink has a verdict (or had time for one),
            // so the first choice is the best, not the first to answer.
            if self.active.is_none() {
                let waited = (0..self.uplinks.len()).all(|u| {
                    self.uplinks[u].health != Health::Unknown
                        || now.saturating_duration_since(self.started) > self.silence_allowed(u)
                });
                if !waited {
                    return;
                }
            }
            if let Some(active) = self.active {
                // An adopted uplink with no verdict yet keeps traffic until evidence arrives.
                if self.uplinks[active].health == Health::Unknown {
                    return;
                }
            }
            let choice = self
                .best(all.clone().filter(|&u| self.trusted(u, now)), now)
                .or_else(|| self.best(all.clone().filter(|&u| self.usable(u)), now))
                .or_else(|| {
                    self.best(
                        all.clone()
                            .filter(|&u| self.uplinks[u].health == Health::Up),
                        now,
                    )
                });
            if let Some(choice) = choice
                && Some(choice) != self.active
            {
                let reason = match self.active {
                    None => SwitchReason::Initial,
                    Some(active) => match self.uplinks[active].health {
                        Health::LinkDown => SwitchReason::LinkDown,
                        Health::PeerDown => SwitchReason::PeerDown,
                        Health::Up => SwitchReason::Suppressed,
                        Health::Captive => SwitchReason::Captive,
                        Health::Silent | Health::Unknown => SwitchReason::Silent,
                    },
                };
                self.switch(choice, reason, out);
            }
            return;
        }
        let active = self.active.expect("active_ok");
        let Some(active_score) = self.score(active, now) else {
            return;
        };
        let margin = self.settings.margin_percent;
        let trusted: Vec<usize> = all
            .filter(|&u| u != active && self.trusted(u, now))
            .collect();
        let better = self
            .best(trusted.iter().copied(), now)
            .filter(|&c| {
                self.score(c, now)
                    .is_some_and(|score| clearly_better(score, active_score, margin, MARGIN_FLOOR))
            })
            .map(|c| (c, SwitchReason::Better));
        // Failback: a more preferred uplink that is not clearly worse takes traffic back.
        let preferred = || {
            trusted
                .iter()
                .copied()
                .filter(|&c| self.uplinks[c].spec.preference < self.uplinks[active].spec.preference)
                .filter(|&c| {
                    self.score(c, now).is_some_and(|score| {
                        !clearly_better(active_score, score, margin, MARGIN_FLOOR)
                    })
                })
                .min_by_key(|&c| (self.uplinks[c].spec.preference, c))
                .map(|c| (c, SwitchReason::Preferred))
        };
        let wanted = better.or_else(preferred);
        match (wanted, self.better) {
            (Some((c, reason)), Some((previous, since))) if previous == c => {
                if now.saturating_duration_since(since) >= self.settings.hold {
                    self.switch(c, reason, out);
                }
            }
            (Some((c, _)), _) => self.better = Some((c, now)),
            (None, _) => self.better = None,
        }
    }

    fn switch(&mut self, uplink: usize, reason: SwitchReason, out: &mut Vec<Output>) {
        let previous = self.active;
        self.active = Some(uplink);
        self.better = None;
        out.push(Output::Activate {
            uplink,
            previous,
            reason,
        });
    }

    fn probe(&mut self, now: Instant, out: &mut Vec<Output>) {
        if let Some(test) = &self.settings.throughput_test {
            for (index, u) in self.uplinks.iter_mut().enumerate() {
                if u.health == Health::Up && !u.throughput_running && now >= u.next_throughput_test
                {
                    u.throughput_running = true;
                    u.next_throughput_test = now + test.interval;
                    out.push(Output::ThroughputTest { uplink: index });
                }
            }
        }
        if let Some(check) = &self.settings.http_check {
            for (index, u) in self.uplinks.iter_mut().enumerate() {
                if u.link_up && !u.http_running && now >= u.next_http_check {
                    u.http_running = true;
                    u.next_http_check = now + check.interval;
                    out.push(Output::HttpCheck { uplink: index });
                }
            }
        }
        for index in 0..self.uplinks.len() {
            let interval = self.probe_interval(index);
            let u = &mut self.uplinks[index];
            if !u.link_up {
                continue;
            }
            if u.interval != interval {
                // Spread the targets evenly over the new interval.
                let count = u.targets.len().max(1) as u32;
                for (target_index, t) in u.targets.iter_mut().enumerate() {
                    t.next_probe = t
                        .next_probe
                        .min(now + interval * target_index as u32 / count);
                }
                u.interval = interval;
            }
            for (target_index, t) in u.targets.iter_mut().enumerate() {
                if now < t.next_probe {
                    continue;
                }
                // Keep the cadence, but never burst to catch up after a stall.
                t.next_probe = (t.next_probe + interval).max(now);
                u.seq = u.seq.wrapping_add(1);
                t.pending.push_back(Pending {
                    seq: u.seq,
                    sent: now,
                });
                u.probes_sent += 1;
                u.unanswered += 1;
                out.push(Output::SendProbe {
                    uplink: index,
                    target: target_index,
                    seq: u.seq,
                });
            }
        }
    }

    /// When the edge should send the next `Tick` at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.uplinks
            .iter()
            .filter(|u| u.link_up)
            .flat_map(|u| u.targets.iter().map(|t| t.next_probe))
            .min()
    }

    pub fn view(&self, now: Instant) -> Vec<UplinkView> {
        (0..self.uplinks.len())
            .map(|index| {
                let u = &self.uplinks[index];
                let figures = UplinkFigures::combine(u.targets.iter().map(|t| &t.stats));
                UplinkView {
                    name: u.spec.name.clone(),
                    health: u.health,
                    active: self.active == Some(index),
                    suppressed: u.dampening.is_suppressed(),
                    score: self.score(index, now),
                    latency_ms: figures.map(|f| f.latency_ms),
                    jitter_ms: figures.map(|f| f.jitter_ms),
                    loss: figures.map(|f| f.loss_short),
                    probes_sent: u.probes_sent,
                    probes_lost: u.probes_lost,
                    penalty: u.dampening.penalty(now),
                    capacity_kbps: u.capacity_kbps,
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
