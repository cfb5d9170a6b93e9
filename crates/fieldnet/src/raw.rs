//! Raw sockets for the probes, on socket2 and tokio's `AsyncFd`: ICMP echo pinned to one uplink
//! (uplink-monitor) and ARP on one interface (dhcp-takeover's conflict check). Pinning any
//! socket to an uplink (its firewall mark, its interface) is here too.
//!
//! Invariant: this is the only `unsafe` the probes need, two blocks of it: a socket handed to
//! the runtime (which must own its descriptor for as long as it watches it), and a link-layer
//! address (`sockaddr_ll`) built for socket2, which takes addresses of families it does not
//! model only as raw storage. Every socket is non-blocking and close-on-exec.

use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockRef, Socket, Type};
use tokio::io::unix::AsyncFd;

/// The Ethernet protocol number of ARP.
pub const ETH_P_ARP: u16 = 0x0806;

use nix::{setsockopt_impl, sockopt_impl};

sockopt_impl!(
    /// `PACKET_IGNORE_OUTGOING`: a packet socket leaves out the frames this host sends.
    IgnoreOutgoing,
    SetOnly,
    libc::SOL_PACKET,
    libc::PACKET_IGNORE_OUTGOING,
    bool
);

/// A raw socket the runtime wakes when it is readable.
#[derive(Debug)]
pub struct RawSocket {
    socket: AsyncFd<Socket>,
    /// For a packet socket: the interface it is bound to and its protocol.
    link: Option<(NonZeroU32, u16)>,
}

impl RawSocket {
    /// A raw ICMP (IPv4) socket pinned to an uplink: `mark` on every packet, bound to `device`
    /// when given (see [`pin`]). Needs CAP_NET_RAW.
    pub fn icmp(mark: u32, device: Option<&str>) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::ICMPV4),
        )?;
        pin(&socket, mark, device)?;
        Ok(Self {
            socket: register(socket)?,
            link: None,
        })
    }

    /// A packet socket (link header left to the kernel) for ARP on the interface `ifindex`,
    /// receiving only what arrives there (not what this host sends). Needs CAP_NET_RAW.
    pub fn arp(ifindex: NonZeroU32) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
        )?;
        // A sweep sends thousands of requests a second; reading each back would halve the
        // room for answers in the receive buffer. (Before Linux 4.20 they are read and
        // skipped.)
        let _ = nix::sys::socket::setsockopt(&socket, IgnoreOutgoing, &true);
        socket.bind(&link_address(ifindex, ETH_P_ARP, [0; 6]))?;
        Ok(Self {
            socket: register(socket)?,
            link: Some((ifindex, ETH_P_ARP)),
        })
    }

    /// Sends `packet` to `to` now (an ICMP socket), or fails if it cannot go at once.
    pub fn send_to_ipv4(&self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(to, 0));
        self.socket.get_ref().send_to(packet, &to).map(drop)
    }

    /// Sends `packet` to the link address `to` on the bound interface (a packet socket; `[0xff;
    /// 6]` is the broadcast) now, or fails if it cannot go at once.
    pub fn send_to_link(&self, packet: &[u8], to: [u8; 6]) -> io::Result<()> {
        let Some((ifindex, protocol)) = self.link else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a packet socket",
            ));
        };
        let to = link_address(ifindex, protocol, to);
        self.socket.get_ref().send_to(packet, &to).map(drop)
    }

    /// Waits for the next datagram and reads it into `buffer` (cut to its length); its length.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| socket.get_ref().read(buffer)) {
                Ok(read) => return read,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Hands `socket` to the runtime, which wakes its reader when it is readable.
fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the AsyncFd owns the socket, so the descriptor stays open, and the same, for as
    // long as the runtime watches it; it is deregistered before the socket is closed on drop.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

/// Pins a socket to one uplink: its firewall mark (so the uplink's rule and table route it)
/// and, for a local uplink, its interface.
pub fn pin(socket: &impl AsFd, mark: u32, device: Option<&str>) -> io::Result<()> {
    let socket = SockRef::from(socket);
    socket.set_mark(mark)?;
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    Ok(())
}

/// The index of the interface `name`.
pub fn interface_index(name: &str) -> io::Result<NonZeroU32> {
    nix::net::if_::if_nametoindex(name)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
}

/// The hardware address of the interface `name`, asked of the kernel (getifaddrs, over
/// netlink) so it is right in whatever network namespace the calling thread is in (`/sys` may
/// show another's).
pub fn interface_mac(name: &str) -> io::Result<[u8; 6]> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    addresses
        .filter(|entry| entry.interface_name == name)
        .find_map(|entry| {
            entry
                .address
                .and_then(|address| address.as_link_addr().and_then(|link| link.addr()))
        })
        .filter(|mac| *mac != [0; 6])
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} has no MAC address"),
            )
        })
}

/// A link-layer address: `destination` on the interface `ifindex`, for `protocol`.
fn link_address(ifindex: NonZeroU32, protocol: u16, destination: [u8; 6]) -> SockAddr {
    let mut address = [0_u8; 8];
    address[..6].copy_from_slice(&destination);
    let link = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex.get() as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: address,
    };
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: the storage is a zeroed sockaddr_storage, larger than and aligned for any socket
    // address, so viewing it as a sockaddr_ll is sound; the length given to SockAddr::new is
    // that of the sockaddr_ll written into it, with the family set to match.
    unsafe {
        *storage.view_as::<libc::sockaddr_ll>() = link;
        SockAddr::new(
            storage,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_address_holds_the_interface_protocol_and_destination() {
        let index = NonZeroU32::new(7).expect("non-zero");
        let address = link_address(index, ETH_P_ARP, [0xff; 6]);
        assert_eq!(address.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(
            address.len() as usize,
            std::mem::size_of::<libc::sockaddr_ll>()
        );
        // sockaddr_ll: family (2), protocol (2, network order), ifindex (4), hatype (2),
        // pkttype (1), halen (1), addr (8).
        let bytes: Vec<u8> = (0..address.len() as usize)
            .map(|i| {
                // SAFETY: reading within the address's own length.
                unsafe { *address.as_ptr().cast::<u8>().add(i) }
            })
            .collect();
        assert_eq!(&bytes[2..4], &[0x08, 0x06]);
        assert_eq!(&bytes[4..8], &7_i32.to_ne_bytes());
        assert_eq!(bytes[11], 6);
        assert_eq!(&bytes[12..18], &[0xff; 6]);
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let error = interface_index("no-such-if0").expect_err("no such interface");
        assert!(error.to_string().contains("no-such-if0"), "{error}");
    }
}
