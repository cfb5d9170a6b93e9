//! imds-endpoint on a real lab area: the real dhcp-takeover leases addresses to client
//! namespaces (udhcpc), the bus carries the leases, moto in the lab's internet namespace is
//! AWS with signature checks on, and devices with no keys and no `AWS_*` variables call SQS
//! and SNS with what the endpoint hands them.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{Lab, LabProcess, Netns, SiteSpec};
use support::*;

/// The agents as this test run built them.
fn binaries() -> Binaries {
    let own = env!("CARGO_BIN_EXE_imds-endpoint");
    Binaries {
        imds: own.to_owned(),
        bus: lab::sibling_binary(own, "fieldnet-bus", "fieldnet-bus"),
        dhcp: lab::sibling_binary(own, "dhcp-takeover", "dhcp-takeover"),
    }
}

/// Runs `program args…` in `client` with an empty environment but for `PATH` and a `HOME` in
/// the test's directory: no keys, no `AWS_*` variables. Panics with the endpoint's and moto's
/// logs when it fails.
fn as_device(
    lab: &Lab,
    client: &Netns,
    program: &str,
    args: &[&str],
    logs: &[&LabProcess],
) -> String {
    let home = format!("HOME={}", lab.dir().display());
    let mut all = vec!["-i", "PATH=/usr/local/bin:/usr/bin:/bin", &home, program];
    all.extend(args);
    match client.exec_timeout("env", &all, PATIENCE) {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(error) => {
            let logs: Vec<String> = logs.iter().map(|process| process.log()).collect();
            panic!(
                "{program} {args:?} as a device: {error:#}\n{}",
                logs.join("\n---\n")
            )
        }
    }
}

/// The Rust device program (`examples/sdk_device.rs`), built if this run did not build it.
fn sdk_device() -> String {
    let own = Path::new(env!("CARGO_BIN_EXE_imds-endpoint"));
    let path = own.parent().unwrap().join("examples/sdk_device");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "imds-endpoint", "--example", "sdk_device"])
            .status()
            .unwrap();
        assert!(status.success(), "building examples/sdk_device");
    }
    path.display().to_string()
}

/// The status of asking for the role name, token and all (0 when even the token is refused).
fn role_of_status(client: &Netns) -> u16 {
    let (status, token) = curl(
        client,
        "PUT",
        "/latest/api/token",
        &["X-aws-ec2-metadata-token-ttl-seconds: 60"],
    );
    if status != 200 {
        return 0;
    }
    let header = format!("X-aws-ec2-metadata-token: {token}");
    curl(
        client,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[&header],
    )
    .0
}

/// The role name `client` is told, with a fresh token.
fn role_of(client: &Netns) -> (u16, String) {
    let header = format!("X-aws-ec2-metadata-token: {}", token(client));
    curl(
        client,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[&header],
    )
}

