//! The edge: turns netlink events, probe replies, the bus and the clock into monitor inputs,
//! and carries out its outputs (probes, the default route, conntrack, bus, metrics).
//!
//! Invariant: every decision is the monitor's; this module only translates and executes.
//! Kernel state is read at start and adopted, so a restart changes nothing until the monitor
//! has evidence that something should change.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fieldnet::bus::BusClient;
use fieldnet::bus::topics::{self, UplinkActive, UplinkReason, UplinkState};
use fieldnet::config::{Config, PathKind, ProbeTarget, UplinkKind};
use fieldnet::rt::AgentContext;
use prometheus::GaugeVec;
use tokio::sync::mpsc;

use crate::edge::egress::{self, Egress};
use crate::edge::kernel::{Kernel, RULE_PRIORITY_BASE};
use crate::edge::metrics::Metrics;
use crate::edge::probe::{ProbeReply, ProbeSocket, UdpProbeSocket};
use crate::monitor::{Health, Input, Monitor, Output, SwitchReason, UplinkSpec};
use crate::settle::{Effects, settle};
use fieldnet::net::NextHop;

/// Longest the loop sleeps without a tick.
const MAX_TICK: Duration = Duration::from_millis(20);
/// How often link facts are re-read in full (also covers a netlink overrun).
const RESYNC: Duration = Duration::from_secs(2);
/// How often figures go to metrics and the bus.
const REPORT: Duration = Duration::from_secs(1);

/// How one uplink is reached, from this appliance's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkRoute {
    pub name: String,
    /// The interface traffic leaves by: the uplink's port, or the path to the owning peer the
    /// monitor chose (one of `paths`; the first until it says otherwise).
    pub interface: String,
    pub gateway: Ipv4Addr,
    pub table: u32,
    pub mark: u32,
    pub local: bool,
    /// For a remote uplink, every path to its peer, preferred first: (interface, peer address).
    pub paths: Vec<(String, Ipv4Addr)>,
}

/// The uplinks as the monitor and the edge need them, derived from the config alone.
pub fn plan(config: &Config) -> anyhow::Result<(Vec<UplinkSpec>, Vec<UplinkRoute>)> {
    let settings = &config.agents.uplink_monitor;
    let mut specs = Vec::new();
    let mut routes = Vec::new();
    for (index, uplink) in config.uplinks.iter().enumerate() {
        let mut paths = Vec::new();
        let (interface, gateway, peer) = match &uplink.kind {
            UplinkKind::Local { interface, gateway } => (interface.clone(), *gateway, None),
            UplinkKind::Remote { peer } => {
                let peer_config =
                    config
                        .peers
                        .iter()
                        .find(|p| p.id == *peer)
                        .with_context(|| {
                            format!("uplink {}: peer {peer} is not configured", uplink.name)
                        })?;
                // Cable, then wifi, then VPN: the first whose link is up carries the uplink.
                let mut ordered: Vec<&fieldnet::config::PeerPath> =
                    peer_config.paths.iter().collect();
                ordered.sort_by_key(|p| match p.kind {
                    PathKind::Cable => 0,
                    PathKind::Wifi => 1,
                    PathKind::Vpn => 2,
                });
                let first = ordered
                    .first()
                    .with_context(|| format!("uplink {}: peer {peer} has no path", uplink.name))?;
                paths = ordered
                    .iter()
                    .map(|p| (p.interface.clone(), p.remote))
                    .collect();
                (first.interface.clone(), first.remote, Some(*peer))
            }
        };
        specs.push(UplinkSpec {
            name: uplink.name.clone(),
            preference: uplink.preference,
            metered: uplink.metered,
            peer,
            paths: paths.len(),
        });
        routes.push(UplinkRoute {
            name: uplink.name.clone(),
            interface,
            gateway,
            table: settings.route_table_base + index as u32,
            mark: settings.fwmark_base + index as u32,
            local: peer.is_none(),
            paths,
        });
    }
    Ok((specs, routes))
}

