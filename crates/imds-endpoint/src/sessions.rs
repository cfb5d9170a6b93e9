//! The credentials the endpoint hands out, and when to ask STS for more: one session per
//! device and one reserve per class, as a pure machine driven by the clock (milliseconds since
//! the Unix epoch, an argument everywhere).
//!
//! Rules, each a test below:
//! - A device of a class with a role gets its own session when it appears, and a new one once
//!   less than `min_validity + margin` is left, so it always has at least `min_validity` while
//!   STS answers. STS is never asked on a device's request path.
//! - Each class keeps a reserve session of the role's longest duration, renewed every
//!   `renew_every` while STS answers.
//! - Serving: the device's own session while it has `min_validity` left; else whichever of its
//!   session and the class's reserve lasts longer, if that has at least `refuse_below` left;
//!   else nothing (never expired credentials). A device unknown here (no session yet, or
//!   joined during an outage) is served from the reserve.
//! - A failed fetch is asked again after a backoff (5 s doubling, at most a minute); at most
//!   one fetch per subject is in flight.
//! - The runway of a class is how long its devices stay served if STS never answers again:
//!   until its reserve falls below `refuse_below`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use fieldnet::config::ImdsEndpointConfig;
use serde::{Deserialize, Serialize};

use crate::identity::Mac;

/// Temporary credentials as kept and served; the secret and token stay out of `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Milliseconds since the Unix epoch.
    pub expiration: u64,
    /// When STS issued them, milliseconds since the Unix epoch.
    pub issued: u64,
    /// The credentials document, rendered once when first handed out.
    #[serde(skip)]
    pub rendered: Rendered,
}

/// A cache of a value derived from the rest of its struct: never part of its equality.
#[derive(Debug, Clone, Default)]
pub struct Rendered(std::sync::OnceLock<String>);

impl Rendered {
    pub fn get_or_init(&self, render: impl FnOnce() -> String) -> &str {
        self.0.get_or_init(render)
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Rendered) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn left(&self, now: u64) -> u64 {
        self.expiration.saturating_sub(now)
    }
}

/// Whose session a fetch is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Device(Mac),
    Reserve(String),
}

/// A call to STS the edge should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub subject: Subject,
    pub role_arn: String,
    pub session_name: String,
    pub source_identity: String,
    pub duration: Duration,
}

/// What a device is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served<'a> {
    Own(&'a Credentials),
    Reserve(&'a Credentials),
    /// Nothing with enough validity left.
    Unavailable,
}

/// The lengths that drive the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub session: Duration,
    pub min_validity: Duration,
    pub refuse_below: Duration,
}

impl Policy {
    pub fn from_config(config: &ImdsEndpointConfig) -> Policy {
        Policy {
            session: config.session_duration,
            min_validity: config.min_validity,
            refuse_below: config.refuse_below,
        }
    }

    /// A device's session is renewed this long before it falls to `min_validity`: ten
    /// minutes, or half the slack between the two for short sessions.
    fn margin(&self) -> u64 {
        let slack = self.session.saturating_sub(self.min_validity) / 2;
        millis(slack.min(Duration::from_secs(600)))
    }
}

/// A class's role as the machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRole {
    pub role_arn: String,
    pub reserve_duration: Duration,
}

impl ClassRole {
    /// A reserve is renewed once it is this old.
    fn renew_every(&self) -> u64 {
        millis((self.reserve_duration / 4).min(Duration::from_secs(900)))
    }
}

const FIRST_BACKOFF: u64 = 5_000;
const MAX_BACKOFF: u64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Attempts {
    in_flight: bool,
    failures: u32,
    next_at: u64,
}

impl Attempts {
    fn ready(&self, now: u64) -> bool {
        !self.in_flight && now >= self.next_at
    }

    fn failed(&mut self, now: u64) {
        self.in_flight = false;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_BACKOFF);
        self.failures += 1;
        self.next_at = now + backoff;
    }

    fn succeeded(&mut self) {
        *self = Attempts::default();
    }
}

#[derive(Debug, Clone)]
struct DeviceSlot {
    class: String,
    name: String,
    credentials: Option<Credentials>,
    attempts: Attempts,
}

#[derive(Debug, Clone, Default)]
struct ReserveSlot {
    credentials: Option<Credentials>,
    attempts: Attempts,
}

/// Every session, and when to fetch the next.
#[derive(Debug)]
pub struct Sessions {
    policy: Policy,
    /// What `session_name` and `source_identity` of reserves start with (the appliance).
    appliance: String,
    roles: BTreeMap<String, ClassRole>,
    devices: BTreeMap<Mac, DeviceSlot>,
    reserves: BTreeMap<String, ReserveSlot>,
}

