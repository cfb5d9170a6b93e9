//! The values the sections are made of (numbers in a range, durations, paths, listen
//! addresses, ids, names, domains, interfaces, IPv4 addresses) and the helpers the checks share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::super::*;
use super::Checker;

impl Checker {
    pub(super) fn bounded(
        &mut self,
        value: Option<i64>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<usize> {
        match value {
            None => Some(default),
            Some(value) if value >= 0 && range.contains(&(value as usize)) => Some(value as usize),
            Some(value) => {
                self.problem(
                    path.clone(),
                    format!(
                        "{value} is out of range; valid: {} to {} (default {default})",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A number that may be left out (then `None`: no default applies), within `range`.
    pub(super) fn optional(
        &mut self,
        value: Option<i64>,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Option<usize>> {
        match value {
            None => Some(None),
            Some(value) if value >= 0 && range.contains(&(value as usize)) => {
                Some(Some(value as usize))
            }
            Some(value) => {
                self.problem(
                    path.clone(),
                    format!(
                        "{value} is out of range; valid: {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// An absolute path, `default` when left out.
    pub(super) fn absolute_path(
        &mut self,
        value: Option<&str>,
        default: &str,
        path: &KeyPath,
    ) -> Option<PathBuf> {
        match value {
            None => Some(PathBuf::from(default)),
            Some(text) if text.starts_with('/') => Some(PathBuf::from(text)),
            Some(text) => {
                self.problem(
                    path.clone(),
                    format!("'{text}' is not an absolute path such as {default}"),
                );
                None
            }
        }
    }

    /// A duration given in milliseconds, within `range` (in milliseconds).
    pub(super) fn millis(
        &mut self,
        value: Option<i64>,
        default: Duration,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Duration> {
        self.bounded(value, default.as_millis() as usize, range, path)
            .map(|ms| Duration::from_millis(ms as u64))
    }

    /// A duration given in seconds, within `range` (in seconds).
    pub(super) fn seconds(
        &mut self,
        value: Option<i64>,
        default: Duration,
        range: std::ops::RangeInclusive<usize>,
        path: &KeyPath,
    ) -> Option<Duration> {
        self.bounded(value, default.as_secs() as usize, range, path)
            .map(|s| Duration::from_secs(s as u64))
    }

    pub(super) fn listen(
        &mut self,
        value: Option<&str>,
        default_port: u16,
        path: &KeyPath,
    ) -> Option<SocketAddr> {
        match value {
            None => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                default_port,
            )),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.problem(
                        path.clone(),
                        format!("'{text}' is not an address:port such as 127.0.0.1:{default_port} or [::]:{default_port}"),
                    );
                    None
                }
            },
        }
    }

    pub(super) fn appliance_id(&mut self, value: i64, path: &KeyPath) -> Option<u8> {
        match value {
            1..=254 => Some(value as u8),
            other => {
                self.problem(
                    path.clone(),
                    format!("{other} is not an appliance id; valid: 1 to 254"),
                );
                None
            }
        }
    }

    pub(super) fn name(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        let valid = !value.is_empty()
            && value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Some(value.to_owned())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a valid name; use 1 to 63 letters, digits, '-' or '_'"),
            );
            None
        }
    }

    pub(super) fn domain(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        let value = value.trim_end_matches('.');
        if is_dns_name(value) {
            Some(value.to_ascii_lowercase())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not a DNS domain; write it like site.example.com"),
            );
            None
        }
    }

    pub(super) fn interface(&mut self, value: &str, path: &KeyPath) -> Option<String> {
        // The kernel's limit is IFNAMSIZ - 1 = 15 bytes, no '/', no whitespace.
        let valid = !value.is_empty()
            && value.len() <= 15
            && value != "."
            && value != ".."
            && !value
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
        if valid {
            Some(value.to_owned())
        } else {
            self.problem(
                path.clone(),
                format!("'{value}' is not an interface name; use 1 to 15 characters without '/', ':' or spaces"),
            );
            None
        }
    }

    /// An AWS region name such as eu-west-1.
    pub(super) fn aws_region(&mut self, value: &str, path: &KeyPath) -> bool {
        let ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.problem(
                path.clone(),
                format!("'{value}' is not an AWS region such as eu-west-1"),
            );
        }
        ok
    }

    /// One URL for every AWS service (a test server), or none: AWS itself.
    pub(super) fn aws_endpoint(&mut self, value: Option<&str>, path: &KeyPath) -> bool {
        let ok = value.is_none_or(|url| url.starts_with("http://") || url.starts_with("https://"));
        if !ok {
            self.problem(
                path.clone(),
                "must be a URL such as http://127.0.0.1:5000 (omit it to use AWS itself)",
            );
        }
        ok
    }

    pub(super) fn ipv4(&mut self, value: &str, path: &KeyPath) -> Option<Ipv4Addr> {
        match value.parse::<Ipv4Addr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.problem(
                    path.clone(),
                    format!("'{value}' is not an IPv4 address such as 10.101.0.1"),
                );
                None
            }
        }
    }
}

/// Whether `value` is a DNS name: 1 to 253 bytes of labels separated by dots.
pub(super) fn is_dns_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(crate::names::is_dns_label)
}

/// Whether `address` is a host address of `subnet` (inside it, not its network or broadcast
/// address).
pub(super) fn is_host(subnet: Ipv4Net, address: Ipv4Addr) -> bool {
    subnet.contains(&address) && address != subnet.network() && address != subnet.broadcast()
}

pub(super) fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|item| item.to_string()).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// `http://192.0.2.10/generate_204` → (192.0.2.10:80, "192.0.2.10", "/generate_204").
pub(super) fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let hint = "write it like http://203.0.113.10/generate_204 (plain http, an IPv4 address, so no DNS is needed over a particular uplink)";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL; {hint}"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = match authority.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => match authority.parse::<Ipv4Addr>() {
            Ok(ip) => SocketAddr::new(IpAddr::V4(ip), 80),
            Err(_) => {
                return Err(format!(
                    "'{authority}' in '{url}' is not an IPv4 address[:port]; {hint}"
                ));
            }
        },
    };
    Ok((address, authority.to_owned(), path.to_owned()))
}
