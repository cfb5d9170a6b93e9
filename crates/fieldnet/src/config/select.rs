//! Which entry of the site file is this machine: the one `--appliance NAME|ID` (or
//! `FIELDNET_APPLIANCE`) names, else the one whose name or `hostname` is the host name (or its
//! first label). Exactly one must match; none or two is an error naming the candidates.

use super::{Machine, SiteConfig};

/// The machine chosen, and why, for the start-up log.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    /// Its index in [`SiteConfig::machines`].
    pub index: usize,
    pub machine: &'a Machine,
    /// How it was found, e.g. `--appliance 2` or `host name 'north'`.
    pub by: Way,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Given,
    HostName,
}

/// Why no single entry of the site file is this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{file}: no appliance or hub is {asked}; the site has {candidates}. Name this machine with --appliance NAME|ID or FIELDNET_APPLIANCE, or give its entry `hostname = \"…\"`"
    )]
    NoMatch {
        file: String,
        asked: String,
        candidates: String,
    },
    #[error(
        "{file}: {asked} matches {matches}; name one of them with --appliance NAME|ID or FIELDNET_APPLIANCE"
    )]
    TwoMatches {
        file: String,
        asked: String,
        matches: String,
    },
}

/// This machine's host name, if the kernel knows one.
pub fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

impl SiteConfig {
    /// Finds this machine: by `given` when set, else by `host_name`.
    pub fn select(
        &self,
        given: Option<&str>,
        host_name: Option<&str>,
    ) -> Result<Chosen<'_>, SelectError> {
        let (asked, by, matches): (String, Way, Vec<usize>) = match (given, host_name) {
            (Some(given), _) => (
                format!("'{given}' (--appliance)"),
                Way::Given,
                self.matching(|machine| {
                    machine.name() == given
                        || machine.hostname.as_deref() == Some(given)
                        || given.parse::<u8>().ok() == Some(machine.id())
                }),
            ),
            (None, Some(host)) => {
                let short = host.split('.').next().unwrap_or(host);
                (
                    format!("named after this machine's host name '{host}'"),
                    Way::HostName,
                    self.matching(|machine| {
                        [host, short].iter().any(|name| {
                            machine.name() == *name || machine.hostname.as_deref() == Some(*name)
                        })
                    }),
                )
            }
            (None, None) => (
                "given, and this machine has no host name".to_owned(),
                Way::HostName,
                Vec::new(),
            ),
        };
        match matches.as_slice() {
            [index] => Ok(Chosen {
                index: *index,
                machine: &self.machines[*index],
                by,
            }),
            [] => Err(SelectError::NoMatch {
                file: self.file.clone(),
                asked,
                candidates: self.candidates(0..self.machines.len()),
            }),
            _ => Err(SelectError::TwoMatches {
                file: self.file.clone(),
                asked,
                matches: self.candidates(matches.iter().copied()),
            }),
        }
    }

    fn matching(&self, wanted: impl Fn(&Machine) -> bool) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&index| wanted(&self.machines[index]))
            .collect()
    }

    /// "appliance 'north' (id 1, host name n1), hub 'hub-a' (id 201)".
    fn candidates(&self, indices: impl Iterator<Item = usize>) -> String {
        let shown: Vec<String> = indices
            .map(|index| {
                let machine = &self.machines[index];
                match &machine.hostname {
                    Some(host) => {
                        format!(
                            "{}, host name '{host}'",
                            machine.describe().trim_end_matches(')')
                        ) + ")"
                    }
                    None => machine.describe(),
                }
            })
            .collect();
        if shown.is_empty() {
            "no appliances or hubs".to_owned()
        } else {
            shown.join(", ")
        }
    }
}

impl Chosen<'_> {
    /// "appliance 'north' (id 1), chosen by host name" for the start-up log.
    pub fn describe(&self) -> String {
        let by = match self.by {
            Way::Given => "as named by --appliance or FIELDNET_APPLIANCE",
            Way::HostName => "by this machine's host name",
        };
        format!("{}, {by}", self.machine.describe())
    }
}
