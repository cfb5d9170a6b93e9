//! fieldctl against a real broker on a temp socket, run as the operator would run it.

use std::path::Path;
use std::time::Duration;

use fieldnet::bus::{Broker, BrokerOptions, BusClient, Publishers};
use serde_json::json;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

async fn fieldctl(args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_fieldctl"))
            .args(args)
            .env_remove("FIELDNET_CONFIG")
            .output(),
    )
    .await
    .expect("fieldctl finishes")
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start_broker(socket: &Path) -> CancellationToken {
    let registry = fieldnet::obs::new_registry();
    let options = BrokerOptions {
        max_line_bytes: 65536,
        queue_depth: 1024,
        // The test process plays uplink-monitor.
        publishers: Publishers::Anyone,
    };
    let broker = Broker::bind(socket, options, &registry).unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(broker.serve(shutdown.clone()));
    shutdown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_events_and_status_through_a_live_broker() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus.sock");
    let socket_arg = socket.to_str().unwrap();
    let shutdown = start_broker(&socket);

    let (code, _, stderr) = fieldctl(&[
        "--socket",
        socket_arg,
        "publish",
        "site/note",
        r#"{"text":"hello"}"#,
        "--retain",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) =
        fieldctl(&["--socket", socket_arg, "events", "site/", "--count", "1"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(r#"site/note  [fieldctl, retained]  {"text":"hello"}"#),
        "{stdout}"
    );
    let (_, stdout, _) = fieldctl(&[
        "--socket", socket_arg, "events", "site/", "--count", "1", "--json",
    ])
    .await;
    let envelope: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(envelope["body"], json!({"text": "hello"}));

    let agent = BusClient::spawn(&socket, "uplink-monitor");
    agent
        .publish(
            "agent/uplink-monitor",
            &json!({"version": "0.1.0", "pid": 1, "metrics": "x"}),
            true,
        )
        .unwrap();
    assert!(agent.wait_connected(Duration::from_secs(20)).await);
    let mut seen = String::new();
    for _ in 0..100 {
        let (code, stdout, _) = fieldctl(&["--socket", socket_arg, "status"]).await;
        assert_eq!(code, 0);
        seen = stdout;
        if seen.contains("uplink-monitor") && seen.contains("0.1.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.contains("bus        up"), "{seen}");
    assert!(
        seen.contains("agents     1 connected") && seen.contains("0.1.0"),
        "{seen}"
    );

    let (code, _, stderr) =
        fieldctl(&["--socket", socket_arg, "publish", "site/note", "{oops"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("the body is not valid JSON"), "{stderr}");
    let (code, _, stderr) = fieldctl(&["--socket", socket_arg, "publish", "bad topic", "1"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("visible ASCII"), "{stderr}");
    shutdown.cancel();
}

#[tokio::test]
async fn status_says_when_the_bus_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let (code, stdout, _) = fieldctl(&[
        "--socket",
        socket.to_str().unwrap(),
        "--config",
        "/nonexistent.toml",
        "status",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(stdout.contains("bus        DOWN"), "{stdout}");
    assert!(stdout.contains("configuration not readable"), "{stdout}");
}

#[tokio::test]
async fn check_config_accepts_examples_and_names_broken_keys() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/riverside/site.toml"
    );
    let (code, stdout, stderr) = fieldctl(&["--config", example, "check-config"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.ends_with(
            ": ok: 3 appliances (north, stage, south), 2 hubs (hub-a, hub-b), 3 networks\n"
        ),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    let text = std::fs::read_to_string(example).unwrap().replacen(
        "subnet = \"10.102.0.0/24\"",
        "subnet = \"10.102.0.0/33\"",
        1,
    );
    std::fs::write(&broken, text).unwrap();
    let (code, _, stderr) = fieldctl(&["--config", broken.to_str().unwrap(), "check-config"]).await;
    assert_eq!(code, 64);
    assert!(
        stderr.contains("networks[1].subnet: '10.102.0.0/33' is not an IPv4 subnet"),
        "{stderr}"
    );
    assert!(
        stderr.starts_with(&format!("{}:", broken.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn site_tells_each_appliance_its_role() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/riverside/site.toml"
    );
    let (code, stdout, stderr) = fieldctl(&["--config", example, "site"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Site riverside"), "{stdout}");
    assert!(
        stdout.contains("stage (2) dies: NETWORK2 — north (1) takes it over"),
        "{stdout}"
    );
}
