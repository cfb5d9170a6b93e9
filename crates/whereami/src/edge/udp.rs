//! DNS over UDP: one thread per listening socket takes every datagram waiting in one call
//! (`recvmmsg`), answers what the answer cache holds straight away and sends those answers in
//! one call (`sendmmsg`); everything else goes to the hickory handler in a Tokio task of its
//! own, whose response may then be kept in the cache. TCP is [`crate::edge::tcp`], with the same
//! handler.
//!
//! Each datagram's interface comes with it (`IP_PKTINFO`): one from a site address arriving on
//! an uplink is forged and dropped, neither answered nor forwarded.
//!
//! Why a thread and batches: on a small appliance the kernel's per-call cost is most of the
//! cost of an answer from memory; a blocking batch call per wake-up replaces readiness polling
//! plus two calls per query (see `cargo xtask bench dns`).

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};

use hickory_server::net::xfer::Protocol;
use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use crate::edge::server::{Handler, MAX_UDP_PAYLOAD};
use crate::packet::{self, MAX_KEY};

/// Largest request read; longer ones are cut (and then fail to parse).
const MAX_REQUEST: usize = 4096;
/// Datagrams taken (and answers sent) per call.
const BATCH: usize = 32;
/// How long a thread under load lets requests gather between batches (plus the kernel's
/// timer slack, 50 µs by default).
const GATHER: Duration = Duration::from_micros(50);
/// How often a waiting thread looks at the shutdown token.
const WAKE: Duration = Duration::from_millis(500);

/// The view index of loopback askers (the appliance itself).
const LOOPBACK_VIEW: u8 = u8::MAX;

/// The view index of an asker for the answer cache key: the position of its network.
/// `None`: not a site asker (the full path refuses it).
fn view_index(networks: &[Ipv4Net], source: IpAddr) -> Option<u8> {
    match source {
        IpAddr::V4(v4) if v4.is_loopback() => Some(LOOPBACK_VIEW),
        IpAddr::V4(v4) => networks
            .iter()
            .position(|n| n.contains(&v4))
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i != LOOPBACK_VIEW),
        IpAddr::V6(v6) if v6.is_loopback() => Some(LOOPBACK_VIEW),
        IpAddr::V6(_) => None,
    }
}

/// A UDP listener's thread, stopped by [`stop`](Self::stop) or when its token is cancelled.
#[derive(Debug)]
pub struct UdpListener {
    socket: Arc<std::net::UdpSocket>,
    stop: CancellationToken,
}

impl UdpListener {
    /// Stops the thread now: shutting the socket down for reading wakes it from its wait.
    pub fn stop(&self) {
        self.stop.cancel();
        // Unconnected UDP reports ENOTCONN, but the shutdown and the wake-up happen anyway.
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read);
    }
}

/// Serves DNS on `socket` (blocking) in a thread of its own until stopped or `shutdown`; full
/// answers run on `runtime`.
pub fn spawn(
    socket: std::net::UdpSocket,
    handler: Handler,
    networks: Vec<Ipv4Net>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> std::io::Result<UdpListener> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(WAKE))?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
    let name = format!("dns {}", socket.local_addr()?);
    let socket = Arc::new(socket);
    let listener = UdpListener {
        socket: Arc::clone(&socket),
        stop: shutdown.clone(),
    };
    std::thread::Builder::new().name(name).spawn(move || {
        serve(&socket, &handler, &networks, &runtime, &shutdown);
    })?;
    Ok(listener)
}

