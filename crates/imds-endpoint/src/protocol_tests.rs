//! The request path of `protocol.rs`, rule by rule, on the test site of `testing.rs`.

use fieldnet::bus::topics::Lease;

use super::*;
use crate::sessions::Subject;

const NOW: u64 = 1_800_000_000_000;
const CAMERA: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 50);
const TILL: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 51);
const PRINTER: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 52);
const CAMERA_MAC: Mac = Mac([0, 0x80, 0xf0, 0, 0, 1]);
const TILL_MAC: Mac = Mac([0, 0x11, 0x22, 0, 0, 1]);
const PRINTER_MAC: Mac = Mac([0, 0x22, 0x33, 0, 0, 1]);

/// The endpoint with a camera, a till and a printer leased, and fresh sessions for every class.
fn imds() -> Imds {
    let config = crate::testing::config();
    let mut identity = Identity::from_config(&config);
    let mut sessions = Sessions::from_config(&config.agents.imds_endpoint, "one");
    for (address, mac, name) in [
        (CAMERA, CAMERA_MAC, "camera-1"),
        (TILL, TILL_MAC, "till-1"),
        (PRINTER, PRINTER_MAC, "printer-1"),
    ] {
        let lease = Lease {
            client_id: None,
            address,
            mac: mac.to_string(),
            hostname: Some(name.to_owned()),
            network: "NETWORK1".to_owned(),
            expires: NOW + 3_600_000,
            class: None,
        };
        identity.lease(address, Some(&lease));
        sessions.device(mac, identity.class_of(mac), name);
    }
    for (serial, fetch) in sessions.due(NOW, usize::MAX).into_iter().enumerate() {
        let credentials = Credentials {
            access_key_id: format!(
                "ASIA{serial}-{}",
                fetch.role_arn.rsplit('/').next().unwrap()
            ),
            secret_access_key: "secret".to_owned(),
            session_token: "session-token".to_owned(),
            expiration: NOW + fetch.duration.as_millis() as u64,
            issued: NOW,
            rendered: Default::default(),
        };
        let own = matches!(fetch.subject, Subject::Device(_));
        sessions.fetched(NOW, &fetch.subject, own.then_some(credentials));
    }
    Imds::new(&config.agents.imds_endpoint, identity, sessions)
}

fn request<'a>(method: &'a str, path: &'a str, token: Option<&'a str>) -> Request<'a> {
    Request {
        method,
        path,
        token: token.map(str::as_bytes),
        ttl: None,
        forwarded_for: false,
        body_len: 0,
    }
}

fn put_token<'a>(ttl: &'a str) -> Request<'a> {
    Request {
        ttl: Some(ttl.as_bytes()),
        ..request("PUT", "/latest/api/token", None)
    }
}

fn mac_of(address: Ipv4Addr) -> Mac {
    match address {
        CAMERA => CAMERA_MAC,
        TILL => TILL_MAC,
        _ => PRINTER_MAC,
    }
}

fn ask(imds: &mut Imds, at: u64, from: Ipv4Addr, request: &Request<'_>) -> Reply {
    imds.handle(at, from, Some(mac_of(from)), request, || [at as u8; 32])
}

