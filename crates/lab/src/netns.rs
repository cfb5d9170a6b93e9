//! A handle on one named network namespace (`/run/netns/<name>`) and the ways to act inside
//! it: external commands, `ip -n`, sysctls, closures on a thread that entered it, `ping`.
//! Invariant: a `Netns` never creates or deletes its namespace; the `Lab` that made it does.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::command::{self, DEFAULT_TIMEOUT};
use crate::error::LabError;
use crate::ping::{PingStats, parse_summary};

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// A network namespace created by a [`Lab`](crate::Lab). Cheap to clone; clones refer to the
/// same namespace, which lives as long as the lab (not as long as the handle).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
    short: String,
}

/// Link state of one interface as `ip link show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// `UP`, `DOWN`, `LOWERLAYERDOWN`, `UNKNOWN`...
    pub operstate: String,
    /// The flags between angle brackets: `UP`, `LOWER_UP`, `NO-CARRIER`...
    pub flags: Vec<String>,
}

impl LinkState {
    /// The interface is administratively up (`ip link set up`).
    pub fn is_admin_up(&self) -> bool {
        self.flags.iter().any(|flag| flag == "UP")
    }

    /// The interface has carrier (`LOWER_UP` and not `NO-CARRIER`).
    pub fn has_carrier(&self) -> bool {
        self.flags.iter().any(|flag| flag == "LOWER_UP")
            && !self.flags.iter().any(|flag| flag == "NO-CARRIER")
    }

    /// Parses one line of `ip -o link show dev X`.
    pub(crate) fn parse(line: &str) -> Option<LinkState> {
        let open = line.find('<')?;
        let close = open + line[open..].find('>')?;
        let flags = line[open + 1..close]
            .split(',')
            .filter(|flag| !flag.is_empty())
            .map(str::to_owned)
            .collect();
        let mut words = line[close..].split_whitespace();
        let operstate = loop {
            match words.next() {
                Some("state") => break words.next()?.to_owned(),
                Some(_) => continue,
                None => return None,
            }
        };
        Some(LinkState { operstate, flags })
    }
}

impl Netns {
    pub(crate) fn new(name: String, short: String) -> Netns {
        Netns { name, short }
    }

    /// Full namespace name as `ip netns list` shows it, e.g. `fl12345-3-a1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name without the lab prefix, as given to [`Lab::netns`](crate::Lab::netns), e.g. `a1`.
    pub fn short_name(&self) -> &str {
        &self.short
    }

    /// The bind mount that keeps the namespace alive, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Whether the namespace still exists (its lab has not been dropped).
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Runs `program args…` in the namespace (via `ip netns exec`, so `/sys` shows the
    /// namespace's interfaces) to completion, within 120 s. Err with its stderr if it fails.
    /// It runs in a process group of its own; what it leaves running there (`sh -c 'x &'`) is
    /// killed when it exits. Use [`Lab::spawn`](crate::Lab::spawn) for servers.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.exec_timeout(program, args, DEFAULT_TIMEOUT)
    }

    /// [`exec`](Self::exec) with an explicit time limit; the command is killed when it expires.
    pub fn exec_timeout(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        command::checked(&self.name, self.command(program, args), None, timeout)
    }

    /// [`exec`](Self::exec) with `stdin` fed to the command (e.g. an `nft -f -` script).
    pub fn exec_with_stdin(
        &self,
        program: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> anyhow::Result<Output> {
        command::checked(
            &self.name,
            self.command(program, args),
            Some(stdin),
            DEFAULT_TIMEOUT,
        )
    }

    /// Runs a command in the namespace and returns its output whatever its exit status.
    pub fn exec_unchecked(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        command::output(&self.name, self.command(program, args), None, timeout)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// `ip -n <ns> <args>`, e.g. `ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])`.
    /// Always spell out `dev`/`name` before interface names: `ip` reads a bare `a` as `address`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        self.ip_output(args).map(drop)
    }

    /// `ip -n <ns> <args>` returning its standard output.
    pub fn ip_output(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("ip");
        command.args(["-n", &self.name]).args(args);
        let out = command::checked(&self.name, command, None, DEFAULT_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl inside the namespace, `key` in `sysctl` spelling
    /// (`net.ipv4.ip_forward`) or as a path under `/proc/sys` (`net/ipv4/conf/eth0.5/rp_filter`).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let relative = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let path = PathBuf::from("/proc/sys").join(relative);
        let value = value.to_owned();
        let shown = path.display().to_string();
        // /proc/sys/net resolves against the netns of the calling thread, so write from inside.
        self.run(move || std::fs::write(&path, value.as_bytes()))?
            .with_context(|| format!("in namespace {}: writing {shown}", self.name))
    }

    /// Runs `f` on a new thread that has entered this namespace (setns `CLONE_NEWNET`) and
    /// returns its result. Sockets created inside belong to the namespace and may be used
    /// afterwards from any thread. A panic in `f` is resumed on the caller's thread.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let path = self.path();
        let file = File::open(&path)
            .with_context(|| format!("opening namespace {} ({})", self.name, path.display()))?;
        let name = self.name.clone();
        let handle = thread::Builder::new()
            .name(format!("netns-{}", self.short))
            .spawn(move || -> anyhow::Result<T> {
                // SAFETY: `file` is an open nsfs file for a network namespace and stays open for
                // the call; setns only changes this (new, not yet shared) thread's namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(anyhow::Error::new(std::io::Error::last_os_error())
                        .context(format!("entering namespace {name} (setns)")));
                }
                drop(file);
                Ok(f())
            })
            .with_context(|| format!("spawning a thread for namespace {}", self.name))?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Pings `target` `count` times every `interval` with `ping -q` and returns the summary.
    /// Lost replies are a result, not an error: a blackholed target gives `received == 0`, and
    /// one without any route (ping cannot even send) gives `sent == 0, received == 0`.
    pub fn ping(&self, target: &str, count: u32, interval: Duration) -> anyhow::Result<PingStats> {
        self.ping_with_wait(target, count, interval, Duration::from_secs(2))
    }

