//! cross-site-failover: heartbeats over every path to every peer, the best live path to each
//! area, peer liveness, and (in hub mode) the AWS side of failover.
//!
//! Decisions are pure and meet in one machine, `failover` (`Failover::step`), built from the
//! config's `plan`: the heartbeat wire format with its authentication (`packet`), the per-path
//! session state machine with peer liveness (`session`), the per-peer path choice (`choice`),
//! tunnel health in three layers (`tunnel`) and the hub pair's decisions (`hub`). Under `edge`:
//! `agent` (sockets, routes, bus, metrics, tunnel reads) and `hub_aws`, which carries the hub
//! pair's decisions out in AWS (VPC route tables, Route53 switches, CloudWatch).

pub mod choice;
pub mod edge;
pub mod failover;
pub mod hub;
pub mod packet;
pub mod plan;
pub mod session;
pub mod tunnel;
