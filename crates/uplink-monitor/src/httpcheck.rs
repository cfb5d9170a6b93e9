//! The captive-portal check: one HTTP GET through one uplink (its mark, its interface), whose
//! status must be the configured one. A portal or a router's "no service" page answers
//! something else, or nothing.
//!
//! Invariant: one attempt is bounded by `TIMEOUT`; any failure (connect, timeout, garbage) is
//! simply "not ok" for the monitor to weigh.

use std::os::fd::AsRawFd as _;
use std::time::Duration;

use fieldnet::config::HttpCheck;
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

async fn status(check: &HttpCheck, mark: u32, device: Option<&str>) -> std::io::Result<u16> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    let mark = mark.to_ne_bytes();
    // SAFETY: the option value is valid for its length for the duration of the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            mark.as_ptr().cast(),
            mark.len() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    let mut stream = socket.connect(check.address).await?;
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
