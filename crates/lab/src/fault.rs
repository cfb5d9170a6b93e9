//! Faults injected into lab links by the kernel: administrative link down, a silent blackhole
//! and random loss (nftables `netdev` tables bound to one interface), a rate limit (tbf), and
//! an appliance losing power while its switch keeps going.
//! Invariant: each fault is undone by its `Fault` guard, explicitly or on drop (also during a
//! panic); an undo that finds the namespace, interface or table already gone succeeds.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;

use crate::command::is_already_gone;
use crate::lab::{Lab, validate_ifname};
use crate::netns::Netns;

/// Numbers the nftables tables of this process's faults, so several faults can coexist.
static FAULT_COUNTER: AtomicU32 = AtomicU32::new(1);

type Undo = Box<dyn FnOnce() -> anyhow::Result<()> + Send + Sync>;

/// An active fault. Dropping it undoes the fault (errors are printed, "already gone" ignored);
/// [`Fault::undo`] does the same and returns the error.
#[must_use = "the fault is undone as soon as the guard is dropped"]
pub struct Fault {
    description: String,
    undo: Option<Undo>,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("description", &self.description)
            .field("active", &self.undo.is_some())
            .finish()
    }
}

impl Fault {
    pub(crate) fn new(
        description: String,
        undo: impl FnOnce() -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> Fault {
        Fault {
            description,
            undo: Some(Box::new(undo)),
        }
    }

    /// What this fault does, e.g. `blackhole on fl1-1-a1:wan0`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Undoes the fault now and reports failure.
    pub fn undo(mut self) -> anyhow::Result<()> {
        self.run_undo()
    }

    fn run_undo(&mut self) -> anyhow::Result<()> {
        match self.undo.take() {
            Some(undo) => match undo() {
                Err(error) if !is_already_gone(&error) => {
                    Err(error.context(format!("undoing {}", self.description)))
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Err(error) = self.run_undo() {
            eprintln!("lab: {error:#}");
        }
    }
}

/// Runs `f` unless the namespace is gone (its lab dropped first), which counts as undone.
fn in_live_ns(ns: &Netns, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    if ns.exists() { f() } else { Ok(()) }
}

/// Installs an nftables `netdev` table named `table` in `ns` from `script`; the returned guard
/// deletes the table.
fn nft_fault(
    ns: &Netns,
    table: String,
    script: String,
    description: String,
) -> anyhow::Result<Fault> {
    ns.exec_with_stdin("nft", &["-f", "-"], script.as_bytes())
        .with_context(|| format!("installing {description}"))?;
    let ns = ns.clone();
    Ok(Fault::new(description, move || {
        in_live_ns(&ns, || {
            ns.exec("nft", &["delete", "table", "netdev", &table])
                .map(drop)
        })
    }))
}

/// The routes of an `ip -o route show table all dev X` listing that setting X down removes and
/// setting it up does not bring back: everything except `proto kernel` and the `local` and
/// `broadcast` entries, as `ip route add` arguments (without `dev X`), state flags removed.
fn restorable_routes(listing: &str) -> Vec<Vec<String>> {
    const STATE_FLAGS: [&str; 8] = [
        "linkdown",
        "dead",
        "offload",
        "trap",
        "rt_offload",
        "rt_trap",
        "rt_offload_failed",
        "pervasive",
    ];
    listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|words| !words.is_empty())
        .filter(|words| !matches!(words[0], "local" | "broadcast" | "anycast" | "multicast"))
        .filter(|words| !words.windows(2).any(|pair| pair == ["proto", "kernel"]))
        .map(|words| {
            words
                .into_iter()
                .filter(|word| !STATE_FLAGS.contains(word))
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

fn fault_table(kind: &str) -> String {
    format!(
        "lab_{kind}_{}",
        FAULT_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    /// The appliance in `ns` loses power, but the switch in it does not: its own IP stack
    /// stops receiving, sending and answering ARP (nftables `inet` and `arp` tables dropping
    /// input and output) and stops routing (`ip_forward` 0), while its bridges keep switching
    /// frames between their ports, as the area's switch would. Its processes are the caller's
    /// to kill. The guard powers it back on.
    pub fn power_off(&self, ns: &Netns) -> anyhow::Result<Fault> {
        let table = fault_table("power");
        let script = format!(
            "table inet {table} {{\n\
             chain input {{ type filter hook input priority -400; policy drop; }}\n\
             chain output {{ type filter hook output priority -400; policy drop; }}\n\
             }}\n\
             table arp {table} {{\n\
             chain input {{ type filter hook input priority -400; policy drop; }}\n\
             chain output {{ type filter hook output priority -400; policy drop; }}\n\
             }}\n"
        );
        let description = format!("power off {}", ns.name());
        ns.exec_with_stdin("nft", &["-f", "-"], script.as_bytes())
            .with_context(|| format!("installing {description}"))?;
        ns.sysctl("net.ipv4.ip_forward", "0")?;
        let ns = ns.clone();
        Ok(Fault::new(description, move || {
            in_live_ns(&ns, || {
                ns.sysctl("net.ipv4.ip_forward", "1")?;
                ns.exec("nft", &["delete", "table", "inet", &table])?;
                ns.exec("nft", &["delete", "table", "arp", &table])
                    .map(drop)
            })
        }))
    }

    /// `ip link set dev <ifname> down` in `ns`: the veth peer loses carrier (`NO-CARRIER`).
    ///
    /// Setting a link down makes the kernel flush the IPv4 routes through it in `ns` (the
    /// default route via an uplink, for instance). The guard sets the link up and re-adds the
    /// routes it saw before, except those the kernel restores itself (`proto kernel`) and those
    /// someone has re-created meanwhile (`File exists` is not an error), so an agent that moved
    /// the default route elsewhere keeps its choice.
    pub fn link_down(&self, ns: &Netns, ifname: &str) -> anyhow::Result<Fault> {
        validate_ifname(ifname)?;
        let listing = ns
            .ip_output(&["-4", "-o", "route", "show", "table", "all", "dev", ifname])
            .with_context(|| format!("listing routes through {ifname} in {}", ns.name()))?;
        let routes = restorable_routes(&listing);
        ns.ip(&["link", "set", "dev", ifname, "down"])
            .with_context(|| format!("setting {ifname} down in {}", ns.name()))?;
        let description = format!("link down on {}:{ifname}", ns.name());
        let ns = ns.clone();
        let ifname = ifname.to_owned();
        Ok(Fault::new(description, move || {
            in_live_ns(&ns, || {
                ns.ip(&["link", "set", "dev", &ifname, "up"])?;
                let mut failures = Vec::new();
                for route in &routes {
                    let mut args = vec!["-4", "route", "add"];
                    args.extend(route.iter().map(String::as_str));
                    args.extend(["dev", ifname.as_str()]);
                    match ns.ip(&args) {
                        Err(error) if !format!("{error:#}").contains("File exists") => {
                            failures.push(format!("{error:#}"))
                        }
                        _ => {}
                    }
                }
                if failures.is_empty() {
                    Ok(())
                } else {
                    anyhow::bail!("restoring routes: {}", failures.join("; "))
                }
            })
        }))
    }

    /// A silent blackhole on `ifname` in `ns`: an nftables `netdev` table of its own whose
    /// ingress and egress chains on that device drop every frame (IP, ARP, everything, also on
    /// bridge ports). Carrier and addresses stay up, so only probes notice. (Senders in `ns`
    /// itself get `ENOBUFS` from the egress drop; UDP and TCP hide it unless `IP_RECVERR` is
    /// set, `ping` reports it.)
    pub fn blackhole(&self, ns: &Netns, ifname: &str) -> anyhow::Result<Fault> {
        validate_ifname(ifname)?;
        let table = fault_table("blackhole");
        let script = format!(
            "table netdev {table} {{\n  chain ingress {{ type filter hook ingress device \"{ifname}\" priority -500; policy drop; }}\n  chain egress {{ type filter hook egress device \"{ifname}\" priority -500; policy drop; }}\n}}\n"
        );
        nft_fault(
            ns,
            table,
            script,
            format!("blackhole on {}:{ifname}", ns.name()),
        )
    }

    /// Random loss of `percent` % of the frames arriving through `ifname` in `ns`: nftables
    /// `numgen random mod 100 < percent drop` on the device's `netdev` ingress hook, so a round
    /// trip through this interface loses `percent` %, from whichever side it starts.
    ///
    /// Ingress, not egress: a frame dropped on egress of a locally generated packet is reported
    /// to its sender (`ENOBUFS`; `ping` even resends it), which a lossy radio link never does.
    /// To make one direction lossy, put the fault on the receiving end of that direction.
    pub fn loss(&self, ns: &Netns, ifname: &str, percent: u32) -> anyhow::Result<Fault> {
        validate_ifname(ifname)?;
        anyhow::ensure!(
            percent <= 100,
            "loss on {}:{ifname}: {percent} % is not a percentage",
            ns.name()
        );
        let table = fault_table("loss");
        // numgen's range is 0-99: total loss is an unconditional drop.
        let verdict = if percent == 100 {
            "drop".to_owned()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        let script = format!(
            "table netdev {table} {{\n  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500; policy accept;\n    {verdict}\n  }}\n}}\n"
        );
        nft_fault(
            ns,
            table,
            script,
            format!("{percent} % loss on {}:{ifname} ingress", ns.name()),
        )
    }

    /// Rate limit of `kbit` kbit/s on frames leaving `ifname` in `ns`: a root `tbf` qdisc with
    /// a burst of 10 ms at that rate (at least 3 kB) and a 200 ms queue. The guard deletes the
    /// root qdisc, restoring the device default.
    pub fn rate_limit(&self, ns: &Netns, ifname: &str, kbit: u32) -> anyhow::Result<Fault> {
        validate_ifname(ifname)?;
        anyhow::ensure!(kbit > 0, "rate limit on {}:{ifname}: 0 kbit", ns.name());
        let bytes_per_second = u64::from(kbit) * 1000 / 8;
        let burst = (bytes_per_second / 100).max(3000);
        let limit = (bytes_per_second / 5).max(16 * 1024) + burst;
        ns.exec(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                ifname,
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                &burst.to_string(),
                "limit",
                &limit.to_string(),
            ],
        )
        .with_context(|| format!("rate limiting {ifname} in {}", ns.name()))?;
        let ns = ns.clone();
        let ifname = ifname.to_owned();
        Ok(Fault::new(
            format!("{kbit} kbit/s rate limit on {}:{ifname} egress", ns.name()),
            move || {
                in_live_ns(&ns, || {
                    ns.exec("tc", &["qdisc", "del", "dev", &ifname, "root"])
                        .map(drop)
                })
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restorable_routes_skip_what_the_kernel_restores() {
        let listing = "default via 192.168.8.1 \n\
            10.102.0.0/24 via 10.255.12.2 proto static metric 20 linkdown \n\
            192.168.8.0/24 proto kernel scope link src 192.168.8.2 \n\
            default via 192.168.8.1 table 100 \n\
            local 192.168.8.2 table local proto kernel scope host src 192.168.8.2 \n\
            broadcast 192.168.8.255 table local proto kernel scope link src 192.168.8.2 \n";
        let routes = restorable_routes(listing);
        let joined: Vec<String> = routes.iter().map(|route| route.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "default via 192.168.8.1",
                "10.102.0.0/24 via 10.255.12.2 proto static metric 20",
                "default via 192.168.8.1 table 100",
            ]
        );
    }
}
