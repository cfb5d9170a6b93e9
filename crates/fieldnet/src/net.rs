//! Netlink operations more than one agent needs: finding an interface, replacing a route in
//! place, adding and removing an address (a taken-over gateway, the metadata address). Each agent owns different routes (told apart by route protocol numbers); this
//! module owns none, it only carries out what an agent asks.
//!
//! Invariant: routes are replaced (`NLM_F_REPLACE`), never deleted and re-added, so there is no
//! moment without a route; a route is deleted only by its owner when what it served is gone.

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

/// The index of interface `name`, or an error naming it when it does not exist.
pub async fn link_index(handle: &Handle, name: &str) -> anyhow::Result<u32> {
    find_link(handle, name)
        .await?
        .map(|link| link.header.index)
        .with_context(|| format!("interface {name} does not exist"))
}

/// Puts `address/prefix_len` on interface `name` (replacing it if it is already there), as
/// `ip addr replace` does.
pub async fn add_address(
    handle: &Handle,
    name: &str,
    address: Ipv4Addr,
    prefix_len: u8,
) -> anyhow::Result<()> {
    let index = link_index(handle, name).await?;
    handle
        .address()
        .add(index, address.into(), prefix_len)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding {address}/{prefix_len} to {name}"))
}

/// Whether interface `name` holds `address` (a missing interface holds none).
pub async fn has_address(handle: &Handle, name: &str, address: Ipv4Addr) -> anyhow::Result<bool> {
    Ok(!find_address(handle, name, address).await?.is_empty())
}

/// The address messages of `address` on interface `name` (none on a missing interface).
async fn find_address(
    handle: &Handle,
    name: &str,
    address: Ipv4Addr,
) -> anyhow::Result<Vec<rtnetlink::packet_route::address::AddressMessage>> {
    let Some(link) = find_link(handle, name).await? else {
        return Ok(Vec::new());
    };
    handle
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .set_address_filter(address.into())
        .execute()
        .try_collect()
        .await
        .with_context(|| format!("reading the addresses of {name}"))
}

/// Removes `address` from interface `name`; says whether it was there. A missing interface
/// holds no address.
pub async fn remove_address(
    handle: &Handle,
    name: &str,
    address: Ipv4Addr,
) -> anyhow::Result<bool> {
    let found = find_address(handle, name, address).await?;
    let removed = !found.is_empty();
    for message in found {
        handle
            .address()
            .del(message)
            .execute()
            .await
            .with_context(|| format!("removing {address} from {name}"))?;
    }
    Ok(removed)
}

/// A route to `destination` straight out of interface `interface` (no gateway: the hosts
/// are on that link), tagged with the owning agent's route `protocol`.
fn link_route(
    table: u32,
    destination: Ipv4Net,
    interface: u32,
    protocol: u8,
) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .output_interface(interface)
        .scope(rtnetlink::packet_route::route::RouteScope::Link)
        .protocol(RouteProtocol::Other(protocol))
        .table_id(table)
}

/// Replaces (or adds) the on-link route to `destination` out of `interface`.
pub async fn replace_link_route(
    handle: &Handle,
    table: u32,
    destination: Ipv4Net,
    interface: u32,
    protocol: u8,
) -> anyhow::Result<()> {
    handle
        .route()
        .add(link_route(table, destination, interface, protocol).build())
        .replace()
        .execute()
        .await
        .with_context(|| {
            format!("replacing the route to {destination} in table {table} with dev #{interface}")
        })
}

/// Deletes the route to `destination` in `table` that carries route `protocol` (an agent
/// removing its own route); says whether there was one.
pub async fn delete_route(
    handle: &Handle,
    table: u32,
    destination: Ipv4Net,
    protocol: u8,
) -> anyhow::Result<bool> {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .protocol(RouteProtocol::Other(protocol))
        .table_id(table)
        .build();
    // Any scope matches.
    route.header.scope = rtnetlink::packet_route::route::RouteScope::NoWhere;
    match handle.route().del(route).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(error)) if error.raw_code() == -libc::ESRCH => Ok(false),
        Err(error) => Err(error)
            .with_context(|| format!("deleting the route to {destination} in table {table}")),
    }
}

/// The IPv4 neighbour table, read in full.
pub async fn neighbours(
    handle: &Handle,
) -> anyhow::Result<Vec<rtnetlink::packet_route::neighbour::NeighbourMessage>> {
    handle
        .neighbours()
        .get()
        .set_address_family(rtnetlink::packet_route::AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .context("reading the neighbour table")
}

/// A neighbour entry's IPv4 address, its MAC if it carries one, and its state.
pub fn neighbour_entry(
    message: &rtnetlink::packet_route::neighbour::NeighbourMessage,
) -> Option<(
    Ipv4Addr,
    Option<crate::names::Mac>,
    rtnetlink::packet_route::neighbour::NeighbourState,
)> {
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    let address = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => Some(*address),
            _ => None,
        })?;
    let mac = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => <[u8; 6]>::try_from(bytes.as_slice())
                .ok()
                .map(crate::names::Mac),
            _ => None,
        });
    Some((address, mac, message.header.state))
}
