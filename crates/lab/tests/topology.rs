//! Lab building blocks: veth + ping, cleanup on drop and on panic, processes, NAT, the site.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{A_ADDR, B_ADDR, SETTLE, netns_list, netns_with_prefix, pair};
use lab::{Lab, PathKind, SiteSpec};

#[test]
fn veth_ping_works_and_namespaces_go_with_the_lab() {
    let Some(mut lab) = Lab::for_test("veth") else {
        return;
    };
    let prefix = lab.prefix().to_owned();
    assert!(prefix.starts_with(&format!("fl{}-", std::process::id())));
    let (a, b) = pair(&mut lab);

    let stats = a.ping(B_ADDR, 5, Duration::from_millis(20)).unwrap();
    assert_eq!((stats.sent, stats.received), (5, 5), "{stats:?}");
    assert!(stats.rtt_min <= stats.rtt_avg && stats.rtt_avg <= stats.rtt_max);
    assert!(
        b.ping(A_ADDR, 2, Duration::from_millis(20))
            .unwrap()
            .received
            > 0
    );

    let names = netns_list();
    assert!(names.contains(&a.name().to_owned()) && names.contains(&b.name().to_owned()));
    let dir = lab.dir().to_owned();
    assert!(dir.is_dir());

    drop(lab);
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
    assert!(!dir.exists());
    assert!(!a.exists());
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let seen: Arc<Mutex<Option<(String, u32)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let result = catch_unwind(AssertUnwindSafe(move || {
        let Some(mut lab) = Lab::for_test("panic") else {
            return;
        };
        let a = lab.netns("a").unwrap();
        let b = lab.netns("b").unwrap();
        lab.veth(&a, "va", &b, "vb").unwrap();
        let _fault = lab.blackhole(&a, "va").unwrap();
        let sleeper = lab.spawn(&b, "sleep", &["60"]).unwrap();
        *record.lock().unwrap() = Some((lab.prefix().to_owned(), sleeper.pid()));
        panic!("deliberate panic inside a lab");
    }));
    let Some((prefix, pid)) = seen.lock().unwrap().clone() else {
        return; // lab unavailable, skipped
    };
    assert!(result.is_err(), "the closure should have panicked");
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
    // Reaped, so either gone or (PID reused) no longer our sleep.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("sleep\u{0}60"));
}

#[test]
fn processes_run_inside_the_namespace_and_are_killed() {
    let Some(mut lab) = Lab::for_test("process") else {
        return;
    };
    let (a, _b) = pair(&mut lab);
    let process = lab
        .spawn(
            &a,
            "sh",
            &["-c", "ip -o addr show dev va; echo ready; exec sleep 60"],
        )
        .unwrap();
    process.wait_for_log("ready", SETTLE).unwrap();
    assert!(process.is_running());
    assert!(process.log().contains(A_ADDR), "{}", process.log());
    assert!(process.log_path().starts_with(lab.dir()));
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", a.name()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|pid| pid == process.pid().to_string()),
        "pid {} not in {}",
        process.pid(),
        a.name()
    );

    let started = Instant::now();
    let status = process.kill().unwrap();
    assert!(!status.success());
    assert!(!process.is_running());
    assert!(started.elapsed() < Duration::from_secs(10));

    let quick = lab.spawn(&a, "true", &[]).unwrap();
    assert!(quick.wait(SETTLE).unwrap().success());
}

#[test]
fn nat_router_masquerades_a_client_behind_it() {
    let Some(mut lab) = Lab::for_test("nat") else {
        return;
    };
    let client = lab.netns("client").unwrap();
    let router = lab.netns("router").unwrap();
    let internet = lab.netns("internet").unwrap();
    lab.veth(&client, "eth0", &router, "lan").unwrap();
    lab.addr(&client, "eth0", "10.1.0.2/24").unwrap();
    lab.addr(&router, "lan", "10.1.0.1/24").unwrap();
    client
        .ip(&["route", "add", "default", "via", "10.1.0.1"])
        .unwrap();
    lab.veth(&router, "wan", &internet, "eth0").unwrap();
    lab.addr(&router, "wan", "198.51.100.2/24").unwrap();
    lab.addr(&internet, "eth0", "198.51.100.1/24").unwrap();
    lab.addr(&internet, "lo", "192.0.2.1/32").unwrap();
    router
        .ip(&["route", "add", "default", "via", "198.51.100.1"])
        .unwrap();
    lab.nat(&router, "wan").unwrap();

    client.wait_reachable("192.0.2.1", SETTLE).unwrap();

    let server = internet
        .run(|| UdpSocket::bind("192.0.2.1:0"))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let sender = client
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let mut buffer = [0u8; 64];
    let deadline = Instant::now() + SETTLE;
    let (length, peer) = loop {
        sender.send_to(b"hello", ("192.0.2.1", port)).unwrap();
        match server.recv_from(&mut buffer) {
            Ok(received) => break received,
            Err(error) if Instant::now() < deadline => {
                eprintln!("no datagram yet ({error}); retrying");
            }
            Err(error) => panic!("no datagram reached the internet host: {error}"),
        }
    };
    assert_eq!(&buffer[..length], b"hello");
    assert_eq!(peer.ip(), "198.51.100.2".parse::<IpAddr>().unwrap());
}

