//! The heartbeat sockets: one per path, bound to the path's own address and interface and
//! connected to its remote end, each with a receiver task that verifies what arrives before
//! the main loop sees it.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::packet::{self, HeartbeatKey};
use crate::plan::PathPlan;

/// Verified heartbeats waiting for the main loop; more are dropped and counted (a full queue
/// means the loop is behind, and the newest heartbeat of each path follows soon).
pub(crate) const ARRIVALS: usize = 256;
/// Each path socket's receive buffer: bursts wait in the kernel, not on the wire.
const RECEIVE_BUFFER: usize = 1 << 20;

/// A heartbeat verified by a path's receiver: which peer and path, and when it arrived.
pub(crate) struct Arrived {
    pub(crate) peer: usize,
    pub(crate) path: usize,
    pub(crate) heartbeat: packet::Heartbeat,
    pub(crate) at: Instant,
}

/// A UDP socket on the path's own address and interface, connected to the peer's end: the
/// kernel drops what comes from anywhere else. The device is bound before the address, and
/// the address is shared (`SO_REUSEADDR`): several interfaces may carry one address (a hub's
/// tunnels all carry its tunnel address), and several peers may be reached from one.
pub(crate) fn bind(path: &PathPlan, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(path.interface.as_bytes()))?;
    // What the kernel grants (up to net.core.rmem_max) is enough: this only makes it larger.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(path.local, port)).into())?;
    socket.connect(&SocketAddr::V4(SocketAddrV4::new(path.remote, port)).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// What a path's receiver needs.
pub(crate) struct Receiver {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) key: HeartbeatKey,
    /// The peer's id, the path's code and this agent's id, as a heartbeat must say them.
    pub(crate) expect: (u8, u8, u8),
    /// (peer, path) indexes, for the main loop.
    pub(crate) route: (usize, usize),
    pub(crate) arrived: mpsc::Sender<Arrived>,
    pub(crate) heartbeats: IntCounterVec,
    pub(crate) interface: String,
}

/// Receives one path's heartbeats in a task of its own: verifies each (a flood of forged ones
/// costs this task, not the loop that judges the paths) and passes the good ones on. It ends
/// only when the agent does; a receive error is counted, said at most every 10 s, and waited
/// out.
pub(crate) fn spawn_receiver(receiver: Receiver) {
    tokio::spawn(async move {
        let Receiver {
            socket,
            key,
            expect,
            route,
            arrived,
            heartbeats,
            interface,
        } = receiver;
        let mut buffer = [0u8; 256];
        let mut last_warning: Option<Instant> = None;
        loop {
            let n = match socket.recv(&mut buffer).await {
                Ok(n) => n,
                // An ICMP refusal of an earlier send (the peer's agent not running): nothing
                // to read, nothing wrong here.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(error) => {
                    heartbeats.with_label_values(&["receive_error"]).inc();
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(%interface, %error, "receiving heartbeats failed; trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let at = Instant::now();
            let heartbeat = match packet::decode(&buffer[..n], &key) {
                Ok(heartbeat) => heartbeat,
                Err(error) => {
                    heartbeats.with_label_values(&["rejected"]).inc();
                    tracing::debug!(%interface, %error, "heartbeat rejected");
                    continue;
                }
            };
            if (heartbeat.from, heartbeat.path, heartbeat.to) != expect {
                heartbeats.with_label_values(&["misaddressed"]).inc();
                continue;
            }
            let (peer, path) = route;
            match arrived.try_send(Arrived {
                peer,
                path,
                heartbeat,
                at,
            }) {
                Ok(()) => heartbeats.with_label_values(&["accepted"]).inc(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    heartbeats.with_label_values(&["dropped"]).inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
}
