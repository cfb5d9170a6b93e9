//! The lease log: every lease change appended to one file and made durable (`fdatasync`)
//! before the client is told; rewritten from the live records when it has grown.
//!
//! Why a log of our own and not SQLite: a lease change is one small record that is only ever
//! appended, and the whole table is read once at start and then lives in memory; an append
//! plus one `fdatasync` per batch (group commit) is the least work the disk can do for
//! "stored before acknowledged", needs no C library, and recovery is a scan. docs/dhcp.md has
//! the longer reasoning.
//!
//! Record: length (u32 LE) · CRC-32 of the body (u32 LE) · body (one JSON lease). A crash can
//! only leave a torn record at the end, since records are only appended and each batch is
//! synced before the next is acknowledged; opening cuts the file back to the last whole record.
//! Compaction writes the live records to a new file, syncs it, renames it over the log and
//! syncs the directory: at every instant one complete log is on disk. If that last step fails,
//! nothing more is appended (and so nothing more acknowledged) until the log is opened again.
//! The lock that keeps a second process out is on the directory, so it does not move when the
//! file is replaced.
//!
//! Invariant: every record `append` returned Ok for is read back by `open` after any crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::lease::Lease;

const LOG: &str = "leases.log";
const COMPACTING: &str = "leases.log.new";
const HEADER: usize = 8;
/// No lease record comes near this; a larger length is a torn or foreign file.
const MAX_RECORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: another process is using this lease store")]
    Locked { path: PathBuf },
}

#[derive(Debug)]
pub struct LeaseLog {
    dir: PathBuf,
    file: File,
    /// Records in the file (since the last compaction, plus what that wrote).
    records: usize,
    /// Set when a compaction replaced the file but could not make that durable.
    poisoned: bool,
    /// The directory, `flock`ed for as long as this log is open.
    _lock: File,
}

impl LeaseLog {
    /// Opens (or creates) the store in `dir`, returning every stored record in order and how
    /// many bytes of a torn last record were cut off.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Lease>, u64), StoreError> {
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail(dir))?;
        let lock = File::open(dir).map_err(fail(dir))?;
        // SAFETY: flock on a descriptor we own; the result is checked.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
            });
        }
        let path = dir.join(LOG);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(fail(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(fail(&path))?;
        let (leases, good) = parse(&bytes);
        let torn_bytes = (bytes.len() - good) as u64;
        if good < bytes.len() {
            file.set_len(good as u64).map_err(fail(&path))?;
            file.sync_all().map_err(fail(&path))?;
        }
        file.seek(io::SeekFrom::End(0)).map_err(fail(&path))?;
        let _ = std::fs::remove_file(dir.join(COMPACTING));
        Ok((
            Self {
                dir: dir.to_owned(),
                file,
                records: leases.len(),
                poisoned: false,
                _lock: lock,
            },
            leases,
            torn_bytes,
        ))
    }

    /// Appends `leases` and makes them durable; when this returns Ok they survive any crash.
    pub fn append(&mut self, leases: &[Lease]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "the lease log was replaced but the directory could not be synced; restart to reopen it",
            ));
        }
        let mut buffer = Vec::with_capacity(leases.len() * 256);
        for lease in leases {
            encode(lease, &mut buffer);
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.records += leases.len();
        Ok(())
    }

    /// Replaces the log with `live`, atomically.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a Lease>) -> io::Result<()> {
        let mut buffer = Vec::new();
        let mut count = 0;
        for lease in live {
            encode(lease, &mut buffer);
            count += 1;
        }
        let new_path = self.dir.join(COMPACTING);
        let _ = std::fs::remove_file(&new_path);
        let mut new = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&new_path)?;
        new.write_all(&buffer)?;
        new.sync_all()?;
        // Until the rename the old log is whole and still the one appended to.
        std::fs::rename(&new_path, self.dir.join(LOG))?;
        self.file = new;
        self.records = count;
        if let Err(error) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            self.poisoned = true;
            return Err(error);
        }
        Ok(())
    }

    /// Records in the file.
    pub fn records(&self) -> usize {
        self.records
    }
}