fn token(imds: &mut Imds, from: Ipv4Addr, ttl: &str) -> String {
    let reply = ask(imds, NOW, from, &put_token(ttl));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[test]
fn the_token_put_answers_with_its_ttl_and_the_hop_limit() {
    let mut imds = imds();
    let reply = ask(&mut imds, NOW, CAMERA, &put_token("21600"));
    assert_eq!(
        (reply.status, reply.token_ttl, reply.hop_limit),
        (200, Some(21600), Some(1))
    );
    for ttl in ["0", "21601", "-1", "soon", ""] {
        let reply = ask(&mut imds, NOW, CAMERA, &put_token(ttl));
        assert_eq!(
            (reply.status, reply.outcome),
            (400, Outcome::BadRequest),
            "ttl {ttl:?}"
        );
    }
    let missing = request("PUT", "/latest/api/token", None);
    assert_eq!(ask(&mut imds, NOW, CAMERA, &missing).status, 400);
    let forwarded = Request {
        forwarded_for: true,
        ..put_token("60")
    };
    assert_eq!(ask(&mut imds, NOW, CAMERA, &forwarded).status, 400);
    let get = request("GET", "/latest/api/token", None);
    assert_eq!(ask(&mut imds, NOW, CAMERA, &get).status, 405);
}

#[test]
fn credentials_need_a_valid_token_unless_the_class_allows_imdsv1() {
    let mut imds = imds();
    let path = "/latest/meta-data/iam/security-credentials/field-cameras";
    assert_eq!(
        ask(&mut imds, NOW, CAMERA, &request("GET", path, None)).status,
        401
    );
    let token = token(&mut imds, CAMERA, "2");
    let reply = ask(
        &mut imds,
        NOW + 1_999,
        CAMERA,
        &request("GET", path, Some(&token)),
    );
    assert_eq!((reply.status, reply.outcome), (200, Outcome::Credentials));
    let document: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(document["Code"], "Success");
    assert_eq!(document["Type"], "AWS-HMAC");
    assert_eq!(document["Token"], "session-token");
    assert!(
        document["AccessKeyId"]
            .as_str()
            .unwrap()
            .ends_with("field-cameras")
    );
    assert_eq!(document["Expiration"], time_text(NOW + 3_600_000));
    // Expired, or another client's.
    let expired = ask(
        &mut imds,
        NOW + 2_000,
        CAMERA,
        &request("GET", path, Some(&token)),
    );
    assert_eq!(
        (expired.status, expired.outcome),
        (401, Outcome::Unauthorized)
    );
    let till_path = "/latest/meta-data/iam/security-credentials/field-tills";
    assert_eq!(
        ask(
            &mut imds,
            NOW,
            TILL,
            &request("GET", till_path, Some(&token))
        )
        .status,
        401
    );
    // The till's class allows IMDSv1, but a bad token is still refused.
    assert_eq!(
        ask(&mut imds, NOW, TILL, &request("GET", till_path, None)).status,
        200
    );
    assert_eq!(
        ask(
            &mut imds,
            NOW,
            TILL,
            &request("GET", till_path, Some("bad"))
        )
        .status,
        401
    );
}

#[test]
fn each_class_gets_its_own_role_and_a_class_without_one_gets_404() {
    let mut imds = imds();
    let listing = "/latest/meta-data/iam/security-credentials/";
    for (from, role) in [(CAMERA, "field-cameras"), (TILL, "field-tills")] {
        let token = token(&mut imds, from, "60");
        let reply = ask(&mut imds, NOW, from, &request("GET", listing, Some(&token)));
        assert_eq!((reply.status, reply.body.as_str()), (200, role));
        let other = if role == "field-cameras" {
            "field-tills"
        } else {
            "field-cameras"
        };
        let path = format!("{listing}{other}");
        assert_eq!(
            ask(&mut imds, NOW, from, &request("GET", &path, Some(&token))).status,
            404
        );
    }
    let token = token(&mut imds, PRINTER, "60");
    for path in [
        listing,
        "/latest/meta-data/iam/info",
        "/latest/meta-data/iam/security-credentials/field-cameras",
    ] {
        let reply = ask(&mut imds, NOW, PRINTER, &request("GET", path, Some(&token)));
        assert_eq!(
            (reply.status, reply.outcome),
            (404, Outcome::NotFound),
            "{path}"
        );
    }
    // The printer still learns the facts every instance has.
    let region = ask(
        &mut imds,
        NOW,
        PRINTER,
        &request("GET", "/latest/meta-data/placement/region", Some(&token)),
    );
    assert_eq!((region.status, region.body.as_str()), (200, "eu-west-1"));
}

#[test]
fn a_spoofed_or_unknown_asker_gets_nothing_not_even_a_token() {
    let mut imds = imds();
    let spoofer = Mac([2, 0, 0, 0, 0, 0x66]);
    let reply = imds.handle(NOW, CAMERA, Some(spoofer), &put_token("60"), || [1; 32]);
    assert_eq!(
        (reply.status, reply.outcome),
        (403, Outcome::Refused(Refusal::MacMismatch))
    );
    let uplink_side = Ipv4Addr::new(192, 168, 8, 1);
    let reply = imds.handle(NOW, uplink_side, Some(spoofer), &put_token("60"), || {
        [1; 32]
    });
    assert_eq!(reply.outcome, Outcome::Refused(Refusal::NotServed));
    imds.identity.forget(CAMERA_MAC, true);
    let reply = ask(&mut imds, NOW, CAMERA, &put_token("60"));
    assert_eq!(reply.outcome, Outcome::Refused(Refusal::Forgotten));
}

#[test]
fn the_paths_sdks_read_answer_as_on_ec2_and_the_rest_is_404() {
    let mut imds = imds();
    let token = token(&mut imds, CAMERA, "60");
    let get =
        |imds: &mut Imds, path: &str| ask(imds, NOW, CAMERA, &request("GET", path, Some(&token)));
    assert_eq!(
        get(&mut imds, "/latest/meta-data/instance-id").body,
        "i-000000080f0000001"
    );
    assert_eq!(
        get(&mut imds, "/latest/meta-data/local-ipv4").body,
        "10.101.0.50"
    );
    assert_eq!(
        get(&mut imds, "/latest/meta-data/placement/availability-zone").body,
        "eu-west-1a"
    );
    let document: serde_json::Value =
        serde_json::from_str(&get(&mut imds, "/latest/dynamic/instance-identity/document").body)
            .unwrap();
    assert_eq!(document["accountId"], "123456789012");
    assert_eq!(document["privateIp"], "10.101.0.50");
    assert_eq!(document["region"], "eu-west-1");
    let info: serde_json::Value =
        serde_json::from_str(&get(&mut imds, "/latest/meta-data/iam/info").body).unwrap();
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/field-cameras"
    );
    for path in [
        "/latest/meta-data/ami-id",
        "/latest/user-data",
        "/",
        "/2021-01-03/meta-data/",
        "/latest/meta-data/iam/security-credentials/field-cameras/x",
    ] {
        assert_eq!(get(&mut imds, path).status, 404, "{path}");
    }
    let post = ask(
        &mut imds,
        NOW,
        CAMERA,
        &request("POST", "/latest/meta-data/", Some(&token)),
    );
    assert_eq!(post.status, 405);
    let big = Request {
        body_len: MAX_BODY + 1,
        ..request("GET", "/latest/meta-data/", Some(&token))
    };
    assert_eq!(ask(&mut imds, NOW, CAMERA, &big).status, 400);
}

