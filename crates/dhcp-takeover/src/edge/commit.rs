//! The lease log's committer: a thread of its own that takes every lease queued for the disk,
//! stores them with one sync (a group commit) and hands the batch back to the agent, which
//! acknowledges the requests waiting on it only then.
//!
//! Invariant: a batch comes back with the result of its one append; a compaction rewrites the
//! log only from records the agent says are live, and never when an append failed since it
//! was asked for (that snapshot may hold records never stored).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::decide::Reply;
use crate::edge::store::LeaseLog;
use crate::lease::Lease;
use crate::peer::Synced;

/// Most records in one group commit.
pub(crate) const MAX_BATCH: usize = 1024;
/// Under load (a lease queued within this long of the previous sync's end), the committer
/// waits this long for more leases, so one sync covers them (PostgreSQL's `commit_delay`).
/// On a fast disk each sync costs the server more CPU than the leases it stores; a lone lease
/// never waits.
pub(crate) const COMMIT_DELAY: Duration = Duration::from_millis(1);

/// Work for the committer thread.
// Store is the one sent per lease; boxing it to shrink the rare Compact would cost an
// allocation per lease for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Job {
    /// A lease on its way to the disk, with the reply that waits for it.
    Store { lease: Lease, reply: Option<Reply> },
    /// Rewrite the log from these live records (everything queued before is in them).
    Compact(Vec<Lease>),
    /// Everything pulled from a peer up to this change is queued before this mark: once the
    /// batch holding it is durable, so is all of that.
    Mark(Synced),
}

/// A batch back from the committer.
pub(crate) struct Committed {
    pub stored: Vec<(Lease, Option<Reply>)>,
    pub marks: Vec<Synced>,
    pub result: std::io::Result<()>,
    pub seconds: f64,
    /// Records in the log file now.
    pub log_records: usize,
    /// Whether this batch ended with a compaction (done or failed).
    pub compacted: bool,
}

/// The committer thread: takes every queued lease, stores them with one sync and hands the
/// batch back; a compaction job (sent by the agent, which holds the live records) rewrites the
/// log after the leases queued before it.
pub(crate) fn commit_loop(
    mut log: LeaseLog,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Committed>,
) {
    let mut next = jobs.recv().ok();
    let mut last_sync_end: Option<Instant> = None;
    // An append failed since the last compaction: a snapshot taken meanwhile may hold records
    // that were never stored, so that compaction is skipped (the agent asks again later).
    let mut failed_since_compaction = false;
    while let Some(first) = next.take() {
        if last_sync_end.is_some_and(|end| end.elapsed() < COMMIT_DELAY) {
            // Sleeping, not waiting on the queue: each lease queued meanwhile would wake us.
            std::thread::sleep(COMMIT_DELAY);
        }
        let mut stored = Vec::new();
        let mut marks = Vec::new();
        let mut compaction = None;
        let mut job = Some(first);
        while let Some(current) = job.take() {
            match current {
                Job::Store { lease, reply } => stored.push((lease, reply)),
                Job::Mark(mark) => marks.push(mark),
                Job::Compact(live) => {
                    compaction = Some(live);
                    break;
                }
            }
            if stored.len() < MAX_BATCH {
                job = jobs.try_recv().ok();
            }
        }
        let records: Vec<Lease> = stored.iter().map(|(lease, _)| lease.clone()).collect();
        let started = Instant::now();
        let result = if records.is_empty() {
            Ok(())
        } else {
            log.append(&records)
        };
        let seconds = started.elapsed().as_secs_f64();
        if !records.is_empty() {
            last_sync_end = Some(Instant::now());
        }
        failed_since_compaction |= result.is_err();
        let compacted = compaction.is_some();
        if let Some(live) = compaction {
            if failed_since_compaction {
                tracing::info!("compaction skipped: an append failed since it was asked for");
            } else if let Err(error) = log.compact(live.iter()) {
                tracing::warn!(%error, "compacting the lease log (it keeps growing; nothing is lost)");
            }
            failed_since_compaction = false;
        }
        let batch = Committed {
            stored,
            marks,
            result,
            seconds,
            log_records: log.records(),
            compacted,
        };
        if done.send(batch).is_err() {
            return;
        }
        next = jobs.recv().ok();
    }
}
