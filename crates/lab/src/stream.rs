//! A client-visible measure of outages: a UDP stream from a client namespace to an echo server
//! in another namespace, one small packet every interval; the outage is the longest gap
//! between replies. This is what "the application saw" in the failover scenarios.
//!
//! Invariant: both ends are threads with sockets made inside their namespaces; they stop by
//! themselves when the guard drops, and the stream is bounded by its own duration.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::netns::Netns;

/// A UDP echo server in a namespace; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl EchoServer {
    /// Listens on `address` (which must belong to `ns`) and echoes every datagram back.
    pub fn start(ns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        let socket = ns
            .run(move || UdpSocket::bind(address))?
            .with_context(|| format!("binding the echo server on {address} in {}", ns.name()))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..n], from);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            address,
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a stream saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    pub sent: u64,
    pub received: u64,
    /// The longest time without a reply, measured between replies (or from the start or to
    /// the end of the stream when replies stopped there).
    pub longest_gap: Duration,
    /// When (since the stream started) the longest gap began.
    pub gap_started: Duration,
}

/// A running stream; [`Stream::finish`] stops it and reports.
#[derive(Debug)]
pub struct Stream {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<u64>>,
    receiver: Option<JoinHandle<Vec<Instant>>>,
    started: Instant,
}

impl Stream {
    /// Starts sending from `client` to `server` every `interval`, for at most `limit`.
    pub fn start(
        client: &Netns,
        server: SocketAddr,
        interval: Duration,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let socket = client
            .run(move || -> std::io::Result<UdpSocket> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.connect(server)?;
                Ok(socket)
            })?
            .with_context(|| format!("opening the stream socket in {}", client.name()))?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let receiving = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < limit {
                // Errors (no route for a moment) are part of what is measured: keep going.
                let _ = socket.send(&sent.to_be_bytes());
                sent += 1;
                next += interval;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            sent
        });
        let flag = stop.clone();
        let receiver = std::thread::spawn(move || {
            let mut buffer = [0u8; 64];
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if receiving.recv(&mut buffer).is_ok() {
                    seen.push(Instant::now());
                }
            }
            seen
        });
        Ok(Self {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
            started,
        })
    }

    /// Stops the stream and reports what it saw.
    pub fn finish(mut self) -> StreamReport {
        // Let the last replies arrive.
        std::thread::sleep(Duration::from_millis(100));
        let ended = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.take().map_or(0, |t| t.join().unwrap_or(0));
        let arrivals = self
            .receiver
            .take()
            .map_or_else(Vec::new, |t| t.join().unwrap_or_default());
        let mut longest_gap = Duration::ZERO;
        let mut gap_started = Duration::ZERO;
        let mut previous = self.started;
        for &at in arrivals.iter().chain(std::iter::once(&ended)) {
            let gap = at.saturating_duration_since(previous);
            if gap > longest_gap {
                longest_gap = gap;
                gap_started = previous.saturating_duration_since(self.started);
            }
            previous = at;
        }
        StreamReport {
            sent,
            received: arrivals.len() as u64,
            longest_gap,
            gap_started,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.sender.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.receiver.take() {
            let _ = thread.join();
        }
    }
}

/// A minimal HTTP server in a namespace answering every request with one status and no body,
/// as a connectivity-check endpoint (204) or a captive portal (302) does. Stops when dropped.
#[derive(Debug)]
pub struct HttpResponder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl HttpResponder {
    pub fn start(ns: &Netns, address: SocketAddr, status: u16) -> anyhow::Result<Self> {
        Self::start_with_body(ns, address, status, 0)
    }

    /// Like [`HttpResponder::start`], answering with a body of `body_len` bytes (a download
    /// for throughput tests).
    pub fn start_with_body(
        ns: &Netns,
        address: SocketAddr,
        status: u16,
        body_len: usize,
    ) -> anyhow::Result<Self> {
        let listener = ns
            .run(move || std::net::TcpListener::bind(address))?
            .with_context(|| format!("binding the HTTP responder on {address} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // One thread per connection: a slow download must not hold up a check.
                        let flag = flag.clone();
                        std::thread::spawn(move || serve_one(stream, status, body_len, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            address,
        })
    }
}

/// Answers one request on `stream` with `status` and a body of `body_len` bytes.
fn serve_one(mut stream: std::net::TcpStream, status: u16, body_len: usize, stop: &AtomicBool) {
    use std::io::{Read as _, Write as _};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let response =
        format!("HTTP/1.1 {status} Lab\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n");
    if stream.write_all(response.as_bytes()).is_err() {
        return;
    }
    let chunk = [b'x'; 16 * 1024];
    let mut left = body_len;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let n = left.min(chunk.len());
        if stream.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n;
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
