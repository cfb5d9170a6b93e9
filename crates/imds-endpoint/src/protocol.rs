//! The EC2 instance metadata protocol as this endpoint speaks it, for one request at a time,
//! purely: who asks (see `identity`), whether they may (rate, token), and the answer.
//!
//! Order of checks, each a test: an asker that is not a device served here gets 403 and
//! nothing else; then the per-client rate (429); then the token PUT (`X-Forwarded-For` or a
//! TTL outside 1–21600 is 400; its answer carries the TTL header and leaves with the hop
//! limit); then, for everything else, a GET with a valid token, or with none where the
//! device's class allows IMDSv1 (401 otherwise, and always for a bad or expired token); then
//! the path: listings, the instance's own facts, and under `iam/` the class's role and its
//! credentials. A device whose class has no role gets 404 under `iam/`, never a default role;
//! credentials with less than `refuse_below` left are never handed out (a non-`Success` code
//! instead).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use fieldnet::config::{ImdsEndpointConfig, ImdsRole};
use fieldnet_aws::format_time;
use serde::Serialize;

use crate::identity::{Device, Identity, Mac, Refusal};
use crate::limits::RateLimits;
use crate::sessions::{Credentials, Served, Sessions};
use crate::tokens::{MAX_TTL, MIN_TTL, TokenCheck, Tokens};

/// The largest request body taken (the token PUT has none).
pub const MAX_BODY: u64 = 1024;

/// The request line and the headers that matter.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `X-aws-ec2-metadata-token`.
    pub token: Option<&'a [u8]>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub ttl: Option<&'a [u8]>,
    /// An `X-Forwarded-For` header was present.
    pub forwarded_for: bool,
    /// The declared body length.
    pub body_len: u64,
}

/// How a request ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Token,
    Credentials,
    /// Credentials asked for while none had enough validity left.
    Unavailable,
    Metadata,
    NotFound,
    BadRequest,
    Unauthorized,
    Throttled,
    Refused(Refusal),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Token => "token",
            Outcome::Credentials => "credentials",
            Outcome::Unavailable => "unavailable",
            Outcome::Metadata => "metadata",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Throttled => "throttled",
            Outcome::Refused(_) => "refused",
        }
    }

    /// The position of [`Outcome::as_str`] in [`Outcome::WORDS`].
    pub fn index(self) -> usize {
        Outcome::WORDS
            .iter()
            .position(|word| *word == self.as_str())
            .unwrap_or(0)
    }

    pub const WORDS: [&'static str; 9] = [
        "token",
        "credentials",
        "unavailable",
        "metadata",
        "not_found",
        "bad_request",
        "unauthorized",
        "throttled",
        "refused",
    ];
}

/// The answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub json: bool,
    pub body: String,
    /// The TTL header of a token PUT's answer.
    pub token_ttl: Option<u32>,
    /// The IP TTL the answer must leave with (the token PUT's hop limit).
    pub hop_limit: Option<u8>,
    pub outcome: Outcome,
}

impl Reply {
    fn text(status: u16, body: &str, outcome: Outcome) -> Reply {
        Reply {
            status,
            json: false,
            body: body.to_owned(),
            token_ttl: None,
            hop_limit: None,
            outcome,
        }
    }

    fn metadata(body: String) -> Reply {
        Reply {
            body,
            ..Reply::text(200, "", Outcome::Metadata)
        }
    }

    fn json(body: String, outcome: Outcome) -> Reply {
        Reply {
            json: true,
            body,
            ..Reply::text(200, "", outcome)
        }
    }

    fn not_found() -> Reply {
        Reply::text(404, "Not Found\n", Outcome::NotFound)
    }
}

/// The request path's state: who is who, the tokens, the rates, the sessions.
#[derive(Debug)]
pub struct Imds {
    pub identity: Identity,
    pub sessions: Sessions,
    pub tokens: Tokens,
    pub limits: RateLimits,
    roles: BTreeMap<String, ImdsRole>,
    region: String,
    hop_limit: u8,
}

