//! What imds-endpoint's lab tests and its bench share: moto as AWS in the lab's internet
//! (IAM user and roles, a queue, a topic, then signature checks on), the site file, the
//! appliance's agents, a device's lease (udhcpc) and its requests (curl).

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{Lab, LabProcess, Netns};

/// The programs the lab runs.
pub struct Binaries {
    pub imds: String,
    pub bus: String,
    pub dhcp: String,
}

pub const PATIENCE: Duration = Duration::from_secs(60);
/// moto, as AWS, on the lab's internet.
pub const MOTO_HOST: &str = "192.0.2.50";
pub const MOTO: &str = "192.0.2.50:5000";
pub const REGION: &str = "us-east-1";
pub const CAMERA_MAC: &str = "02:ca:00:00:00:01";
pub const PRINTER_MAC: &str = "02:bb:00:00:00:01";
pub const TILL_MAC: &str = "02:aa:00:00:00:01";

/// IAM, SQS and SNS made in moto before signatures are checked; prints what the test needs.
pub const MOTO_SETUP: &str = r#"
import json, sys, urllib.request, boto3
endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
allow = lambda actions: json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
iam.create_user(UserName="appliance-1")
iam.put_user_policy(UserName="appliance-1", PolicyName="assume", PolicyDocument=allow(["sts:AssumeRole", "sts:SetSourceIdentity"]))
key = iam.create_access_key(UserName="appliance-1")["AccessKey"]
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"]}]})
for name in ["field-cameras", "field-tills"]:
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, MaxSessionDuration=43200)
    iam.put_role_policy(RoleName=name, PolicyName="send", PolicyDocument=allow(["sqs:*", "sns:*"]))
queue = boto3.client("sqs", **kw).create_queue(QueueName="field")["QueueUrl"]
topic = boto3.client("sns", **kw).create_topic(Name="field")["TopicArn"]
request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
urllib.request.urlopen(request).read()
print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "queue": queue, "topic": topic}))
"#;

/// A device's program: boto3 with nothing but the endpoint and region given, so its
/// credentials can only come from the instance metadata service.
pub const BOTO3_DEVICE: &str = r#"
import sys, boto3
endpoint, queue, topic = sys.argv[1:4]
session = boto3.session.Session(region_name="us-east-1")
credentials = session.get_credentials()
assert credentials is not None, "no credentials"
print("method", credentials.method)
sqs = session.client("sqs", endpoint_url=endpoint)
print("sqs", sqs.send_message(QueueUrl=queue, MessageBody="hello from a device")["MessageId"])
sns = session.client("sns", endpoint_url=endpoint)
print("sns", sns.publish(TopicArn=topic, Message="hello")["MessageId"])
"#;

pub struct Aws {
    pub key: String,
    pub secret: String,
    pub queue: String,
    pub topic: String,
}

pub fn eventually<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn start_moto(lab: &mut Lab, internet: &Netns) -> (LabProcess, Aws) {
    lab.addr(internet, lab::INTERNET_BRIDGE, &format!("{MOTO_HOST}/24"))
        .unwrap();
    let moto = lab
        .spawn(
            internet,
            "env",
            &[
                "INITIAL_NO_AUTH_ACTION_COUNT=1000000",
                fieldnet_aws::testing::MOTO_SERVER_PROGRAM,
                "-H",
                MOTO_HOST,
                "-p",
                "5000",
            ],
        )
        .unwrap();
    internet
        .run(|| eventually("moto listening", || std::net::TcpStream::connect(MOTO).ok()))
        .unwrap();
    let output = internet
        .exec("python3", &["-c", MOTO_SETUP, &format!("http://{MOTO}")])
        .unwrap_or_else(|error| panic!("moto setup: {error:#}\n{}", moto.log()));
    let made: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the setup prints JSON");
    let text = |key: &str| made[key].as_str().unwrap().to_owned();
    let aws = Aws {
        key: text("key"),
        secret: text("secret"),
        queue: text("queue"),
        topic: text("topic"),
    };
    (moto, aws)
}

