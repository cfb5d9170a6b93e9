//! dhcp-takeover on a real lab area, with Debian's real DHCP clients: ISC dhclient, busybox
//! udhcpc and dhcpcd, each in its own client namespace, each with its own hook script (the
//! stock scripts would rewrite the host's /etc/resolv.conf: namespaces share the filesystem).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::{Lab, LabProcess, Netns, Site, SiteSpec};

const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives a value; panics after PATIENCE with `what` and `log`'s output.
fn wait_for<T>(what: &str, log: &LabProcess, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(value) = check() {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} never happened; log of {}:\n{}",
        log.log_path().display(),
        log.log()
    );
}

/// Writes appliance 1's config, with a lease store in the lab directory and `dhcp` after it in
/// the `[dhcp_takeover]` section; returns its path.
fn write_config(lab: &Lab, site: &Site, dhcp: &str) -> PathBuf {
    let dir = lab.dir();
    let extra = format!(
        "[dhcp_takeover]\nstore = \"{}\"\n{dhcp}",
        dir.join("leases").display()
    );
    let config = dir.join("appliance-1.toml");
    std::fs::write(&config, lab::appliance_config(site, 1, dir, &extra)).unwrap();
    config
}

/// Starts dhcp-takeover on `appliance` with `config`; returns once it serves.
fn start_server(lab: &mut Lab, appliance: &Netns, config: &Path) -> LabProcess {
    let server = lab
        .spawn(
            appliance,
            env!("CARGO_BIN_EXE_dhcp-takeover"),
            &["--config", config.to_str().unwrap()],
        )
        .unwrap();
    server
        .wait_for_log("serving DHCP", PATIENCE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    server
}

/// Waits until a hook script has written `path`, then returns its lines as key=value.
fn wait_file(path: &Path, client: &LabProcess) -> Vec<(String, String)> {
    let text = wait_for(&format!("{} written", path.display()), client, || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|text| text.contains("END=1"))
    });
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} not in {env:?}"))
}

