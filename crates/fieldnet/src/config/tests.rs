use std::path::Path;

use super::*;

/// One area, one appliance: the smallest valid site.
const MINIMAL: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"

[[appliances]]
id = 1
name = "one"
area = "north"
"#;

/// Two areas, two appliances with a cable and tunnels, the hub pair.
const TWO: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[areas]]
name = "south"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan.101"
pools = ["10.101.0.100-10.101.0.199"]

[[networks]]
name = "NETWORK2"
area = "south"
subnet = "10.102.0.0/24"
gateway = "10.102.0.1"
interface = "lan.102"

[[appliances]]
id = 1
name = "one"
area = "north"
tunnel_interface = "wg0"
tunnel_address = "10.253.0.1"
uplinks = [{ name = "one-4g", interface = "wan0", gateway = "192.168.8.1" }]

[[appliances]]
id = 2
name = "two"
hostname = "box-2"
area = "south"
tunnel_interface = "wg0"
tunnel_address = "10.253.0.2"
uplinks = [{ name = "two-4g", interface = "wan0", gateway = "192.168.8.1", preference = 5 }]

[appliances.uplink_monitor]
hold_ms = 5000

[[links]]
kind = "cable"
subnet = "10.255.12.0/30"
ends = [
  { appliance = "one", interface = "cab2", address = "10.255.12.1" },
  { appliance = "two", interface = "cab1", address = "10.255.12.2" },
]

[hub]
tunnel_address = "10.253.0.254"
aws_region = "eu-west-1"
route_tables = ["rtb-0a"]

[[hubs]]
id = 201
name = "hub-a"
role = "primary"
endpoint = "203.0.113.10:51820"
vpc_interface = "eth0"
vpc_address = "10.200.0.10"
instance_id = "i-0a"
health_check = "hc-a"
tunnels = { one = "wg-a1", two = "wg-a2" }

[[hubs]]
id = 202
name = "hub-b"
role = "standby"
endpoint = "203.0.113.11:51820"
vpc_interface = "eth0"
vpc_address = "10.200.0.11"
instance_id = "i-0b"
health_check = "hc-b"
aws_endpoint = "http://127.0.0.1:5000"

[uplink_monitor]
targets = ["192.0.2.1"]
"#;

fn error_of(text: &str) -> ConfigError {
    SiteConfig::from_str(text, "site.toml").expect_err("the site file should be rejected")
}

fn site(text: &str) -> SiteConfig {
    SiteConfig::from_str(text, "site.toml").unwrap_or_else(|error| panic!("{error}"))
}

fn view<'a>(site: &'a SiteConfig, name: &str) -> &'a Config {
    site.view(name).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn minimal_site_gets_defaults() {
    let site = site(MINIMAL);
    let config = view(&site, "one");
    assert_eq!(
        (config.appliance.id, config.appliance.area.as_str()),
        (1, "north")
    );
    assert_eq!(config.bus.socket, Path::new(DEFAULT_BUS_SOCKET));
    assert_eq!(config.bus.max_line_bytes, DEFAULT_BUS_MAX_LINE_BYTES);
    assert_eq!(config.agents.whereami.common.metrics_listen.port(), 9703);
    assert!(config.agents.whereami.common.enabled);
    assert_eq!(
        config
            .own_networks()
            .map(|n| n.interface.as_deref())
            .collect::<Vec<_>>(),
        [Some("lan0")]
    );
    assert_eq!(config.hub, None);
    assert_eq!(config.agents.cross_site_failover.hub, None);
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
    let dhcp = &config.agents.dhcp_takeover;
    assert_eq!(dhcp.options.lease_time, Some(DEFAULT_LEASE_TIME));
    assert_eq!(dhcp.conflict_probe, Some(DEFAULT_CONFLICT_PROBE));
    assert_eq!(dhcp.store, Path::new(DEFAULT_DHCP_STORE));
    assert!(dhcp.pools.is_empty());
}

#[test]
fn every_example_parses() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    let mut seen = 0;
    for entry in walk(&examples) {
        if entry.extension().is_some_and(|e| e == "toml") {
            let site = SiteConfig::load(&entry).unwrap_or_else(|e| panic!("{e}"));
            assert!(site.appliances().count() > 0, "{}", entry.display());
            seen += 1;
        }
    }
    assert!(seen >= 1, "expected the riverside example");
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

