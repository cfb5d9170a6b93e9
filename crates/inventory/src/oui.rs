//! Vendors by MAC prefix, from the tables arp-scan (`ieee-oui.txt`: the IEEE's MA-L, MA-M and
//! MA-S blocks, 6, 7 or 9 hex digits, a tab, the vendor) and nmap (`nmap-mac-prefixes`: 6 hex
//! digits, a space, the vendor) install. The longest matching prefix wins; a locally
//! administered MAC (randomised by phones, made up by VMs) has no vendor.
//!
//! Invariant: any text parses (a line that is not an entry is skipped), so a damaged file only
//! loses its damaged lines.

use std::collections::HashMap;

use fieldnet::names::Mac;

/// Prefix lengths in hex digits the IEEE assigns: MA-L, MA-M, MA-S.
const PREFIX_DIGITS: [u32; 3] = [9, 7, 6];

/// The vendor table.
#[derive(Debug, Default, Clone)]
pub struct Vendors {
    /// (digits, prefix) → vendor.
    by_prefix: HashMap<(u32, u64), String>,
}

impl Vendors {
    /// Reads a table in either format; lines that are not entries are skipped.
    pub fn parse(text: &str) -> Vendors {
        let mut by_prefix = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((prefix, vendor)) = line.split_once(['\t', ' ']) else {
                continue;
            };
            let digits = prefix.len() as u32;
            let vendor = vendor.trim();
            if !PREFIX_DIGITS.contains(&digits) || vendor.is_empty() {
                continue;
            }
            if let Ok(value) = u64::from_str_radix(prefix, 16) {
                by_prefix.insert((digits, value), vendor.to_owned());
            }
        }
        Vendors { by_prefix }
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The vendor of `mac`, if its prefix is in the table and it is globally administered.
    pub fn lookup(&self, mac: Mac) -> Option<&str> {
        if mac.0[0] & 0x02 != 0 {
            return None;
        }
        let whole = mac
            .0
            .iter()
            .fold(0_u64, |acc, byte| acc << 8 | u64::from(*byte));
        PREFIX_DIGITS.iter().find_map(|digits| {
            let prefix = whole >> (4 * (12 - digits));
            self.by_prefix.get(&(*digits, prefix)).map(String::as_str)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP_SCAN: &str = "# ieee-oui.txt\n000000\tXEROX CORPORATION\n0050C2\tIEEE Registration Authority\n0050C2123\tSmall Maker\n70B3D51\tMiddle Maker\nnot an entry\n\nZZZZZZ\tbad hex\n";

    #[test]
    fn the_longest_prefix_names_the_vendor() {
        let vendors = Vendors::parse(ARP_SCAN);
        assert_eq!(vendors.len(), 4);
        let mac = |text: &str| text.parse::<Mac>().unwrap();
        assert_eq!(
            vendors.lookup(mac("00:00:00:12:34:56")),
            Some("XEROX CORPORATION")
        );
        assert_eq!(
            vendors.lookup(mac("00:50:c2:12:34:56")),
            Some("Small Maker")
        );
        assert_eq!(
            vendors.lookup(mac("00:50:c2:99:34:56")),
            Some("IEEE Registration Authority")
        );
        assert_eq!(
            vendors.lookup(mac("70:b3:d5:1f:00:01")),
            Some("Middle Maker")
        );
        assert_eq!(vendors.lookup(mac("70:b3:d5:2f:00:01")), None);
    }

    #[test]
    fn nmaps_format_reads_too_and_local_macs_have_no_vendor() {
        let vendors = Vendors::parse("# nmap\n0080F0 Panasonic\n020000 Should Not Match\n");
        let mac = |text: &str| text.parse::<Mac>().unwrap();
        assert_eq!(vendors.lookup(mac("00:80:f0:01:02:03")), Some("Panasonic"));
        assert_eq!(vendors.lookup(mac("02:00:00:01:02:03")), None);
    }

    #[test]
    fn the_installed_tables_read_when_present() {
        for file in fieldnet::config::OUI_FILES {
            if let Ok(text) = std::fs::read_to_string(file) {
                assert!(Vendors::parse(&text).len() > 10_000, "{file}");
            }
        }
    }
}
