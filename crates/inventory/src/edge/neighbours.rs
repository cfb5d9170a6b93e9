//! The kernel's IPv4 neighbour table as sightings: an entry confirmed reachable is a device
//! seen now (with its MAC); an entry that failed is a device to ask again. Read in full at
//! start and after an event-buffer overrun (only reachable entries count then: a stale one
//! may be hours old).

use std::net::Ipv4Addr;

use anyhow::Context as _;
use fieldnet::names::Mac;
use futures_util::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::{NeighbourMessage, NeighbourState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the table said about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    Reachable(Ipv4Addr, Mac),
    Failed(Ipv4Addr),
}

/// Starts following the table; its news arrive on the returned channel until `shutdown`.
pub async fn follow(shutdown: CancellationToken) -> anyhow::Result<mpsc::Receiver<Neighbour>> {
    let (connection, _, mut events) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Neigh])
            .context("subscribing to neighbour events")?;
    tokio::spawn(connection);
    let handle = fieldnet::net::connect()?;
    let (sender, receiver) = mpsc::channel(4096);
    let first = fieldnet::net::neighbours(&handle).await?;
    tokio::spawn(async move {
        let mut pending: Vec<NeighbourMessage> = first;
        loop {
            for message in pending.drain(..) {
                if let Some(news) = news(&message)
                    && sender.send(news).await.is_err()
                {
                    return;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => match event {
                    None => {
                        tracing::error!("neighbour events ended; the neighbour table is no longer followed");
                        return;
                    }
                    Some((message, _)) => match message.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(neighbour)) => pending.push(neighbour),
                        NetlinkPayload::Overrun(_) => {
                            tracing::warn!("netlink neighbour events overran: re-reading the table");
                            match fieldnet::net::neighbours(&handle).await {
                                Ok(messages) => pending = messages,
                                Err(error) => tracing::warn!(error = %format!("{error:#}"), "re-reading the neighbour table failed"),
                            }
                        }
                        _ => {}
                    },
                },
            }
        }
    });
    Ok(receiver)
}

/// An entry's news, if it has any: reachable with a MAC, or failed.
fn news(message: &NeighbourMessage) -> Option<Neighbour> {
    match fieldnet::net::neighbour_entry(message)? {
        (address, Some(mac), NeighbourState::Reachable) => Some(Neighbour::Reachable(address, mac)),
        (address, _, NeighbourState::Failed) => Some(Neighbour::Failed(address)),
        _ => None,
    }
}
