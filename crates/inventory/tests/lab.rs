//! inventory on a real lab area: dhcp-takeover leases addresses to client namespaces (udhcpc),
//! a real Prometheus (Debian's) in the appliance namespace discovers the devices through
//! inventory's HTTP service discovery and scrapes the node_exporter (Debian's) running in a
//! device namespace; Ansible's `ansible-inventory` reads the same devices through
//! `inventory ansible`.

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{Lab, LabProcess, Netns, SiteSpec};

const PATIENCE: Duration = Duration::from_secs(60);
const CAMERA_MAC: &str = "02:ca:00:00:00:01";
const TILL_MAC: &str = "02:aa:00:00:00:02";
const PROMETHEUS: &str = "127.0.0.1:9090";
const SD: &str = "127.0.0.1:9716";

fn eventually<T>(what: &str, logs: &[&LabProcess], mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = done() {
            return value;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|process| process.log()).collect();
            panic!("never happened: {what}\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `curl -s URL` in `ns`, the body parsed as JSON (`Null` when nothing parses).
fn get_json(ns: &Netns, url: &str) -> serde_json::Value {
    let output = ns
        .exec_unchecked("curl", &["-s", "-m", "5", url], Duration::from_secs(10))
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

/// Prometheus's active targets of the job `job`: (address, health, labels).
fn targets(ns: &Netns, job: &str) -> Vec<(String, String, serde_json::Value)> {
    let answer = get_json(
        ns,
        &format!("http://{PROMETHEUS}/api/v1/targets?state=active"),
    );
    answer["data"]["activeTargets"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|target| target["labels"]["job"] == job)
                .map(|target| {
                    (
                        target["labels"]["instance"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        target["health"].as_str().unwrap_or("").to_owned(),
                        target["labels"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One sample of Prometheus's own metric `name` (its /metrics), 0 when absent.
fn prometheus_metric(ns: &Netns, name: &str) -> f64 {
    let output = ns
        .exec_unchecked(
            "curl",
            &["-s", "-m", "5", &format!("http://{PROMETHEUS}/metrics")],
            Duration::from_secs(10),
        )
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn device_state(ns: &Netns, mac: &str) -> Option<String> {
    let devices = get_json(ns, &format!("http://{SD}/devices"));
    devices.as_array()?.iter().find_map(|device| {
        (device["id"] == mac).then(|| device["state"].as_str().unwrap_or("").to_owned())
    })
}

fn write_prometheus_config(dir: &Path) -> String {
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: device-node\n\
             \x20   http_sd_configs:\n\
             \x20     - url: http://{SD}/sd/node\n\
             \x20       refresh_interval: 1s\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn prometheus_finds_devices_through_inventory_and_ansible_lists_them_in_their_groups() {
    let Some(mut lab) = Lab::for_test("inventory-sd") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 2)).unwrap();
    let dir = lab.dir().to_owned();
    let appliance = site.areas[0].appliance.clone();
    let (camera, till) = (
        site.areas[0].clients[0].ns.clone(),
        site.areas[0].clients[1].ns.clone(),
    );
    let state = dir.join("inventory/devices.json");
    let sections = format!(
        "[[dhcp_takeover.classes]]\nname = \"cameras\"\nmac_prefixes = [\"02:ca:00\"]\n\n\
         [[dhcp_takeover.classes]]\nname = \"tills\"\nmac_prefixes = [\"02:aa:00\"]\n\n\
         [inventory]\nstate = \"{}\"\nsweep_interval_s = 5\nprobe_interval_s = 5\ngone_after_s = 8\nforget_after_s = 120\n",
        state.display()
    );
    let config = lab::SiteFile::new(&site, &dir)
        .sections(&sections)
        .write()
        .unwrap()
        .display()
        .to_string();
    let own = env!("CARGO_BIN_EXE_inventory");
    let bus = lab::sibling_binary(own, "fieldnet-bus", "fieldnet-bus");
    let dhcp = lab::sibling_binary(own, "dhcp-takeover", "dhcp-takeover");
    let name = lab::appliance_name(1);
    let args = ["--config", config.as_str(), "--appliance", name.as_str()];
    let _bus = lab.spawn(&appliance, &bus, &args).unwrap();
    let dhcp = lab.spawn(&appliance, &dhcp, &args).unwrap();
    let inventory = lab.spawn(&appliance, own, &args).unwrap();
    inventory
        .wait_for_log("serving service discovery", PATIENCE)
        .unwrap_or_else(|error| panic!("{error:#}"));

    // The camera runs node_exporter (only cheap collectors: it reads the namespace's /proc).
    let exporter = lab
        .spawn(
            &camera,
            "prometheus-node-exporter",
            &[
                "--web.listen-address=:9100",
                "--collector.disable-defaults",
                "--collector.time",
                "--collector.loadavg",
            ],
        )
        .unwrap();
    let prometheus_config = write_prometheus_config(&dir);
    let tsdb = dir.join("prometheus-data");
    let prometheus = lab
        .spawn(
            &appliance,
            "prometheus",
            &[
                &format!("--config.file={prometheus_config}"),
                &format!("--storage.tsdb.path={}", tsdb.display()),
                &format!("--web.listen-address={PROMETHEUS}"),
            ],
        )
        .unwrap();
    let logs = [&inventory, &prometheus, &dhcp, &exporter];
    eventually("Prometheus ready", &logs, || {
        appliance
            .exec_unchecked(
                "curl",
                &["-sf", "-m", "2", &format!("http://{PROMETHEUS}/-/ready")],
                Duration::from_secs(5),
            )
            .ok()
            .filter(|output| output.status.success())
    });

    // The camera joins: a target within seconds of its DHCPACK (the wire's, recorded in its
    // namespace).
    let acks = lab::AckCapture::start(&camera).unwrap();
    let camera_address = lab::udhcpc_lease(&dir, &camera, CAMERA_MAC, PATIENCE)
        .unwrap_or_else(|error| panic!("{error:#}\n{}", dhcp.log()));
    let ack = acks
        .finish()
        .into_iter()
        .find(|ack| ack.mac_text() == CAMERA_MAC)
        .expect("the camera's DHCPACK on the wire");
    let target = format!("{camera_address}:9100");
    eventually("the camera among inventory's node targets", &logs, || {
        let groups = get_json(&appliance, &format!("http://{SD}/sd/node"));
        groups
            .as_array()?
            .iter()
            .any(|group| group["targets"][0] == target.as_str())
            .then_some(())
    });
    println!(
        "the camera was in /sd/node {} ms after its DHCPACK",
        ack.at.elapsed().as_millis()
    );
    eventually("the camera among Prometheus's targets", &logs, || {
        targets(&appliance, "device-node")
            .iter()
            .any(|(instance, _, _)| *instance == target)
            .then_some(())
    });
    println!(
        "the camera was among Prometheus's targets {} ms after its DHCPACK (Prometheus passes discovered targets on at most every 5 s)",
        ack.at.elapsed().as_millis()
    );
    // Scraped, with the labels inventory gave it.
    let labels = eventually("the camera's node_exporter scraped", &logs, || {
        targets(&appliance, "device-node")
            .into_iter()
            .find(|(instance, health, _)| *instance == target && health == "up")
            .map(|(_, _, labels)| labels)
    });
    assert_eq!(labels["class"], "cameras");
    assert_eq!(labels["network"], "NETWORK1");
    assert_eq!(labels["area"], "area1");
    assert!(labels["name"].is_string(), "{labels}");
    let query = get_json(
        &appliance,
        &format!("http://{PROMETHEUS}/api/v1/query?query=node_time_seconds"),
    );
    assert_eq!(
        query["data"]["result"][0]["metric"]["class"], "cameras",
        "{query}"
    );

    // The till joins too (no exporter: a device, not a target).
    let till_address = lab::udhcpc_lease(&dir, &till, TILL_MAC, PATIENCE).unwrap();
    eventually("the till listed", &logs, || {
        (device_state(&appliance, TILL_MAC).as_deref() == Some("present")).then_some(())
    });

    // Ansible reads the same devices, in their groups.
    let script = dir.join("fieldnet-inventory");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {own} --config {config} --appliance {name} ansible \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ansible = |args: &[&str]| -> String {
        eventually("the device list saved", &logs, || {
            state.exists().then_some(())
        });
        let mut command = std::process::Command::new("ansible-inventory");
        command
            .arg("-i")
            .arg(&script)
            .args(args)
            .env("HOME", &dir)
            .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False");
        let output = command.output().expect("ansible-inventory runs");
        assert!(
            output.status.success(),
            "ansible-inventory {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed: serde_json::Value =
        eventually("both devices in the Ansible inventory", &logs, || {
            let listed: serde_json::Value = serde_json::from_str(&ansible(&["--list"])).ok()?;
            let hosts = listed["network_network1"]["hosts"].as_array()?.len();
            (hosts >= 2).then_some(listed)
        });
    assert!(
        listed["class_cameras"]["hosts"].as_array().unwrap().len() == 1,
        "{listed}"
    );
    assert!(listed["class_tills"]["hosts"].is_array(), "{listed}");
    let hostvars = &listed["_meta"]["hostvars"];
    assert!(
        hostvars
            .as_object()
            .unwrap()
            .values()
            .any(|vars| vars["ansible_host"] == till_address.as_str()),
        "{listed}"
    );
    let graph = ansible(&["--graph"]);
    for group in [
        "@area_",
        "@network_network1:",
        "@class_cameras:",
        "@class_tills:",
    ] {
        assert!(graph.contains(group), "{group} not in:\n{graph}");
    }
    println!("{graph}");

    // The camera leaves: gone after gone_after_s, no longer a target; Prometheus never failed
    // to read the list.

    camera.ip(&["link", "set", "eth0", "down"]).unwrap();
    eventually("the camera marked gone", &logs, || {
        (device_state(&appliance, CAMERA_MAC).as_deref() == Some("gone")).then_some(())
    });
    eventually("the camera no longer a target", &logs, || {
        (!targets(&appliance, "device-node")
            .iter()
            .any(|(instance, _, _)| *instance == target))
        .then_some(())
    });
    assert_eq!(
        prometheus_metric(&appliance, "prometheus_sd_http_failures_total"),
        0.0,
        "{}",
        prometheus.log()
    );
}

/// On a hub, inventory lists the devices that connect from outside the site: its WireGuard
/// peers with a recent handshake and a tunnel address of their own. A laptop (a machine of its
/// own, wireguard-go) connects to hub-a of the example site; the appliances' site-to-site
/// tunnels (allowed 0.0.0.0/0, no handshake here: their agents are not running) are not
/// devices.
#[test]
fn a_hub_lists_the_wireguard_peers_that_connect_from_outside() {
    let Some(mut lab) = Lab::for_test("inventory-wg") else {
        return;
    };
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/riverside/site.toml"
    );
    let text = std::fs::read_to_string(file).unwrap();
    let site = lab.site_from_file(&text, file, 0).unwrap();
    let hub = site.machine("hub-a").unwrap().clone();

    let own = env!("CARGO_BIN_EXE_inventory");
    let bus = lab::sibling_binary(own, "fieldnet-bus", "fieldnet-bus");
    let bus = lab.spawn_on(&hub, &bus, &[]).unwrap();
    eventually("hub-a's bus socket", &[&bus], || {
        hub.bus_socket().exists().then_some(())
    });
    let inventory = lab.spawn_on(&hub, own, &[]).unwrap();
    inventory
        .wait_for_log("serving service discovery", PATIENCE)
        .unwrap_or_else(|error| panic!("{error:#}"));

    // The laptop: a cable to hub-a, a WireGuard tunnel over it with an address of its own.
    let laptop_ns = lab.netns("laptop").unwrap();
    lab.veth(&hub.ns, "lap0", &laptop_ns, "eth0").unwrap();
    lab.addr(&hub.ns, "lap0", "198.51.100.249/30").unwrap();
    lab.addr(&laptop_ns, "eth0", "198.51.100.250/30").unwrap();
    let laptop = lab.machine("laptop", laptop_ns.clone()).unwrap();
    lab.machine_wireguard(&hub, "wg-remote").unwrap();
    lab.machine_wireguard(&laptop, "wg0").unwrap();
    let (hub_key, hub_public) = lab.wireguard_key("hub-a-remote").unwrap();
    let (laptop_key, laptop_public) = lab.wireguard_key("laptop").unwrap();
    hub.exec(
        "wg",
        &[
            "set",
            "wg-remote",
            "private-key",
            &hub_key,
            "listen-port",
            "51899",
            "peer",
            &laptop_public,
            "allowed-ips",
            "10.253.9.5/32",
        ],
    )
    .unwrap();
    lab.addr(&hub.ns, "wg-remote", "10.253.9.1/24").unwrap();
    hub.ns
        .ip(&["link", "set", "dev", "wg-remote", "up"])
        .unwrap();
    laptop
        .exec(
            "wg",
            &[
                "set",
                "wg0",
                "private-key",
                &laptop_key,
                "peer",
                &hub_public,
                "endpoint",
                "198.51.100.249:51899",
                "allowed-ips",
                "10.253.9.0/24",
            ],
        )
        .unwrap();
    lab.addr(&laptop_ns, "wg0", "10.253.9.5/24").unwrap();
    laptop_ns.ip(&["link", "set", "dev", "wg0", "up"]).unwrap();
    // Traffic makes the handshake.
    eventually(
        "the laptop reaching hub-a through its tunnel",
        &[&inventory],
        || {
            laptop_ns
                .exec_unchecked(
                    "ping",
                    &["-c", "1", "-W", "1", "10.253.9.1"],
                    Duration::from_secs(5),
                )
                .ok()
                .filter(|output| output.status.success())
        },
    );

    let key = laptop_public.clone();
    let device = eventually("the laptop among hub-a's devices", &[&inventory], || {
        let devices = get_json(&hub.ns, &format!("http://{SD}/devices"));
        devices
            .as_array()?
            .iter()
            .find(|device| device["address"] == "10.253.9.5")
            .cloned()
    });
    println!("{device:#}");
    assert_eq!(device["network"], "vpn");
    assert_eq!(device["state"], "present");
    assert!(
        device["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wg-") && !id.contains('/')),
        "{device}"
    );
    assert!(
        device["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|seen| seen["source"] == "wireguard"),
        "{device}"
    );
    // The only WireGuard device: the appliances' tunnels are not devices.
    let devices = get_json(&hub.ns, &format!("http://{SD}/devices"));
    let by_wireguard = devices
        .as_array()
        .unwrap()
        .iter()
        .filter(|device| device["network"] == "vpn")
        .count();
    assert_eq!(by_wireguard, 1, "{devices:#} (laptop key {key})");
}
