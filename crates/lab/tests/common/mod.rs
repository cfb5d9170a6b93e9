//! Helpers shared by the lab's own tests: a two-namespace veth lab and namespace listings.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use lab::{Lab, Netns};

/// Address of side A of [`pair`].
pub const A_ADDR: &str = "10.0.0.1";
/// Address of side B of [`pair`].
pub const B_ADDR: &str = "10.0.0.2";
/// Generous bound for reachability polling on a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Two namespaces `a` and `b` joined by veth `va` <-> `vb`, 10.0.0.1/24 and 10.0.0.2/24,
/// reachable from each other.
pub fn pair(lab: &mut Lab) -> (Netns, Netns) {
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    lab.veth(&a, "va", &b, "vb").unwrap();
    lab.addr(&a, "va", &format!("{A_ADDR}/24")).unwrap();
    lab.addr(&b, "vb", &format!("{B_ADDR}/24")).unwrap();
    a.wait_reachable(B_ADDR, SETTLE).unwrap();
    (a, b)
}

/// Names `ip netns list` shows, without the `(id: N)` suffix.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    netns_list()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect()
}
