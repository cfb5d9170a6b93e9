//! `cargo xtask bench failover`: the uplink-monitor acceptance scenarios on real lab sites,
//! each repeated, with the client-visible outage (longest gap in a 10 ms UDP echo stream)
//! reported as median and maximum. Prints a Markdown table; xtask records it.
//!
//! Usage: failover-bench RUNS (UPLINK_MONITOR_BIN names the agent binary;
//! FIELDNET_BENCH_SOAK_SECS and FIELDNET_BENCH_FLAP_SECS shorten the long scenarios).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use fieldnet::bus::topics::UplinkReason;
use lab::StreamReport;
use support::*;

fn main() -> anyhow::Result<()> {
    // The bench needs the lab: never skip silently.
    // SAFETY: set before any other thread exists.
    unsafe { std::env::set_var(lab::LAB_REQUIRED_ENV, "1") };
    let runs: usize = std::env::args().nth(1).map_or(Ok(10), |a| a.parse())?;
    let soak = Duration::from_secs(env_secs("FIELDNET_BENCH_SOAK_SECS", 600));
    let flap = Duration::from_secs(env_secs("FIELDNET_BENCH_FLAP_SECS", 60));
    let mut rows = Vec::new();

    let outages = repeat(runs, "carrier", |running| {
        let uplink = &running.site.areas[0].uplinks[0];
        let fault = running
            .lab
            .link_down(&uplink.router, &uplink.router_lan_if)
            .unwrap();
        (fault, UplinkReason::LinkDown)
    });
    rows.push(row(
        "carrier loss (link down at the appliance port)",
        "≤ 200 ms",
        &outages,
    ));

    let outages = repeat(runs, "blackhole", |running| {
        let uplink = &running.site.areas[0].uplinks[0];
        let fault = running
            .lab
            .blackhole(&uplink.router, &uplink.router_wan_if)
            .unwrap();
        (fault, UplinkReason::Silent)
    });
    rows.push(row(
        "router's WAN side dead, carrier up (silent blackhole)",
        "≤ 600 ms",
        &outages,
    ));

    let outages = repeat(runs, "loss100", |running| {
        let uplink = &running.site.areas[0].uplinks[0];
        let fault = running
            .lab
            .loss(&uplink.router, &uplink.router_wan_if, 100)
            .unwrap();
        (fault, UplinkReason::Silent)
    });
    rows.push(row(
        "100 % loss toward all targets on that uplink only",
        "≤ 600 ms",
        &outages,
    ));

    rows.push(latency(runs));
    rows.push(soak_row(soak));
    rows.push(flap_row(flap));
    rows.push(restart(runs));

    let mut outages = Vec::new();
    for _ in 0..runs {
        let running = start("bench-remote", 2).expect("lab");
        let stream = running.stream();
        std::thread::sleep(Duration::from_millis(500));
        let faults = running.cut_local_uplinks();
        running.bus.wait_active("a2-up1", None, None);
        outages.push(settle_and_finish(stream).longest_gap);
        drop(faults);
    }
    rows.push(row(
        "all local uplinks dead, a remote uplink via another area alive",
        "traffic flows via the remote uplink",
        &outages,
    ));

    println!("| fault on the active uplink | acceptance | measured | runs |");
    println!("|---|---|---|---|");
    for (fault, bound, measured, count) in &rows {
        println!("| {fault} | {bound} | {measured} | {count} |");
    }
    println!();
    println!("{}", resources()?);
    Ok(())
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs a fault scenario `runs` times on fresh sites; returns the outages.
fn repeat(
    runs: usize,
    label: &str,
    inject: impl Fn(&Running) -> (lab::Fault, UplinkReason),
) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let running = start(&format!("bench-{label}"), 1).expect("lab");
            let stream = running.stream();
            std::thread::sleep(Duration::from_millis(500));
            let (fault, reason) = inject(&running);
            running
                .bus
                .wait_active("a1-up2", Some("a1-up1"), Some(reason));
            let report: StreamReport = settle_and_finish(stream);
            drop(fault);
            report.longest_gap
        })
        .collect()
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn row(fault: &str, bound: &str, samples: &[Duration]) -> (String, String, String, String) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = *sorted.last().expect("runs > 0");
    (
        fault.to_owned(),
        bound.to_owned(),
        format!("outage median {}, max {}", ms(median), ms(max)),
        samples.len().to_string(),
    )
}