#[test]
fn devices_without_keys_call_sqs_and_sns_through_boto3_both_aws_clis_and_aws_sdk_rust() {
    let Some(mut lab) = Lab::for_test("imds-sdk") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 1)).unwrap();
    let (moto, aws) = start_moto(&mut lab, &site.internet);
    let config = site_file(&site, lab.dir(), "", "");
    let agents = start_agents(&mut lab, &binaries(), &site, &config, &aws);
    let camera = &site.areas[0].clients[0].ns;
    lease(&lab, camera, CAMERA_MAC);
    let endpoint = format!("http://{MOTO}");
    let logs = [&agents[2], &moto];

    // boto3 (PyPI).
    let said = as_device(
        &lab,
        camera,
        &python(),
        &["-c", BOTO3_DEVICE, &endpoint, &aws.queue, &aws.topic],
        &logs,
    );
    assert!(said.contains("method iam-role"), "{said}");
    assert!(said.contains("sqs ") && said.contains("sns "), "{said}");

    // The AWS CLI v2 (Debian's awscli) and v1 (PyPI's, run as a module of the same Python).
    let python = python();
    let v1 = [python.as_str(), "-m", "awscli"];
    let clis: [&[&str]; 2] = [&["/usr/bin/aws"], &v1];
    for cli in clis {
        let version = as_device(
            &lab,
            camera,
            cli[0],
            &[&cli[1..], &["--version"]].concat(),
            &logs,
        );
        let common = [
            "--endpoint-url",
            endpoint.as_str(),
            "--region",
            REGION,
            "--output",
            "json",
        ];
        let sent = as_device(
            &lab,
            camera,
            cli[0],
            &[
                &cli[1..],
                &common,
                &[
                    "sqs",
                    "send-message",
                    "--queue-url",
                    &aws.queue,
                    "--message-body",
                    "hello",
                ],
            ]
            .concat(),
            &logs,
        );
        assert!(sent.contains("MessageId"), "{cli:?}: {sent}");
        let published = as_device(
            &lab,
            camera,
            cli[0],
            &[
                &cli[1..],
                &common,
                &[
                    "sns",
                    "publish",
                    "--topic-arn",
                    &aws.topic,
                    "--message",
                    "hello",
                ],
            ]
            .concat(),
            &logs,
        );
        assert!(
            published.contains("MessageId"),
            "{cli:?} ({version}): {published}"
        );
    }

    // aws-sdk-rust: aws-config's default chain, its own IMDS client (which needs the TTL header).
    let said = as_device(
        &lab,
        camera,
        &sdk_device(),
        &[&endpoint, REGION, &aws.queue, &aws.topic],
        &logs,
    );
    assert!(
        said.contains("sqs sent") && said.contains("sns published"),
        "{said}"
    );
    // Every call was signed with the camera role's session: moto checked each signature.
    let sent = curl_metrics(
        &site.areas[0].appliance,
        "fieldnet_imds_endpoint_requests_total{outcome=\"credentials\"}",
    );
    assert!(sent >= 4.0, "credentials served {sent} times");
}

