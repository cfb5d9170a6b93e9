use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[appliance]
id = 1
name = "one"
area = "north"

[[areas]]
name = "north"
appliance = 1

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
"#;

fn error_of(text: &str) -> ConfigError {
    Config::from_str(text, "test.toml").expect_err("config should be rejected")
}

#[test]
fn minimal_config_gets_defaults() {
    let config = Config::from_str(MINIMAL, "test.toml").unwrap();
    assert_eq!(config.appliance.id, 1);
    assert_eq!(config.bus.socket, Path::new(DEFAULT_BUS_SOCKET));
    assert_eq!(config.bus.max_line_bytes, DEFAULT_BUS_MAX_LINE_BYTES);
    assert_eq!(config.agents.whereami.common.metrics_listen.port(), 9703);
    assert!(config.agents.whereami.common.enabled);
    assert_eq!(config.own_networks().count(), 1);
    assert_eq!(
        config.site.key,
        SiteKey::Inline(
            (0..32)
                .map(|i| [
                    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
                    0xdd, 0xee, 0xff
                ][i % 16])
                .collect()
        )
    );
}

#[test]
fn example_configs_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let mut seen = 0;
    for entry in walk(&examples) {
        if entry.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&entry).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.networks.is_empty(), "{}", entry.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected the three-area example, found {seen} files"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn three_area_example_is_consistent() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/riverside");
    let two = Config::load(&examples.join("appliance-2.toml")).unwrap();
    assert_eq!(two.peers.len(), 2);
    assert_eq!(
        two.networks_of(3)
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["NETWORK3"]
    );
    assert_eq!(
        two.own_networks()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["NETWORK2"]
    );
    assert!(
        two.uplinks
            .iter()
            .any(|u| u.kind == UplinkKind::Remote { peer: 1 })
    );
    let cable = &two.peers[0].paths[0];
    assert_eq!(
        (cable.kind, cable.local.to_string().as_str()),
        (PathKind::Cable, "10.255.12.2")
    );
}

/// Each broken input, the line and key the error must name, and a word of its message.
#[test]
fn errors_name_line_key_and_fix() {
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "gateway outside subnet",
            "gateway = \"10.101.0.1\"",
            20,
            "networks[0].gateway",
            "not a host address",
        ),
        (
            "bad subnet",
            "subnet = \"10.101.0.0/24\"",
            19,
            "networks[0].subnet",
            "not an IPv4 subnet",
        ),
        (
            "unknown area",
            "area = \"north\"\nsubnet",
            18,
            "networks[0].area",
            "defined areas: north",
        ),
        (
            "unknown key",
            "appliance = 1\n",
            15,
            "areas[0].colour",
            "unknown field",
        ),
        ("wrong type", "id = 1", 8, "appliance.id", "invalid type"),
        (
            "short key",
            "key = \"0011",
            5,
            "site.key",
            "at least 32 bytes",
        ),
    ];
    let replacements = [
        "gateway = \"10.102.0.1\"",
        "subnet = \"10.101.0/24\"",
        "area = \"west\"\nsubnet",
        "appliance = 1\ncolour = \"red\"\n",
        "id = \"one\"",
        "key = \"0011\"\n#",
    ];
    for ((what, find, line, key, word), replacement) in cases.iter().zip(replacements) {
        let text = MINIMAL.replacen(find, replacement, 1);
        assert_ne!(text, MINIMAL, "{what}: replacement did not apply");
        let error = error_of(&text);
        let problem = &error.problems[0];
        assert_eq!(
            (problem.line, problem.key.as_str()),
            (*line, *key),
            "{what}: {error}"
        );
        assert!(problem.message.contains(word), "{what}: {error}");
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("test.toml:{line}: {key}: ")),
            "{what}: {shown}"
        );
    }
}

#[test]
fn syntax_error_names_its_line() {
    let error = error_of(&MINIMAL.replacen("name = \"one\"", "name = \"one", 1));
    assert_eq!(error.problems[0].line, 9, "{error}");
    assert_eq!(error.problems[0].key, "(syntax)");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = MINIMAL.replacen("id = 1", "id = 0", 1).replacen(
        "gateway = \"10.101.0.1\"",
        "gateway = \"10.101.0.0\"",
        1,
    );
    let error = error_of(&text);
    let keys: Vec<&str> = error.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"appliance.id"), "{error}");
    assert!(keys.contains(&"networks[0].gateway"), "{error}");
}

