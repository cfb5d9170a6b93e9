//! Kernel faults on a veth pair: link down, blackhole, random loss, rate limit.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{A_ADDR, B_ADDR, SETTLE, pair};
use lab::Lab;

#[test]
fn link_down_cuts_carrier_until_the_guard_drops() {
    let Some(mut lab) = Lab::for_test("link-down") else {
        return;
    };
    let (a, b) = pair(&mut lab);

    let fault = lab.link_down(&a, "va").unwrap();
    let near = a.link("va").unwrap();
    let far = b.link("vb").unwrap();
    assert!(!near.is_admin_up(), "{near:?}");
    assert!(
        far.flags.iter().any(|flag| flag == "NO-CARRIER")
            || far.operstate == "LOWERLAYERDOWN"
            || far.operstate == "DOWN",
        "{far:?}"
    );
    assert!(!far.has_carrier(), "{far:?}");
    let stats = b.ping(A_ADDR, 3, Duration::from_millis(100)).unwrap();
    assert_eq!(stats.received, 0, "{stats:?}");
    let stats = a.ping(B_ADDR, 3, Duration::from_millis(100)).unwrap();
    assert_eq!(stats.received, 0, "{stats:?}");

    drop(fault);
    a.wait_reachable(B_ADDR, SETTLE).unwrap();
    assert!(b.link("vb").unwrap().has_carrier());
}

#[test]
fn link_down_guard_restores_the_routes_the_kernel_flushed() {
    let Some(mut lab) = Lab::for_test("link-down-routes") else {
        return;
    };
    let (a, b) = pair(&mut lab);
    lab.addr(&b, "lo", "192.0.2.9/32").unwrap();
    a.ip(&["route", "add", "default", "via", B_ADDR]).unwrap();
    a.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        B_ADDR,
        "metric",
        "7",
    ])
    .unwrap();
    a.wait_reachable("192.0.2.9", SETTLE).unwrap();

    let fault = lab.link_down(&a, "va").unwrap();
    let during = a.ip_output(&["-4", "route", "show"]).unwrap();
    assert!(!during.contains("default"), "{during}");
    // Someone (an agent) re-creates one of them meanwhile: not an error on undo.
    fault.undo().unwrap();
    let after = a.ip_output(&["-4", "route", "show"]).unwrap();
    assert!(after.contains("default via 10.0.0.2 dev va"), "{after}");
    assert!(
        after.contains("198.51.100.0/24 via 10.0.0.2 dev va metric 7"),
        "{after}"
    );
    a.wait_reachable("192.0.2.9", SETTLE).unwrap();

    let fault = lab.link_down(&a, "va").unwrap();
    a.ip(&["link", "set", "dev", "va", "up"]).unwrap();
    a.ip(&["route", "add", "default", "via", B_ADDR]).unwrap();
    fault.undo().unwrap();
}

#[test]
fn blackhole_drops_everything_but_keeps_carrier() {
    let Some(mut lab) = Lab::for_test("blackhole") else {
        return;
    };
    let (a, b) = pair(&mut lab);

    let fault = lab.blackhole(&a, "va").unwrap();
    let stats = b.ping(A_ADDR, 5, Duration::from_millis(100)).unwrap();
    assert_eq!((stats.sent, stats.received), (5, 0), "{stats:?}");
    let stats = a.ping(B_ADDR, 5, Duration::from_millis(100)).unwrap();
    assert_eq!(stats.received, 0, "{stats:?}");
    for (ns, ifname) in [(&a, "va"), (&b, "vb")] {
        let state = ns.link(ifname).unwrap();
        assert_eq!(state.operstate, "UP", "{ifname}: {state:?}");
        assert!(state.has_carrier(), "{ifname}: {state:?}");
    }

    fault.undo().unwrap();
    b.wait_reachable(A_ADDR, SETTLE).unwrap();
    // Nothing of ours is left in the ruleset.
    let rules = a.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("lab_blackhole"));
}

#[test]
fn loss_of_20_percent_measures_between_15_and_25() {
    let Some(mut lab) = Lab::for_test("loss") else {
        return;
    };
    let (a, _b) = pair(&mut lab);

    let fault = lab.loss(&a, "va", 20).unwrap();
    let stats = a.ping(B_ADDR, 1000, Duration::from_millis(5)).unwrap();
    eprintln!(
        "measured loss {:.1} % ({} of {} replies)",
        stats.loss * 100.0,
        stats.received,
        stats.sent
    );
    assert_eq!(stats.sent, 1000);
    assert!((0.15..=0.25).contains(&stats.loss), "{stats:?}");

    drop(fault);
    let stats = a.ping(B_ADDR, 50, Duration::from_millis(5)).unwrap();
    assert_eq!(stats.received, 50, "loss must be gone: {stats:?}");
}

#[test]
fn rate_limit_of_8000_kbit_measures_within_30_percent() {
    let Some(mut lab) = Lab::for_test("rate") else {
        return;
    };
    let (a, b) = pair(&mut lab);
    let _limit = lab.rate_limit(&a, "va", 8000).unwrap();

    let listener = b.run(|| TcpListener::bind((B_ADDR, 0))).unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buffer = vec![0u8; 65_536];
        let mut total = 0usize;
        let mut first = None;
        loop {
            let length = stream.read(&mut buffer).unwrap();
            if length == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += length;
        }
        (total, first.map(|at| at.elapsed()).unwrap_or_default())
    });
    let mut sender = a
        .run(move || TcpStream::connect((B_ADDR, port)))
        .unwrap()
        .unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let chunk = vec![0x5au8; 16_384];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        sender.write_all(&chunk).unwrap();
    }
    sender.shutdown(Shutdown::Write).unwrap();
    let (bytes, elapsed) = receiver.join().unwrap();
    let kbit = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1000.0;
    eprintln!(
        "measured {kbit:.0} kbit/s ({bytes} bytes in {elapsed:?}) through an 8000 kbit/s limit"
    );
    assert!((5600.0..=10_400.0).contains(&kbit), "{kbit:.0} kbit/s");
}

#[test]
fn faults_are_undone_even_when_the_namespace_is_gone() {
    let Some(mut lab) = Lab::for_test("late-undo") else {
        return;
    };
    let (a, _b) = pair(&mut lab);
    let faults = vec![
        lab.blackhole(&a, "va").unwrap(),
        lab.loss(&a, "va", 50).unwrap(),
        lab.rate_limit(&a, "va", 1000).unwrap(),
        lab.link_down(&a, "va").unwrap(),
    ];
    drop(lab);
    for fault in faults {
        fault.undo().unwrap();
    }
}