#[test]
fn each_class_gets_its_role_others_get_nothing_and_tokens_keep_to_their_rules() {
    let Some(mut lab) = Lab::for_test("imds-who") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 4)).unwrap();
    let (_moto, aws) = start_moto(&mut lab, &site.internet);
    let config = site_file(&site, lab.dir(), "", "");
    let agents = start_agents(&mut lab, &binaries(), &site, &config, &aws);
    let appliance = &site.areas[0].appliance;
    let clients = &site.areas[0].clients;
    let (camera, till, printer, spoofer) = (
        &clients[0].ns,
        &clients[1].ns,
        &clients[2].ns,
        &clients[3].ns,
    );
    let camera_address = lease(&lab, camera, CAMERA_MAC);
    lease(&lab, till, TILL_MAC);
    lease(&lab, printer, PRINTER_MAC);

    // Two classes, two roles; a class without a role gets 404, never a default role.
    assert_eq!(role_of(camera), (200, "field-cameras".to_owned()));
    assert_eq!(role_of(till), (200, "field-tills".to_owned()));
    assert_eq!(role_of(printer).0, 404);

    // The token PUT: X-Forwarded-For, or a TTL out of range, is 400; no token is 401, and so
    // is an expired one.
    let ttl_60 = "X-aws-ec2-metadata-token-ttl-seconds: 60";
    let (status, _) = curl(
        camera,
        "PUT",
        "/latest/api/token",
        &[ttl_60, "X-Forwarded-For: 10.0.0.1"],
    );
    assert_eq!(status, 400);
    for ttl in ["0", "21601"] {
        let header = format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}");
        assert_eq!(
            curl(camera, "PUT", "/latest/api/token", &[&header]).0,
            400,
            "ttl {ttl}"
        );
    }
    let listing = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(curl(camera, "GET", listing, &[]).0, 401);
    let (_, short) = curl(
        camera,
        "PUT",
        "/latest/api/token",
        &["X-aws-ec2-metadata-token-ttl-seconds: 1"],
    );
    let header = format!("X-aws-ec2-metadata-token: {short}");
    assert_eq!(curl(camera, "GET", listing, &[&header]).0, 200);
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(
        curl(camera, "GET", listing, &[&header]).0,
        401,
        "an expired token"
    );

    // A device behind the printer (a container behind its NAT, one routed hop away): its PUT
    // is answered with IP TTL 1, which the printer's forwarding drops. The printer itself
    // gets its token.
    let far = lab.netns("far").unwrap();
    lab.veth(printer, "far0", &far, "eth0").unwrap();
    lab.addr(printer, "far0", "172.16.0.1/30").unwrap();
    lab.addr(&far, "eth0", "172.16.0.2/30").unwrap();
    far.ip(&["route", "add", "default", "via", "172.16.0.1"])
        .unwrap();
    lab.nat(printer, "eth0").unwrap();
    assert_eq!(curl(printer, "PUT", "/latest/api/token", &[ttl_60]).0, 200);
    let tokens = "fieldnet_imds_endpoint_requests_total{outcome=\"token\"}";
    let before = curl_metrics(appliance, tokens);
    let (status, body) = curl(&far, "PUT", "/latest/api/token", &[ttl_60]);
    assert_eq!(status, 0, "one hop away got an answer: {status} {body}");
    // It was asked and answered (through the printer's NAT, as the printer): the answer died
    // on the way back.
    assert_eq!(curl_metrics(appliance, tokens), before + 1.0);

    // The operator forgets the camera (lost): it gets nothing at once, and again after `--undo`.
    let fieldctl = lab::sibling_binary(env!("CARGO_BIN_EXE_imds-endpoint"), "fieldctl", "fieldctl");
    let socket = lab::bus_socket(lab.dir(), 1);
    let forget = |extra: &[&str]| {
        let output = std::process::Command::new(&fieldctl)
            .arg("--socket")
            .arg(&socket)
            .args(["device", "forget", CAMERA_MAC])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let said = forget(&[]);
    assert!(
        said.contains("sts:SourceIdentity = 02-ca-00-00-00-01"),
        "{said}"
    );
    eventually("the forgotten camera refused", || {
        (curl(camera, "PUT", "/latest/api/token", &[ttl_60]).0 == 403).then_some(())
    });
    assert!(
        curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_refused_total{reason=\"forgotten\"}"
        ) >= 1.0
    );
    forget(&["--undo"]);
    eventually("the camera served again", || {
        (role_of_status(camera) == 200).then_some(())
    });

    // A spoofer takes the camera's address with its own MAC: refused, and counted as such.
    camera.ip(&["link", "set", "eth0", "down"]).unwrap();
    spoofer.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    spoofer
        .ip(&[
            "addr",
            "add",
            &format!("{camera_address}/24"),
            "dev",
            "eth0",
        ])
        .unwrap();
    spoofer
        .ip(&["route", "replace", "default", "via", "10.101.0.1"])
        .unwrap();
    let (status, body) = curl(spoofer, "PUT", "/latest/api/token", &[ttl_60]);
    assert_ne!(status, 200, "the spoofer got a token: {body}");
    let (status, _) = curl(spoofer, "GET", listing, &[]);
    assert_ne!(status, 200);
    eventually("the spoofer counted as a MAC mismatch", || {
        (curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_refused_total{reason=\"mac_mismatch\"}",
        ) >= 1.0)
            .then_some(())
    });

    // The uplink side is refused.
    let router = &site.areas[0].uplinks[0].router;
    router
        .ip(&[
            "route",
            "replace",
            "169.254.169.254/32",
            "via",
            "192.168.8.2",
        ])
        .unwrap();
    assert_ne!(curl(router, "PUT", "/latest/api/token", &[ttl_60]).0, 200);
    assert!(
        curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_refused_total{reason=\"not_served\"}"
        ) >= 1.0
    );
    drop(agents);
}

/// The camera's credentials document as the endpoint hands it out now, with the seconds of
/// validity it has left by this machine's clock (`None` for a non-`Success` answer).
fn credentials_left(client: &Netns, role: &str) -> Option<(String, f64)> {
    // Right after a restart the endpoint may not know the device's lease yet: no token then.
    let header = format!("X-aws-ec2-metadata-token: {}", try_token(client).ok()?);
    let path = format!("/latest/meta-data/iam/security-credentials/{role}");
    let (status, body) = curl(client, "GET", &path, &[&header]);
    if status != 200 {
        return None;
    }
    let document: serde_json::Value = serde_json::from_str(&body).ok()?;
    if document["Code"] != "Success" {
        return None;
    }
    let expiration = fieldnet_aws::parse_time(document["Expiration"].as_str()?)?;
    let left = expiration
        .duration_since(std::time::SystemTime::now())
        .map_or(0.0, |left| left.as_secs_f64());
    Some((document["AccessKeyId"].as_str()?.to_owned(), left))
}

