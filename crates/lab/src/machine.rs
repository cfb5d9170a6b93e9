//! A machine of a lab site built from a site file: an appliance's or hub's namespace with a
//! host name and a filesystem of its own, as the real machine has.
//!
//! Booting a machine starts one holder process (`sleep`, a lab daemon) in a UTS and mount
//! namespace of its own, where the machine's host name is set and its `/run` and `/var/lib`
//! (directories in the lab's) and `/etc` (an overlay whose changes land in the lab's directory:
//! the site file and key in `/etc/fieldnet`, its own `resolv.conf`) are mounted, once. What runs
//! on the machine ([`Lab::spawn_on`](crate::Lab::spawn_on), [`Machine::exec`]) enters those
//! namespaces with `nsenter`, as every process of a real machine shares its host name and
//! mounts. So agents run as deployed — `/etc/fieldnet/site.toml`, found by host name, default
//! bus socket and lease store — and nothing they write reaches the host.
//! Invariant: the mounts live only in the holder's mount namespace (made by `ip netns exec`);
//! the host's mount table and files are never touched. One overlay per machine: overlayfs
//! forbids two mounts sharing an upper directory (mounting it once per process raced, and
//! failed, when a machine's agents started together).

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context;

use crate::netns::Netns;

/// The holder's mounts, in its own UTS and mount namespaces: `$2` the host name, `$3` the
/// machine's directory.
const BOOT: &str = r#"hostname "$2"
mount --bind "$3/run" /run
mount --bind "$3/var-lib" /var/lib
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$3/etc,workdir=$3/etc-work" /etc"#;

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
    /// The holder process whose namespaces the machine's processes enter.
    holder: u32,
}

impl Machine {
    /// Makes the machine's directories, with `files` (paths under `/etc`, contents: its site
    /// file, its key) in its `/etc`, and boots it: its holder is started as a daemon of `lab`.
    pub(crate) fn boot(
        lab: &mut crate::Lab,
        name: &str,
        hostname: &str,
        ns: Netns,
        files: &[(PathBuf, String)],
    ) -> anyhow::Result<Machine> {
        let root = lab.dir().join("machines").join(name);
        for dir in ["run", "var-lib", "etc", "etc-work"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let resolv = format!("# /etc/resolv.conf of lab machine {name}\n");
        let mut all = vec![(PathBuf::from("/etc/resolv.conf"), resolv)];
        all.extend(files.iter().cloned());
        // Before the overlay is mounted, its upper directory is the machine's /etc to write.
        for (path, text) in &all {
            write_atomically(&upper_path(&root, &path.display().to_string())?, text)?;
        }
        let root_arg = root.display().to_string();
        let holder = crate::holder::hold(
            lab,
            &ns,
            &["unshare", "--uts", "--"],
            BOOT,
            &[hostname, &root_arg],
            &format!("machine {name}'s /run, /var/lib and /etc"),
        )?;
        Ok(Machine {
            name: name.to_owned(),
            hostname: hostname.to_owned(),
            ns,
            root,
            holder,
        })
    }

    /// Writes `text` as the machine's file `path` (under `/etc`), as an operator copying a file
    /// onto it would: through the machine, replaced whole, so a process reading it meanwhile
    /// never sees half of it.
    pub fn put(&self, path: &str, text: &str) -> anyhow::Result<()> {
        upper_path(&self.root, path)?;
        let words = self.command(
            "sh",
            &[
                "-c",
                r#"umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1.next" && mv "$1.next" "$1""#,
                "sh",
                path,
            ],
        );
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        self.ns
            .exec_with_stdin(refs[0], &refs[1..], text.as_bytes())
            .with_context(|| format!("writing {path} on machine {}", self.name))
            .map(drop)
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

    /// `program args…` as run on this machine: the words to give `ip netns exec <ns>`, which
    /// enter the holder's mount and UTS namespaces.
    pub(crate) fn command(&self, program: &str, args: &[&str]) -> Vec<String> {
        crate::holder::enter(self.holder, true, program, args)
    }

    /// Runs `program args…` on this machine to completion (as [`Netns::exec`]).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let words = self.command(program, args);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        self.ns.exec(refs[0], &refs[1..])
    }
}

/// Where the machine's file `path` (under `/etc`) is in the overlay's upper directory.
fn upper_path(root: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(path)
        .strip_prefix("/etc")
        .with_context(|| format!("{path}: a lab machine has files under /etc only"))?;
    Ok(root.join("etc").join(relative))
}

/// Writes `target` whole (a new file renamed over it), making its directory.
fn write_atomically(target: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let next = target.with_extension("next");
    // Private, as a site key file must be (the agents refuse one others can read).
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&next)
        .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
        .and_then(|()| std::fs::rename(&next, target))
        .with_context(|| format!("writing {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_enters_the_holders_namespaces_then_runs_the_program() {
        let machine = Machine {
            name: "north".to_owned(),
            hostname: "north".to_owned(),
            ns: Netns::new("fl1-1-north".to_owned(), "north".to_owned()),
            root: PathBuf::from("/tmp/lab/machines/north"),
            holder: 4242,
        };
        let words = machine.command("whereami", &["--check-config"]);
        assert_eq!(
            words,
            [
                "nsenter",
                "--target=4242",
                "--mount",
                "--uts",
                "--",
                "whereami",
                "--check-config"
            ]
        );
    }

    #[test]
    fn files_are_put_under_etc_only() {
        let root = Path::new("/tmp/lab/machines/north");
        assert_eq!(
            upper_path(root, "/etc/fieldnet/site.toml").unwrap(),
            root.join("etc/fieldnet/site.toml")
        );
        let error = upper_path(root, "/var/lib/fieldnet/leases").unwrap_err();
        assert!(error.to_string().contains("under /etc only"), "{error}");
    }
}
