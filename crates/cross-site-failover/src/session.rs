//! Path sessions and peer liveness, decided purely from heartbeats and the time.
//!
//! One `PathSession` per (peer, path) runs a BFD-like three-way handshake (RFC 5880, simplified:
//! Down → Init → Up) so both ends agree the path works in both directions, and goes Down when
//! no valid heartbeat arrived for the peer's interval × multiplier. A `PeerLiveness` combines a
//! peer's sessions: the peer is alive while any path is Up, so a peer reachable over only one
//! path is never declared dead.
//!
//! Sequences and freshness. A heartbeat's sequence is the sender's epoch (random at each
//! start) and a counter; neither comes from a clock, so a sender whose wall clock steps (field
//! boxes without an RTC, after NTP or GPS) is believed as before. Within an epoch the counter
//! must grow (replays and reordering are ignored). A new epoch (the sender restarted, or this
//! session is new) is believed only once its heartbeat echoes a send time of ours from the
//! last [`FRESH_WINDOW`]: a heartbeat recorded an hour ago cannot. Until then its send time is
//! echoed, so the sender can prove itself with its next heartbeat.
//!
//! Invariants: every transition is reported once, with the time it happened; nothing a
//! heartbeat says is believed before its epoch is.

use std::time::{Duration, Instant};

use crate::packet::{Heartbeat, SessionState};

/// How old an echoed send time of ours may be for a new epoch to be believed (and for the
/// round trip to be measured from it).
pub const FRESH_WINDOW: Duration = Duration::from_secs(5);

/// A sender's heartbeat sequence: its epoch in the high 32 bits, a counter in the low 32.
#[derive(Debug, Clone, Copy)]
pub struct Sequence {
    epoch: u32,
    counter: u32,
}

impl Sequence {
    /// A sequence for this start of the sender (`epoch`: random).
    pub fn new(epoch: u32) -> Self {
        Self { epoch, counter: 0 }
    }

    /// The next sequence number (a counter past 2³² − 1, 6.8 years at 50 ms, starts a new
    /// epoch).
    pub fn advance(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        if self.counter == 0 {
            self.epoch = self.epoch.wrapping_add(1);
            self.counter = 1;
        }
        (u64::from(self.epoch) << 32) | u64::from(self.counter)
    }
}

fn epoch_and_counter(seq: u64) -> (u32, u32) {
    ((seq >> 32) as u32, seq as u32)
}

/// What a path session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: SessionState,
    pub to: SessionState,
    pub reason: TransitionReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionReason {
    /// The handshake advanced on a heartbeat from the peer.
    Handshake,
    /// No valid heartbeat within the detection time.
    Timeout,
    /// The peer says its side of the session is down.
    PeerSaysDown,
}

/// One path to one peer.
#[derive(Debug, Clone)]
pub struct PathSession {
    pub peer: u8,
    pub path: u8,
    state: SessionState,
    state_since: Instant,
    interval: Duration,
    detect_multiplier: u8,
    /// The peer's announced timing, used for its detection time.
    remote_interval: Duration,
    remote_multiplier: u8,
    remote_state: SessionState,
    last_rx: Option<Instant>,
    /// The sender's epoch this session believes, and its last counter.
    epoch: Option<u32>,
    last_counter: u32,
    /// The peer's last `sent_us` and when it arrived, to echo back.
    echo: Option<(u64, Instant)>,
    rtt: Option<Duration>,
}

