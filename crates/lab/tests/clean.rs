//! `clean_stale` removes labs whose process is dead and leaves live ones alone.

mod common;

use std::process::{Command, Stdio};

use common::netns_list;
use lab::{Lab, clean_stale};

/// Deletes a hand-made namespace if the test fails before `clean_stale` does.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        if netns_list().contains(&self.0) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
}

#[test]
fn clean_stale_removes_dead_labs_only() {
    let Some(mut lab) = Lab::for_test("clean") else {
        return;
    };
    let live = lab.netns("live").unwrap();

    // Above PID_MAX_LIMIT (4194304), so this creator can never be alive.
    let dead_pid = 4_194_305 + std::process::id();
    let stale = format!("fl{dead_pid}-1-stale");
    let _remove = Remove(stale.clone());
    let added = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(added.success());
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "120"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the orphan is really inside (ip netns exec has exec'd sleep).
    let deadline = std::time::Instant::now() + common::SETTLE;
    loop {
        let out = Command::new("ip")
            .args(["netns", "pids", &stale])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&orphan.id().to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orphan never entered {stale}"
        );
        std::thread::yield_now();
    }

    let stale_dir = std::env::temp_dir().join(format!("fieldnet-lab-fl{dead_pid}-1-stale-x"));
    std::fs::create_dir_all(&stale_dir).unwrap();

    let removed = clean_stale().unwrap();
    assert!(!stale_dir.exists());
    assert!(lab.dir().exists());
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!removed.iter().any(|name| name.starts_with(lab.prefix())));
    assert!(!netns_list().contains(&stale));
    assert!(live.exists());
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "the process inside was killed: {status}");
}

#[test]
fn a_kept_lab_survives_until_cleaned() {
    let Some(mut lab) = Lab::for_test("keep") else {
        return;
    };
    let ns = lab.netns("kept").unwrap();
    let dir = lab.dir().to_owned();
    let prefix = lab.keep();
    assert!(ns.exists() && dir.exists());
    assert!(prefix.starts_with("fl"));
    // This process is alive, so clean_stale must leave it; remove it by hand like `clean --all`.
    assert!(!clean_stale().unwrap().contains(&ns.name().to_owned()));
    let status = Command::new("ip")
        .args(["netns", "delete", ns.name()])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir).unwrap();
}
