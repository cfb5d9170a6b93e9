//! Files an agent keeps across restarts, replaced whole: a temporary file in the same
//! directory with the final mode, synced, then renamed over the old one.
//!
//! Invariant: a reader sees the old file or the new one, never half of one, and never with a
//! wider mode than asked.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// Replaces `path` with `bytes` (mode `mode`), creating its directory if needed.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".fieldnet-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(directory)
        .with_context(|| format!("creating a temporary file in {}", directory.display()))?;
    temporary
        .write_all(bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .with_context(|| format!("writing a temporary file in {}", directory.display()))?;
    temporary
        .persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_replaced_file_has_the_new_bytes_and_the_mode_asked() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("deep/state.json");
        super::replace(&path, b"one", 0o600).unwrap();
        super::replace(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // Nothing else left in the directory.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
