//! cross-site-failover: heartbeats over every path to every peer, the best live path to each
//! area, peer liveness, and (in hub mode) the AWS side of failover.
//!
//! Decisions are pure: the heartbeat wire format with its authentication (`packet`), the per-path
//! session state machine with peer liveness (`session`), and the per-peer path choice (`choice`).
//! `agent` is the appliance edge (sockets, routes, bus, metrics). Hub mode follows.

pub mod agent;
pub mod choice;
pub mod packet;
pub mod session;
