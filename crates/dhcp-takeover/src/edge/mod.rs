//! dhcp-takeover's edges: the DHCP sockets, the ARP prober (`probe`), the durable lease log
//! (`store`) and its group-commit thread (`commit`), the peer API and the tasks that ask the
//! peers (`replicate`), netlink for a taken network's address and routes, the metrics, and
//! `agent`, which runs the pure machines (`decide`, `takeover`) over them.

pub mod agent;
mod commit;
mod metrics;
pub mod probe;
pub mod replicate;
pub mod store;
