//! The peer API's edge: the HTTP listener answering peers (its answers are built by the agent,
//! which owns the leases), and one task per peer that pulls its changes and nudges it.
//!
//! The listener is not for the LANs: it binds only this appliance's addresses on its peer
//! paths (and loopback), takes connections only from the peers' addresses on those paths (and
//! loopback), at most [`MAX_CONNECTIONS`] at once, each with [`HEADER_TIMEOUT`] to send its
//! request head and [`CONNECTION_LIFETIME`] in all; what it refuses it says in the log (at most
//! every [`WARN_EVERY`]).
//!
//! Invariant: a peer's reply reaches the agent only after its tag verified under the site key
//! for the nonce this task just sent, and only if it fits in [`peer::MAX_REPLY_BYTES`];
//! anything else is a failed attempt.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fieldnet::config::{Config, PathKind};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::peer::{self, PeerKey, SyncParams, SyncReply, Synced};

/// A peer asks for changes: the agent answers on `answer`.
#[derive(Debug)]
pub struct SyncAsk {
    pub params: SyncParams,
    pub answer: oneshot::Sender<SyncReply>,
}

/// What a peer task reports.
#[derive(Debug)]
pub enum PeerEvent {
    /// A verified reply.
    Reply { peer: u8, reply: SyncReply },
    /// No verified reply this time.
    Failed { peer: u8, error: String },
}

/// Connections the peer API serves at once (peers hold one or two each).
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may live (peers open a new one).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Refusals are logged at most this often (with how many there were).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Who may use the peer API: the configured peers and the addresses they use.
#[derive(Debug, Clone, Default)]
pub struct PeerAccess {
    /// This appliance's addresses on its peer paths: where the API listens (and loopback).
    pub locals: BTreeSet<Ipv4Addr>,
    /// Per peer: its addresses on the paths.
    pub peers: BTreeMap<u8, BTreeSet<Ipv4Addr>>,
}

impl PeerAccess {
    /// Whether a connection from `source` may be served at all.
    pub fn admits(&self, source: IpAddr) -> bool {
        source.is_loopback()
            || matches!(source, IpAddr::V4(v4) if self.peers.values().any(|a| a.contains(&v4)))
    }

    /// Whether a request saying it is from `from` may come from `source`.
    pub fn speaks_for(&self, from: u8, source: IpAddr) -> bool {
        self.peers.get(&from).is_some_and(|addresses| {
            source.is_loopback() || matches!(source, IpAddr::V4(v4) if addresses.contains(&v4))
        })
    }
}

#[derive(Clone)]
struct ApiState {
    key: PeerKey,
    access: Arc<PeerAccess>,
    asks: mpsc::Sender<SyncAsk>,
    /// Per peer: wakes the task that pulls from it.
    nudged: Arc<BTreeMap<u8, Arc<Notify>>>,
    fresh: Arc<Mutex<peer::Freshness>>,
    refusals: fieldnet::obs::Refusals,
}

/// Where a connection came from, for the handlers.
#[derive(Debug, Clone, Copy)]
struct Source(IpAddr);

impl ApiState {
    fn refused(&self, kind: &'static str, detail: &str) {
        self.refusals.refused(kind, detail);
    }
}

