//! What the agent tells of the machine's state: `peer/<id>` and `tunnel/<interface>` on the
//! bus, the path and tunnel metrics, the "tunnel health changed" log line.

use fieldnet::bus::{BusClient, topics};

use super::metrics::Metrics;
use crate::failover::Peer;
use crate::packet::SessionState;
use crate::plan::WatchedTunnel;
use crate::tunnel::{TunnelObservation, TunnelVerdict};

/// `peer/<id>`: the peer's verdict and each path's state.
pub(super) fn publish_peer(bus: &BusClient, peer: &Peer) {
    let paths = peer
        .plan()
        .paths
        .iter()
        .zip(peer.sessions())
        .map(|(path, session)| topics::PeerPathState {
            kind: path.kind,
            interface: path.interface.clone(),
            state: session.state().into(),
            rtt_ms: session.rtt().map(|r| r.as_secs_f64() * 1000.0),
        })
        .collect();
    let verdict = peer.liveness().verdict();
    let body = topics::PeerState {
        verdict,
        active_path: peer.active_path(),
        paths,
        since: fieldnet::bus::unix_millis()
            .saturating_sub(peer.liveness().since().elapsed().as_millis() as u64),
    };
    let _ = bus.publish(&topics::peer_topic(peer.plan().id), &body, true);
}

/// Path state and round trip of every path of `peer` (on changes and once a second; the
/// heartbeat loop does not pay for them on every tick).
pub(super) fn path_metrics(metrics: &Metrics, peer: &Peer) {
    let plan = peer.plan();
    let peer_label = plan.label();
    for (path, session) in plan.paths.iter().zip(peer.sessions()) {
        let labels = [peer_label.as_str(), path.label()];
        metrics
            .path_up
            .with_label_values(&labels)
            .set(i64::from(session.state() == SessionState::Up));
        if let Some(rtt) = session.rtt() {
            metrics
                .rtt_us
                .with_label_values(&labels)
                .set(rtt.as_micros() as i64);
        }
    }
}

/// A tunnel was judged: its metrics, and on a change of verdict the log line and
/// `tunnel/<interface>`.
pub(super) fn tunnel_judged(
    metrics: &Metrics,
    bus: &BusClient,
    watched: &WatchedTunnel,
    observation: &TunnelObservation,
    verdict: TunnelVerdict,
    changed: bool,
) {
    let labels = [watched.interface.as_str(), watched.peer.as_str()];
    metrics
        .tunnel_interface_up
        .with_label_values(&labels)
        .set(i64::from(observation.interface_up));
    metrics.tunnel_handshake_age.with_label_values(&labels).set(
        observation
            .handshake_age
            .map_or(-1.0, |age| age.as_secs_f64()),
    );
    metrics
        .tunnel_data_plane_up
        .with_label_values(&labels)
        .set(i64::from(observation.data_plane_up));
    metrics
        .tunnel_healthy
        .with_label_values(&labels)
        .set(i64::from(verdict == TunnelVerdict::Healthy));
    if changed {
        tracing::info!(
            tunnel = %watched.interface,
            peer = %watched.peer,
            verdict = %verdict.as_str(),
            handshake_age_s = observation.handshake_age.map(|a| a.as_secs()),
            "tunnel health changed"
        );
        let body = topics::TunnelState {
            interface: watched.interface.clone(),
            peer: watched.peer.clone(),
            verdict,
            handshake_age_s: observation.handshake_age.map(|a| a.as_secs()),
            data_plane_up: observation.data_plane_up,
            since: fieldnet::bus::unix_millis(),
        };
        let _ = bus.publish(&topics::tunnel_topic(&watched.interface), &body, true);
    }
}