#[test]
fn with_sts_gone_longer_than_a_session_devices_are_served_from_the_reserve_even_after_a_restart() {
    let Some(mut lab) = Lab::for_test("imds-outage") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 2)).unwrap();
    let (moto, aws) = start_moto(&mut lab, &site.internet);
    // Sessions of 30 s (at least 20 s handed out, nothing below 5 s) and reserves of 2 min.
    let config = site_file(
        &site,
        lab.dir(),
        "session_duration_s = 30\nmin_validity_s = 20\nrefuse_below_s = 5\n",
        "reserve_duration_s = 120",
    );
    let mut agents = start_agents(&mut lab, &binaries(), &site, &config, &aws);
    let appliance = &site.areas[0].appliance;
    let (camera, till) = (&site.areas[0].clients[0].ns, &site.areas[0].clients[1].ns);
    lease(&lab, camera, CAMERA_MAC);
    eventually("the camera's own session and the cameras' reserve", || {
        let own = curl_metrics(appliance, "fieldnet_imds_endpoint_devices") >= 1.0;
        let reserve = curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_runway_seconds{class=\"cameras\"}",
        ) > 60.0;
        (own && reserve).then_some(())
    });
    let (before, _) = credentials_left(camera, "field-cameras").unwrap();

    // STS goes away for the appliance (its own calls to moto are dropped); the devices' own
    // traffic to AWS still passes.
    appliance
        .exec_with_stdin(
            "nft",
            &["-f", "-"],
            b"table ip imds_lab_outage {\n chain out {\n  type filter hook output priority 0; policy accept;\n  ip daddr 192.0.2.50 drop\n }\n}\n",
        )
        .unwrap();
    let outage = Instant::now();
    let mut keys = std::collections::BTreeSet::from([before]);
    let mut till_joined = false;
    // Longer than a device session: every 3 s the camera still gets credentials with at least
    // refuse_below left, and once its own session is too short, the reserve's.
    while outage.elapsed() < Duration::from_secs(45) {
        let (key, left) = credentials_left(camera, "field-cameras").unwrap_or_else(|| {
            panic!(
                "no credentials {:?} into the outage:\n{}",
                outage.elapsed(),
                agents[2].log()
            )
        });
        assert!(left >= 5.0, "handed out with {left} s left");
        keys.insert(key);
        if !till_joined && outage.elapsed() > Duration::from_secs(15) {
            // A device that joins during the outage is served from the reserve.
            lease(&lab, till, TILL_MAC);
            let (_, left) = eventually("the till served during the outage", || {
                credentials_left(till, "field-tills")
            });
            assert!(left >= 5.0);
            till_joined = true;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(till_joined);
    assert!(
        keys.len() >= 2,
        "the camera moved from its own session to the reserve: {keys:?}"
    );
    assert!(
        curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_sts_calls_total{result=\"failed\"}"
        ) >= 1.0
    );
    // The camera, with no keys, still sends to SQS with what it is handed.
    let said = as_device(
        &lab,
        camera,
        &python(),
        &[
            "-c",
            BOTO3_DEVICE,
            &format!("http://{MOTO}"),
            &aws.queue,
            &aws.topic,
        ],
        &[&agents[2], &moto],
    );
    assert!(said.contains("sqs "), "{said}");

    // The agent restarts during the outage: the cache serves again before STS could answer.
    let old = agents.pop().unwrap();
    old.kill().unwrap();
    let restarted = Instant::now();
    agents.push(start_imds(&mut lab, &binaries(), appliance, &config, &aws));
    eventually("credentials after the restart", || {
        credentials_left(camera, "field-cameras")
    });
    let served_after = restarted.elapsed();
    assert_eq!(
        curl_metrics(
            appliance,
            "fieldnet_imds_endpoint_sts_calls_total{result=\"ok\"}"
        ),
        0.0,
        "STS is still away"
    );
    eprintln!("restart during the outage: credentials served {served_after:?} after start");
}
