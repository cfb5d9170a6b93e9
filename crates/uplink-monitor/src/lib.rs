//! uplink-monitor: probes every uplink, scores them, and steers the default route to the best.
//!
//! At the top, pure: `monitor` decides, `score` and `dampening` are its arithmetic. Under
//! `edge`, the modules that turn sockets, netlink and timers into its inputs and carry out its
//! outputs.

pub mod dampening;
pub mod monitor;
pub mod score;

pub mod edge;
