//! The userspace delay link: added latency, jitter, cut, loss.

mod common;

use std::time::Duration;

use common::SETTLE;
use lab::{Direction, Lab};

const A: &str = "10.9.0.1";
const B: &str = "10.9.0.2";

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[test]
fn delay_jitter_and_cut() {
    let Some(mut lab) = Lab::for_test("delay") else {
        return;
    };
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let link = lab.delay_link(&a, "d0", A, &b, "d1", B).unwrap();
    a.wait_reachable(B, SETTLE).unwrap();

    let interval = Duration::from_millis(20);
    let base = a.ping(B, 50, interval).unwrap();
    assert_eq!(base.received, 50, "{base:?}");

    let delay = link.impair(
        Direction::AtoB,
        Duration::from_millis(50),
        Duration::ZERO,
        0,
    );
    let slow = a.ping(B, 50, interval).unwrap();
    drop(delay);
    assert_eq!(slow.received, 50, "{slow:?}");
    let added = millis(slow.rtt_avg) - millis(base.rtt_avg);
    eprintln!(
        "delay: base avg {:.3} ms, with 50 ms AtoB avg {:.3} ms (min {:.3}, max {:.3}): added {added:.2} ms",
        millis(base.rtt_avg),
        millis(slow.rtt_avg),
        millis(slow.rtt_min),
        millis(slow.rtt_max)
    );
    assert!((45.0..=55.0).contains(&added), "added {added:.2} ms");

    let jitter = link.impair(
        Direction::BtoA,
        Duration::from_millis(20),
        Duration::from_millis(10),
        0,
    );
    let jittery = a.ping(B, 50, interval).unwrap();
    drop(jitter);
    let spread = millis(jittery.rtt_max) - millis(jittery.rtt_min);
    eprintln!(
        "jitter: 20 ± 10 ms BtoA gives min {:.3} avg {:.3} max {:.3} ms, spread {spread:.2} ms",
        millis(jittery.rtt_min),
        millis(jittery.rtt_avg),
        millis(jittery.rtt_max)
    );
    assert!(jittery.received >= 45, "{jittery:?}");
    assert!(spread >= 10.0, "spread {spread:.2} ms");

    let cut = link.cut();
    let stats = a.ping(B, 5, Duration::from_millis(100)).unwrap();
    assert_eq!((stats.sent, stats.received), (5, 0), "{stats:?}");
    assert!(a.link("d0").unwrap().is_admin_up());
    drop(cut);
    a.wait_reachable(B, SETTLE).unwrap();
    assert!(link.counters(Direction::AtoB).dropped >= 5);
    assert!(link.is_running());
}

#[test]
fn delay_link_loss_and_teardown() {
    let Some(mut lab) = Lab::for_test("delay-loss") else {
        return;
    };
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let link = lab.delay_link(&a, "t0", A, &b, "t1", B).unwrap();
    a.wait_reachable(B, SETTLE).unwrap();

    let lossy = link.impair(Direction::BtoA, Duration::ZERO, Duration::ZERO, 30);
    let stats = a.ping(B, 500, Duration::from_millis(5)).unwrap();
    drop(lossy);
    eprintln!(
        "delay link 30 % BtoA loss measured {:.1} %",
        stats.loss * 100.0
    );
    assert!((0.22..=0.38).contains(&stats.loss), "{stats:?}");

    drop(link);
    // The TUN devices vanish with the link.
    assert!(a.link("t0").is_err());
    assert!(b.link("t1").is_err());
}

#[test]
fn a_delay_link_may_outlive_its_lab() {
    let Some(mut lab) = Lab::for_test("delay-order") else {
        return;
    };
    let prefix = lab.prefix().to_owned();
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    let link = lab.delay_link(&a, "o0", A, &b, "o1", B).unwrap();
    let guard = link.impair(Direction::AtoB, Duration::from_millis(5), Duration::ZERO, 0);
    drop(lab);
    assert_eq!(common::netns_with_prefix(&prefix), Vec::<String>::new());
    drop(guard);
    let started = std::time::Instant::now();
    drop(link);
    assert!(started.elapsed() < Duration::from_secs(5));
}
