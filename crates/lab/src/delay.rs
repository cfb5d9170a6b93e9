//! A userspace point-to-point L3 link between two namespaces that adds latency, jitter and
//! loss (the kernel here has no netem): one TUN device in each namespace and one forwarding
//! thread that holds every packet until its release time.
//! Invariant: the thread owns both TUN file descriptors, so the devices exist exactly as long
//! as the `DelayLink`; dropping it stops the thread (within one poll cap) and the devices vanish.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fault::Fault;
use crate::lab::{Lab, validate_ifname};
use crate::netns::Netns;

/// Longest the thread sleeps in poll when nothing is due, which bounds how long Drop waits.
const POLL_CAP: Duration = Duration::from_millis(20);
/// Packets read per device per wake-up, so one busy direction cannot starve the other.
const READ_BATCH: usize = 256;
/// Packets held per direction before new ones are tail-dropped.
const QUEUE_LIMIT: usize = 20_000;

/// Which way packets travel on a [`DelayLink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the first namespace given to [`Lab::delay_link`] to the second.
    AtoB,
    /// From the second namespace to the first.
    BtoA,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::AtoB => 0,
            Direction::BtoA => 1,
        }
    }
}

/// The impairment applied to one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Mean one-way delay added to every packet.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform offset in `-jitter..=+jitter`, not below 0.
    /// Packets are released in release-time order, so jitter reorders them.
    pub jitter: Duration,
    /// Percentage (0..=100) of packets dropped at random.
    pub loss_percent: u32,
}

/// Packets carried and dropped in one direction since the link was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Packets delivered to the other side.
    pub forwarded: u64,
    /// Packets dropped (loss, cut, full queue, write errors).
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Settings {
    directions: [Impairment; 2],
    cuts: u32,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    settings: Mutex<Settings>,
    stop: AtomicBool,
    counters: [Counters; 2],
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A delay link: two TUN devices and the thread between them. See the module documentation.
#[derive(Debug)]
pub struct DelayLink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

impl DelayLink {
    /// Sets `dir`'s impairment: per-packet delay `delay ± jitter` (uniform, not below 0) and
    /// `loss_percent` % random loss. Dropping the guard restores what was in force before
    /// (no impairment on a fresh link). Packets already queued keep their release times.
    pub fn impair(
        &self,
        dir: Direction,
        delay: Duration,
        jitter: Duration,
        loss_percent: u32,
    ) -> Fault {
        let new = Impairment {
            delay,
            jitter,
            loss_percent: loss_percent.min(100),
        };
        let previous = std::mem::replace(&mut self.shared.settings().directions[dir.index()], new);
        let shared = Arc::clone(&self.shared);
        Fault::new(
            format!(
                "{dir:?} {delay:?} ± {jitter:?}, {loss_percent} % loss on {}",
                self.description
            ),
            move || {
                shared.settings().directions[dir.index()] = previous;
                Ok(())
            },
        )
    }

    /// Drops every packet in both directions while the guard lives: a silent blackhole with
    /// both devices up.
    pub fn cut(&self) -> Fault {
        self.shared.settings().cuts += 1;
        let shared = Arc::clone(&self.shared);
        Fault::new(format!("cut of {}", self.description), move || {
            let mut settings = shared.settings();
            settings.cuts = settings.cuts.saturating_sub(1);
            Ok(())
        })
    }

    /// The impairment currently applied to `dir`.
    pub fn impairment(&self, dir: Direction) -> Impairment {
        self.shared.settings().directions[dir.index()]
    }

    /// Packets forwarded and dropped in `dir` so far.
    pub fn counters(&self, dir: Direction) -> LinkCounters {
        let counters = &self.shared.counters[dir.index()];
        LinkCounters {
            forwarded: counters.forwarded.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether the forwarding thread still runs (it stops if a device is removed under it).
    pub fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("lab: forwarding thread of {} panicked", self.description);
        }
    }
}

impl Lab {
    /// A point-to-point L3 link `a:a_if` ⟷ `b:b_if` made of two TUN devices and a forwarding
    /// thread that can add delay, jitter and loss per direction (see [`DelayLink::impair`]).
    /// `a_addr` and `b_addr` are IPv4 host addresses (a `/len` suffix is ignored); each side
    /// gets `ip addr add <own> peer <other>`, so each has a /32 route to the other.
    pub fn delay_link(
        &self,
        a: &Netns,
        a_if: &str,
        a_addr: &str,
        b: &Netns,
        b_if: &str,
        b_addr: &str,
    ) -> anyhow::Result<DelayLink> {
        validate_ifname(a_if)?;
        validate_ifname(b_if)?;
        let a_host = a_addr.split('/').next().unwrap_or(a_addr);
        let b_host = b_addr.split('/').next().unwrap_or(b_addr);
        let a_file = create_tun(a, a_if)?;
        let b_file = create_tun(b, b_if)?;
        a.ip(&["addr", "add", a_host, "peer", b_host, "dev", a_if])?;
        b.ip(&["addr", "add", b_host, "peer", a_host, "dev", b_if])?;
        a.ip(&["link", "set", "dev", a_if, "up"])?;
        b.ip(&["link", "set", "dev", b_if, "up"])?;

        let description = format!("delay link {}:{a_if} <-> {}:{b_if}", a.name(), b.name());
        let shared = Arc::new(Shared::default());
        let thread = thread::Builder::new()
            .name(format!("delay-{a_if}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || Forwarder::new(shared, a_file, b_file).run()
            })
            .with_context(|| format!("starting the forwarding thread of {description}"))?;
        Ok(DelayLink {
            shared,
            thread: Some(thread),
            description,
        })
    }
}

/// Opens `/dev/net/tun` inside `ns` and attaches a new TUN device `ifname` (IFF_TUN, no packet
/// information header); the device lives as long as the returned file.
fn create_tun(ns: &Netns, ifname: &str) -> anyhow::Result<File> {
    let name = ifname.to_owned();
    ns.run(move || -> std::io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs);
        // all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the fd is an open /dev/net/tun; TUNSETIFF reads and writes one ifreq, which
        // `request` is, valid for the duration of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    })?
    .with_context(|| format!("creating TUN device {ifname} in {}", ns.name()))
}

/// One packet waiting for its release time.
#[derive(Debug)]
struct Held {
    release: Instant,
    sequence: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed, so the max-heap pops the earliest release (ties in arrival order).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.release, other.sequence).cmp(&(self.release, self.sequence))
    }
}