/// The riverside site, as each machine's agents see it.
#[test]
fn each_riverside_machine_sees_its_own_role() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/riverside/site.toml");
    let site = SiteConfig::load(&path).unwrap();
    assert_eq!(
        site.machines
            .iter()
            .map(Machine::describe)
            .collect::<Vec<_>>(),
        [
            "appliance 'north' (id 1)",
            "appliance 'stage' (id 2)",
            "appliance 'south' (id 3)",
            "hub 'hub-a' (id 201)",
            "hub 'hub-b' (id 202)"
        ]
    );
    let stage = view(&site, "stage");
    assert_eq!(stage.appliance.area, "stage");
    assert_eq!(
        stage
            .own_networks()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["NETWORK2"]
    );
    assert_eq!(
        stage
            .networks_of(3)
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["NETWORK3"]
    );
    // Every VLAN reaches every appliance, so each can take any network over.
    assert!(stage.networks.iter().all(|n| n.interface.is_some()));
    // Its own routers first, then the others' through them.
    let uplinks: Vec<(&str, &UplinkKind, u32)> = stage
        .uplinks
        .iter()
        .map(|u| (u.name.as_str(), &u.kind, u.preference))
        .collect();
    assert_eq!(
        uplinks[2],
        ("north-4g-a", &UplinkKind::Remote { peer: 1 }, 200)
    );
    assert_eq!(
        uplinks[3],
        ("south-4g-a", &UplinkKind::Remote { peer: 3 }, 200)
    );
    // Both ends of one cable, seen from each side.
    let to_north = &stage.peers.iter().find(|p| p.id == 1).unwrap().paths;
    assert_eq!(
        to_north
            .iter()
            .map(|p| (
                p.kind,
                p.interface.as_str(),
                p.local.to_string(),
                p.remote.to_string()
            ))
            .collect::<Vec<_>>(),
        [
            (
                PathKind::Cable,
                "cab-north",
                "10.255.12.2".into(),
                "10.255.12.1".into()
            ),
            (
                PathKind::Wifi,
                "wifi-north",
                "10.254.12.2".into(),
                "10.254.12.1".into()
            ),
            (
                PathKind::Vpn,
                "wg-hub",
                "10.253.0.2".into(),
                "10.253.0.1".into()
            ),
        ]
    );
    let north = view(&site, "1");
    let cable = &north.peers.iter().find(|p| p.id == 2).unwrap().paths[0];
    assert_eq!(
        (cable.local, cable.remote),
        (to_north[0].remote, to_north[0].local)
    );
    let hub = stage.hub.as_ref().unwrap();
    assert_eq!(hub.interface.as_deref(), Some("wg-hub"));
    assert_eq!(hub.endpoints[0].to_string(), "203.0.113.10:51820");

    // A hub serves no area; it watches its partner and every appliance's tunnel.
    let standby = view(&site, "hub-b");
    assert_eq!(standby.appliance.area, "");
    assert!(standby.uplinks.is_empty());
    let mode = standby.agents.cross_site_failover.hub.as_ref().unwrap();
    assert_eq!(mode.role, HubRole::Standby);
    assert_eq!(
        (mode.local.to_string(), mode.partner.to_string()),
        ("10.200.0.11".into(), "10.200.0.10".into())
    );
    assert_eq!(mode.partner_instance_id, "i-0a1b2c3d4e5f60001");
    assert_eq!(
        mode.partner_health_check.as_deref(),
        Some("0c1f3c7e-aaaa-4d5e-9f00-00000000000a")
    );
    assert_eq!(
        standby
            .peers
            .iter()
            .map(|p| (
                p.name.as_str(),
                p.paths[0].interface.as_str(),
                p.paths[0].remote.to_string()
            ))
            .collect::<Vec<_>>(),
        [
            ("north", "wg-a1", "10.253.0.1".into()),
            ("stage", "wg-a2", "10.253.0.2".into()),
            ("south", "wg-a3", "10.253.0.3".into())
        ]
    );
    let classes = &stage.agents.dhcp_takeover.classes;
    assert_eq!(classes[0].ranges[0].network, "NETWORK2");
    assert_eq!(
        stage.agents.dhcp_takeover.reservations[0].network,
        "NETWORK1"
    );
}

#[test]
fn a_machine_overrides_a_site_wide_key_and_is_blamed_for_its_own_value() {
    let two = site(TWO);
    assert_eq!(view(&two, "one").agents.uplink_monitor.hold, DEFAULT_HOLD);
    assert_eq!(
        view(&two, "two").agents.uplink_monitor.hold,
        Duration::from_millis(5000)
    );
    // The standby's own AWS endpoint; the primary has none (AWS itself).
    let endpoint = |name| {
        view(&two, name)
            .agents
            .cross_site_failover
            .hub
            .as_ref()
            .unwrap()
            .aws_endpoint
            .clone()
    };
    assert_eq!(endpoint("hub-a"), None);
    assert_eq!(endpoint("hub-b").as_deref(), Some("http://127.0.0.1:5000"));

    let error = error_of(&TWO.replace("hold_ms = 5000", "hold_ms = -1"));
    let shown = error.to_string();
    let line = line_of(TWO, "hold_ms = 5000");
    assert!(
        shown.contains(&format!(
            "site.toml:{line}: appliances[1].uplink_monitor.hold_ms: -1 is out of range"
        )),
        "{shown}"
    );
    // A site-wide mistake is reported once, at the site-wide key, not once per machine.
    let error = error_of(&TWO.replace("targets = [\"192.0.2.1\"]", "targets = [\"nowhere\"]"));
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].key, "uplink_monitor.targets[0]");
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    text[..offset].matches('\n').count() + 1
}