/// The site file: cameras and tills have roles, printers are a class without one. `extra`
/// goes into `[imds_endpoint]`, `reserve` into each role.
pub fn site_file(site: &lab::Site, dir: &Path, extra: &str, reserve: &str) -> String {
    let sections = format!(
        "[[dhcp_takeover.classes]]\nname = \"cameras\"\nmac_prefixes = [\"02:ca:00\"]\n\n\
         [[dhcp_takeover.classes]]\nname = \"printers\"\nmac_prefixes = [\"02:bb:00\"]\n\n\
         [[dhcp_takeover.classes]]\nname = \"tills\"\nmac_prefixes = [\"02:aa:00\"]\n\n\
         [imds_endpoint]\naws_region = \"{REGION}\"\naws_endpoint = \"http://{MOTO}\"\ncache = \"{}\"\n{extra}\n\
         [[imds_endpoint.roles]]\nclass = \"cameras\"\nrole_arn = \"arn:aws:iam::123456789012:role/field-cameras\"\n{reserve}\n\
         [[imds_endpoint.roles]]\nclass = \"tills\"\nrole_arn = \"arn:aws:iam::123456789012:role/field-tills\"\n{reserve}\n",
        dir.join("imds-cache.json").display()
    );
    lab::SiteFile::new(site, dir)
        .sections(&sections)
        .write()
        .unwrap()
        .display()
        .to_string()
}

/// The broker, dhcp-takeover and imds-endpoint of appliance 1 (the last with the appliance's
/// own keys, as a credentials file or environment would give them).
pub fn start_agents(
    lab: &mut Lab,
    binaries: &Binaries,
    site: &lab::Site,
    config: &str,
    aws: &Aws,
) -> Vec<LabProcess> {
    let appliance = &site.areas[0].appliance;
    let name = lab::appliance_name(1);
    let args = ["--config", config, "--appliance", &name];
    let mut agents = vec![lab.spawn(appliance, &binaries.bus, &args).unwrap()];
    agents.push(lab.spawn(appliance, &binaries.dhcp, &args).unwrap());
    agents.push(start_imds(lab, binaries, appliance, config, aws));
    agents
}

pub fn start_imds(
    lab: &mut Lab,
    binaries: &Binaries,
    appliance: &Netns,
    config: &str,
    aws: &Aws,
) -> LabProcess {
    let name = lab::appliance_name(1);
    let key = format!("AWS_ACCESS_KEY_ID={}", aws.key);
    let secret = format!("AWS_SECRET_ACCESS_KEY={}", aws.secret);
    let imds = lab
        .spawn(
            appliance,
            "env",
            &[
                &key,
                &secret,
                "AWS_EC2_METADATA_DISABLED=true",
                &binaries.imds,
                "--config",
                config,
                "--appliance",
                &name,
            ],
        )
        .unwrap();
    imds.wait_for_log("serving instance metadata", PATIENCE)
        .unwrap_or_else(|error| panic!("{error:#}"));
    imds
}

/// Gives `client` the MAC `mac` and a lease from dhcp-takeover; returns the leased address.
pub fn lease(lab: &Lab, client: &Netns, mac: &str) -> String {
    lab::udhcpc_lease(lab.dir(), client, mac, PATIENCE).unwrap_or_else(|error| panic!("{error:#}"))
}

/// `curl` to the metadata address from `client`: (status, body).
pub fn curl(client: &Netns, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let url = format!("http://169.254.169.254{path}");
    let mut args = vec![
        "-s",
        "-m",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(&url);
    let output = client
        .exec_unchecked("curl", &args, Duration::from_secs(10))
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The Python interpreter itself (not a pyenv shim, which needs its own variables), so a
/// device's program runs with an empty environment.
pub fn python() -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn token(client: &Netns) -> String {
    try_token(client).unwrap_or_else(|(status, body)| panic!("no token: {status} {body}"))
}

/// A token, or the status and body of the refusal.
pub fn try_token(client: &Netns) -> Result<String, (u16, String)> {
    let (status, body) = curl(
        client,
        "PUT",
        "/latest/api/token",
        &["X-aws-ec2-metadata-token-ttl-seconds: 60"],
    );
    if status == 200 {
        Ok(body)
    } else {
        Err((status, body))
    }
}

/// One metric's value from imds-endpoint's default metrics listener, in the appliance.
pub fn curl_metrics(appliance: &Netns, name_and_labels: &str) -> f64 {
    let output = appliance
        .exec_unchecked(
            "curl",
            &["-s", "-m", "5", "http://127.0.0.1:9705/metrics"],
            Duration::from_secs(10),
        )
        .unwrap();
    let needle = format!("{name_and_labels} ");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix(&needle)
                .map(|value| value.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}
