//! The exporter probe: a TCP connection to each exporter port of each device, at most
//! [`IN_FLIGHT`] at once, each given [`CONNECT_TIMEOUT`]. A port that takes the connection is
//! open (the connection is closed at once; the exporter sees a client come and go).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt as _;

pub const IN_FLIGHT: usize = 64;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
    let open = matches!(
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    );
    (id, target.port(), open)
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
