//! A witness of DHCP on the wire: a packet socket in a client namespace that records every
//! DHCPACK arriving there (when, to which hardware address, which address), so a test can audit
//! leases against what clients were really told, whoever the server was.
//!
//! Invariant: the capture thread stops when the guard is finished or dropped; parsing is pure
//! and reads only the fixed BOOTP header and option 53.

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context as _;

use crate::netns::Netns;

/// Writes `<dir>/udhcpc-hook.sh`, a busybox udhcpc script that applies a lease to the
/// interface and its default route and nothing else (the stock script rewrites the host's
/// /etc/resolv.conf, which namespaces share); returns its path.
pub fn udhcpc_hook(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("udhcpc-hook.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in\n\
         bound|renew) ip addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\"; ip route replace default via \"$router\" dev \"$interface\";;\n\
         deconfig) ip addr flush dev \"$interface\";;\n\
         esac\nexit 0\n",
    )
    .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Gives `client`'s `eth0` the MAC `mac` and a lease (busybox udhcpc, with [`udhcpc_hook`]
/// written in `dir`, so only the namespace's interface and route change); returns the leased
/// address.
pub fn udhcpc_lease(
    dir: &std::path::Path,
    client: &Netns,
    mac: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<String> {
    client.ip(&["link", "set", "eth0", "down"])?;
    client.ip(&["link", "set", "eth0", "address", mac])?;
    client.ip(&["link", "set", "eth0", "up"])?;
    client.ip(&["addr", "flush", "dev", "eth0"])?;
    let hook = udhcpc_hook(dir)?;
    let hook = hook.to_string_lossy();
    client
        .exec_timeout(
            "udhcpc",
            &["-f", "-q", "-n", "-t", "10", "-i", "eth0", "-s", &hook],
            timeout,
        )
        .with_context(|| format!("udhcpc with {mac}"))?;
    let shown = client.ip_output(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    shown
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .with_context(|| format!("no address after udhcpc: {shown}"))
}

/// One DHCPACK seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub at: Instant,
    /// The client hardware address (`chaddr`).
    pub mac: [u8; 6],
    /// The address acknowledged (`yiaddr`).
    pub address: Ipv4Addr,
}

impl Ack {
    /// The hardware address as `aa:bb:cc:dd:ee:ff`, as `ip link` and [`Netns::mac`] print it.
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Records DHCPACKs arriving in a namespace until finished.
#[derive(Debug)]
pub struct AckCapture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Ack>>>,
}

const ETH_P_IP: u16 = 0x0800;

impl AckCapture {
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        let fd = ns
            .run(|| {
                // SAFETY: plain socket(2); the descriptor is owned right away.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                        i32::from(ETH_P_IP.to_be()),
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: fd is a fresh descriptor nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })?
            .with_context(|| format!("opening a packet socket in {}", ns.name()))?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setsockopt with a valid timeval of the size given.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(set == 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        let mut socket = std::fs::File::from(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut buffer = [0_u8; 2048];
            while !stopping.load(Ordering::Relaxed) {
                let Ok(length) = socket.read(&mut buffer) else {
                    continue;
                };
                if let Some((mac, address)) = parse_ack(&buffer[..length]) {
                    acks.push(Ack {
                        at: Instant::now(),
                        mac,
                        address,
                    });
                }
            }
            acks
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns every ACK seen, in arrival order.
    pub fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for AckCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The duplicate-address audit: every (address, hardware address) pair seen (ACKs on the wire,
/// clients' own addresses); an address seen with two hardware addresses is a duplicate.
#[derive(Debug, Default)]
pub struct AddressAudit {
    holder: std::collections::BTreeMap<Ipv4Addr, String>,
    /// (address, first holder, second holder), in the order found.
    pub duplicates: Vec<(Ipv4Addr, String, String)>,
}

impl AddressAudit {
    /// `mac` (as `aa:bb:…`, see [`Ack::mac_text`]) was given or holds `address`.
    pub fn note(&mut self, address: Ipv4Addr, mac: String) {
        match self.holder.get(&address) {
            Some(other) if *other != mac => self.duplicates.push((address, other.clone(), mac)),
            Some(_) => {}
            None => {
                self.holder.insert(address, mac);
            }
        }
    }

    pub fn note_acks(&mut self, acks: &[Ack]) {
        for ack in acks {
            self.note(ack.address, ack.mac_text());
        }
    }

    /// Distinct hardware addresses seen (first holders).
    pub fn devices(&self) -> usize {
        self.holder
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}

/// An IPv4 packet → the `chaddr` and `yiaddr` of the DHCPACK it carries from port 67.
pub(crate) fn parse_ack(packet: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    if *packet.get(9)? != 17 {
        return None;
    }
    let udp = packet.get(header..)?;
    if u16::from_be_bytes([*udp.first()?, *udp.get(1)?]) != 67 {
        return None;
    }
    let bootp = udp.get(8..)?;
    // op 2 (reply), then the magic cookie after the 236-byte fixed header.
    if *bootp.first()? != 2 || bootp.get(236..240)? != [99, 130, 83, 99] {
        return None;
    }
    let yiaddr = Ipv4Addr::new(bootp[16], bootp[17], bootp[18], bootp[19]);
    let mac: [u8; 6] = bootp.get(28..34)?.try_into().ok()?;
    let mut options = bootp.get(240..)?;
    while let Some((&code, rest)) = options.split_first() {
        match code {
            0 => options = rest,
            255 => return None,
            _ => {
                let length = usize::from(*rest.first()?);
                let value = rest.get(1..1 + length)?;
                if code == 53 {
                    return (value == [5] && !yiaddr.is_unspecified()).then_some((mac, yiaddr));
                }
                options = &rest[1 + length..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8) -> Vec<u8> {
        let mut bootp = vec![0_u8; 240];
        bootp[0] = 2;
        bootp[16..20].copy_from_slice(&[10, 102, 0, 57]);
        bootp[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
        bootp.extend([0, 53, 1, kind, 255]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17];
        ip.resize(20, 0);
        ip.extend([0, 67, 0, 68, 0, 0, 0, 0]);
        ip.extend(bootp);
        ip
    }

    #[test]
    fn acks_are_read_and_everything_else_is_not() {
        assert_eq!(
            parse_ack(&packet(5)),
            Some(([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 102, 0, 57)))
        );
        assert_eq!(parse_ack(&packet(2)), None, "an OFFER");
        let mut tcp = packet(5);
        tcp[9] = 6;
        assert_eq!(parse_ack(&tcp), None);
        assert_eq!(parse_ack(&packet(5)[..100]), None, "truncated");
        assert_eq!(parse_ack(&[]), None);
    }

    #[test]
    fn the_audit_counts_an_address_held_by_two_devices() {
        let mut audit = AddressAudit::default();
        let address = Ipv4Addr::new(10, 102, 0, 57);
        audit.note(address, "02:00:00:00:00:09".into());
        audit.note(address, "02:00:00:00:00:09".into());
        audit.note(Ipv4Addr::new(10, 102, 0, 58), "02:00:00:00:00:09".into());
        assert!(
            audit.duplicates.is_empty(),
            "one device, renewing and moving"
        );
        assert_eq!(audit.devices(), 1);
        audit.note(address, "02:00:00:00:00:0a".into());
        assert_eq!(audit.duplicates.len(), 1);
    }
}
