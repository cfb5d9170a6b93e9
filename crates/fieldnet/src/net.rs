//! Netlink operations more than one agent needs: finding an interface, and replacing a route
//! in place. Each agent owns different routes (told apart by route protocol numbers); this
//! module owns none, it only carries out what an agent asks.
//!
//! Invariant: routes are replaced (`NLM_F_REPLACE`), never deleted and re-added, so there is no
//! moment without a route.

use std::net::Ipv4Addr;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, RouteMessageBuilder};

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;

/// Opens a netlink connection driven on the current tokio runtime.
pub fn connect() -> anyhow::Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The interface called `name`, if it exists.
pub async fn find_link(handle: &Handle, name: &str) -> anyhow::Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(error)) if error.raw_code() == -libc::ENODEV => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading interface {name}")),
    }
}

/// Where a route points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Ipv4Addr,
    /// Interface index.
    pub interface: u32,
}

/// Replaces (or adds) the route to `destination` in `table` with one via `hop`, tagged with
/// the owning agent's route `protocol`.
pub async fn replace_route(
    handle: &Handle,
    table: u32,
    destination: Ipv4Net,
    hop: NextHop,
    protocol: u8,
) -> anyhow::Result<()> {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(hop.gateway)
        .output_interface(hop.interface)
        .protocol(RouteProtocol::Other(protocol))
        .table_id(table);
    if destination.prefix_len() > 0 {
        builder = builder.destination_prefix(destination.network(), destination.prefix_len());
    }
    handle
        .route()
        .add(builder.build())
        .replace()
        .execute()
        .await
        .with_context(|| {
            format!(
                "replacing the route to {destination} in table {table} with via {} dev #{}",
                hop.gateway, hop.interface
            )
        })
}
