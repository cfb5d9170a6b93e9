//! `clean_stale` removes labs whose process is dead and leaves live ones alone.
//! One test only: a second test calling `clean_stale` in parallel would remove this test's
//! hand-made stale namespace under it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{SETTLE, netns_list};
use lab::{Lab, clean_stale};

/// Deletes a hand-made namespace, and kills the process started in it, if the test fails
/// before `clean_stale` does.
struct Stale {
    name: String,
    orphan: Option<Child>,
}

impl Drop for Stale {
    fn drop(&mut self) {
        if let Some(mut orphan) = self.orphan.take() {
            let _ = orphan.kill();
            let _ = orphan.wait();
        }
        if netns_list().contains(&self.name) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .status();
        }
        // A namespace the lab made has its own /etc/netns/<name> (its resolv.conf).
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

#[test]
fn clean_stale_removes_dead_labs_only() {
    let Some(mut lab) = Lab::for_test("clean") else {
        return;
    };
    let live = lab.netns("live").unwrap();
    let mut kept_lab = Lab::new("kept").unwrap();
    let kept = kept_lab.netns("kept").unwrap();
    let kept_dir = kept_lab.dir().to_owned();
    let kept_prefix = kept_lab.keep();
    let _remove_kept = Stale {
        name: kept.name().to_owned(),
        orphan: None,
    };
    assert!(kept.exists() && kept_dir.exists());

    // Above PID_MAX_LIMIT (4194304), so this creator can never be alive.
    let dead_pid = 4_194_305 + std::process::id();
    let mut stale = Stale {
        name: format!("fl{dead_pid}-1-stale"),
        orphan: None,
    };
    let added = Command::new("ip")
        .args(["netns", "add", &stale.name])
        .status()
        .unwrap();
    assert!(added.success());
    let orphan = Command::new("ip")
        .args(["netns", "exec", &stale.name, "sleep", "120"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let orphan_pid = orphan.id().to_string();
    stale.orphan = Some(orphan);
    // Poll until the orphan is really inside (ip netns exec has exec'd sleep).
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", &stale.name])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|pid| pid == orphan_pid)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphan never entered {}",
            stale.name
        );
        std::thread::yield_now();
    }
    let stale_dir = std::env::temp_dir().join(format!("fieldnet-lab-fl{dead_pid}-1-stale-x"));
    std::fs::create_dir_all(&stale_dir).unwrap();

    let removed = clean_stale().unwrap();
    assert!(removed.contains(&stale.name), "{removed:?}");
    assert!(!netns_list().contains(&stale.name));
    assert!(!stale_dir.exists());
    let status = stale.orphan.take().unwrap().wait().unwrap();
    assert!(!status.success(), "the process inside was killed: {status}");

    // Labs of a live process stay, kept or not.
    assert!(!removed.iter().any(|name| name.starts_with(lab.prefix())));
    assert!(!removed.iter().any(|name| name.starts_with(&kept_prefix)));
    assert!(live.exists() && lab.dir().exists());
    assert!(kept.exists() && kept_dir.exists());

    // The guard removes the kept lab's namespace, as `clean --all` would.
    std::fs::remove_dir_all(kept_dir).unwrap();
}
