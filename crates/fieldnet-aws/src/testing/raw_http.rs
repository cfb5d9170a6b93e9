//! Just enough HTTP/1.1 over std sockets for the test peers: read one request (head and
//! `Content-Length` body), exchange one request for a whole response on a `Connection: close`
//! connection, and set the `Connection` header of a head.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One HTTP request as read off a connection.
#[derive(Debug)]
pub(crate) struct RawRequest {
    /// Request line and headers, without the blank line.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// Reads one request; `None` when the peer closed before sending anything.
pub(crate) fn read_request(stream: &mut TcpStream) -> io::Result<Option<RawRequest>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find_head_end(&buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request head is not UTF-8"))?;
    if header(&head, "transfer-encoding").is_some() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "chunked request bodies are not supported",
        ));
    }
    let length: usize = match header(&head, "content-length") {
        Some(value) => value
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?,
        None => 0,
    };
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Ok(Some(RawRequest { head, body }))
}

/// Sends `request` (head and body, complete) to `address` and reads until the peer closes.
pub(crate) fn exchange(
    address: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

/// The status code and body of a whole response; `None` if it is not HTTP.
pub(crate) fn split_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let head_end = find_head_end(response)?;
    let head = std::str::from_utf8(&response[..head_end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, &response[head_end + 4..]))
}

/// `head` (start line and headers, no blank line) with its `Connection` and `Keep-Alive`
/// headers replaced by `Connection: close`.
pub(crate) fn with_connection_close(head: &str) -> String {
    let mut lines = head.split("\r\n");
    let mut rewritten = String::with_capacity(head.len() + 20);
    rewritten.push_str(lines.next().unwrap_or_default());
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        rewritten.push_str("\r\n");
        rewritten.push_str(line);
    }
    rewritten.push_str("\r\nConnection: close");
    rewritten
}

/// Where the head ends (the index of its blank line's "\r\n\r\n").
pub(crate) fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

/// The value of the first header `name` (case-insensitive) in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (header_name, value) = line.split_once(':')?;
        header_name
            .trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_header_is_replaced_and_host_kept() {
        let head = "POST / HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nconnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 3";
        assert_eq!(
            with_connection_close(head),
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nContent-Length: 3\r\nConnection: close"
        );
    }

    #[test]
    fn splits_a_response() {
        let response = b"HTTP/1.1 400 BAD REQUEST\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(split_response(response), Some((400, &b"body"[..])));
        assert_eq!(split_response(b"garbage"), None);
        assert_eq!(
            header("GET / HTTP/1.1\r\nContent-LENGTH: 12", "content-length"),
            Some("12")
        );
    }
}
