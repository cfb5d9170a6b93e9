//! Finding and removing lab namespaces by name, for labs whose process died without dropping
//! them (killed test runner, `kill -9`) and for `cargo xtask lab clean --all`.
//! Invariant: only namespaces named like a lab (`fl<digits>-<digits>-…`) are ever touched, and
//! `clean_stale` only those whose creator PID is not alive.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::command::{self, DEFAULT_TIMEOUT};
use crate::netns::NETNS_DIR;

/// Names of all namespaces that look like lab namespaces, sorted.
pub fn lab_namespaces() -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("listing {NETNS_DIR}")));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {NETNS_DIR}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if creator_pid(&name).is_some() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes the lab namespaces whose creating process (the PID in `fl<pid>-…`) is not alive,
/// after killing the processes still inside them (`ip netns pids`). Returns the removed names.
pub fn clean_stale() -> anyhow::Result<Vec<String>> {
    remove_where(|pid| !pid_alive(pid))
}

/// Deletes every lab namespace, live labs included, after killing the processes inside them.
/// For `cargo xtask lab clean --all`; never call it from tests (it removes other tests' labs).
pub fn clean_all() -> anyhow::Result<Vec<String>> {
    remove_where(|_| true)
}

fn remove_where(doomed: impl Fn(u32) -> bool) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for name in lab_namespaces()? {
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if !doomed(pid) {
            continue;
        }
        match remove_namespace(&name) {
            Ok(()) => removed.push(name),
            Err(error) => failures.push(format!("{name}: {error:#}")),
        }
    }
    remove_temp_dirs(&doomed, &mut failures);
    remove_orphan_etc(&doomed, &mut failures);
    if failures.is_empty() {
        Ok(removed)
    } else {
        anyhow::bail!(
            "removed {} namespace(s) [{}] but failed on: {}",
            removed.len(),
            removed.join(", "),
            failures.join("; ")
        )
    }
}

/// Removes the log directories (`<tmp>/fieldnet-lab-fl<pid>-<n>-…`) of doomed labs.
fn remove_temp_dirs(doomed: &impl Fn(u32) -> bool, failures: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fieldnet-lab-").and_then(creator_pid) else {
            continue;
        };
        if doomed(pid)
            && entry.path().is_dir()
            && let Err(error) = std::fs::remove_dir_all(entry.path())
        {
            failures.push(format!("{}: {error}", entry.path().display()));
        }
    }
}

/// Kills what runs inside `name` (never this process), then deletes it.
fn remove_namespace(name: &str) -> anyhow::Result<()> {
    let mut list = Command::new("ip");
    list.args(["netns", "pids", name]);
    let out = command::checked(name, list, None, DEFAULT_TIMEOUT)?;
    let own = std::process::id();
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .filter(|pid| *pid != own && *pid > 1)
        .collect();
    for pid in &pids {
        // SAFETY: plain kill(2); the PID was just listed as living in this stale namespace.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|pid| still_running(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut delete = Command::new("ip");
    delete.args(["netns", "delete", name]);
    command::checked(name, delete, None, DEFAULT_TIMEOUT)?;
    crate::lab::remove_etc(name)
}

/// Removes the `/etc/netns/<name>` directories of doomed labs whose namespace is already gone.
fn remove_orphan_etc(doomed: &impl Fn(u32) -> bool, failures: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(crate::lab::NETNS_ETC_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if creator_pid(&name).is_some_and(doomed)
            && !std::path::Path::new(NETNS_DIR).join(&name).exists()
            && let Err(error) = crate::lab::remove_etc(&name)
        {
            failures.push(format!("{error:#}"));
        }
    }
}

/// The creator PID of a lab namespace name `fl<pid>-<counter>-<rest>`, or None if the name is
/// not a lab's.
pub(crate) fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("fl")?;
    let (pid, rest) = rest.split_once('-')?;
    let (counter, _) = rest.split_once('-')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(counter) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this PID exists (zombies count; EPERM means it exists).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `pid` exists and is not a zombie (a killed child of someone else stays a zombie until
/// its parent reaps it, which is not ours to wait for).
fn still_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lab_names() {
        assert_eq!(creator_pid("fl12345-3-a1"), Some(12345));
        assert_eq!(creator_pid("fl12345-3-"), Some(12345));
        assert_eq!(creator_pid("fl12345-x-a1"), None);
        assert_eq!(creator_pid("fl-3-a1"), None);
        assert_eq!(creator_pid("flannel-1-x"), None);
        assert_eq!(creator_pid("fl12345"), None);
        assert_eq!(creator_pid("blue"), None);
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(still_running(std::process::id()));
        assert!(!pid_alive(0));
    }
}
