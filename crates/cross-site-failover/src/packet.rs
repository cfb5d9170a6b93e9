//! The heartbeat wire format: one UDP datagram per interval per path, BFD-like, authenticated
//! with the site key. Heartbeats double as path probes: each echoes the last timestamp it
//! received on that path, so both ends measure the round trip.
//!
//! Invariant: `decode` accepts a datagram only if its tag verifies under the site key (HMAC-
//! SHA-256, first 16 bytes, checked in constant time); nothing in an unauthenticated datagram
//! is ever looked at beyond its length and magic. Replay protection is the session's job
//! (an epoch believed only when fresh, a counter that only grows: see `session`).

use fieldnet::auth::SiteAuth;

/// `FNHB`: fieldnet heartbeat.
const MAGIC: [u8; 4] = *b"FNHB";
/// Wire version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes covered by the tag.
const BODY_LEN: usize = 44;
/// Truncated HMAC-SHA-256 tag length.
const TAG_LEN: usize = 16;
/// Whole datagram.
pub const PACKET_LEN: usize = BODY_LEN + TAG_LEN;

/// A path session's state as its sender sees it (RFC 5880's three-way handshake, simplified).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Down = 0,
    Init = 1,
    Up = 2,
}

impl SessionState {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Down),
            1 => Some(Self::Init),
            2 => Some(Self::Up),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Init => "init",
            Self::Up => "up",
        }
    }
}

impl From<SessionState> for fieldnet::bus::topics::PathState {
    fn from(state: SessionState) -> Self {
        match state {
            SessionState::Down => Self::Down,
            SessionState::Init => Self::Init,
            SessionState::Up => Self::Up,
        }
    }
}

/// One heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sending appliance.
    pub from: u8,
    /// The appliance it is meant for.
    pub to: u8,
    /// Which of the pair's paths this heartbeat travels (index in the sender's config order is
    /// not shared, so the path is named by kind: 0 cable, 1 wifi, 2 vpn).
    pub path: u8,
    /// The sender's view of this path's session.
    pub state: SessionState,
    /// The sender's epoch (random at each start, high 32 bits) and a counter that grows with
    /// every heartbeat (low 32 bits): no clock in it, so a clock that steps changes nothing.
    pub seq: u64,
    /// The sender's monotonic send time, in microseconds, for the peer to echo.
    pub sent_us: u64,
    /// The last `sent_us` the sender received from its peer on this path (0: none yet), and
    /// how long it held it before sending this one, so the peer can compute the round trip.
    pub echo_us: u64,
    pub echo_delay_us: u32,
    /// The sender's interval and detection multiplier, so the peer times out consistently.
    pub interval_ms: u16,
    pub detect_multiplier: u8,
}

/// Why a datagram is not a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("wrong length or magic: not a fieldnet heartbeat")]
    NotHeartbeat,
    #[error("heartbeat version {0} is not supported; this build speaks version {VERSION}")]
    Version(u8),
    #[error("authentication failed: wrong site key, or the heartbeat was altered")]
    BadTag,
    #[error("heartbeat carries an unknown session state")]
    BadState,
}

/// The site key as the heartbeat code needs it.
#[derive(Clone, Debug)]
pub struct HeartbeatKey(SiteAuth);

impl HeartbeatKey {
    pub fn new(site_key: &[u8]) -> Self {
        // Domain separation: the same site key authenticates other protocols too.
        Self(SiteAuth::new(site_key, b"fieldnet heartbeat v1\0"))
    }
}