fn serve(
    socket: &Arc<std::net::UdpSocket>,
    handler: &Handler,
    networks: &[Ipv4Net],
    runtime: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0_u8; MAX_REQUEST]; BATCH];
    let mut receiving = MultiHeaders::<SockaddrStorage>::preallocate(
        BATCH,
        Some(nix::cmsg_space!(nix::libc::in_pktinfo)),
    );
    let mut sending = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut answers: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)))
        .collect();
    let mut to: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    // Length, source, and the interface it arrived on.
    let mut received: Vec<(usize, Option<SockaddrStorage>, Option<u32>)> =
        Vec::with_capacity(BATCH);
    let mut key = [0; MAX_KEY];
    while !shutdown.is_cancelled() {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            match recvmmsg(
                fd,
                &mut receiving,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => {
                    received.extend(messages.map(|m| (m.bytes, m.address, arrived_on(&m))));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(error) => {
                    tracing::warn!(%error, "receiving DNS requests");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        if shutdown.is_cancelled() {
            // Requests that arrived while stopping are not answered from an address being
            // given up.
            break;
        }
        let now = Instant::now();
        let uplinks = handler.state.uplinks.indexes();
        to.clear();
        for (index, &(length, address, interface)) in received.iter().enumerate() {
            let Some(source) = address.and_then(socket_addr) else {
                continue;
            };
            if source.port() == 0 {
                continue;
            }
            let view = view_index(networks, source.ip());
            if view.is_some_and(|v| v != LOOPBACK_VIEW)
                && interface.is_some_and(|i| uplinks.contains(&i))
            {
                // A site address arriving from the internet side is forged: neither
                // answered (the answer would go to the device it names) nor forwarded.
                handler.state.metrics.spoofed.inc();
                continue;
            }
            let packet = &buffers[index][..length.min(MAX_REQUEST)];
            let query =
                view.and_then(|view| packet::parse(packet, view, MAX_UDP_PAYLOAD, &mut key));
            if let Some(query) = &query {
                let out = &mut answers[to.len()];
                if handler
                    .state
                    .answers
                    .answer(packet, query, &key[..query.key_len], now, out)
                {
                    to.push(address);
                    continue;
                }
            }
            runtime.spawn(answer_fully(
                handler.clone(),
                Arc::clone(socket),
                packet.to_vec(),
                source,
                query.map(|q| key[..q.key_len].to_vec()),
            ));
        }
        let batch = received.len();
        let mut sent = 0;
        while sent < to.len() {
            let slices: Vec<[IoSlice<'_>; 1]> = answers[sent..to.len()]
                .iter()
                .map(|answer| [IoSlice::new(answer)])
                .collect();
            match sendmmsg(
                fd,
                &mut sending,
                &slices,
                &to[sent..],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(error) => {
                    // One bad destination: skip it, send the rest.
                    tracing::debug!(%error, "sending DNS responses");
                    sent += 1;
                }
            }
        }
        // Under load (more than one request was waiting, but not a full batch), let more
        // gather before the next call, as a network card's interrupt moderation does: bigger
        // batches mean fewer wake-ups of this thread and of the askers. Idle, a request is
        // answered at once.
        if batch > 1 && batch < BATCH {
            std::thread::sleep(GATHER);
        }
    }
}

/// The index of the interface a datagram arrived on (from its `IP_PKTINFO`).
fn arrived_on(message: &nix::sys::socket::RecvMsg<'_, '_, SockaddrStorage>) -> Option<u32> {
    message.cmsgs().ok()?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::Ipv4PacketInfo(info) => u32::try_from(info.ipi_ifindex).ok(),
        _ => None,
    })
}

fn socket_addr(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

fn send(socket: &std::net::UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
    socket.send_to(bytes, to).map(drop)
}

/// The full path ([`respond`](crate::edge::respond::respond)): the response goes out and, if it may,
/// into the answer cache under `key`.
async fn answer_fully(
    handler: Handler,
    socket: Arc<std::net::UdpSocket>,
    packet: Vec<u8>,
    source: SocketAddr,
    key: Option<Vec<u8>>,
) {
    let Some((response, answered)) =
        crate::edge::respond::respond(&handler, packet, source, Protocol::Udp).await
    else {
        return;
    };
    // A blocking send on a UDP socket returns at once unless the send buffer is full.
    if let Err(error) = send(&socket, &response, source) {
        tracing::debug!(%error, %source, "sending a DNS response");
    }
    if let (Some(key), Some(answered)) = (key, answered) {
        handler.state.answers.insert(
            &key,
            &response,
            answered.validity,
            answered.generation,
            answered.on_hit,
            Instant::now(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askers_are_viewed_by_their_network_and_loopback_by_itself() {
        let networks: Vec<Ipv4Net> = vec![
            "10.101.0.0/24".parse().unwrap(),
            "10.102.0.0/24".parse().unwrap(),
        ];
        assert_eq!(
            view_index(&networks, "10.102.0.9".parse().unwrap()),
            Some(1)
        );
        assert_eq!(
            view_index(&networks, "127.0.0.1".parse().unwrap()),
            Some(LOOPBACK_VIEW)
        );
        assert_eq!(
            view_index(&networks, "::1".parse().unwrap()),
            Some(LOOPBACK_VIEW)
        );
        assert_eq!(view_index(&networks, "198.51.100.7".parse().unwrap()), None);
    }
}
