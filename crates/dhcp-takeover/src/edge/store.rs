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
//! A batch whose write or sync fails (a full disk) is cut off again before anything else is
//! appended, so no partial record ever sits in front of acknowledged ones. Should a bad stretch
//! still turn up before whole records (a damaged disk), opening keeps every whole record after
//! it, saves the damaged file beside the log and reports it: nothing is ever cut silently.
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
/// Where a log found damaged before whole records is kept, as it was.
const DAMAGED: &str = "leases.log.damaged";
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

/// What opening the log found.
#[derive(Debug)]
pub struct Opened {
    pub log: LeaseLog,
    /// Every stored record, in order.
    pub leases: Vec<Lease>,
    /// Bytes of a torn last record cut off (a crash during an unacknowledged write).
    pub torn_bytes: u64,
    /// Bad bytes found before whole records, if any: never expected, always reported.
    pub damage: Option<Damage>,
}

/// A bad stretch of the log followed by whole records: the records were all kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the first bad byte is.
    pub offset: u64,
    /// Bad bytes skipped, in all.
    pub bad_bytes: u64,
    /// Whole records found after the first bad byte (kept).
    pub records_after: usize,
    /// The damaged file, kept as it was.
    pub saved_as: PathBuf,
}

#[derive(Debug)]
pub struct LeaseLog {
    dir: PathBuf,
    file: File,
    /// Records in the file (since the last compaction, plus what that wrote).
    records: usize,
    /// The file's length up to its last durable record: what a failed append is cut back to.
    durable_len: u64,
    /// A failed append could not be cut back yet: it is, before anything else is appended.
    needs_cut: bool,
    /// Set when a compaction replaced the file but could not make that durable.
    poisoned: bool,
    /// Tests: the next append writes this many bytes, then fails as a full disk does.
    #[cfg(test)]
    fail_next_after: Option<usize>,
    /// The directory, `flock`ed for as long as this log is open.
    _lock: File,
}

