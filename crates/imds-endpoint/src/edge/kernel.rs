//! The kernel's side: the metadata address on the LAN interfaces, and a mirror of the IPv4
//! neighbour table (address → MAC) that each accepted connection is checked against.
//!
//! Invariant: the mirror follows the kernel's events as they come (a neighbour whose MAC
//! changes, because another host took its address, changes here within one event), is read
//! in full at start, after an event-buffer overrun and every [`REDUMP_EVERY`], and holds only
//! entries with a MAC (incomplete and failed ones are not a device).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::{NeighbourMessage, NeighbourState};
use tokio_util::sync::CancellationToken;

use crate::identity::Mac;

/// A full re-read now and then, in case an event was lost without an overrun.
const REDUMP_EVERY: Duration = Duration::from_secs(30);

/// The neighbour table as last heard; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Neighbours(Arc<Mutex<HashMap<Ipv4Addr, Mac>>>);

impl Neighbours {
    pub fn get(&self, address: Ipv4Addr) -> Option<Mac> {
        self.0
            .lock()
            .expect("neighbours lock")
            .get(&address)
            .copied()
    }

    fn apply(&self, message: &NeighbourMessage, present: bool) {
        let Some((address, mac)) = entry(message) else {
            return;
        };
        let mut table = self.0.lock().expect("neighbours lock");
        match mac {
            Some(mac) if present => {
                table.insert(address, mac);
            }
            _ => {
                table.remove(&address);
            }
        }
    }

    fn replace(&self, messages: &[NeighbourMessage]) {
        let fresh: HashMap<Ipv4Addr, Mac> = messages
            .iter()
            .filter_map(entry)
            .filter_map(|(address, mac)| Some((address, mac?)))
            .collect();
        *self.0.lock().expect("neighbours lock") = fresh;
    }
}

/// An IPv4 neighbour's address and, if the entry is usable, its MAC.
fn entry(message: &NeighbourMessage) -> Option<(Ipv4Addr, Option<Mac>)> {
    let (address, mac, state) = fieldnet::net::neighbour_entry(message)?;
    let usable = !matches!(
        state,
        NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
    );
    Some((address, mac.filter(|_| usable)))
}

/// Starts the mirror: subscribes to neighbour events, reads the table, and keeps both going
/// until `shutdown`.
pub async fn mirror_neighbours(shutdown: CancellationToken) -> anyhow::Result<Neighbours> {
    let neighbours = Neighbours::default();
    let (connection, _, mut events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Neigh])
            .context("subscribing to neighbour events")?;
    tokio::spawn(connection);
    let handle = fieldnet::net::connect()?;
    neighbours.replace(&dump(&handle).await?);
    let mirror = neighbours.clone();
    tokio::spawn(async move {
        let mut redump = tokio::time::interval(REDUMP_EVERY);
        redump.tick().await;
        let mut events_open = true;
        loop {
            let full = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = redump.tick() => true,
                event = events.next(), if events_open => match event {
                    None => {
                        tracing::error!("neighbour events ended; re-reading the table every {REDUMP_EVERY:?} only");
                        events_open = false;
                        continue;
                    }
                    Some((message, _)) => match message.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(neighbour)) => {
                            mirror.apply(&neighbour, true);
                            false
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(neighbour)) => {
                            mirror.apply(&neighbour, false);
                            false
                        }
                        NetlinkPayload::Overrun(_) => {
                            tracing::warn!("netlink neighbour events overran: re-reading the table");
                            true
                        }
                        _ => false,
                    },
                },
            };
            if full {
                match dump(&handle).await {
                    Ok(messages) => mirror.replace(&messages),
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "re-reading the neighbour table failed")
                    }
                }
            }
        }
    });
    Ok(neighbours)
}

async fn dump(handle: &rtnetlink::Handle) -> anyhow::Result<Vec<NeighbourMessage>> {
    fieldnet::net::neighbours(handle).await
}

/// Puts the metadata address (/32) on each of `interfaces` that lacks it.
pub async fn hold_address(
    handle: &rtnetlink::Handle,
    address: Ipv4Addr,
    interfaces: &[String],
) -> anyhow::Result<()> {
    for interface in interfaces {
        if !fieldnet::net::has_address(handle, interface, address).await? {
            fieldnet::net::add_address(handle, interface, address, 32)
                .await
                .with_context(|| format!("putting {address}/32 on {interface}"))?;
            tracing::info!(%address, interface, "metadata address added");
        }
    }
    Ok(())
}
