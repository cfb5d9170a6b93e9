//! dhcp-takeover: the area's DHCPv4 server. Leases are stored durably before they are
//! acknowledged and (with the takeover work) replicated to the peers, so the lowest-numbered
//! live appliance can serve a dead peer's network from them.
//!
//! `lease` (records and their table), `plan` (pools, classes, reservations, options) and
//! `decide` (RFC 2131 decisions) are pure; `store` is the durable lease log and `commit` its group-commit thread; `probe` checks an
//! address is unused (ARP); `metrics` are registered once; `agent` binds the sockets and runs
//! it all.

pub mod agent;
mod commit;
pub mod decide;
pub mod lease;
mod metrics;
pub mod peer;
pub mod plan;
pub mod probe;
pub mod replicate;
pub mod store;
pub mod takeover;
