//! uplink-monitor's edges: the probe sockets (`probe`), the HTTP check (`httpcheck`), the
//! per-uplink egress marks (`egress`), the kernel's routes and rules (`kernel`), and `agent`,
//! which runs the `monitor` machine over them.

pub mod agent;
pub mod egress;
pub mod httpcheck;
pub mod kernel;
mod metrics;
pub mod probe;