#[test]
fn overlapping_networks_and_duplicate_ports_are_rejected() {
    let text = format!(
        "{MINIMAL}\n[[networks]]\nname = \"NETWORK2\"\narea = \"north\"\nsubnet = \"10.101.0.0/25\"\ngateway = \"10.101.0.2\"\n\n[whereami]\nmetrics_listen = \"127.0.0.1:9701\"\n"
    );
    let error = error_of(&text);
    let shown = error.to_string();
    assert!(
        shown.contains("networks[1].subnet: 10.101.0.0/25 overlaps network 'NETWORK1'"),
        "{shown}"
    );
    assert!(
        shown.contains("is already used by [uplink_monitor]"),
        "{shown}"
    );
}

#[test]
fn uplink_kinds_need_their_own_keys() {
    let text = format!(
        "{MINIMAL}\n[[uplinks]]\nname = \"a\"\nkind = \"local\"\n\n[[uplinks]]\nname = \"b\"\nkind = \"remote\"\npeer = 7\n\n[[uplinks]]\nname = \"c\"\nkind = \"satellite\"\n"
    );
    let shown = error_of(&text).to_string();
    assert!(
        shown.contains("uplinks[0]: a local uplink needs 'interface'"),
        "{shown}"
    );
    assert!(
        shown.contains("uplinks[1].peer: appliance 7 is not a configured peer"),
        "{shown}"
    );
    assert!(
        shown.contains("uplinks[2].kind: 'satellite' is not an uplink kind; valid: local, remote"),
        "{shown}"
    );
}

#[test]
fn site_key_is_never_printed() {
    let config = Config::from_str(MINIMAL, "test.toml").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("0011223344"), "{debug}");
}

const LOCAL_UPLINK: &str = "\n[[uplinks]]\nname = \"a\"\nkind = \"local\"\ninterface = \"wan0\"\ngateway = \"192.168.8.1\"\n";

#[test]
fn uplink_monitor_defaults_and_targets() {
    let config = Config::from_str(
        &format!("{MINIMAL}{LOCAL_UPLINK}\n[uplink_monitor]\ntargets = [\"192.0.2.1\", \"198.51.100.53:53\"]\n"),
        "t.toml",
    )
    .unwrap();
    let monitor = &config.agents.uplink_monitor;
    assert_eq!(
        monitor.targets,
        [
            ProbeTarget::Icmp("192.0.2.1".parse().unwrap()),
            ProbeTarget::Udp("198.51.100.53:53".parse().unwrap())
        ]
    );
    let shown = error_of(&format!(
        "{MINIMAL}{LOCAL_UPLINK}\n[uplink_monitor]\ntargets = [\"dns.google\"]\n"
    ))
    .to_string();
    assert!(
        shown.contains("uplink_monitor.targets[0]: 'dns.google' is neither an IPv4 address"),
        "{shown}"
    );
    assert_eq!(monitor.probe_interval, DEFAULT_PROBE_INTERVAL);
    assert_eq!(
        (monitor.route_table_base, monitor.fwmark_base),
        (200, 0x4600)
    );
    assert!(monitor.masquerade);

    let shown = error_of(&format!("{MINIMAL}{LOCAL_UPLINK}")).to_string();
    assert!(
        shown.contains("uplink_monitor.targets: list the addresses to probe"),
        "{shown}"
    );

    let shown = error_of(&format!(
        "{MINIMAL}{LOCAL_UPLINK}\n[uplink_monitor]\ntargets = [\"192.0.2.1\"]\ndampening_reuse = 5000\nprobe_interval_ms = 5\nroute_table_base = 252\n"
    ))
    .to_string();
    assert!(
        shown.contains("dampening_reuse: 5000 must be below dampening_suppress (3000)"),
        "{shown}"
    );
    assert!(
        shown.contains("probe_interval_ms: 5 is out of range; valid: 10 to 60000"),
        "{shown}"
    );
    assert!(shown.contains("reserved tables 253-255"), "{shown}");
}

