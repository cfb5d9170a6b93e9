//! The client against in-process HTTP peers on 127.0.0.1 port 0: what a signed request looks
//! like on the wire, how non-XML errors and silent peers end. No moto, no AWS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use fieldnet_aws::{AwsApi, AwsError, Client, ClientConfig, RouteTarget, Service};
use reqwest::Method;

/// One request as the peer saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (header, value) = line.split_once(':')?;
            header
                .trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// A peer that records each request and answers it with `response`, or never answers when
/// `response` is None; one request per connection.
fn peer(response: Option<String>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    // Detached: it blocks in accept until the test process ends.
    thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else {
                continue;
            };
            let recorded = Arc::clone(&recorded);
            let response = response.clone();
            thread::spawn(move || {
                let Some(request) = read_request(&mut connection) else {
                    return;
                };
                recorded.lock().unwrap().push(request);
                match response {
                    Some(response) => {
                        let _ = connection.write_all(response.as_bytes());
                    }
                    // Hold the connection open and silent until the client gives up.
                    None => {
                        let _ = connection.read(&mut [0u8; 1]);
                    }
                }
            });
        }
    });
    (address, seen)
}

fn read_request(connection: &mut TcpStream) -> Option<Seen> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = connection.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut seen = Seen {
        head,
        body: String::new(),
    };
    let length: usize = seen
        .header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = connection.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    seen.body = String::from_utf8(body).ok()?;
    Some(seen)
}

fn config(address: SocketAddr, region: &str) -> ClientConfig {
    ClientConfig {
        endpoint: Some(format!("http://{address}")),
        attempt_timeout: Duration::from_secs(10),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        ..ClientConfig::new(region)
    }
}

/// A whole `Connection: close` response.
fn response(status: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

#[tokio::test]
async fn query_calls_are_form_posts_signed_for_the_service_and_region() {
    let (address, seen) = peer(response(
        "200 OK",
        r#"<ReplaceRouteResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId><return>true</return></ReplaceRouteResponse>"#,
    ));
    let client = Client::with_static_credentials(
        config(address, "eu-west-1"),
        "AKIDEXAMPLE",
        "secret",
        Some("session-token"),
    );
    client
        .replace_route(
            "rtb-a",
            "192.168.50.0/24",
            &RouteTarget::Instance("i-b".to_owned()),
        )
        .await
        .expect("ReplaceRoute");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert!(
        request.head.starts_with("POST / HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(request.header("host"), Some(address.to_string()));
    assert_eq!(
        request.body,
        "Action=ReplaceRoute&Version=2016-11-15&RouteTableId=rtb-a\
         &DestinationCidrBlock=192.168.50.0%2F24&InstanceId=i-b"
    );
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    assert_eq!(
        request.header("x-amz-security-token").as_deref(),
        Some("session-token")
    );
    let authorization = request.header("authorization").expect("signed");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{authorization}"
    );
    assert!(
        authorization.contains("/eu-west-1/ec2/aws4_request"),
        "{authorization}"
    );
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
        "{authorization}"
    );
    assert!(request.header("x-amz-date").is_some());
}

#[tokio::test]
async fn route53_is_signed_for_us_east_1_whatever_the_region() {
    let (address, seen) = peer(response("200 OK", ""));
    let client = Client::with_static_credentials(
        config(address, "eu-west-1"),
        "AKIDEXAMPLE",
        "secret",
        None,
    );
    client
        .set_health_check_inverted("abc-123", true)
        .await
        .expect("UpdateHealthCheck");
    let seen = seen.lock().unwrap().clone();
    let request = &seen[0];
    assert!(
        request
            .head
            .starts_with("POST /2013-04-01/healthcheck/abc-123 HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert!(
        request.body.contains("<Inverted>true</Inverted>"),
        "{}",
        request.body
    );
    let authorization = request.header("authorization").expect("signed");
    assert!(
        authorization.contains("/us-east-1/route53/aws4_request"),
        "{authorization}"
    );
    assert_eq!(request.header("x-amz-security-token"), None);
}

#[tokio::test]
async fn a_non_xml_error_gives_the_status_as_code_after_the_retries() {
    let (address, seen) = peer(response("502 Bad Gateway", "Bad Gateway"));
    let client = Client::with_static_credentials(
        ClientConfig {
            max_attempts: 4,
            ..config(address, "us-east-1")
        },
        "AKIDEXAMPLE",
        "secret",
        None,
    );
    let error = client
        .rest_xml(
            Service::Route53,
            Method::GET,
            "/2013-04-01/healthcheck",
            None,
        )
        .await
        .expect_err("502");
    assert_eq!(error.code(), Some("HTTP502"), "{error}");
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "Route53 GET /2013-04-01/healthcheck: HTTP502: Bad Gateway (HTTP 502)"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
    // Every attempt is signed anew, so each carries its own (possibly equal) date stamp.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|request| request.header("x-amz-date").is_some())
    );
}

#[tokio::test]
async fn a_non_retryable_error_is_returned_at_once() {
    let body = "<Response><Errors><Error><Code>InvalidRouteTableID.NotFound</Code><Message>The routeTable ID 'rtb-a' does not exist</Message></Error></Errors><RequestID>req-9</RequestID></Response>";
    let (address, seen) = peer(response("400 Bad Request", body));
    let client = Client::with_static_credentials(
        config(address, "us-east-1"),
        "AKIDEXAMPLE",
        "secret",
        None,
    );
    let error = client
        .replace_route(
            "rtb-a",
            "0.0.0.0/0",
            &RouteTarget::NetworkInterface("eni-b".to_owned()),
        )
        .await
        .expect_err("400");
    match &error {
        AwsError::Api {
            service,
            action,
            status,
            code,
            request_id,
            ..
        } => {
            assert_eq!(*service, "EC2");
            assert_eq!(action, "ReplaceRoute");
            assert_eq!(*status, 400);
            assert_eq!(code, "InvalidRouteTableID.NotFound");
            assert_eq!(request_id.as_deref(), Some("req-9"));
        }
        other => panic!("not an Api error: {other}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_silent_peer_times_out_each_attempt() {
    let (address, seen) = peer(None);
    let attempt_timeout = Duration::from_millis(200);
    let client = Client::with_static_credentials(
        ClientConfig {
            attempt_timeout,
            max_attempts: 2,
            ..config(address, "us-east-1")
        },
        "AKIDEXAMPLE",
        "secret",
        None,
    );
    let error = client
        .query(Service::Sts, "GetCallerIdentity", &[])
        .await
        .expect_err("no answer");
    assert!(
        matches!(error, AwsError::Timeout { after, .. } if after == attempt_timeout),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_transport_error() {
    // Bind and drop to get a port nothing listens on.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::with_static_credentials(
        ClientConfig {
            max_attempts: 2,
            ..config(address, "us-east-1")
        },
        "AKIDEXAMPLE",
        "secret",
        None,
    );
    let error = client
        .query(Service::Ec2, "DescribeVpcs", &[])
        .await
        .expect_err("refused");
    assert!(matches!(error, AwsError::Transport { .. }), "{error}");
    assert!(error.is_retryable());
    println!("{error}");
}
