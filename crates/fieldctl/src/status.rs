//! `fieldctl status`: the appliance at a glance. It grows with each agent.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fieldnet::bus::frame::{self, Envelope, Frame};
use fieldnet::bus::topics::{
    AgentsAlive, DhcpNetworkState, DhcpState, DnsRole, DnsState, ImdsState, PathState, PeerState,
    PeerVerdict, StsHealth, TOPIC_AGENTS, TOPIC_DHCP_STATE, TOPIC_DNS_STATE, TOPIC_IMDS_STATE,
    TOPIC_PEERS, TOPIC_UPLINK_ACTIVE, UplinkActive, UplinkReason, UplinkState, UpstreamHealth,
    parse_peer_topic,
};
use fieldnet::config::{Machine, MachineRole};
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, LinesCodec};

/// How long to wait for the bus before calling it down.
const BUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The agents that exist so far.
const SHIPPED: [&str; 6] = [
    "uplink-monitor",
    "cross-site-failover",
    "whereami",
    "dhcp-takeover",
    "imds-endpoint",
    "inventory",
];

/// The agents this machine is expected to run, by their bus name: those that exist, are enabled
/// and have work here (a hub runs cross-site-failover, and inventory for its WireGuard peers;
/// an appliance without uplinks has no uplink-monitor).
fn expected_agents(machine: &Machine) -> Vec<&'static str> {
    let config = &machine.config;
    let agents = &config.agents;
    let hub = matches!(machine.role, MachineRole::Hub(_));
    [
        (
            "uplink-monitor",
            agents.uplink_monitor.common.enabled && !hub && !config.uplinks.is_empty(),
        ),
        (
            "cross-site-failover",
            agents.cross_site_failover.common.enabled
                && (!config.peers.is_empty() || config.hub.is_some()),
        ),
        ("whereami", agents.whereami.common.enabled && !hub),
        ("dhcp-takeover", agents.dhcp_takeover.common.enabled && !hub),
        (
            "imds-endpoint",
            agents.imds_endpoint.common.enabled && !hub && !agents.imds_endpoint.roles.is_empty(),
        ),
        ("inventory", agents.inventory.common.enabled),
    ]
    .into_iter()
    .filter(|(name, wanted)| *wanted && SHIPPED.contains(name))
    .map(|(name, _)| name)
    .collect()
}

/// Every retained value under the given prefixes, read in one round trip.
/// Every retained body under `prefix` that reads as a `T`, asked of the bus within
/// `timeout` (an error naming the socket when it does not answer).
pub async fn retained<T: serde::de::DeserializeOwned>(
    socket: &Path,
    prefix: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<T>> {
    let values = tokio::time::timeout(timeout, snapshot(socket, &[prefix]))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the bus at {} did not answer within {timeout:?}",
                socket.display()
            )
        })??;
    Ok(values
        .values()
        .filter_map(|envelope| envelope.body_as::<T>().ok())
        .collect())
}

pub async fn snapshot(
    socket: &Path,
    prefixes: &[&str],
) -> anyhow::Result<BTreeMap<String, Envelope>> {
    let stream = UnixStream::connect(socket).await?;
    let (read_half, mut write_half) = stream.into_split();
    let mut request = String::new();
    for prefix in prefixes {
        request.push_str(&frame::encode(&Frame::Sub {
            prefix: (*prefix).to_owned(),
        }));
    }
    // Retained values are queued when the sub is processed, so they all arrive before the pong.
    request.push_str(&frame::encode(&Frame::Ping));
    write_half.write_all(request.as_bytes()).await?;
    let mut lines = FramedRead::new(read_half, LinesCodec::new_with_max_length(16 * 1024 * 1024));
    let mut values = BTreeMap::new();
    while let Some(line) = lines.next().await {
        match frame::decode(line?.as_bytes())? {
            Frame::Msg(envelope) => {
                values.insert(envelope.topic.clone(), envelope);
            }
            Frame::Pong => return Ok(values),
            _ => {}
        }
    }
    anyhow::bail!("the bus closed the connection")
}

