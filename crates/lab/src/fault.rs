//! Faults injected into lab links by the kernel: administrative link down, a silent blackhole
//! and random loss (nftables `netdev` tables bound to one interface), and a rate limit (tbf).
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

type Undo = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

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
        undo: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
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

fn fault_table(kind: &str) -> String {
    format!(
        "lab_{kind}_{}",
        FAULT_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    /// `ip link set dev <ifname> down` in `ns`: the veth peer loses carrier (`NO-CARRIER`).
    /// The guard sets it up again. Note the kernel flushes the routes through an interface that
    /// is set down in its own namespace (and the guard does not restore them); to fail an
    /// uplink as the appliance sees it, take down the far end (e.g. the router's LAN port).
    pub fn link_down(&self, ns: &Netns, ifname: &str) -> anyhow::Result<Fault> {
        validate_ifname(ifname)?;
        ns.ip(&["link", "set", "dev", ifname, "down"])
            .with_context(|| format!("setting {ifname} down in {}", ns.name()))?;
        let description = format!("link down on {}:{ifname}", ns.name());
        let ns = ns.clone();
        let ifname = ifname.to_owned();
        Ok(Fault::new(description, move || {
            in_live_ns(&ns, || ns.ip(&["link", "set", "dev", &ifname, "up"]))
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
        let script = format!(
            "table netdev {table} {{\n  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500; policy accept;\n    numgen random mod 100 < {percent} drop\n  }}\n}}\n"
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
