//! The conflict check before an address is offered: an ARP request for it on the network's
//! interface (RFC 5227 style). ARP, not ping: every IPv4 host on the segment must answer ARP,
//! while many (Windows by default, locked-down cameras) drop ICMP echo.
//!
//! Invariant: an address is reported in use only when an ARP packet on that interface shows a
//! host claiming it (a reply, or any ARP sent from it); silence until the deadline means free.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;

/// An address seen claimed on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub interface: String,
    pub address: Ipv4Addr,
}

/// ARP on one interface.
#[derive(Debug)]
pub struct ArpProber {
    socket: Arc<AsyncFd<OwnedFd>>,
    ifindex: i32,
    mac: [u8; 6],
}

impl ArpProber {
    /// Opens a packet socket on `interface`; claims seen there go to `claims`.
    pub fn open(interface: &str, claims: mpsc::UnboundedSender<Claimed>) -> io::Result<Self> {
        let name = std::ffi::CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let mac = interface_mac(interface)?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let address = link_address(ifindex as i32, [0; 6]);
        // SAFETY: `address` is a valid sockaddr_ll and its length is passed alongside.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it until dropped.
        let socket = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?);
        tokio::spawn(receive(Arc::clone(&socket), interface.to_owned(), claims));
        Ok(Self {
            socket,
            ifindex: ifindex as i32,
            mac,
        })
    }

    /// Asks who has `target`, from `sender` (an address of ours on that network).
    pub fn ask(&self, target: Ipv4Addr, sender: Ipv4Addr) -> io::Result<()> {
        let packet = arp_request(self.mac, sender, target);
        let to = link_address(self.ifindex, [0xff; 6]);
        // SAFETY: buffer and address are valid for the call and their lengths are passed.
        let sent = unsafe {
            libc::sendto(
                self.socket.get_ref().as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                libc::MSG_DONTWAIT,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn link_address(ifindex: i32, destination: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0_u8; 8];
    addr[..6].copy_from_slice(&destination);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

fn interface_mac(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    fieldnet::names::parse_hex_bytes(text.trim())
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{interface} has no MAC address"),
            )
        })
}

/// An Ethernet/IPv4 ARP request body (the kernel adds the link header).
pub fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; 28] {
    let mut packet = [0_u8; 28];
    packet[0..2].copy_from_slice(&1_u16.to_be_bytes()); // Ethernet
    packet[2..4].copy_from_slice(&0x0800_u16.to_be_bytes()); // IPv4
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&sender.octets());
    packet[24..28].copy_from_slice(&target.octets());
    packet
}

/// The address an ARP packet's sender claims, if it is an Ethernet/IPv4 ARP packet from a
/// host that has an address (probes from 0.0.0.0 claim nothing).
pub fn claimed_by(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 28
        || packet[0..2] != [0, 1]
        || packet[2..4] != [8, 0]
        || packet[4] != 6
        || packet[5] != 4
    {
        return None;
    }
    let sender = Ipv4Addr::new(packet[14], packet[15], packet[16], packet[17]);
    (!sender.is_unspecified()).then_some(sender)
}

async fn receive(
    socket: Arc<AsyncFd<OwnedFd>>,
    interface: String,
    claims: mpsc::UnboundedSender<Claimed>,
) {
    let mut buffer = [0_u8; 128];
    loop {
        let Ok(mut guard) = socket.readable().await else {
            return;
        };
        // SAFETY: the buffer is valid for its whole length for the call.
        let read = guard.try_io(|fd| {
            let n =
                unsafe { libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Ok(Ok(length)) => {
                if let Some(address) = claimed_by(&buffer[..length])
                    && claims
                        .send(Claimed {
                            interface: interface.clone(),
                            address,
                        })
                        .is_err()
                {
                    return;
                }
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(error)) => {
                tracing::warn!(%interface, %error, "reading ARP");
                return;
            }
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_claims_read_back() {
        let request = arp_request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 101, 0, 1),
            Ipv4Addr::new(10, 101, 0, 100),
        );
        assert_eq!(claimed_by(&request), Some(Ipv4Addr::new(10, 101, 0, 1)));
        assert_eq!(&request[24..28], &[10, 101, 0, 100]);
        let probe = arp_request(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 101, 0, 100),
        );
        assert_eq!(
            claimed_by(&probe),
            None,
            "a probe from 0.0.0.0 claims nothing"
        );
        assert_eq!(claimed_by(&request[..20]), None);
    }
}