pub async fn run(socket: &Path, machine: Option<&Machine>, json: bool) -> ExitCode {
    let config = machine.map(|machine| &machine.config);
    let state = tokio::time::timeout(
        BUS_TIMEOUT,
        snapshot(
            socket,
            &[
                TOPIC_AGENTS,
                "agent/",
                "uplink/",
                TOPIC_PEERS,
                TOPIC_DNS_STATE,
                TOPIC_DHCP_STATE,
                TOPIC_IMDS_STATE,
            ],
        ),
    )
    .await;
    let state = match state {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(_) => Err(format!("no answer within {BUS_TIMEOUT:?}")),
    };
    if json {
        let value = match &state {
            Ok(values) => {
                serde_json::json!({"bus": {"socket": socket, "up": true}, "retained": values})
            }
            Err(error) => {
                serde_json::json!({"bus": {"socket": socket, "up": false, "error": error}})
            }
        };
        println!("{value:#}");
        return if state.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    match config {
        Some(config) => println!(
            "appliance {} ({}), area {}, site {}",
            config.appliance.id, config.appliance.name, config.appliance.area, config.site.name
        ),
        None => println!("appliance: configuration not readable (run `fieldctl check-config`)"),
    }
    let values = match state {
        Ok(values) => values,
        Err(error) => {
            println!("bus        DOWN  {}: {error}", socket.display());
            println!(
                "           every agent keeps working without it; start it with `systemctl start fieldnet-bus`"
            );
            return ExitCode::from(1);
        }
    };
    println!("bus        up    {}", socket.display());
    let alive: AgentsAlive = values
        .get(TOPIC_AGENTS)
        .and_then(|envelope| envelope.body_as().ok())
        .unwrap_or(AgentsAlive { agents: Vec::new() });
    let now = fieldnet::bus::unix_millis();
    let connected: Vec<_> = alive
        .agents
        .iter()
        .filter(|agent| agent.name != "fieldctl")
        .collect();
    println!("agents     {} connected", connected.len());
    for agent in &connected {
        let version = values
            .get(&fieldnet::bus::topics::agent_topic(&agent.name))
            .and_then(|e| e.body["version"].as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  {:<20} pid {:<7} up {:<10} {version}",
            agent.name,
            agent.pid,
            human_duration(now.saturating_sub(agent.since))
        );
    }
    print_uplinks(&values);
    let peers: Vec<(String, PeerState)> = values
        .iter()
        .filter_map(|(topic, envelope)| {
            Some((
                parse_peer_topic(topic)?.to_string(),
                envelope.body_as().ok()?,
            ))
        })
        .collect();
    for line in peer_lines(&peers, fieldnet::bus::unix_millis()) {
        println!("{line}");
    }
    if let Some(dns) = values
        .get(TOPIC_DNS_STATE)
        .and_then(|e| e.body_as::<DnsState>().ok())
    {
        for line in dns_lines(&dns, fieldnet::bus::unix_millis()) {
            println!("{line}");
        }
    }
    if let Some(dhcp) = values
        .get(TOPIC_DHCP_STATE)
        .and_then(|e| e.body_as::<DhcpState>().ok())
    {
        for line in dhcp_lines(&dhcp) {
            println!("{line}");
        }
    }
    if let Some(imds) = values
        .get(TOPIC_IMDS_STATE)
        .and_then(|e| e.body_as::<ImdsState>().ok())
    {
        for line in imds_lines(&imds, fieldnet::bus::unix_millis()) {
            println!("{line}");
        }
    }
    if let Some(machine) = machine {
        let missing: Vec<&str> = expected_agents(machine)
            .into_iter()
            .filter(|name| !alive.agents.iter().any(|agent| agent.name == *name))
            .collect();
        if !missing.is_empty() {
            println!("not connected: {}", missing.join(", "));
        }
    }
    ExitCode::SUCCESS
}

/// The uplinks as uplink-monitor last published them.
fn print_uplinks(values: &BTreeMap<String, Envelope>) {
    let active: Option<UplinkActive> = values
        .get(TOPIC_UPLINK_ACTIVE)
        .and_then(|e| e.body_as().ok());
    let states: Vec<UplinkState> = values
        .iter()
        .filter(|(topic, _)| topic.starts_with("uplink/") && topic.ends_with("/state"))
        .filter_map(|(_, envelope)| envelope.body_as().ok())
        .collect();
    if active.is_none() && states.is_empty() {
        return;
    }
    for line in uplink_lines(active.as_ref(), &states, fieldnet::bus::unix_millis()) {
        println!("{line}");
    }
}

/// The peers section of the status: which other appliances answer, over which path.
pub fn peer_lines(peers: &[(String, PeerState)], now: u64) -> Vec<String> {
    if peers.is_empty() {
        return Vec::new();
    }
    let alive = peers
        .iter()
        .filter(|(_, p)| p.verdict == PeerVerdict::Alive)
        .count();
    let mut lines = vec![format!("peers      {alive} of {} answering", peers.len())];
    for (id, peer) in peers {
        let paths: Vec<String> = peer
            .paths
            .iter()
            .map(|path| match (path.state, path.rtt_ms) {
                (PathState::Up, Some(rtt)) => format!("{} up {rtt:.1} ms", path.kind),
                (state, _) => format!("{} {state}", path.kind),
            })
            .collect();
        let verdict = match (peer.verdict, &peer.active_path) {
            (PeerVerdict::Alive, Some(path)) => format!("alive, routes via {path}"),
            (PeerVerdict::Alive, None) => "alive".to_owned(),
            (PeerVerdict::Dead, _) => format!(
                "DEAD for {}",
                human_duration(now.saturating_sub(peer.since))
            ),
            (PeerVerdict::Unknown, _) => "not heard from yet".to_owned(),
        };
        lines.push(
            format!("  appliance {id:<4} {verdict:<26} {}", paths.join(", "))
                .trim_end()
                .to_owned(),
        );
    }
    lines
}

/// The DNS section: the upstreams' health, then what each network's devices are told.
pub fn dns_lines(state: &DnsState, now: u64) -> Vec<String> {
    let upstreams = &state.upstreams;
    let ago = |at: Option<u64>| at.map(|t| human_duration(now.saturating_sub(t)));
    let health = match upstreams.health {
        UpstreamHealth::None => "no upstream configured: only local names resolve".to_owned(),
        UpstreamHealth::Unknown => format!(
            "upstreams {} (not asked yet)",
            upstreams.addresses.join(", ")
        ),
        UpstreamHealth::Ok => format!("upstreams {} answering", upstreams.addresses.join(", ")),
        UpstreamHealth::Failing => format!(
            "upstreams {} NOT ANSWERING (last answer {}); cached names still resolve",
            upstreams.addresses.join(", "),
            ago(upstreams.last_answer).map_or_else(|| "never".to_owned(), |a| format!("{a} ago")),
        ),
    };
    let mut lines = vec![format!(
        "dns        {health}; {} local names",
        state.local_names
    )];
    for network in &state.networks {
        let served = match (network.role, network.listening) {
            (DnsRole::Own, true) => "answered here",
            (DnsRole::Own, false) => "NOT ANSWERED: its address is not up here",
            (DnsRole::Takeover, true) => "TAKEN OVER from its appliance, answered here",
            (DnsRole::Takeover, false) => "TAKEN OVER, waiting for its address",
            (DnsRole::Peer, _) => "answered by its own appliance",
        };
        lines.push(format!(
            "  {:<16} {:<10} {served}",
            network.name, network.area
        ));
    }
    lines
}

/// The DHCP section of the status: one line per network this appliance can serve.
pub fn dhcp_lines(state: &DhcpState) -> Vec<String> {
    let mut lines = vec!["dhcp       (`fieldctl leases` lists the leases)".to_owned()];
    for network in &state.networks {
        let served = match network.state {
            DhcpNetworkState::Own => "answered here".to_owned(),
            DhcpNetworkState::Waiting => {
                "WAITING: the appliance holding it hands it back once it has our leases".to_owned()
            }
            DhcpNetworkState::Taken => format!(
                "TAKEN OVER: appliance {} is dead, answered here",
                network.owner
            ),
            DhcpNetworkState::HandingBack => format!(
                "HANDING BACK to appliance {}: not answering, gateway kept until it has our leases",
                network.owner
            ),
            DhcpNetworkState::Adopted => format!(
                "ADOPTED after a restart: gateway kept, answered again once appliance {} is confirmed dead",
                network.owner
            ),
            DhcpNetworkState::Standby => {
                format!("standby (appliance {} answers it)", network.owner)
            }
        };
        // As dhcp-takeover warns: 90 % of the pool leased or offered.
        let near_full =
            network.pool_total > 0 && network.pool_used * 100 >= network.pool_total * 90;
        lines.push(format!(
            "  {:<16} {served}; {} leases, pool {}/{} used{}",
            network.name,
            network.leases,
            network.pool_used,
            network.pool_total,
            if near_full {
                " — NEAR FULL: new devices may get no address"
            } else {
                ""
            }
        ));
    }
    lines
}

/// The uplinks section of the status, one line per uplink, in plain words.
pub fn uplink_lines(
    active: Option<&UplinkActive>,
    states: &[UplinkState],
    now: u64,
) -> Vec<String> {
    let mut lines = Vec::new();
    match active {
        Some(active) => {
            let why = match (active.reason, &active.previous) {
                (reason, Some(previous)) if explain(reason).1 => {
                    format!("{previous} was left: {}", explain(reason).0)
                }
                (reason, _) => explain(reason).0.to_owned(),
            };
            lines.push(format!(
                "uplinks    traffic on {} for {} ({why})",
                active.name,
                human_duration(now.saturating_sub(active.since))
            ));
        }
        None => lines.push("uplinks    no active uplink reported yet".to_owned()),
    }
    for state in states {
        let figures = match (state.latency_ms, state.loss) {
            (Some(latency), Some(loss)) => format!(
                "{:>7.1} ms  ±{:.1} ms  {:>5.1} % loss  score {:.0}",
                latency,
                state.jitter_ms.unwrap_or(0.0),
                loss * 100.0,
                state.score.unwrap_or(0.0)
            ),
            _ => "no replies yet".to_owned(),
        };
        let mut notes = Vec::new();
        if state.active {
            notes.push("ACTIVE");
        }
        if state.suppressed {
            notes.push("flapping, not used for now");
        }
        lines.push(
            format!(
                "  {:<16} {:<10} {figures}  {}",
                state.name,
                state.health,
                notes.join(", ")
            )
            .trim_end()
            .to_owned(),
        );
    }
    lines
}

/// Why traffic is on an uplink, in plain words, and whether it is about the uplink that was
/// left.
fn explain(reason: UplinkReason) -> (&'static str, bool) {
    match reason {
        UplinkReason::Initial => ("chosen at start", false),
        UplinkReason::Adopted => ("kept from before the agent started", false),
        UplinkReason::LinkDown => ("its link went down", true),
        UplinkReason::Silent => ("it stopped answering", true),
        UplinkReason::PeerDown => ("the appliance it belongs to is down", true),
        UplinkReason::Suppressed => ("it kept flapping", true),
        UplinkReason::Captive => (
            "it answers pings but not the web check (a login page or no service)",
            true,
        ),
        UplinkReason::Better => ("another uplink was clearly better", true),
        UplinkReason::Preferred => ("the preferred uplink was back and stable", true),
    }
}

/// `3d4h`, `2h05m`, `4m12s`, `9s`: the two largest units.
/// The devices' AWS credentials: how long they last without internet, in plain words.
pub fn imds_lines(state: &ImdsState, now: u64) -> Vec<String> {
    let Some(runway) = state.runway_s else {
        return vec!["credentials no device class has an AWS role: none handed out".to_owned()];
    };
    let sts = match (state.sts, state.last_sts_answer) {
        (StsHealth::Ok, _) => "AWS answering".to_owned(),
        (StsHealth::Unknown, _) => "AWS not asked yet".to_owned(),
        (StsHealth::Failing, Some(at)) => format!(
            "AWS NOT ANSWERING for {}",
            plain_duration(now.saturating_sub(at) / 1000)
        ),
        (StsHealth::Failing, None) => "AWS NOT ANSWERING".to_owned(),
    };
    let devices = match state.devices {
        1 => "1 device".to_owned(),
        n => format!("{n} devices"),
    };
    let verdict = if runway == 0 {
        "NONE LEFT: devices get no credentials until the internet is back".to_owned()
    } else if runway < 3600 {
        format!("only {} left without internet", plain_duration(runway))
    } else {
        format!("fine for {} without internet", plain_duration(runway))
    };
    let mut lines = vec![format!("credentials {verdict} ({devices}, {sts})")];
    if state.classes.len() > 1 {
        for class in &state.classes {
            lines.push(format!(
                "  {:<16} role {:<20} {} without internet",
                class.class,
                class.role,
                plain_duration(class.runway_s)
            ));
        }
    }
    lines
}

/// `11 h 20 min`, `45 min`, `under a minute`.
pub fn plain_duration(seconds: u64) -> String {
    let (hours, minutes) = (seconds / 3600, (seconds / 60) % 60);
    match (hours, minutes) {
        (0, 0) => "under a minute".to_owned(),
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    }
}

pub fn human_duration(millis: u64) -> String {
    let seconds = millis / 1000;
    let (days, hours, minutes) = (seconds / 86_400, (seconds / 3600) % 24, (seconds / 60) % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{:02}s", seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_credentials_line_says_how_long_devices_last_without_internet() {
        use fieldnet::bus::topics::ImdsClass;
        let class = |name: &str, runway_s| ImdsClass {
            class: name.to_owned(),
            role: format!("field-{name}"),
            runway_s,
            reserve_expires: None,
        };
        let mut state = ImdsState {
            runway_s: Some(40_800),
            classes: vec![class("cameras", 40_800)],
            devices: 12,
            sts: StsHealth::Ok,
            last_sts_answer: Some(1_000),
        };
        assert_eq!(
            super::imds_lines(&state, 2_000),
            ["credentials fine for 11 h 20 min without internet (12 devices, AWS answering)"]
        );
        state.runway_s = Some(2_400);
        state.sts = StsHealth::Failing;
        state.classes.push(class("tills", 50_000));
        let lines = super::imds_lines(&state, 3_601_000);
        assert_eq!(
            lines[0],
            "credentials only 40 min left without internet (12 devices, AWS NOT ANSWERING for 1 h)"
        );
        assert!(
            lines[2].contains("tills") && lines[2].contains("13 h 53 min"),
            "{lines:?}"
        );
        state.runway_s = Some(0);
        assert!(super::imds_lines(&state, 0)[0].contains("NONE LEFT"));
        state.runway_s = None;
        assert!(super::imds_lines(&state, 0)[0].contains("no device class has an AWS role"));
    }

    use super::*;

    /// A value of the bus vocabulary from its wire word.
    fn word<T: std::str::FromStr<Err: std::fmt::Debug>>(word: &str) -> T {
        word.parse().unwrap()
    }

    /// Audit finding 15: `fieldctl status` listed as "not connected" agents that are not
    /// configured or do not exist. Expected now: what exists and has work on the machine.
    #[test]
    fn not_connected_lists_only_agents_that_exist_and_are_configured() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/examples/riverside/site.toml"
        );
        let site = fieldnet::config::SiteConfig::load(std::path::Path::new(path)).unwrap();
        let machine = |name: &str| {
            site.machines
                .iter()
                .find(|m| m.name() == name)
                .unwrap()
                .clone()
        };
        assert_eq!(
            expected_agents(&machine("north")),
            SHIPPED.to_vec(),
            "an appliance with uplinks runs every agent that exists"
        );
        assert_eq!(
            expected_agents(&machine("hub-a")),
            ["cross-site-failover", "inventory"]
        );
        let mut bare = machine("north");
        bare.config.uplinks.clear();
        bare.config.agents.whereami.common.enabled = false;
        assert_eq!(
            expected_agents(&bare),
            [
                "cross-site-failover",
                "dhcp-takeover",
                "imds-endpoint",
                "inventory"
            ]
        );
        // No class with a role: nothing for imds-endpoint to hand out here.
        bare.config.agents.imds_endpoint.roles.clear();
        assert_eq!(
            expected_agents(&bare),
            ["cross-site-failover", "dhcp-takeover", "inventory"]
        );
    }

    #[test]
    fn peers_read_in_plain_words() {
        let path = |kind: &str, state: &str, rtt| fieldnet::bus::topics::PeerPathState {
            kind: word(kind),
            interface: format!("{kind}2"),
            state: word(state),
            rtt_ms: rtt,
        };
        let peers = vec![
            (
                "2".to_owned(),
                PeerState {
                    verdict: word("alive"),
                    active_path: Some(word("wifi")),
                    paths: vec![path("cable", "down", None), path("wifi", "up", Some(7.25))],
                    since: 0,
                },
            ),
            (
                "3".to_owned(),
                PeerState {
                    verdict: word("dead"),
                    active_path: Some(word("cable")),
                    paths: vec![path("cable", "down", None)],
                    since: 1_000,
                },
            ),
        ];
        let lines = peer_lines(&peers, 61_000);
        assert_eq!(lines[0], "peers      1 of 2 answering");
        assert_eq!(
            lines[1],
            "  appliance 2    alive, routes via wifi     cable down, wifi up 7.2 ms"
        );
        assert_eq!(
            lines[2],
            "  appliance 3    DEAD for 1m00s             cable down"
        );
    }

    #[test]
    fn uplinks_read_in_plain_words() {
        let active = UplinkActive {
            name: "north-4g-b".into(),
            reason: word("silent"),
            previous: Some("north-4g-a".into()),
            since: 1_000,
        };
        let states = [
            UplinkState {
                name: "north-4g-a".into(),
                health: word("silent"),
                active: false,
                suppressed: false,
                score: None,
                latency_ms: None,
                jitter_ms: None,
                loss: None,
                via: "wan0".into(),
                capacity_kbps: None,
            },
            UplinkState {
                name: "north-4g-b".into(),
                health: word("up"),
                active: true,
                suppressed: false,
                score: Some(52.0),
                latency_ms: Some(41.25),
                jitter_ms: Some(2.0),
                loss: Some(0.01),
                via: "wan1".into(),
                capacity_kbps: Some(20_000.0),
            },
        ];
        let lines = uplink_lines(Some(&active), &states, 253_000);
        assert_eq!(
            lines[0],
            "uplinks    traffic on north-4g-b for 4m12s (north-4g-a was left: it stopped answering)"
        );
        assert_eq!(lines[1], "  north-4g-a       silent     no replies yet");
        assert_eq!(
            lines[2],
            "  north-4g-b       up            41.2 ms  ±2.0 ms    1.0 % loss  score 52  ACTIVE"
        );
    }

    #[test]
    fn dns_reads_in_plain_words() {
        use fieldnet::bus::topics::{DnsNetwork, DnsUpstreams};
        let network = |name: &str, role: &str, listening: bool| DnsNetwork {
            name: name.into(),
            area: format!("area-{name}"),
            role: word(role),
            listening,
        };
        let mut state = DnsState {
            networks: vec![
                network("NETWORK1", "own", true),
                network("NETWORK2", "peer", false),
                network("NETWORK3", "takeover", true),
            ],
            upstreams: DnsUpstreams {
                addresses: vec!["192.0.2.53:53".into()],
                health: word("ok"),
                last_answer: Some(1_000),
                last_failure: None,
                failures: 0,
            },
            local_names: 4,
        };
        let lines = dns_lines(&state, 2_000);
        assert_eq!(
            lines[0],
            "dns        upstreams 192.0.2.53:53 answering; 4 local names"
        );
        assert!(lines[1].contains("NETWORK1") && lines[1].ends_with("answered here"));
        assert!(lines[2].ends_with("answered by its own appliance"));
        assert!(lines[3].contains("TAKEN OVER from its appliance, answered here"));

        state.upstreams.health = word("failing");
        let lines = dns_lines(&state, 181_000);
        assert!(
            lines[0].contains("NOT ANSWERING (last answer 3m00s ago); cached names still resolve"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn dhcp_reads_in_plain_words() {
        use fieldnet::bus::topics::DhcpNetwork;
        let network = |name: &str, state: &str, owner: u8| DhcpNetwork {
            name: name.into(),
            state: word(state),
            owner,
            leases: 12,
            pool_used: 13,
            pool_total: 245,
        };
        let lines = dhcp_lines(&DhcpState {
            networks: vec![
                network("NETWORK1", "own", 1),
                network("NETWORK2", "taken", 2),
                network("NETWORK3", "standby", 3),
            ],
        });
        assert_eq!(
            lines[1],
            "  NETWORK1         answered here; 12 leases, pool 13/245 used"
        );
        assert!(
            lines[2].contains("TAKEN OVER: appliance 2 is dead"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("standby (appliance 3 answers it)"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn durations_read_like_uptime() {
        let cases = [
            (0, "0s"),
            (9_999, "9s"),
            (252_000, "4m12s"),
            (7_500_000, "2h05m"),
            (360_000_000, "4d4h"),
        ];
        for (millis, text) in cases {
            assert_eq!(super::human_duration(millis), text);
        }
    }
}
