//! Probes pinned to one uplink each: per uplink a raw ICMP socket (echo) and, when UDP targets
//! are configured, a UDP socket (a DNS-shaped query that DNS servers and echo services both
//! answer). Each carries the uplink's firewall mark, so a rule sends it through the uplink's
//! own table whatever the default route is, and for local uplinks is bound to the interface.
//!
//! Invariant: a reply is reported only if it matches a probe this process sent on that uplink
//! (ICMP identifier, or the UDP socket's own port, and the sequence); the monitor then checks
//! the sequence against what is outstanding, so stray packets prove nothing.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use fieldnet::config::ProbeTarget;
use fieldnet::raw::{RawSocket, pin};
use tokio::sync::mpsc;

/// ICMP echo request and reply types.
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// Bytes after the 8-byte ICMP header; a marker so captures show whose probes these are.
const PAYLOAD: &[u8; 16] = b"fieldnet-uplink\0";

/// A reply, as the socket tasks report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    pub uplink: usize,
    /// Who answered, in the form the target is configured in.
    pub from: ProbeTarget,
    pub seq: u16,
}

/// One uplink's probe socket.
#[derive(Debug)]
pub struct ProbeSocket {
    socket: Arc<RawSocket>,
    identifier: u16,
}

impl ProbeSocket {
    /// Opens the socket; `device` binds it to an interface (local uplinks).
    pub fn open(
        uplink: usize,
        mark: u32,
        device: Option<&str>,
        replies: mpsc::UnboundedSender<ProbeReply>,
    ) -> io::Result<Self> {
        let socket = Arc::new(RawSocket::icmp(mark, device)?);
        // Distinct per process and uplink, so two monitors (or a restart overlap) never
        // take each other's replies.
        let identifier = (std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(uplink as u16);
        tokio::spawn(receive(socket.clone(), uplink, identifier, replies));
        Ok(Self { socket, identifier })
    }

    /// Sends one echo request. An error (no route, interface gone) is the caller's loss.
    pub fn send(&self, target: Ipv4Addr, seq: u16) -> io::Result<()> {
        self.socket
            .send_to_ipv4(&echo_request(self.identifier, seq), target)
    }
}

async fn receive(
    socket: Arc<RawSocket>,
    uplink: usize,
    identifier: u16,
    replies: mpsc::UnboundedSender<ProbeReply>,
) {
    let mut buffer = [0u8; 1500];
    loop {
        let received = match socket.recv(&mut buffer).await {
            Ok(received) => received,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(uplink, %error, "probe socket failed");
                return;
            }
        };
        if let Some((from, id, seq)) = parse_echo_reply(&buffer[..received])
            && id == identifier
            && replies
                .send(ProbeReply {
                    uplink,
                    from: ProbeTarget::Icmp(from),
                    seq,
                })
                .is_err()
        {
            return;
        }
    }
}

/// One uplink's UDP probe socket.
#[derive(Debug)]
pub struct UdpProbeSocket {
    socket: std::sync::Arc<tokio::net::UdpSocket>,
}

impl UdpProbeSocket {
    pub fn open(
        uplink: usize,
        mark: u32,
        device: Option<&str>,
        replies: mpsc::UnboundedSender<ProbeReply>,
    ) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_nonblocking(true)?;
        pin(&socket, mark, device)?;
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        let receiving = socket.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            loop {
                let Ok((n, from)) = receiving.recv_from(&mut buffer).await else {
                    return;
                };
                let std::net::SocketAddr::V4(from) = from else {
                    continue;
                };
                if n >= 2 {
                    let seq = u16::from_be_bytes([buffer[0], buffer[1]]);
                    if replies
                        .send(ProbeReply {
                            uplink,
                            from: ProbeTarget::Udp(from),
                            seq,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Self { socket })
    }

    pub fn send(&self, target: std::net::SocketAddrV4, seq: u16) -> io::Result<()> {
        self.socket
            .try_send_to(&dns_query(seq), target.into())
            .map(|_| ())
    }
}

/// A DNS query for the root's NS records with `seq` as its id: any DNS server answers it
/// (even with REFUSED), and an echo service sends it back; both carry the id first.
pub fn dns_query(seq: u16) -> Vec<u8> {
    let mut query = seq.to_be_bytes().to_vec();
    // Flags: recursion desired; one question, no other records.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    // The root name, type NS, class IN.
    query.extend_from_slice(&[0, 0, 2, 0, 1]);
    query
}

/// An ICMP echo request with the Internet checksum filled in.
pub fn echo_request(identifier: u16, seq: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(8 + PAYLOAD.len());
    packet.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// RFC 1071 checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Source, identifier and sequence of an IPv4 datagram carrying an ICMP echo reply.
pub fn parse_echo_reply(datagram: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let source = Ipv4Addr::new(
        *datagram.get(12)?,
        *datagram.get(13)?,
        *datagram.get(14)?,
        *datagram.get(15)?,
    );
    let icmp = datagram.get(header_len..)?;
    if icmp.len() < 8 || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    let identifier = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((source, identifier, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_is_well_formed() {
        let query = dns_query(0x0102);
        assert_eq!(query.len(), 17);
        assert_eq!(&query[..4], &[1, 2, 1, 0]);
        assert_eq!(&query[4..6], &[0, 1], "one question");
    }

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(
            internet_checksum(&packet),
            0,
            "a packet with its checksum sums to zero"
        );
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn replies_are_parsed_and_other_icmp_is_not() {
        let mut datagram = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 1, 10, 0, 0, 1,
        ];
        let mut reply = echo_request(0xbeef, 513);
        reply[0] = ECHO_REPLY;
        datagram.extend_from_slice(&reply);
        assert_eq!(
            parse_echo_reply(&datagram),
            Some((Ipv4Addr::new(192, 0, 2, 1), 0xbeef, 513))
        );
        datagram[20] = 3; // destination unreachable
        assert_eq!(parse_echo_reply(&datagram), None);
        assert_eq!(parse_echo_reply(&datagram[..10]), None);
        assert_eq!(parse_echo_reply(&[]), None);
    }
}