impl Imds {
    pub fn new(config: &ImdsEndpointConfig, identity: Identity, sessions: Sessions) -> Imds {
        Imds {
            identity,
            sessions,
            tokens: Tokens::new(config.tokens_per_client),
            limits: RateLimits::new(config.requests_per_second),
            roles: config
                .roles
                .iter()
                .map(|role| (role.class.clone(), role.clone()))
                .collect(),
            region: config.aws_region.clone(),
            hop_limit: config.hop_limit,
        }
    }

    /// Answers `request` from `client` at `now` (milliseconds since the Unix epoch), the
    /// neighbour table showing `neighbour` for it; `random` gives a new token's bytes (called
    /// only for a token).
    pub fn handle(
        &mut self,
        now: u64,
        client: Ipv4Addr,
        neighbour: Option<Mac>,
        request: &Request<'_>,
        random: impl FnOnce() -> [u8; 32],
    ) -> Reply {
        let device = match self.identity.who(now, client, neighbour) {
            Ok(device) => device,
            Err(refusal) => return Reply::text(403, "Forbidden\n", Outcome::Refused(refusal)),
        };
        if !self.limits.allow(now, client) {
            return Reply::text(429, "Too Many Requests\n", Outcome::Throttled);
        }
        if request.body_len > MAX_BODY {
            return Reply::text(400, "Bad Request\n", Outcome::BadRequest);
        }
        let role = device
            .class
            .as_ref()
            .and_then(|class| self.roles.get(class));
        if request.path == "/latest/api/token" {
            if request.method != "PUT" {
                return Reply::text(405, "Method Not Allowed\n", Outcome::BadRequest);
            }
            return self.token(now, client, request, random);
        }
        if request.method != "GET" {
            return Reply::text(405, "Method Not Allowed\n", Outcome::BadRequest);
        }
        let allowed = match request.token {
            Some(token) => self.tokens.check(now, client, token) == TokenCheck::Valid,
            None => role.is_some_and(|role| role.imdsv1),
        };
        if !allowed {
            return Reply::text(401, "Unauthorized\n", Outcome::Unauthorized);
        }
        self.metadata(now, &device, role, request.path)
    }

    fn token(
        &mut self,
        now: u64,
        client: Ipv4Addr,
        request: &Request<'_>,
        random: impl FnOnce() -> [u8; 32],
    ) -> Reply {
        if request.forwarded_for {
            return Reply::text(400, "Bad Request\n", Outcome::BadRequest);
        }
        let ttl = request
            .ttl
            .and_then(|ttl| std::str::from_utf8(ttl).ok())
            .and_then(|ttl| ttl.trim().parse::<u32>().ok())
            .filter(|ttl| (MIN_TTL..=MAX_TTL).contains(ttl));
        let Some(ttl) = ttl else {
            return Reply::text(400, "Bad Request\n", Outcome::BadRequest);
        };
        let token = self.tokens.issue(now, client, ttl, random());
        Reply {
            token_ttl: Some(ttl),
            hop_limit: Some(self.hop_limit),
            ..Reply::text(200, &token, Outcome::Token)
        }
    }