/// What the link watcher reports: something about links or addresses changed.
struct LinkChanged;

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.uplink_monitor.clone();
    let (specs, routes) = plan(&config)?;
    anyhow::ensure!(
        !routes.is_empty(),
        "no [[uplinks]] configured: nothing to monitor"
    );
    let metrics = Metrics::register(&registry)?;
    let kernel = Kernel::connect()?;

    // Egress: marks, masquerade, loose rp_filter for local uplinks.
    let egresses: Vec<Egress> = routes
        .iter()
        .filter(|r| r.local)
        .map(|r| Egress {
            interface: r.interface.clone(),
            mark: r.mark,
        })
        .collect();
    egress::apply(&egresses, settings.masquerade).await?;
    for route in routes.iter().filter(|r| r.local) {
        if let Err(error) = egress::loosen_rp_filter(&route.interface) {
            tracing::warn!(uplink = %route.name, %error, "cannot loosen reverse-path filtering (interface absent?)");
        }
    }
    for (index, route) in routes.iter().enumerate() {
        kernel
            .ensure_rule(route.mark, route.table, RULE_PRIORITY_BASE + index as u32)
            .await?;
    }

    let (events_tx, mut events) = mpsc::unbounded_channel::<LinkChanged>();
    let (replies_tx, mut replies) = mpsc::unbounded_channel();
    let (checks_tx, mut checks) = mpsc::unbounded_channel::<Input>();
    let wants_udp = settings
        .targets
        .iter()
        .any(|t| matches!(t, ProbeTarget::Udp(_)));
    let mut sockets = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let device = route.local.then_some(route.interface.as_str());
        let icmp = ProbeSocket::open(index, route.mark, device, replies_tx.clone())
            .with_context(|| format!("opening the ICMP probe socket of uplink {}", route.name))?;
        let udp = if wants_udp {
            Some(
                UdpProbeSocket::open(index, route.mark, device, replies_tx.clone()).with_context(
                    || format!("opening the UDP probe socket of uplink {}", route.name),
                )?,
            )
        } else {
            None
        };
        sockets.push(Probes { icmp, udp });
    }
    watch_links(events_tx)?;
    let mut peers = bus.subscribe(topics::TOPIC_PEERS);

    let mut edge = Edge {
        kernel,
        routes,
        sockets,
        metrics,
        bus,
        link_index: Vec::new(),
        link_usable: Vec::new(),
        path_links: Vec::new(),
        reported_sent: Vec::new(),
        reported_lost: Vec::new(),
        counters: Vec::new(),
        targets: settings.targets.clone(),
        http_check: settings.http_check.clone(),
        throughput_test: settings.throughput_test.clone(),
        checks: checks_tx,
    };
    let count = edge.routes.len();
    edge.link_index = vec![None; count];
    edge.link_usable = edge
        .routes
        .iter()
        .map(|route| vec![None; route.paths.len().max(1)])
        .collect();
    edge.path_links = edge
        .routes
        .iter()
        .map(|route| vec![None; route.paths.len().max(1)])
        .collect();
    edge.reported_sent = vec![0; count];
    edge.reported_lost = vec![0; count];
    edge.counters = vec![None; count];
    let clock = Instant::now;
    let mut monitor = Monitor::new(settings, specs, clock());
    for input in edge.resync_links().await {
        settle(&mut monitor, &mut edge, &clock, input).await;
    }
    let adopted = edge.adopt().await;
    if let Some(uplink) = adopted {
        tracing::info!(uplink = %edge.routes[uplink].name, "adopting the kernel's default route");
        edge.publish_active(uplink, None, UplinkReason::Adopted);
    }
    settle(
        &mut monitor,
        &mut edge,
        &clock,
        Input::Adopt { uplink: adopted },
    )
    .await;
    fieldnet::rt::ready(&health, &shutdown);

    let mut resync = tokio::time::interval(RESYNC);
    let mut report = tokio::time::interval(REPORT);
    loop {
        let deadline = monitor.next_deadline().map_or(MAX_TICK, |at| {
            at.saturating_duration_since(Instant::now()).min(MAX_TICK)
        });
        // Each fact becomes the monitor's inputs through the edge's own tables; each input is
        // settled in turn (stepped, carried out, what that reports stepped again).
        let inputs = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(deadline) => vec![Input::Tick],
            Some(reply) = replies.recv() => edge.reply_input(reply).into_iter().collect(),
            Some(result) = checks.recv() => vec![result],
            Some(LinkChanged) = events.recv() => edge.resync_links().await,
            Some(event) = peers.recv() => peer_input(&event).into_iter().collect(),
            _ = resync.tick() => edge.resync_links().await,
            _ = report.tick() => {
                edge.report(&monitor);
                Vec::new()
            }
        };
        for input in inputs {
            settle(&mut monitor, &mut edge, &clock, input).await;
        }
    }
    // The default route stays as it is: traffic keeps flowing while the agent is away.
    Ok(())
}