impl PathSession {
    pub fn new(
        peer: u8,
        path: u8,
        interval: Duration,
        detect_multiplier: u8,
        now: Instant,
    ) -> Self {
        Self {
            peer,
            path,
            state: SessionState::Down,
            state_since: now,
            interval,
            detect_multiplier,
            // Until the peer speaks, assume it times like us.
            remote_interval: interval,
            remote_multiplier: detect_multiplier,
            remote_state: SessionState::Down,
            last_rx: None,
            epoch: None,
            last_counter: 0,
            echo: None,
            rtt: None,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn since(&self) -> Instant {
        self.state_since
    }

    /// Round trip measured from the last echoed heartbeat.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// How long the peer may stay silent before this path is down.
    pub fn detection_time(&self) -> Duration {
        self.remote_interval * u32::from(self.remote_multiplier.max(1))
    }

    fn set(
        &mut self,
        now: Instant,
        to: SessionState,
        reason: TransitionReason,
    ) -> Option<Transition> {
        if self.state == to {
            return None;
        }
        let from = self.state;
        self.state = to;
        self.state_since = now;
        Some(Transition { from, to, reason })
    }

    /// An authenticated heartbeat from this session's peer on this path. `now_us` is this
    /// appliance's monotonic clock in microseconds (the same one `heartbeat` stamps with).
    pub fn receive(
        &mut self,
        now: Instant,
        now_us: u64,
        heartbeat: &Heartbeat,
    ) -> Option<Transition> {
        let (epoch, counter) = epoch_and_counter(heartbeat.seq);
        let fresh_echo = heartbeat.echo_us > 0
            && heartbeat.echo_us <= now_us
            && now_us - heartbeat.echo_us <= FRESH_WINDOW.as_micros() as u64;
        if self.epoch == Some(epoch) {
            if counter <= self.last_counter {
                return None;
            }
        } else if fresh_echo {
            self.epoch = Some(epoch);
        } else {
            // A new start of the sender, or an old heartbeat replayed: only its send time is
            // echoed, for the sender to prove itself fresh with its next heartbeat.
            self.echo = Some((heartbeat.sent_us, now));
            return None;
        }
        self.last_counter = counter;
        self.last_rx = Some(now);
        self.remote_state = heartbeat.state;
        if heartbeat.interval_ms > 0 {
            self.remote_interval = Duration::from_millis(u64::from(heartbeat.interval_ms));
        }
        if heartbeat.detect_multiplier > 0 {
            self.remote_multiplier = heartbeat.detect_multiplier;
        }
        self.echo = Some((heartbeat.sent_us, now));
        if fresh_echo {
            let total = now_us - heartbeat.echo_us;
            let held = u64::from(heartbeat.echo_delay_us);
            self.rtt = Some(Duration::from_micros(total.saturating_sub(held)));
        }
        use SessionState::*;
        let next = match (self.state, heartbeat.state) {
            (Down, Down) => Init,
            (Down, Init) | (Init, Init) | (Init, Up) => Up,
            (Up, Down) => return self.set(now, Down, TransitionReason::PeerSaysDown),
            (state, _) => state,
        };
        self.set(now, next, TransitionReason::Handshake)
    }

    /// Time passed: the path goes down when the peer has been silent past its detection time.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        if self.state == SessionState::Down {
            return None;
        }
        let silent_since = self.last_rx.unwrap_or(self.state_since);
        if now.saturating_duration_since(silent_since) > self.detection_time() {
            self.remote_state = SessionState::Down;
            return self.set(now, SessionState::Down, TransitionReason::Timeout);
        }
        None
    }

    /// The heartbeat to send now: `seq` from this sender's [`Sequence`]; `now_us` the
    /// monotonic clock the echo is measured on (never 0, which means "nothing to echo").
    pub fn heartbeat(&self, from: u8, seq: u64, now: Instant, now_us: u64) -> Heartbeat {
        let (echo_us, echo_delay_us) = match self.echo {
            Some((sent_us, received)) => (
                sent_us,
                u32::try_from(now.saturating_duration_since(received).as_micros())
                    .unwrap_or(u32::MAX),
            ),
            None => (0, 0),
        };
        Heartbeat {
            from,
            to: self.peer,
            path: self.path,
            state: self.state,
            seq,
            sent_us: now_us,
            echo_us,
            echo_delay_us,
            interval_ms: u16::try_from(self.interval.as_millis()).unwrap_or(u16::MAX),
            detect_multiplier: self.detect_multiplier,
        }
    }
}

/// A peer's liveness over all its paths: `Unknown` (never heard from since start), `Alive`,
/// `Dead`, the bus's own words.
pub use fieldnet::bus::topics::PeerVerdict as Liveness;

/// Combines a peer's path sessions into one verdict.
#[derive(Debug, Clone)]
pub struct PeerLiveness {
    pub peer: u8,
    verdict: Liveness,
    since: Instant,
}

impl PeerLiveness {
    pub fn new(peer: u8, now: Instant) -> Self {
        Self {
            peer,
            verdict: Liveness::Unknown,
            since: now,
        }
    }