impl LeaseLog {
    /// Opens (or creates) the store in `dir`, reading every stored record.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
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
        let _ = std::fs::remove_file(dir.join(COMPACTING));
        let scan = scan(&bytes);
        let mut log = Self {
            dir: dir.to_owned(),
            file,
            records: scan.leases.len(),
            durable_len: scan.good_end as u64,
            needs_cut: false,
            poisoned: false,
            #[cfg(test)]
            fail_next_after: None,
            _lock: lock,
        };
        let mut damage = None;
        if let Some((offset, bad_bytes, records_after)) = scan.damage {
            // Keep the damaged file as it was (a second name for it), then write the whole
            // records to a clean log in its place.
            let saved_as = dir.join(DAMAGED);
            let _ = std::fs::remove_file(&saved_as);
            std::fs::hard_link(&path, &saved_as).map_err(fail(&saved_as))?;
            log.compact(scan.leases.iter()).map_err(fail(&path))?;
            damage = Some(Damage {
                offset: offset as u64,
                bad_bytes: bad_bytes as u64,
                records_after,
                saved_as,
            });
        } else if scan.good_end < bytes.len() {
            log.file
                .set_len(scan.good_end as u64)
                .map_err(fail(&path))?;
            log.file.sync_all().map_err(fail(&path))?;
        }
        log.file.seek(io::SeekFrom::End(0)).map_err(fail(&path))?;
        Ok(Opened {
            log,
            leases: scan.leases,
            torn_bytes: if damage.is_some() {
                0
            } else {
                (bytes.len() - scan.good_end) as u64
            },
            damage,
        })
    }

    /// Appends `leases` and makes them durable; when this returns Ok they survive any crash.
    /// When it fails, what it wrote is cut off again (now, or before the next append), so the
    /// log never holds a partial record in front of later ones.
    pub fn append(&mut self, leases: &[Lease]) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "the lease log was replaced but the directory could not be synced; restart to reopen it",
            ));
        }
        if self.needs_cut {
            self.cut_back()?;
        }
        let mut buffer = Vec::with_capacity(leases.len() * 256);
        for lease in leases {
            encode(lease, &mut buffer);
        }
        match self.write_synced(&buffer) {
            Ok(()) => {
                self.durable_len += buffer.len() as u64;
                self.records += leases.len();
                Ok(())
            }
            Err(error) => {
                if self.cut_back().is_err() {
                    self.needs_cut = true;
                }
                Err(error)
            }
        }
    }

    /// Writes `buffer` at the end and syncs it.
    fn write_synced(&mut self, buffer: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(written) = self.fail_next_after.take() {
            self.file.write_all(&buffer[..written.min(buffer.len())])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all(buffer)?;
        self.file.sync_data()
    }

    /// Cuts the file back to its last durable record and makes that durable.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.durable_len)?;
        self.file.sync_data()?;
        self.needs_cut = false;
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
        self.durable_len = buffer.len() as u64;
        self.needs_cut = false;
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

/// What a log's bytes hold.
struct Scan {
    /// Every whole record, in order (those after a bad stretch too).
    leases: Vec<Lease>,
    /// Where the whole records at the start end.
    good_end: usize,
    /// A bad stretch with whole records after it: where it starts, bad bytes in all, and the
    /// records after it.
    damage: Option<(usize, usize, usize)>,
}

/// Reads the whole records of `bytes`. After the first bad byte it looks for whole records
/// further on (a record is whole when its length fits, its CRC matches and it parses as a
/// lease); if there are none, the bad stretch is a torn tail.
fn scan(bytes: &[u8]) -> Scan {
    let mut leases = Vec::new();
    let mut at = 0;
    while let Some((lease, next)) = record_at(bytes, at) {
        leases.push(lease);
        at = next;
    }
    let good_end = at;
    let mut bad_bytes = 0;
    let mut after = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some((lease, next)) => {
                leases.push(lease);
                after += 1;
                at = next;
            }
            None => {
                bad_bytes += 1;
                at += 1;
            }
        }
    }
    Scan {
        leases,
        good_end,
        damage: (after > 0).then_some((good_end, bad_bytes, after)),
    }
}

