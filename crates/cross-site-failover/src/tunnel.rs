//! Tunnel health in three layers: the interface, the WireGuard handshake, and the data plane
//! (heartbeats through the tunnel). A tunnel is healthy only when all three are: a tunnel whose
//! handshake looks fine but passes no heartbeats is not.
//!
//! The verdict is pure (`verdict`); reading the handshake is `wg show <if> dump`, which speaks to
//! kernel WireGuard (netlink) and to userspace implementations (their control socket) alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// WireGuard rejects a session key this old (REJECT_AFTER_TIME); a live tunnel re-handshakes
/// every two minutes while it carries traffic, so an older handshake means the tunnel is dead.
pub const HANDSHAKE_STALE_AFTER: Duration = Duration::from_secs(180);

/// One peer line of `wg show <if> dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Unix time of the latest handshake, `None` if there never was one.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Parses `wg show <if> dump`: an interface line (4 tab-separated fields), then one line of 8
/// fields per peer.
pub fn parse_dump(text: &str) -> Result<Vec<WgPeer>, String> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let interface = lines.next().ok_or("empty output")?;
    if interface.split('\t').count() != 4 {
        return Err(format!("unexpected interface line: {interface:?}"));
    }
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 8 {
                return Err(format!("unexpected peer line: {line:?}"));
            }
            let number = |index: usize| {
                fields[index]
                    .parse::<u64>()
                    .map_err(|_| format!("field {index} of {line:?} is not a number"))
            };
            let handshake = number(4)?;
            Ok(WgPeer {
                public_key: fields[0].to_owned(),
                endpoint: (fields[2] != "(none)").then(|| fields[2].to_owned()),
                latest_handshake: (handshake != 0).then_some(handshake),
                rx_bytes: number(5)?,
                tx_bytes: number(6)?,
            })
        })
        .collect()
}

/// What was seen of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelObservation {
    /// The interface exists and is administratively up.
    pub interface_up: bool,
    /// Age of the newest handshake of any peer on the interface; `None`: never, or unreadable.
    pub handshake_age: Option<Duration>,
    /// A heartbeat session through the tunnel is up.
    pub data_plane_up: bool,
}

/// What the edge read of one tunnel's interface and WireGuard state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelReading {
    pub interface: String,
    pub interface_up: bool,
    pub handshake_age: Option<Duration>,
    /// The WireGuard state could be read.
    pub collected: bool,
}

/// A tunnel's health, the first failing layer named, in the bus's own words.
pub use fieldnet::bus::topics::TunnelVerdict;

/// Judges a tunnel, lowest layer first.
pub fn verdict(observation: &TunnelObservation) -> TunnelVerdict {
    if !observation.interface_up {
        return TunnelVerdict::InterfaceDown;
    }
    match observation.handshake_age {
        None => TunnelVerdict::NoHandshake,
        Some(age) if age > HANDSHAKE_STALE_AFTER => TunnelVerdict::HandshakeStale,
        Some(_) if !observation.data_plane_up => TunnelVerdict::DataPlaneDown,
        Some(_) => TunnelVerdict::Healthy,
    }
}

/// The newest handshake age over `peers`, as of `now`.
pub fn newest_handshake_age(peers: &[WgPeer], now: SystemTime) -> Option<Duration> {
    let newest = peers
        .iter()
        .filter_map(|peer| peer.latest_handshake)
        .max()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(now.saturating_sub(newest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "aPriv=\taPub=\t51821\toff\n\
        hubPub=\t(none)\t203.0.113.10:51821\t0.0.0.0/0\t1795234992\t476\t712\t25\n\
        other=\t(none)\t(none)\t10.0.0.0/8\t0\t0\t0\toff\n";

    #[test]
    fn dump_lines_become_peers() {
        let peers = parse_dump(DUMP).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].endpoint.as_deref(), Some("203.0.113.10:51821"));
        assert_eq!(peers[0].latest_handshake, Some(1_795_234_992));
        assert_eq!((peers[0].rx_bytes, peers[0].tx_bytes), (476, 712));
        assert_eq!(peers[1].endpoint, None);
        assert_eq!(peers[1].latest_handshake, None);
    }

    #[test]
    fn malformed_dumps_are_refused() {
        assert!(parse_dump("").is_err());
        assert!(parse_dump("a\tb\n").is_err());
        assert!(parse_dump("a\tb\tc\td\nx\ty\n").is_err());
        assert!(parse_dump("a\tb\tc\td\np\t-\te\tips\tsoon\t1\t2\t3\n").is_err());
    }

    #[test]
    fn handshake_age_is_the_newest_peers() {
        let peers = parse_dump(DUMP).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_795_235_000);
        assert_eq!(
            newest_handshake_age(&peers, now),
            Some(Duration::from_secs(8))
        );
        assert_eq!(newest_handshake_age(&peers[1..], now), None);
    }

    #[test]
    fn each_layer_can_fail_the_tunnel() {
        let fine = TunnelObservation {
            interface_up: true,
            handshake_age: Some(Duration::from_secs(30)),
            data_plane_up: true,
        };
        assert_eq!(verdict(&fine), TunnelVerdict::Healthy);
        let down = TunnelObservation {
            interface_up: false,
            ..fine
        };
        assert_eq!(verdict(&down), TunnelVerdict::InterfaceDown);
        let never = TunnelObservation {
            handshake_age: None,
            ..fine
        };
        assert_eq!(verdict(&never), TunnelVerdict::NoHandshake);
        let stale = TunnelObservation {
            handshake_age: Some(HANDSHAKE_STALE_AFTER + Duration::from_secs(1)),
            ..fine
        };
        assert_eq!(verdict(&stale), TunnelVerdict::HandshakeStale);
    }

    #[test]
    fn a_fresh_handshake_that_passes_no_heartbeats_is_unhealthy() {
        let silent = TunnelObservation {
            interface_up: true,
            handshake_age: Some(Duration::from_secs(5)),
            data_plane_up: false,
        };
        assert_eq!(verdict(&silent), TunnelVerdict::DataPlaneDown);
    }
}
