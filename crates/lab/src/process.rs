//! Long-running programs started inside lab namespaces (agents under test, `socat`...), each
//! in its own process group, with stdout and stderr in a log file in the lab's directory.
//! Invariant: a process is signalled only while its `Child` is held unreaped (so its PID and
//! process group cannot have been reused), and it is killed and reaped when the `LabProcess` or
//! its `Lab` drops, whichever comes first.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::LabError;

/// Time a process gets to exit after SIGTERM before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);

/// Shared between a [`LabProcess`] and its [`Lab`](crate::Lab), so whichever drops first
/// terminates the process and the other finds it done.
#[derive(Debug)]
pub(crate) struct ProcessSlot {
    pid: u32,
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl ProcessSlot {
    pub(crate) fn new(child: Child) -> Arc<ProcessSlot> {
        Arc::new(ProcessSlot {
            pid: child.id(),
            state: Mutex::new(SlotState {
                child: Some(child),
                status: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether it has exited, without reaping it (the zombie keeps PID and group ours).
    fn exited(&self, state: &SlotState) -> bool {
        state.child.is_none() || exited_unreaped(self.pid)
    }

    /// Sends `signal` to the process and to its process group, only while it is unreaped.
    fn signal(&self, state: &SlotState, signal: libc::c_int) {
        if state.child.is_some() {
            signal_group(self.pid, signal);
        }
    }

    /// Reaps an exited child, after killing anything left in its process group.
    fn reap(&self, state: &mut SlotState) {
        self.signal(state, libc::SIGKILL);
        if let Some(mut child) = state.child.take() {
            state.status = child.wait().ok();
        }
    }

    /// Starts termination: SIGTERM to the process group. Returns false if already exited.
    pub(crate) fn begin_terminate(&self) -> bool {
        let mut state = self.lock();
        if self.exited(&state) {
            self.reap(&mut state);
            return false;
        }
        self.signal(&state, libc::SIGTERM);
        true
    }

    /// Waits until `deadline` for the process to exit, then SIGKILLs it, and reaps it.
    pub(crate) fn finish_terminate(&self, deadline: Instant) -> Option<ExitStatus> {
        let mut state = self.lock();
        while !self.exited(&state) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.reap(&mut state);
        state.status
    }

    fn terminate(&self) -> Option<ExitStatus> {
        self.begin_terminate();
        self.finish_terminate(Instant::now() + TERM_GRACE)
    }

    /// SIGKILL to the process group at once (no chance to clean up), then reaps it.
    fn kill_now(&self) -> Option<ExitStatus> {
        let mut state = self.lock();
        self.reap(&mut state);
        state.status
    }

    /// Sends `signal` to the process alone, while it runs.
    fn signal_process(&self, signal: libc::c_int) -> bool {
        let state = self.lock();
        if state.child.is_none() || self.exited(&state) {
            return false;
        }
        // SAFETY: kill(2) on our own unreaped child, whose PID cannot have been reused.
        unsafe { libc::kill(self.pid as libc::pid_t, signal) == 0 }
    }
}

/// Whether our unreaped child `pid` has exited, leaving it waitable (`WNOWAIT`), so its PID and
/// process group cannot be reused until we reap it.
pub(crate) fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writing; WNOHANG|WNOWAIT neither blocks nor reaps.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        // ECHILD: not waitable (already reaped); nothing is left to wait for.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
    }
    // SAFETY: waitid filled `info`, or left it zeroed, meaning "not exited yet".
    unsafe { info.si_pid() != 0 }
}

/// Sends `signal` to process `pid` and to the process group it leads. Callers guarantee `pid` is
/// their unreaped child, so neither can have been reused by an unrelated process.
pub(crate) fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: plain kill(2) calls on a PID and process group we own; ESRCH is harmless.
    unsafe {
        libc::kill(-pid, signal);
        libc::kill(pid, signal);
    }
}

/// A program running inside a lab namespace. Dropping it sends SIGTERM to its process group,
/// SIGKILL after 2 s, and reaps it.
#[derive(Debug)]
pub struct LabProcess {
    slot: Arc<ProcessSlot>,
    ns: String,
    program: String,
    log_path: PathBuf,
}

impl LabProcess {
    pub(crate) fn new(
        slot: Arc<ProcessSlot>,
        ns: String,
        program: String,
        log_path: PathBuf,
    ) -> LabProcess {
        LabProcess {
            slot,
            ns,
            program,
            log_path,
        }
    }

    /// Its process ID (also its process group ID).
    pub fn pid(&self) -> u32 {
        self.slot.pid
    }

    /// CPU time it has used so far, user plus system, all threads (from `/proc/<pid>/stat`).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat of {}", self.program))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let tick = |index: usize| -> anyhow::Result<u64> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .with_context(|| format!("/proc/{pid}/stat has no field {index}: {stat}"))
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok((tick(11)? + tick(12)?) as f64 / hz)
    }

    /// The file its stdout and stderr go to, inside [`Lab::dir`](crate::Lab::dir).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it has written so far (lossy UTF-8); a note instead if the log is unreadable.
    pub fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("(log {} unreadable: {error})", self.log_path.display()),
        }
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        let state = self.slot.lock();
        !self.slot.exited(&state)
    }

    /// Its exit status once it has exited (reaping it), `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut state = self.slot.lock();
        if self.slot.exited(&state) {
            if let Some(mut child) = state.child.take() {
                state.status = child.wait().ok();
            }
            state.status
        } else {
            None
        }
    }

    /// Waits up to `timeout` for it to exit by itself and returns its status.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            if self.slot.lock().child.is_none() {
                anyhow::bail!(
                    "in namespace {}: exit status of `{}` (pid {}) was lost",
                    self.ns,
                    self.program,
                    self.pid()
                );
            }
            if started.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    ns: self.ns.clone(),
                    what: format!("`{}` (pid {}) to exit", self.program, self.pid()),
                    after: timeout,
                }
                .into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls its log until it contains `needle` (readiness line), failing after `timeout` or if
    /// the process exits first; the error carries the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(());
            }
            if !self.is_running() {
                anyhow::bail!(
                    "in namespace {}: `{}` (pid {}) exited before logging {needle:?}; log:\n{log}",
                    self.ns,
                    self.program,
                    self.pid()
                );
            }
            if started.elapsed() >= timeout {
                return Err(anyhow::Error::new(LabError::Timeout {
                    ns: self.ns.clone(),
                    what: format!("`{}` to log {needle:?}", self.program),
                    after: timeout,
                }))
                .with_context(|| format!("log so far:\n{log}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL at once, as a power cut would (no shutdown path runs), and returns
    /// its exit status.
    pub fn kill_now(&self) -> anyhow::Result<ExitStatus> {
        self.slot.kill_now().with_context(|| {
            format!(
                "in namespace {}: no exit status for `{}` (pid {})",
                self.ns,
                self.program,
                self.pid()
            )
        })
    }

    /// Sends `signal` (e.g. `libc::SIGUSR1`) to it alone; an error if it is no longer running.
    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.slot.signal_process(signal),
            "in namespace {}: `{}` (pid {}) is not running to receive signal {signal}",
            self.ns,
            self.program,
            self.pid()
        );
        Ok(())
    }

    /// Terminates it now (SIGTERM, SIGKILL after 2 s) and returns its exit status.
    pub fn kill(&self) -> anyhow::Result<ExitStatus> {
        self.slot.terminate().with_context(|| {
            format!(
                "in namespace {}: no exit status for `{}` (pid {})",
                self.ns,
                self.program,
                self.pid()
            )
        })
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.slot.terminate();
    }
}
