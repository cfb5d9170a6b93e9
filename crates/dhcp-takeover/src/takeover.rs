//! Who answers DHCP on which network, decided purely from time, the bus's peer verdicts and what
//! the peers said in their last sync replies.
//!
//! Rules:
//! - An own network is answered once every peer has told us it does not hold it (or is dead, or
//!   stayed silent through the start-up grace). While a peer holds it, we wait and say so
//!   (`wants_back`).
//! - A peer is dead only when the bus says so (cross-site-failover's heartbeats) **and** our own
//!   check agrees: no sync reply from it for [`CONFIRM_MS`]. Without any bus verdict our own
//!   check alone decides, after [`NO_BUS_DEAD_MS`].
//! - A dead peer's network is taken by the lowest-numbered live appliance with a leg on it.
//! - Handback: the owner asks (`wants_back`); the taker stops answering (pause), notes its change
//!   number, and withdraws the network (address included) only once the owner reports it has
//!   stored everything up to that number. The owner starts answering only after the taker's
//!   status no longer holds the network. So there are never two servers answering, and the
//!   owner never answers without the leases issued in its absence.
//! - A taker that learns the owner (or a lower-numbered appliance) holds the network withdraws at
//!   once: after a split brain heals, the owner keeps its network.
//! - A taker restarted while holding a network (its gateway address still on the leg) adopts
//!   it: the address stays, so the network's traffic keeps flowing, and it counts as held; DHCP
//!   is answered again once the owner is confirmed dead, and the network is withdrawn or handed
//!   back only by the rules above.
//!
//! Invariant: a network is held (answering or handing back) by at most one role here, and an
//! action is emitted only on a change of state.

use std::collections::BTreeMap;

use fieldnet::bus::topics::DhcpNetworkState;

use crate::peer::{PeerStatus, Served, Synced};

