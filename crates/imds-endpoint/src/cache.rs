//! What survives a restart, as written to the cache file: every session with validity left and
//! the devices the operator forgot. Pure encoding; the edge writes it atomically, mode 0600.
//!
//! Invariant: a file of another version, or one that does not read, is refused as a whole
//! (the agent then starts with no sessions and fetches new ones), never half taken.

use serde::{Deserialize, Serialize};

use crate::identity::Mac;
use crate::sessions::Snapshot;

/// The format written now.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub version: u32,
    /// When it was written, milliseconds since the Unix epoch.
    pub saved: u64,
    pub sessions: Snapshot,
    #[serde(default)]
    pub forgotten: Vec<Mac>,
}

impl CacheFile {
    pub fn new(saved: u64, sessions: Snapshot, forgotten: Vec<Mac>) -> CacheFile {
        CacheFile {
            version: VERSION,
            saved,
            sessions,
            forgotten,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<CacheFile, String> {
        let file: CacheFile =
            serde_json::from_slice(bytes).map_err(|error| format!("does not read: {error}"))?;
        if file.version != VERSION {
            return Err(format!(
                "is of version {}, this agent writes {VERSION}",
                file.version
            ));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{Credentials, ReserveSession};

    #[test]
    fn a_cache_reads_back_and_another_version_does_not() {
        let file = CacheFile::new(
            5,
            Snapshot {
                devices: Vec::new(),
                reserves: vec![ReserveSession {
                    class: "cameras".to_owned(),
                    credentials: Credentials {
                        access_key_id: "ASIA".to_owned(),
                        secret_access_key: "secret".to_owned(),
                        session_token: "token".to_owned(),
                        expiration: 10,
                        issued: 1,
                        rendered: Default::default(),
                    },
                }],
            },
            vec!["02:00:00:00:00:01".parse().unwrap()],
        );
        assert_eq!(CacheFile::decode(&file.encode()).unwrap(), file);
        let other = String::from_utf8(file.encode())
            .unwrap()
            .replace("\"version\":1", "\"version\":7");
        assert!(
            CacheFile::decode(other.as_bytes())
                .unwrap_err()
                .contains("version 7")
        );
        assert!(CacheFile::decode(b"{").is_err());
    }
}