#[test]
fn site_connects_clients_to_the_internet_and_to_other_areas() {
    let Some(mut lab) = Lab::for_test("site") else {
        return;
    };
    let prefix = lab.prefix().to_owned();
    let started = Instant::now();
    let site = lab.site(&SiteSpec::default()).unwrap();
    eprintln!("site built in {:?}", started.elapsed());
    assert_eq!(netns_with_prefix(&prefix).len(), 17);
    assert_eq!(site.areas.len(), 3);

    let area1 = &site.areas[0];
    let area2 = &site.areas[1];
    assert_eq!(area1.network, "10.101.0.0/24");
    assert_eq!(area1.gateway, "10.101.0.1");
    assert_eq!(area1.uplinks[1].name, "a1-up2");
    assert_eq!(area1.uplinks[1].appliance_if, "wan1");
    assert_eq!(area1.uplinks[1].router_lan_addr, "192.168.9.1");
    assert_eq!(area1.uplinks[1].appliance_addr, "192.168.9.2/24");
    assert_eq!(area2.uplinks[0].router_wan_addr, "198.51.100.20/24");
    assert_eq!(area1.clients[0].addr, "10.101.0.101");
    let cable = area1.path(PathKind::Cable, 2).unwrap();
    assert_eq!(
        (
            cable.ifname.as_str(),
            cable.addr.as_str(),
            cable.peer_addr.as_str()
        ),
        ("cab2", "10.255.12.1/30", "10.255.12.2")
    );
    let wifi = site.areas[2].path(PathKind::Wifi, 1).unwrap();
    assert_eq!(
        (
            wifi.ifname.as_str(),
            wifi.addr.as_str(),
            wifi.peer_addr.as_str()
        ),
        ("wifi1", "10.254.13.2/30", "10.254.13.1")
    );

    let client = &area1.clients[0].ns;
    client
        .wait_reachable(&site.internet_hosts[0], SETTLE)
        .unwrap();
    let stats = client
        .ping(&site.internet_hosts[0], 5, Duration::from_millis(50))
        .unwrap();
    assert!(stats.received > 0, "{stats:?}");

    let remote = &area2.clients[0].addr;
    client.wait_reachable(remote, SETTLE).unwrap();
    let route = area1
        .appliance
        .ip_output(&["route", "get", remote])
        .unwrap();
    assert!(route.contains("dev cab2"), "{route}");

    let hub = site.hub.as_ref().unwrap();
    hub.wait_reachable(&site.internet_hosts[2], SETTLE).unwrap();
    area2.uplinks[1]
        .router
        .wait_reachable(&site.hub_addr, SETTLE)
        .unwrap();

    let plan = site.describe();
    eprintln!("{plan}");
    assert!(plan.contains(area1.appliance.name()) && plan.contains("198.51.100.31/24"));

    // The site file the lab writes for it is valid, and each appliance finds itself in it.
    let mut site = site;
    lab.legs(&mut site).unwrap();
    let text = lab::SiteFile::new(&site, lab.dir()).text();
    let parsed = fieldnet::config::SiteConfig::from_str(&text, "lab.toml")
        .unwrap_or_else(|error| panic!("{error}\n{text}"));
    let two = parsed.view(&lab::appliance_name(2)).unwrap();
    assert_eq!(two.appliance.area, "area2");
    let cable = &two.peers[0].paths[0];
    assert_eq!(
        (
            cable.interface.as_str(),
            cable.local.to_string(),
            cable.remote.to_string()
        ),
        ("cab1", "10.255.12.2".to_owned(), "10.255.12.1".to_owned())
    );
    assert_eq!(two.peers[0].paths.len(), 3, "cable, wifi and the VPN");
    let legs: Vec<Option<&str>> = two
        .networks
        .iter()
        .map(|n| n.interface.as_deref())
        .collect();
    assert_eq!(legs, [Some("leg1"), Some("lan0"), Some("leg3")]);
    assert_eq!(
        two.bus.socket,
        lab::bus_socket(lab.dir(), 2),
        "each appliance has its own bus"
    );
    assert_eq!(parsed.hubs().count(), 2);

    drop(site);
    drop(lab);
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn exec_reports_failures_and_does_not_wait_for_background_children() {
    let Some(mut lab) = Lab::for_test("exec") else {
        return;
    };
    let ns = lab.netns("x").unwrap();
    let out = ns.exec("sh", &["-c", "echo hello"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    let error = ns
        .exec("sh", &["-c", "echo broken >&2; exit 3"])
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("broken") && text.contains(ns.name()),
        "{text}"
    );
    let error = ns
        .ip(&["link", "set", "dev", "nonexistent", "up"])
        .unwrap_err();
    assert!(format!("{error:#}").contains(ns.name()));

    let started = Instant::now();
    ns.exec("sh", &["-c", "sleep 30 & echo started"]).unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    // What the command left in the background went with it.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", ns.name()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pids.stdout).trim(), "");
    let error = ns
        .exec_timeout("sleep", &["30"], Duration::from_millis(300))
        .unwrap_err();
    assert!(format!("{error:#}").contains("did not finish"), "{error:#}");
}

#[test]
fn a_namespace_has_its_own_resolv_conf_and_the_hosts_is_never_written() {
    let host_before = std::fs::read("/etc/resolv.conf").ok();
    let Some(mut lab) = Lab::for_test("resolv") else {
        return;
    };
    let ns = lab.netns("client").unwrap();
    let own = std::path::Path::new("/etc/netns")
        .join(ns.name())
        .join("resolv.conf");
    assert!(own.is_file(), "{} missing", own.display());
    // Seen from inside, /etc/resolv.conf is the lab's file (checked before anything writes it,
    // so a broken mount fails here rather than rewriting the host's).
    let seen = ns.exec("cat", &["/etc/resolv.conf"]).unwrap();
    assert!(
        String::from_utf8_lossy(&seen.stdout).contains("of lab namespace"),
        "{}",
        String::from_utf8_lossy(&seen.stdout)
    );
    // What a DHCP client's stock hook does: rewrite /etc/resolv.conf in place.
    ns.exec(
        "sh",
        &[
            "-c",
            "echo '# Generated by dhcpcd' > /etc/resolv.conf && echo 'nameserver 192.0.2.53' >> /etc/resolv.conf",
        ],
    )
    .unwrap();
    let inside = std::fs::read_to_string(&own).unwrap();
    assert!(inside.contains("nameserver 192.0.2.53"), "{inside}");
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), host_before);
    drop(lab);
    assert!(!own.exists(), "{} left behind", own.display());
    assert!(!own.parent().unwrap().exists());
}

