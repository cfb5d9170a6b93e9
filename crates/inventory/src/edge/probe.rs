//! The exporter probe: a TCP connection to each exporter port of each device, at most
//! [`IN_FLIGHT`] at once, each given [`CONNECT_TIMEOUT`]. A port that takes the connection is
//! open (the connection is closed at once; the exporter sees a client come and go).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt as _;

pub const IN_FLIGHT: usize = 64;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A device just seen is tried at these times after: its lease is on the bus as soon as it is
/// acknowledged, a few milliseconds before the device has put the address on its interface
/// and started its exporter. Each try is given [`QUICK_TIMEOUT`] (on a LAN an exporter answers
/// in milliseconds).
pub const NEW_DEVICE_TRIES: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(1500),
    Duration::from_millis(2500),
    Duration::from_millis(4000),
];
pub const QUICK_TIMEOUT: Duration = Duration::from_millis(250);

/// For each device (id, address), the ports of `ports` that took a connection.
pub async fn probe(
    devices: Vec<(String, Ipv4Addr)>,
    ports: Vec<u16>,
) -> Vec<(String, BTreeSet<u16>)> {
    let mut attempts: Vec<(String, SocketAddr)> = Vec::new();
    for (id, address) in &devices {
        for port in &ports {
            attempts.push((id.clone(), SocketAddr::from((*address, *port))));
        }
    }
    let answers: Vec<(String, u16, bool)> = futures_util::stream::iter(attempts)
        .map(connect)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut open: BTreeMap<String, BTreeSet<u16>> = devices
        .into_iter()
        .map(|(id, _)| (id, BTreeSet::new()))
        .collect();
    for (id, port, is_open) in answers {
        if is_open && let Some(ports) = open.get_mut(&id) {
            ports.insert(port);
        }
    }
    open.into_iter().collect()
}

/// Whether `target` takes a connection within [`CONNECT_TIMEOUT`].
async fn connect((id, target): (String, SocketAddr)) -> (String, u16, bool) {
    let open = is_open(target, CONNECT_TIMEOUT).await;
    (id, target.port(), open)
}

async fn is_open(target: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}

/// A device just seen: its ports tried at [`NEW_DEVICE_TRIES`] until one takes a connection,
/// `before_each` called before each try; the ports open then (none after the last try), and
/// the connections tried.
pub async fn new_device(
    address: Ipv4Addr,
    ports: &[u16],
    mut before_each: impl FnMut(),
) -> (BTreeSet<u16>, u64) {
    let started = tokio::time::Instant::now();
    let mut tried = 0;
    for at in NEW_DEVICE_TRIES {
        tried += ports.len() as u64;
        tokio::time::sleep_until(started + at).await;
        before_each();
        let tries = ports.iter().map(|port| async move {
            is_open(SocketAddr::from((address, *port)), QUICK_TIMEOUT)
                .await
                .then_some(*port)
        });
        let open: BTreeSet<u16> = futures_util::future::join_all(tries)
            .await
            .into_iter()
            .flatten()
            .collect();
        if !open.is_empty() {
            return (open, tried);
        }
    }
    (BTreeSet::new(), tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_is_open_and_a_closed_one_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = listener.local_addr().unwrap().port();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let found = probe(
            vec![("me".into(), Ipv4Addr::LOCALHOST)],
            vec![open_port, closed_port],
        )
        .await;
        assert_eq!(found, [("me".to_owned(), BTreeSet::from([open_port]))]);
    }
}
