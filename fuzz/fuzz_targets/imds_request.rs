//! imds-endpoint's request path: any request line and headers from a leased device (or a
//! spoofer of its address) never panic, and the answers keep their rules: nothing but 403 for
//! a spoofer, a token only with the hop limit, credentials only with a valid token.
//!
//! Input: `METHOD PATH` on the first line, then `name: value` lines; a token value `@` stands
//! for the last token issued. The first byte's low bit makes the asker a spoofer.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use fieldnet::bus::topics::Lease;
use fieldnet::config::{Config, SiteConfig};
use imds_endpoint::identity::{Identity, Mac};
use imds_endpoint::protocol::{Imds, Outcome, Request};
use imds_endpoint::sessions::{Credentials, Sessions};
use libfuzzer_sys::fuzz_target;

const SITE: &str = r#"
[site]
name = "fuzz"
domain = "fuzz.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[areas]]
name = "north"
[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"
[[appliances]]
id = 1
name = "one"
area = "north"
[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80:f0"]
[imds_endpoint]
aws_region = "eu-west-1"
[[imds_endpoint.roles]]
class = "cameras"
role_arn = "arn:aws:iam::123456789012:role/cams"
"#;

const NOW: u64 = 1_800_000_000_000;
const DEVICE: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 50);
const MAC: Mac = Mac([0, 0x80, 0xf0, 0, 0, 1]);
const SECRET: &str = "fuzz-secret-key";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        SiteConfig::from_str(SITE, "fuzz.toml")
            .unwrap()
            .view("one")
            .unwrap()
            .clone()
    })
}

fn endpoint() -> Imds {
    let config = config();
    let mut identity = Identity::from_config(config);
    let lease = Lease {
        client_id: None,
        address: DEVICE,
        mac: MAC.to_string(),
        hostname: Some("camera".to_owned()),
        network: "NETWORK1".to_owned(),
        expires: NOW + 3_600_000,
        class: None,
    };
    identity.lease(DEVICE, Some(&lease));
    let mut sessions = Sessions::from_config(&config.agents.imds_endpoint, "one");
    sessions.device(MAC, Some("cameras"), "camera");
    for fetch in sessions.due(NOW, usize::MAX) {
        let credentials = Credentials {
            access_key_id: "ASIAFUZZ".to_owned(),
            secret_access_key: SECRET.to_owned(),
            session_token: "token".to_owned(),
            expiration: NOW + fetch.duration.as_millis() as u64,
            issued: NOW,
            rendered: Default::default(),
        };
        sessions.fetched(NOW, &fetch.subject, Some(credentials));
    }
    Imds::new(&config.agents.imds_endpoint, identity, sessions)
}

fuzz_target!(|data: &[u8]| {
    let spoofer = data.first().is_some_and(|byte| byte & 1 == 1);
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into_owned();
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, path) = first.split_once(' ').unwrap_or((first, "/"));
    let mut imds = endpoint();
    let neighbour = if spoofer {
        Mac([2, 0, 0, 0, 0, 9])
    } else {
        MAC
    };
    let issued = imds
        .handle(
            NOW,
            DEVICE,
            Some(MAC),
            &Request {
                method: "PUT",
                path: "/latest/api/token",
                token: None,
                ttl: Some(b"60"),
                forwarded_for: false,
                body_len: 0,
            },
            || [3; 32],
        )
        .body;
    let (mut token, mut ttl, mut forwarded_for, mut body_len) = (None, None, false, 0u64);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "x-aws-ec2-metadata-token" => {
                token = Some(if value == "@" { issued.as_str() } else { value })
            }
            "x-aws-ec2-metadata-token-ttl-seconds" => ttl = Some(value),
            "x-forwarded-for" => forwarded_for = true,
            "content-length" => body_len = value.parse().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    let request = Request {
        method,
        path,
        token: token.map(str::as_bytes),
        ttl: ttl.map(str::as_bytes),
        forwarded_for,
        body_len,
    };
    let reply = imds.handle(NOW + 1, DEVICE, Some(neighbour), &request, || [5; 32]);
    if spoofer {
        assert_eq!(reply.status, 403);
    }
    if reply.outcome == Outcome::Token {
        assert!(reply.hop_limit.is_some() && reply.token_ttl.is_some());
        assert!(!forwarded_for);
    }
    if reply.body.contains(SECRET) {
        assert_eq!(reply.outcome, Outcome::Credentials);
        assert!(
            token.is_some_and(|token| token == issued),
            "credentials without a valid token"
        );
    }
});
