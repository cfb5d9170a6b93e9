//! The sweeps' frames: ARP over a packet socket (the link header left to the kernel, so a
//! frame here is the 28-byte ARP message) and ICMP echo over a raw IPv4 socket (replies arrive
//! with their IP header). Everything read here comes from the network: any bytes parse to an
//! answer or to nothing, never a panic.

use std::net::Ipv4Addr;

use fieldnet::names::Mac;

const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const IPPROTO_ICMP: u8 = 1;
/// Echo requests carry this many bytes of payload (none needed; a few for middleboxes that
/// drop empty echoes).
const ECHO_PAYLOAD: usize = 8;

/// An ARP request from `sender` (MAC and address) for `target`.
pub fn arp_request(sender_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut frame = [0_u8; ARP_LEN];
    frame[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    frame[2..4].copy_from_slice(&PTYPE_IPV4.to_be_bytes());
    frame[4] = 6;
    frame[5] = 4;
    frame[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    frame[8..14].copy_from_slice(&sender_mac.0);
    frame[14..18].copy_from_slice(&sender.octets());
    // Target hardware address: unknown (zero), whether the frame goes unicast or broadcast.
    frame[24..28].copy_from_slice(&target.octets());
    frame
}

/// The sender of an ARP message: a reply's, or a request's (a host asking is there too).
/// `None` for anything that is not Ethernet/IPv4 ARP.
pub fn arp_sender(frame: &[u8]) -> Option<(Ipv4Addr, Mac)> {
    if frame.len() < ARP_LEN
        || u16::from_be_bytes([frame[0], frame[1]]) != HTYPE_ETHERNET
        || u16::from_be_bytes([frame[2], frame[3]]) != PTYPE_IPV4
        || frame[4] != 6
        || frame[5] != 4
    {
        return None;
    }
    let operation = u16::from_be_bytes([frame[6], frame[7]]);
    if operation != ARP_REPLY && operation != ARP_REQUEST {
        return None;
    }
    let mac = Mac(frame[8..14].try_into().ok()?);
    let address = Ipv4Addr::new(frame[14], frame[15], frame[16], frame[17]);
    // Probes (sender 0.0.0.0) and broadcast or zero senders say nothing about a device.
    if address.is_unspecified() || mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
        return None;
    }
    Some((address, mac))
}

/// An ICMP echo request (without IP header) with `identifier` and `sequence`.
pub fn echo_request(identifier: u16, sequence: u16) -> [u8; 8 + ECHO_PAYLOAD] {
    let mut packet = [0_u8; 8 + ECHO_PAYLOAD];
    packet[0] = ICMP_ECHO_REQUEST;
    packet[4..6].copy_from_slice(&identifier.to_be_bytes());
    packet[6..8].copy_from_slice(&sequence.to_be_bytes());
    packet[8..].copy_from_slice(b"fieldnet");
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// The source of an echo reply carrying `identifier`, from an IPv4 packet as a raw socket
/// reads it; `None` for anything else.
pub fn echo_reply_from(packet: &[u8], identifier: u16) -> Option<Ipv4Addr> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header = usize::from(first & 0x0f) * 4;
    if header < 20 || packet.len() < header + 8 || packet[9] != IPPROTO_ICMP {
        return None;
    }
    let icmp = &packet[header..];
    if icmp[0] != ICMP_ECHO_REPLY || u16::from_be_bytes([icmp[4], icmp[5]]) != identifier {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[12], packet[13], packet[14], packet[15],
    ))
}

/// RFC 1071's checksum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = Mac([0x02, 0, 0, 0, 0, 1]);

    #[test]
    fn an_arp_request_is_what_a_host_answers() {
        let frame = arp_request(ME, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(
            frame,
            [
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0,
                7
            ]
        );
        // A request names its sender too.
        assert_eq!(arp_sender(&frame), Some((Ipv4Addr::new(10, 0, 0, 1), ME)));
    }

    #[test]
    fn a_reply_names_its_sender_and_junk_names_nothing() {
        let mut reply = arp_request(
            Mac([0, 0x80, 0xf0, 1, 2, 3]),
            Ipv4Addr::new(10, 0, 0, 7),
            Ipv4Addr::new(10, 0, 0, 1),
        );
        reply[7] = 2;
        assert_eq!(
            arp_sender(&reply),
            Some((Ipv4Addr::new(10, 0, 0, 7), Mac([0, 0x80, 0xf0, 1, 2, 3])))
        );
        assert_eq!(arp_sender(&reply[..27]), None);
        let mut probe = reply;
        probe[14..18].copy_from_slice(&[0; 4]);
        assert_eq!(arp_sender(&probe), None, "an address probe claims nothing");
        let mut other = reply;
        other[3] = 0x06;
        assert_eq!(arp_sender(&other), None);
    }

    #[test]
    fn an_echo_request_checks_and_a_reply_is_matched_by_identifier() {
        let request = echo_request(0x1234, 7);
        assert_eq!(
            internet_checksum(&request),
            0,
            "a correct checksum sums to zero"
        );
        let mut packet = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 60, 0, 5, 10, 0, 0, 1,
        ];
        let mut reply = request;
        reply[0] = 0;
        packet.extend_from_slice(&reply);
        assert_eq!(
            echo_reply_from(&packet, 0x1234),
            Some(Ipv4Addr::new(10, 60, 0, 5))
        );
        assert_eq!(echo_reply_from(&packet, 0x1235), None);
        assert_eq!(echo_reply_from(&packet[..25], 0x1234), None);
        packet[0] = 0x4f;
        assert_eq!(
            echo_reply_from(&packet, 0x1234),
            None,
            "header longer than packet"
        );
    }
}
