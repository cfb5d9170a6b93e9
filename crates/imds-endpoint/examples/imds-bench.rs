//! `cargo xtask bench imds`: wrk against imds-endpoint and against nginx serving the same
//! credentials JSON as a static file (the original site's way), side by side in one run, both
//! in the appliance namespace on 169.254.169.254 (imds-endpoint on 80, nginx on 8080), wrk on a
//! leased client of the LAN. imds-endpoint checks the IMDSv2 token, the asker's lease and MAC
//! on every request; nginx checks nothing.
//!
//! For each server: wrk for RUN seconds with 16 keep-alive connections, and again with a new
//! connection per request (`Connection: close`, as SDKs often do): requests per second, the
//! server's CPU time over the run (utime + stime), so requests per server core-second, and
//! wrk's p99. Then the p99 at a steady 5,000 requests per second (open loop: 4 connections,
//! latency from each request's scheduled time). Rounds interleave the servers; the table shows
//! medians. Last, a new device's first credentials after its DHCPACK, five devices.
//!
//! Usage: imds-bench ROUNDS (IMDS_ENDPOINT_BIN, FIELDNET_BUS_BIN, DHCP_TAKEOVER_BIN name the
//! binaries).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use lab::{Lab, LabProcess, Netns, SiteSpec};
use support::*;

const RUN_SECONDS: u32 = 8;
const PACED_RATE: u32 = 5_000;
const PACED_SECONDS: u32 = 5;
const PACED_CONNECTIONS: u32 = 4;
const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/field-cameras";

#[derive(Clone, Copy, Default)]
struct Figures {
    rps: f64,
    cpu: f64,
    per_core_second: f64,
    p99_ms: f64,
    errors: u64,
}

struct Server {
    name: &'static str,
    port: u16,
    process: LabProcess,
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let binaries = Binaries {
        imds: std::env::var("IMDS_ENDPOINT_BIN")?,
        bus: std::env::var("FIELDNET_BUS_BIN")?,
        dhcp: std::env::var("DHCP_TAKEOVER_BIN")?,
    };
    let mut lab = Lab::new("bench-imds")?;
    let site = lab.site(&SiteSpec::lan(1, 1))?;
    let (_moto, aws) = start_moto(&mut lab, &site.internet);
    // The per-client rate limit is lifted: wrk is one client asking as fast as it can.
    let config = site_file(&site, lab.dir(), "requests_per_second = 1000000\n", "");
    let mut agents = start_agents(&mut lab, &binaries, &site, &config, &aws);
    let appliance = site.areas[0].appliance.clone();
    let client = site.areas[0].clients[0].ns.clone();