/// Binds the peer API on `port` of `access.locals` and loopback (before those addresses exist,
/// if need be) and serves it until shutdown.
pub async fn serve(
    port: u16,
    access: PeerAccess,
    key: PeerKey,
    asks: mpsc::Sender<SyncAsk>,
    nudged: BTreeMap<u8, Arc<Notify>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = ApiState {
        key,
        access: Arc::new(access),
        asks,
        nudged: Arc::new(nudged),
        fresh: Arc::new(Mutex::new(peer::Freshness::default())),
        refusals: fieldnet::obs::Refusals::new("DHCP peer API", WARN_EVERY),
    };
    let router = axum::Router::new()
        .route(peer::SYNC_PATH, get(sync))
        .route(peer::NUDGE_PATH, post(nudge))
        .with_state(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut addresses: Vec<Ipv4Addr> = vec![Ipv4Addr::LOCALHOST];
    addresses.extend(state.access.locals.iter().copied());
    for address in addresses {
        let listen = SocketAddr::from((address, port));
        let listener = bind_freely(listen)
            .with_context(|| format!("binding the DHCP peer API on {listen}"))?;
        tokio::spawn(accept(
            listener,
            router.clone(),
            state.clone(),
            Arc::clone(&slots),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// A listener on `listen`, which may be an address not (yet) on any interface.
fn bind_freely(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(64)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

/// Takes connections on one listener until shutdown.
async fn accept(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    state: ApiState,
    slots: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: said, and a pause so it is not a busy loop.
                    state.refused("accept failed", &error.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if !state.access.admits(from.ip()) {
            state.refused("not a peer's address", &from.to_string());
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            state.refused("connection limit", &from.to_string());
            continue;
        };
        let app = router.clone().layer(axum::Extension(Source(from.ip())));
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
            }
        });
    }
}

/// Checks a request's tag, parameters, sender and freshness: its parameters, or the answer.
fn admit(
    state: &ApiState,
    source: IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<SyncParams, (StatusCode, &'static str)> {
    if !authentic(state, uri, headers) {
        state.refused("bad tag", &source.to_string());
        return Err((StatusCode::FORBIDDEN, "not signed with the site key\n"));
    }
    let Some(params) = SyncParams::parse(uri.query().unwrap_or_default()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "needs from, nonce (hex), ts, and numeric epoch and since\n",
        ));
    };
    if !state.access.speaks_for(params.from, source) {
        state.refused("not a peer", &format!("from={} at {source}", params.from));
        return Err((
            StatusCode::FORBIDDEN,
            "not a peer of this appliance, or not from its address\n",
        ));
    }
    let checked = state
        .fresh
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(&params, fieldnet::bus::unix_millis());
    match checked {
        Ok(()) => Ok(params),
        Err(peer::Stale::Clock(skew)) => {
            state.refused(
                "clock too far off",
                &format!(
                    "appliance {}'s clock is {:+.1} s from ours; it replicates again once the clocks agree within {} s",
                    params.from,
                    skew as f64 / 1000.0,
                    peer::FRESH_WINDOW.as_secs()
                ),
            );
            Err((StatusCode::FORBIDDEN, "request clock too far from ours\n"))
        }
        Err(peer::Stale::Replayed) => {
            state.refused("replayed", &format!("from={} at {source}", params.from));
            Err((StatusCode::FORBIDDEN, "request already taken\n"))
        }
    }
}

fn authentic(state: &ApiState, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(path_and_query) = uri.path_and_query() else {
        return false;
    };
    headers
        .get(peer::TAG_HEADER)
        .and_then(|tag| tag.to_str().ok())
        .is_some_and(|tag| state.key.verify_request(path_and_query.as_str(), tag))
}

async fn sync(
    State(state): State<ApiState>,
    axum::Extension(Source(source)): axum::Extension<Source>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match admit(&state, source, &uri, &headers) {
        Ok(params) => params,
        Err(refusal) => return refusal.into_response(),
    };
    let nonce = params.nonce.clone();
    let (answer, reply) = oneshot::channel();
    if state.asks.send(SyncAsk { params, answer }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let Ok(reply) = reply.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    };
    let body = match serde_json::to_vec(&reply) {
        Ok(body) => body,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let tag = state.key.sign_reply(&nonce, &body);
    (
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            ),
            (axum::http::HeaderName::from_static(peer::TAG_HEADER), tag),
        ],
        body,
    )
        .into_response()
}

async fn nudge(
    State(state): State<ApiState>,
    axum::Extension(Source(source)): axum::Extension<Source>,
    uri: Uri,
    headers: HeaderMap,
) -> StatusCode {
    let params = match admit(&state, source, &uri, &headers) {
        Ok(params) => params,
        Err((status, _)) => return status,
    };
    match state.nudged.get(&params.from) {
        Some(notify) => {
            notify.notify_one();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// The peers as the agent reaches them.
#[derive(Debug)]
pub struct Peers {
    /// Per peer: wake its task to nudge it (we have news).
    pub news: BTreeMap<u8, Arc<Notify>>,
    /// Per peer: the path the bus says is active.
    pub active: BTreeMap<u8, watch::Sender<Option<PathKind>>>,
    /// What has been stored durably from each peer.
    pub synced: BTreeMap<u8, Synced>,
}

/// The peer side, started: the API listening and a task per peer.
#[derive(Debug)]
pub struct Started {
    pub peers: Peers,
    /// What peers ask the API, for the agent to answer.
    pub asks: mpsc::Receiver<SyncAsk>,
    /// What the peer tasks hear back.
    pub events: mpsc::Receiver<PeerEvent>,
}

/// Starts the peer API on `port` (on this appliance's peer-path addresses) and one task per
/// configured peer, each until `shutdown`.
pub async fn start(
    config: &Config,
    port: u16,
    shutdown: &CancellationToken,
) -> anyhow::Result<Started> {
    let me = config.appliance.id;
    let key = PeerKey::new(&config.site.key.bytes()?);
    let (asks_tx, asks) = mpsc::channel::<SyncAsk>(64);
    let (events_tx, events) = mpsc::channel::<PeerEvent>(64);
    let client = reqwest::Client::builder()
        .timeout(peer::REQUEST_TIMEOUT)
        .connect_timeout(peer::REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the peer HTTP client")?;
    let mut peers = Peers {
        news: BTreeMap::new(),
        active: BTreeMap::new(),
        synced: BTreeMap::new(),
    };
    let mut nudged = BTreeMap::new();
    for configured in &config.peers {
        let (active_tx, active_rx) = watch::channel(None);
        let news = Arc::new(Notify::new());
        let nudge = Arc::new(Notify::new());
        let link = PeerLink {
            me,
            peer: configured.id,
            paths: configured
                .paths
                .iter()
                .map(|path| (path.kind, path.remote))
                .collect(),
            port,
            active: active_rx,
            nudged: Arc::clone(&nudge),
            news: Arc::clone(&news),
        };
        tokio::spawn(run_peer(
            link,
            key.clone(),
            client.clone(),
            events_tx.clone(),
            shutdown.clone(),
        ));
        nudged.insert(configured.id, nudge);
        peers.news.insert(configured.id, news);
        peers.active.insert(configured.id, active_tx);
    }
    let access = PeerAccess {
        locals: config
            .peers
            .iter()
            .flat_map(|peer| peer.paths.iter().map(|path| path.local))
            .collect(),
        peers: config
            .peers
            .iter()
            .map(|peer| (peer.id, peer.paths.iter().map(|path| path.remote).collect()))
            .collect(),
    };
    serve(port, access, key, asks_tx, nudged, shutdown.clone()).await?;
    Ok(Started {
        peers,
        asks,
        events,
    })
}

/// One peer as its task sees it.
#[derive(Debug)]
pub struct PeerLink {
    pub me: u8,
    pub peer: u8,
    /// Path kind and the peer's address on it, in configured order.
    pub paths: Vec<(PathKind, Ipv4Addr)>,
    pub port: u16,
    /// The path the bus says carries traffic to the peer.
    pub active: watch::Receiver<Option<PathKind>>,
    /// Woken when the peer nudges us: pull now.
    pub nudged: Arc<Notify>,
    /// Woken when we have news for the peer: nudge it.
    pub news: Arc<Notify>,
}

/// Pulls the peer's changes every [`peer::SYNC_INTERVAL`] and whenever it nudges, and nudges it
/// whenever we have news, until shutdown.
pub async fn run_peer(
    link: PeerLink,
    key: PeerKey,
    client: reqwest::Client,
    events: mpsc::Sender<PeerEvent>,
    shutdown: CancellationToken,
) {
    let mut epoch = 0_u64;
    let mut cursor = 0_u64;
    // The address that answered last is tried first.
    let mut working: Option<Ipv4Addr> = None;
    let mut interval = tokio::time::interval(peer::SYNC_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut again = false;
    loop {
        if !again {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
                () = link.nudged.notified() => {}
                () = link.news.notified() => {
                    send_nudge(&link, &key, &client, working).await;
                    continue;
                }
            }
        }
        let addresses = candidates(&link, working);
        let mut failure = String::from("no path address");
        again = false;
        for address in addresses {
            match pull(&link, &key, &client, address, epoch, cursor).await {
                Ok(reply) => {
                    working = Some(address);
                    epoch = reply.epoch;
                    cursor = reply.cursor;
                    again = reply.more;
                    let event = PeerEvent::Reply {
                        peer: link.peer,
                        reply,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                    failure.clear();
                    break;
                }
                Err(error) => failure = format!("{address}: {error:#}"),
            }
        }
        if !failure.is_empty() {
            working = None;
            let event = PeerEvent::Failed {
                peer: link.peer,
                error: failure,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

fn candidates(link: &PeerLink, working: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let active = *link.active.borrow();
    let mut addresses = peer::addresses(&link.paths, active);
    if let Some(working) = working
        && let Some(at) = addresses.iter().position(|a| *a == working)
    {
        addresses.remove(at);
        addresses.insert(0, working);
    }
    addresses
}

async fn pull(
    link: &PeerLink,
    key: &PeerKey,
    client: &reqwest::Client,
    address: Ipv4Addr,
    epoch: u64,
    since: u64,
) -> anyhow::Result<SyncReply> {
    let nonce = peer::nonce();
    let query = peer::sync_query(link.me, epoch, since, &nonce, fieldnet::bus::unix_millis());
    let response = client
        .get(format!("http://{address}:{}{query}", link.port))
        .header(peer::TAG_HEADER, key.sign_request(&query))
        .send()
        .await?;
    let status = response.status();
    let tag = response
        .headers()
        .get(peer::TAG_HEADER)
        .and_then(|t| t.to_str().ok())
        .map(str::to_owned);
    let body = read_capped(response, peer::MAX_REPLY_BYTES).await?;
    anyhow::ensure!(status.is_success(), "answered {status}");
    let tag = tag.context("reply carries no tag")?;
    anyhow::ensure!(
        key.verify_reply(&nonce, &body, &tag),
        "reply not signed with the site key for this request"
    );
    let reply: SyncReply = serde_json::from_slice(&body).context("unreadable reply")?;
    anyhow::ensure!(
        reply.from == link.peer,
        "appliance {} answered for appliance {}",
        reply.from,
        link.peer
    );
    Ok(reply)
}

/// The body of `response`, refused once it passes `limit` bytes (a peer cannot make us hold
/// more).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> anyhow::Result<Vec<u8>> {
    if let Some(length) = response.content_length() {
        anyhow::ensure!(
            length <= limit as u64,
            "reply of {length} bytes, over {limit}"
        );
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        anyhow::ensure!(
            body.len() + chunk.len() <= limit,
            "reply over {limit} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn send_nudge(
    link: &PeerLink,
    key: &PeerKey,
    client: &reqwest::Client,
    working: Option<Ipv4Addr>,
) {
    let Some(address) = working.or_else(|| candidates(link, None).first().copied()) else {
        return;
    };
    let query = peer::nudge_query(link.me, &peer::nonce(), fieldnet::bus::unix_millis());
    let sent = client
        .post(format!("http://{address}:{}{query}", link.port))
        .header(peer::TAG_HEADER, key.sign_request(&query))
        .send()
        .await;
    if let Err(error) = sent {
        tracing::debug!(peer = link.peer, %error, "nudging a peer");
    }
}
