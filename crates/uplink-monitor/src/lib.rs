//! uplink-monitor: probes every uplink, scores them, and steers the default route to the best.
//!
//! At the top, pure: `monitor` decides (which uplink carries traffic, and which path a remote
//! uplink goes by), `score` and `dampening` are its arithmetic, and `settle` is the loop between
//! the monitor and what carries out its outputs. Under `edge`, the modules that turn sockets,
//! netlink and timers into its inputs and carry out its outputs.

pub mod dampening;
pub mod monitor;
pub mod score;
pub mod settle;

pub mod edge;
