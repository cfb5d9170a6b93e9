//! The bus wire format: one JSON object per line, tagged by `op`. See `docs/bus.md`.
//!
//! This module is pure: it turns one line into a [`Frame`] or a [`FrameError`] and back. The
//! broker and the client both use it, and the fuzz target drives [`decode`] directly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Envelope version this build speaks.
pub const VERSION: u32 = 1;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;

/// One message on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope version; a broker refuses versions it does not speak.
    #[serde(default = "default_version")]
    pub v: u32,
    pub topic: String,
    /// Milliseconds since the Unix epoch, set by the publisher (or the broker if absent).
    #[serde(default)]
    pub ts: u64,
    /// The publishing agent; the broker fills it from `hello` if absent.
    #[serde(default)]
    pub from: String,
    /// Retained messages are kept by the broker and delivered to every new subscriber.
    #[serde(default)]
    pub retain: bool,
    /// The typed body, see `bus::topics`. A retained `null` body clears the topic.
    #[serde(default)]
    pub body: Value,
}

fn default_version() -> u32 {
    VERSION
}

impl Envelope {
    /// Decodes the body as the typed value its topic carries.
    pub fn body_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.body)
    }
}

/// Everything that can travel on one line, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Frame {
    /// Client → broker: who is connecting; named clients show as alive agents.
    Hello {
        name: String,
        #[serde(default)]
        pid: u32,
    },
    /// Client → broker: deliver topics starting with `prefix` ("" is everything).
    Sub {
        prefix: String,
    },
    /// Client → broker: stop delivering `prefix`.
    Unsub {
        prefix: String,
    },
    /// Client → broker: publish.
    Pub(Envelope),
    /// Broker → client: a delivered message.
    Msg(Envelope),
    /// Broker → client: this many messages to you were dropped because you read too slowly.
    Lagged {
        missed: u64,
    },
    /// Broker → client: your last line was refused; the connection closes after this.
    Error {
        message: String,
    },
    /// Either way: liveness check, answered by `pong`.
    Ping,
    Pong,
}

/// Why a line is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line is not a bus frame: {0}")]
    Json(String),
    #[error("envelope version {0} is not supported; this broker speaks version {VERSION}")]
    Version(u32),
    #[error("topic {0:?} is invalid: {1}")]
    Topic(String, &'static str),
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Frame, FrameError> {
    let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
    let frame: Frame = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    match &frame {
        Frame::Pub(envelope) | Frame::Msg(envelope) => {
            if envelope.v != VERSION {
                return Err(FrameError::Version(envelope.v));
            }
            check_topic(&envelope.topic)?;
        }
        Frame::Sub { prefix } | Frame::Unsub { prefix } if prefix.len() > MAX_TOPIC_BYTES => {
            return Err(FrameError::Topic(prefix.clone(), "longer than 256 bytes"));
        }
        _ => {}
    }
    Ok(frame)
}

/// Encodes a frame as one line, newline included.
pub fn encode(frame: &Frame) -> String {
    let mut line = serde_json::to_string(frame).expect("frames always serialize");
    line.push('\n');
    line
}

/// Topics are `/`-separated segments of visible ASCII, such as `uplink/4g-a/state`.
pub fn check_topic(topic: &str) -> Result<(), FrameError> {
    let bad = |why| Err(FrameError::Topic(topic.to_owned(), why));
    if topic.is_empty() {
        return bad("empty");
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return bad("longer than 256 bytes");
    }
    if !topic.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only visible ASCII without spaces is allowed");
    }
    if topic.starts_with('/') || topic.ends_with('/') || topic.contains("//") {
        return bad("segments between '/' must not be empty");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn publish_round_trips() {
        let frame = Frame::Pub(Envelope {
            v: VERSION,
            topic: "uplink/active".into(),
            ts: 1,
            from: "uplink-monitor".into(),
            retain: true,
            body: json!({"name": "4g-a"}),
        });
        let line = encode(&frame);
        assert!(line.ends_with('\n'));
        assert!(line.starts_with(r#"{"op":"pub","#), "{line}");
        assert_eq!(decode(line.trim_end().as_bytes()).unwrap(), frame);
    }

    #[test]
    fn minimal_hand_typed_lines_decode() {
        let cases: &[(&str, Frame)] = &[
            (
                r#"{"op":"sub","prefix":""}"#,
                Frame::Sub {
                    prefix: String::new(),
                },
            ),
            (r#"{"op":"ping"}"#, Frame::Ping),
            (
                r#"{"op":"hello","name":"x"}"#,
                Frame::Hello {
                    name: "x".into(),
                    pid: 0,
                },
            ),
        ];
        for (line, frame) in cases {
            assert_eq!(&decode(line.as_bytes()).unwrap(), frame, "{line}");
        }
        let Frame::Pub(envelope) = decode(br#"{"op":"pub","topic":"a/b","body":1}"#).unwrap()
        else {
            panic!("not a pub")
        };
        assert_eq!(
            (envelope.v, envelope.retain, envelope.ts),
            (VERSION, false, 0)
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "UTF-8"),
            (b"{not json", "not a bus frame"),
            (br#"{"op":"fly"}"#, "not a bus frame"),
            (
                br#"{"op":"pub","v":2,"topic":"a","body":null}"#,
                "version 2",
            ),
            (br#"{"op":"pub","topic":"a//b","body":null}"#, "segments"),
            (
                br#"{"op":"pub","topic":"has space","body":null}"#,
                "visible ASCII",
            ),
            (br#"{"op":"pub","topic":"","body":null}"#, "empty"),
        ];
        for (line, word) in cases {
            let error = decode(line).unwrap_err().to_string();
            assert!(error.contains(word), "{error}");
        }
    }
}
