//! dhcp-takeover: the area's DHCPv4 server. Leases are stored durably before they are
//! acknowledged and (with the takeover work) replicated to the peers, so the lowest-numbered
//! live appliance can serve a dead peer's network from them.
//!
//! At the top, pure: `lease` (records and their table), `plan` (pools, classes, reservations,
//! options), `decide` (RFC 2131 decisions), `takeover` (who serves which network), `peer` (the
//! peer API's messages and signatures) and `summary` (the counts and states published each
//! second). Under `edge`: the sockets, the lease log and its committer, the ARP prober, the
//! peer API and netlink, run together by `edge::agent`.

pub mod decide;
pub mod lease;
pub mod peer;
pub mod plan;
pub mod summary;
pub mod takeover;

pub mod edge;
