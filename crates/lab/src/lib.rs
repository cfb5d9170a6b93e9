//! The fieldnet test lab: real network topologies in Linux network namespaces, with faults
//! injected by the kernel (link down, nftables blackhole and loss, tbf rate limits) and latency
//! added by a userspace TUN link, for fieldnet's lab tests and the `cargo xtask lab` demo.
//!
//! It owns every namespace, process, nftables table, qdisc and TUN device it creates, and
//! nothing else. Invariant: each of those is removed when the guard that created it drops
//! (`Lab`, `LabProcess`, `Fault`, `DelayLink`), also while a test panics; labs that died with
//! their process are found by name (`fl<pid>-<n>-…`) and removed by [`clean_stale`].
//!
//! Traffic only flows between namespaces the lab created; the host's own network namespace is
//! never configured. "Internet" hosts use documentation addresses (RFC 5737).
//!
//! See `docs/lab.md` for the design and the site address plan.

mod bus;
mod clean;
mod command;
mod config;
mod delay;
mod dhcp;
mod dig;
mod error;
mod fault;
mod from_file;
mod holder;
mod lab;
mod machine;
mod netns;
mod ping;
mod process;
mod site;
mod stream;

pub use bus::BusWatch;
pub use clean::{clean_all, clean_stale, lab_namespaces};
pub use config::{
    HUB_NAMES, HubSettings, SiteFile, appliance_name, bus_socket, lease_store, sibling_binary,
};
pub use delay::{DelayLink, Direction, Impairment, LinkCounters};
pub use dhcp::{Ack, AckCapture, AddressAudit, udhcpc_hook, udhcpc_lease};
pub use dig::{DigReply, dig_values};
pub use error::LabError;
pub use fault::Fault;
pub use holder::SmallDisk;
pub use lab::{LAB_REQUIRED_ENV, Lab};
pub use machine::Machine;
pub use netns::{LinkState, Netns};
pub use ping::PingStats;
pub use process::LabProcess;
pub use site::{
    AreaLab, ClientLab, HUB_ADDR, HUB_TUNNEL_ADDR, INTERNET_BRIDGE, INTERNET_HOSTS, LegLab,
    PathKind, PathLab, Site, SiteSpec, UplinkLab, VpnLab,
};
pub use stream::{EchoServer, HttpResponder, Stream, StreamReport};
