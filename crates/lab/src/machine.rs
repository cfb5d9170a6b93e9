//! A machine of a lab site built from a site file: an appliance's or hub's namespace with a
//! host name and a filesystem of its own, as the real machine has.
//!
//! What runs on it (through [`Lab::spawn_on`](crate::Lab::spawn_on) or [`Machine::exec`]) has
//! its own UTS namespace with the machine's host name, its own `/run` and `/var/lib`
//! (directories in the lab's), and an `/etc` whose changes land in the lab's directory (an
//! overlay: the site file and key in `/etc/fieldnet`, its own `resolv.conf`). So agents run as
//! deployed — `/etc/fieldnet/site.toml`, found by host name, default bus socket and lease store —
//! and nothing they write reaches the host.
//! Invariant: the mounts live only in the mount namespace `ip netns exec` makes for each process;
//! the host's mount table and files are never touched.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context;

use crate::netns::Netns;

/// Run by `sh` inside the process's private mount namespace: `$1` the host name, `$2` the
/// machine's directory, the rest the program and its arguments.
const ENTER: &str = r#"set -e
hostname "$1"
mount --bind "$2/run" /run
mount --bind "$2/var-lib" /var/lib
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$2/etc,workdir=$2/etc-work" /etc
shift 2
exec "$@""#;

/// One appliance or hub of a site built from a site file.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Its entry's name in the site file.
    pub name: String,
    /// The host name its processes see (the entry's `hostname`, else its name).
    pub hostname: String,
    pub ns: Netns,
    /// Its own directories, in the lab's: `run`, `var-lib`, `etc` (the overlay's upper layer).
    pub root: PathBuf,
}

impl Machine {
    /// Makes the machine's directories, with `site` as its `/etc/fieldnet/site.toml` and
    /// `files` (paths under `/etc`, contents) beside it.
    pub(crate) fn new(
        name: &str,
        hostname: &str,
        ns: Netns,
        lab_dir: &Path,
        files: &[(PathBuf, String)],
    ) -> anyhow::Result<Machine> {
        let root = lab_dir.join("machines").join(name);
        for dir in ["run", "var-lib", "etc", "etc-work"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let resolv = format!("# /etc/resolv.conf of lab machine {name}\n");
        let mut all = vec![(PathBuf::from("/etc/resolv.conf"), resolv)];
        all.extend(files.iter().cloned());
        let machine = Machine {
            name: name.to_owned(),
            hostname: hostname.to_owned(),
            ns,
            root,
        };
        for (path, text) in &all {
            machine.put(&path.display().to_string(), text)?;
        }
        Ok(machine)
    }

    /// Writes `text` as the machine's file `path` (under `/etc`), as an operator copying a file
    /// onto it would; its processes see it at `path`.
    pub fn put(&self, path: &str, text: &str) -> anyhow::Result<()> {
        let relative = Path::new(path)
            .strip_prefix("/etc")
            .with_context(|| format!("{path}: a lab machine has files under /etc only"))?;
        let target = self.root.join("etc").join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Replaced whole, so a process reading it meanwhile never sees half of it.
        let next = target.with_extension("next");
        std::fs::write(&next, text)
            .and_then(|()| std::fs::rename(&next, &target))
            .with_context(|| format!("writing {}", target.display()))
    }

    /// Where the machine's `/run` is, seen from the host.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The machine's bus socket at its default place (`/run/fieldnet/bus.sock`), seen from the
    /// host.
    pub fn bus_socket(&self) -> PathBuf {
        self.run_dir().join("fieldnet/bus.sock")
    }

    /// `program args…` as run on this machine: the words to give `ip netns exec <ns>`.
    pub(crate) fn command(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut words: Vec<String> = ["unshare", "--uts", "--", "sh", "-c", ENTER, "sh"]
            .iter()
            .map(|word| (*word).to_owned())
            .collect();
        words.push(self.hostname.clone());
        words.push(self.root.display().to_string());
        words.push(program.to_owned());
        words.extend(args.iter().map(|arg| (*arg).to_owned()));
        words
    }

    /// Runs `program args…` on this machine to completion (as [`Netns::exec`]).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let words = self.command(program, args);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        self.ns.exec(refs[0], &refs[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_enters_the_machine_then_execs_the_program() {
        let machine = Machine {
            name: "north".to_owned(),
            hostname: "north".to_owned(),
            ns: Netns::new("fl1-1-north".to_owned(), "north".to_owned()),
            root: PathBuf::from("/tmp/lab/machines/north"),
        };
        let words = machine.command("whereami", &["--check-config"]);
        assert_eq!(&words[..3], ["unshare", "--uts", "--"]);
        assert_eq!(
            &words[words.len() - 4..],
            [
                "north",
                "/tmp/lab/machines/north",
                "whereami",
                "--check-config"
            ]
        );
        assert!(words[5].ends_with("exec \"$@\""));
    }
}
