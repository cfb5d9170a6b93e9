//! The conflict check before an address is offered: an ARP request for it on the network's
//! interface (RFC 5227 style). ARP, not ping: every IPv4 host on the segment must answer ARP,
//! while many (Windows by default, locked-down cameras) drop ICMP echo.
//!
//! Invariant: an address is reported in use only when an ARP packet on that interface shows a
//! host claiming it (a reply, or any ARP sent from it); silence until the deadline means free.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use fieldnet::raw::RawSocket;
use tokio::sync::mpsc;

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
    socket: Arc<RawSocket>,
    mac: [u8; 6],
}

impl ArpProber {
    /// Opens a packet socket on `interface`; claims seen there go to `claims`.
    pub fn open(interface: &str, claims: mpsc::UnboundedSender<Claimed>) -> io::Result<Self> {
        let ifindex = fieldnet::raw::interface_index(interface)?;
        let mac = fieldnet::raw::interface_mac(interface)?;
        let socket = Arc::new(RawSocket::arp(ifindex)?);
        tokio::spawn(receive(Arc::clone(&socket), interface.to_owned(), claims));
        Ok(Self { socket, mac })
    }

    /// Asks who has `target`, from `sender` (an address of ours on that network).
    pub fn ask(&self, target: Ipv4Addr, sender: Ipv4Addr) -> io::Result<()> {
        self.socket
            .send_to_link(&arp_request(self.mac, sender, target), [0xff; 6])
    }
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
    socket: Arc<RawSocket>,
    interface: String,
    claims: mpsc::UnboundedSender<Claimed>,
) {
    let mut buffer = [0_u8; 128];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(length) => {
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
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%interface, %error, "reading ARP");
                return;
            }
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