fn peer_input(event: &fieldnet::bus::BusEvent) -> Option<Input> {
    let fieldnet::bus::BusEvent::Message(envelope) = event else {
        return None;
    };
    let peer = topics::parse_peer_topic(&envelope.topic)?;
    let liveness: topics::PeerLiveness = envelope.body_as().ok()?;
    Some(Input::Peer {
        peer,
        alive: liveness.verdict == topics::PeerVerdict::Alive,
    })
}

/// Subscribes to link and address changes; each one triggers a full re-read of our
/// interfaces, which is also what a netlink buffer overrun calls for. If the subscription
/// ends, it is made again (the 2 s resync covers the gap).
fn watch_links(events: mpsc::UnboundedSender<LinkChanged>) -> anyhow::Result<()> {
    let messages = subscribe_links()?;
    tokio::spawn(async move {
        let mut messages = messages;
        loop {
            use futures_util::StreamExt as _;
            while let Some((message, _)) = messages.next().await {
                if let rtnetlink::packet_core::NetlinkPayload::Overrun(_) = message.payload {
                    tracing::warn!("netlink event buffer overrun: re-reading every uplink's state");
                }
                if events.send(LinkChanged).is_err() {
                    return;
                }
            }
            tracing::warn!("link event subscription ended; subscribing again");
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match subscribe_links() {
                    Ok(again) => {
                        messages = again;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "subscribing to link events")
                    }
                }
            }
            if events.send(LinkChanged).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn subscribe_links() -> anyhow::Result<
    impl futures_util::Stream<
        Item = (
            rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    > + Unpin
    + Send
    + 'static,
> {
    use rtnetlink::MulticastGroup;
    let (connection, _, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])
            .context("subscribing to link events")?;
    tokio::spawn(connection);
    Ok(messages)
}

/// One uplink's probe sockets.
struct Probes {
    icmp: ProbeSocket,
    udp: Option<UdpProbeSocket>,
}

impl Probes {
    fn send(&self, target: ProbeTarget, seq: u16) -> std::io::Result<()> {
        match (target, &self.udp) {
            (ProbeTarget::Icmp(address), _) => self.icmp.send(address, seq),
            (ProbeTarget::Udp(socket), Some(udp)) => udp.send(socket, seq),
            (ProbeTarget::Udp(_), None) => Err(std::io::Error::other("no UDP probe socket")),
        }
    }
}

struct Edge {
    kernel: Kernel,
    routes: Vec<UplinkRoute>,
    sockets: Vec<Probes>,
    metrics: Metrics,
    bus: BusClient,
    link_index: Vec<Option<u32>>,
    /// Per uplink, what the monitor was last told of its link: a local uplink's (one entry),
    /// or each path's carrier for a remote one.
    link_usable: Vec<Vec<Option<bool>>>,
    /// Per uplink, the index of each of its interfaces (each path's, for a remote one) as the
    /// last re-read found it.
    path_links: Vec<Vec<Option<u32>>>,
    reported_sent: Vec<u64>,
    reported_lost: Vec<u64>,
    /// Last counter sample per uplink: (when, rx bytes, tx bytes).
    counters: Vec<Option<(Instant, u64, u64)>>,
    /// The probe targets, by the index the monitor names them with.
    targets: Vec<ProbeTarget>,
    http_check: Option<fieldnet::config::HttpCheck>,
    throughput_test: Option<fieldnet::config::ThroughputTest>,
    /// Where finished HTTP checks report.
    checks: mpsc::UnboundedSender<Input>,
}

impl Edge {
    /// Re-reads every uplink interface (each path of a remote uplink); returns inputs for
    /// those whose state changed, and reinstalls an uplink's own table when the interface its
    /// traffic goes by comes (back) up.
    async fn resync_links(&mut self) -> Vec<Input> {
        let mut inputs = Vec::new();
        for index in 0..self.routes.len() {
            let route = &self.routes[index];
            let interfaces: Vec<String> = if route.local {
                vec![route.interface.clone()]
            } else {
                route
                    .paths
                    .iter()
                    .map(|(interface, _)| interface.clone())
                    .collect()
            };
            for (path, interface) in interfaces.iter().enumerate() {
                let facts = match self.kernel.link_facts(interface).await {
                    Ok(facts) => facts,
                    Err(error) => {
                        tracing::warn!(uplink = %self.routes[index].name, %interface, %error, "reading link state");
                        continue;
                    }
                };
                let route = &self.routes[index];
                // A remote uplink's path has no address requirement beyond carrier.
                let usable =
                    facts.is_some_and(|f| if route.local { f.usable() } else { f.carrier });
                let in_use = *interface == route.interface;
                self.path_links[index][path] = facts.map(|f| f.index);
                if in_use {
                    if let Some(facts) = facts {
                        self.sample_counters(index, &facts);
                    }
                    self.link_index[index] = facts.map(|f| f.index);
                }
                if self.link_usable[index][path] != Some(usable) {
                    self.link_usable[index][path] = Some(usable);
                    if usable && in_use {
                        self.install_table(index).await;
                    }
                    inputs.push(if self.routes[index].local {
                        Input::Link {
                            uplink: index,
                            up: usable,
                        }
                    } else {
                        Input::PathLink {
                            uplink: index,
                            path,
                            up: usable,
                        }
                    });
                }
            }
        }
        inputs
    }

    /// Moves a remote uplink's traffic to the path the monitor chose: its table, and the
    /// default route when it carries it.
    async fn use_path(&mut self, uplink: usize, path: usize, carries_default: bool) {
        let Some((interface, gateway)) = self.routes[uplink].paths.get(path).cloned() else {
            return;
        };
        // The re-read that reported the path's carrier found its index too.
        let link = self.path_links[uplink].get(path).copied().flatten();
        let route = &mut self.routes[uplink];
        tracing::info!(uplink = %route.name, from = %route.interface, to = %interface, "remote uplink follows its live path");
        route.interface = interface;
        route.gateway = gateway;
        self.link_index[uplink] = link;
        self.counters[uplink] = None;
        self.install_table(uplink).await;
        if let (true, Some(link)) = (carries_default, link) {
            let hop = NextHop {
                gateway,
                interface: link,
            };
            if let Err(error) = self.kernel.set_main_default(hop).await {
                self.metrics
                    .errors
                    .with_label_values(&["default_route"])
                    .inc();
                tracing::error!(uplink = %self.routes[uplink].name, error = format!("{error:#}"), "moving the default route to the live path");
            }
        }
    }

    /// Throughput from interface counters. Reported, not scored: the probes already measure
    /// what congestion does (latency, jitter, loss), and scoring on traffic would count against
    /// the uplink for carrying it.
    fn sample_counters(&mut self, index: usize, facts: &crate::edge::kernel::LinkFacts) {
        let now = Instant::now();
        if let Some((then, rx, tx)) = self.counters[index] {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds >= 0.5 {
                let name = self.routes[index].name.as_str();
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 * 8.0 / seconds;
                self.metrics
                    .throughput
                    .with_label_values(&[name, "rx"])
                    .set(rate(facts.rx_bytes, rx));
                self.metrics
                    .throughput
                    .with_label_values(&[name, "tx"])
                    .set(rate(facts.tx_bytes, tx));
            } else {
                return;
            }
        }
        self.counters[index] = Some((now, facts.rx_bytes, facts.tx_bytes));
    }

    async fn install_table(&self, index: usize) {
        let route = &self.routes[index];
        let Some(interface) = self.link_index[index] else {
            return;
        };
        let hop = NextHop {
            gateway: route.gateway,
            interface,
        };
        if let Err(error) = self.kernel.replace_default(route.table, hop).await {
            self.metrics
                .errors
                .with_label_values(&["uplink_table"])
                .inc();
            tracing::warn!(uplink = %route.name, error = format!("{error:#}"), "installing the uplink's own table");
        }
    }

    /// Which uplink the kernel's default route already uses.
    async fn adopt(&self) -> Option<usize> {
        let hops = match self.kernel.main_defaults().await {
            Ok(hops) => hops,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "reading the default route");
                return None;
            }
        };
        hops.iter().find_map(|hop| {
            (0..self.routes.len()).find(|&i| {
                self.routes[i].gateway == hop.gateway && self.link_index[i] == Some(hop.interface)
            })
        })
    }

    /// A reply, as the monitor names it: the target by its index in the edge's own table.
    fn reply_input(&self, reply: ProbeReply) -> Option<Input> {
        let target = self.targets.iter().position(|t| *t == reply.from)?;
        Some(Input::Reply {
            uplink: reply.uplink,
            target,
            seq: reply.seq,
        })
    }

    fn spawn_throughput_test(&self, uplink: usize) {
        let Some(test) = self.throughput_test.clone() else {
            return;
        };
        let route = &self.routes[uplink];
        let (mark, device, name) = (
            route.mark,
            route.local.then(|| route.interface.clone()),
            route.name.clone(),
        );
        let results = self.checks.clone();
        let capacity = self.metrics.capacity.clone();
        tokio::spawn(async move {
            let kbps = crate::edge::httpcheck::throughput(&test, mark, device.as_deref()).await;
            match kbps {
                Some(kbps) => {
                    capacity.with_label_values(&[name.as_str()]).set(kbps);
                    tracing::info!(uplink = %name, kbps = kbps as u64, "throughput measured");
                }
                None => tracing::info!(uplink = %name, "throughput test failed"),
            }
            let _ = results.send(Input::ThroughputResult { uplink, kbps });
        });
    }

    fn spawn_http_check(&self, uplink: usize) {
        let Some(check) = self.http_check.clone() else {
            return;
        };
        let route = &self.routes[uplink];
        let (mark, device) = (route.mark, route.local.then(|| route.interface.clone()));
        let results = self.checks.clone();
        tokio::spawn(async move {
            let ok = crate::edge::httpcheck::run(&check, mark, device.as_deref()).await;
            let _ = results.send(Input::HttpResult { uplink, ok });
        });
    }

    async fn activate(&mut self, uplink: usize, previous: Option<usize>, reason: SwitchReason) {
        let route = &self.routes[uplink];
        let started = Instant::now();
        match self.link_index[uplink] {
            Some(interface) => {
                if let Err(error) = self
                    .kernel
                    .set_main_default(NextHop {
                        gateway: route.gateway,
                        interface,
                    })
                    .await
                {
                    self.metrics
                        .errors
                        .with_label_values(&["default_route"])
                        .inc();
                    tracing::error!(uplink = %route.name, error = format!("{error:#}"), "moving the default route");
                    return;
                }
            }
            None => {
                tracing::error!(uplink = %route.name, "cannot move the default route: interface absent");
                return;
            }
        }
        tracing::info!(
            from = %previous.map(|p| self.routes[p].name.as_str()).unwrap_or("-"),
            to = %route.name,
            reason = %reason.as_str(),
            took_us = started.elapsed().as_micros() as u64,
            "default route moved"
        );
        self.metrics
            .switches
            .with_label_values(&[reason.as_str()])
            .inc();
        self.metrics
            .last_switch
            .set(fieldnet::bus::unix_millis() as i64 / 1000);
        self.publish_active(uplink, previous, reason.into());
        if let Some(previous) = previous.filter(|p| self.routes[*p].local) {
            let mark = self.routes[previous].mark;
            let name = self.routes[previous].name.clone();
            let errors = self.metrics.errors.clone();
            // After the route: new packets of old flows now find no entry and are re-NATed
            // onto the new uplink.
            tokio::spawn(async move {
                match egress::flush_conntrack(mark).await {
                    Ok(count) => {
                        tracing::info!(uplink = %name, flows = count, "forgot flows of the abandoned uplink")
                    }
                    Err(error) => {
                        errors.with_label_values(&["conntrack"]).inc();
                        tracing::warn!(uplink = %name, error = format!("{error:#}"), "flushing conntrack");
                    }
                }
            });
        }
    }

    fn publish_active(&self, uplink: usize, previous: Option<usize>, reason: UplinkReason) {
        let body = UplinkActive {
            name: self.routes[uplink].name.clone(),
            reason,
            previous: previous.map(|p| self.routes[p].name.clone()),
            since: fieldnet::bus::unix_millis(),
        };
        let _ = self.bus.publish(topics::TOPIC_UPLINK_ACTIVE, &body, true);
    }

    fn publish_state(&self, monitor: &Monitor, uplink: usize) {
        let view = &monitor.view(Instant::now())[uplink];
        let body = UplinkState {
            name: view.name.clone(),
            health: view.health,
            active: view.active,
            suppressed: view.suppressed,
            score: view.score,
            latency_ms: view.latency_ms,
            jitter_ms: view.jitter_ms,
            loss: view.loss,
            via: self.routes[uplink].interface.clone(),
            capacity_kbps: view.capacity_kbps,
        };
        let _ = self
            .bus
            .publish(&topics::uplink_state_topic(&view.name), &body, true);
    }

    fn report(&mut self, monitor: &Monitor) {
        for (index, view) in monitor.view(Instant::now()).iter().enumerate() {
            let labels = [view.name.as_str()];
            let set = |gauge: &GaugeVec, value: Option<f64>| {
                gauge
                    .with_label_values(&labels)
                    .set(value.unwrap_or(f64::NAN))
            };
            set(&self.metrics.latency, view.latency_ms);
            set(&self.metrics.jitter, view.jitter_ms);
            set(&self.metrics.loss, view.loss);
            set(&self.metrics.score, view.score);
            self.metrics
                .up
                .with_label_values(&labels)
                .set(f64::from(u8::from(view.health == Health::Up)));
            self.metrics
                .active
                .with_label_values(&labels)
                .set(f64::from(u8::from(view.active)));
            self.metrics
                .probes_sent
                .with_label_values(&labels)
                .inc_by(view.probes_sent - self.reported_sent[index]);
            self.metrics
                .probes_lost
                .with_label_values(&labels)
                .inc_by(view.probes_lost - self.reported_lost[index]);
            self.reported_sent[index] = view.probes_sent;
            self.reported_lost[index] = view.probes_lost;
            self.publish_state(monitor, index);
        }
    }
}