/// Our own check: a peer is silent after this long without a sync reply.
pub const CONFIRM_MS: u64 = 750;
/// Silence after which a peer with no bus verdict at all counts as dead.
pub const NO_BUS_DEAD_MS: u64 = 3_000;
/// How long a peer's status is believed after its last reply.
pub const STATUS_FRESH_MS: u64 = 2_000;
/// How long an own network waits at start for silent peers before answering anyway.
pub const STARTUP_GRACE_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The network of this appliance's own area.
    Own,
    /// A dead peer's network, taken over.
    Taken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start (or resume) answering DHCP on `network`; for a taken network its gateway address
    /// is added first. Announce the gateway with gratuitous ARP.
    Serve { network: String, role: Role },
    /// Stop answering DHCP on a taken network being handed back; its address stays.
    Pause { network: String },
    /// Stop answering and remove the taken network's gateway address.
    Withdraw { network: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnState {
    Waiting,
    Serving,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakenState {
    Idle,
    Serving,
    /// Paused for handback; withdrawn once the owner has stored changes up to `cursor`.
    Releasing {
        cursor: u64,
    },
    /// Found held at start (left by the previous run): the address stays, DHCP waits for the
    /// owner's fate.
    Adopted,
}

#[derive(Debug, Clone, Default)]
struct PeerView {
    /// The bus's verdict: `Some(true)` alive, `Some(false)` dead, `None` unknown.
    bus_alive: Option<bool>,
    last_reply: Option<u64>,
    status: Option<PeerStatus>,
}

/// The takeover state of one appliance.
#[derive(Debug, Clone)]
pub struct Coordinator {
    me: u8,
    epoch: u64,
    started: u64,
    own: BTreeMap<String, OwnState>,
    /// Networks of other appliances this one has a leg on: owner and state.
    taken: BTreeMap<String, (u8, TakenState)>,
    peers: BTreeMap<u8, PeerView>,
}

impl Coordinator {
    /// `own`: this appliance's networks; `legs`: other appliances' networks it has an interface
    /// on, with their owner; `epoch`: this process's generation of change numbers.
    pub fn new(
        me: u8,
        epoch: u64,
        now: u64,
        own: impl IntoIterator<Item = String>,
        legs: impl IntoIterator<Item = (String, u8)>,
        peers: impl IntoIterator<Item = u8>,
    ) -> Self {
        Self {
            me,
            epoch,
            started: now,
            own: own.into_iter().map(|n| (n, OwnState::Waiting)).collect(),
            taken: legs
                .into_iter()
                .map(|(n, owner)| (n, (owner, TakenState::Idle)))
                .collect(),
            peers: peers
                .into_iter()
                .filter(|&p| p != me)
                .map(|p| (p, PeerView::default()))
                .collect(),
        }
    }

    /// `network` (a leg's) was held when this agent started: adopt it (see the rules above).
    /// Says whether it is a leg here.
    pub fn adopt(&mut self, network: &str) -> bool {
        match self.taken.get_mut(network) {
            Some(entry) => {
                entry.1 = TakenState::Adopted;
                true
            }
            None => false,
        }
    }

    /// The bus's verdict on `peer` changed.
    pub fn bus(&mut self, peer: u8, alive: Option<bool>) {
        if let Some(view) = self.peers.get_mut(&peer) {
            view.bus_alive = alive;
        }
    }

    /// `peer` answered a sync with `status`.
    pub fn reply(&mut self, peer: u8, now: u64, status: PeerStatus) {
        if let Some(view) = self.peers.get_mut(&peer) {
            view.last_reply = Some(now);
            view.status = Some(status);
        }
    }

    fn silent_for(&self, view: &PeerView, now: u64) -> u64 {
        now.saturating_sub(view.last_reply.unwrap_or(self.started))
    }

    pub fn is_dead(&self, peer: u8, now: u64) -> bool {
        let Some(view) = self.peers.get(&peer) else {
            return false;
        };
        let silent = self.silent_for(view, now);
        match view.bus_alive {
            Some(true) => false,
            Some(false) => silent >= CONFIRM_MS,
            None => silent >= NO_BUS_DEAD_MS,
        }
    }

    pub fn is_alive(&self, peer: u8, now: u64) -> bool {
        self.peers.get(&peer).is_some_and(|view| {
            view.bus_alive == Some(true) || self.silent_for(view, now) < CONFIRM_MS
        })
    }

    fn fresh_status(&self, peer: u8, now: u64) -> Option<&PeerStatus> {
        let view = self.peers.get(&peer)?;
        let at = view.last_reply?;
        (now.saturating_sub(at) <= STATUS_FRESH_MS)
            .then_some(view.status.as_ref())
            .flatten()
    }

    /// The live peers that say they hold `network`, lowest first.
    fn holders(&self, network: &str, now: u64) -> Vec<u8> {
        self.peers
            .keys()
            .copied()
            .filter(|&p| {
                self.is_alive(p, now)
                    && self
                        .fresh_status(p, now)
                        .is_some_and(|status| status.serves(network))
            })
            .collect()
    }

    /// Whether this appliance is the lowest-numbered live one with a leg on `network`, which
    /// belongs to `owner`.
    fn first_in_line(&self, network: &str, owner: u8, now: u64) -> bool {
        !self.peers.keys().any(|&p| {
            p < self.me
                && p != owner
                && self.is_alive(p, now)
                && self
                    .fresh_status(p, now)
                    .is_some_and(|status| status.legs.iter().any(|l| l == network))
        })
    }

    /// Re-decides every network; `cursor` is the number of the last lease change here.
    pub fn tick(&mut self, now: u64, cursor: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let own: Vec<String> = self.own.keys().cloned().collect();
        for network in own {
            if self.own[&network] == OwnState::Serving {
                continue;
            }
            let held_elsewhere = !self.holders(&network, now).is_empty();
            let grace_over = now.saturating_sub(self.started) >= STARTUP_GRACE_MS;
            let everyone_answered = self
                .peers
                .iter()
                .all(|(&p, view)| view.last_reply.is_some() || self.is_dead(p, now) || grace_over);
            if !held_elsewhere && everyone_answered {
                self.own.insert(network.clone(), OwnState::Serving);
                actions.push(Action::Serve {
                    network,
                    role: Role::Own,
                });
            }
        }
        let taken: Vec<(String, u8, TakenState)> = self
            .taken
            .iter()
            .map(|(n, (owner, state))| (n.clone(), *owner, *state))
            .collect();
        for (network, owner, state) in taken {
            let holders = self.holders(&network, now);
            let outranked = holders.iter().any(|&p| p == owner || p < self.me);
            let owner_status = self.fresh_status(owner, now).cloned();
            let owner_alive = self.is_alive(owner, now);
            let wants_back = owner_alive
                && owner_status
                    .as_ref()
                    .is_some_and(|s| s.wants_back.contains(&network));
            let next = match state {
                TakenState::Idle => {
                    if self.is_dead(owner, now)
                        && holders.is_empty()
                        && self.first_in_line(&network, owner, now)
                    {
                        actions.push(Action::Serve {
                            network: network.clone(),
                            role: Role::Taken,
                        });
                        TakenState::Serving
                    } else {
                        state
                    }
                }
                TakenState::Serving | TakenState::Adopted if outranked => {
                    actions.push(Action::Withdraw {
                        network: network.clone(),
                    });
                    TakenState::Idle
                }
                TakenState::Serving | TakenState::Adopted if wants_back => {
                    actions.push(Action::Pause {
                        network: network.clone(),
                    });
                    TakenState::Releasing { cursor }
                }
                TakenState::Serving => state,
                TakenState::Adopted => {
                    if self.is_dead(owner, now) && self.first_in_line(&network, owner, now) {
                        actions.push(Action::Serve {
                            network: network.clone(),
                            role: Role::Taken,
                        });
                        TakenState::Serving
                    } else {
                        state
                    }
                }
                TakenState::Releasing { cursor: wanted } => {
                    let stored = owner_status
                        .as_ref()
                        .and_then(|s| s.synced_from(self.me))
                        .is_some_and(|s| s.epoch == self.epoch && s.cursor >= wanted);
                    if outranked || (wants_back && stored) {
                        actions.push(Action::Withdraw {
                            network: network.clone(),
                        });
                        TakenState::Idle
                    } else if !wants_back {
                        // The owner died again, or stopped asking: keep the network answered.
                        actions.push(Action::Serve {
                            network: network.clone(),
                            role: Role::Taken,
                        });
                        TakenState::Serving
                    } else {
                        state
                    }
                }
            };
            if let Some(entry) = self.taken.get_mut(&network) {
                entry.1 = next;
            }
        }
        actions
    }

    /// What this appliance tells its peers; `synced` is what it has stored from each.
    pub fn status(&self, now: u64, synced: Vec<Synced>) -> PeerStatus {
        let mut serving: Vec<Served> = self
            .own
            .iter()
            .filter(|(_, state)| **state == OwnState::Serving)
            .map(|(network, _)| Served {
                network: network.clone(),
                owner: self.me,
            })
            .collect();
        serving.extend(
            self.taken
                .iter()
                .filter(|(_, (_, state))| *state != TakenState::Idle)
                .map(|(network, (owner, _))| Served {
                    network: network.clone(),
                    owner: *owner,
                }),
        );
        let wants_back = self
            .own
            .iter()
            .filter(|(network, state)| {
                **state == OwnState::Waiting && !self.holders(network, now).is_empty()
            })
            .map(|(network, _)| network.clone())
            .collect();
        PeerStatus {
            serving,
            legs: self.taken.keys().cloned().collect(),
            wants_back,
            synced,
        }
    }

    /// The state of every network this appliance can answer: `own`, `waiting`, `taken`,
    /// `handing_back`, `adopted` or `standby`, for metrics and `fieldctl`.
    pub fn states(&self) -> Vec<(String, DhcpNetworkState)> {
        let own = self.own.iter().map(|(network, state)| {
            let word = match state {
                OwnState::Serving => DhcpNetworkState::Own,
                OwnState::Waiting => DhcpNetworkState::Waiting,
            };
            (network.clone(), word)
        });
        let taken = self.taken.iter().map(|(network, (_, state))| {
            let word = match state {
                TakenState::Idle => DhcpNetworkState::Standby,
                TakenState::Serving => DhcpNetworkState::Taken,
                TakenState::Releasing { .. } => DhcpNetworkState::HandingBack,
                TakenState::Adopted => DhcpNetworkState::Adopted,
            };
            (network.clone(), word)
        });
        own.chain(taken).collect()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N1: &str = "NETWORK1";
    const N2: &str = "NETWORK2";

    fn status(serving: &[(&str, u8)], legs: &[&str], wants_back: &[&str]) -> PeerStatus {
        PeerStatus {
            serving: serving
                .iter()
                .map(|(n, o)| Served {
                    network: (*n).to_owned(),
                    owner: *o,
                })
                .collect(),
            legs: legs.iter().map(|l| (*l).to_owned()).collect(),
            wants_back: wants_back.iter().map(|w| (*w).to_owned()).collect(),
            synced: Vec::new(),
        }
    }

    fn serve(network: &str, role: Role) -> Action {
        Action::Serve {
            network: network.to_owned(),
            role,
        }
    }

    /// Whether `actions` take a network over.
    fn takes(actions: &[Action]) -> bool {
        actions.iter().any(|a| {
            matches!(
                a,
                Action::Serve {
                    role: Role::Taken,
                    ..
                }
            )
        })
    }

    /// Appliance 1 (NETWORK1, with a leg on NETWORK2) and appliance 2 (NETWORK2).
    fn one() -> Coordinator {
        Coordinator::new(1, 77, 0, [N1.to_owned()], [(N2.to_owned(), 2)], [1, 2])
    }

    #[test]
    fn own_network_is_answered_once_the_peer_says_it_does_not_hold_it() {
        let mut c = one();
        assert!(c.tick(10, 0).is_empty(), "no word from the peer yet");
        c.reply(2, 20, status(&[(N2, 2)], &[], &[]));
        assert_eq!(c.tick(30, 0), [serve(N1, Role::Own)]);
        assert!(c.tick(40, 0).is_empty(), "no repeated action");
    }

    #[test]
    fn a_silent_peer_is_waited_for_only_through_the_grace() {
        let mut c = one();
        c.bus(2, Some(true));
        assert!(c.tick(STARTUP_GRACE_MS - 1, 0).is_empty());
        assert_eq!(c.tick(STARTUP_GRACE_MS, 0).len(), 1);
    }

    #[test]
    fn takeover_needs_the_bus_and_our_own_check() {
        let mut c = one();
        c.reply(2, 0, status(&[(N2, 2)], &[], &[]));
        c.tick(1, 0);
        // The bus says dead, but the peer answered us 100 ms ago: not yet.
        c.bus(2, Some(false));
        c.reply(2, 1_000, status(&[(N2, 2)], &[], &[]));
        assert!(c.tick(1_100, 5).is_empty());
        // Silent for CONFIRM_MS: taken.
        assert_eq!(c.tick(1_000 + CONFIRM_MS, 5), [serve(N2, Role::Taken)]);
        // Our check alone (bus says alive) never takes over.
        let mut d = one();
        d.bus(2, Some(true));
        assert!(d.tick(60_000, 0).iter().all(|a| matches!(
            a,
            Action::Serve {
                role: Role::Own,
                ..
            }
        )));
        // No bus verdict at all: our own check, after the longer wait.
        let mut e = one();
        let early = e.tick(NO_BUS_DEAD_MS - 1, 0);
        assert!(!takes(&early));
        assert!(takes(&e.tick(NO_BUS_DEAD_MS, 0)));
    }

    #[test]
    fn the_lowest_numbered_live_appliance_with_a_leg_takes_over() {
        // Appliance 3 with a leg on NETWORK2; appliance 1 is alive and has a leg too.
        let mut c = Coordinator::new(
            3,
            1,
            0,
            ["NETWORK3".to_owned()],
            [(N2.to_owned(), 2)],
            [1, 2, 3],
        );
        c.bus(1, Some(true));
        c.bus(2, Some(false));
        c.reply(1, 5_000, status(&[(N1, 1)], &[N2], &[]));
        assert!(!takes(&c.tick(5_100, 0)), "appliance 1 is first in line");
        // Appliance 1 has no leg there: 3 takes it.
        c.reply(1, 5_200, status(&[(N1, 1)], &[], &[]));
        assert!(takes(&c.tick(5_300, 0)));
        // Appliance 1 says it holds it after all: the higher-numbered one withdraws.
        c.reply(1, 5_400, status(&[(N1, 1), (N2, 2)], &[N2], &[]));
        assert_eq!(c.tick(5_500, 0), [Action::Withdraw { network: N2.into() }]);
    }

    fn taken_at(now: u64) -> Coordinator {
        let mut c = one();
        c.bus(2, Some(false));
        let actions = c.tick(now, 0);
        assert!(actions.contains(&serve(N2, Role::Taken)));
        c
    }

    #[test]
    fn handback_waits_until_the_owner_has_stored_everything() {
        let mut c = taken_at(5_000);
        // The owner is back and wants its network.
        c.bus(2, Some(true));
        c.reply(2, 6_000, status(&[], &[], &[N2]));
        assert_eq!(c.tick(6_001, 40), [Action::Pause { network: N2.into() }]);
        assert_eq!(
            c.status(6_001, vec![]).serving.len(),
            2,
            "still held while handing back"
        );
        // The owner wants NETWORK2 back and has stored our changes up to `cursor` of `epoch`.
        let stored = |epoch, cursor| {
            let mut owner = status(&[], &[], &[N2]);
            owner.synced = vec![Synced {
                peer: 1,
                epoch,
                cursor,
            }];
            owner
        };
        // Stored up to 39 only: not yet.
        c.reply(2, 6_100, stored(77, 39));
        assert!(c.tick(6_101, 45).is_empty());
        // Up to 40, but of another generation of ours: not yet.
        c.reply(2, 6_200, stored(76, 40));
        assert!(c.tick(6_201, 45).is_empty());
        c.reply(2, 6_300, stored(77, 40));
        assert_eq!(c.tick(6_301, 45), [Action::Withdraw { network: N2.into() }]);
        assert!(!c.status(6_301, vec![]).serves(N2));
    }

    #[test]
    fn the_owner_waits_while_a_peer_holds_its_network_and_says_so() {
        let mut c = Coordinator::new(2, 9, 0, [N2.to_owned()], [], [1, 2]);
        c.bus(1, Some(true));
        c.reply(1, 10, status(&[(N1, 1), (N2, 2)], &[N2], &[]));
        assert!(c.tick(20, 0).is_empty());
        assert_eq!(c.status(20, vec![]).wants_back, [N2]);
        // Long past the grace, still held: still waiting.
        c.reply(1, 10_000, status(&[(N1, 1), (N2, 2)], &[N2], &[]));
        assert!(c.tick(10_001, 0).is_empty());
        // Handed back.
        c.reply(1, 10_100, status(&[(N1, 1)], &[N2], &[]));
        assert_eq!(c.tick(10_101, 0), [serve(N2, Role::Own)]);
        assert!(c.status(10_101, vec![]).wants_back.is_empty());
    }

    #[test]
    fn a_taker_withdraws_when_the_owner_is_found_serving() {
        let mut c = taken_at(5_000);
        c.bus(2, Some(true));
        c.reply(2, 6_000, status(&[(N2, 2)], &[], &[]));
        assert_eq!(c.tick(6_001, 0), [Action::Withdraw { network: N2.into() }]);
    }

    #[test]
    fn a_handback_resumes_when_the_owner_dies_again() {
        let mut c = taken_at(5_000);
        c.bus(2, Some(true));
        c.reply(2, 6_000, status(&[], &[], &[N2]));
        assert_eq!(c.tick(6_001, 40), [Action::Pause { network: N2.into() }]);
        c.bus(2, Some(false));
        assert_eq!(
            c.tick(6_000 + STATUS_FRESH_MS + 1, 40),
            [serve(N2, Role::Taken)]
        );
    }

    /// Audit finding 3: a restart during a takeover removed the taken network's address at
    /// start and re-added it seconds later. Adopted, it stays held until the coordinator
    /// decides: served again once the owner is confirmed dead.
    #[test]
    fn a_restart_during_a_takeover_keeps_the_taken_network() {
        let mut c = Coordinator::new(
            1,
            7,
            0,
            ["NETWORK1".to_owned()],
            [("NETWORK2".to_owned(), 2)],
            [1, 2],
        );
        assert!(c.adopt("NETWORK2"));
        assert!(!c.adopt("NETWORK9"));
        // Nothing heard yet: no withdrawal, and the network counts as held here.
        let actions = c.tick(100, 0);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Withdraw { .. })),
            "{actions:?}"
        );
        assert!(c.status(100, Vec::new()).serves("NETWORK2"));
        assert!(
            c.states()
                .contains(&("NETWORK2".to_owned(), DhcpNetworkState::Adopted))
        );
        // The bus says the owner is dead and our own check agrees: answered again.
        c.bus(2, Some(false));
        let actions = c.tick(CONFIRM_MS + 1, 0);
        assert!(
            actions.contains(&serve("NETWORK2", Role::Taken)),
            "{actions:?}"
        );
        assert!(
            c.states()
                .contains(&("NETWORK2".to_owned(), DhcpNetworkState::Taken))
        );
    }

    /// An adopted network whose owner turns out to be serving it is withdrawn at once.
    #[test]
    fn an_adopted_network_the_owner_serves_is_withdrawn() {
        let mut c = Coordinator::new(1, 7, 0, [], [("NETWORK2".to_owned(), 2)], [1, 2]);
        c.adopt("NETWORK2");
        c.bus(2, Some(true));
        c.reply(2, 10, status(&[("NETWORK2", 2)], &[], &[]));
        assert_eq!(
            c.tick(20, 0),
            vec![Action::Withdraw {
                network: "NETWORK2".to_owned()
            }]
        );
    }
}
