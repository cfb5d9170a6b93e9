//! Running commands from xtask, loudly, from the workspace root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

/// Prints a step heading the way CI logs read best.
pub fn step(title: &str) {
    println!("\n==> {title}");
}

/// Runs a command in the workspace root, inheriting output; fails if it exits non-zero.
pub fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    cmd_with(Command::new(program).args(args))
}

pub fn cmd_with(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    println!("$ {}", shown.replace('"', ""));
    let status = command
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed with {status}");
    Ok(())
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