/// Broken site files, each with the `file:line: key` its error must name and a word of the
/// message. The line is where the `at` text stands in the broken file.
#[test]
fn broken_site_files_are_named_by_file_line_and_key() {
    struct Case {
        what: &'static str,
        find: &'static str,
        replace: &'static str,
        at: &'static str,
        key: &'static str,
        word: &'static str,
    }
    let cases = [
        Case {
            what: "a link end names no appliance",
            find: "appliance = \"two\", interface = \"cab1\"",
            replace: "appliance = \"tow\", interface = \"cab1\"",
            at: "appliance = \"tow\"",
            key: "links[0].ends[1].appliance",
            word: "'tow' is not an appliance; appliances: one, two",
        },
        Case {
            what: "a link with one end",
            find: "  { appliance = \"two\", interface = \"cab1\", address = \"10.255.12.2\" },\n",
            replace: "",
            at: "ends = [",
            key: "links[0].ends",
            word: "a link has two ends",
        },
        Case {
            what: "a link from an appliance to itself",
            find: "appliance = \"two\", interface = \"cab1\"",
            replace: "appliance = \"one\", interface = \"cab1\"",
            at: "appliance = \"one\", interface = \"cab1\"",
            key: "links[0].ends[1].appliance",
            word: "both ends are on the same appliance",
        },
        Case {
            what: "a link end outside the link's subnet",
            find: "address = \"10.255.12.2\"",
            replace: "address = \"10.255.21.2\"",
            at: "10.255.21.2",
            key: "links[0].ends[1].address",
            word: "use 10.255.12.1 or 10.255.12.2",
        },
        Case {
            what: "a link subnet inside a network",
            find: "subnet = \"10.255.12.0/30\"",
            replace: "subnet = \"10.101.0.8/30\"",
            at: "10.101.0.8/30",
            key: "links[0].subnet",
            word: "overlaps network 'NETWORK1'",
        },
        Case {
            what: "the VPN written as a link",
            find: "kind = \"cable\"",
            replace: "kind = \"vpn\"",
            at: "kind = \"vpn\"",
            key: "links[0].kind",
            word: "tunnel_interface and tunnel_address",
        },
        Case {
            what: "two appliances with one id",
            find: "id = 2\n",
            replace: "id = 1\n",
            at: "id = 1\nname = \"two\"",
            key: "appliances[1].id",
            word: "id 1 is already one's",
        },
        Case {
            what: "a hub named like an appliance",
            find: "name = \"hub-b\"",
            replace: "name = \"two\"",
            at: "name = \"two\"\nrole",
            key: "hubs[1].name",
            word: "already the name or host name",
        },
        Case {
            what: "a host name of digits, which --appliance would read as an id",
            find: "hostname = \"box-2\"",
            replace: "hostname = \"201\"",
            at: "hostname = \"201\"",
            key: "appliances[1].hostname",
            word: "would be read as an id",
        },
        Case {
            what: "a host name that is another machine's name",
            find: "hostname = \"box-2\"",
            replace: "hostname = \"one\"",
            at: "hostname = \"one\"",
            key: "appliances[1].hostname",
            word: "already the name or host name",
        },
        Case {
            what: "overlapping networks",
            find: "subnet = \"10.102.0.0/24\"",
            replace: "subnet = \"10.101.0.0/16\"",
            at: "10.101.0.0/16",
            key: "networks[1].subnet",
            word: "overlaps network 'NETWORK1' (10.101.0.0/24)",
        },
        Case {
            what: "a pool outside its subnet",
            find: "10.101.0.100-10.101.0.199",
            replace: "10.101.0.100-10.101.1.10",
            at: "pools = ",
            key: "networks[0].pools[0]",
            word: "10.101.1.10 is not a host address of NETWORK1",
        },
        Case {
            what: "a pool holding the gateway",
            find: "10.101.0.100-10.101.0.199",
            replace: "10.101.0.1-10.101.0.199",
            at: "pools = ",
            key: "networks[0].pools[0]",
            word: "holds the gateway 10.101.0.1",
        },
        Case {
            what: "a pool written wrong",
            find: "10.101.0.100-10.101.0.199",
            replace: "10.101.0.100 to 10.101.0.199",
            at: "pools = ",
            key: "networks[0].pools[0]",
            word: "is not a range such as 10.101.0.10-10.101.0.250",
        },
        Case {
            what: "an area nobody serves",
            find: "area = \"south\"\ntunnel",
            replace: "area = \"north\"\ntunnel",
            at: "name = \"south\"",
            key: "areas[1].name",
            word: "no appliance serves area 'south'",
        },
        Case {
            what: "an appliance in an undefined area",
            find: "area = \"south\"\ntunnel",
            replace: "area = \"west\"\ntunnel",
            at: "area = \"west\"",
            key: "appliances[1].area",
            word: "defined areas: north, south",
        },
        Case {
            what: "a remote uplink no appliance has",
            find: "uplinks = [{ name = \"one-4g\"",
            replace: "remote_uplinks = [\"three-4g\"]\nuplinks = [{ name = \"one-4g\"",
            at: "remote_uplinks",
            key: "appliances[0].remote_uplinks[0]",
            word: "no appliance has an uplink 'three-4g'; uplinks: one-4g, two-4g",
        },
        Case {
            what: "an own uplink named as remote",
            find: "uplinks = [{ name = \"one-4g\"",
            replace: "remote_uplinks = [\"one-4g\"]\nuplinks = [{ name = \"one-4g\"",
            at: "remote_uplinks",
            key: "appliances[0].remote_uplinks[0]",
            word: "is this appliance's own uplink",
        },
        Case {
            what: "one uplink name on two appliances",
            find: "name = \"two-4g\"",
            replace: "name = \"one-4g\"",
            at: "name = \"one-4g\", interface = \"wan0\", gateway = \"192.168.8.1\", preference",
            key: "appliances[1].uplinks[0].name",
            word: "uplink names are the site's",
        },
        Case {
            what: "an incomplete hub pair",
            find: "role = \"standby\"",
            replace: "role = \"primary\"",
            at: "[[hubs]]",
            key: "hubs",
            word: "2 hubs have role = \"primary\"",
        },
        Case {
            what: "a hub role that does not exist",
            find: "role = \"standby\"",
            replace: "role = \"backup\"",
            at: "role = \"backup\"",
            key: "hubs[1].role",
            word: "valid: primary, standby",
        },
        Case {
            what: "a hub tunnel to no appliance",
            find: "two = \"wg-a2\"",
            replace: "three = \"wg-a2\"",
            at: "tunnels = ",
            key: "hubs[0].tunnels.three",
            word: "'three' is not an appliance",
        },
        Case {
            what: "hubs without [hub]",
            find: "[hub]\ntunnel_address = \"10.253.0.254\"\naws_region = \"eu-west-1\"\nroute_tables = [\"rtb-0a\"]\n",
            replace: "",
            at: "[[hubs]]",
            key: "hubs",
            word: "the hubs need a [hub] table",
        },
        Case {
            what: "an unknown table",
            find: "[[hubs]]",
            replace: "[[hubz]]",
            at: "[[hubz]]",
            key: "hubz[0]",
            word: "unknown field 'hubz', expected one of 'site', 'areas'",
        },
        Case {
            what: "an unknown key",
            find: "area = \"north\"\ntunnel",
            replace: "area = \"north\"\ncolour = \"red\"\ntunnel",
            at: "colour",
            key: "appliances[0].colour",
            word: "unknown field 'colour', expected one of",
        },
        Case {
            what: "a wrong type",
            find: "id = 2\n",
            replace: "id = \"two\"\n",
            at: "id = \"two\"",
            key: "appliances[1].id",
            word: "invalid type",
        },
        Case {
            what: "a syntax error",
            find: "name = \"hub-a\"",
            replace: "name = \"hub-a",
            at: "name = \"hub-a",
            key: "(syntax)",
            word: "",
        },
        Case {
            what: "a gateway outside its subnet",
            find: "gateway = \"10.102.0.1\"",
            replace: "gateway = \"10.103.0.1\"",
            at: "gateway = \"10.103.0.1\"",
            key: "networks[1].gateway",
            word: "use one between 10.102.0.1 and 10.102.0.254",
        },
        Case {
            what: "a network in an undefined area",
            find: "area = \"south\"\nsubnet",
            replace: "area = \"sought\"\nsubnet",
            at: "area = \"sought\"",
            key: "networks[1].area",
            word: "area 'sought' is not defined",
        },
        Case {
            what: "a short site key",
            find: "key = \"0011",
            replace: "key = \"0011\"\n#",
            at: "key = \"0011\"",
            key: "site.key",
            word: "at least 32 bytes",
        },
        Case {
            what: "one interface for an uplink and a link",
            find: "interface = \"cab2\"",
            replace: "interface = \"wan0\"",
            at: "interface = \"wan0\", address",
            key: "links[0].ends[0].interface",
            word: "wan0 on appliance 'one' already carries uplink one-4g",
        },
        Case {
            what: "an own network carried on no interface",
            find: "interface = \"lan.101\"\n",
            replace: "",
            at: "[[appliances]]\nid = 1",
            key: "appliances[0].interfaces",
            word: "appliance 'one' serves NETWORK1, but no interface carries it here",
        },
        Case {
            what: "an appliance's interface for an unknown network",
            find: "name = \"one\"\narea = \"north\"\n",
            replace: "name = \"one\"\narea = \"north\"\ninterfaces = { NETWORK9 = \"leg9\" }\n",
            at: "interfaces = ",
            key: "appliances[0].interfaces.NETWORK9",
            word: "defined networks: NETWORK1, NETWORK2",
        },
        Case {
            what: "half a tunnel",
            find: "tunnel_address = \"10.253.0.2\"\n",
            replace: "",
            at: "tunnel_interface = \"wg0\"\nuplinks = [{ name = \"two-4g\"",
            key: "appliances[1].tunnel_interface",
            word: "needs tunnel_address too",
        },
        Case {
            what: "two appliances with one tunnel address",
            find: "tunnel_address = \"10.253.0.2\"",
            replace: "tunnel_address = \"10.253.0.1\"",
            at: "tunnel_address = \"10.253.0.1\"\nuplinks = [{ name = \"two-4g\"",
            key: "appliances[1].tunnel_address",
            word: "is already one's tunnel address",
        },
        Case {
            what: "a reservation outside its network",
            find: "interface = \"lan.102\"\n",
            replace: "interface = \"lan.102\"\n\n[[networks.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"10.101.0.50\"\n",
            at: "address = \"10.101.0.50\"",
            key: "networks[1].reservations[0].address",
            word: "is not a client address of NETWORK2",
        },
        Case {
            what: "a reservation inside a pool (audit finding 13)",
            find: "interface = \"lan.102\"\n",
            replace: "interface = \"lan.102\"\npools = [\"10.102.0.100-10.102.0.199\"]\n\n[[networks.reservations]]\nmac = \"02:00:00:00:00:01\"\naddress = \"10.102.0.150\"\n",
            at: "address = \"10.102.0.150\"",
            key: "networks[1].reservations[0].address",
            word: "10.102.0.150 is inside the pool 10.102.0.100-10.102.0.199",
        },
        Case {
            what: "an override out of range, blamed on the appliance",
            find: "hold_ms = 5000",
            replace: "hold_ms = 900000",
            at: "hold_ms = 900000",
            key: "appliances[1].uplink_monitor.hold_ms",
            word: "out of range",
        },
        Case {
            what: "an unknown key in an override",
            find: "hold_ms = 5000",
            replace: "hold_sec = 5",
            at: "hold_sec",
            key: "appliances[1].uplink_monitor.hold_sec",
            word: "unknown field 'hold_sec'",
        },
    ];
    assert!(cases.len() >= 20);
    for case in &cases {
        let text = TWO.replacen(case.find, case.replace, 1);
        assert_ne!(text, TWO, "{}: the replacement did not apply", case.what);
        let line = line_of(&text, case.at);
        let error = error_of(&text);
        let expected = format!("site.toml:{line}: {}: ", case.key);
        let shown = error.to_string();
        let found = shown
            .lines()
            .any(|l| l.starts_with(&expected) && l.contains(case.word));
        assert!(
            found,
            "{}: expected a line starting {expected:?} containing {:?}, got:\n{shown}",
            case.what, case.word
        );
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = TWO.replacen("id = 1", "id = 0", 1).replacen(
        "gateway = \"10.101.0.1\"",
        "gateway = \"10.101.0.0\"",
        1,
    );
    let error = error_of(&text);
    let keys: Vec<&str> = error.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"appliances[0].id"), "{error}");
    assert!(keys.contains(&"networks[0].gateway"), "{error}");
}