/// Whether a log of `records` holds so many superseded ones, against `live` current records,
/// that rewriting it is worth it.
pub fn worth_compacting(records: usize, live: usize) -> bool {
    records > 10_000 && records > 4 * live
}

fn encode(lease: &Lease, buffer: &mut Vec<u8>) {
    let body = serde_json::to_vec(lease).expect("a lease always serializes");
    buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    buffer.extend_from_slice(&body);
}

/// The whole records at the start of `bytes`, and where they end.
fn parse(bytes: &[u8]) -> (Vec<Lease>, usize) {
    let mut leases = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if length > MAX_RECORD || bytes.len() - at - HEADER < length {
            break;
        }
        let body = &bytes[at + HEADER..at + HEADER + length];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(lease) = serde_json::from_slice::<Lease>(body) else {
            break;
        };
        leases.push(lease);
        at += HEADER + length;
    }
    (leases, at)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::lease::{ClientId, LeaseState, Mac};

    fn lease(last: u8, updated: u64) -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 101, 0, last),
            network: "NETWORK1".to_owned(),
            client: ClientId(vec![1, 2, 0, 0, 0, 0, last]),
            mac: Mac([2, 0, 0, 0, 0, last]),
            hostname: Some(format!("host-{last}")),
            class: None,
            state: LeaseState::Bound,
            expires: updated + 3_600_000,
            updated,
            issued_by: 1,
        }
    }

    #[test]
    fn appended_records_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, found, _) = LeaseLog::open(dir.path()).unwrap();
        assert!(found.is_empty());
        log.append(&[lease(10, 1), lease(11, 2)]).unwrap();
        log.append(&[lease(10, 3)]).unwrap();
        drop(log);
        let (_, found, torn_bytes) = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(found, vec![lease(10, 1), lease(11, 2), lease(10, 3)]);
        assert_eq!(torn_bytes, 0);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = LeaseLog::open(dir.path()).unwrap();
        log.append(&[lease(10, 1), lease(11, 2)]).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let whole = std::fs::read(&path).unwrap();
        // Every possible cut inside the second record leaves exactly the first.
        let first_len = HEADER + serde_json::to_vec(&lease(10, 1)).unwrap().len();
        for cut in first_len..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (mut log, found, torn_bytes) = LeaseLog::open(dir.path()).unwrap();
            assert_eq!(found, vec![lease(10, 1)], "cut at {cut}");
            assert_eq!(torn_bytes, (cut - first_len) as u64);
            // Appending after recovery gives a clean log.
            log.append(&[lease(12, 3)]).unwrap();
            drop(log);
            let (_, found, _) = LeaseLog::open(dir.path()).unwrap();
            assert_eq!(found, vec![lease(10, 1), lease(12, 3)]);
        }
        // A flipped bit in the last record: cut there too.
        let mut flipped = whole.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let (_, found, _) = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(found, vec![lease(10, 1)]);
    }

    #[test]
    fn compaction_keeps_only_the_live_records_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = LeaseLog::open(dir.path()).unwrap();
        for updated in 0..50 {
            log.append(&[lease(10, updated), lease(11, updated)])
                .unwrap();
        }
        assert_eq!(log.records(), 100);
        let live = [lease(10, 49), lease(11, 49)];
        log.compact(live.iter()).unwrap();
        log.append(&[lease(12, 60)]).unwrap();
        drop(log);
        let (log, found, _) = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(found, vec![lease(10, 49), lease(11, 49), lease(12, 60)]);
        assert_eq!(log.records(), 3);
    }

    #[test]
    fn a_second_process_on_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, _, _) = LeaseLog::open(dir.path()).unwrap();
        assert!(matches!(
            LeaseLog::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }
}