impl Effects for Edge {
    async fn carry_out(&mut self, monitor: &Monitor, output: Output) -> Option<Input> {
        match output {
            Output::SendProbe {
                uplink,
                target,
                seq,
            } => {
                let sent = self
                    .targets
                    .get(target)
                    .ok_or_else(|| std::io::Error::other("no such target"))
                    .and_then(|address| self.sockets[uplink].send(*address, seq));
                if let Err(error) = sent {
                    tracing::trace!(uplink = %self.routes[uplink].name, %error, "probe not sent");
                    return Some(Input::SendFailed {
                        uplink,
                        target,
                        seq,
                    });
                }
            }
            Output::Activate {
                uplink,
                previous,
                reason,
            } => self.activate(uplink, previous, reason).await,
            Output::UsePath {
                uplink,
                path,
                carries_default,
            } => {
                self.use_path(uplink, path, carries_default).await;
                self.publish_state(monitor, uplink);
            }
            Output::HttpCheck { uplink } => self.spawn_http_check(uplink),
            Output::ThroughputTest { uplink } => self.spawn_throughput_test(uplink),
            Output::HealthChanged { uplink, from, to } => {
                tracing::info!(uplink = %self.routes[uplink].name, from = %from.as_str(), to = %to.as_str(), "uplink health changed");
                self.publish_state(monitor, uplink);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_remote_paths_cable_first_and_numbers_tables_and_marks() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/examples/riverside/site.toml"
        );
        let site = fieldnet::config::SiteConfig::load(std::path::Path::new(example)).unwrap();
        let config = site.view("north").unwrap();
        let (specs, routes) = plan(config).unwrap();
        assert_eq!(specs.len(), routes.len());
        let local = &routes[0];
        assert_eq!(
            (
                local.interface.as_str(),
                local.table,
                local.mark,
                local.local
            ),
            ("wan0", 200, 0x4600, true)
        );
        let remote = routes.iter().find(|r| !r.local).unwrap();
        let kinds: Vec<&str> = remote
            .paths
            .iter()
            .map(|(interface, _)| interface.as_str())
            .collect();
        assert_eq!(kinds, ["cab-stage", "wifi-stage", "wg-hub"]);
        assert_eq!(remote.interface, "cab-stage");
        assert_eq!(specs.iter().filter(|s| s.peer.is_some()).count(), 2);
    }
}
