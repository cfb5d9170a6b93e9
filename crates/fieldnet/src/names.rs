//! Names and hardware addresses as the site writes them: DNS labels (a device's host name
//! becomes one in whereami; the config checks its own), and hex bytes such as MAC addresses
//! ([`Mac`]) and DHCP client identifiers. Pure.

/// Whether `label` is already a DNS label by RFC 1123: 1 to 63 letters, digits and hyphens,
/// no hyphen at either end.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The DNS label a DHCP client's host name becomes: its first dot-separated part, lower case,
/// with anything but letters, digits and hyphens turned into hyphens and no hyphen at either
/// end (RFC 1123), at most 63 bytes. `None`: nothing usable is left.
pub fn dns_label(hostname: &str) -> Option<String> {
    let first = hostname.split('.').next().unwrap_or_default();
    let legal: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = legal.trim_matches('-');
    (!label.is_empty()).then(|| label.to_owned())
}

/// `02:00:5e:10:00:01` or `02-00-5E-10-00-01` (any number of two-digit hex bytes) → bytes;
/// `None` for anything else, the empty string included.
pub fn parse_hex_bytes(text: &str) -> Option<Vec<u8>> {
    text.split([':', '-'])
        .map(|part| {
            (part.len() == 2)
                .then(|| u8::from_str_radix(part, 16).ok())
                .flatten()
        })
        .collect()
}

/// A hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `aa-bb-cc-dd-ee-ff`: the device's SourceIdentity, written as STS allows.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, f] = self.0;
        write!(formatter, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, formatter)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    fn from_str(text: &str) -> Result<Mac, String> {
        parse_hex_bytes(text)
            .and_then(|bytes| <[u8; 6]>::try_from(bytes).ok())
            .map(Mac)
            .ok_or_else(|| format!("'{text}' is not a MAC address such as 02:00:5e:10:00:01"))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mac, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_become_legal_labels() {
        assert_eq!(dns_label("Bob's iPhone").as_deref(), Some("bob-s-iphone"));
        assert_eq!(dns_label("cam-3.local").as_deref(), Some("cam-3"));
        assert_eq!(dns_label("-x-").as_deref(), Some("x"));
        assert_eq!(dns_label(&"a".repeat(80)).map(|l| l.len()), Some(63));
        assert_eq!(dns_label("...").as_deref(), None);
        assert_eq!(dns_label("").as_deref(), None);
        assert_eq!(dns_label("Ünïcode").as_deref(), Some("n-code"));
        assert!(is_dns_label("till-1"));
        assert!(!is_dns_label("-till"));
        assert!(!is_dns_label("till_1"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }

    #[test]
    fn hex_bytes_with_either_separator() {
        assert_eq!(
            parse_hex_bytes("02:00:5e:10:00:01"),
            Some(vec![2, 0, 0x5e, 0x10, 0, 1])
        );
        assert_eq!(parse_hex_bytes("00-80-F0"), Some(vec![0, 0x80, 0xf0]));
        assert_eq!(parse_hex_bytes("2:00"), None);
        assert_eq!(parse_hex_bytes("zz"), None);
        assert_eq!(parse_hex_bytes(""), None);
    }
}
