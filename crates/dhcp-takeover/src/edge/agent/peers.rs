//! The agent's side of replication: answering a peer's ask from the lease table, storing what
//! a peer's reply brings, and following `peer/<id>` for the coordinator and the peer tasks.

use fieldnet::bus::topics;

use super::{Agent, now_ms};
use crate::edge::commit::Job;
use crate::edge::replicate::{PeerEvent, SyncAsk};
use crate::peer::{self, SyncReply, Synced};

impl Agent {
    /// Wakes every peer's task to nudge its peer: something here changed.
    pub(super) fn tell_peers(&self) {
        for news in self.peers.news.values() {
            news.notify_one();
        }
    }

    /// A peer asks for our changes since its cursor: answered from the lease table.
    pub(super) fn on_ask(&mut self, ask: SyncAsk) {
        let since = if ask.params.epoch == self.coordinator.epoch() {
            ask.params.since.min(self.server.leases().cursor())
        } else {
            0
        };
        // Only what is on disk here: a record that could still be taken back never leaves.
        let changes = self.server.changed_since(since, peer::MAX_RECORDS);
        let synced = self.peers.synced.values().copied().collect();
        let reply = SyncReply {
            from: self.me,
            epoch: self.coordinator.epoch(),
            cursor: changes.cursor,
            records: changes.records,
            more: changes.more,
            status: self.coordinator.status(now_ms(), synced),
        };
        let _ = ask.answer.send(reply);
    }

    /// A peer answered (or did not): its records go to the log, then a mark saying up to where.
    pub(super) fn on_peer(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Reply { peer, reply } => {
                self.metrics
                    .syncs
                    .with_label_values(&[peer.to_string().as_str(), "ok"])
                    .inc();
                self.coordinator.reply(peer, now_ms(), reply.status);
                for lease in reply.records {
                    if self.server.learn(lease.clone()) {
                        let _ = self.commits.send(Job::Store { lease, reply: None });
                    }
                }
                let mark = Synced {
                    peer,
                    epoch: reply.epoch,
                    cursor: reply.cursor,
                };
                if self.peers.synced.get(&peer) != Some(&mark) {
                    let _ = self.commits.send(Job::Mark(mark));
                }
            }
            PeerEvent::Failed { peer, error } => {
                self.metrics
                    .syncs
                    .with_label_values(&[peer.to_string().as_str(), "failed"])
                    .inc();
                tracing::debug!(peer, %error, "no sync reply from a peer");
            }
        }
    }

    /// `peer/<id>` from cross-site-failover: the bus's verdict and the active path.
    pub(super) fn on_liveness(&mut self, topic: &str, body: &serde_json::Value) {
        let Some(id) = topics::parse_peer_topic(topic) else {
            return;
        };
        let state: Option<topics::PeerState> = serde_json::from_value(body.clone()).ok();
        let verdict = state.as_ref().and_then(|s| match s.verdict {
            topics::PeerVerdict::Alive => Some(true),
            topics::PeerVerdict::Dead => Some(false),
            topics::PeerVerdict::Unknown => None,
        });
        self.coordinator.bus(id, verdict);
        if let Some(active) = self.peers.active.get(&id) {
            let path = state.and_then(|s| s.active_path);
            active.send_if_modified(|current| {
                let changed = *current != path;
                *current = path;
                changed
            });
        }
    }
}
