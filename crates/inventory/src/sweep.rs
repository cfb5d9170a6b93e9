//! One sweep of a range: which host to ask next and when, at a bounded rate, each silent host
//! asked again after `wait`, then twice that, four times… (loss on wifi bridges and busy
//! switches comes in bursts) until it has had enough tries; then it is a miss.
//! Hosts are asked in a pipeline, not in rounds: the retries of early hosts go out while
//! later hosts get their first request, so a sweep takes about (requests ÷ rate) + one wait.
//!
//! How many tries a silent address gets follows the loss the sweep sees, as nmap's timing
//! does: the answers so far say how often a request or its reply is lost (an answer to the
//! third try means two were lost), and an address is given up once a device there would have
//! answered one of its tries with all but [`MISS_TARGET`] certainty: two tries on a clean
//! network, up to `attempts` on a lossy one. Most of a network is empty, so this is most of a
//! sweep's frames.
//!
//! What the last sweep learned shapes this one ([`Prior`]): a host whose MAC is known is asked
//! first by unicast (it reaches that device alone, so these go at up to four times the rate,
//! paced apart from the broadcasts; its retries are broadcast, in case the address now
//! belongs to someone else); an
//! address that stayed silent last time is asked once (a device new there is found by that
//! request, by the next sweep, or sooner by its own DHCP and ARP); an address never swept is
//! asked as above.
//!
//! Pure: `now` is the time since the sweep started; the edge sends and reports answers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use fieldnet::names::Mac;

/// Requests an address that was silent at the last sweep gets.
pub const SILENT_ATTEMPTS: u32 = 1;

/// The chance of missing a device that is there, which the tries an address gets aim under.
pub const MISS_TARGET: f64 = 1e-4;

/// Tries every address never swept gets, however clean the network looks.
const MIN_ATTEMPTS: u32 = 2;

/// What the loss estimate starts from before answers come in: one loss in twenty tries.
const PRIOR_LOSSES: f64 = 1.0;
const PRIOR_TRIES: f64 = 20.0;

/// How much faster than broadcasts unicast requests to known devices may go (each reaches
/// one device; a broadcast reaches all), paced on their own.
const UNICAST_RATE: f64 = 4.0;

/// What is known of an address before a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// A device with this MAC answered there.
    Known(Mac),
    /// It did not answer the last sweep.
    Silent,
    /// Never swept.
    Unknown,
}

