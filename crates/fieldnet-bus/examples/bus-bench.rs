//! `cargo xtask bench bus`: one publisher → the real broker binary → one subscriber, both using
//! the agents' client library. Prints a Markdown table; xtask writes it to docs/benchmarks.md.
//!
//! Throughput is measured with the publisher kept at most `WINDOW` messages ahead of the
//! subscriber, so it counts what the broker sustains without dropping anything; latency is
//! publish-to-deliver at a steady 1,000 msgs/s.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fieldnet::bus::{BusClient, BusEvent};
use serde_json::json;

const THROUGHPUT_MESSAGES: u64 = 1_000_000;
const WINDOW: u64 = 2_000;
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECONDS: u64 = 10;

struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let broker_binary = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bus-bench PATH-TO-fieldnet-bus"))?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("bus.sock");
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"bench\"\ndomain = \"bench.example\"\nkey = \"{}\"\n\n[[areas]]\nname = \"a\"\n\n[[appliances]]\nid = 1\nname = \"bench\"\narea = \"a\"\n\n[bus]\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n",
            "ab".repeat(32),
            socket.display()
        ),
    )?;
    let _broker = Broker(
        Command::new(&broker_binary)
            .arg("--appliance")
            .arg("bench")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?,
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let publisher = BusClient::spawn(&socket, "bench-pub");
        let subscriber = BusClient::spawn(&socket, "bench-sub");
        anyhow::ensure!(publisher.wait_connected(Duration::from_secs(10)).await, "broker did not come up");
        anyhow::ensure!(subscriber.wait_connected(Duration::from_secs(10)).await, "broker did not come up");
        let (rate, lost) = throughput(&publisher, &subscriber).await?;
        let latencies = latency(&publisher, &subscriber).await?;
        let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!("| measurement | result |");
        println!("|---|---|");
        println!("| throughput, 1 publisher → broker → 1 subscriber, {THROUGHPUT_MESSAGES} msgs of ~60 B | {:.0} msgs/s delivered, {lost} lost |", rate);
        println!(
            "| publish-to-deliver latency at {LATENCY_RATE} msgs/s for {LATENCY_SECONDS} s ({} samples) | p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs |",
            latencies.len(),
            percentile(0.50).as_secs_f64() * 1e6,
            percentile(0.99).as_secs_f64() * 1e6,
            latencies.last().unwrap().as_secs_f64() * 1e6
        );
        Ok(())
    })
}

async fn throughput(publisher: &BusClient, subscriber: &BusClient) -> anyhow::Result<(f64, u64)> {
    let mut subscription = subscriber.subscribe("bench/throughput");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let lost_counter = lost.clone();
    let reader = tokio::spawn(async move {
        while let Some(event) = subscription.recv().await {
            match event {
                BusEvent::Message(_) => {
                    if counter.fetch_add(1, Ordering::Relaxed) + 1 == THROUGHPUT_MESSAGES {
                        return;
                    }
                }
                BusEvent::Lagged { missed } => {
                    lost_counter.fetch_add(missed, Ordering::Relaxed);
                    counter.fetch_add(missed, Ordering::Relaxed);
                }
            }
        }
    });
    let start = Instant::now();
    for seq in 0..THROUGHPUT_MESSAGES {
        while seq >= received.load(Ordering::Relaxed) + WINDOW {
            tokio::task::yield_now().await;
        }
        publisher.publish(
            "bench/throughput",
            &json!({"seq": seq, "pad": "0123456789"}),
            false,
        )?;
    }
    tokio::time::timeout(Duration::from_secs(120), reader).await??;
    Ok((
        THROUGHPUT_MESSAGES as f64 / start.elapsed().as_secs_f64(),
        lost.load(Ordering::Relaxed),
    ))
}

async fn latency(publisher: &BusClient, subscriber: &BusClient) -> anyhow::Result<Vec<Duration>> {
    let mut subscription = subscriber.subscribe("bench/latency");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let origin = Instant::now();
    let total = LATENCY_RATE * LATENCY_SECONDS;
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total as usize);
        while let Some(event) = subscription.recv().await {
            if let BusEvent::Message(envelope) = event {
                let sent = Duration::from_nanos(envelope.body["t"].as_u64().unwrap_or(0));
                latencies.push(origin.elapsed().saturating_sub(sent));
                if latencies.len() as u64 == total {
                    break;
                }
            }
        }
        latencies
    });
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0..total {
        ticker.tick().await;
        let t = origin.elapsed().as_nanos() as u64;
        publisher.publish("bench/latency", &json!({"seq": seq, "t": t}), false)?;
    }
    let mut latencies = tokio::time::timeout(Duration::from_secs(60), reader).await??;
    latencies.sort();
    Ok(latencies)
}
