//! whereami on a real two-area lab site, asked by real `dig` from the clients; a real dnsmasq in
//! the lab's internet namespace is the upstream resolver.

use std::time::Duration;

use fieldnet::bus::frame::{self, Frame};
use fieldnet::bus::topics::{DnsRole, DnsState, TOPIC_DNS_STATE, UpstreamHealth};
use lab::{Lab, LabProcess, Netns, SiteSpec};

const PATIENCE: Duration = Duration::from_secs(30);
const ZONE: &str = "lab.fieldnet.example";
const UPSTREAM: &str = "192.0.2.53";

fn wait(process: &LabProcess, needle: &str) {
    process
        .wait_for_log(needle, PATIENCE)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `dig` from `ns`: (status, answer lines), read from one run's full output.
fn dig(ns: &Netns, server: &str, name: &str, qtype: &str) -> (String, Vec<String>) {
    let reply = ns
        .dig(&["+tries=1", "+time=3", &format!("@{server}"), name, qtype])
        .unwrap_or_else(|e| panic!("dig {name} {qtype} @{server}: {e:#}"));
    (reply.status, reply.answers)
}

fn values(answers: &[String]) -> Vec<String> {
    lab::dig_values(answers)
}

/// Two areas, one uplink and one client each: all whereami needs.
fn two_areas(lab: &mut Lab) -> lab::Site {
    lab.site(&SiteSpec::lan(2, 1)).unwrap()
}

/// The internet's resolver, dnsmasq on [`UPSTREAM`], logging every query: www.example.org
/// is 192.0.2.80 (TTL 0), other example.org names do not exist, every example.net name is
/// 192.0.2.81.
fn start_upstream(lab: &mut Lab, site: &lab::Site) -> LabProcess {
    lab.addr(
        &site.internet,
        lab::INTERNET_BRIDGE,
        &format!("{UPSTREAM}/24"),
    )
    .unwrap();
    let upstream = lab
        .spawn(
            &site.internet,
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--log-facility=-",
                "--log-queries",
                "--no-resolv",
                "--no-hosts",
                "--pid-file",
                "--user=root",
                "--bind-interfaces",
                &format!("--listen-address={UPSTREAM}"),
                "--address=/www.example.org/192.0.2.80",
                // Every example.net name, each new to whereami's cache when asked.
                "--address=/example.net/192.0.2.81",
                // Other example.org names do not exist (NXDOMAIN, not "no upstream").
                "--local=/example.org/",
            ],
        )
        .unwrap();
    wait(&upstream, "started");
    upstream
}