/// A hook script that records its environment in `<dir>/<client>.<event>` (last line END=1)
/// and, with `apply`, puts the address on the interface as dhclient and udhcpc expect.
fn hook(dir: &Path, client: &str, event_var: &str, apply: &str) -> PathBuf {
    let path = dir.join(format!("{client}-hook.sh"));
    let script = format!(
        "#!/bin/sh\nout=\"{dir}/{client}.${event_var}\"\nenv | sort > \"$out.tmp\"\necho END=1 >> \"$out.tmp\"\nmv \"$out.tmp\" \"$out\"\n{apply}\nexit 0\n",
        dir = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn addresses(ns: &Netns) -> String {
    ns.ip_output(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap()
}

/// Waits until the client's eth0 has `address` (a client applies an ACK a moment after it).
fn wait_address(ns: &Netns, address: &str, client: &LabProcess) {
    wait_for(&format!("{address} on eth0"), client, || {
        addresses(ns).contains(address).then_some(())
    });
}

fn mac_of(ns: &Netns) -> String {
    let output = ns.exec("cat", &["/sys/class/net/eth0/address"]).unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// One metric's value from the agent's /metrics, read inside the appliance namespace.
fn metric(appliance: &Netns, name_and_labels: &str) -> f64 {
    let needle = format!("{name_and_labels} ");
    let text = appliance
        .run(|| {
            let mut stream = std::net::TcpStream::connect("127.0.0.1:9704").unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Waits until `metric` reaches `at_least`.
fn wait_metric(appliance: &Netns, name_and_labels: &str, at_least: f64, server: &LabProcess) {
    wait_for(&format!("{name_and_labels} ≥ {at_least}"), server, || {
        (metric(appliance, name_and_labels) >= at_least).then_some(())
    });
}

#[test]
fn dhclient_udhcpc_and_dhcpcd_get_leases_with_the_options_and_renew_rebind_release_decline_follow_rfc_2131()
 {
    let Some(mut lab) = Lab::for_test("dhcp") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 4)).unwrap();
    let area = &site.areas[0];
    let appliance = &area.appliance;
    let [c1, c2, c3, c4] = [0, 1, 2, 3].map(|k| area.clients[k].ns.clone());
    // Three DHCP clients start with no address; the fourth keeps its static 10.101.0.104.
    for client in [&c1, &c2, &c3] {
        client.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    }
    let dir = lab.dir().to_owned();
    let config = write_config(
        &lab,
        &site,
        &format!(
            "lease_time_s = 600\nntp_servers = [\"10.101.0.1\"]\nmtu = 1400\nroutes = [\"10.200.0.0/16\"]\n\n\
             [[dhcp_takeover.pools]]\nnetwork = \"NETWORK1\"\nstart = \"10.101.0.104\"\nend = \"10.101.0.120\"\n\n\
             [[dhcp_takeover.reservations]]\nmac = \"{}\"\naddress = \"10.101.0.50\"\nhostname = \"till-1\"\n",
            mac_of(&c2)
        ),
    );
    let server = start_server(&mut lab, appliance, &config);

    // dhclient: .104 answers ARP (the static client), so the server's probe skips it.
    let dhclient_conf = dir.join("dhclient.conf");
    std::fs::write(
        &dhclient_conf,
        "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
         send host-name \"Camera-7\";\n\
         request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, \
         interface-mtu, ntp-servers, rfc3442-classless-static-routes;\n",
    )
    .unwrap();
    let dhclient_hook = hook(
        &dir,
        "dhclient",
        "reason",
        "case \"$reason\" in BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/$new_subnet_mask\" dev \"$interface\";; RELEASE|EXPIRE|STOP) ip addr flush dev \"$interface\";; esac",
    );
    let dhclient_args = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        args.extend(
            [
                "-v",
                "-cf",
                dhclient_conf.to_str().unwrap(),
                "-sf",
                dhclient_hook.to_str().unwrap(),
                "-lf",
                dir.join("dhclient.leases").to_str().unwrap(),
                "-pf",
                dir.join("dhclient.pid").to_str().unwrap(),
                "eth0",
            ]
            .map(str::to_owned),
        );
        args
    };
    let args = dhclient_args(&["-d", "-1"]);
    let dhclient = lab
        .spawn(
            &c1,
            "dhclient",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap();
    let bound = wait_file(&dir.join("dhclient.BOUND"), &dhclient);
    assert_eq!(
        get(&bound, "new_ip_address"),
        "10.101.0.105",
        "{}",
        server.log()
    );
    assert_eq!(get(&bound, "new_subnet_mask"), "255.255.255.0");
    assert_eq!(get(&bound, "new_routers"), "10.101.0.1");
    assert_eq!(get(&bound, "new_domain_name_servers"), "10.101.0.1");
    assert_eq!(get(&bound, "new_domain_name"), "lab.fieldnet.example");
    assert_eq!(get(&bound, "new_interface_mtu"), "1400");
    assert_eq!(get(&bound, "new_ntp_servers"), "10.101.0.1");
    assert_eq!(get(&bound, "new_dhcp_lease_time"), "600");
    assert_eq!(get(&bound, "new_dhcp_server_identifier"), "10.101.0.1");
    assert_eq!(
        get(&bound, "new_rfc3442_classless_static_routes"),
        "16 10 200 10 101 0 1 0 10 101 0 1"
    );
    assert!(addresses(&c1).contains("10.101.0.105/24"));
    assert_eq!(
        metric(
            appliance,
            "fieldnet_dhcp_takeover_probes_total{result=\"in_use\"}"
        ),
        1.0
    );
    // INIT-REBOOT: dhclient started again with its lease file asks for its address back.
    dhclient.kill().unwrap();
    let args = dhclient_args(&["-d", "-1"]);
    let dhclient = lab
        .spawn(
            &c1,
            "dhclient",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap();
    let reboot = wait_file(&dir.join("dhclient.REBOOT"), &dhclient);
    assert_eq!(get(&reboot, "new_ip_address"), "10.101.0.105");
    dhclient.kill().unwrap();

    // udhcpc: its MAC is reserved, so it gets .50 and the reservation's host name.
    let udhcpc_hook = hook(
        &dir,
        "udhcpc",
        "1",
        "case \"$1\" in bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\";; deconfig) ip addr flush dev \"$interface\";; esac",
    );
    let udhcpc = lab
        .spawn(
            &c2,
            "udhcpc",
            &[
                "-f",
                "-i",
                "eth0",
                "-s",
                udhcpc_hook.to_str().unwrap(),
                "-x",
                "hostname:udhcpc-host",
                "-O",
                "ntpsrv",
                "-O",
                "mtu",
                "-O",
                "staticroutes",
            ],
        )
        .unwrap();
    let bound = wait_file(&dir.join("udhcpc.bound"), &udhcpc);
    assert_eq!(get(&bound, "ip"), "10.101.0.50");
    assert_eq!(get(&bound, "mask"), "24");
    assert_eq!(get(&bound, "router"), "10.101.0.1");
    assert_eq!(get(&bound, "dns"), "10.101.0.1");
    assert_eq!(get(&bound, "lease"), "600");
    assert_eq!(get(&bound, "mtu"), "1400");
    assert_eq!(get(&bound, "ntpsrv"), "10.101.0.1");
    assert_eq!(
        get(&bound, "staticroutes"),
        "10.200.0.0/16 10.101.0.1 0.0.0.0/0 10.101.0.1"
    );
    // RENEWING: SIGUSR1 makes udhcpc renew, unicast to the server.
    let acks = metric(
        appliance,
        "fieldnet_dhcp_takeover_replies_total{type=\"ack\"}",
    );
    c2.exec("kill", &["-USR1", &udhcpc.pid().to_string()])
        .unwrap();
    let renew = wait_file(&dir.join("udhcpc.renew"), &udhcpc);
    assert_eq!(get(&renew, "ip"), "10.101.0.50");
    assert!(
        metric(
            appliance,
            "fieldnet_dhcp_takeover_replies_total{type=\"ack\"}"
        ) > acks
    );
    // RELEASE: SIGUSR2 makes udhcpc release its lease.
    c2.exec("kill", &["-USR2", &udhcpc.pid().to_string()])
        .unwrap();
    wait_metric(
        appliance,
        "fieldnet_dhcp_takeover_messages_total{type=\"release\"}",
        1.0,
        &server,
    );

    // dhcpcd checks the offered address with ARP itself. The static client also holds .106 but
    // ignores the server's ARP (from the gateway address), so only dhcpcd sees the conflict:
    // it declines, the server quarantines .106, and dhcpcd ends up with .107.
    c4.ip(&["addr", "add", "10.101.0.106/24", "dev", "eth0"])
        .unwrap();
    c4.exec(
        "nft",
        &[
            "add table arp fieldnet_test; add chain arp fieldnet_test input { type filter hook input priority 0; }; add rule arp fieldnet_test input arp saddr ip 10.101.0.1 drop",
        ],
    )
    .unwrap();
    let dhcpcd_hook = hook(&dir, "dhcpcd", "reason", "");
    // The client identifier from the hardware address, so a reload keeps the same identity.
    let dhcpcd_conf = dir.join("dhcpcd.conf");
    std::fs::write(&dhcpcd_conf, "clientid\n").unwrap();
    // dhcpcd keeps its DUID, leases and control socket in fixed host paths: give this one its
    // own (tmpfs in the mount namespace `ip netns exec` made for it).
    let dhcpcd = lab
        .spawn(
            &c3,
            "sh",
            &[
                "-c",
                &format!(
                    "mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount -t tmpfs tmpfs /var/lib/dhcpcd && \
                     mount -t tmpfs tmpfs /run/dhcpcd && exec dhcpcd -B -4 -f {} -c {} --noipv4ll eth0",
                    dhcpcd_conf.display(),
                    dhcpcd_hook.display()
                ),
            ],
        )
        .unwrap();
    let bound = wait_file(&dir.join("dhcpcd.BOUND"), &dhcpcd);
    assert_eq!(
        get(&bound, "new_ip_address"),
        "10.101.0.107",
        "{}",
        dhcpcd.log()
    );
    assert_eq!(
        metric(
            appliance,
            "fieldnet_dhcp_takeover_messages_total{type=\"decline\"}"
        ),
        1.0
    );
    assert!(addresses(&c3).contains("10.101.0.107/24"));
    // REBINDING: dhcpcd -n asks again by broadcast, without a server identifier.
    let requests = metric(
        appliance,
        "fieldnet_dhcp_takeover_messages_total{type=\"request\"}",
    );
    c3.exec(
        "nsenter",
        &[
            "-t",
            &dhcpcd.pid().to_string(),
            "-m",
            "dhcpcd",
            "-f",
            dhcpcd_conf.to_str().unwrap(),
            "-n",
            "eth0",
        ],
    )
    .unwrap();
    wait_metric(
        appliance,
        "fieldnet_dhcp_takeover_messages_total{type=\"request\"}",
        requests + 1.0,
        &server,
    );
    wait_address(&c3, "10.101.0.107/24", &dhcpcd);
    dhcpcd.kill().unwrap();

    // Leases survive a restart of the server.
    server.kill().unwrap();
    let server = start_server(&mut lab, appliance, &config);
    // Bound now: dhclient's .105 and dhcpcd's .107 (udhcpc released .50).
    assert_eq!(
        metric(
            appliance,
            "fieldnet_dhcp_takeover_leases{class=\"\",network=\"NETWORK1\"}"
        ),
        2.0,
        "{}",
        server.log()
    );
    // A newcomer is not given either of them.
    std::fs::remove_file(dir.join("udhcpc.bound")).unwrap();
    let newcomer = lab
        .spawn(
            &c2,
            "udhcpc",
            &[
                "-f",
                "-q",
                "-i",
                "eth0",
                "-s",
                udhcpc_hook.to_str().unwrap(),
                "-x",
                "hostname:other",
            ],
        )
        .unwrap();
    let bound = wait_file(&dir.join("udhcpc.bound"), &newcomer);
    assert_eq!(
        get(&bound, "ip"),
        "10.101.0.50",
        "the reservation holds across restarts too"
    );
    assert!(server.is_running(), "{}", server.log());
}

/// Every DHCPACK seen on `ns`'s eth0 (as the client side receives it): (client MAC, address).
/// A packet socket, so it sees replies addressed to perfdhcp's own relay port too.
struct AckCapture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<([u8; 6], std::net::Ipv4Addr)>>,
}

impl AckCapture {
    fn start(ns: &Netns) -> Self {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        let fd = ns
            .run(|| {
                // SAFETY: plain socket(2) call; checked below.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_DGRAM,
                        i32::from(0x0800_u16.to_be()),
                    )
                };
                assert!(fd >= 0, "{}", std::io::Error::last_os_error());
                // SAFETY: a fresh descriptor nobody else owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .unwrap();
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a valid timeval and its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut buffer = [0_u8; 2048];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: the buffer is valid for its length.
                let n = unsafe {
                    libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
                };
                if n <= 0 {
                    continue;
                }
                let packet = &buffer[..n as usize];
                let header = usize::from(packet[0] & 0x0f) * 4;
                if packet.len() < header + 8 || packet[9] != 17 {
                    continue;
                }
                let udp = &packet[header..];
                if u16::from_be_bytes([udp[0], udp[1]]) != 67 {
                    continue;
                }
                if let Some(message) = dhcp_takeover::decide::decode(&udp[8..])
                    && dhcp_takeover::decide::message_type(&message)
                        == Some(dhcproto::v4::MessageType::Ack)
                    && !message.yiaddr().is_unspecified()
                {
                    let mac: [u8; 6] = message.chaddr()[..6].try_into().unwrap();
                    acks.push((mac, message.yiaddr()));
                }
            }
            acks
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<([u8; 6], std::net::Ipv4Addr)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn sigkill_during_a_perfdhcp_run_loses_no_acknowledged_lease() {
    let Some(mut lab) = Lab::for_test("dhcp-kill") else {
        return;
    };
    let site = lab.site(&SiteSpec::lan(1, 1)).unwrap();
    let area = &site.areas[0];
    let appliance = &area.appliance;
    let client = &area.clients[0].ns;
    let store = lab.dir().join("leases");
    let config = write_config(&lab, &site, "");
    let mut server = start_server(&mut lab, appliance, &config);
    let capture = AckCapture::start(client);
    // 200 simulated clients behind perfdhcp (a relay on the client's address), 400 exchanges
    // a second for 12 s; the server is killed with SIGKILL three times along the way.
    let perfdhcp = lab
        .spawn(
            client,
            "perfdhcp",
            &[
                "-4",
                "-l",
                "eth0",
                "-r",
                "400",
                "-R",
                "200",
                "-p",
                "12",
                "10.101.0.1",
            ],
        )
        .unwrap();
    let mut kills = 0;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2500));
        server.kill().unwrap();
        kills += 1;
        server = start_server(&mut lab, appliance, &config);
    }
    perfdhcp.wait(Duration::from_secs(60)).unwrap();
    let acks = capture.finish();
    server.kill().unwrap();
    let log = perfdhcp.log();
    assert!(log.contains("sent packets"), "{log}");
    assert!(acks.len() > 100, "only {} ACKs seen:\n{log}", acks.len());

    let (_log, records, torn_bytes) = dhcp_takeover::store::LeaseLog::open(&store).unwrap();
    let record_count = records.len();
    let mut leases = dhcp_takeover::lease::Leases::default();
    for record in records {
        leases.apply(record);
    }
    let mut missing = Vec::new();
    for (mac, address) in &acks {
        let kept = leases.get(*address).is_some_and(|lease| {
            lease.mac.0 == *mac && lease.state == dhcp_takeover::lease::LeaseState::Bound
        });
        if !kept {
            missing.push((*mac, *address));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged leases lost after {kills} SIGKILLs: {missing:?}",
        missing.len(),
        acks.len()
    );
    eprintln!(
        "{} ACKs seen across {kills} SIGKILLs, all stored ({} records, {} torn bytes cut)",
        acks.len(),
        record_count,
        torn_bytes
    );
}