/// Encodes and signs a heartbeat.
pub fn encode(heartbeat: &Heartbeat, key: &HeartbeatKey) -> [u8; PACKET_LEN] {
    let mut packet = [0u8; PACKET_LEN];
    packet[0..4].copy_from_slice(&MAGIC);
    packet[4] = VERSION;
    packet[5] = heartbeat.from;
    packet[6] = heartbeat.to;
    packet[7] = heartbeat.path;
    packet[8] = heartbeat.state as u8;
    packet[9] = heartbeat.detect_multiplier;
    packet[10..12].copy_from_slice(&heartbeat.interval_ms.to_be_bytes());
    packet[12..20].copy_from_slice(&heartbeat.seq.to_be_bytes());
    packet[20..28].copy_from_slice(&heartbeat.sent_us.to_be_bytes());
    packet[28..36].copy_from_slice(&heartbeat.echo_us.to_be_bytes());
    packet[36..40].copy_from_slice(&heartbeat.echo_delay_us.to_be_bytes());
    // 40..44 reserved, zero.
    let tag = key.0.tag(&[&packet[..BODY_LEN]]);
    packet[BODY_LEN..].copy_from_slice(&tag[..TAG_LEN]);
    packet
}

/// Verifies and decodes a datagram.
pub fn decode(datagram: &[u8], key: &HeartbeatKey) -> Result<Heartbeat, PacketError> {
    if datagram.len() != PACKET_LEN || datagram[0..4] != MAGIC {
        return Err(PacketError::NotHeartbeat);
    }
    if datagram[4] != VERSION {
        return Err(PacketError::Version(datagram[4]));
    }
    if !key
        .0
        .verify(&[&datagram[..BODY_LEN]], &datagram[BODY_LEN..])
    {
        return Err(PacketError::BadTag);
    }
    let u64_at = |at: usize| u64::from_be_bytes(datagram[at..at + 8].try_into().expect("8 bytes"));
    Ok(Heartbeat {
        from: datagram[5],
        to: datagram[6],
        path: datagram[7],
        state: SessionState::from_byte(datagram[8]).ok_or(PacketError::BadState)?,
        detect_multiplier: datagram[9],
        interval_ms: u16::from_be_bytes([datagram[10], datagram[11]]),
        seq: u64_at(12),
        sent_us: u64_at(20),
        echo_us: u64_at(28),
        echo_delay_us: u32::from_be_bytes(datagram[36..40].try_into().expect("4 bytes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            from: 1,
            to: 2,
            path: 1,
            state: SessionState::Init,
            seq: 1_763_690_000_000_001,
            sent_us: 123_456,
            echo_us: 120_000,
            echo_delay_us: 350,
            interval_ms: 50,
            detect_multiplier: 3,
        }
    }

    #[test]
    fn heartbeats_round_trip_under_the_site_key() {
        let key = HeartbeatKey::new(&[7; 32]);
        let packet = encode(&sample(), &key);
        assert_eq!(packet.len(), PACKET_LEN);
        assert_eq!(decode(&packet, &key), Ok(sample()));
    }

    /// The tag is HMAC-SHA-256 over the domain and the body, cut to 16 bytes (computed
    /// independently, with Python's hmac): builds of either side interoperate.
    #[test]
    fn the_tag_is_the_documented_hmac() {
        let packet = encode(&sample(), &HeartbeatKey::new(&[7; 32]));
        let tag: String = packet[BODY_LEN..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tag, "d2fff1e46e3a847d35ac0a0741400934");
    }

    #[test]
    fn wrong_key_tampering_and_garbage_are_refused() {
        let key = HeartbeatKey::new(&[7; 32]);
        let packet = encode(&sample(), &key);
        assert_eq!(
            decode(&packet, &HeartbeatKey::new(&[8; 32])),
            Err(PacketError::BadTag)
        );
        // Every single-bit flip anywhere in the datagram is caught.
        for byte in 0..PACKET_LEN {
            let mut altered = packet;
            altered[byte] ^= 0x01;
            assert!(
                decode(&altered, &key).is_err(),
                "flip in byte {byte} accepted"
            );
        }
        assert_eq!(decode(&packet[..10], &key), Err(PacketError::NotHeartbeat));
        let mut version = packet;
        version[4] = 9;
        assert_eq!(decode(&version, &key), Err(PacketError::Version(9)));
    }
}
