//! Real peers for tests of this crate and of its users: a [`MotoServer`] (moto's AWS mock, a
//! separate process on loopback) and a [`FaultProxy`] that answers chosen requests with AWS
//! errors before they reach it. Compiled always and kept small, with std only (no tokio), so
//! any test can use them. Invariant: both listen on 127.0.0.1 only, and both are stopped when
//! dropped, the moto process killed and reaped.

mod fault_proxy;
pub mod fixtures;
mod moto;
mod raw_http;

pub use fault_proxy::{FaultProxy, Faults};
pub use moto::{MOTO_SERVER_PROGRAM, MotoServer};
