//! A hub's WireGuard peers from `wg show all dump`: one line per interface (5 tab-separated
//! fields), one per peer (9: interface, public key, preshared key, endpoint, allowed IPs,
//! latest handshake, bytes received, bytes sent, keepalive). A peer is a device when it shook
//! hands within [`HANDSHAKE_FRESH_S`] (WireGuard rekeys every two minutes while in use).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A peer whose last handshake is older than this is not connected.
pub const HANDSHAKE_FRESH_S: u64 = 180;

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub interface: String,
    pub key: String,
    /// Its first single-host allowed address (its tunnel address).
    pub address: Ipv4Addr,
    /// Latest handshake, seconds since the Unix epoch.
    pub handshake: u64,
}

/// The peers of `dump` that shook hands within [`HANDSHAKE_FRESH_S`] of `now_s`; lines that do
/// not parse are skipped.
pub fn connected_peers(dump: &str, now_s: u64) -> Vec<Peer> {
    dump.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [
                interface,
                key,
                _psk,
                _endpoint,
                allowed,
                handshake,
                _rx,
                _tx,
                _keepalive,
            ] = fields[..]
            else {
                return None;
            };
            let handshake: u64 = handshake.parse().ok()?;
            if handshake == 0 || now_s.saturating_sub(handshake) > HANDSHAKE_FRESH_S {
                return None;
            }
            let address = allowed.split(',').find_map(|range| {
                range
                    .trim()
                    .parse::<Ipv4Net>()
                    .ok()
                    .filter(|net| net.prefix_len() == 32)
                    .map(|net| net.addr())
            })?;
            Some(Peer {
                interface: interface.to_owned(),
                key: key.to_owned(),
                address,
                handshake,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "wg0\tPRIVATE=\tPUBLIC=\t51820\toff
wg0\tpeerA+/=\t(none)\t203.0.113.5:40000\t10.253.0.1/32,10.101.0.0/24\t1000\t10\t20\t25
wg0\tpeerB=\t(none)\t(none)\t10.253.0.2/32\t0\t0\t0\toff
wg0\tpeerC=\t(none)\t203.0.113.7:40000\t10.253.0.3/32\t700\t1\t2\toff
wg1\tpeerD=\t(none)\t203.0.113.8:1\t10.0.0.0/8\t1000\t1\t2\toff
garbage\tline";

    #[test]
    fn only_peers_with_a_fresh_handshake_and_a_host_address_are_devices() {
        let peers = connected_peers(DUMP, 1100);
        assert_eq!(
            peers,
            [Peer {
                interface: "wg0".into(),
                key: "peerA+/=".into(),
                address: Ipv4Addr::new(10, 253, 0, 1),
                handshake: 1000,
            }]
        );
        // peerB never shook hands, peerC's is 400 s old, peerD has no host address; at 800
        // peerC's is 100 s old (and peerA's, ahead of this clock, counts as fresh).
        let keys: Vec<String> = connected_peers(DUMP, 800)
            .into_iter()
            .map(|peer| peer.key)
            .collect();
        assert_eq!(keys, ["peerA+/=", "peerC="]);
    }
}
