//! Path sessions and peer liveness, decided purely from heartbeats and the time.
//!
//! One `PathSession` per (peer, path) runs a BFD-like three-way handshake (RFC 5880, simplified:
//! Down → Init → Up) so both ends agree the path works in both directions, and goes Down when
//! no valid heartbeat arrived for the peer's interval × multiplier. A `PeerLiveness` combines a
//! peer's sessions: the peer is alive while any path is Up, so a peer reachable over only one
//! path is never declared dead.
//!
//! Invariants: a heartbeat whose sequence does not grow is ignored (replay or reordering);
//! every transition is reported once, with the time it happened.

use std::time::{Duration, Instant};

use crate::packet::{Heartbeat, SessionState};

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
    last_seq: u64,
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
            last_seq: 0,
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
        if heartbeat.seq <= self.last_seq {
            return None;
        }
        self.last_seq = heartbeat.seq;
        self.last_rx = Some(now);
        self.remote_state = heartbeat.state;
        if heartbeat.interval_ms > 0 {
            self.remote_interval = Duration::from_millis(u64::from(heartbeat.interval_ms));
        }
        if heartbeat.detect_multiplier > 0 {
            self.remote_multiplier = heartbeat.detect_multiplier;
        }
        self.echo = Some((heartbeat.sent_us, now));
        if heartbeat.echo_us > 0 {
            let total = now_us.saturating_sub(heartbeat.echo_us);
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

    /// The heartbeat to send now. `seq` must grow across restarts (derive it from the wall
    /// clock); `now_us` is the monotonic clock the echo is measured on.
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

/// A peer's liveness over all its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Never heard from since start.
    Unknown,
    Alive,
    Dead,
}

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

    /// Two ends of one path exchanging heartbeats every `INTERVAL` while `up(t)` says the path
    /// carries them; returns each end's transitions with their times.
    fn exchange(
        a: &mut PathSession,
        b: &mut PathSession,
        start: Instant,
        duration: Duration,
        up: impl Fn(Duration) -> bool,
    ) -> Vec<(Duration, char, Transition)> {
        let mut log = Vec::new();
        let mut seq = 0;
        let mut t = Duration::ZERO;
        while t <= duration {
            let now = start + t;
            let now_us = t.as_micros() as u64;
            if t.as_millis().is_multiple_of(INTERVAL.as_millis()) && up(t) {
                seq += 1;
                let from_a = a.heartbeat(1, seq, now, now_us);
                let from_b = b.heartbeat(2, seq, now, now_us);
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
        let stale = b.heartbeat(2, 1, start, 0);
        assert_eq!(
            a.receive(start + ms(210), 210_000, &stale),
            None,
            "old sequence ignored"
        );
        let mut down = b.heartbeat(2, 1_000, start + ms(220), 220_000);
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
        let from_a = a.heartbeat(1, 1, start + ms(1), 1_000);
        b.receive(start + ms(4), 4_000, &from_a);
        let from_b = b.heartbeat(2, 1, start + ms(24), 24_000);
        a.receive(start + ms(27), 27_000, &from_b);
        assert_eq!(a.rtt(), Some(ms(6)));
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