    // A new device's first credentials after its DHCPACK: any (the class's reserve at once),
    // and its own session (fetched from STS when the lease appears on the bus).
    eprintln!("first credentials of five new devices");
    let mut first_any = Vec::new();
    let mut first_own = Vec::new();
    // The cameras' reserve, as the endpoint's cache holds it: a device handed another key has
    // its own session.
    let cache = lab.dir().join("imds-cache.json");
    let reserve_key = eventually("the cameras' reserve in the cache", || {
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).ok()?).ok()?;
        file["sessions"]["reserves"]
            .as_array()?
            .iter()
            .find(|reserve| reserve["class"] == "cameras")?["credentials"]["access_key_id"]
            .as_str()
            .map(str::to_owned)
    });
    for k in 1..=5 {
        let mac = format!("02:ca:00:00:01:{k:02x}");
        lease(&lab, &client, &mac);
        let acked = Instant::now();
        let token = token(&client);
        let mut any = None;
        loop {
            let key = credentials_key(&client, &token);
            let at = acked.elapsed();
            if let Some(key) = key {
                any.get_or_insert(at);
                if key != reserve_key {
                    first_own.push(at.as_secs_f64() * 1000.0);
                    break;
                }
            }
            anyhow::ensure!(at < Duration::from_secs(10), "no own session for {mac}");
            std::thread::sleep(Duration::from_millis(5));
        }
        first_any.push(any.unwrap_or_default().as_secs_f64() * 1000.0);
    }

    // nginx, one process, serving what imds-endpoint serves the camera. One token for the whole
    // run: the longest TTL.
    let (status, token) = curl(
        &client,
        "PUT",
        "/latest/api/token",
        &["X-aws-ec2-metadata-token-ttl-seconds: 21600"],
    );
    anyhow::ensure!(status == 200, "no token: {status} {token}");
    let header = format!("X-aws-ec2-metadata-token: {token}");
    let (status, document) = curl(&client, "GET", CREDENTIALS, &[&header]);
    anyhow::ensure!(status == 200, "no credentials to copy: {status} {document}");
    let www = lab.dir().join("www");
    let file = www.join(CREDENTIALS.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().expect("a parent"))?;
    std::fs::write(&file, &document)?;
    let nginx_conf = lab.dir().join("nginx.conf");
    let dir = lab.dir().display().to_string();
    std::fs::write(
        &nginx_conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n default_type application/json;\n keepalive_requests 1000000;\n\
             client_body_temp_path {dir}/nginx-body;\n proxy_temp_path {dir}/nginx-proxy;\n fastcgi_temp_path {dir}/nginx-fastcgi;\n\
             uwsgi_temp_path {dir}/nginx-uwsgi;\n scgi_temp_path {dir}/nginx-scgi;\n\
             server {{ listen 169.254.169.254:8080; root {dir}/www; }}\n}}\n"
        ),
    )?;
    let nginx = lab.spawn(
        &appliance,
        "nginx",
        &["-c", nginx_conf.to_str().expect("utf-8"), "-p", &dir],
    )?;
    let imds = agents.pop().expect("imds-endpoint");
    let servers = [
        Server {
            name: "imds-endpoint",
            port: 80,
            process: imds,
        },
        Server {
            name: "nginx (static file)",
            port: 8080,
            process: nginx,
        },
    ];
    for server in &servers {
        let url = format!("http://169.254.169.254:{}{CREDENTIALS}", server.port);
        let ready = client.exec_unchecked(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &header,
                &url,
            ],
            Duration::from_secs(10),
        )?;
        anyhow::ensure!(
            String::from_utf8_lossy(&ready.stdout) == "200",
            "{} does not answer: {}",
            server.name,
            server.process.log()
        );
    }

    let mut results: Vec<[Vec<Figures>; 2]> =
        vec![[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut paced: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (index, server) in servers.iter().enumerate() {
            eprintln!("round {}/{rounds}: {}", round + 1, server.name);
            let url = format!("http://169.254.169.254:{}{CREDENTIALS}", server.port);
            results[index][0].push(wrk(&client, server, &url, &header, false)?);
            results[index][1].push(wrk(&client, server, &url, &header, true)?);
            paced[index].push(paced_p99(&client, server.port, &token)?);
        }
    }

    let mut table = String::new();
    writeln!(
        table,
        "| server | keep-alive req/s | server CPU (cores) | req per server core-second | p99 (wrk) | new connection req/s | server CPU | req per core-second | p99 (wrk) | p99 at {PACED_RATE} req/s |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut errors = 0;
    for (index, server) in servers.iter().enumerate() {
        let keep = median_figures(&results[index][0]);
        let new = median_figures(&results[index][1]);
        writeln!(
            table,
            "| {} | {:.0} | {:.2} | {:.0} | {:.2} ms | {:.0} | {:.2} | {:.0} | {:.2} ms | {:.2} ms |",
            server.name,
            keep.rps,
            keep.cpu,
            keep.per_core_second,
            keep.p99_ms,
            new.rps,
            new.cpu,
            new.per_core_second,
            new.p99_ms,
            median(&paced[index]),
        )?;
        if keep.errors + new.errors > 0 {
            eprintln!(
                "{}: {} answers were not 200",
                server.name,
                keep.errors + new.errors
            );
        }
        errors += keep.errors + new.errors;
    }
    let ratio = |kind: usize| {
        median_figures(&results[0][kind]).per_core_second
            / median_figures(&results[1][kind]).per_core_second
    };
    writeln!(
        table,
        "\nimds-endpoint / nginx, requests per server core-second: {:.2}× with keep-alive, {:.2}× with a new connection per request (target ≥ 1.0×; imds-endpoint checks the token, the lease and the MAC on every request, nginx nothing). Medians of {rounds} rounds of {RUN_SECONDS} s, wrk -t1 -c16.",
        ratio(0),
        ratio(1)
    )?;
    writeln!(
        table,
        "\nA new device's first credentials after its DHCPACK (from udhcpc's exit, five devices): any credentials (its class's reserve) after {:.0} ms median, {:.0} ms at most; its own STS session after {:.0} ms median, {:.0} ms at most (target ≤ 1 s).",
        median(&first_any),
        first_any.iter().copied().fold(0.0, f64::max),
        median(&first_own),
        first_own.iter().copied().fold(0.0, f64::max),
    )?;
    print!("{table}");
    anyhow::ensure!(
        errors == 0,
        "{errors} answers were not 200 (see wrk's output above)"
    );
    Ok(())
}

/// The credentials' AccessKeyId, if the endpoint hands out any now.
fn credentials_key(client: &Netns, token: &str) -> Option<String> {
    let header = format!("X-aws-ec2-metadata-token: {token}");
    let (status, body) = curl(client, "GET", CREDENTIALS, &[&header]);
    let document: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200 && document["Code"] == "Success")
        .then(|| document["AccessKeyId"].as_str().map(str::to_owned))
        .flatten()
}