impl Prior {
    /// What is known of an address: the MAC of the device known there, else whether it was
    /// silent at the last sweep.
    pub fn of(known: Option<Mac>, silent_last_time: bool) -> Prior {
        match known {
            Some(mac) => Prior::Known(mac),
            None if silent_last_time => Prior::Silent,
            None => Prior::Unknown,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Ask `address`; by unicast to `to` when given, else broadcast.
    Send { address: Ipv4Addr, to: Option<Mac> },
    /// Nothing may go before then.
    WaitUntil(Duration),
    /// Every host answered or had all its attempts and its last wait.
    Done,
}

#[derive(Debug, Clone)]
struct Host {
    hint: Option<Mac>,
    /// Requests it may get in all.
    attempts: u32,
    /// Whether its tries follow the loss seen (else it gets `attempts`).
    adaptive: bool,
    tries: u32,
    /// Given up: it had the tries the loss called for.
    missed: bool,
    answer: Option<Mac>,
}

/// A sweep in progress.
#[derive(Debug, Clone)]
pub struct Sweep {
    hosts: HashMap<Ipv4Addr, Host>,
    /// Known devices, for their first request (by unicast).
    unicast: VecDeque<Ipv4Addr>,
    /// Hosts due for a broadcast request: when, then in the order they were queued.
    due: BinaryHeap<Reverse<(Duration, u64, Ipv4Addr)>>,
    queued: u64,
    /// When the last request's wait ends: the sweep is over then.
    last_deadline: Duration,
    wait: Duration,
    rate: u32,
    sent: u64,
    broadcasts: u64,
    unicasts: u64,
    /// Tries and losses of the hosts that answered (the loss estimate's evidence).
    answered_tries: u64,
    answered_losses: u64,
}

impl Sweep {
    /// A sweep of `hosts` (with what is known of each), `rate` requests a second, each host
    /// asked up to `attempts` times.
    pub fn new(
        hosts: impl IntoIterator<Item = (Ipv4Addr, Prior)>,
        attempts: u32,
        wait: Duration,
        rate: u32,
    ) -> Sweep {
        let attempts = attempts.max(1);
        let mut table = HashMap::new();
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for (address, prior) in hosts {
            let (hint, host_attempts, adaptive) = match prior {
                Prior::Known(mac) => (Some(mac), attempts, false),
                Prior::Silent => (None, attempts.min(SILENT_ATTEMPTS), false),
                Prior::Unknown => (None, attempts, true),
            };
            let host = Host {
                hint,
                attempts: host_attempts,
                adaptive,
                tries: 0,
                missed: false,
                answer: None,
            };
            if table.insert(address, host).is_none() {
                if hint.is_some() {
                    known.push(address);
                } else {
                    unknown.push(address);
                }
            }
        }
        // Known devices first (by unicast): they answer, and their answers refresh the list
        // soonest; the broadcasts go meanwhile.
        let due: BinaryHeap<_> = unknown
            .into_iter()
            .zip(0..)
            .map(|(address, order)| Reverse((Duration::ZERO, order, address)))
            .collect();
        let queued = due.len() as u64;
        Sweep {
            hosts: table,
            unicast: known.into(),
            due,
            queued,
            last_deadline: Duration::ZERO,
            wait,
            rate: rate.max(1),
            sent: 0,
            broadcasts: 0,
            unicasts: 0,
            answered_tries: 0,
            answered_losses: 0,
        }
    }

    /// The chance that a request or its answer is lost, from the answers so far.
    pub fn loss(&self) -> f64 {
        (self.answered_losses as f64 + PRIOR_LOSSES) / (self.answered_tries as f64 + PRIOR_TRIES)
    }

    /// Tries that find a device there with all but [`MISS_TARGET`] certainty at `loss`.
    fn tries_needed(loss: f64) -> u32 {
        if loss <= 0.0 {
            return MIN_ATTEMPTS;
        }
        let tries = (MISS_TARGET.ln() / loss.min(0.99).ln()).ceil();
        (tries as u32).max(MIN_ATTEMPTS)
    }

    /// The next request, or how long to wait, or the end.
    pub fn next(&mut self, now: Duration) -> Next {
        let mut wake: Option<Duration> = None;
        // First requests to known devices, by unicast, paced apart from the broadcasts.
        while let Some(&address) = self.unicast.front() {
            if self.hosts[&address].answer.is_some() {
                self.unicast.pop_front();
                continue;
            }
            let allowed_at = Duration::from_secs_f64(
                self.unicasts as f64 / (f64::from(self.rate) * UNICAST_RATE),
            );
            if allowed_at <= now {
                self.unicast.pop_front();
                return self.send(now, address, true);
            }
            wake = Some(allowed_at);
            break;
        }
        while let Some(&Reverse((at, _, address))) = self.due.peek() {
            let host = &self.hosts[&address];
            if host.answer.is_some() {
                self.due.pop();
                continue;
            }
            if at > now {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                break;
            }
            if host.tries > 0 && host.adaptive && host.tries >= Self::tries_needed(self.loss()) {
                self.due.pop();
                self.hosts
                    .get_mut(&address)
                    .expect("queued hosts are known")
                    .missed = true;
                continue;
            }
            let allowed_at = Duration::from_secs_f64(self.broadcasts as f64 / f64::from(self.rate));
            if allowed_at <= now {
                self.due.pop();
                return self.send(now, address, false);
            }
            wake = Some(wake.map_or(allowed_at, |w| w.min(allowed_at)));
            break;
        }
        if let Some(at) = wake {
            Next::WaitUntil(at)
        } else if self.finished_waiting(now) {
            Next::Done
        } else {
            Next::WaitUntil(self.last_deadline)
        }
    }

    /// Sends a request to `address` now (by unicast to its known MAC, else broadcast) and
    /// queues its retry.
    fn send(&mut self, now: Duration, address: Ipv4Addr, unicast: bool) -> Next {
        let host = self
            .hosts
            .get_mut(&address)
            .expect("queued hosts are known");
        let to = if unicast { host.hint } else { None };
        host.tries += 1;
        self.sent += 1;
        if to.is_some() {
            self.unicasts += 1;
        } else {
            self.broadcasts += 1;
        }
        if host.tries < host.attempts {
            let backoff = self.wait * 2_u32.pow((host.tries - 1).min(8));
            self.due
                .push(Reverse((now + backoff, self.queued, address)));
            self.queued += 1;
        } else {
            host.missed = true;
        }
        self.last_deadline = self.last_deadline.max(now + self.wait);
        Next::Send { address, to }
    }

    fn finished_waiting(&self, now: Duration) -> bool {
        now >= self.last_deadline || self.hosts.values().all(|host| host.answer.is_some())
    }

    /// `address` answered from `mac` (answers from hosts not swept are ignored; the first
    /// answer counts).
    pub fn answered(&mut self, address: Ipv4Addr, mac: Mac) -> bool {
        match self.hosts.get_mut(&address) {
            Some(host) if host.answer.is_none() => {
                host.answer = Some(mac);
                host.missed = false;
                let tries = u64::from(host.tries.max(1));
                self.answered_tries += tries;
                self.answered_losses += tries - 1;
                true
            }
            _ => false,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The hosts that answered, with their MACs, by address.
    pub fn found(&self) -> Vec<(Ipv4Addr, Mac)> {
        let mut found: Vec<(Ipv4Addr, Mac)> = self
            .hosts
            .iter()
            .filter_map(|(address, host)| host.answer.map(|mac| (*address, mac)))
            .collect();
        found.sort();
        found
    }

    /// The hosts that had all their requests and never answered, by address.
    pub fn missed(&self) -> Vec<Ipv4Addr> {
        let mut missed: Vec<Ipv4Addr> = self
            .hosts
            .iter()
            .filter(|(_, host)| host.answer.is_none() && host.missed)
            .map(|(address, _)| *address)
            .collect();
        missed.sort();
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(200);

    fn host(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    /// Runs a sweep in simulated time; `answers(address, try)` says whether that request is
    /// answered (at once). Returns the time it ended and every request sent.
    fn run(
        sweep: &mut Sweep,
        mut answers: impl FnMut(Ipv4Addr, u32) -> bool,
    ) -> (Duration, Vec<(Duration, Ipv4Addr, Option<Mac>)>) {
        let mut now = Duration::ZERO;
        let mut sent = Vec::new();
        let mut tries: HashMap<Ipv4Addr, u32> = HashMap::new();
        loop {
            match sweep.next(now) {
                Next::Send { address, to } => {
                    sent.push((now, address, to));
                    let try_number = tries.entry(address).or_default();
                    *try_number += 1;
                    if answers(address, *try_number) {
                        sweep.answered(address, Mac([2, 0, 0, 0, 0, address.octets()[3]]));
                    }
                }
                Next::WaitUntil(at) => {
                    assert!(at > now, "a wait must move time on");
                    now = at;
                }
                Next::Done => return (now, sent),
            }
        }
    }

    #[test]
    fn silent_hosts_get_every_attempt_then_count_as_missed() {
        let mut sweep = Sweep::new((1..=4).map(|n| (host(n), Prior::Unknown)), 3, WAIT, 1000);
        let (end, sent) = run(&mut sweep, |address, _| address == host(2));
        // Host 2 once, the three others three times each.
        assert_eq!(sent.len(), 1 + 3 * 3);
        assert_eq!(sweep.found().len(), 1);
        assert_eq!(sweep.missed(), [host(1), host(3), host(4)]);
        // The first retry comes `wait` after the first request, the next twice that.
        let to_one: Vec<Duration> = sent
            .iter()
            .filter(|(_, address, _)| *address == host(1))
            .map(|(at, _, _)| *at)
            .collect();
        assert_eq!(to_one[1] - to_one[0], WAIT);
        assert_eq!(to_one[2] - to_one[1], 2 * WAIT);
        // Over one wait after the last request.
        assert_eq!(end, sent.last().unwrap().0 + WAIT);
    }

    #[test]
    fn a_host_answering_a_retry_is_found_and_not_asked_again() {
        let mut sweep = Sweep::new([(host(1), Prior::Unknown)], 4, WAIT, 1000);
        let (_, sent) = run(&mut sweep, |_, try_number| try_number == 3);
        assert_eq!(sent.len(), 3);
        assert_eq!(sweep.found(), [(host(1), Mac([2, 0, 0, 0, 0, 1]))]);
        assert!(sweep.missed().is_empty());
    }

    #[test]
    fn the_rate_bounds_requests_per_second() {
        let mut sweep = Sweep::new((1..=200).map(|n| (host(n), Prior::Unknown)), 1, WAIT, 100);
        let (_, sent) = run(&mut sweep, |_, _| false);
        assert_eq!(sent.len(), 200);
        // Request n goes no earlier than n / 100 s.
        for (index, (at, _, _)) in sent.iter().enumerate() {
            assert!(
                *at >= Duration::from_millis(index as u64 * 10),
                "{index} at {at:?}"
            );
        }
        assert!(sent.last().unwrap().0 < Duration::from_secs(2));
    }

    fn slash_22() -> Vec<Ipv4Addr> {
        (1..=1022)
            .map(|n| Ipv4Addr::from_bits(Ipv4Addr::new(10, 0, 0, 0).to_bits() + n))
            .collect()
    }

    /// Tries each address got, by address.
    fn tries(sent: &[(Duration, Ipv4Addr, Option<Mac>)]) -> HashMap<Ipv4Addr, usize> {
        let mut tries = HashMap::new();
        for (_, address, _) in sent {
            *tries.entry(*address).or_default() += 1;
        }
        tries
    }

    #[test]
    fn a_clean_slash_22_at_2000_a_second_takes_two_tries_per_empty_address_and_under_a_second() {
        let hosts = slash_22();
        let mut sweep = Sweep::new(
            hosts.iter().map(|h| (*h, Prior::Unknown)),
            4,
            Duration::from_millis(50),
            2000,
        );
        // 300 answer their first request (the site file's default wait, 50 ms).
        let answering: std::collections::HashSet<Ipv4Addr> =
            hosts.iter().step_by(3).take(300).copied().collect();
        let (end, sent) = run(&mut sweep, |address, _| answering.contains(&address));
        assert_eq!(sweep.found().len(), 300);
        assert_eq!(sweep.missed().len(), 722);
        let tries = tries(&sent);
        // Before many answers are in, the loss estimate is cautious: the first empty addresses
        // get a third try; the rest two.
        let empty_tries: Vec<usize> = hosts
            .iter()
            .filter(|h| !answering.contains(h))
            .map(|h| tries[h])
            .collect();
        assert!(
            empty_tries.iter().all(|n| (2..=3).contains(n)),
            "{empty_tries:?}"
        );
        assert!(empty_tries.iter().filter(|n| **n == 2).count() > 650);
        assert!(sweep.loss() < 0.01, "{}", sweep.loss());
        assert!(
            end < Duration::from_secs(1),
            "{end:?} for {} requests",
            sent.len()
        );
    }

    #[test]
    fn on_a_lossy_network_empty_addresses_get_every_attempt_and_nobody_is_missed() {
        let hosts = slash_22();
        let mut sweep = Sweep::new(hosts.iter().map(|h| (*h, Prior::Unknown)), 4, WAIT, 2000);
        let answering: std::collections::HashSet<Ipv4Addr> =
            hosts.iter().step_by(3).take(300).copied().collect();
        // A tenth of requests or their answers lost.
        let mut random = fastrand::Rng::with_seed(7);
        let (_, sent) = run(&mut sweep, |address, _| {
            answering.contains(&address) && random.u32(..10) != 0
        });
        assert!(sweep.loss() > 0.05, "{}", sweep.loss());
        let tries = tries(&sent);
        let late_empty = hosts
            .iter()
            .rev()
            .filter(|h| !answering.contains(h))
            .take(100);
        assert!(late_empty.into_iter().all(|h| tries[h] == 4));
        assert_eq!(sweep.found().len(), 300);
    }

    #[test]
    fn unicast_requests_to_known_devices_go_at_four_times_the_rate_beside_the_broadcasts() {
        let mut sweep = Sweep::new(
            (1..=100).map(|n| (host(n), Prior::Known(Mac([2, 0, 0, 0, 0, n])))),
            1,
            WAIT,
            100,
        );
        let (_, sent) = run(&mut sweep, |_, _| true);
        assert_eq!(sent.len(), 100);
        assert!(sent.iter().all(|(_, _, to)| to.is_some()));
        // 100 broadcasts would take a second at 100/s; 100 unicasts a quarter of it.
        let last = sent.last().unwrap().0;
        assert!(
            last >= Duration::from_millis(240) && last < Duration::from_millis(260),
            "{last:?}"
        );

        // With addresses to broadcast to as well, both go at once, each at its own pace.
        let mut sweep = Sweep::new(
            (1..=100)
                .map(|n| (host(n), Prior::Known(Mac([2, 0, 0, 0, 0, n]))))
                .chain((101..=200).map(|n| (host(n), Prior::Silent))),
            1,
            WAIT,
            100,
        );
        let (_, sent) = run(&mut sweep, |_, _| false);
        let first_broadcast = sent.iter().find(|(_, _, to)| to.is_none()).unwrap().0;
        let last_unicast = sent.iter().rfind(|(_, _, to)| to.is_some()).unwrap().0;
        assert_eq!(first_broadcast, Duration::ZERO);
        assert!(
            last_unicast < Duration::from_millis(260),
            "{last_unicast:?}"
        );
    }

    #[test]
    fn known_hosts_go_first_by_unicast_and_retry_by_broadcast() {
        let known = Mac([0, 0x80, 0xf0, 0, 0, 9]);
        let mut sweep = Sweep::new(
            [(host(1), Prior::Unknown), (host(9), Prior::Known(known))],
            2,
            WAIT,
            1000,
        );
        let (_, sent) = run(&mut sweep, |_, _| false);
        assert_eq!(sent[0].1, host(9));
        assert_eq!(sent[0].2, Some(known));
        let retry = sent
            .iter()
            .rfind(|(_, address, _)| *address == host(9))
            .unwrap();
        assert_eq!(retry.2, None);
    }

    #[test]
    fn an_address_silent_last_time_gets_fewer_requests() {
        let mut sweep = Sweep::new(
            [(host(1), Prior::Silent), (host(2), Prior::Unknown)],
            4,
            WAIT,
            1000,
        );
        let (_, sent) = run(&mut sweep, |_, _| false);
        let to = |h| sent.iter().filter(|(_, address, _)| *address == h).count();
        assert_eq!((to(host(1)), to(host(2))), (SILENT_ATTEMPTS as usize, 4));
        assert_eq!(sweep.missed(), [host(1), host(2)]);
    }

    #[test]
    fn a_known_mac_outweighs_silence_and_silence_outweighs_nothing() {
        let mac = Mac([2; 6]);
        assert_eq!(Prior::of(Some(mac), true), Prior::Known(mac));
        assert_eq!(Prior::of(None, true), Prior::Silent);
        assert_eq!(Prior::of(None, false), Prior::Unknown);
    }

    #[test]
    fn answers_from_elsewhere_and_second_answers_change_nothing() {
        let mut sweep = Sweep::new([(host(1), Prior::Unknown)], 2, WAIT, 1000);
        assert!(!sweep.answered(host(77), Mac([2; 6])));
        assert!(sweep.answered(host(1), Mac([2; 6])));
        assert!(!sweep.answered(host(1), Mac([4; 6])));
        assert_eq!(sweep.found(), [(host(1), Mac([2; 6]))]);
        assert_eq!(sweep.next(Duration::ZERO), Next::Done);
    }
}