/// The forwarding loop's state: devices, one release-ordered queue per direction, an RNG.
struct Forwarder {
    shared: Arc<Shared>,
    devices: [File; 2],
    queues: [BinaryHeap<Held>; 2],
    rng: SplitMix64,
    sequence: u64,
    buffer: Vec<u8>,
}

impl Forwarder {
    fn new(shared: Arc<Shared>, a: File, b: File) -> Forwarder {
        Forwarder {
            shared,
            devices: [a, b],
            queues: [BinaryHeap::new(), BinaryHeap::new()],
            rng: SplitMix64::from_clock(),
            sequence: 0,
            buffer: vec![0; 65_536],
        }
    }

    fn run(mut self) {
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            for direction in 0..2 {
                self.release_due(direction, now);
            }
            let next = self
                .queues
                .iter()
                .filter_map(|queue| queue.peek().map(|held| held.release))
                .min();
            let timeout = next
                .map(|release| release.saturating_duration_since(now))
                .unwrap_or(POLL_CAP)
                .min(POLL_CAP);
            let mut fds = [
                libc::pollfd {
                    fd: self.devices[0].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.devices[1].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timespec = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                // Below one second (1e9 ns), so it fits any c_long.
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `fds` is a valid array of 2 pollfds and `timespec` a valid timeout, both
            // live across the call; a null sigmask leaves the signal mask unchanged.
            let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timespec, std::ptr::null()) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "lab: delay link poll failed: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            for (direction, fd) in fds.iter().enumerate() {
                if fd.revents & libc::POLLIN != 0 {
                    self.receive(direction);
                } else if fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    // The device was removed under us (its namespace torn down): nothing left
                    // to forward.
                    return;
                }
            }
        }
    }

    /// Reads what device `direction` has (packets travelling in that direction) and queues
    /// or forwards each according to the current impairment.
    fn receive(&mut self, direction: usize) {
        let (impairment, cut) = {
            let settings = self.shared.settings();
            (settings.directions[direction], settings.cuts > 0)
        };
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters[direction];
        for _ in 0..READ_BATCH {
            let length = match self.devices[direction].read(&mut self.buffer) {
                Ok(0) => return,
                Ok(length) => length,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let arrived = Instant::now();
            if cut
                || (impairment.loss_percent > 0
                    && self.rng.below(100) < u64::from(impairment.loss_percent))
            {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let delay = self.delay_for(&impairment);
            if delay.is_zero() && self.queues[direction].is_empty() {
                let packet = self.buffer[..length].to_vec();
                self.deliver(direction, &packet);
            } else if self.queues[direction].len() >= QUEUE_LIMIT {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                self.sequence += 1;
                self.queues[direction].push(Held {
                    release: arrived + delay,
                    sequence: self.sequence,
                    packet: self.buffer[..length].to_vec(),
                });
            }
        }
    }

    fn delay_for(&mut self, impairment: &Impairment) -> Duration {
        if impairment.jitter.is_zero() {
            return impairment.delay;
        }
        let jitter = impairment.jitter.as_secs_f64();
        let offset = (self.rng.unit() * 2.0 - 1.0) * jitter;
        Duration::from_secs_f64((impairment.delay.as_secs_f64() + offset).max(0.0))
    }

    fn release_due(&mut self, direction: usize, now: Instant) {
        while self.queues[direction]
            .peek()
            .is_some_and(|held| held.release <= now)
        {
            if let Some(held) = self.queues[direction].pop() {
                self.deliver(direction, &held.packet);
            }
        }
    }

    /// Writes a packet travelling in `direction` into the other side's device.
    fn deliver(&self, direction: usize, packet: &[u8]) {
        let counters = &self.shared.counters[direction];
        match (&self.devices[1 - direction]).write(packet) {
            // A TUN write takes the whole packet or fails; a short count would be a kernel bug.
            Ok(written) if written == packet.len() => {
                counters.forwarded.fetch_add(1, Ordering::Relaxed)
            }
            Ok(_) | Err(_) => counters.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Small fast PRNG (SplitMix64); statistical quality is ample for loss and jitter.
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_clock() -> SplitMix64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        SplitMix64(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound small, so modulo bias is negligible).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_packets_pop_in_release_order() {
        let start = Instant::now();
        let mut heap = BinaryHeap::new();
        for (sequence, millis) in [(1, 30), (2, 10), (3, 20), (4, 10)] {
            heap.push(Held {
                release: start + Duration::from_millis(millis),
                sequence,
                packet: Vec::new(),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|held| held.sequence)).collect();
        assert_eq!(order, [2, 4, 3, 1]);
    }

    #[test]
    fn rng_is_roughly_uniform() {
        let mut rng = SplitMix64(42);
        let below_20 = (0..100_000).filter(|_| rng.below(100) < 20).count();
        assert!((19_000..21_000).contains(&below_20), "{below_20}");
        assert!(
            (0..1000)
                .map(|_| rng.unit())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
