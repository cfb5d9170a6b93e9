//! whereami: the area's DNS server. Devices look up TXT `whereami.<zone>` and learn the name of
//! the network they are on (on the internet, the public zone answers `INTERNET`); names under
//! the site zone are answered locally; everything else is forwarded through a cache that serves
//! stale answers while the uplinks are down.
//!
//! At the top, pure: `answer` (who is asking what → the answer), `cache`, `packet` (the answer
//! cache) and `dhcp` (what the bus's leases and takeovers change). Under `edge`, what touches
//! sockets, the resolver and the runtime: `forward` asks the upstreams, `server` is the hickory
//! request handler, `respond` runs one request through it, `udp` and `tcp` serve, and `agent`
//! binds the LAN addresses, follows the bus and runs it all.

pub mod answer;
pub mod cache;
pub mod dhcp;
pub mod packet;

pub mod edge;