/// The example site file, built as it says: every machine has its host name, the file as its
/// /etc/fieldnet/site.toml, its own /run, and the links, legs and tunnels the file gives it.
#[test]
fn a_site_file_is_built_as_it_says_each_machine_on_its_own() {
    let Some(mut lab) = Lab::for_test("from-file") else {
        return;
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/riverside/site.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let site = lab.site_from_file(&text, path, 1).unwrap();
    assert_eq!(site.areas.len(), 3);
    assert_eq!(
        site.machines
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["north", "stage", "south", "hub-a", "hub-b"]
    );
    let stage = site.machine("stage").unwrap();
    let seen = stage
        .exec(
            "sh",
            &[
                "-c",
                "hostname; cat /etc/fieldnet/site.toml | head -1; test -s /etc/fieldnet/site.key && echo key; echo here > /run/probe",
            ],
        )
        .unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.starts_with("stage\n# The \"riverside\" site"),
        "{seen}"
    );
    assert!(seen.contains("key"), "{seen}");
    assert!(
        stage.run_dir().join("probe").exists(),
        "/run is the machine's own"
    );
    assert!(!std::path::Path::new("/run/probe").exists());
    // A machine's agents start together: every process shares its host name and mounts, and a
    // file put on it is seen by all of them, never by the host.
    stage
        .put("/etc/fieldnet/note", "put through the machine\n")
        .unwrap();
    let reads: Vec<_> = (0..6)
        .map(|_| {
            let stage = stage.clone();
            std::thread::spawn(move || {
                stage
                    .exec("sh", &["-c", "hostname; cat /etc/fieldnet/note"])
                    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            })
        })
        .collect();
    for read in reads {
        assert_eq!(
            read.join().unwrap().unwrap(),
            "stage\nput through the machine\n"
        );
    }
    assert!(stage.root.join("etc/fieldnet/note").exists());
    assert!(!std::path::Path::new("/etc/fieldnet/note").exists());
    assert_ne!(
        String::from_utf8_lossy(
            &std::process::Command::new("hostname")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        "stage",
        "the host's name is left alone"
    );

    // The file's interfaces, links and legs, and the tunnel to the primary hub.
    let north = &site.areas[0];
    let cable = north.path(PathKind::Cable, 2).unwrap();
    assert_eq!(
        (cable.ifname.as_str(), cable.peer_addr.as_str()),
        ("cab-stage", "10.255.12.2")
    );
    north
        .appliance
        .wait_reachable("10.255.12.2", SETTLE)
        .unwrap();
    assert_eq!(north.lan_if, "lan.101");
    assert!(
        north
            .legs
            .iter()
            .any(|leg| leg.ifname == "lan.102" && leg.peer == 2)
    );
    north
        .appliance
        .wait_reachable("10.253.0.254", SETTLE)
        .unwrap();
    north.clients[0]
        .ns
        .wait_reachable("192.0.2.53", SETTLE)
        .unwrap();
    // hub-b watches hub-a over the VPC the file gives them.
    site.machine("hub-b")
        .unwrap()
        .ns
        .wait_reachable("10.200.0.10", SETTLE)
        .unwrap();
}
