//! The state file: the device list as JSON (`[inventory] state`), replaced whole by the agent,
//! read back at start and by `inventory ansible`; the file_sd files beside it in `sd/`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fieldnet::bus::topics::Device;
use serde_json::Value;

/// The device list saved last, if it reads (a problem is said in the log).
pub fn load(path: &Path) -> Option<Vec<Device>> {
    match read(path) {
        Ok(devices) => devices,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "starting with an empty device list");
            None
        }
    }
}

/// The device list at `path`; `None` when there is no file yet.
fn read(path: &Path) -> anyhow::Result<Option<Vec<Device>>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not inventory's device list", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// `inventory ansible`: `--list` (no host) or `--host NAME`, from the state file; no file yet
/// is an empty inventory.
pub fn ansible(path: &Path, host: Option<&str>) -> anyhow::Result<Value> {
    let devices = read(path)?.unwrap_or_default();
    Ok(match host {
        Some(name) => crate::ansible::host(devices.iter(), name),
        None => crate::ansible::list(devices.iter()),
    })
}

/// Where the file_sd files go: `sd/` beside the state file.
pub fn sd_directory(state: &Path) -> PathBuf {
    state.parent().unwrap_or(Path::new("/")).join("sd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_an_empty_inventory_and_junk_is_named() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("devices.json");
        let empty = ansible(&path, None).unwrap();
        assert_eq!(empty["_meta"]["hostvars"], serde_json::json!({}));
        std::fs::write(&path, b"{not json").unwrap();
        let error = format!("{:#}", ansible(&path, None).unwrap_err());
        assert!(error.contains("is not inventory's device list"), "{error}");
        assert_eq!(load(&path), None);
        assert_eq!(sd_directory(&path), directory.path().join("sd"));
    }
}
