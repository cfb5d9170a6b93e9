//! Running the external tools the lab drives (`ip`, `nft`, `tc`, `ping`, anything a test asks
//! for) with captured output and a time limit.
//! Invariant: every child started here has been reaped when the function returns, also on
//! timeout, so no zombie or orphan outlives the call.

use std::io::{Read, Write as _};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::LabError;
use crate::process::{exited_unreaped, signal_group};

/// Default limit for one command; generous because a loaded CI machine can be very slow.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait, after a command exited, for the rest of its output.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// A printable form of the command line, for errors.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` in a process group of its own to completion and returns its output whatever
/// its exit status; fails only when it cannot start or exceeds `timeout`. Either way the group
/// is killed and the command reaped before returning.
pub(crate) fn output(
    ns: &str,
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let shown = describe(&command);
    command
        .process_group(0)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| LabError::Spawn {
        ns: ns.to_owned(),
        command: shown.clone(),
        source,
    })?;
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // On its own thread, so a child that does not read cannot block us past the timeout.
        // A child that exits without reading makes the write fail (EPIPE); its stderr says why.
        let input = input.to_vec();
        thread::spawn(move || pipe.write_all(&input));
    }

    let pid = child.id();
    let started = Instant::now();
    let mut pause = Duration::from_micros(200);
    let mut timed_out = false;
    // Poll without reaping, so the process group is still ours when we clean it up.
    while !exited_unreaped(pid) {
        if started.elapsed() >= timeout {
            timed_out = true;
            break;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    // Whatever the command left running in its group (`sh -c 'x &'`) goes with it.
    signal_group(pid, libc::SIGKILL);
    let status = child
        .wait()
        .with_context(|| format!("in namespace {ns}: waiting for `{shown}`"))?;
    let status = if timed_out { None } else { Some(status) };
    let stdout = stdout.map(collect).unwrap_or_default();
    let stderr = stderr.map(collect).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(LabError::Timeout {
            ns: ns.to_owned(),
            what: shown,
            after: timeout,
        }
        .into()),
    }
}

/// Like [`output`], but a failing exit status is an error carrying the command's stderr.
pub(crate) fn checked(
    ns: &str,
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let shown = describe(&command);
    let out = output(ns, command, stdin, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::CommandFailed {
            ns: ns.to_owned(),
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
        .into())
    }
}

/// Collects a pipe on its own thread; the result arrives on the returned channel.
fn reader(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        let _ = sender.send(buffer);
    });
    receiver
}

/// The collected output, or what is known to be missing: a command that left a background
/// child holding its stdout (`sh -c 'daemon &'`) must not make us wait for that child.
fn collect(receiver: mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    receiver
        .recv_timeout(PIPE_GRACE)
        .unwrap_or_else(|_| b"(output still held open by a background process)".to_vec())
}

/// True when an error from a lab command means the thing to undo is already gone (namespace
/// deleted, interface removed, table or qdisc absent), which teardown treats as success.
pub(crate) fn is_already_gone(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    [
        "Cannot find device",
        "No such file or directory",
        "does not exist",
        "Cannot open network namespace",
        "Cannot delete qdisc with handle of zero",
        "No such device",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