/// The persisted form of [`Sessions`] (see `cache.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub devices: Vec<DeviceSession>,
    pub reserves: Vec<ReserveSession>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSession {
    pub mac: Mac,
    pub class: String,
    pub name: String,
    pub credentials: Credentials,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveSession {
    pub class: String,
    pub credentials: Credentials,
}

impl Sessions {
    pub fn new(policy: Policy, appliance: &str, roles: BTreeMap<String, ClassRole>) -> Sessions {
        let reserves = roles
            .keys()
            .map(|class| (class.clone(), ReserveSlot::default()))
            .collect();
        Sessions {
            policy,
            appliance: appliance.to_owned(),
            roles,
            devices: BTreeMap::new(),
            reserves,
        }
    }

    pub fn from_config(config: &ImdsEndpointConfig, appliance: &str) -> Sessions {
        let roles = config
            .roles
            .iter()
            .map(|role| {
                (
                    role.class.clone(),
                    ClassRole {
                        role_arn: role.role_arn.clone(),
                        reserve_duration: role.reserve_duration,
                    },
                )
            })
            .collect();
        Sessions::new(Policy::from_config(config), appliance, roles)
    }

    /// Takes back what a snapshot holds that is still of use at `now`: sessions with validity
    /// left, of classes that still have a role (the role unchanged).
    pub fn restore(&mut self, snapshot: Snapshot, now: u64) {
        let refuse_below = millis(self.policy.refuse_below);
        for reserve in snapshot.reserves {
            if let Some(slot) = self.reserves.get_mut(&reserve.class)
                && reserve.credentials.left(now) > refuse_below
            {
                slot.credentials = Some(reserve.credentials);
            }
        }
        for device in snapshot.devices {
            if self.roles.contains_key(&device.class) && device.credentials.left(now) > refuse_below
            {
                self.devices.insert(
                    device.mac,
                    DeviceSlot {
                        class: device.class,
                        name: device.name,
                        credentials: Some(device.credentials),
                        attempts: Attempts::default(),
                    },
                );
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            devices: self
                .devices
                .iter()
                .filter_map(|(mac, slot)| {
                    Some(DeviceSession {
                        mac: *mac,
                        class: slot.class.clone(),
                        name: slot.name.clone(),
                        credentials: slot.credentials.clone()?,
                    })
                })
                .collect(),
            reserves: self
                .reserves
                .iter()
                .filter_map(|(class, slot)| {
                    Some(ReserveSession {
                        class: class.clone(),
                        credentials: slot.credentials.clone()?,
                    })
                })
                .collect(),
        }
    }

    /// A device seen (its lease ACKed or renewed): tracked from now on if its class has a
    /// role. A device whose class changed starts again.
    pub fn device(&mut self, mac: Mac, class: Option<&str>, name: &str) {
        let Some(class) = class.filter(|class| self.roles.contains_key(*class)) else {
            self.devices.remove(&mac);
            return;
        };
        match self.devices.get_mut(&mac) {
            Some(slot) if slot.class == class => slot.name = name.to_owned(),
            _ => {
                self.devices.insert(
                    mac,
                    DeviceSlot {
                        class: class.to_owned(),
                        name: name.to_owned(),
                        credentials: None,
                        attempts: Attempts::default(),
                    },
                );
            }
        }
    }

    /// A device gone (lease ended, or forgotten by the operator): its session is dropped.
    pub fn remove(&mut self, mac: Mac) -> bool {
        self.devices.remove(&mac).is_some()
    }

    /// Devices with a session slot.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// At most `limit` of the fetches due at `now` (reserves first), each marked in flight
    /// until [`Sessions::fetched`]; the others stay due for the next call.
    pub fn due(&mut self, now: u64, limit: usize) -> Vec<Fetch> {
        let mut fetches = Vec::new();
        for (class, slot) in &mut self.reserves {
            if fetches.len() >= limit {
                break;
            }
            let role = &self.roles[class];
            let stale = slot.credentials.as_ref().is_none_or(|credentials| {
                now.saturating_sub(credentials.issued) >= role.renew_every()
            });
            if stale && slot.attempts.ready(now) {
                slot.attempts.in_flight = true;
                fetches.push(Fetch {
                    subject: Subject::Reserve(class.clone()),
                    role_arn: role.role_arn.clone(),
                    session_name: sts_name(&format!("{}-{class}-reserve", self.appliance)),
                    source_identity: sts_name(&self.appliance),
                    duration: role.reserve_duration,
                });
            }
        }
        let renew_below = millis(self.policy.min_validity) + self.policy.margin();
        for (mac, slot) in &mut self.devices {
            if fetches.len() >= limit {
                break;
            }
            let stale = slot
                .credentials
                .as_ref()
                .is_none_or(|credentials| credentials.left(now) < renew_below);
            if stale && slot.attempts.ready(now) {
                slot.attempts.in_flight = true;
                fetches.push(Fetch {
                    subject: Subject::Device(*mac),
                    role_arn: self.roles[&slot.class].role_arn.clone(),
                    session_name: sts_name(&slot.name),
                    source_identity: mac.dashed(),
                    duration: self.policy.session,
                });
            }
        }
        fetches
    }

    /// The answer to a fetch; `None` when STS did not give a session. Returns whether a
    /// session changed (and the cache should be written).
    pub fn fetched(&mut self, now: u64, subject: &Subject, result: Option<Credentials>) -> bool {
        let (credentials, attempts) = match subject {
            Subject::Device(mac) => match self.devices.get_mut(mac) {
                Some(slot) => (&mut slot.credentials, &mut slot.attempts),
                // Forgotten while the fetch was out: its session is not kept.
                None => return false,
            },
            Subject::Reserve(class) => match self.reserves.get_mut(class) {
                Some(slot) => (&mut slot.credentials, &mut slot.attempts),
                None => return false,
            },
        };
        match result {
            Some(fresh) => {
                *credentials = Some(fresh);
                attempts.succeeded();
                true
            }
            None => {
                attempts.failed(now);
                false
            }
        }
    }

    /// What a device of `class` (with a role) is handed at `now`.
    pub fn serve(&self, now: u64, mac: Mac, class: &str) -> Served<'_> {
        let own = self
            .devices
            .get(&mac)
            .filter(|slot| slot.class == class)
            .and_then(|slot| slot.credentials.as_ref());
        if let Some(own) = own
            && own.left(now) >= millis(self.policy.min_validity)
        {
            return Served::Own(own);
        }
        let reserve = self
            .reserves
            .get(class)
            .and_then(|slot| slot.credentials.as_ref());
        let refuse_below = millis(self.policy.refuse_below);
        match (own, reserve) {
            (Some(own), Some(reserve)) if own.expiration >= reserve.expiration => {
                if own.left(now) >= refuse_below {
                    Served::Own(own)
                } else {
                    Served::Unavailable
                }
            }
            (_, Some(reserve)) if reserve.left(now) >= refuse_below => Served::Reserve(reserve),
            (Some(own), _) if own.left(now) >= refuse_below => Served::Own(own),
            _ => Served::Unavailable,
        }
    }

    /// When the reserve of `class` ends, if it has one.
    pub fn reserve_expiration(&self, class: &str) -> Option<u64> {
        self.reserves
            .get(class)
            .and_then(|slot| slot.credentials.as_ref())
            .map(|credentials| credentials.expiration)
    }

    /// Per class with a role: how long its devices stay served if STS never answers again.
    pub fn runways(&self, now: u64) -> BTreeMap<String, Duration> {
        let refuse_below = millis(self.policy.refuse_below);
        self.reserves
            .iter()
            .map(|(class, slot)| {
                let left = slot.credentials.as_ref().map_or(0, |credentials| {
                    credentials.expiration.saturating_sub(now + refuse_below)
                });
                (class.clone(), Duration::from_millis(left))
            })
            .collect()
    }

    /// The shortest runway of all classes; `None` without roles.
    pub fn runway(&self, now: u64) -> Option<Duration> {
        self.runways(now).into_values().min()
    }

    /// When [`Sessions::due`] next has something to say (for the edge's timer).
    pub fn next_due(&self) -> Option<u64> {
        let renew_below = millis(self.policy.min_validity) + self.policy.margin();
        let reserves = self.reserves.iter().map(|(class, slot)| {
            let renew = slot.credentials.as_ref().map_or(0, |credentials| {
                credentials.issued + self.roles[class].renew_every()
            });
            (renew.max(slot.attempts.next_at), slot.attempts.in_flight)
        });
        let devices = self.devices.values().map(|slot| {
            let renew = slot.credentials.as_ref().map_or(0, |credentials| {
                credentials.expiration.saturating_sub(renew_below)
            });
            (renew.max(slot.attempts.next_at), slot.attempts.in_flight)
        });
        reserves
            .chain(devices)
            .filter(|(_, in_flight)| !in_flight)
            .map(|(at, _)| at)
            .min()
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A RoleSessionName / SourceIdentity: STS's characters, at most 64.
fn sts_name(text: &str) -> String {
    let name = fieldnet_aws::sts_name(text, 64);
    if name.len() < 2 {
        format!("{name}--")
    } else {
        name
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
