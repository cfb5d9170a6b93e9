//! The `Lab`: a set of named network namespaces sharing one unique prefix, the links between
//! them, the programs running in them and a temporary directory for their logs.
//! Invariant: every namespace and process the lab created is removed when it drops (processes
//! first, by PID, then namespaces), also during a panic; names are `fl<pid>-<n>-<name>` so
//! parallel labs never clash and `clean_stale` can recognise labs whose process died.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context;

use crate::command::{self, DEFAULT_TIMEOUT};
use crate::error::LabError;
use crate::netns::Netns;
use crate::process::{LabProcess, ProcessSlot, TERM_GRACE};

/// Environment variable: when `"1"`, [`Lab::for_test`] panics instead of skipping if the lab
/// cannot run (CI sets it so a lab test never passes silently).
pub const LAB_REQUIRED_ENV: &str = "FIELDNET_LAB_REQUIRED";

/// Linux limit on interface names, without the trailing NUL.
const IFNAME_MAX: usize = 15;

/// Numbers the labs of this process, for unique prefixes.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(1);

/// `ip netns add` races with itself when several run at once on a host where `/run/netns` is
/// not yet a mount point; within one process we simply take turns.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// A lab: namespaces, links, processes. See the crate documentation.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    label: String,
    dir: tempfile::TempDir,
    namespaces: Vec<Netns>,
    processes: Vec<Arc<ProcessSlot>>,
    spawned: u32,
    /// Holders started (see `holder`), for their file names.
    pub(crate) holders: u32,
}