#[test]
fn http_check_url_is_parsed_or_explained() {
    let with = |url: &str| {
        format!(
            "{MINIMAL}{LOCAL_UPLINK}\n[uplink_monitor]\ntargets = [\"192.0.2.1\"]\nhttp_check_url = \"{url}\"\n"
        )
    };
    let config = Config::from_str(&with("http://192.0.2.10:8080/generate_204"), "t.toml").unwrap();
    let check = config.agents.uplink_monitor.http_check.unwrap();
    assert_eq!(check.address, "192.0.2.10:8080".parse().unwrap());
    assert_eq!(
        (check.host.as_str(), check.path.as_str(), check.expect),
        ("192.0.2.10:8080", "/generate_204", 204)
    );
    let shown = error_of(&with("https://example.com/")).to_string();
    assert!(
        shown.contains(
            "uplink_monitor.http_check_url: 'https://example.com/' is not an http:// URL"
        ),
        "{shown}"
    );
    let shown = error_of(&with("http://example.com/")).to_string();
    assert!(
        shown.contains("'example.com' in 'http://example.com/' is not an IPv4 address"),
        "{shown}"
    );
}

#[test]
fn throughput_test_is_off_by_default_and_its_minimum_needs_it() {
    let base = format!("{MINIMAL}{LOCAL_UPLINK}\n[uplink_monitor]\ntargets = [\"192.0.2.1\"]\n");
    assert!(
        Config::from_str(&base, "t.toml")
            .unwrap()
            .agents
            .uplink_monitor
            .throughput_test
            .is_none()
    );
    let shown = error_of(&format!("{base}min_throughput_kbps = 2000\n")).to_string();
    assert!(
        shown.contains("min_throughput_kbps: needs throughput_test_url"),
        "{shown}"
    );
    let config = Config::from_str(
        &format!(
            "{base}throughput_test_url = \"http://192.0.2.10/1m\"\nmin_throughput_kbps = 2000\n"
        ),
        "t.toml",
    )
    .unwrap();
    let test = config.agents.uplink_monitor.throughput_test.unwrap();
    assert_eq!(
        (test.min_kbps, test.interval),
        (2000, DEFAULT_THROUGHPUT_TEST_INTERVAL)
    );
}

const HUB: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[appliance]
id = 200
name = "hub-b"

[[areas]]
name = "north"
appliance = 1

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"

[[peers]]
id = 1
name = "north"

[[peers.paths]]
kind = "vpn"
interface = "wg-a1"
local = "10.253.0.254"
remote = "10.253.0.1"

[cross_site_failover]
mode = "hub"

[cross_site_failover.hub]
role = "standby"
interface = "eth0"
local = "203.0.113.11"
partner = "203.0.113.10"
aws_region = "eu-west-1"
route_tables = ["rtb-0a1b"]
instance_id = "i-0b"
partner_instance_id = "i-0a"
partner_health_check = "hc-a"
"#;

#[test]
fn a_hub_needs_no_area_and_gets_hub_defaults() {
    let config = Config::from_str(HUB, "hub.toml").unwrap();
    let hub = config.agents.cross_site_failover.hub.unwrap();
    assert_eq!(hub.role, HubRole::Standby);
    assert_eq!(hub.takeover_after, DEFAULT_TAKEOVER_AFTER);
    assert_eq!(hub.giveback_hold, DEFAULT_GIVEBACK_HOLD);
    assert_eq!(hub.cloudwatch_namespace, "fieldnet");
    assert_eq!(hub.aws_endpoint, None);
    assert_eq!(config.appliance.area, "");
}

#[test]
fn hub_mode_mistakes_are_named() {
    let text = HUB
        .replace("role = \"standby\"", "role = \"backup\"")
        .replace("instance_id = \"i-0b\"", "instance_id = \"0b\"")
        .replace("[\"rtb-0a1b\"]", "[\"0a1b\"]");
    let message = error_of(&text).to_string();
    assert!(
        message.contains(
            "cross_site_failover.hub.role: 'backup' is not a hub role; valid: primary, standby"
        ),
        "{message}"
    );
    assert!(
        message.contains("cross_site_failover.hub.instance_id: '0b' is not an EC2 instance id"),
        "{message}"
    );
    assert!(
        message.contains("cross_site_failover.hub.route_tables[0]: '0a1b' is not a route table id"),
        "{message}"
    );

    let no_section = HUB.split("[cross_site_failover.hub]").next().unwrap();
    let message = error_of(no_section).to_string();
    assert!(
        message
            .contains("cross_site_failover.mode: a hub needs a [cross_site_failover.hub] section"),
        "{message}"
    );

    let no_mode = HUB.replace("mode = \"hub\"", "");
    let message = error_of(&no_mode).to_string();
    assert!(message.contains("appliance.area: missing"), "{message}");
    assert!(
        message.contains("cross_site_failover.hub: only a hub has this section"),
        "{message}"
    );

    let bad_mode = HUB.replace("mode = \"hub\"", "mode = \"spoke\"");
    let message = error_of(&bad_mode).to_string();
    assert!(
        message.contains("'spoke' is not a mode; valid: appliance (default), hub"),
        "{message}"
    );
}

