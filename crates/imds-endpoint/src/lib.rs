//! `imds-endpoint`: the EC2 instance metadata service for the area's devices, so they call AWS
//! with credentials of their class's role and hold no keys of their own.
//!
//! The pure parts at the top: `identity` (who asks), `tokens` and `limits` (IMDSv2 tokens,
//! request rates), `sessions` (the credentials and when to refresh them), `protocol` (one
//! request's answer), `cache` (what survives a restart). The edges (HTTP on 169.254.169.254,
//! the neighbour table, STS, the bus, the cache file) are under `edge`.

pub mod cache;
pub mod edge;
pub mod identity;
pub mod limits;
pub mod protocol;
pub mod sessions;
pub mod tokens;

#[cfg(test)]
mod testing;
