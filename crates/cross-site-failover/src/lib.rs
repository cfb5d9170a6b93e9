//! cross-site-failover: heartbeats over every path to every peer, the best live path to each
//! area, peer liveness, and (in hub mode) the AWS side of failover.
//!
//! Decisions are pure: the heartbeat wire format with its authentication (`packet`), the per-path
//! session state machine with peer liveness (`session`), and the per-peer path choice (`choice`).
//! //! Tunnel health in three layers (`tunnel`) and the hub pair's decisions (`hub`) are pure too.
//! `agent` is the edge (sockets, routes, bus, metrics, tunnel reads); `hub_aws` carries the hub
//! pair's decisions out in AWS (VPC route tables, Route53 switches, CloudWatch).

pub mod agent;
pub mod choice;
pub mod hub;
pub mod hub_aws;
pub mod packet;
pub mod session;
pub mod tunnel;
