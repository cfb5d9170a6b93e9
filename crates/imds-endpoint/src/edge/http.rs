//! HTTP on the metadata address: one axum router answering every path through
//! [`Imds::handle`], connections taken by hand so each knows its client's MAC (from the
//! neighbour mirror, at accept) and can set the IP TTL of the token PUT's answer.
//!
//! Invariants: at most [`MAX_CONNECTIONS`] connections in all and
//! [`MAX_CONNECTIONS_PER_CLIENT`] per client address; a request's head must arrive within
//! [`HEADER_TIMEOUT`] and a connection lives at most [`CONNECTION_LIFETIME`]; a reply that
//! carries a hop limit leaves with that IP TTL, and the next reply on the connection with the
//! socket's own TTL again. Credentials never reach a log: only the outcome does.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Extension;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::kernel::Neighbours;
use super::metrics::Metrics;
use crate::identity::Mac;
use crate::protocol::{self, Imds, Outcome};

pub const MAX_CONNECTIONS: usize = 4096;
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// The most bytes of request head hyper buffers.
const MAX_HEAD_BYTES: usize = 16 * 1024;

const TOKEN: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
const TOKEN_TTL: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token-ttl-seconds");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub imds: Mutex<Imds>,
    pub neighbours: Neighbours,
    pub metrics: Metrics,
    /// Refused askers, said at most every few seconds (a flood must not fill the journal).
    refusals: fieldnet::obs::Refusals,
    /// Open connections per client, and in all.
    connections: Mutex<(HashMap<Ipv4Addr, usize>, usize)>,
}

impl Shared {
    pub fn new(imds: Imds, neighbours: Neighbours, metrics: Metrics) -> Shared {
        Shared {
            imds: Mutex::new(imds),
            neighbours,
            metrics,
            refusals: fieldnet::obs::Refusals::new("imds-endpoint", Duration::from_secs(10)),
            connections: Mutex::new((HashMap::new(), 0)),
        }
    }

    pub fn imds(&self) -> std::sync::MutexGuard<'_, Imds> {
        self.imds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a connection from `client` in, if the limits allow.
    fn admit(&self, client: Ipv4Addr) -> Option<ConnectionSlot<'_>> {
        let mut guard = self.connections.lock().expect("connections lock");
        let (per_client, total) = &mut *guard;
        let mine = per_client.entry(client).or_default();
        if *total >= MAX_CONNECTIONS || *mine >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(ConnectionSlot {
            shared: self,
            client,
        })
    }
}

struct ConnectionSlot<'a> {
    shared: &'a Shared,
    client: Ipv4Addr,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut guard = self.shared.connections.lock().expect("connections lock");
        let (per_client, total) = &mut *guard;
        *total -= 1;
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// One connection's facts, handed to the handler.
struct Connection {
    client: Ipv4Addr,
    neighbour: Option<Mac>,
    /// The connection's socket, owned by the hyper connection that runs every handler call.
    fd: RawFd,
    /// The socket's own TTL while a reply's hop limit is on it; 0 otherwise.
    lowered_from: AtomicU32,
}

impl Connection {
    /// Sets the socket's IP TTL.
    fn set_ttl(&self, ttl: u32) -> std::io::Result<()> {
        // SAFETY: `fd` is the socket of the TcpStream the hyper connection owns; handlers run
        // only inside that connection's future, so the descriptor is open and is that socket
        // for as long as this borrow lasts.
        let socket = unsafe { BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&socket).set_ttl_v4(ttl)
    }

    fn ttl(&self) -> std::io::Result<u32> {
        // SAFETY: as in `set_ttl`.
        let socket = unsafe { BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&socket).ttl_v4()
    }
}

