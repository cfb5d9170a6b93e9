//! One authenticator for everything the site key signs: HMAC-SHA-256 under the key, each
//! protocol in a domain of its own (its name is the first thing hashed), so a tag made for one
//! protocol never passes in another. Heartbeats and the DHCP peer API use it today.
//!
//! Invariants: tags are compared in constant time; a tag shorter than [`MIN_TAG`] bytes never
//! verifies; the key is never shown (`Debug` says its length).

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// The shortest tag accepted (truncated HMAC-SHA-256, as heartbeats carry).
pub const MIN_TAG: usize = 16;

/// The site key, for one protocol.
#[derive(Clone)]
pub struct SiteAuth {
    key: Vec<u8>,
    domain: &'static [u8],
}

impl std::fmt::Debug for SiteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SiteAuth({} key bytes, {})",
            self.key.len(),
            String::from_utf8_lossy(self.domain).trim_end_matches('\0')
        )
    }
}

impl SiteAuth {
    /// `domain`: the protocol's name and version, e.g. `b"fieldnet heartbeat v1\0"`.
    pub fn new(site_key: &[u8], domain: &'static [u8]) -> Self {
        Self {
            key: site_key.to_vec(),
            domain,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(self.domain);
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The tag of `parts` (hashed one after the other: separators are the caller's).
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `parts`, or its first bytes (at least [`MIN_TAG`]).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() >= MIN_TAG && self.mac(parts).verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_only_under_their_key_domain_and_parts() {
        let heartbeat = SiteAuth::new(&[7; 32], b"fieldnet heartbeat v1\0");
        let dhcp = SiteAuth::new(&[7; 32], b"fieldnet dhcp v1\0");
        let tag = heartbeat.tag(&[b"body"]);
        assert!(heartbeat.verify(&[b"body"], &tag));
        assert!(
            heartbeat.verify(&[b"bo", b"dy"], &tag),
            "parts are one message"
        );
        assert!(heartbeat.verify(&[b"body"], &tag[..16]), "truncated");
        assert!(!heartbeat.verify(&[b"body"], &tag[..15]), "too short");
        assert!(!heartbeat.verify(&[b"body"], &[]), "empty");
        assert!(!heartbeat.verify(&[b"bodY"], &tag));
        assert!(!dhcp.verify(&[b"body"], &tag), "another protocol's tag");
        let other_key = SiteAuth::new(&[8; 32], b"fieldnet heartbeat v1\0");
        assert!(!other_key.verify(&[b"body"], &tag));
        assert!(!format!("{heartbeat:?}").contains('7'));
    }
}
