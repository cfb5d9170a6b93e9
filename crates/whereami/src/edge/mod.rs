//! whereami's edges: what touches sockets, the resolver and the runtime. `server` is the hickory
//! request handler (decides with `answer`, forwards with `forward`); `respond` runs one request
//! through it; `udp` serves UDP from the answer cache and drops queries from site addresses that
//! arrive on an uplink (`uplinks`); `tcp` serves TCP under caps; `agent` binds the LAN addresses,
//! follows the bus and runs it all.

pub mod agent;
pub mod forward;
pub mod respond;
pub mod server;
pub mod tcp;
pub mod udp;
pub mod uplinks;
