//! cross-site-failover: heartbeats over every path to every peer, the best live path to each
//! area, peer liveness, and (in hub mode) the AWS side of failover.
//!
//! This first part is pure: the heartbeat wire format with its authentication (`packet`), the
//! per-path session state machine with peer liveness (`session`), and the per-peer path choice
//! (`choice`). The edge (sockets, rtnetlink, bus) and hub mode follow.

pub mod choice;
pub mod packet;
pub mod session;