fn wrk(
    client: &Netns,
    server: &Server,
    url: &str,
    header: &str,
    close: bool,
) -> anyhow::Result<Figures> {
    let duration = format!("{RUN_SECONDS}s");
    let mut args = vec!["-t1", "-c16", "-d", &duration, "--latency", "-H", header];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let before = server.process.cpu_seconds()?;
    let started = Instant::now();
    let output = client.exec_timeout(
        "wrk",
        &args,
        Duration::from_secs(u64::from(RUN_SECONDS) + 30),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = (server.process.cpu_seconds()? - before) / seconds;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .and_then(|value| duration_ms(value.trim()))
        .ok_or_else(|| anyhow::anyhow!("no 99% in wrk's output:\n{text}"))?;
    let errors = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    Ok(Figures {
        rps,
        cpu,
        per_core_second: rps / cpu.max(1e-9),
        p99_ms,
        errors,
    })
}

/// `1.23ms`, `850.00us`, `1.02s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(us) = text.strip_suffix("us") {
        (us, 0.001)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|value| value * factor)
}

/// The p99 latency, in milliseconds, of GETs of the credentials at a steady [`PACED_RATE`]
/// over keep-alive connections, each latency from the request's scheduled time (so a stall
/// counts for every request it delays).
fn paced_p99(client: &Netns, port: u16, token: &str) -> anyhow::Result<f64> {
    let token = token.to_owned();
    let latencies = client.run(move || {
        let per_connection = PACED_RATE / PACED_CONNECTIONS;
        let interval = Duration::from_secs(1) / per_connection;
        let start = Instant::now() + Duration::from_millis(100);
        let threads: Vec<_> = (0..PACED_CONNECTIONS)
            .map(|offset| {
                let token = token.clone();
                std::thread::spawn(move || -> std::io::Result<Vec<f64>> {
                    let mut stream = std::net::TcpStream::connect(("169.254.169.254", port))?;
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let request = format!(
                        "GET {CREDENTIALS} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
                    );
                    let first = start + interval * offset / PACED_CONNECTIONS;
                    let mut latencies = Vec::new();
                    let mut buffer = vec![0u8; 16 * 1024];
                    for n in 0..per_connection * PACED_SECONDS {
                        let scheduled = first + interval * n;
                        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        stream.write_all(request.as_bytes())?;
                        read_response(&mut stream, &mut buffer)?;
                        latencies.push(scheduled.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            all.extend(thread.join().expect("a paced client thread")?);
        }
        Ok::<_, std::io::Error>(all)
    })??;
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    Ok(sorted[(sorted.len() as f64 * 0.99) as usize - 1])
}

/// Reads one HTTP/1.1 response with a Content-Length.
fn read_response(stream: &mut std::net::TcpStream, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..])?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
        let text = String::from_utf8_lossy(&buffer[..filled]);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if filled >= head_end + 4 + length {
                return Ok(());
            }
        }
        if filled == buffer.len() {
            return Err(std::io::Error::other("response larger than the buffer"));
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn median_figures(runs: &[Figures]) -> Figures {
    let pick = |get: fn(&Figures) -> f64| median(&runs.iter().map(get).collect::<Vec<_>>());
    Figures {
        rps: pick(|f| f.rps),
        cpu: pick(|f| f.cpu),
        per_core_second: pick(|f| f.per_core_second),
        p99_ms: pick(|f| f.p99_ms),
        errors: runs.iter().map(|f| f.errors).sum(),
    }
}
