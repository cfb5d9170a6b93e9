//! A threaded HTTP/1.1 reverse proxy that answers a schedule of requests with an AWS-style
//! error and forwards the others byte for byte. Invariant: forwarded requests keep their
//! `Host` header and body untouched (the SigV4 signature covers them); only `Connection` is
//! set to `close`, towards the upstream and towards the client, so every request has its own
//! connection and is counted exactly once.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context;

use super::raw_http;

/// How long a proxied connection may stay silent before the proxy gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiting acceptor looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Which requests the proxy answers itself, and with what.
///
/// Request `n` (counted from 1, in arrival order) is injected when `n <= throttle_first`, or,
/// with `throttle_every: Some(k)`, when it is the k-th, 2k-th... request after those; so
/// `throttle_every: Some(1)` injects every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Faults {
    pub throttle_first: u32,
    pub throttle_every: Option<u32>,
    /// HTTP status of injected answers (400 for AWS throttling, 503 for unavailability...).
    pub status: u16,
    /// AWS error code of injected answers.
    pub code: String,
}

impl Default for Faults {
    /// No faults: every request is forwarded.
    fn default() -> Self {
        Faults {
            throttle_first: 0,
            throttle_every: None,
            status: 400,
            code: "Throttling".to_owned(),
        }
    }
}

impl Faults {
    /// The first `count` requests get 400 `Throttling`.
    pub fn throttle_first(count: u32) -> Self {
        Faults {
            throttle_first: count,
            ..Faults::default()
        }
    }

    /// Every request gets 400 `Throttling`.
    pub fn throttle_all() -> Self {
        Faults {
            throttle_every: Some(1),
            ..Faults::default()
        }
    }

    /// The first `count` requests get 503 `ServiceUnavailable`.
    pub fn unavailable_first(count: u32) -> Self {
        Faults {
            throttle_first: count,
            status: 503,
            code: "ServiceUnavailable".to_owned(),
            ..Faults::default()
        }
    }

    /// Whether request number `request` (from 1) is answered with an error.
    pub fn injects(&self, request: u32) -> bool {
        if request <= self.throttle_first {
            return true;
        }
        match self.throttle_every {
            Some(every) if every > 0 => (request - self.throttle_first).is_multiple_of(every),
            _ => false,
        }
    }

    /// The whole HTTP response of injected request `request`.
    fn response(&self, request: u32) -> Vec<u8> {
        let request_id = format!("fieldnet-fault-proxy-{request}");
        let (kind, message) = if self.status >= 500 {
            ("Receiver", "Service unavailable")
        } else {
            ("Sender", "Rate exceeded")
        };
        let body = format!(
            "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code>\
             <Message>{message}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>",
            self.code
        );
        format!(
            "HTTP/1.1 {} Injected\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
             x-amzn-RequestId: {request_id}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

#[derive(Debug, Default)]
struct Counters {
    seen: AtomicU32,
    injected: AtomicU32,
    forwarded: AtomicU32,
}

/// A fault-injecting proxy on 127.0.0.1 in front of one upstream; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` ("http://host:port").
    pub fn start(upstream: &str, faults: Faults) -> anyhow::Result<FaultProxy> {
        let authority = upstream
            .strip_prefix("http://")
            .with_context(|| format!("upstream {upstream:?} is not an http:// URL"))?
            .trim_end_matches('/');
        let upstream_address = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving upstream {authority}"))?
            .next()
            .with_context(|| format!("upstream {authority} has no address"))?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fault proxy")?;
        let address = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            let faults = Arc::new(faults);
            thread::Builder::new()
                .name("fault-proxy".to_owned())
                .spawn(move || accept_loop(listener, upstream_address, faults, counters, stop))
                .context("starting the fault proxy thread")?
        };
        Ok(FaultProxy {
            address,
            counters,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The URL to give clients instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Requests read so far.
    pub fn seen(&self) -> u32 {
        self.counters.seen.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected error.
    pub fn injected(&self) -> u32 {
        self.counters.injected.load(Ordering::SeqCst)
    }

    /// Requests passed to the upstream.
    pub fn forwarded(&self) -> u32 {
        self.counters.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Arc<Faults>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    // The listener does not block, so the loop sees `stop` within a poll interval whichever
    // thread (or network namespace) drops the proxy.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        let connection = match listener.accept() {
            Ok((connection, _)) => connection,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => continue,
        };
        if connection.set_nonblocking(false).is_err() {
            continue;
        }
        let faults = Arc::clone(&faults);
        let counters = Arc::clone(&counters);
        // Each connection carries one request and ends within IO_TIMEOUT, so these threads
        // need no joining.
        let _ = thread::Builder::new()
            .name("fault-proxy-connection".to_owned())
            .spawn(move || {
                if let Err(error) = serve(connection, upstream, &faults, &counters) {
                    eprintln!("fault proxy: {error}");
                }
            });
    }
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    faults: &Faults,
    counters: &Counters,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(request) = raw_http::read_request(&mut client)? else {
        return Ok(());
    };
    let number = counters.seen.fetch_add(1, Ordering::SeqCst) + 1;
    if faults.injects(number) {
        counters.injected.fetch_add(1, Ordering::SeqCst);
        return client.write_all(&faults.response(number));
    }
    counters.forwarded.fetch_add(1, Ordering::SeqCst);
    let mut forwarded = raw_http::with_connection_close(&request.head).into_bytes();
    forwarded.extend_from_slice(b"\r\n\r\n");
    forwarded.extend_from_slice(&request.body);
    let response = raw_http::exchange(upstream, &forwarded, IO_TIMEOUT)?;
    // The client must not reuse this connection: the proxy closes it after one answer.
    match raw_http::find_head_end(&response) {
        Some(head_end) => {
            let head = String::from_utf8_lossy(&response[..head_end]);
            let mut rewritten = raw_http::with_connection_close(&head).into_bytes();
            rewritten.extend_from_slice(&response[head_end..]);
            client.write_all(&rewritten)
        }
        None => client.write_all(&response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_of_injected_requests() {
        let injected = |faults: Faults| -> Vec<u32> {
            (1..=10)
                .filter(|request| faults.injects(*request))
                .collect()
        };
        assert_eq!(injected(Faults::default()), Vec::<u32>::new());
        assert_eq!(injected(Faults::throttle_first(3)), [1, 2, 3]);
        assert_eq!(
            injected(Faults::throttle_all()),
            (1..=10).collect::<Vec<_>>()
        );
        let every_third_after_two = Faults {
            throttle_first: 2,
            throttle_every: Some(3),
            ..Faults::default()
        };
        assert_eq!(injected(every_third_after_two), [1, 2, 5, 8]);
        let never = Faults {
            throttle_every: Some(0),
            ..Faults::default()
        };
        assert_eq!(injected(never), Vec::<u32>::new());
    }

    #[test]
    fn injected_answer_is_an_aws_error() {
        let response = Faults::unavailable_first(1).response(7);
        let (status, body) = raw_http::split_response(&response).unwrap();
        assert_eq!(status, 503);
        let parsed = crate::error::parse_error_body(status, std::str::from_utf8(body).unwrap());
        assert_eq!(parsed.code, "ServiceUnavailable");
        assert_eq!(parsed.request_id.as_deref(), Some("fieldnet-fault-proxy-7"));
    }
}
