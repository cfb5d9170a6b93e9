//! The agent: one DNS listener (UDP and TCP) on every gateway address of the networks this
//! appliance serves, all sharing one handler. An address that is not there yet (the LAN still
//! coming up) is bound as soon as it appears.
//!
//! Invariant: whereami listens only on LAN addresses, never on the uplink side, and answers
//! only askers on site networks.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fieldnet::config::Config;
use hickory_server::Server;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::answer::Views;
use crate::forward::Forwarder;
use crate::packet::AnswerCache;
use crate::server::{Handler, Metrics, State};

/// TCP connections idle this long are closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How often addresses that could not be bound are tried again.
const REBIND: Duration = Duration::from_secs(2);

pub async fn run(
    config: Config,
    registry: Registry,
    health: fieldnet::obs::Health,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.agents.whereami.clone();
    let metrics = Metrics::register(&registry)?;
    let _bus = fieldnet::rt::announce(
        &config,
        "whereami",
        env!("CARGO_PKG_VERSION"),
        settings.common.metrics_listen,
    )?;
    let state = Arc::new(State {
        views: RwLock::new(Views::from_config(&config)?),
        forwarder: Forwarder::new(
            &settings.upstreams,
            settings.cache_size,
            settings.upstream_timeout,
            settings.serve_stale,
        )?,
        metrics,
        answers: AnswerCache::new(settings.cache_size as usize),
    });
    let networks: Vec<_> = config.networks.iter().map(|n| n.subnet).collect();
    let mut pending: Vec<SocketAddr> = config
        .own_networks()
        .map(|n| SocketAddr::new(IpAddr::V4(n.gateway), settings.port))
        .collect();
    let mut servers = Vec::new();
    let mut rebind = tokio::time::interval(REBIND);
    let mut ready = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = rebind.tick() => {
                let mut still = Vec::new();
                for address in pending {
                    match listen(address, &state, &networks, &shutdown).await {
                        Ok(server) => {
                            tracing::info!(%address, "answering DNS");
                            servers.push(server);
                        }
                        Err(error) => {
                            tracing::warn!(%address, error = format!("{error:#}"), "cannot listen yet; trying again");
                            still.push(address);
                        }
                    }
                }
                pending = still;
                if !ready {
                    fieldnet::rt::ready(&health, &shutdown);
                    ready = true;
                }
            }
        }
    }
    for server in &mut servers {
        let _ = server.shutdown_gracefully().await;
    }
    Ok(())
}

/// Serves `address`: UDP in a thread of ours (`udp`), TCP with hickory's server, which is
/// returned.
async fn listen(
    address: SocketAddr,
    state: &Arc<State>,
    networks: &[ipnet::Ipv4Net],
    shutdown: &CancellationToken,
) -> anyhow::Result<Server<Handler>> {
    let udp = std::net::UdpSocket::bind(address)?;
    let tcp = TcpListener::bind(address).await?;
    let handler = Handler {
        state: Arc::clone(state),
    };
    let mut server = Server::new(handler.clone());
    server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
    crate::udp::spawn(
        udp,
        handler,
        networks.to_vec(),
        tokio::runtime::Handle::current(),
        shutdown.child_token(),
    )?;
    Ok(server)
}