/// The whole record at `at`, and where it ends.
fn record_at(bytes: &[u8], at: usize) -> Option<(Lease, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if length > MAX_RECORD {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + length)?;
    // A JSON object: cheap to refuse most garbage before the CRC.
    if body.first() != Some(&b'{') || body.last() != Some(&b'}') || crc32fast::hash(body) != crc {
        return None;
    }
    let lease = serde_json::from_slice::<Lease>(body).ok()?;
    Some((lease, at + HEADER + length))
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
        let Opened {
            mut log, leases, ..
        } = LeaseLog::open(dir.path()).unwrap();
        assert!(leases.is_empty());
        log.append(&[lease(10, 1), lease(11, 2)]).unwrap();
        log.append(&[lease(10, 3)]).unwrap();
        drop(log);
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(
            opened.leases,
            vec![lease(10, 1), lease(11, 2), lease(10, 3)]
        );
        assert_eq!(opened.torn_bytes, 0);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LeaseLog::open(dir.path()).unwrap().log;
        log.append(&[lease(10, 1), lease(11, 2)]).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let whole = std::fs::read(&path).unwrap();
        // Every possible cut inside the second record leaves exactly the first.
        let first_len = HEADER + serde_json::to_vec(&lease(10, 1)).unwrap().len();
        for cut in first_len..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let opened = LeaseLog::open(dir.path()).unwrap();
            assert_eq!(opened.leases, vec![lease(10, 1)], "cut at {cut}");
            assert_eq!(opened.torn_bytes, (cut - first_len) as u64);
            assert_eq!(opened.damage, None);
            let mut log = opened.log;
            // Appending after recovery gives a clean log.
            log.append(&[lease(12, 3)]).unwrap();
            drop(log);
            let found = LeaseLog::open(dir.path()).unwrap().leases;
            assert_eq!(found, vec![lease(10, 1), lease(12, 3)]);
        }
        // A flipped bit in the last record: cut there too.
        let mut flipped = whole.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let found = LeaseLog::open(dir.path()).unwrap().leases;
        assert_eq!(found, vec![lease(10, 1)]);
    }

    #[test]
    fn compaction_keeps_only_the_live_records_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LeaseLog::open(dir.path()).unwrap().log;
        for updated in 0..50 {
            log.append(&[lease(10, updated), lease(11, updated)])
                .unwrap();
        }
        assert_eq!(log.records(), 100);
        let live = [lease(10, 49), lease(11, 49)];
        log.compact(live.iter()).unwrap();
        log.append(&[lease(12, 60)]).unwrap();
        drop(log);
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(
            opened.leases,
            vec![lease(10, 49), lease(11, 49), lease(12, 60)]
        );
        assert_eq!(opened.log.records(), 3);
    }

    #[test]
    fn a_second_process_on_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _opened = LeaseLog::open(dir.path()).unwrap();
        assert!(matches!(
            LeaseLog::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    /// Audit finding 1: a write that failed on a full disk left a partial record, leases
    /// acknowledged after space came back were appended behind it, and opening cut them all.
    #[test]
    fn disk_full_loses_no_acknowledged_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LeaseLog::open(dir.path()).unwrap().log;
        log.append(&[lease(10, 1)]).unwrap();
        for written in [0, 1, 7, 8, 22, 60] {
            log.fail_next_after = Some(written);
            assert!(log.append(&[lease(11, 2), lease(12, 2)]).is_err());
            log.append(&[lease(13, 3)]).unwrap();
        }
        drop(log);
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(opened.leases.len(), 7, "{:?}", opened.leases);
        assert!(opened.leases.iter().all(|l| l.address.octets()[3] != 11));
        assert_eq!(opened.torn_bytes, 0);
        assert_eq!(opened.damage, None);
    }

    /// A failed append that cannot even be cut back is cut before the next append.
    #[test]
    fn a_failed_append_is_cut_back_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LeaseLog::open(dir.path()).unwrap().log;
        log.append(&[lease(10, 1)]).unwrap();
        log.fail_next_after = Some(30);
        assert!(log.append(&[lease(11, 2)]).is_err());
        // As if cutting back had failed: the partial record is still there.
        log.file.write_all(b"partial").unwrap();
        log.needs_cut = true;
        log.append(&[lease(12, 3)]).unwrap();
        drop(log);
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(opened.leases, vec![lease(10, 1), lease(12, 3)]);
        assert_eq!(opened.torn_bytes, 0);
    }

    /// Whole records after a bad stretch are kept, the damaged file saved and the damage
    /// reported; the log is clean afterwards.
    #[test]
    fn whole_records_after_a_bad_stretch_are_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LeaseLog::open(dir.path()).unwrap().log;
        log.append(&[lease(10, 1), lease(11, 2), lease(12, 3)])
            .unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let whole = std::fs::read(&path).unwrap();
        let first_len = HEADER + serde_json::to_vec(&lease(10, 1)).unwrap().len();
        // The second record's bytes damaged in its middle.
        let mut damaged = whole.clone();
        damaged[first_len + 20] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(opened.leases, vec![lease(10, 1), lease(12, 3)]);
        let damage = opened.damage.clone().unwrap();
        assert_eq!(damage.offset, first_len as u64);
        assert_eq!(damage.records_after, 1);
        assert_eq!(
            damage.bad_bytes,
            (HEADER + serde_json::to_vec(&lease(11, 2)).unwrap().len()) as u64
        );
        assert_eq!(std::fs::read(&damage.saved_as).unwrap(), damaged);
        let mut log = opened.log;
        log.append(&[lease(13, 4)]).unwrap();
        drop(log);
        let opened = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(
            opened.leases,
            vec![lease(10, 1), lease(12, 3), lease(13, 4)]
        );
        assert_eq!((opened.damage, opened.torn_bytes), (None, 0));
    }
}
