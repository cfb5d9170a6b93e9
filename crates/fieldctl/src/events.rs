//! `fieldctl events`: follows the bus and prints one readable line per event.

use std::path::Path;

use anyhow::Context as _;
use fieldnet::bus::frame::{self, Envelope, Frame};
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, LinesCodec};

/// Longest body shown on one line; `--json` shows everything.
const BODY_WIDTH: usize = 160;

pub async fn follow(
    socket: &Path,
    prefix: &str,
    json: bool,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "connecting to the bus at {} (is fieldnet-bus running?)",
            socket.display()
        )
    })?;
    let (read_half, mut write_half) = stream.into_split();
    let subscribe = frame::encode(&Frame::Sub {
        prefix: prefix.to_owned(),
    });
    write_half.write_all(subscribe.as_bytes()).await?;
    let mut lines = FramedRead::new(read_half, LinesCodec::new_with_max_length(16 * 1024 * 1024));
    let mut shown = 0;
    while let Some(line) = lines.next().await {
        let line = line.context("reading from the bus")?;
        match frame::decode(line.as_bytes()) {
            Ok(Frame::Msg(envelope)) if json => println!("{}", serde_json::to_string(&envelope)?),
            Ok(Frame::Msg(envelope)) => println!("{}", readable(&envelope)),
            Ok(Frame::Lagged { missed }) => {
                eprintln!("(missed {missed} events: this terminal read too slowly)")
            }
            Ok(Frame::Error { message }) => anyhow::bail!("the bus refused us: {message}"),
            Ok(_) => continue,
            Err(error) => anyhow::bail!("unreadable line from the bus: {error}"),
        }
        shown += 1;
        if count.is_some_and(|count| shown >= count) {
            return Ok(());
        }
    }
    anyhow::bail!("the bus closed the connection (broker stopped?)")
}

/// `12:04:31.250 uplink/active  [uplink-monitor, retained]  {"name":"4g-a"}`
pub fn readable(envelope: &Envelope) -> String {
    let mut body = envelope.body.to_string();
    if body.len() > BODY_WIDTH {
        let mut cut = BODY_WIDTH;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push('…');
    }
    let from = if envelope.from.is_empty() {
        "?"
    } else {
        envelope.from.as_str()
    };
    let retained = if envelope.retain { ", retained" } else { "" };
    format!(
        "{} {}  [{from}{retained}]  {body}",
        clock(envelope.ts),
        envelope.topic
    )
}

/// UTC wall-clock time of a bus timestamp, `HH:MM:SS.mmm`.
pub fn clock(unix_millis: u64) -> String {
    let millis = unix_millis % 1000;
    let seconds = unix_millis / 1000;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        (seconds / 3600) % 24,
        (seconds / 60) % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readable_line_shows_time_topic_sender_and_body() {
        let envelope = Envelope {
            v: 1,
            topic: "uplink/active".into(),
            ts: 45_271_250,
            from: "uplink-monitor".into(),
            retain: true,
            body: json!({"name": "4g-a"}),
        };
        assert_eq!(
            readable(&envelope),
            r#"12:34:31.250 uplink/active  [uplink-monitor, retained]  {"name":"4g-a"}"#
        );
    }

    #[test]
    fn long_bodies_are_cut() {
        let envelope = Envelope {
            v: 1,
            topic: "t".into(),
            ts: 0,
            from: String::new(),
            retain: false,
            body: json!("é".repeat(200)),
        };
        let line = readable(&envelope);
        assert!(line.ends_with('…') && line.contains("[?]"), "{line}");
    }
}
