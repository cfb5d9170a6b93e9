//! The peer API's edge: the HTTP listener answering peers (its answers are built by the agent,
//! which owns the leases), and one task per peer that pulls its changes and nudges it.
//!
//! Invariant: a peer's reply reaches the agent only after its tag verified under the site key
//! for the nonce this task just sent; anything else is a failed attempt.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::peer::{self, PeerKey, SyncParams, SyncReply};

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

#[derive(Clone)]
struct ApiState {
    key: PeerKey,
    asks: mpsc::Sender<SyncAsk>,
    /// Per peer: wakes the task that pulls from it.
    nudged: Arc<BTreeMap<u8, Arc<Notify>>>,
}

/// Binds the peer API on `listen` and serves it until shutdown.
pub async fn serve(
    listen: SocketAddr,
    key: PeerKey,
    asks: mpsc::Sender<SyncAsk>,
    nudged: BTreeMap<u8, Arc<Notify>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = axum::Router::new()
        .route(peer::SYNC_PATH, get(sync))
        .route(peer::NUDGE_PATH, post(nudge))
        .with_state(ApiState {
            key,
            asks,
            nudged: Arc::new(nudged),
        });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the DHCP peer API on {listen}"))?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "DHCP peer API failed");
        }
    });
    Ok(())
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

async fn sync(State(state): State<ApiState>, uri: Uri, headers: HeaderMap) -> Response {
    if !authentic(&state, &uri, &headers) {
        return (StatusCode::FORBIDDEN, "not signed with the site key\n").into_response();
    }
    let Some(params) = SyncParams::parse(uri.query().unwrap_or_default()) else {
        return (
            StatusCode::BAD_REQUEST,
            "needs from, nonce, and numeric epoch and since\n",
        )
            .into_response();
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

async fn nudge(State(state): State<ApiState>, uri: Uri, headers: HeaderMap) -> StatusCode {
    if !authentic(&state, &uri, &headers) {
        return StatusCode::FORBIDDEN;
    }
    let Some(params) = SyncParams::parse(uri.query().unwrap_or_default()) else {
        return StatusCode::BAD_REQUEST;
    };
    match state.nudged.get(&params.from) {
        Some(notify) => {
            notify.notify_one();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// One peer as its task sees it.
#[derive(Debug)]
pub struct PeerLink {
    pub me: u8,
    pub peer: u8,
    /// Path kind and the peer's address on it, in configured order.
    pub paths: Vec<(String, Ipv4Addr)>,
    pub port: u16,
    /// The path the bus says carries traffic to the peer.
    pub active: watch::Receiver<Option<String>>,
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
    let active = link.active.borrow().clone();
    let mut addresses = peer::addresses(&link.paths, active.as_deref());
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
    let query = peer::sync_query(link.me, epoch, since, &nonce);
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
    let body = response.bytes().await?;
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

async fn send_nudge(
    link: &PeerLink,
    key: &PeerKey,
    client: &reqwest::Client,
    working: Option<Ipv4Addr>,
) {
    let Some(address) = working.or_else(|| candidates(link, None).first().copied()) else {
        return;
    };
    let query = peer::nudge_query(link.me, &peer::nonce());
    let sent = client
        .post(format!("http://{address}:{}{query}", link.port))
        .header(peer::TAG_HEADER, key.sign_request(&query))
        .send()
        .await;
    if let Err(error) = sent {
        tracing::debug!(peer = link.peer, %error, "nudging a peer");
    }
}