/// Audit finding 13: type errors stopped at the first, although every problem is promised.
#[test]
fn every_type_error_is_reported_at_once() {
    let text = TWO.replacen("id = 1", "id = \"one\"", 1).replacen(
        "gateway = \"10.101.0.1\"",
        "gateway = \"10.101.0.1\"\ncolour = \"blue\"",
        1,
    ) + "\n[bus]\nqueue_depth = \"deep\"\n";
    let error = error_of(&text);
    let keys: Vec<&str> = error.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys.len(), 3, "{error}");
    assert!(keys.contains(&"appliances[0].id"), "{error}");
    assert!(keys.iter().any(|k| k.starts_with("networks[0]")), "{error}");
    assert!(keys.contains(&"bus.queue_depth"), "{error}");
}

#[test]
fn the_machine_is_found_by_host_name_or_as_named_and_never_guessed() {
    let two = site(TWO);
    let found = |given: Option<&str>, host: Option<&str>| {
        two.select(given, host)
            .map(|chosen| chosen.machine.name().to_owned())
    };
    assert_eq!(found(None, Some("one")).unwrap(), "one");
    // The first label of a fully qualified host name, and an entry's own `hostname`.
    assert_eq!(found(None, Some("box-2.lab.example")).unwrap(), "two");
    assert_eq!(found(Some("202"), Some("one")).unwrap(), "hub-b");
    assert_eq!(found(Some("box-2"), None).unwrap(), "two");
    let none = found(None, Some("laptop")).unwrap_err().to_string();
    assert!(
        none.contains("no appliance or hub is named after this machine's host name 'laptop'"),
        "{none}"
    );
    assert!(
        none.contains("appliance 'one' (id 1), appliance 'two' (id 2, host name 'box-2'), hub 'hub-a' (id 201), hub 'hub-b' (id 202)"),
        "{none}"
    );
    assert!(none.contains("--appliance NAME|ID"), "{none}");
    // A name of digits alone would be taken for an id: refused in the file, so `--appliance 2`
    // can only mean one entry.
    let shown = error_of(&TWO.replace("name = \"hub-a\"", "name = \"2\"")).to_string();
    assert!(
        shown.contains("hubs[0].name: '2' would be read as an id by --appliance"),
        "{shown}"
    );
    // Two entries answering to one host name cannot pass the checks either; if they ever did,
    // the machine would refuse to guess.
    let mut twins = two.clone();
    twins.machines[2].hostname = Some("box-2".to_owned());
    let two_matches = twins.select(None, Some("box-2")).unwrap_err().to_string();
    assert!(
        two_matches.contains("host name 'box-2' matches appliance 'two' (id 2, host name 'box-2'), hub 'hub-a' (id 201, host name 'box-2')"),
        "{two_matches}"
    );
}