#[test]
fn each_network_learns_its_name_outsiders_are_refused_and_forwarded_answers_survive_the_uplinks() {
    let Some(mut lab) = Lab::for_test("whereami") else {
        return;
    };
    let site = two_areas(&mut lab);
    // The internet's resolver: dnsmasq, answering www.example.org with TTL 0, so every later
    // answer from whereami's cache is a stale one.
    let upstream = start_upstream(&mut lab, &site);
    let extra = format!(
        "[whereami]\nupstreams = [\"{UPSTREAM}\"]\nupstream_timeout_ms = 500\n\n[[whereami.hosts]]\nname = \"cache\"\naddress = \"10.101.0.10\"\n"
    );
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(&extra)
        .write()
        .unwrap();
    let mut servers = Vec::new();
    for area in &site.areas {
        let server = lab
            .spawn(
                &area.appliance,
                env!("CARGO_BIN_EXE_whereami"),
                &[
                    "--config",
                    config.to_str().unwrap(),
                    "--appliance",
                    &lab::appliance_name(area.id),
                ],
            )
            .unwrap();
        wait(&server, "answering DNS");
        servers.push(server);
    }
    let (c1, c2) = (&site.areas[0].clients[0].ns, &site.areas[1].clients[0].ns);
    let whereami = format!("whereami.{ZONE}");

    // Each network learns its own name, and the view is the asker's network, not the server.
    let (status, answers) = dig(c1, "10.101.0.1", &whereami, "TXT");
    assert_eq!(
        (status.as_str(), values(&answers)),
        ("NOERROR", vec!["\"NETWORK1\"".to_owned()])
    );
    let (_, answers) = dig(c2, "10.102.0.1", &whereami, "TXT");
    assert_eq!(values(&answers), ["\"NETWORK2\""]);
    let (_, answers) = dig(c2, "10.101.0.1", &whereami, "TXT");
    assert_eq!(
        values(&answers),
        ["\"NETWORK2\""],
        "area 2 asking area 1's server"
    );

    // The uplink side is refused.
    let router = &site.areas[0].uplinks[0].router;
    let (status, _) = dig(router, "10.101.0.1", &whereami, "TXT");
    assert_eq!(status, "REFUSED");
    let (status, _) = dig(router, "10.101.0.1", "www.example.org", "A");
    assert_eq!(status, "REFUSED", "not an open resolver");

    // Local names: the appliances by their gateways, configured hosts, and the reverse.
    let (_, answers) = dig(c1, "10.101.0.1", &format!("appliance-2.{ZONE}"), "A");
    assert_eq!(values(&answers), ["10.102.0.1"]);
    let (_, answers) = dig(c2, "10.102.0.1", &format!("cache.{ZONE}"), "A");
    assert_eq!(values(&answers), ["10.101.0.10"]);
    let (_, answers) = dig(c1, "10.101.0.1", "10.0.101.10.in-addr.arpa", "PTR");
    assert_eq!(values(&answers), [format!("cache.{ZONE}.")]);
    let (status, _) = dig(c1, "10.101.0.1", &format!("nobody.{ZONE}"), "A");
    assert_eq!(status, "NXDOMAIN");

    // Forwarded through the uplink to dnsmasq.
    let (status, answers) = dig(c1, "10.101.0.1", "www.example.org", "A");
    assert_eq!(
        (status.as_str(), values(&answers)),
        ("NOERROR", vec!["192.0.2.80".to_owned()])
    );
    assert!(
        upstream.log().contains("query[A] www.example.org"),
        "{}",
        upstream.log()
    );
    let (status, _) = dig(c1, "10.101.0.1", "missing.example.org", "A");
    assert_eq!(status, "NXDOMAIN");

    // The uplink goes dark: the answer still comes, stale (TTL 30), from the cache.
    let uplink = &site.areas[0].uplinks[0];
    let _dark = lab
        .blackhole(&uplink.router, &uplink.router_wan_if)
        .unwrap();
    let (status, answers) = dig(c1, "10.101.0.1", "www.example.org", "A");
    assert_eq!(status, "NOERROR", "{answers:?}");
    assert_eq!(values(&answers), ["192.0.2.80"]);
    let ttl: Vec<&str> = answers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ttl, ["30"], "{answers:?}");
    // A name never seen has nothing to fall back on.
    let (status, _) = dig(c1, "10.101.0.1", "other.example.org", "A");
    assert_eq!(status, "SERVFAIL");
    // Local answers never needed the uplink.
    let (_, answers) = dig(c1, "10.101.0.1", &whereami, "TXT");
    assert_eq!(values(&answers), ["\"NETWORK1\""]);
}

/// Sends `frames` to the broker at `socket`, then a ping; returns every frame the broker sent
/// before the pong (which comes after everything sent before it was processed).
fn bus_exchange(socket: &std::path::Path, frames: &[Frame]) -> Vec<Frame> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    for frame in frames.iter().chain([&Frame::Ping]) {
        stream.write_all(frame::encode(frame).as_bytes()).unwrap();
    }
    std::io::BufReader::new(stream)
        .lines()
        .map(|line| frame::decode(line.unwrap().as_bytes()).unwrap())
        .take_while(|frame| *frame != Frame::Pong)
        .collect()
}

