//! DNS over TCP (RFC 7766): each connection's messages, two-byte length first, are answered
//! by the same handler as UDP's, several at once, in the order they finish.
//!
//! A LAN device must not be able to starve the agent of file descriptors (which the forwarder
//! needs for every upstream question): connections are capped per client address
//! ([`PER_CLIENT`]) and in all ([`TOTAL`]); one over a cap is closed at once, counted and said
//! in the log (at most every [`WARN_EVERY`]); a connection gets [`IDLE`] to send each message
//! whole and is closed when it does not; a failed accept (out of descriptors) is said in the
//! log too. TCP needs no ingress check: a forged source never completes the handshake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::edge::server::{Handler, Metrics};

/// Connections open at once from one address.
pub const PER_CLIENT: u32 = 8;
/// Connections open at once in all, over every listener.
pub const TOTAL: usize = 256;
/// How long a connection has to send each message whole (and how long one stays idle).
pub const IDLE: Duration = Duration::from_secs(5);
/// Questions of one connection answered at once; further ones wait to be read.
const IN_FLIGHT: usize = 16;
/// How long one response may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusals are said in the log at most this often (with how many there were).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connections open now, over every listener, with their caps.
#[derive(Debug, Clone)]
pub struct Connections {
    open: Arc<Mutex<Open>>,
    metrics: Metrics,
    refusals: fieldnet::obs::Refusals,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, u32>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    connections: Connections,
    client: IpAddr,
}

impl Connections {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            open: Arc::default(),
            metrics,
            refusals: fieldnet::obs::Refusals::new("DNS over TCP", WARN_EVERY),
        }
    }

    /// A place for a connection from `client`, unless that would pass a cap.
    pub fn admit(&self, client: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let reason = if open.total >= TOTAL {
            "total_cap"
        } else if open.per_client.get(&client).copied().unwrap_or(0) >= PER_CLIENT {
            "client_cap"
        } else {
            open.total += 1;
            *open.per_client.entry(client).or_default() += 1;
            self.metrics.tcp_connections.inc();
            return Ok(Slot {
                connections: self.clone(),
                client,
            });
        };
        drop(open);
        self.metrics.tcp_refused.with_label_values(&[reason]).inc();
        self.refusals.refused(
            match reason {
                "total_cap" => "over the total cap",
                _ => "over the cap per client",
            },
            &client.to_string(),
        );
        Err(reason)
    }

    /// Connections open now from `client`.
    pub fn from(&self, client: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.per_client.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&self.client);
            }
        }
        self.connections.metrics.tcp_connections.dec();
    }
}

/// Takes connections on `listener` until `stop`, each served in a task of its own.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handler: Handler,
    connections: Connections,
    stop: CancellationToken,
) {
    loop {
        let (stream, from) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE or ENFILE: out of descriptors. Said, and a pause, so this is not
                    // a busy loop while the connections waiting stay waiting.
                    connections
                        .refusals
                        .refused("accept failed (out of file descriptors?)", &error.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.admit(from.ip()) else {
            // Dropped: closed at once.
            continue;
        };
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = connection(stream, from, handler) => {}
            }
            drop(slot);
        });
    }
}

/// Answers one connection's messages until it closes, stays idle for [`IDLE`] or breaks.
async fn connection(stream: TcpStream, from: SocketAddr, handler: Handler) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (responses, mut to_write) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let reading = async move {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                return;
            };
            if responses.is_closed() {
                // The asker stopped reading its answers.
                return;
            }
            let message = match tokio::time::timeout(IDLE, read_message(&mut reader)).await {
                Ok(Ok(Some(message))) => message,
                // Closed, broken, or too slow.
                _ => return,
            };
            let handler = handler.clone();
            let responses = responses.clone();
            tokio::spawn(async move {
                if let Some((response, _)) =
                    crate::edge::respond::respond(&handler, message, from, Protocol::Tcp).await
                {
                    let _ = responses.send(response).await;
                }
                drop(permit);
            });
        }
    };
    let writing = async move {
        while let Some(response) = to_write.recv().await {
            let Ok(length) = u16::try_from(response.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(response.len() + 2);
            framed.extend_from_slice(&length.to_be_bytes());
            framed.extend_from_slice(&response);
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = writer.shutdown().await;
    };
    // Writing ends once reading has ended and every answer under way is written.
    tokio::join!(reading, writing);
}

/// One message: `None` when the connection closed cleanly between messages.
async fn read_message(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0; 2];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut message = vec![0; usize::from(u16::from_be_bytes(length))];
    reader.read_exact(&mut message).await?;
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Connections {
        Connections::new(Metrics::register(&prometheus::Registry::new()).unwrap())
    }

    #[test]
    fn tcp_connections_are_capped_per_client_and_in_all_and_freed_on_close() {
        let connections = connections();
        let one: IpAddr = "10.101.0.50".parse().unwrap();
        let mut held: Vec<Slot> = (0..PER_CLIENT)
            .map(|_| connections.admit(one).unwrap())
            .collect();
        assert_eq!(connections.admit(one).unwrap_err(), "client_cap");
        // Another device is not held up by the first.
        let other: IpAddr = "10.101.0.51".parse().unwrap();
        held.push(connections.admit(other).unwrap());
        // One closed: a place for the first again.
        held.remove(0);
        held.push(connections.admit(one).unwrap());
        assert_eq!(connections.from(one), PER_CLIENT);
        drop(held);
        assert_eq!(connections.from(one), 0);

        // The total cap, over many addresses.
        let many: Vec<Slot> = (0..TOTAL)
            .map(|n| {
                let address = IpAddr::from([10, 101, (n / 4) as u8, (n % 4) as u8]);
                connections.admit(address).unwrap()
            })
            .collect();
        assert_eq!(connections.admit(other).unwrap_err(), "total_cap");
        assert_eq!(connections.metrics.tcp_connections.get(), TOTAL as i64);
        drop(many);
        assert!(connections.admit(other).is_ok());
    }
}