#[test]
fn dhcp_section_is_checked_against_the_networks() {
    let config = Config::from_str(MINIMAL, "test.toml").unwrap();
    let dhcp = &config.agents.dhcp_takeover;
    assert_eq!(dhcp.options.lease_time, Some(DEFAULT_LEASE_TIME));
    assert_eq!(dhcp.conflict_probe, Some(DEFAULT_CONFLICT_PROBE));
    assert_eq!(dhcp.store, Path::new(DEFAULT_DHCP_STORE));

    let good = format!(
        "{MINIMAL}
[dhcp_takeover]
conflict_probe_ms = 0
routes = [\"10.200.0.0/16\", \"10.201.0.0/16 via 10.101.0.5\"]

[[dhcp_takeover.pools]]
network = \"NETWORK1\"
start = \"10.101.0.100\"
end = \"10.101.0.199\"

[[dhcp_takeover.reservations]]
mac = \"02-00-5E-10-00-01\"
address = \"10.101.0.10\"
hostname = \"Till-1\"

[[dhcp_takeover.classes]]
name = \"cameras\"
mac_prefixes = [\"00:80:f0\"]
ranges = [\"10.101.0.20-10.101.0.49\"]
lease_time_s = 86400
"
    );
    let config = Config::from_str(&good, "test.toml").unwrap();
    let dhcp = &config.agents.dhcp_takeover;
    assert_eq!(dhcp.conflict_probe, None);
    assert_eq!(dhcp.reservations[0].mac, [2, 0, 0x5e, 0x10, 0, 1]);
    assert_eq!(dhcp.reservations[0].network, "NETWORK1");
    assert_eq!(dhcp.reservations[0].hostname.as_deref(), Some("till-1"));
    assert_eq!(dhcp.classes[0].mac_prefixes, vec![vec![0, 0x80, 0xf0]]);
    assert_eq!(
        dhcp.classes[0].options.lease_time,
        Some(Duration::from_secs(86_400))
    );
    let routes = dhcp.options.routes.as_ref().unwrap();
    assert_eq!(routes[0].via, None);
    assert_eq!(routes[1].via, Some(Ipv4Addr::new(10, 101, 0, 5)));

    let bad = good
        .replace("network = \"NETWORK1\"", "network = \"NETWORK9\"")
        .replace("02-00-5E-10-00-01", "02:00:5e")
        .replace("\"10.101.0.20-10.101.0.49\"", "\"10.101.0.49-10.101.0.20\"")
        .replace("\"10.200.0.0/16\"", "\"10.200.0.1/16\"");
    let message = error_of(&bad).to_string();
    for expected in [
        "dhcp_takeover.pools[0].network: network 'NETWORK9' is not defined; defined networks: NETWORK1",
        "dhcp_takeover.reservations[0].mac: '02:00:5e' is not a MAC address",
        "dhcp_takeover.classes[0].ranges[0]: the range starts at 10.101.0.49, after its end 10.101.0.20",
        "dhcp_takeover.routes[0]: '10.200.0.1/16' is not a route",
    ] {
        assert!(message.contains(expected), "{expected} not in:\n{message}");
    }

    let overlapping = good.replace("10.101.0.20-10.101.0.49", "10.101.0.150-10.101.0.160");
    let message = error_of(&overlapping).to_string();
    assert!(
        message
            .contains("dhcp_takeover.classes[0].ranges: 10.101.0.150-10.101.0.160 overlaps a pool"),
        "{message}"
    );
    let gateway = good.replace("address = \"10.101.0.10\"", "address = \"10.101.0.1\"");
    let message = error_of(&gateway).to_string();
    assert!(
        message
            .contains("dhcp_takeover.reservations[0].address: 10.101.0.1 is not a client address"),
        "{message}"
    );
}
