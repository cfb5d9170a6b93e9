//! The DHCP sockets: one UDP socket on port 67 per network, bound to its interface; a task per
//! socket hands each datagram to the agent; replies go to the client, the broadcast address or
//! the relay.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dhcproto::v4::MessageType;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::decide::{self, Destination, Reply};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// Largest DHCP datagram read (a full Ethernet frame's worth).
const MAX_DATAGRAM: usize = 1500;

/// A datagram from a network's socket.
pub struct Packet {
    pub network: String,
    pub bytes: Vec<u8>,
}

/// A UDP socket on 0.0.0.0:67 bound to `interface`, allowed to broadcast.
pub fn bind(interface: &str) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding the DHCP socket to {interface}"))?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT)).into())
        .with_context(|| format!("binding 0.0.0.0:{SERVER_PORT} on {interface}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Reads `socket` until shutdown, each datagram to `packets` as one of `network`.
pub async fn receive(
    socket: Arc<UdpSocket>,
    network: String,
    packets: mpsc::Sender<Packet>,
    shutdown: CancellationToken,
) {
    let mut buffer = vec![0_u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        match received {
            Ok((length, _from)) => {
                let packet = Packet {
                    network: network.clone(),
                    bytes: buffer[..length].to_vec(),
                };
                if packets.send(packet).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%network, %error, "receiving DHCP");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends `reply` on `socket`, to where it goes.
pub fn send(socket: &UdpSocket, reply: &Reply) -> std::io::Result<()> {
    let to = match reply.to {
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
        Destination::Client(address) => SocketAddrV4::new(address, CLIENT_PORT),
        Destination::Relay(address) => SocketAddrV4::new(address, SERVER_PORT),
    };
    socket
        .try_send_to(&decide::encode(&reply.message), to.into())
        .map(|_| ())
}

/// The metric label of a message type.
pub fn type_label(kind: Option<MessageType>) -> &'static str {
    match kind {
        Some(MessageType::Discover) => "discover",
        Some(MessageType::Offer) => "offer",
        Some(MessageType::Request) => "request",
        Some(MessageType::Decline) => "decline",
        Some(MessageType::Ack) => "ack",
        Some(MessageType::Nak) => "nak",
        Some(MessageType::Release) => "release",
        Some(MessageType::Inform) => "inform",
        _ => "other",
    }
}
