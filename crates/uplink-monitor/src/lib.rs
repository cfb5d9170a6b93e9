//! uplink-monitor: probes every uplink, scores them, and steers the default route to the best.
//!
//! `monitor` decides (pure), `score` and `dampening` are its arithmetic; the edge modules turn
//! sockets, netlink and timers into its inputs and carry out its outputs.

pub mod agent;
pub mod dampening;
pub mod egress;
pub mod httpcheck;
pub mod kernel;
pub mod monitor;
pub mod probe;
pub mod score;
