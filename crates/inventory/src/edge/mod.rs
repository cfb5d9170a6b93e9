//! The agent's edges: the bus, the kernel's neighbour events, the sweeps' sockets, the
//! exporter probes, HTTP service discovery and the files it keeps. `agent` feeds them all into
//! the pure device list.

pub mod agent;
pub mod http;
pub mod metrics;
pub mod neighbours;
pub mod probe;
pub mod store;
pub mod sweeper;
