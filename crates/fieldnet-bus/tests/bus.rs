//! Component tests of the bus: the broker in process or as the real binary, clients over real
//! Unix sockets in a temp dir. Waits are bounded and poll for the expected state; nothing
//! asserts on speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldnet::bus::topics::{AgentsAlive, TOPIC_AGENTS};
use fieldnet::bus::{Broker, BrokerOptions, BusClient, BusEvent, Envelope, Publishers};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

struct TestBroker {
    socket: PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A broker for tests that play agents from the test process.
fn start_broker(max_line_bytes: usize, queue_depth: usize) -> TestBroker {
    start_broker_for(max_line_bytes, queue_depth, Publishers::Anyone)
}

fn start_broker_for(
    max_line_bytes: usize,
    queue_depth: usize,
    publishers: Publishers,
) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let registry = fieldnet::obs::new_registry();
    let broker = Broker::bind(
        &socket,
        BrokerOptions {
            max_line_bytes,
            queue_depth,
            publishers,
        },
        &registry,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(broker.serve(shutdown.clone()));
    TestBroker {
        socket,
        shutdown,
        _dir: dir,
    }
}

/// A hand-driven client speaking raw lines, as `socat` would.
struct RawClient {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).await.unwrap();
        let (read_half, writer) = stream.into_split();
        Self {
            lines: BufReader::new(read_half).lines(),
            writer,
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// Sends a ping and waits for its pong, so everything sent before has been processed.
    async fn sync(&mut self) {
        self.send(r#"{"op":"ping"}"#).await;
        loop {
            let frame = self.next().await.expect("connection open");
            if frame["op"] == "pong" {
                return;
            }
        }
    }

    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a line within the patience")
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn next_msg(&mut self) -> Value {
        loop {
            let frame = self.next().await.expect("connection open");
            if frame["op"] == "msg" {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn prefix_subscription_and_retained_values() {
    let broker = start_broker(64 * 1024, 1024);
    let mut publisher = RawClient::connect(&broker.socket).await;
    publisher
        .send(r#"{"op":"pub","topic":"uplink/active","retain":true,"body":{"name":"4g-a"}}"#)
        .await;
    publisher
        .send(r#"{"op":"pub","topic":"peer/2","retain":true,"body":{"alive":true}}"#)
        .await;
    publisher.sync().await;

    let mut subscriber = RawClient::connect(&broker.socket).await;
    subscriber.send(r#"{"op":"sub","prefix":"uplink/"}"#).await;
    let retained = subscriber.next_msg().await;
    assert_eq!(
        (retained["topic"].as_str(), &retained["body"]["name"]),
        (Some("uplink/active"), &json!("4g-a"))
    );
    assert!(
        retained["ts"].as_u64().unwrap() > 0,
        "broker stamps missing timestamps"
    );

    publisher
        .send(r#"{"op":"pub","topic":"peer/3","body":1}"#)
        .await;
    publisher
        .send(r#"{"op":"pub","topic":"uplink/4g-b/state","body":{"up":false}}"#)
        .await;
    let live = subscriber.next_msg().await;
    assert_eq!(
        live["topic"], "uplink/4g-b/state",
        "peer/3 must not reach an uplink/ subscriber"
    );

    // A retained null clears the topic: a later subscriber gets nothing for it.
    publisher
        .send(r#"{"op":"pub","topic":"uplink/active","retain":true,"body":null}"#)
        .await;
    publisher.sync().await;
    let mut late = RawClient::connect(&broker.socket).await;
    late.send(r#"{"op":"sub","prefix":"uplink/"}"#).await;
    late.sync().await;
    publisher
        .send(r#"{"op":"pub","topic":"uplink/x","body":2}"#)
        .await;
    assert_eq!(late.next_msg().await["topic"], "uplink/x");
}

#[tokio::test]
async fn malformed_and_oversize_lines_drop_only_their_client() {
    let broker = start_broker(1024, 1024);
    let mut bystander = RawClient::connect(&broker.socket).await;
    bystander.send(r#"{"op":"sub","prefix":""}"#).await;
    bystander.sync().await;

    let mut broken = RawClient::connect(&broker.socket).await;
    broken.send("{this is not json").await;
    let error = broken.next().await.expect("an error frame");
    assert_eq!(error["op"], "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not a bus frame"),
        "{error}"
    );
    assert!(
        broken.next().await.is_none(),
        "connection closed after the error"
    );

    let mut oversize = RawClient::connect(&broker.socket).await;
    oversize
        .send(&format!(
            r#"{{"op":"pub","topic":"a","body":"{}"}}"#,
            "x".repeat(4096)
        ))
        .await;
    let error = oversize.next().await.expect("an error frame");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("longer than 1024 bytes"),
        "{error}"
    );
    assert!(
        oversize.next().await.is_none(),
        "connection closed after the error"
    );

    let mut publisher = RawClient::connect(&broker.socket).await;
    publisher
        .send(r#"{"op":"pub","topic":"still/working","body":true}"#)
        .await;
    assert_eq!(bystander.next_msg().await["topic"], "still/working");
}

/// Publishes `count` messages of half a kilobyte on `load/0` … `load/6` from a client of its
/// own, and returns once the broker has taken them all (a fresh raw client syncs after them).
async fn flood_load(broker: &TestBroker, count: u64) -> BusClient {
    let client = BusClient::spawn(&broker.socket, "loader");
    assert!(client.wait_connected(PATIENCE).await);
    let body = json!({"padding": "p".repeat(512)});
    for n in 0..count {
        client
            .publish(&format!("load/{}", n % 7), &body, false)
            .unwrap();
    }
    let mut marker = RawClient::connect(&broker.socket).await;
    marker.send(r#"{"op":"sub","prefix":"done"}"#).await;
    marker.sync().await;
    client.publish("done", &json!(true), false).unwrap();
    marker.next_msg().await;
    client
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_lags_and_never_stalls_publishers() {
    let broker = start_broker(64 * 1024, 64);
    let mut sleeper = RawClient::connect(&broker.socket).await;
    sleeper.send(r#"{"op":"sub","prefix":"load/"}"#).await;
    sleeper.sync().await;

    // Far more than the socket buffers plus the 64-line queue can hold.
    let published = 20_000;
    let _client = flood_load(&broker, published).await;

    // Now the sleeper wakes: it sees part of the stream, then a lagged notice.
    let mut received = 0;
    let missed = loop {
        let frame = sleeper.next().await.expect("connection open");
        match frame["op"].as_str() {
            Some("msg") => received += 1,
            Some("lagged") => break frame["missed"].as_u64().unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(missed > 0);
    assert!(
        received < published,
        "received {received} of {published} yet lagged"
    );
}

/// Audit finding 4: a new subscriber got only the first 4,096 retained values, silently. With
/// 50,000 retained leases a new subscriber that reads at its own pace gets every one, and no
/// `Lagged`.
#[tokio::test]
async fn a_new_subscriber_silently_gets_only_the_first_4096_retained_values() {
    let broker = start_broker(64 * 1024, 1024);
    let publisher = BusClient::spawn(&broker.socket, "dhcp-takeover");
    assert!(publisher.wait_connected(PATIENCE).await);
    const LEASES: u32 = 50_000;
    for n in 0..LEASES {
        let address = std::net::Ipv4Addr::from(0x0a00_0000 + n);
        publisher
            .publish(
                &format!("dhcp/lease/{address}"),
                &json!({"address": address.to_string(), "hostname": format!("host-{n}")}),
                true,
            )
            .unwrap();
    }
    // Everything published has reached the broker once a later message comes back.
    let mut marker = RawClient::connect(&broker.socket).await;
    marker.send(r#"{"op":"sub","prefix":"done"}"#).await;
    marker.sync().await;
    publisher.publish("done", &json!(true), false).unwrap();
    marker.next_msg().await;

    let reader = BusClient::spawn(&broker.socket, "whereami");
    let mut leases = reader.subscribe("dhcp/lease/");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < LEASES as usize {
        let event = tokio::time::timeout(PATIENCE, leases.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {LEASES} retained values came", seen.len()))
            .expect("client alive");
        match event {
            BusEvent::Message(envelope) => {
                seen.insert(envelope.topic);
            }
            BusEvent::Lagged { missed } => {
                panic!("lagged by {missed} after {} retained values", seen.len())
            }
        }
        // A subscriber busy with each value now and then (whereami updating its zone).
        if seen.len() % 5_000 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And the live stream goes on behind the snapshot.
    publisher
        .publish("dhcp/lease/10.255.255.255", &json!({"new": true}), true)
        .unwrap();
    assert_eq!(
        next_message(&mut leases).await.topic,
        "dhcp/lease/10.255.255.255"
    );
}

/// Audit findings 4 and 11: `lagged` came only with the next message after a drop, and a `pong`
/// was dropped when the queue was full. A subscriber that stopped reading is told of every
/// message it lost although nothing follows them, and its ping is answered.
#[tokio::test]
async fn lagged_is_told_at_once_and_pong_is_never_dropped() {
    let broker = start_broker(64 * 1024, 64);
    let mut sleeper = RawClient::connect(&broker.socket).await;
    sleeper.send(r#"{"op":"sub","prefix":"load/"}"#).await;
    sleeper.sync().await;
    let published = 20_000_u64;
    let _client = flood_load(&broker, published).await;
    // The sleeper's queue is full; it pings, then reads everything there is.
    sleeper.send(r#"{"op":"ping"}"#).await;
    let (mut received, mut missed, mut pong) = (0_u64, 0_u64, false);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(3), sleeper.lines.next_line()).await;
        let Ok(Ok(Some(line))) = line else {
            break; // quiet: nothing more is coming
        };
        let frame: Value = serde_json::from_str(&line).unwrap();
        match frame["op"].as_str() {
            Some("msg") => received += 1,
            Some("lagged") => missed += frame["missed"].as_u64().unwrap(),
            Some("pong") => pong = true,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(
        missed > 0,
        "nothing was dropped: the test did not fill the queue"
    );
    assert_eq!(
        received + missed,
        published,
        "every message is delivered or told as missed"
    );
    assert!(pong, "the ping was not answered");
}

#[tokio::test]
async fn client_publishes_while_broker_is_down_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let client = BusClient::spawn(&socket, "early-bird");
    client
        .publish("uplink/active", &json!({"name": "4g-a"}), true)
        .unwrap();
    client
        .publish("events/boot", &json!({"n": 1}), false)
        .unwrap();
    assert!(!client.is_connected());

    let registry = fieldnet::obs::new_registry();
    let options = BrokerOptions {
        max_line_bytes: 65536,
        queue_depth: 1024,
        publishers: Publishers::Anyone,
    };
    let broker = Broker::bind(&socket, options, &registry).unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(broker.serve(shutdown.clone()));
    assert!(client.wait_connected(PATIENCE).await);

    let mut watcher = RawClient::connect(&socket).await;
    watcher.send(r#"{"op":"sub","prefix":"uplink/"}"#).await;
    assert_eq!(watcher.next_msg().await["body"]["name"], "4g-a");
    shutdown.cancel();
}

fn broker_config(dir: &Path, socket: &Path) -> PathBuf {
    let path = dir.join("site.toml");
    let text = format!(
        r#"[site]
name = "test"
domain = "test.example"
key = "{key}"

[[areas]]
name = "a"

[[appliances]]
id = 1
name = "one"
area = "a"

[bus]
socket = "{socket}"
metrics_listen = "127.0.0.1:0"
trust_any_publisher = true
"#,
        key = "ab".repeat(32),
        socket = socket.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct BrokerProcess(Child);

impl BrokerProcess {
    fn start(config: &Path, socket: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_fieldnet-bus"))
            .env("FIELDNET_APPLIANCE", "one")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn next_message(subscription: &mut fieldnet::bus::Subscription) -> Envelope {
    loop {
        match tokio::time::timeout(PATIENCE, subscription.recv())
            .await
            .expect("an event within the patience")
        {
            Some(BusEvent::Message(envelope)) => return envelope,
            Some(BusEvent::Lagged { .. }) => continue,
            None => panic!("client gone"),
        }
    }
}

#[tokio::test]
async fn broker_killed_and_restarted_clients_resubscribe_and_retained_state_returns() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let config = broker_config(dir.path(), &socket);
    let broker = BrokerProcess::start(&config, &socket);

    let monitor = BusClient::spawn(&socket, "uplink-monitor");
    let watcher = BusClient::spawn(&socket, "fieldctl");
    let mut uplinks = watcher.subscribe("uplink/");
    monitor
        .publish("uplink/active", &json!({"name": "4g-a"}), true)
        .unwrap();
    assert_eq!(next_message(&mut uplinks).await.body["name"], "4g-a");

    broker.kill();
    // Published while the broker is dead: must arrive after the restart.
    monitor
        .publish("uplink/active", &json!({"name": "4g-b"}), true)
        .unwrap();
    let broker = BrokerProcess::start(&config, &socket);

    // The watcher re-subscribed by itself and sees the monitor's retained state come back.
    assert!(monitor.wait_connected(PATIENCE).await && watcher.wait_connected(PATIENCE).await);
    assert_eq!(next_message(&mut uplinks).await.body["name"], "4g-b");

    // A newcomer after the restart gets the retained value from the new broker.
    let newcomer = BusClient::spawn(&socket, "late");
    let mut late = newcomer.subscribe("uplink/active");
    assert_eq!(next_message(&mut late).await.body["name"], "4g-b");

    // And the broker's own presence topic lists the named agents.
    let mut agents = newcomer.subscribe(TOPIC_AGENTS);
    let alive = loop {
        let alive: AgentsAlive = next_message(&mut agents).await.body_as().unwrap();
        if alive.agents.len() >= 3 {
            break alive;
        }
    };
    let names: Vec<&str> = alive.agents.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names.contains(&"uplink-monitor") && names.contains(&"fieldctl"),
        "{names:?}"
    );
    drop(broker);
}

#[test]
fn check_config_on_a_broken_file_exits_64_naming_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(dir.path(), &dir.path().join("bus.sock"));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("id = 1", "id = 300");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fieldnet-bus"))
        .env("FIELDNET_APPLIANCE", "one")
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:10: appliances[0].id: 300 is not an appliance id; valid: 1 to 254",
        config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

/// Audit finding 12: a missing key file passed --check-config, then the agent exited 1 and
/// systemd restarted it for ever. Both now exit 64 naming the key file.
#[test]
fn a_missing_or_exposed_key_file_fails_check_config_with_64() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(dir.path(), &dir.path().join("bus.sock"));
    let key = dir.path().join("site.key");
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("key = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}key_file = \"{}\"{}",
        &text[..start],
        key.display(),
        &text[end..]
    );
    std::fs::write(&config, text).unwrap();
    let run = |check: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fieldnet-bus"));
        command
            .env("FIELDNET_APPLIANCE", "one")
            .arg("--config")
            .arg(&config);
        if check {
            command.arg("--check-config");
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for check in [true, false] {
        let (code, stderr) = run(check);
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("site.key_file"), "{stderr}");
        assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    }
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = run(true);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("readable by everyone"), "{stderr}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = run(true);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn under_systemd_it_reports_ready_after_binding_and_pets_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let config = broker_config(dir.path(), &socket);
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fieldnet-bus"))
        .env("FIELDNET_APPLIANCE", "one")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let broker = BrokerProcess(child);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = notify
            .recv(&mut buffer)
            .expect("a notification within the patience");
        let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if message.contains("READY=1") {
            // Ready means the socket is already bound and accepting.
            std::os::unix::net::UnixStream::connect(&socket).expect("bound before READY=1");
        }
        seen.push(message);
    }
    drop(broker);
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let config = broker_config(dir.path(), &socket);
    let mut broker = BrokerProcess::start(&config, &socket);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(broker.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = broker.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(!socket.exists(), "socket file removed on exit");
}

/// Audit finding 11: any process that could connect spoke as any agent (one fake `peer/2`
/// marked an uplink `peer_down`), `from` was free text, the broker deleted a regular file
/// given as its socket path, and nothing capped a client's prefixes.
#[tokio::test]
async fn bus_only_an_agent_speaks_for_it_and_no_file_of_yours_is_deleted() {
    // A regular file where the socket should be: kept, and the broker does not start.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bus.sock");
    std::fs::write(&file, "precious").unwrap();
    let options = BrokerOptions {
        max_line_bytes: 65536,
        queue_depth: 64,
        publishers: Publishers::Owners,
    };
    let error = Broker::bind(&file, options, &fieldnet::obs::new_registry()).unwrap_err();
    assert!(
        format!("{error:#}").contains("is not a socket"),
        "{error:#}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let broker = start_broker_for(65536, 64, Publishers::Owners);
    let mut watcher = RawClient::connect(&broker.socket).await;
    watcher.send(r#"{"op":"sub","prefix":""}"#).await;
    watcher.sync().await;
    // This test's program is not cross-site-failover: its `peer/2` is refused.
    let mut forger = RawClient::connect(&broker.socket).await;
    forger
        .send(r#"{"op":"pub","topic":"peer/2","retain":true,"body":{"alive":false}}"#)
        .await;
    let refused = forger.next().await.expect("an error before the close");
    assert_eq!(refused["op"], "error");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("published only by cross-site-failover"),
        "{message}"
    );
    assert!(forger.next().await.is_none(), "closed");
    // Nor may it say hello as an agent, or publish an agent's announcement.
    for line in [
        r#"{"op":"hello","name":"dhcp-takeover","pid":1}"#,
        r#"{"op":"pub","topic":"agent/whereami","retain":true,"body":{}}"#,
        r#"{"op":"pub","topic":"bus/agents","retain":true,"body":{}}"#,
    ] {
        let mut impostor = RawClient::connect(&broker.socket).await;
        impostor.send(line).await;
        let refused = impostor.next().await.expect("an error before the close");
        assert_eq!(refused["op"], "error", "{line}");
    }
    // A topic nobody owns is anyone's, and `from` is what the broker knows.
    let mut honest = RawClient::connect(&broker.socket).await;
    honest
        .send(r#"{"op":"hello","name":"probe","pid":1}"#)
        .await;
    honest
        .send(r#"{"op":"pub","topic":"site/note","from":"dhcp-takeover","body":1}"#)
        .await;
    let note = loop {
        let message = watcher.next_msg().await;
        assert!(
            !message["topic"].as_str().unwrap().starts_with("peer/"),
            "{message}"
        );
        if message["topic"] == "site/note" {
            break message;
        }
    };
    assert_eq!(note["from"], "probe");
    // At most 64 prefixes per client.
    for n in 0..64 {
        honest
            .send(&format!(r#"{{"op":"sub","prefix":"p{n}/"}}"#))
            .await;
    }
    honest.sync().await;
    honest.send(r#"{"op":"sub","prefix":"one-more/"}"#).await;
    loop {
        let frame = honest.next().await.expect("an error before the close");
        if frame["op"] == "error" {
            assert!(frame["message"].as_str().unwrap().contains("64 prefixes"));
            break;
        }
    }
}