#[test]
fn site_key_is_never_printed() {
    let debug = format!("{:?}", site(MINIMAL));
    assert!(!debug.contains("0011223344"), "{debug}");
}

/// Audit finding 12: a key written as a TOML integer was echoed in the error.
#[test]
fn site_key_as_an_integer_is_not_echoed() {
    let text = MINIMAL.replace(
        "key = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"",
        "key = 112233445566778899",
    );
    let shown = error_of(&text).to_string();
    assert!(!shown.contains("112233445566778899"), "{shown}");
    assert!(
        shown.contains("site.key: must be the key as a string"),
        "{shown}"
    );
}

/// Audit finding 12: the documented recipe made a 0644 key file and a 0666 one was accepted.
#[test]
fn site_key_file_readable_by_group_or_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.key");
    std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
    let key = SiteKey::File(path.clone());
    for (mode, who) in [
        (0o644, "everyone"),
        (0o666, "everyone"),
        (0o640, "its group"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = key.bytes().unwrap_err().to_string();
        assert!(
            error.contains(&format!("readable by {who}")),
            "{mode:o}: {error}"
        );
        assert!(error.contains("chmod 600"), "{error}");
        assert!(!error.contains("abab"), "{error}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(key.bytes().unwrap(), vec![0xab; 32]);
}

const LOCAL_UPLINK: &str =
    "uplinks = [{ name = \"a\", interface = \"wan0\", gateway = \"192.168.8.1\" }]\n";

#[test]
fn uplink_monitor_defaults_and_targets() {
    let with = |section: &str| format!("{MINIMAL}{LOCAL_UPLINK}\n{section}");
    let config = site(&with(
        "[uplink_monitor]\ntargets = [\"192.0.2.1\", \"198.51.100.53:53\"]\n",
    ));
    let monitor = &view(&config, "one").agents.uplink_monitor;
    assert_eq!(
        monitor.targets,
        [
            ProbeTarget::Icmp("192.0.2.1".parse().unwrap()),
            ProbeTarget::Udp("198.51.100.53:53".parse().unwrap())
        ]
    );
    assert_eq!(monitor.probe_interval, DEFAULT_PROBE_INTERVAL);
    assert_eq!(
        (monitor.route_table_base, monitor.fwmark_base),
        (200, 0x4600)
    );
    assert!(monitor.masquerade);
    let shown = error_of(&with("[uplink_monitor]\ntargets = [\"dns.google\"]\n")).to_string();
    assert!(
        shown.contains("uplink_monitor.targets[0]: 'dns.google' is neither an IPv4 address"),
        "{shown}"
    );
    let shown = error_of(&with("")).to_string();
    assert!(
        shown.contains("uplink_monitor.targets: list the addresses to probe"),
        "{shown}"
    );
    let shown = error_of(&with(
        "[uplink_monitor]\ntargets = [\"192.0.2.1\"]\ndampening_reuse = 5000\nprobe_interval_ms = 5\nroute_table_base = 252\n",
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
    let parsed = site(&with("http://192.0.2.10:8080/generate_204"));
    let check = view(&parsed, "one")
        .agents
        .uplink_monitor
        .http_check
        .clone()
        .unwrap();
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
    let monitor = |text: &str| view(&site(text), "one").agents.uplink_monitor.clone();
    assert!(monitor(&base).throughput_test.is_none());
    let shown = error_of(&format!("{base}min_throughput_kbps = 2000\n")).to_string();
    assert!(
        shown.contains("min_throughput_kbps: needs throughput_test_url"),
        "{shown}"
    );
    let test = monitor(&format!(
        "{base}throughput_test_url = \"http://192.0.2.10/1m\"\nmin_throughput_kbps = 2000\n"
    ))
    .throughput_test
    .unwrap();
    assert_eq!(
        (test.min_kbps, test.interval),
        (2000, DEFAULT_THROUGHPUT_TEST_INTERVAL)
    );
}

#[test]
fn hub_defaults_and_hub_mistakes() {
    let two = site(TWO);
    let hub = view(&two, "hub-a")
        .agents
        .cross_site_failover
        .hub
        .clone()
        .unwrap();
    assert_eq!(hub.role, HubRole::Primary);
    assert_eq!(hub.takeover_after, DEFAULT_TAKEOVER_AFTER);
    assert_eq!(hub.giveback_hold, DEFAULT_GIVEBACK_HOLD);
    assert_eq!(hub.cloudwatch_namespace, "fieldnet");
    assert_eq!(
        (hub.instance_id.as_str(), hub.partner_instance_id.as_str()),
        ("i-0a", "i-0b")
    );
    assert_eq!(hub.route_tables, ["rtb-0a"]);

    let text = TWO
        .replace("instance_id = \"i-0b\"", "instance_id = \"0b\"")
        .replace("[\"rtb-0a\"]", "[\"0a1b\"]")
        .replace("aws_region = \"eu-west-1\"", "aws_region = \"EU West\"");
    let message = error_of(&text).to_string();
    for expected in [
        "hubs[1].instance_id: '0b' is not an EC2 instance id",
        "hub.route_tables[0]: '0a1b' is not a route table id",
        "hub.aws_region: 'EU West' is not an AWS region",
    ] {
        assert!(message.contains(expected), "{expected} not in:\n{message}");
    }
    let lonely = TWO.split("[[hubs]]\nid = 202").next().unwrap().to_owned()
        + "\n[uplink_monitor]\ntargets = [\"192.0.2.1\"]\n";
    let message = error_of(&lonely).to_string();
    assert!(
        message.contains("hubs: the hub pair is incomplete: no hub has role = \"standby\""),
        "{message}"
    );
    let hubless = TWO.split("[hub]").next().unwrap().to_owned()
        + "[uplink_monitor]\ntargets = [\"192.0.2.1\"]\n";
    let message = error_of(&hubless).to_string();
    assert!(
        message.contains(&format!(
            "site.toml:{}: appliances[0].tunnel_interface: a tunnel needs the hubs it leads to",
            line_of(&hubless, "tunnel_interface")
        )),
        "{message}"
    );
}

#[test]
fn dhcp_is_checked_against_the_networks() {
    let good = format!(
        "{}
[[networks.reservations]]
mac = \"02-00-5E-10-00-01\"
address = \"10.102.0.10\"
hostname = \"Till-1\"

[dhcp_takeover]
conflict_probe_ms = 0
routes = [\"10.200.0.0/16\", \"10.201.0.0/16 via 10.101.0.5\"]

[[dhcp_takeover.classes]]
name = \"cameras\"
mac_prefixes = [\"00:80:f0\"]
ranges = [\"10.101.0.20-10.101.0.49\"]
lease_time_s = 86400
",
        TWO.split("\n[[appliances]]").next().unwrap()
    ) + &TWO[TWO.find("\n[[appliances]]").unwrap()..];
    let parsed = site(&good);
    let dhcp = &view(&parsed, "one").agents.dhcp_takeover;
    assert_eq!(dhcp.conflict_probe, None);
    assert_eq!(dhcp.pools[0].network, "NETWORK1");
    assert_eq!(dhcp.reservations[0].mac, [2, 0, 0x5e, 0x10, 0, 1]);
    assert_eq!(dhcp.reservations[0].network, "NETWORK2");
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
        .replace("02-00-5E-10-00-01", "02:00:5e")
        .replace("\"10.101.0.20-10.101.0.49\"", "\"10.101.0.49-10.101.0.20\"")
        .replace("\"10.200.0.0/16\"", "\"10.200.0.1/16\"");
    let message = error_of(&bad).to_string();
    for expected in [
        "networks[1].reservations[0].mac: '02:00:5e' is not a MAC address",
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
}

#[test]
fn imds_roles_belong_to_classes_and_the_durations_keep_their_order() {
    let good = format!(
        "{}
[[networks.reservations]]
mac = \"02:00:5e:10:00:01\"
address = \"10.102.0.10\"
class = \"tills\"

[[dhcp_takeover.classes]]
name = \"cameras\"
mac_prefixes = [\"00:80:f0\"]

[[dhcp_takeover.classes]]
name = \"tills\"
mac_prefixes = [\"00:11:22\"]

[imds_endpoint]
aws_region = \"eu-west-1\"

[[imds_endpoint.roles]]
class = \"cameras\"
role_arn = \"arn:aws:iam::123456789012:role/field-cameras\"
imdsv1 = true
reserve_duration_s = 21600
",
        TWO.split("\n[[appliances]]").next().unwrap()
    ) + &TWO[TWO.find("\n[[appliances]]").unwrap()..];
    let parsed = site(&good);
    let config = view(&parsed, "one");
    let imds = &config.agents.imds_endpoint;
    assert_eq!(imds.port, DEFAULT_IMDS_PORT);
    assert_eq!(imds.hop_limit, 1);
    assert_eq!(imds.session_duration, DEFAULT_IMDS_SESSION);
    let role = imds.role_of("cameras").unwrap();
    assert_eq!(
        (role.role_name(), role.account_id()),
        ("field-cameras", "123456789012")
    );
    assert!(role.imdsv1);
    assert_eq!(role.reserve_duration, Duration::from_secs(21_600));
    assert!(imds.role_of("tills").is_none());
    let dhcp = &config.agents.dhcp_takeover;
    // The reservation's class wins over the prefix; otherwise the prefix decides.
    assert_eq!(dhcp.class_of([2, 0, 0x5e, 0x10, 0, 1]), Some("tills"));
    assert_eq!(dhcp.class_of([0, 0x80, 0xf0, 1, 2, 3]), Some("cameras"));
    assert_eq!(dhcp.class_of([0, 0x80, 0xf1, 1, 2, 3]), None);

    let bad = good
        .replace("class = \"tills\"", "class = \"printers\"")
        .replace(
            "class = \"cameras\"\nrole_arn",
            "class = \"lights\"\nrole_arn",
        )
        .replace(":role/field-cameras", ":user/field-cameras");
    let message = error_of(&bad).to_string();
    for expected in [
        "networks[1].reservations[0].class: 'printers' is not a class of [[dhcp_takeover.classes]]; known: cameras, tills",
        "imds_endpoint.roles[0].class: 'lights' is not a class",
        "imds_endpoint.roles[0].role_arn: 'arn:aws:iam::123456789012:user/field-cameras' is not a role ARN",
    ] {
        assert!(message.contains(expected), "{expected} not in:\n{message}");
    }
    let typo = good.replace("reserve_duration_s = 21600", "min_validity_s = 60");
    let message = error_of(&typo).to_string();
    assert!(
        message.contains("imds_endpoint.roles[0].min_validity_s: unknown field"),
        "{message}"
    );
    let short = good
        .replace("reserve_duration_s = 21600", "reserve_duration_s = 1800")
        .replace("[imds_endpoint]\naws_region = \"eu-west-1\"", "[imds_endpoint]\naws_region = \"eu-west-1\"\nsession_duration_s = 3600\nrefuse_below_s = 1800");
    let message = error_of(&short).to_string();
    for expected in [
        "imds_endpoint.roles[0].reserve_duration_s: 1800 s is shorter than a device session (3600 s)",
        "imds_endpoint.refuse_below_s: 1800 s must be shorter than min_validity_s (1800 s)",
    ] {
        assert!(message.contains(expected), "{expected} not in:\n{message}");
    }
    // Sessions shorter than AWS gives are for test servers only.
    let quick = good.replace(
        "[imds_endpoint]\naws_region = \"eu-west-1\"",
        "[imds_endpoint]\naws_region = \"eu-west-1\"\nsession_duration_s = 60",
    );
    assert!(
        error_of(&quick)
            .to_string()
            .contains("imds_endpoint.session_duration_s: 60 is out of range; valid: 900 to 43200")
    );
    let quick = quick.replace("session_duration_s = 60", "session_duration_s = 60\nmin_validity_s = 20\nrefuse_below_s = 5\naws_endpoint = \"http://192.0.2.5:5000\"");
    let parsed = site(&quick);
    assert_eq!(
        view(&parsed, "one").agents.imds_endpoint.session_duration,
        Duration::from_secs(60)
    );
}

#[test]
fn metrics_listeners_clash_by_name() {
    let text = format!("{MINIMAL}\n[whereami]\nmetrics_listen = \"127.0.0.1:9701\"\n");
    let shown = error_of(&text).to_string();
    assert!(
        shown.contains(
            "whereami.metrics_listen: 127.0.0.1:9701 is already used by [uplink_monitor]"
        ),
        "{shown}"
    );
}

#[test]
fn inventory_defaults_and_each_key_checked_where_written() {
    let parsed = site(MINIMAL);
    let inventory = &view(&parsed, "one").agents.inventory;
    assert_eq!(inventory.sd_listen.port(), DEFAULT_INVENTORY_SD_PORT);
    assert_eq!(inventory.gone_after, DEFAULT_GONE_AFTER);
    assert_eq!(
        inventory.exporters,
        vec![Exporter {
            job: "node".into(),
            port: 9100
        }]
    );
    assert_eq!(inventory.oui_file, None);

    let good = format!(
        "{MINIMAL}\n[inventory]\nsweep_rate = 5000\ngone_after_s = 20\nforget_after_s = 600\nrouted = [\"10.60.0.7/24\"]\nexporters = [{{ job = \"node\", port = 9100 }}, {{ job = \"snmp\", port = 9116 }}]\n"
    );
    let parsed = site(&good);
    let inventory = &view(&parsed, "one").agents.inventory;
    assert_eq!(inventory.sweep_rate, 5000);
    assert_eq!(inventory.routed, vec!["10.60.0.0/24".parse().unwrap()]);
    assert_eq!(inventory.exporters[1].job, "snmp");

    let bad = good
        .replace("gone_after_s = 20", "gone_after_s = 120")
        .replace("forget_after_s = 600", "forget_after_s = 60")
        .replace("10.60.0.7/24", "10.0.0.0/8\", \"10.70.0.0/33")
        .replace("job = \"snmp\"", "job = \"node\"")
        .replace("port = 9116", "port = 70000");
    let message = error_of(&bad).to_string();
    for expected in [
        "inventory.forget_after_s: 60 s must be longer than gone_after_s (120 s)",
        "inventory.routed[0]: 10.0.0.0/8 is wider than a /16",
        "inventory.routed[1]: '10.70.0.0/33' is not an IPv4 range",
        "inventory.exporters[1].job: job 'node' is listed twice",
        "inventory.exporters[1].port: 70000 is out of range",
    ] {
        assert!(message.contains(expected), "{expected} not in:\n{message}");
    }
    let typo = format!("{MINIMAL}\n[inventory]\nsweep_rates = 5\n");
    assert!(
        error_of(&typo)
            .to_string()
            .contains("inventory.sweep_rates: unknown field"),
    );
    let clash = format!("{MINIMAL}\n[inventory]\nsd_listen = \"127.0.0.1:9701\"\n");
    assert!(
        error_of(&clash)
            .to_string()
            .contains("inventory.sd_listen: 127.0.0.1:9701 is already used by [uplink_monitor]"),
    );
}
