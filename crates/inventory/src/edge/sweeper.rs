//! Sweeps on the wire, one at a time (so the rate bounds them all together): ARP on an
//! interface of this appliance (a packet socket; unicast to a known MAC first, broadcast
//! after; any ARP a swept address sends meanwhile counts too), ICMP echo to a routed range (a raw socket). The schedule is `crate::sweep`'s; this
//! only sends what it says and tells it what came back.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldnet::names::Mac;
use fieldnet::raw::RawSocket;

use crate::frames;
use crate::sweep::{Next, Prior, Sweep};

/// How a sweep asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// ARP on `interface`, from `sender` (this appliance's address on that network).
    Arp { interface: String, sender: Ipv4Addr },
    /// ICMP echo, routed by the kernel.
    Icmp,
}

impl Method {
    pub fn kind(&self) -> &'static str {
        match self {
            Method::Arp { .. } => "arp",
            Method::Icmp => "icmp",
        }
    }
}

/// One sweep to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The network's name (for results and metrics).
    pub network: String,
    pub method: Method,
    pub hosts: Vec<(Ipv4Addr, Prior)>,
    /// Whether it was the whole network's periodic sweep (else a few hosts asked again).
    pub full: bool,
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub network: String,
    pub kind: &'static str,
    pub full: bool,
    /// Who answered; a MAC for ARP answers.
    pub found: Vec<(Ipv4Addr, Option<Mac>)>,
    pub missed: Vec<Ipv4Addr>,
    pub sent: u64,
    pub took: Duration,
}

/// The settings every sweep shares.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub attempts: u32,
    pub wait: Duration,
    pub rate: u32,
}

/// Runs one sweep to its end.
pub async fn run(request: Request, pace: Pace) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut sweep = Sweep::new(
        request.hosts.iter().copied(),
        pace.attempts,
        pace.wait,
        pace.rate,
    );
    let kind = request.method.kind();
    let mut buffer = [0_u8; 1500];
    match &request.method {
        Method::Arp { interface, sender } => {
            let index = fieldnet::raw::interface_index(interface)?;
            let own_mac = Mac(fieldnet::raw::interface_mac(interface)?);
            let socket = RawSocket::arp(index)
                .with_context(|| format!("opening an ARP socket on {interface}"))?;
            loop {
                match sweep.next(started.elapsed()) {
                    Next::Send { address, to } => {
                        let frame = frames::arp_request(own_mac, *sender, address);
                        let destination = to.map_or([0xff; 6], |mac| mac.0);
                        if let Err(error) = socket.send_to_link(&frame, destination) {
                            tracing::debug!(%address, %error, "ARP request not sent");
                        }
                    }
                    Next::WaitUntil(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until((started + at).into()) => {}
                            read = socket.recv(&mut buffer) => {
                                let length = read.with_context(|| format!("reading ARP on {interface}"))?;
                                // Any ARP a swept address sends shows it there: its answer,
                                // or its own request or announcement (heard passively).
                                if let Some((address, mac)) = frames::arp_sender(&buffer[..length])
                                    && mac != own_mac
                                {
                                    sweep.answered(address, mac);
                                }
                            }
                        }
                    }
                    Next::Done => break,
                }
            }
        }
        Method::Icmp => {
            let socket = RawSocket::icmp(0, None).context("opening an ICMP socket")?;
            let identifier = fastrand::u16(..);
            let mut sequence: u16 = 0;
            loop {
                match sweep.next(started.elapsed()) {
                    Next::Send { address, .. } => {
                        sequence = sequence.wrapping_add(1);
                        let packet = frames::echo_request(identifier, sequence);
                        if let Err(error) = socket.send_to_ipv4(&packet, address) {
                            tracing::debug!(%address, %error, "echo request not sent");
                        }
                    }
                    Next::WaitUntil(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until((started + at).into()) => {}
                            read = socket.recv(&mut buffer) => {
                                let length = read.context("reading ICMP")?;
                                if let Some(address) = frames::echo_reply_from(&buffer[..length], identifier) {
                                    // No MAC behind a router: the answer is the address alone.
                                    sweep.answered(address, Mac([0; 6]));
                                }
                            }
                        }
                    }
                    Next::Done => break,
                }
            }
        }
    }
    let found = sweep
        .found()
        .into_iter()
        .map(|(address, mac)| (address, (mac.0 != [0; 6]).then_some(mac)))
        .collect();
    Ok(Outcome {
        network: request.network,
        kind,
        full: request.full,
        found,
        missed: sweep.missed(),
        sent: sweep.sent(),
        took: started.elapsed(),
    })
}