impl Lab {
    /// Creates an empty lab with a unique prefix `fl<pid>-<n>-`. Fails with
    /// [`LabError::Unavailable`] when network namespaces cannot be created here (not root, no
    /// `CAP_SYS_ADMIN`, no `ip`).
    pub fn new(label: &str) -> anyhow::Result<Lab> {
        check_available()?;
        let number = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("fl{}-{}-", std::process::id(), number);
        let safe_label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("fieldnet-lab-{prefix}{safe_label}-"))
            .tempdir()
            .with_context(|| format!("creating the temporary directory of lab {prefix}"))?;
        Ok(Lab {
            prefix,
            label: label.to_owned(),
            dir,
            namespaces: Vec::new(),
            processes: Vec::new(),
            spawned: 0,
            holders: 0,
        })
    }

    /// For tests: [`Lab::new`], but when the lab is unavailable prints
    /// `lab unavailable: <reason>; skipping` and returns `None`, unless
    /// `FIELDNET_LAB_REQUIRED=1`, in which case it panics. Any other error panics.
    pub fn for_test(label: &str) -> Option<Lab> {
        match Lab::new(label) {
            Ok(lab) => Some(lab),
            Err(error) => match error.downcast_ref::<LabError>() {
                Some(LabError::Unavailable(reason)) => {
                    if std::env::var(LAB_REQUIRED_ENV).as_deref() == Ok("1") {
                        panic!("lab unavailable: {reason}; {LAB_REQUIRED_ENV}=1 requires it");
                    }
                    eprintln!("lab unavailable: {reason}; skipping");
                    None
                }
                _ => panic!("creating lab {label:?}: {error:#}"),
            },
        }
    }

    /// The unique name prefix of this lab, e.g. `fl12345-3-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The label given to [`Lab::new`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A temporary directory owned by the lab (process logs, sockets); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namespaces created so far, in creation order.
    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }

    /// Creates namespace `<prefix><name>` and brings its `lo` up.
    pub fn netns(&mut self, name: &str) -> anyhow::Result<Netns> {
        validate_name("namespace", name, 48)?;
        let full = format!("{}{}", self.prefix, name);
        if self.namespaces.iter().any(|ns| ns.name() == full) {
            anyhow::bail!("lab {}: namespace {full} already exists", self.prefix);
        }
        {
            let _turn = NETNS_ADD.lock().unwrap_or_else(|p| p.into_inner());
            let mut add = Command::new("ip");
            add.args(["netns", "add", &full]);
            command::checked(&full, add, None, DEFAULT_TIMEOUT)
                .with_context(|| format!("creating namespace {full}"))?;
        }
        let ns = Netns::new(full, name.to_owned());
        self.namespaces.push(ns.clone());
        own_etc(&ns)?;
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both ends up. Created inside `a` and moved to
    /// `b` in one step, so it never appears in the host namespace.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
        validate_ifname(a_if)?;
        validate_ifname(b_if)?;
        a.ip(&[
            "link",
            "add",
            "name",
            a_if,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ])
        .with_context(|| format!("creating veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
        a.ip(&["link", "set", "dev", a_if, "up"])?;
        b.ip(&["link", "set", "dev", b_if, "up"])?;
        Ok(())
    }

    /// A bridge `name` in `ns`, up, with a fixed MAC address (so it does not change, and
    /// confuse neighbours, as ports join).
    pub fn bridge(&self, ns: &Netns, name: &str) -> anyhow::Result<()> {
        validate_ifname(name)?;
        let mac = local_mac(&format!("{}/{name}", ns.name()));
        ns.ip(&[
            "link", "add", "name", name, "address", &mac, "type", "bridge",
        ])
        .with_context(|| format!("creating bridge {name} in {}", ns.name()))?;
        ns.ip(&["link", "set", "dev", name, "up"])
    }

    /// Makes `ifname` a port of `bridge` (both in `ns`) and brings it up.
    pub fn enslave(&self, ns: &Netns, ifname: &str, bridge: &str) -> anyhow::Result<()> {
        ns.ip(&["link", "set", "dev", ifname, "master", bridge, "up"])
            .with_context(|| format!("adding {ifname} to bridge {bridge} in {}", ns.name()))
    }

    /// Adds `addr` (with prefix length, e.g. `10.0.0.1/24`) to `ifname` in `ns`.
    pub fn addr(&self, ns: &Netns, ifname: &str, addr: &str) -> anyhow::Result<()> {
        ns.ip(&["addr", "add", addr, "dev", ifname])
    }

    /// Starts `program args…` inside `ns` (via `ip netns exec`, which execs in place so the PID
    /// is the program's), in its own process group, with stdout and stderr appended to a log
    /// file in [`dir`](Self::dir). Killed when the returned handle or the lab drops.
    pub fn spawn(
        &mut self,
        ns: &Netns,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<LabProcess> {
        let (slot, log_path) = self.start(ns, program, args)?;
        Ok(LabProcess::new(
            slot,
            ns.name().to_owned(),
            program.to_owned(),
            log_path,
        ))
    }

    /// Starts `program args…` on `machine` (a site built from a site file): in its namespace,
    /// with its host name and its own `/run`, `/var/lib` and `/etc` (see [`Machine`]), as
    /// [`spawn`](Self::spawn) does otherwise.
    ///
    /// [`Machine`]: crate::Machine
    pub fn spawn_on(
        &mut self,
        machine: &crate::machine::Machine,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<LabProcess> {
        let words = machine.command(program, args);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let (slot, log_path) = self.start_named(&machine.ns, program, refs[0], &refs[1..])?;
        Ok(LabProcess::new(
            slot,
            machine.ns.name().to_owned(),
            program.to_owned(),
            log_path,
        ))
    }

    /// Starts a daemon that lives as long as the lab (a VPN endpoint, say): like
    /// [`spawn`](Self::spawn), but only the lab holds it, and stops it at teardown. Returns the
    /// path of its log.
    pub fn spawn_daemon(
        &mut self,
        ns: &Netns,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<std::path::PathBuf> {
        Ok(self.start(ns, program, args)?.1)
    }

    /// Starts `program` in `ns` and keeps its slot for teardown; returns the slot and log path.
    fn start(
        &mut self,
        ns: &Netns,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<(Arc<ProcessSlot>, std::path::PathBuf)> {
        self.start_named(ns, program, program, args)
    }

    /// [`start`](Self::start), its log named after `shown` (the program a wrapper runs).
    fn start_named(
        &mut self,
        ns: &Netns,
        shown: &str,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<(Arc<ProcessSlot>, std::path::PathBuf)> {
        use std::os::unix::process::CommandExt;

        self.spawned += 1;
        let base = Path::new(shown)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "process".to_owned());
        let log_path =
            self.dir
                .path()
                .join(format!("{}-{}-{}.log", ns.short_name(), base, self.spawned));
        let log = File::create(&log_path)
            .with_context(|| format!("creating log file {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("duplicating log file {}", log_path.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let shown = command::describe(&command);
        let child = command.spawn().map_err(|source| LabError::Spawn {
            ns: ns.name().to_owned(),
            command: shown,
            source,
        })?;
        let slot = ProcessSlot::new(child);
        self.processes.push(Arc::clone(&slot));
        Ok((slot, log_path))
    }

    /// A short tag unique to this lab (8 hex digits of its prefix), for names that live outside
    /// the namespaces, such as WireGuard's control sockets in `/var/run/wireguard`.
    pub fn tag(&self) -> String {
        // FNV-1a: stable across runs, no dependency.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.prefix.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{hash:08x}")
    }

    /// Makes `router` a NAT router: IPv4 forwarding on, and an nftables table `lab_nat` that
    /// masquerades everything leaving through `wan_if`. Its LAN side and WAN side (addresses,
    /// routes) are the caller's.
    pub fn nat(&self, router: &Netns, wan_if: &str) -> anyhow::Result<()> {
        validate_ifname(wan_if)?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        let script = format!(
            "table ip lab_nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{wan_if}\" masquerade\n  }}\n}}\n"
        );
        router
            .exec_with_stdin("nft", &["-f", "-"], script.as_bytes())
            .with_context(|| format!("installing masquerade on {wan_if} in {}", router.name()))?;
        Ok(())
    }

    /// Leaves the lab running instead of removing it: namespaces, processes and the directory
    /// stay (for `cargo xtask lab up`). Returns the prefix. Once this process has exited,
    /// [`clean_stale`](crate::clean_stale) removes all of it. `LabProcess` handles still kill
    /// their process when dropped.
    pub fn keep(mut self) -> String {
        self.namespaces.clear();
        self.processes.clear();
        self.dir.disable_cleanup(true);
        self.prefix.clone()
    }

    /// Removes the lab now and reports every failure (dropping does the same but can only
    /// print them).
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        let failures = self.teardown();
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("tearing down lab {}: {}", self.prefix, failures.join("; "))
        }
    }

    /// Kills the lab's processes, then deletes its namespaces (newest first). Returns every
    /// failure; idempotent.
    fn teardown(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        // SIGTERM everyone first so they shut down in parallel, then wait with one deadline.
        let running: Vec<_> = self
            .processes
            .drain(..)
            .filter(|slot| slot.begin_terminate())
            .collect();
        let deadline = Instant::now() + TERM_GRACE;
        for slot in running {
            slot.finish_terminate(deadline);
        }
        while let Some(ns) = self.namespaces.pop() {
            let mut delete = Command::new("ip");
            delete.args(["netns", "delete", ns.name()]);
            if let Err(error) = command::checked(ns.name(), delete, None, DEFAULT_TIMEOUT)
                && ns.exists()
            {
                failures.push(format!("deleting namespace {}: {error:#}", ns.name()));
            }
            if let Err(error) = remove_etc(ns.name()) {
                failures.push(format!("{error:#}"));
            }
        }
        failures
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for failure in self.teardown() {
            eprintln!("lab {}: {failure}", self.prefix);
        }
    }
}

/// Where `ip netns exec <name>` finds the files it bind-mounts over `/etc/<file>`.
pub(crate) const NETNS_ETC_DIR: &str = "/etc/netns";

/// Gives `ns` its own `/etc/resolv.conf`: `ip netns exec` mounts `/etc/netns/<name>/resolv.conf`
/// over the host's for everything started in the namespace, so a DHCP client's hook or a
/// resolver writing "its" resolv.conf writes this file, never the host's.
fn own_etc(ns: &Netns) -> anyhow::Result<()> {
    let dir = Path::new(NETNS_ETC_DIR).join(ns.name());
    let text = format!(
        "# /etc/resolv.conf of lab namespace {}: its own, so nothing run there rewrites the host's\n",
        ns.name()
    );
    // Another lab may remove an empty /etc/netns between our mkdir and write: try again.
    let mut tries = 0;
    loop {
        tries += 1;
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("resolv.conf"), &text));
        match written {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && tries < 10 => continue,
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("writing {}/resolv.conf", dir.display())));
            }
        }
    }
}

