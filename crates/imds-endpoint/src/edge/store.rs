//! The cache file: read at start, written atomically (a temporary file in the same directory,
//! mode 0600, synced, then renamed over the old one) after sessions change.
//!
//! Invariant: the file is never seen half written, and never readable by anyone but its owner.

use std::path::Path;

use crate::cache::CacheFile;

/// The cache at `path`; `None` when there is none, or it does not read (said in the log).
pub fn load(path: &Path) -> Option<CacheFile> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the credentials cache; starting without it");
            return None;
        }
    };
    match CacheFile::decode(&bytes) {
        Ok(file) => Some(file),
        Err(problem) => {
            tracing::warn!(path = %path.display(), problem, "the credentials cache is unusable; starting without it");
            None
        }
    }
}

pub fn save(path: &Path, file: &CacheFile) -> anyhow::Result<()> {
    fieldnet::files::replace(path, &file.encode(), 0o600)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_saved_cache_is_private_and_reads_back() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("imds/credentials.json");
        assert_eq!(load(&path), None);
        let file = CacheFile::new(7, Default::default(), Vec::new());
        save(&path, &file).unwrap();
        save(&path, &file).unwrap();
        assert_eq!(load(&path), Some(file));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(load(&path), None);
    }
}