#[test]
fn a_device_asking_too_fast_is_throttled() {
    let mut imds = imds();
    let token = token(&mut imds, CAMERA, "60");
    let path = request("GET", "/latest/meta-data/instance-id", Some(&token));
    let throttled = (0..1_000)
        .map(|_| ask(&mut imds, NOW, CAMERA, &path))
        .filter(|reply| reply.status == 429)
        .count();
    assert!(throttled > 0 && throttled < 1_000, "{throttled}");
    // Another device is not held back.
    let till = request("GET", "/latest/meta-data/instance-id", None);
    assert_eq!(ask(&mut imds, NOW, TILL, &till).status, 200);
}

#[test]
fn credentials_never_go_out_with_less_than_refuse_below_left() {
    let mut imds = imds();
    let path = "/latest/meta-data/iam/security-credentials/field-cameras";
    // The camera's own session was fetched at NOW for an hour and no reserve exists; 36
    // minutes on, 24 minutes are left: below the 25 of refuse_below.
    let later = NOW + 36 * 60_000;
    let token = {
        let reply = ask(&mut imds, later, CAMERA, &put_token("60"));
        reply.body
    };
    let reply = ask(
        &mut imds,
        later,
        CAMERA,
        &request("GET", path, Some(&token)),
    );
    assert_eq!((reply.status, reply.outcome), (200, Outcome::Unavailable));
    let document: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(document["Code"], "CredentialsUnavailable");
    assert!(document.get("AccessKeyId").is_none());
}
