//! The local message bus: newline-delimited JSON over a Unix socket.
//!
//! [`frame`] is the wire format, [`broker`] the server the `fieldnet-bus` binary runs,
//! [`client`] what agents use (it reconnects and re-subscribes by itself, and publishing never
//! waits for the broker), [`topics`] the typed bodies.

pub mod broker;
pub mod client;
pub mod frame;
pub mod topics;

pub use broker::{Broker, BrokerOptions, Publishers};
pub use client::{BusClient, BusEvent, Subscription};
pub use frame::{Envelope, Frame, FrameError};

/// Milliseconds since the Unix epoch, the bus's timestamp unit.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
