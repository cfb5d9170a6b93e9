//! The test peers (Debian packages and Python programs the tests, benches and the demo drive),
//! installed when missing: CI's first step, and the demo's and the benches' too.

use std::process::Command;

use crate::util::{cmd, cmd_with, have};

/// Debian packages the tests drive, by the program that shows each is installed.
const DEBIAN_PEERS: &[(&str, &str)] = &[
    // DNS: the client, the resolvers whereami is compared with and forwards to, the load tool.
    ("dig", "bind9-dnsutils"),
    ("dnsmasq", "dnsmasq-base"),
    ("unbound", "unbound"),
    ("dnsperf", "dnsperf"),
    // DHCP: three clients, the load tool (perfdhcp) and the server dhcp-takeover is compared with.
    ("dhclient", "isc-dhcp-client"),
    ("udhcpc", "udhcpc"),
    ("dhcpcd", "dhcpcd-base"),
    ("perfdhcp", "kea-admin"),
    ("kea-dhcp4", "kea-dhcp4-server"),
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("tc", "iproute2"),
    ("ping", "iputils-ping"),
    ("socat", "socat"),
    // imds-endpoint's lab tests ask the metadata address with curl.
    ("curl", "curl"),
    // imds-endpoint's bench: wrk against it and against nginx serving the same JSON.
    ("wrk", "wrk"),
    ("nginx", "nginx-light"),
    // The AWS CLI v2 as Debian ships it (a device's client of imds-endpoint); PyPI's v1 has
    // the same program name, so it is looked for by path.
    ("/usr/bin/aws", "awscli"),
    ("conntrack", "conntrack"),
    // A process with its wall clock stepped (heartbeats must not care).
    ("faketime", "faketime"),
    // The lab's VPN: userspace WireGuard (this kernel has no WireGuard module) and `wg`.
    ("wg", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    // The monitoring shipped in deploy/: rules, rule tests and configs checked by promtool,
    // Alertmanager's routing by amtool; a real Prometheus and node_exporter in inventory's lab
    // test; the sweep bench's alternatives; the Ansible inventory read by ansible-inventory.
    ("promtool", "prometheus"),
    ("amtool", "prometheus-alertmanager"),
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("arp-scan", "arp-scan"),
    ("nmap", "nmap"),
    ("ansible-inventory", "ansible-core"),
];

/// Python packages the tests drive, by the program that shows each is installed.
const PYTHON_PEERS: &[(&str, &str)] = &[
    // moto's server stands in for AWS (EC2, Route53, CloudWatch, STS) in hub-mode tests.
    ("moto_server", "moto[server]"),
];

/// Python packages the tests import or run as modules (`python3 -m …`), by module.
const PYTHON_MODULES: &[(&str, &str)] = &[
    // boto3, a device's SDK against imds-endpoint (moto brings it too).
    ("boto3", "boto3"),
    // The AWS CLI v1, a device's client of imds-endpoint, run as `python3 -m awscli`.
    ("awscli", "awscli"),
    // The checks of deploy/'s YAML (rule coverage, dashboards) read it with PyYAML.
    ("yaml", "pyyaml"),
];

/// Installs every peer that is missing (nothing when all are there).
pub fn install_missing_peers() -> anyhow::Result<()> {
    for (program, package) in PYTHON_PEERS {
        if !have(program) {
            println!("installing {package} (pip)");
            cmd("python3", &["-m", "pip", "install", "--quiet", package])?;
        }
    }
    for (module, package) in PYTHON_MODULES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !present {
            println!("installing {package} (pip)");
            cmd("python3", &["-m", "pip", "install", "--quiet", package])?;
        }
    }
    let mut missing: Vec<&str> = DEBIAN_PEERS
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        println!("all present");
        return Ok(());
    }
    println!("installing {}", missing.join(" "));
    // Packages with services (unbound) must not start them: the tests run their own, in lab
    // namespaces. A policy-rc.d that says "no" is the Debian way; ours is removed afterwards.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = install_debian(&missing);
    if own_policy {
        std::fs::remove_file(policy)?;
    }
    installed
}

fn install_debian(missing: &[&str]) -> anyhow::Result<()> {
    cmd("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing);
    cmd_with(
        Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
