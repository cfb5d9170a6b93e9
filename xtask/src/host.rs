//! What CI checks the tests left alone on the host: `/etc/resolv.conf`, `/etc/hosts`, and the
//! host namespace's interfaces, addresses and routes. Taken before the tests, compared after;
//! a difference names what changed.

use std::process::Command;

use anyhow::Context as _;

/// One part of the host's state, as text that stays the same while nothing changes it.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    name: &'static str,
    text: String,
}

/// The host's state at one moment.
#[derive(Debug)]
pub struct Snapshot {
    parts: Vec<Part>,
}

impl Snapshot {
    pub fn take() -> anyhow::Result<Snapshot> {
        let file = |path: &'static str| -> anyhow::Result<Part> {
            let text = match std::fs::read(path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => "(absent)".into(),
                Err(error) => return Err(error).with_context(|| format!("reading {path}")),
            };
            Ok(Part { name: path, text })
        };
        let ip = |name: &'static str, args: &[&str]| -> anyhow::Result<Part> {
            let output = Command::new("ip")
                .args(args)
                .output()
                .with_context(|| format!("running ip {}", args.join(" ")))?;
            anyhow::ensure!(
                output.status.success(),
                "ip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(Part {
                name,
                text: steady(&String::from_utf8_lossy(&output.stdout)),
            })
        };
        // What `ip netns exec` would mount over /etc: the lab's namespaces' own files, gone with
        // them (an empty /etc/netns counts as none).
        let netns_etc = Part {
            name: "/etc/netns (namespaces' own /etc files)",
            text: match std::fs::read_dir("/etc/netns") {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .flatten()
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    names.join("\n")
                }
                Err(_) => String::new(),
            },
        };
        Ok(Snapshot {
            parts: vec![
                file("/etc/resolv.conf")?,
                file("/etc/hosts")?,
                netns_etc,
                ip(
                    "the host's interfaces (ip -o link)",
                    &["-o", "link", "show"],
                )?,
                ip("the host's addresses (ip -o addr)", &["-o", "addr", "show"])?,
                ip(
                    "the host's IPv4 routes (ip route show table all)",
                    &["-4", "route", "show", "table", "all"],
                )?,
                ip(
                    "the host's IPv6 routes (ip -6 route show table all)",
                    &["-6", "route", "show", "table", "all"],
                )?,
            ],
        })
    }

    /// Err naming every part that differs now from when `self` was taken.
    pub fn unchanged(&self) -> anyhow::Result<()> {
        let now = Snapshot::take()?;
        let changed = changed(self, &now);
        anyhow::ensure!(
            changed.is_empty(),
            "the tests changed the host: {}",
            changed.join("; ")
        );
        Ok(())
    }
}

/// Each part of `before` that `after` holds differently, with its first differing line.
fn changed(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    before
        .parts
        .iter()
        .zip(&after.parts)
        .filter(|(old, new)| old != new)
        .map(|(old, new)| {
            let first = old
                .text
                .lines()
                .zip(new.text.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!(" (was '{a}', now '{b}')"))
                .unwrap_or_default();
            format!("{} changed{first}", old.name)
        })
        .collect()
}

/// `ip` output without what changes by itself: address lifetimes counting down, route expiry
/// timers, link statistics.
fn steady(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        let mut kept = Vec::new();
        while let Some(word) = words.next() {
            if matches!(word, "valid_lft" | "preferred_lft" | "expires") {
                words.next();
                continue;
            }
            if word == "\\" {
                continue;
            }
            kept.push(word);
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_not_changes_but_a_rewritten_file_is() {
        let addresses = |left: &str| Part {
            name: "addresses",
            text: steady(&format!(
                "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global dynamic eth0\\       valid_lft {left}sec preferred_lft {left}sec\n"
            )),
        };
        let resolv = |text: &str| Part {
            name: "/etc/resolv.conf",
            text: text.to_owned(),
        };
        let before = Snapshot {
            parts: vec![resolv("nameserver 10.0.0.1\n"), addresses("86000")],
        };
        let later = Snapshot {
            parts: vec![resolv("nameserver 10.0.0.1\n"), addresses("85000")],
        };
        assert_eq!(changed(&before, &later), Vec::<String>::new());
        let broken = Snapshot {
            parts: vec![resolv("# Generated by dhcpcd\n"), addresses("85000")],
        };
        assert_eq!(
            changed(&before, &broken),
            ["/etc/resolv.conf changed (was 'nameserver 10.0.0.1', now '# Generated by dhcpcd')"]
        );
    }
}
