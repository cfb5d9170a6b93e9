//! The edges of imds-endpoint: HTTP on 169.254.169.254 (`http`), the kernel's neighbour table
//! and the address itself (`kernel`), the cache file (`store`), metrics, and the agent that
//! joins them to the bus and STS (`agent`).

pub mod agent;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod store;