/// Has the kernel hand over a connection only once its first request has arrived
/// (`TCP_DEFER_ACCEPT`, waiting up to a second for it): one wake-up per connection fewer, and
/// a connection that never says anything never reaches the agent.
pub fn defer_accept(listener: &tokio::net::TcpListener) -> std::io::Result<()> {
    let seconds: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `seconds`, which lives across
    // the call; the descriptor is the listener's, open for as long as `listener` is borrowed.
    let result = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Takes connections on `listener` until shutdown. Connections still open then end with the
/// runtime, which the agent leaves right after: a device's SDK simply asks again.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = accept(listener, shared) => {}
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let router = axum::Router::new()
        .fallback(answer)
        .with_state(Arc::clone(&shared));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let IpAddr::V4(client) = from.ip() else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let router = router.clone();
        tokio::spawn(async move {
            let Some(_slot) = shared.admit(client) else {
                shared.metrics.connections_refused.inc();
                shared
                    .refusals
                    .refused("connection_limit", &client.to_string());
                return;
            };
            // No TCP_NODELAY: every answer leaves in one write, after the request it answers.
            let connection = Arc::new(Connection {
                client,
                neighbour: shared.neighbours.get(client),
                fd: stream.as_raw_fd(),
                lowered_from: AtomicU32::new(0),
            });
            // The connection's facts ride on each request into the one router.
            let service =
                hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Arc::clone(&connection));
                    router.clone().oneshot(request)
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let serving = builder
                .serve_connection(hyper_util::rt::TokioIo::new(CloseOnDrop(stream)), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, serving).await;
        });
    }
}

/// A connection's stream whose shutdown is its close: the FIN leaves with `close` when the
/// stream is dropped, after everything written, instead of with a `shutdown` call of its own
/// (one system call fewer for every connection that ends after one answer).
struct CloseOnDrop(tokio::net::TcpStream);

impl tokio::io::AsyncRead for CloseOnDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for CloseOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn answer(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    Extension(connection): Extension<Arc<Connection>>,
    request: Request<Body>,
) -> Response<Body> {
    let headers = request.headers();
    let body_len = declared_length(headers);
    let wanted = protocol::Request {
        method: method_word(request.method()),
        path: request.uri().path(),
        token: headers.get(&TOKEN).map(HeaderValue::as_bytes),
        ttl: headers.get(&TOKEN_TTL).map(HeaderValue::as_bytes),
        forwarded_for: headers.contains_key(&FORWARDED_FOR),
        body_len,
    };
    let now = fieldnet::bus::unix_millis();
    let reply = shared.imds().handle(
        now,
        connection.client,
        connection.neighbour,
        &wanted,
        random_token_bytes,
    );
    shared.metrics.requests_by_outcome[reply.outcome.index()].inc();
    match reply.outcome {
        Outcome::Refused(refusal) => {
            shared
                .metrics
                .refused
                .with_label_values(&[refusal.as_str()])
                .inc();
            let mac = connection
                .neighbour
                .map_or_else(|| "no MAC".to_owned(), |mac| mac.to_string());
            shared
                .refusals
                .refused(refusal.as_str(), &format!("{} ({mac})", connection.client));
        }
        Outcome::Unavailable => {
            tracing::warn!(client = %connection.client, "credentials asked for, none with enough validity left")
        }
        _ => {
            tracing::trace!(client = %connection.client, path = wanted.path, outcome = reply.outcome.as_str(), "answered")
        }
    }
    // The hop limit goes on this reply; the connection's next reply leaves as usual.
    match reply.hop_limit {
        Some(hops) => {
            let own = match connection.lowered_from.load(Ordering::Relaxed) {
                0 => connection.ttl().unwrap_or(64),
                own => own,
            };
            if connection.set_ttl(u32::from(hops)).is_ok() {
                connection.lowered_from.store(own, Ordering::Relaxed);
            }
        }
        None => {
            let own = connection.lowered_from.swap(0, Ordering::Relaxed);
            if own != 0 {
                let _ = connection.set_ttl(own);
            }
        }
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if reply.json {
        "application/json"
    } else {
        "text/plain"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("EC2ws"));
    if let Some(ttl) = reply.token_ttl {
        response
            .headers_mut()
            .insert(TOKEN_TTL.clone(), HeaderValue::from(ttl));
    }
    response
}

fn method_word(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

/// The declared body length; a chunked body counts as too long (nothing here takes one).
fn declared_length(headers: &HeaderMap) -> u64 {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return u64::MAX;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// A token's bytes, from the operating system's generator: tokens are bearer secrets.
fn random_token_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // Without the OS generator (never seen on Linux ≥ 3.17) the token is still bound to
        // its client's address and MAC.
        bytes.iter_mut().for_each(|byte| *byte = fastrand::u8(..));
    }
    bytes
}