    pub fn verdict(&self) -> Liveness {
        self.verdict
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    /// Re-judges from the sessions; returns the new verdict if it changed. A peer is alive
    /// while any path is up and dead once every path is down after it had been alive.
    pub fn update<'a>(
        &mut self,
        now: Instant,
        sessions: impl IntoIterator<Item = &'a PathSession>,
    ) -> Option<Liveness> {
        let any_up = sessions.into_iter().any(|s| s.state() == SessionState::Up);
        let next = match (self.verdict, any_up) {
            (_, true) => Liveness::Alive,
            (Liveness::Unknown, false) => Liveness::Unknown,
            (_, false) => Liveness::Dead,
        };
        if next == self.verdict {
            return None;
        }
        self.verdict = next;
        self.since = now;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sequence `counter` of epoch `epoch`.
    fn seq(epoch: u32, counter: u32) -> u64 {
        (u64::from(epoch) << 32) | u64::from(counter)
    }

    /// Two ends of one path exchanging heartbeats every `INTERVAL` while `up(t)` says the path
    /// carries them; returns each end's transitions with their times. Both clocks read `t`
    /// (plus 1 µs: 0 means "nothing to echo").
    fn exchange(
        a: &mut PathSession,
        b: &mut PathSession,
        start: Instant,
        duration: Duration,
        up: impl Fn(Duration) -> bool,
    ) -> Vec<(Duration, char, Transition)> {
        let (mut seq_a, mut seq_b) = (Sequence::new(0xa), Sequence::new(0xb));
        let mut log = Vec::new();
        let mut t = Duration::ZERO;
        while t <= duration {
            let now = start + t;
            let now_us = t.as_micros() as u64 + 1;
            if t.as_millis().is_multiple_of(INTERVAL.as_millis()) && up(t) {
                let from_a = a.heartbeat(1, seq_a.advance(), now, now_us);
                let from_b = b.heartbeat(2, seq_b.advance(), now, now_us);
                if let Some(tr) = b.receive(now, now_us, &from_a) {
                    log.push((t, 'b', tr));
                }
                if let Some(tr) = a.receive(now, now_us, &from_b) {
                    log.push((t, 'a', tr));
                }
            }
            for (name, session) in [('a', &mut *a), ('b', &mut *b)] {
                if let Some(tr) = session.tick(now) {
                    log.push((t, name, tr));
                }
            }
            t += ms(1);
        }
        log
    }

    #[test]
    fn three_way_handshake_brings_both_ends_up() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        exchange(&mut a, &mut b, start, ms(200), |_| true);
        assert_eq!((a.state(), b.state()), (SessionState::Up, SessionState::Up));
    }

