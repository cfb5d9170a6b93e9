//! Waiting on the bus, as tests should wait for a fact the bus carries (rather than on a log
//! line): a subscription to a prefix on an appliance's broker, read until a message matches.
//! Retained values come first, so waiting for a state that already holds returns at once. A
//! wait that times out names what it waited for and the last messages it saw.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldnet::bus::frame::{self, Frame};

/// How many recent messages a failed wait shows.
const RECENT: usize = 20;

/// A subscription to one prefix on a broker.
#[derive(Debug)]
pub struct BusWatch {
    socket: PathBuf,
    prefix: String,
    lines: BufReader<UnixStream>,
    /// The last messages read, as `topic body` lines.
    recent: VecDeque<String>,
}

impl BusWatch {
    /// Subscribes to `prefix` on the broker at `socket`, waiting up to `patience` for the
    /// broker to listen.
    pub fn subscribe(socket: &Path, prefix: &str, patience: Duration) -> anyhow::Result<Self> {
        let deadline = Instant::now() + patience;
        let mut stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("no broker at {} after {patience:?}", socket.display())
                    });
                }
            }
        };
        let hello = Frame::Hello {
            name: "lab-watch".to_owned(),
            pid: std::process::id(),
        };
        let sub = Frame::Sub {
            prefix: prefix.to_owned(),
        };
        stream.write_all(frame::encode(&hello).as_bytes())?;
        stream.write_all(frame::encode(&sub).as_bytes())?;
        Ok(Self {
            socket: socket.to_owned(),
            prefix: prefix.to_owned(),
            lines: BufReader::new(stream),
            recent: VecDeque::new(),
        })
    }

    /// Reads messages until one whose body, read as `T`, satisfies `check` (given the topic),
    /// and returns its topic and body. Bodies that are not a `T` are skipped. Fails after
    /// `patience`, naming `what` and the last messages seen.
    pub fn wait_for<T: serde::de::DeserializeOwned>(
        &mut self,
        what: &str,
        patience: Duration,
        mut check: impl FnMut(&str, &T) -> bool,
    ) -> anyhow::Result<(String, T)> {
        let deadline = Instant::now() + patience;
        while let Some((topic, body)) = self.next_message(deadline)? {
            if let Ok(body) = serde_json::from_value::<T>(body)
                && check(&topic, &body)
            {
                return Ok((topic, body));
            }
        }
        anyhow::bail!("{}", self.failure(what, patience))
    }

    /// Reads messages for `duration`, handing each whose body reads as `T` to `each`: what
    /// happened in a stretch of time (for "only once", "never").
    pub fn watch_for<T: serde::de::DeserializeOwned>(
        &mut self,
        duration: Duration,
        mut each: impl FnMut(&str, &T),
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + duration;
        while let Some((topic, body)) = self.next_message(deadline)? {
            if let Ok(body) = serde_json::from_value::<T>(body) {
                each(&topic, &body);
            }
        }
        Ok(())
    }

    /// The next message (topic, body), or `None` once `deadline` passed.
    fn next_message(
        &mut self,
        deadline: Instant,
    ) -> anyhow::Result<Option<(String, serde_json::Value)>> {
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.lines.get_ref().set_read_timeout(Some(left))?;
            // A timeout may leave part of a line in `line`: the rest follows on the next read.
            match self.lines.read_line(&mut line) {
                Ok(0) => anyhow::bail!(
                    "the broker at {} closed the connection",
                    self.socket.display()
                ),
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(error) => return Err(error).context("reading the bus"),
            }
            let text = std::mem::take(&mut line);
            let Ok(Frame::Msg(envelope)) = frame::decode(text.trim_end().as_bytes()) else {
                continue;
            };
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent
                .push_back(format!("{} {}", envelope.topic, envelope.body));
            return Ok(Some((envelope.topic, envelope.body)));
        }
    }

    fn failure(&self, what: &str, patience: Duration) -> String {
        let mut text = format!(
            "waited {patience:?} on the bus at {} ({}…) for {what}; the last messages:",
            self.socket.display(),
            self.prefix
        );
        if self.recent.is_empty() {
            text.push_str(" none");
        }
        for message in &self.recent {
            text.push_str("\n  ");
            text.push_str(message);
        }
        text
    }
}
