//! dhcp-takeover's edges: the DHCP sockets (`dhcp`), the ARP prober (`probe`), the durable lease
//! log (`store`) and its group-commit thread (`commit`), the peer API and the tasks that ask the
//! peers (`replicate`), netlink for a taken network's address and routes (`routes`), the
//! metrics, and `agent`, which runs the pure machines (`decide`, `takeover`, `summary`) over
//! them (its replication side in `agent/peers.rs`, its takeover side in `agent/takeover.rs`).

pub mod agent;
mod commit;
mod dhcp;
mod metrics;
pub mod probe;
pub mod replicate;
mod routes;
pub mod store;