    /// [`ping`](Self::ping) with the time to wait for a reply when none arrived (`ping -W`).
    pub fn ping_with_wait(
        &self,
        target: &str,
        count: u32,
        interval: Duration,
        wait: Duration,
    ) -> anyhow::Result<PingStats> {
        let interval_text = format!("{:.3}", interval.as_secs_f64().max(0.001));
        let wait_text = format!("{:.3}", wait.as_secs_f64().max(0.001));
        let count_text = count.max(1).to_string();
        let limit = interval * count + wait + Duration::from_secs(30);
        let out = self.exec_unchecked(
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                &count_text,
                "-i",
                &interval_text,
                "-W",
                &wait_text,
                target,
            ],
            limit,
        )?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(stats) = parse_summary(&stdout) {
            return Ok(stats);
        }
        // Without a route ping cannot send at all and prints no summary: nothing came back.
        if stderr.contains("Network is unreachable") || stderr.contains("No route to host") {
            return Ok(PingStats {
                sent: 0,
                received: 0,
                loss: 1.0,
                rtt_avg: Duration::ZERO,
                rtt_min: Duration::ZERO,
                rtt_max: Duration::ZERO,
            });
        }
        Err(LabError::PingOutput {
            ns: self.name.clone(),
            target: target.to_owned(),
            output: format!("{} {}", stdout.trim(), stderr.trim()),
        }
        .into())
    }

    /// Polls with single pings until `target` answers once, or fails after `timeout`.
    /// Use it instead of sleeping while routes, ARP or NAT settle.
    pub fn wait_reachable(&self, target: &str, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let stats =
                self.ping_with_wait(target, 1, Duration::from_millis(10), Duration::from_secs(1))?;
            if stats.received > 0 {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    ns: self.name.clone(),
                    what: format!("waiting for {target} to answer ping"),
                    after: timeout,
                }
                .into());
            }
        }
    }

    /// The hardware address of `ifname`, `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self, ifname: &str) -> anyhow::Result<String> {
        let output = self.exec("cat", &[&format!("/sys/class/net/{ifname}/address")])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The first IPv4 address on `ifname`, if it has one (a DHCP client's lease, say).
    pub fn ipv4(&self, ifname: &str) -> Option<std::net::Ipv4Addr> {
        let text = self
            .ip_output(&["-4", "-o", "addr", "show", "dev", ifname])
            .ok()?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let at = words.iter().position(|word| *word == "inet")?;
        words.get(at + 1)?.split('/').next()?.parse().ok()
    }

    /// Link state of `ifname` in this namespace.
    pub fn link(&self, ifname: &str) -> anyhow::Result<LinkState> {
        let text = self.ip_output(&["-o", "link", "show", "dev", ifname])?;
        LinkState::parse(&text).with_context(|| {
            format!(
                "in namespace {}: cannot parse `ip link show dev {ifname}`: {text}",
                self.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_lines() {
        let up = "2: a@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 7e:06:40:c1:f3:51 brd ff:ff:ff:ff:ff:ff link-netns x";
        let state = LinkState::parse(up).unwrap();
        assert_eq!(state.operstate, "UP");
        assert!(state.is_admin_up() && state.has_carrier());

        let no_carrier = "2: b@if2: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN mode DEFAULT";
        let state = LinkState::parse(no_carrier).unwrap();
        assert_eq!(state.operstate, "LOWERLAYERDOWN");
        assert!(state.is_admin_up() && !state.has_carrier());

        assert_eq!(LinkState::parse("garbage"), None);
    }
}
