//! The edges: what touches sockets, netlink, processes, the bus and AWS. `agent` runs the
//! machine (`crate::failover`) and carries out its outputs; `heartbeats` owns the path
//! sockets, `tunnels` reads WireGuard, `hub_aws` reconciles AWS with the hub pair's wishes.

pub mod agent;
mod heartbeats;
pub mod hub_aws;
mod metrics;
mod report;
mod tunnels;
