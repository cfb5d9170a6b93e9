//! A taken network's gateway address and routes on the leg into it, through netlink.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Route protocol of dhcp-takeover's routes to a taken network (`ip route` shows `proto 203`).
pub const ROUTE_PROTOCOL: u8 = 203;

/// The leg into another appliance's network: where its gateway address and routes go.
#[derive(Debug, Clone, Copy)]
pub struct Leg<'a> {
    pub interface: &'a str,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// The two halves of `subnet`: routes to them out of a leg are more specific than any route
/// to the whole subnet (cross-site-failover's, towards the dead owner), so they win without
/// touching it.
fn halves(subnet: Ipv4Net) -> Vec<Ipv4Net> {
    match subnet.prefix_len() {
        32 => vec![subnet],
        len => subnet
            .subnets(len + 1)
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

/// Puts a taken network's gateway address on its leg, and routes its subnet out of the leg.
pub async fn take_address(netlink: &rtnetlink::Handle, leg: &Leg<'_>) -> anyhow::Result<()> {
    fieldnet::net::add_address(netlink, leg.interface, leg.gateway, leg.subnet.prefix_len())
        .await?;
    let index = fieldnet::net::link_index(netlink, leg.interface).await?;
    for half in halves(leg.subnet) {
        fieldnet::net::replace_link_route(
            netlink,
            fieldnet::net::TABLE_MAIN,
            half,
            index,
            ROUTE_PROTOCOL,
        )
        .await?;
    }
    Ok(())
}

/// Removes a taken network's routes and gateway address from its leg (nothing if absent).
pub async fn withdraw_address(netlink: &rtnetlink::Handle, leg: &Leg<'_>) {
    for half in halves(leg.subnet) {
        if let Err(error) =
            fieldnet::net::delete_route(netlink, fieldnet::net::TABLE_MAIN, half, ROUTE_PROTOCOL)
                .await
        {
            tracing::warn!(%half, error = format!("{error:#}"), "removing a takeover route");
        }
    }
    if let Err(error) = fieldnet::net::remove_address(netlink, leg.interface, leg.gateway).await {
        tracing::warn!(interface = %leg.interface, error = format!("{error:#}"), "removing a takeover address");
    }
}