/// Removes `/etc/netns/<name>` and, when no other namespace has files there any more,
/// `/etc/netns` itself (the lab leaves the host's `/etc` as it found it).
pub(crate) fn remove_etc(name: &str) -> anyhow::Result<()> {
    let dir = Path::new(NETNS_ETC_DIR).join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("removing {}", dir.display())));
        }
    }
    // Fails harmlessly while other namespaces still have their directory in it.
    let _ = std::fs::remove_dir(NETNS_ETC_DIR);
    Ok(())
}

/// Checks once per process that namespaces can be created: a throwaway thread tries
/// `unshare(CLONE_NEWNET)` (its namespace vanishes with it), and `ip` must run.
fn check_available() -> anyhow::Result<()> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    let verdict = AVAILABLE.get_or_init(|| {
        let probe = std::thread::spawn(|| {
            // SAFETY: unshare only affects this short-lived thread, which does nothing else.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        match probe.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                // SAFETY: geteuid has no preconditions.
                let euid = unsafe { libc::geteuid() };
                return Err(format!(
                    "cannot create network namespaces (unshare CLONE_NEWNET: {error}; euid {euid}; the lab needs root)"
                ));
            }
            Err(_) => return Err("namespace probe thread panicked".to_owned()),
        }
        match Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`ip -V` failed ({status})")),
            Err(error) => Err(format!("iproute2 `ip` not runnable: {error}")),
        }
    });
    verdict
        .clone()
        .map_err(|reason| LabError::Unavailable(reason).into())
}

/// Rejects names the kernel or `ip` would refuse, truncate or misparse.
pub(crate) fn validate_name(kind: &'static str, name: &str, max: usize) -> anyhow::Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > max {
        Some("too long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else if name.starts_with(['-', '.']) {
        Some("must not start with '-' or '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }
        .into()),
        None => Ok(()),
    }
}

pub(crate) fn validate_ifname(name: &str) -> anyhow::Result<()> {
    validate_name("interface", name, IFNAME_MAX)
}

/// A locally administered unicast MAC derived from `seed` (FNV-1a), stable per name.
fn local_mac(seed: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_ifname("wan0").is_ok());
        assert!(validate_ifname("a1-up1").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("has space").is_err());
        assert!(validate_ifname("-flag").is_err());
        assert!(validate_name("namespace", "a1/../x", 48).is_err());
    }

    #[test]
    fn macs_are_local_unicast_and_stable() {
        let mac = local_mac("fl1-1-internet/br0");
        assert_eq!(mac, local_mac("fl1-1-internet/br0"));
        assert_ne!(mac, local_mac("fl1-2-internet/br0"));
        assert!(mac.starts_with("02:"));
        assert_eq!(mac.len(), 17);
    }
}