    #[test]
    fn silence_takes_a_path_down_after_interval_times_multiplier() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        // The path stops carrying anything at 1 s.
        let log = exchange(&mut a, &mut b, start, ms(2000), |t| t < ms(1000));
        let downs: Vec<_> = log
            .iter()
            .filter(|(_, _, tr)| tr.to == SessionState::Down)
            .collect();
        assert_eq!(downs.len(), 2, "{log:?}");
        for (t, _, tr) in downs {
            assert_eq!(tr.reason, TransitionReason::Timeout);
            // Last heartbeat at 950 ms; detection 150 ms; down on the first tick past it.
            assert_eq!(*t, ms(1101), "{log:?}");
        }
    }

    #[test]
    fn replays_are_ignored_and_a_peer_saying_down_is_believed() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        exchange(&mut a, &mut b, start, ms(200), |_| true);
        let stale = b.heartbeat(2, seq(0xb, 1), start + ms(205), 205_001);
        assert_eq!(
            a.receive(start + ms(210), 210_001, &stale),
            None,
            "old sequence ignored"
        );
        let mut down = b.heartbeat(2, seq(0xb, 1_000), start + ms(220), 220_001);
        down.state = SessionState::Down;
        let transition = a.receive(start + ms(220), 220_000, &down).unwrap();
        assert_eq!(
            (transition.to, transition.reason),
            (SessionState::Down, TransitionReason::PeerSaysDown)
        );
    }

    #[test]
    fn round_trip_is_measured_from_echoes_minus_hold_time() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        // a sends at 1 ms; b receives it at 4 ms, holds it 20 ms, answers at 24 ms; a gets it
        // at 27 ms: 26 ms in all, 20 of them held, 6 on the wire.
        let from_a = a.heartbeat(1, seq(0xa, 1), start + ms(1), 1_000);
        b.receive(start + ms(4), 4_000, &from_a);
        let from_b = b.heartbeat(2, seq(0xb, 1), start + ms(24), 24_000);
        a.receive(start + ms(27), 27_000, &from_b);
        assert_eq!(a.rtt(), Some(ms(6)));
    }

    #[test]
    fn the_sequence_needs_no_clock_and_wraps_into_a_new_epoch() {
        let mut sequence = Sequence::new(7);
        assert_eq!(sequence.advance(), seq(7, 1));
        assert_eq!(sequence.advance(), seq(7, 2));
        let mut old = Sequence {
            epoch: 7,
            counter: u32::MAX - 1,
        };
        assert_eq!(old.advance(), seq(7, u32::MAX));
        assert_eq!(old.advance(), seq(8, 1));
    }

    /// Finding 10: the sequence was the sender's wall clock, so a sender whose clock stepped
    /// back (or that restarted with its clock behind) was ignored until the clock caught up:
    /// path down, peer dead, while it was alive. Now its new epoch is believed as soon as it
    /// echoes us.
    #[test]
    fn heartbeats_and_the_clock_a_restarted_sender_with_any_clock_is_believed_at_once() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        exchange(&mut a, &mut b, start, ms(200), |_| true);
        assert_eq!(a.state(), SessionState::Up);
        // b restarts at 210 ms: a new session, an epoch below the old one, its clock 10 ms
        // after its start.
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start + ms(210));
        let (mut a_seq, mut b_seq) = (Sequence::new(0xa), Sequence::new(0x1));
        for _ in 0..10 {
            a_seq.advance();
        }
        let mut log = Vec::new();
        for t in (250..=500).step_by(50) {
            let now = start + ms(t);
            let (a_us, b_us) = (t * 1000 + 1, (t - 200) * 1000);
            let from_a = a.heartbeat(1, a_seq.advance(), now, a_us);
            let from_b = b.heartbeat(2, b_seq.advance(), now, b_us);
            log.extend(b.receive(now, b_us, &from_a).map(|tr| (t, 'b', tr)));
            log.extend(a.receive(now, a_us, &from_b).map(|tr| (t, 'a', tr)));
        }
        assert_eq!(
            (a.state(), b.state()),
            (SessionState::Up, SessionState::Up),
            "{log:?}"
        );
        // a heard the restart (b said down) and came back up with it.
        assert!(
            log.iter()
                .any(|(_, end, tr)| *end == 'a' && tr.reason == TransitionReason::PeerSaysDown),
            "{log:?}"
        );
    }

    /// Finding 10: after a receiver restart, hour-old heartbeats were believed. A new session
    /// believes no epoch whose heartbeat does not echo one of its own recent send times.
    #[test]
    fn heartbeats_and_the_clock_hour_old_heartbeats_are_refused_after_a_receiver_restart() {
        let start = Instant::now();
        let mut a = PathSession::new(2, 0, INTERVAL, 3, start);
        let mut b = PathSession::new(1, 0, INTERVAL, 3, start);
        exchange(&mut a, &mut b, start, ms(200), |_| true);
        // Recorded: b's heartbeats, echoing a's clock of then.
        let recorded: Vec<Heartbeat> = (300..310)
            .map(|n| b.heartbeat(2, seq(0xb, n), start + ms(200), 200_001))
            .collect();
        // An hour later a restarts (its clock runs on) and hears them all again.
        let later = start + Duration::from_secs(3600);
        let later_us = 3_600_000_001;
        let mut restarted = PathSession::new(2, 0, INTERVAL, 3, later);
        for heartbeat in &recorded {
            assert_eq!(restarted.receive(later, later_us, heartbeat), None);
        }
        assert_eq!(restarted.state(), SessionState::Down);
        assert_eq!(restarted.rtt(), None);
    }

    #[test]
    fn a_peer_reachable_over_one_path_is_alive_and_dies_with_its_last_path() {
        let start = Instant::now();
        let mut cable = (
            PathSession::new(2, 0, INTERVAL, 3, start),
            PathSession::new(1, 0, INTERVAL, 3, start),
        );
        let mut wifi = (
            PathSession::new(2, 1, INTERVAL, 3, start),
            PathSession::new(1, 1, INTERVAL, 3, start),
        );
        let mut liveness = PeerLiveness::new(2, start);
        assert_eq!(
            liveness.update(start, [&cable.0, &wifi.0]),
            None,
            "unknown until heard"
        );
        exchange(&mut cable.0, &mut cable.1, start, ms(200), |_| true);
        exchange(&mut wifi.0, &mut wifi.1, start, ms(200), |_| true);
        assert_eq!(
            liveness.update(start + ms(200), [&cable.0, &wifi.0]),
            Some(Liveness::Alive)
        );
        // The cable dies: still alive over wifi.
        cable.0.tick(start + ms(1000));
        assert_eq!(cable.0.state(), SessionState::Down);
        assert_eq!(liveness.update(start + ms(1000), [&cable.0, &wifi.0]), None);
        assert_eq!(liveness.verdict(), Liveness::Alive);
        // Then wifi: dead.
        wifi.0.tick(start + ms(1000));
        assert_eq!(
            liveness.update(start + ms(1000), [&cable.0, &wifi.0]),
            Some(Liveness::Dead)
        );
    }
}
