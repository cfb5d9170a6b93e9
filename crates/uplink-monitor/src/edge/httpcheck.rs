//! HTTP through one uplink (its mark, its interface): the captive-portal check, one GET whose
//! status must be the configured one (a portal or a router's "no service" page answers
//! something else, or nothing), and the optional throughput test, one bounded download.
//!
//! Invariant: every attempt is bounded in time (and the download in size); any failure is
//! simply "not ok" or "no figure" for the monitor to weigh.

use std::time::Duration;

use fieldnet::config::{HttpCheck, ThroughputTest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Longest one check may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `check` answers with its expected status through the uplink with `mark`.
pub async fn run(check: &HttpCheck, mark: u32, device: Option<&str>) -> bool {
    match tokio::time::timeout(TIMEOUT, status(check, mark, device)).await {
        Ok(Ok(status)) => status == check.expect,
        _ => false,
    }
}

/// Longest a throughput test may take, and most it downloads.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const DOWNLOAD_LIMIT: usize = 4 * 1024 * 1024;

/// Kilobits per second of one download through the uplink, from its first byte to its last;
/// `None` if it failed or was too small to time.
pub async fn throughput(test: &ThroughputTest, mark: u32, device: Option<&str>) -> Option<f64> {
    let work = async {
        let mut stream = connect(test.address, mark, device).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fieldnet-uplink-monitor\r\nConnection: close\r\n\r\n",
            test.path, test.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut first: Option<std::time::Instant> = None;
        let mut total = 0usize;
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 || total >= DOWNLOAD_LIMIT {
                break;
            }
            if first.is_none() {
                first = Some(std::time::Instant::now());
            } else {
                total += n;
            }
        }
        std::io::Result::Ok(first.map(|first| (total, first.elapsed())))
    };
    match tokio::time::timeout(DOWNLOAD_TIMEOUT, work).await {
        Ok(Ok(Some((bytes, elapsed))))
            if bytes >= 16 * 1024 && elapsed > Duration::from_millis(1) =>
        {
            Some(bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1000.0)
        }
        _ => None,
    }
}

/// A TCP connection pinned to one uplink.
async fn connect(
    address: std::net::SocketAddr,
    mark: u32,
    device: Option<&str>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    fieldnet::raw::pin(&socket, mark, device)?;
    socket.connect(address).await
}

async fn status(check: &HttpCheck, mark: u32, device: Option<&str>) -> std::io::Result<u16> {
    let mut stream = connect(check.address, mark, device).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fieldnet-uplink-monitor\r\nConnection: close\r\n\r\n",
        check.path, check.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    status_code(&head).ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

/// `HTTP/1.1 204 No Content\r\n…` → 204.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"HTTP/1.1 204 No Content\r\nServer: x\r\n", Some(204)),
            (b"HTTP/1.0 302 Found\r\n", Some(302)),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"", None),
        ];
        for (head, code) in cases {
            assert_eq!(
                super::status_code(head),
                *code,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