fn latency(runs: usize) -> (String, String, String, String) {
    let mut switch_after = Vec::new();
    let mut extra_switches = 0;
    let mut silent = 0;
    for _ in 0..runs {
        let site = delay_site("bench-latency").expect("lab");
        let raised = Instant::now();
        let slow = site.slow_first_uplink();
        site.bus
            .wait_active("up1", Some("up0"), Some(UplinkReason::Better));
        switch_after.push(raised.elapsed());
        std::thread::sleep(Duration::from_secs(5));
        let log = site.agent.log();
        extra_switches += log.matches("default route moved").count() - 1;
        silent += usize::from(log.contains("to=silent"));
        drop(slow);
    }
    switch_after.sort();
    (
        "latency raised to 400 ms (lab delay) while another is at 40 ms".to_owned(),
        format!(
            "switch within the hold time ({} s), no flapping",
            fieldnet::config::DEFAULT_HOLD.as_secs()
        ),
        format!(
            "switched after median {:.1} s, max {:.1} s; {extra_switches} further switches, {silent} false \"dead\" verdicts in the 5 s after",
            switch_after[switch_after.len() / 2].as_secs_f64(),
            switch_after.last().expect("runs").as_secs_f64()
        ),
        runs.to_string(),
    )
}

fn soak_row(duration: Duration) -> (String, String, String, String) {
    let running = start("bench-soak", 1).expect("lab");
    let area = &running.site.areas[0];
    let faults: Vec<_> = area
        .uplinks
        .iter()
        .map(|u| running.lab.loss(&u.router, &u.router_wan_if, 10).unwrap())
        .collect();
    std::thread::sleep(duration);
    let switches = running.switches();
    drop(faults);
    (
        format!(
            "10 % random loss on every uplink for {} min",
            duration.as_secs() / 60
        ),
        "0 switches".to_owned(),
        format!("{switches} switches"),
        "1".to_owned(),
    )
}

fn flap_row(duration: Duration) -> (String, String, String, String) {
    let running = start("bench-flap", 1).expect("lab");
    running.flap_first_uplink(duration);
    std::thread::sleep(Duration::from_secs(2));
    let alive = running.agent().is_running();
    let on_stable = running.default_route().contains("dev wan1");
    (
        format!(
            "uplink flapping 5 times a second for {} s",
            duration.as_secs()
        ),
        "bounded switches (dampened), ends on the right uplink, no crash".to_owned(),
        format!(
            "{} switches, ends on {}, agent {}",
            running.switches(),
            if on_stable {
                "the stable uplink"
            } else {
                "THE FLAPPING UPLINK"
            },
            if alive { "running" } else { "DEAD" }
        ),
        "1".to_owned(),
    )
}

fn restart(runs: usize) -> (String, String, String, String) {
    let mut lost = Vec::new();
    for _ in 0..runs {
        let mut running = start("bench-restart", 1).expect("lab");
        let stream = running.stream();
        std::thread::sleep(Duration::from_millis(500));
        let pid = running.agent().pid().to_string();
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill");
        running.agent = None;
        std::thread::sleep(Duration::from_millis(300));
        running.start_agent();
        std::thread::sleep(Duration::from_millis(500));
        let report = stream.finish();
        lost.push(report.sent - report.received);
    }
    (
        "agent killed with SIGKILL and restarted".to_owned(),
        "0 lost packets from the restart".to_owned(),
        format!(
            "lost packets: max {} over all runs",
            lost.iter().max().expect("runs")
        ),
        runs.to_string(),
    )
}

/// CPU and memory with 3 uplinks × 3 targets at 10 probes/s each, over 60 s.
fn resources() -> anyhow::Result<String> {
    let running = start_with("bench-cpu", 1, 3, "").expect("lab");
    let pid = running.agent().pid();
    let before = running.agent().cpu_seconds()?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let used = running.agent().cpu_seconds()? - before;
    let cpu = used / started.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(format!(
        "Resources with 3 uplinks × 3 targets at 10 probes/s each, over 60 s: CPU {cpu:.2} % of one core (target < 1 %), RSS {:.1} MB (target < 15 MB).",
        rss_kb as f64 / 1024.0
    ))
}