    fn metadata(&self, now: u64, device: &Device, role: Option<&ImdsRole>, path: &str) -> Reply {
        let Some(rest) = path.strip_prefix("/latest") else {
            return Reply::not_found();
        };
        let availability_zone = format!("{}a", self.region);
        let text = |body: &str| Reply::metadata(body.to_owned());
        match rest {
            "" | "/" => text("dynamic\nmeta-data"),
            "/meta-data" | "/meta-data/" => text(if role.is_some() {
                "hostname\niam/\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nplacement/"
            } else {
                "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nplacement/"
            }),
            "/meta-data/instance-id" => Reply::metadata(instance_id(device.mac)),
            "/meta-data/hostname" | "/meta-data/local-hostname" => text(&device.name),
            "/meta-data/local-ipv4" => Reply::metadata(device.address.to_string()),
            "/meta-data/mac" => Reply::metadata(device.mac.to_string()),
            "/meta-data/placement" | "/meta-data/placement/" => text("availability-zone\nregion"),
            "/meta-data/placement/region" => text(&self.region),
            "/meta-data/placement/availability-zone" => text(&availability_zone),
            "/dynamic" | "/dynamic/" => text("instance-identity/"),
            "/dynamic/instance-identity" | "/dynamic/instance-identity/" => text("document"),
            "/dynamic/instance-identity/document" => {
                let document = IdentityDocument {
                    account_id: role.map_or("", |role| role.account_id()),
                    architecture: "x86_64",
                    availability_zone: &availability_zone,
                    image_id: "ami-00000000000000000",
                    instance_id: &instance_id(device.mac),
                    instance_type: "fieldnet.device",
                    private_ip: device.address,
                    region: &self.region,
                    version: "2017-09-30",
                };
                Reply::json(to_json(&document), Outcome::Metadata)
            }
            _ => match (rest.strip_prefix("/meta-data/iam"), role) {
                (Some(iam), Some(role)) => self.iam(now, device, role, iam),
                _ => Reply::not_found(),
            },
        }
    }

    /// Below `/latest/meta-data/iam` for a device whose class has `role`.
    fn iam(&self, now: u64, device: &Device, role: &ImdsRole, rest: &str) -> Reply {
        let name = role.role_name();
        match rest {
            "" | "/" => Reply::metadata("info\nsecurity-credentials/".to_owned()),
            "/info" => {
                let info = IamInfo {
                    code: "Success",
                    last_updated: time_text(now),
                    instance_profile_arn: format!(
                        "arn:aws:iam::{}:instance-profile/{name}",
                        role.account_id()
                    ),
                    instance_profile_id: format!(
                        "AIPA{}",
                        device.mac.0.map(|b| format!("{b:02X}")).concat()
                    ),
                };
                Reply::json(to_json(&info), Outcome::Metadata)
            }
            "/security-credentials" | "/security-credentials/" => Reply::metadata(name.to_owned()),
            _ if rest.strip_prefix("/security-credentials/") == Some(name) => {
                match self.sessions.serve(now, device.mac, &role.class) {
                    Served::Own(credentials) | Served::Reserve(credentials) => Reply::json(
                        credentials
                            .rendered
                            .get_or_init(|| to_json(&CredentialsDocument::success(credentials)))
                            .to_owned(),
                        Outcome::Credentials,
                    ),
                    Served::Unavailable => Reply::json(
                        to_json(&Unavailable {
                            code: "CredentialsUnavailable",
                            message: "no credentials with enough validity left: STS has not answered for too long",
                            last_updated: time_text(now),
                        }),
                        Outcome::Unavailable,
                    ),
                }
            }
            _ => Reply::not_found(),
        }
    }
}

/// An EC2-shaped instance ID from the MAC: `i-` and 17 hex digits.
pub fn instance_id(mac: Mac) -> String {
    let number = mac.0.iter().fold(0u64, |n, byte| n << 8 | u64::from(*byte));
    format!("i-{number:017x}")
}

fn time_text(millis: u64) -> String {
    format_time(SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsDocument<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

impl<'a> CredentialsDocument<'a> {
    fn success(credentials: &'a Credentials) -> Self {
        CredentialsDocument {
            code: "Success",
            last_updated: time_text(credentials.issued),
            kind: "AWS-HMAC",
            access_key_id: &credentials.access_key_id,
            secret_access_key: &credentials.secret_access_key,
            token: &credentials.session_token,
            expiration: time_text(credentials.expiration),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Unavailable {
    code: &'static str,
    message: &'static str,
    last_updated: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct IamInfo {
    code: &'static str,
    last_updated: String,
    instance_profile_arn: String,
    instance_profile_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument<'a> {
    account_id: &'a str,
    architecture: &'a str,
    availability_zone: &'a str,
    image_id: &'a str,
    instance_id: &'a str,
    instance_type: &'a str,
    private_ip: Ipv4Addr,
    region: &'a str,
    version: &'a str,
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
