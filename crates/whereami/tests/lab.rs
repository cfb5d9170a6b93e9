//! whereami on a real two-area lab site, asked by real `dig` from the clients; a real dnsmasq in
//! the lab's internet namespace is the upstream resolver.

use std::time::Duration;

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
    let output = ns
        .exec(
            "dig",
            &["+tries=1", "+time=3", &format!("@{server}"), name, qtype],
        )
        .unwrap_or_else(|e| panic!("dig {name} {qtype} @{server}: {e:#}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("no answer")
        .to_owned();
    let answers = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (status, answers)
}

fn values(answers: &[String]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect()
}

#[test]
fn each_network_learns_its_name_outsiders_are_refused_and_forwarded_answers_survive_the_uplinks() {
    let Some(mut lab) = Lab::for_test("whereami") else {
        return;
    };
    let site = lab
        .site(&SiteSpec {
            areas: 2,
            uplinks_per_area: 1,
            clients_per_area: 1,
            hub: false,
            vpn: false,
        })
        .unwrap();
    // The internet's resolver: dnsmasq, answering www.example.org with TTL 0, so every later
    // answer from whereami's cache is a stale one.
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
                // Other example.org names do not exist (NXDOMAIN, not "no upstream").
                "--local=/example.org/",
            ],
        )
        .unwrap();
    wait(&upstream, "started");

    let extra = format!(
        "[whereami]\nupstreams = [\"{UPSTREAM}\"]\nupstream_timeout_ms = 500\n\n[[whereami.hosts]]\nname = \"cache\"\naddress = \"10.101.0.10\"\n"
    );
    let mut servers = Vec::new();
    for area in &site.areas {
        let config = lab.dir().join(format!("appliance-{}.toml", area.id));
        std::fs::write(
            &config,
            lab::appliance_config(&site, area.id, lab.dir(), &extra),
        )
        .unwrap();
        let server = lab
            .spawn(
                &area.appliance,
                env!("CARGO_BIN_EXE_whereami"),
                &["--config", config.to_str().unwrap()],
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
