//! Holders: a process that makes mounts in a mount namespace of its own (made by `ip netns
//! exec`, so nothing reaches the host's mount table), says so, and keeps the namespace alive
//! until the lab stops it. Processes enter the namespace with `nsenter`, so they share the
//! mounts — and a file system mounted there outlives any one of them (a restarted agent finds
//! what it wrote). Used for lab machines and for small file systems a test fills.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::Lab;
use crate::netns::Netns;

/// How long a holder may take to make its mounts.
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a holder in `ns`: `sh -c script` with `$2…` = `args` (`$1` is where it writes its
/// PID when `script` succeeded), prefixed by `prefix` (e.g. `unshare --uts --`). Returns its
/// PID, once its mounts are made.
pub(crate) fn hold(
    lab: &mut Lab,
    ns: &Netns,
    prefix: &[&str],
    script: &str,
    args: &[&str],
    what: &str,
) -> anyhow::Result<u32> {
    lab.holders += 1;
    let marker = lab.dir().join(format!("holder-{}.pid", lab.holders));
    let body = format!("set -e\n{script}\necho $$ > \"$1\"\nexec sleep infinity");
    let marker_arg = marker.display().to_string();
    let mut words: Vec<&str> = prefix.to_vec();
    words.extend(["sh", "-c", &body, "sh", &marker_arg]);
    words.extend(args);
    let log = lab.spawn_daemon(ns, words[0], &words[1..])?;
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            return Ok(pid);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not mounted within {} s; log: {}",
            HOLD_TIMEOUT.as_secs(),
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `nsenter` words running `program args…` in `holder`'s mount namespace (and UTS with `uts`).
pub(crate) fn enter(holder: u32, uts: bool, program: &str, args: &[&str]) -> Vec<String> {
    let mut words = vec!["nsenter".to_owned(), format!("--target={holder}")];
    words.push("--mount".to_owned());
    if uts {
        words.push("--uts".to_owned());
    }
    words.push("--".to_owned());
    words.push(program.to_owned());
    words.extend(args.iter().map(|arg| (*arg).to_owned()));
    words
}

/// A small tmpfs of a test's, mounted on a directory of the lab's in a namespace of its own:
/// a disk that fills up, without touching the host's mounts. What should see it runs through
/// [`command`](Self::command).
#[derive(Clone, Debug)]
pub struct SmallDisk {
    /// Where it is mounted (inside its namespace; from the host the directory looks empty).
    pub dir: PathBuf,
    holder: u32,
}

impl Lab {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `64k`, `1m`) on `dir` (made if missing),
    /// seen only by processes started through the returned disk's [`SmallDisk::command`].
    pub fn small_disk(&mut self, ns: &Netns, dir: &Path, size: &str) -> anyhow::Result<SmallDisk> {
        std::fs::create_dir_all(dir)?;
        let dir_arg = dir.display().to_string();
        let holder = hold(
            self,
            ns,
            &[],
            r#"mount -t tmpfs -o "size=$3,mode=0700" fieldnet-lab "$2""#,
            &[&dir_arg, size],
            &format!("small disk on {}", dir.display()),
        )?;
        Ok(SmallDisk {
            dir: dir.to_owned(),
            holder,
        })
    }
}

impl SmallDisk {
    /// `program args…` as run where the disk is mounted: the words to give `Lab::spawn` (as
    /// program and arguments) in the same namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Vec<String> {
        enter(self.holder, false, program, args)
    }

    /// Runs `sh -c script` where the disk is mounted (to fill it, or free it), to completion.
    pub fn sh(&self, script: &str) -> anyhow::Result<Output> {
        let words = self.command("sh", &["-c", script]);
        let output = Command::new(&words[0]).args(&words[1..]).output()?;
        anyhow::ensure!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_names_the_holder_and_the_namespaces() {
        assert_eq!(
            enter(7, true, "hostname", &[]),
            [
                "nsenter",
                "--target=7",
                "--mount",
                "--uts",
                "--",
                "hostname"
            ]
        );
        assert_eq!(
            enter(7, false, "ls", &["/x"]),
            ["nsenter", "--target=7", "--mount", "--", "ls", "/x"]
        );
    }
}
