//! Errors the lab returns, as a matchable enum wrapped in `anyhow::Error` by the public API.
//! Invariant: every variant names the namespace (or lab) and the command or resource involved.

use std::time::Duration;

/// What went wrong in the lab. Public functions return `anyhow::Result`; callers that need to
/// react to a kind of failure use `err.downcast_ref::<LabError>()`.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab cannot run here (not root, no permission to create network namespaces, `ip`
    /// missing). Tests skip on this unless `FIELDNET_LAB_REQUIRED=1`.
    #[error("{0}")]
    Unavailable(String),
    /// An external tool ran but exited with failure.
    #[error("in namespace {ns}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// Namespace the command ran in (`-` for the host's, only used for `ip netns` itself).
        ns: String,
        /// The command line, for the reader.
        command: String,
        /// Exit status as printed by the OS.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// An external tool could not be started at all.
    #[error("in namespace {ns}: cannot start `{command}`: {source}")]
    Spawn {
        /// Namespace the command was meant to run in.
        ns: String,
        /// The command line.
        command: String,
        /// Why the OS refused.
        source: std::io::Error,
    },
    /// An external tool or a wait did not finish in time.
    #[error("in namespace {ns}: `{what}` did not finish within {after:?}")]
    Timeout {
        /// Namespace concerned.
        ns: String,
        /// What was waited for.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A namespace, interface or table name the lab would reject or the kernel would truncate.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "namespace", "interface", ...
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `ping` produced no summary line to parse.
    #[error("in namespace {ns}: no ping summary in output of `ping {target}`: {output}")]
    PingOutput {
        /// Namespace ping ran in.
        ns: String,
        /// Target pinged.
        target: String,
        /// Its stdout and stderr.
        output: String,
    },
}