/// Publishes a retained `body` (JSON; `null` clears) on `topic` through the broker at `socket`,
/// with fieldctl: the broker takes `dhcp/` topics only from dhcp-takeover and the operator's
/// tool.
fn publish(socket: &std::path::Path, topic: &str, body: &str) {
    let fieldctl = lab::sibling_binary(env!("CARGO_BIN_EXE_whereami"), "fieldctl", "fieldctl");
    let output = std::process::Command::new(fieldctl)
        .arg("--socket")
        .arg(socket)
        .args(["publish", "--retain", topic, body])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "fieldctl publish {topic}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until some network in whereami's `dns/state` satisfies `check`.
fn wait_dns(
    watch: &mut lab::BusWatch,
    what: &str,
    check: impl Fn(&fieldnet::bus::topics::DnsNetwork) -> bool,
) {
    watch
        .wait_for::<DnsState>(what, PATIENCE, |_, state| state.networks.iter().any(&check))
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The retained `dns/state`, read from the broker at `socket`.
fn dns_state(socket: &std::path::Path) -> Option<DnsState> {
    let prefix = fieldnet::bus::topics::TOPIC_DNS_STATE.to_owned();
    bus_exchange(socket, &[Frame::Sub { prefix }])
        .into_iter()
        .find_map(|frame| match frame {
            Frame::Msg(envelope) => envelope.body_as().ok(),
            _ => None,
        })
}

/// Asks until `check` holds for dig's (status, answers), or panics after PATIENCE.
fn dig_until(
    ns: &Netns,
    server: &str,
    name: &str,
    qtype: &str,
    what: &str,
    check: impl Fn(&str, &[String]) -> bool,
) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (status, answers) = dig(ns, server, name, qtype);
        if check(&status, &answers) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {status} {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dhcp_clients_get_names_takeover_addresses_are_served_and_big_answers_go_over_tcp() {
    let Some(mut lab) = Lab::for_test("whereami-bus") else {
        return;
    };
    let site = two_areas(&mut lab);
    let area = &site.areas[0];
    // A name with 40 addresses: its A answer (about 660 bytes) does not fit in 512.
    let mut extra = String::from("[whereami]\nupstreams = []\n\n");
    for host in 100..140 {
        extra.push_str(&format!(
            "[[whereami.hosts]]\nname = \"many\"\naddress = \"10.101.0.{host}\"\n\n"
        ));
    }
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(&extra)
        .write()
        .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let appliance = lab::appliance_name(1);
    let broker = lab::sibling_binary(
        env!("CARGO_BIN_EXE_whereami"),
        "fieldnet-bus",
        "fieldnet-bus",
    );
    let _bus = lab
        .spawn(
            &area.appliance,
            &broker,
            &["--config", &config, "--appliance", &appliance],
        )
        .unwrap();
    let socket = lab::bus_socket(lab.dir(), 1);
    // Subscribing waits for the broker to listen; what whereami says comes on it.
    let mut dns = lab::BusWatch::subscribe(&socket, TOPIC_DNS_STATE, PATIENCE).unwrap();
    let server = lab
        .spawn(
            &area.appliance,
            env!("CARGO_BIN_EXE_whereami"),
            &["--config", &config, "--appliance", &appliance],
        )
        .unwrap();
    wait_dns(&mut dns, "NETWORK1 answered", |n| {
        n.name == "NETWORK1" && n.role == DnsRole::Own && n.listening
    });
    let client = &area.clients[0].ns;
    let gateway = "10.101.0.1";

    // A lease with a host name becomes a name, forward and reverse; a client may not take an
    // appliance's name.
    let laptop = format!("laptop-7.{ZONE}");
    publish(
        &socket,
        "dhcp/lease/10.101.0.57",
        r#"{"address":"10.101.0.57","mac":"02:00:00:00:00:57","hostname":"Laptop-7","network":"NETWORK1","expires":99999999999999}"#,
    );
    publish(
        &socket,
        "dhcp/lease/10.101.0.58",
        r#"{"address":"10.101.0.58","mac":"02:00:00:00:00:58","hostname":"appliance-2","network":"NETWORK1","expires":99999999999999}"#,
    );
    dig_until(
        client,
        gateway,
        &laptop,
        "A",
        "the lease's name",
        |_, answers| values(answers) == ["10.101.0.57"],
    );
    let (_, answers) = dig(client, gateway, "57.0.101.10.in-addr.arpa", "PTR");
    assert_eq!(values(&answers), [format!("{laptop}.")]);
    let (_, answers) = dig(client, gateway, &format!("appliance-2.{ZONE}"), "A");
    assert_eq!(
        values(&answers),
        ["10.102.0.1"],
        "the appliance keeps its name"
    );
    wait(&server, "held by another device");
    // Released: the name goes.
    publish(&socket, "dhcp/lease/10.101.0.57", "null");
    dig_until(
        client,
        gateway,
        &laptop,
        "A",
        "the released name",
        |status, _| status == "NXDOMAIN",
    );
    // A lease that has already expired is not a name.
    publish(
        &socket,
        "dhcp/lease/10.101.0.59",
        r#"{"address":"10.101.0.59","mac":"02:00:00:00:00:59","hostname":"old","network":"NETWORK1","expires":1}"#,
    );

    // Taking over area 2's network: its gateway address comes up here and is answered on.
    let lan = &area.lan_if;
    area.appliance
        .ip(&["addr", "add", "10.102.0.1/32", "dev", lan])
        .unwrap();
    publish(
        &socket,
        "dhcp/takeover/NETWORK2",
        r#"{"network":"NETWORK2","gateway":"10.102.0.1","owner":2,"since":1}"#,
    );
    wait_dns(&mut dns, "NETWORK2 answered here", |n| {
        n.name == "NETWORK2" && n.role == DnsRole::Takeover && n.listening
    });
    dig_until(
        client,
        "10.102.0.1",
        &format!("whereami.{ZONE}"),
        "TXT",
        "the takeover address",
        |_, answers| values(answers) == ["\"NETWORK1\""],
    );
    let state = dns_state(&socket).expect("dns/state published");
    let roles: Vec<(String, DnsRole, bool)> = state
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.role, n.listening))
        .collect();
    assert_eq!(
        roles,
        [
            ("NETWORK1".to_owned(), DnsRole::Own, true),
            ("NETWORK2".to_owned(), DnsRole::Takeover, true)
        ]
    );
    assert_eq!(state.upstreams.health, UpstreamHealth::None);
    // Handed back: no longer answered there.
    publish(&socket, "dhcp/takeover/NETWORK2", "null");
    wait_dns(&mut dns, "NETWORK2 no longer answered here", |n| {
        n.name == "NETWORK2" && n.role == DnsRole::Peer && !n.listening
    });
    let (status, _) = dig(client, "10.102.0.1", &format!("whereami.{ZONE}"), "TXT");
    assert_eq!(status, "no answer");
    let (_, answers) = dig(client, gateway, &format!("old.{ZONE}"), "A");
    assert!(answers.is_empty(), "expired lease answered: {answers:?}");

    // Too big for plain UDP: truncated, and complete over TCP (dig retries by itself).
    let name = format!("many.{ZONE}");
    let udp = client
        .dig(&[
            "+tries=1",
            "+time=3",
            "+noedns",
            "+ignore",
            &format!("@{gateway}"),
            &name,
            "A",
        ])
        .unwrap();
    assert!(
        udp.text.contains(" tc"),
        "no TC flag over UDP:\n{}",
        udp.text
    );
    let tcp = client
        .dig(&[
            "+tries=1",
            "+time=3",
            "+noedns",
            &format!("@{gateway}"),
            &name,
            "A",
        ])
        .unwrap();
    assert_eq!(tcp.answers.len(), 40, "{}", tcp.text);
    assert!(
        tcp.text.contains("(TCP)"),
        "not retried over TCP:\n{}",
        tcp.text
    );
}

/// Finding 9: idle TCP connections from one LAN device exhausted whereami's file descriptors
/// (every forwarded name SERVFAIL for everyone), and a query arriving on an uplink with a
/// forged LAN source was forwarded upstream.
#[test]
fn whereami_tcp_floods_starve_no_one_and_a_forged_lan_source_on_an_uplink_is_dropped() {
    let Some(mut lab) = Lab::for_test("whereami-tcp") else {
        return;
    };
    let site = two_areas(&mut lab);
    let upstream = start_upstream(&mut lab, &site);
    let extra = format!("[whereami]\nupstreams = [\"{UPSTREAM}\"]\nupstream_timeout_ms = 1000\n");
    let config = lab::SiteFile::new(&site, lab.dir())
        .sections(&extra)
        .write()
        .unwrap();
    let area = &site.areas[0];
    // The file limit systemd gives a service by default.
    let server = lab
        .spawn(
            &area.appliance,
            "prlimit",
            &[
                "--nofile=1024:1024",
                "--",
                env!("CARGO_BIN_EXE_whereami"),
                "--config",
                config.to_str().unwrap(),
                "--appliance",
                &lab::appliance_name(1),
            ],
        )
        .unwrap();
    wait(&server, "answering DNS");
    let gateway = "10.101.0.1";
    let (flooder, other) = (&area.clients[0].ns, &site.areas[1].clients[0].ns);

    // One device keeps 3,000 connections open (opening again what is closed) for 20 s.
    let flood = lab
        .spawn(
            flooder,
            "python3",
            &["-c", TCP_FLOOD, gateway, "3000", "20"],
        )
        .unwrap();
    wait(&flood, "flooding");
    // Meanwhile every other device is answered, over UDP and TCP, forwarded names included
    // (each new, so no stale answer from the cache can stand in for the upstream's).
    for round in 0..3 {
        let (status, answers) = dig(other, gateway, &format!("r{round}.example.net"), "A");
        assert_eq!(
            (status.as_str(), values(&answers)),
            ("NOERROR", vec!["192.0.2.81".to_owned()]),
            "round {round}, during the flood"
        );
        let reply = other
            .dig(&[
                "+tcp",
                "+tries=1",
                "+time=3",
                &format!("@{gateway}"),
                &format!("whereami.{ZONE}"),
                "TXT",
            ])
            .unwrap();
        assert_eq!(reply.values(), ["\"NETWORK2\""], "round {round}, over TCP");
        std::thread::sleep(Duration::from_secs(1));
    }
    let held = flood.log();
    assert!(held.contains("flooding"), "{held}");
    wait(&server, "DNS over TCP refused connections or requests");
    assert!(
        server.log().contains("over the cap per client"),
        "{}",
        server.log()
    );

    // A query from the uplink's side with a LAN device's address as its source: forged. It
    // is neither forwarded nor answered.
    let router = &area.uplinks[0].router;
    router
        .ip(&["addr", "add", "10.101.0.77/32", "dev", "lo"])
        .unwrap();
    let forged = router
        .dig(&[
            "-b",
            "10.101.0.77",
            "+tries=1",
            "+time=2",
            &format!("@{gateway}"),
            "forged.example.org",
            "A",
        ])
        .unwrap();
    assert_eq!(forged.status, "no answer");
    // The same from the LAN reaches the upstream: its log would have shown the forged one.
    let (status, _) = dig(flooder, gateway, "genuine.example.org", "A");
    assert_eq!(status, "NXDOMAIN");
    let log = upstream.log();
    assert!(log.contains("genuine.example.org"), "{log}");
    assert!(!log.contains("forged.example.org"), "forwarded: {log}");
}

/// Holds argv[2] TCP connections to argv[1]:53 for argv[3] seconds, opening again those the
/// server closes (at most 200 every 50 ms); says "flooding" once they were all opened once
/// (or 3 s passed).
const TCP_FLOOD: &str = r#"
import resource, selectors, socket, sys, time
server, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (count + 256, count + 256))
selector = selectors.DefaultSelector()
def connect():
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((server, 53))
    selector.register(s, selectors.EVENT_READ)
    return s
opening = [connect() for _ in range(count)]
waiting = selectors.DefaultSelector()
for s in opening:
    waiting.register(s, selectors.EVENT_WRITE)
pending, deadline = len(opening), time.monotonic() + 3
while pending and time.monotonic() < deadline:
    for key, _ in waiting.select(timeout=0.1):
        waiting.unregister(key.fileobj)
        pending -= 1
print("flooding", count - pending, "connected", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    closed = 0
    for key, _ in selector.select(timeout=0.05)[:200]:
        s = key.fileobj
        try:
            data = s.recv(512)
        except OSError:
            data = b""
        if not data:
            selector.unregister(s)
            s.close()
            closed += 1
    for _ in range(closed):
        connect()
    time.sleep(0.05)
print("done", flush=True)
"#;
