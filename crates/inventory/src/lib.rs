//! `inventory`: every device of the site, found from every source and merged by identity.
//!
//! Pure parts: [`devices`] (the merged list, its events, when a device is gone),
//! [`sweep`] (a sweep's schedule: rate, retries, misses), [`frames`] (ARP and ICMP on the wire),
//! [`oui`] (vendors by MAC prefix), [`wireguard`] (a hub's peers), [`sd`] (Prometheus service
//! discovery) and [`ansible`] (the dynamic inventory). The agent around them is [`edge`].

pub mod ansible;
pub mod devices;
pub mod edge;
pub mod frames;
pub mod oui;
pub mod sd;
pub mod sweep;
pub mod wireguard;
