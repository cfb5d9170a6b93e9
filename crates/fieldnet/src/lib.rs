//! The shared library of the fieldnet agents.
//!
//! `config` reads the appliance file, `bus` speaks the local message bus, `obs` sets up logs,
//! metrics and health, `net` carries out the netlink operations several agents need, `names` checks DNS labels and
//! hex bytes, `rt`
//! runs an agent process, `cli` holds the flags every binary shares.

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod files;
pub mod names;
pub mod net;
pub mod obs;
pub mod raw;
pub mod rt;
