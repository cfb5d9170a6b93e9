//! DNS over UDP: one thread per listening socket takes every datagram waiting in one call
//! (`recvmmsg`), answers what the answer cache holds straight away and sends those answers in
//! one call (`sendmmsg`); everything else goes to the hickory handler in a Tokio task of its
//! own, whose response may then be kept in the cache. TCP is hickory's server, with the same
//! handler.
//!
//! Why a thread and batches: on a small appliance the kernel's per-call cost is most of the
//! cost of an answer from memory; a blocking batch call per wake-up replaces readiness polling
//! plus two calls per query (see `cargo xtask bench dns`).

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable as _, BinDecoder, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use crate::packet::{self, MAX_KEY};
use crate::server::{Handler, MAX_UDP_PAYLOAD};

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
    let mut receiving = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut sending = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut answers: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)))
        .collect();
    let mut to: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    let mut received: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
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
                Ok(messages) => received.extend(messages.map(|m| (m.bytes, m.address))),
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
        to.clear();
        for (index, &(length, address)) in received.iter().enumerate() {
            let Some(source) = address.and_then(socket_addr) else {
                continue;
            };
            if source.port() == 0 {
                continue;
            }
            let packet = &buffers[index][..length.min(MAX_REQUEST)];
            let query = view_index(networks, source.ip())
                .and_then(|view| packet::parse(packet, view, MAX_UDP_PAYLOAD, &mut key));
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

/// The full path: hickory decodes, the handler decides (and forwards), the response goes out
/// and, if it may, into the answer cache under `key`.
async fn answer_fully(
    handler: Handler,
    socket: Arc<std::net::UdpSocket>,
    packet: Vec<u8>,
    source: SocketAddr,
    key: Option<Vec<u8>>,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(&packet)) else {
        // Under twelve bytes: not DNS, no answer.
        return;
    };
    if header.metadata.message_type == MessageType::Response {
        // Never answer answers (reflection).
        return;
    }
    let request = match Request::from_bytes(packet, source, Protocol::Udp) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, %source, "undecodable DNS request");
            let _ = send(
                &socket,
                &error_response(&header, ResponseCode::FormErr),
                source,
            );
            return;
        }
    };
    let capture = Capture::default();
    let answered = handler.answer(&request, capture.clone()).await;
    // Nothing captured: the response could not be encoded.
    let response = capture
        .take()
        .unwrap_or_else(|| error_response(&header, ResponseCode::ServFail));
    // A blocking send on a UDP socket returns at once unless the send buffer is full.
    if let Err(error) = send(&socket, &response, source) {
        tracing::debug!(%error, %source, "sending a DNS response");
    }
    if let Some(key) = key {
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

/// A bare error response to `request` (FORMERR when its body did not decode, SERVFAIL when
/// the answer could not be encoded).
fn error_response(request: &Header, code: ResponseCode) -> Vec<u8> {
    let mut bytes = vec![0; 12];
    bytes[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
    let opcode = u8::from(request.metadata.op_code);
    let rd = u8::from(request.metadata.recursion_desired);
    bytes[2] = 0x80 | (opcode << 3) | rd;
    bytes[3] = 0x80 | (u16::from(code) as u8 & 0x0f);
    bytes
}

/// A response handler that keeps the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // As hickory's own UDP handler: at most what the asker offered (512 without EDNS);
        // what does not fit is cut and marked truncated.
        let limit = response.edns().map_or(512, |edns| edns.max_payload());
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
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

    #[test]
    fn a_format_error_echoes_id_opcode_and_rd() {
        let mut metadata = hickory_proto::op::Metadata::new(
            0x4242,
            MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        metadata.recursion_desired = true;
        let header = Header {
            metadata,
            counts: hickory_proto::op::HeaderCounts::default(),
        };
        let bytes = error_response(&header, ResponseCode::FormErr);
        assert_eq!(bytes[..4], [0x42, 0x42, 0x81, 0x81]);
        assert!(bytes[4..].iter().all(|b| *b == 0));
    }
}
