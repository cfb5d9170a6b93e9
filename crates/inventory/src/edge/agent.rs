//! The agent: one loop that feeds the device list from every source and serves what it holds.
//! From the bus: leases (`dhcp/lease/<address>`: a device seen; a lease gone: that address
//! asked again) and networks taken over (`dhcp/takeover/<network>`: swept too). From the
//! kernel: neighbour events. From the sweeper task: each sweep's answers (a full sweep of every
//! swept network each `sweep_interval`, one sweep at a time so the rate bounds them all). From
//! probe tasks: exporter ports (every device each `probe_interval`, a new one at once). On a
//! hub: WireGuard peers. Out: `dev/<id>` on the bus, HTTP service discovery, file_sd files and
//! the state file.
//!
//! Invariant: what is served is rendered from the list after every change of it, before the
//! loop waits again; the state file is replaced whole at most every [`SAVE_EVERY`] and at exit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use fieldnet::bus::topics::{self, DeviceEvent, DeviceSource, DeviceState, Lease};
use fieldnet::bus::{BusClient, BusEvent, Subscription};
use fieldnet::config::{Config, InventoryConfig, OUI_FILES};
use fieldnet::names::Mac;
use fieldnet::rt::AgentContext;
use tokio::sync::mpsc;

use super::http::{self, Shared, Snapshot};
use super::metrics::Metrics;
use super::neighbours::{self, Neighbour};
use super::probe;
use super::store;
use super::sweeper::{self, Method, Outcome, Pace, Request};
use crate::devices::{Devices, Sighting, Update};
use crate::oui::Vendors;
use crate::sd;
use crate::sweep::Prior;
use crate::wireguard;

const TICK: Duration = Duration::from_secs(1);
/// The state file is written at most this often while the list changes, and this often anyway
/// (last-seen times move without changing the list).
const SAVE_EVERY: Duration = Duration::from_secs(10);
const SAVE_ANYWAY: Duration = Duration::from_secs(60);
/// How often a hub reads its WireGuard peers.
const WIREGUARD_EVERY: Duration = Duration::from_secs(10);
const DHCP_PREFIX: &str = "dhcp/";

/// A probe's answers: whether it was the periodic one, and each device's open ports.
type Probed = (bool, Vec<(String, BTreeSet<u16>)>);

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.inventory.clone();
    let metrics = Metrics::register(&registry)?;
    let vendors = load_vendors(&settings);
    let mut devices = Devices::from_config(&config, vendors);
    if let Some(saved) = store::load(&settings.state) {
        tracing::info!(state = %settings.state.display(), devices = saved.len(), "device list taken back");
        devices.restore(saved);
    }

    let shared = Shared::new(metrics.clone());
    let listener = tokio::net::TcpListener::bind(settings.sd_listen)
        .await
        .with_context(|| format!("listening on {} (inventory.sd_listen)", settings.sd_listen))?;
    let router = http::router(shared.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "service discovery listener failed");
        }
    });
    let mut neighbour_news = neighbours::follow(shutdown.clone()).await?;

    let pace = Pace {
        attempts: settings.sweep_attempts,
        wait: settings.reply_wait,
        rate: settings.sweep_rate,
    };
    let (sweep_requests, mut requests) = mpsc::channel::<Request>(256);
    let (outcome_sender, mut outcomes) = mpsc::channel::<Outcome>(64);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let network = request.network.clone();
            match sweeper::run(request, pace).await {
                Ok(outcome) => {
                    if outcome_sender.send(outcome).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(network, error = %format!("{error:#}"), "sweep failed")
                }
            }
        }
    });
    let (ports_sender, mut ports) = mpsc::channel::<Probed>(64);

    tracing::info!(listen = %settings.sd_listen, jobs = settings.exporters.len(), "serving service discovery");
    fieldnet::rt::ready(&health, &shutdown);

    let mut agent = Agent {
        hub: config.agents.cross_site_failover.hub.is_some(),
        config,
        settings,
        devices,
        shared,
        metrics,
        bus: bus.clone(),
        sweep_requests,
        ports_sender,
        taken: BTreeSet::new(),
        silent: BTreeMap::new(),
        rendered: None,
        sd_dirty: true,
        saved_generation: None,
        last_save: Instant::now(),
        last_sweep: None,
        last_probe: None,
        probing: false,
        last_wireguard: None,
        wireguard_missing: false,
    };
    agent.render();
    let mut dhcp = bus.subscribe(DHCP_PREFIX);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = dhcp.recv() => match event {
                Some(BusEvent::Message(envelope)) => agent.on_dhcp(&envelope.topic, &envelope.body),
                _ => dhcp = resubscribe(&bus, dhcp, DHCP_PREFIX),
            },
            Some(news) = neighbour_news.recv() => agent.on_neighbour(news),
            Some(outcome) = outcomes.recv() => agent.on_sweep(outcome),
            Some((periodic, found)) = ports.recv() => agent.on_ports(periodic, found),
            _ = tick.tick() => agent.on_tick().await,
        }
        agent.render();
    }
    agent.save();
    Ok(())
}

fn resubscribe(bus: &BusClient, old: Subscription, prefix: &str) -> Subscription {
    drop(old);
    bus.subscribe(prefix)
}

/// The vendor table: the configured file, else the first of [`OUI_FILES`] present; none is an
/// empty table (vendors are "where known").
fn load_vendors(settings: &InventoryConfig) -> Vendors {
    let candidates: Vec<PathBuf> = match &settings.oui_file {
        Some(file) => vec![file.clone()],
        None => OUI_FILES.iter().map(PathBuf::from).collect(),
    };
    for file in candidates {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let vendors = Vendors::parse(&text);
                tracing::info!(file = %file.display(), prefixes = vendors.len(), "vendor table read");
                return vendors;
            }
            Err(error) if settings.oui_file.is_some() => {
                tracing::warn!(file = %file.display(), %error, "cannot read the vendor table; devices get no vendor");
            }
            Err(_) => {}
        }
    }
    Vendors::default()
}

struct Agent {
    config: Config,
    settings: InventoryConfig,
    hub: bool,
    devices: Devices,
    shared: Shared,
    metrics: Metrics,
    bus: BusClient,
    sweep_requests: mpsc::Sender<Request>,
    ports_sender: mpsc::Sender<Probed>,
    /// Networks this appliance serves for a dead peer (swept too).
    taken: BTreeSet<String>,
    /// The addresses of each network that did not answer its last full sweep.
    silent: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// The list's generation last rendered.
    rendered: Option<u64>,
    sd_dirty: bool,
    saved_generation: Option<u64>,
    last_save: Instant,
    last_sweep: Option<Instant>,
    last_probe: Option<Instant>,
    probing: bool,
    last_wireguard: Option<Instant>,
    wireguard_missing: bool,
}

fn now_ms() -> u64 {
    fieldnet::bus::unix_millis()
}

impl Agent {
    fn on_dhcp(&mut self, topic: &str, body: &serde_json::Value) {
        if let Some(address) = topic.strip_prefix(topics::TOPIC_DHCP_LEASES) {
            let Ok(address) = address.parse::<Ipv4Addr>() else {
                return;
            };
            if body.is_null() {
                // The lease ended: is the device still there?
                self.ask_again(address);
                return;
            }
            let lease: Lease = match serde_json::from_value(body.clone()) {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::warn!(topic, %error, "unreadable lease");
                    return;
                }
            };
            let mac = lease.mac.clone();
            let Some(sighting) = Sighting::lease(address, lease) else {
                tracing::warn!(topic, mac, "a lease without a usable MAC");
                return;
            };
            let updates = self.devices.seen(now_ms(), sighting);
            self.apply(updates);
        } else if let Some(network) = topic.strip_prefix(topics::TOPIC_DHCP_TAKEOVERS) {
            if body.is_null() {
                self.taken.remove(network);
            } else if self.taken.insert(network.to_owned()) {
                // Its devices are ours to find now.
                self.sweep_network(network, true);
            }
        }
    }

    fn on_neighbour(&mut self, news: Neighbour) {
        match news {
            Neighbour::Reachable(address, mac) => {
                let updates = self.devices.seen(
                    now_ms(),
                    Sighting::new(DeviceSource::Neighbour, address).mac(mac),
                );
                self.apply(updates);
            }
            Neighbour::Failed(address) => self.ask_again(address),
        }
    }

    fn on_sweep(&mut self, outcome: Outcome) {
        self.metrics
            .frames_sent
            .with_label_values(&[outcome.kind])
            .inc_by(outcome.sent);
        if outcome.full {
            self.silent.insert(
                outcome.network.clone(),
                outcome.missed.iter().copied().collect(),
            );
            self.metrics
                .sweep_seconds
                .with_label_values(&[&outcome.network])
                .set(outcome.took.as_secs_f64());
            self.metrics
                .sweep_found
                .with_label_values(&[&outcome.network])
                .set(outcome.found.len() as i64);
            tracing::debug!(
                network = outcome.network,
                found = outcome.found.len(),
                missed = outcome.missed.len(),
                sent = outcome.sent,
                took_ms = outcome.took.as_millis() as u64,
                "sweep done"
            );
        }
        let source = if outcome.kind == "arp" {
            DeviceSource::Arp
        } else {
            DeviceSource::Icmp
        };
        let now = now_ms();
        for (address, mac) in outcome.found {
            let mut sighting = Sighting::new(source, address);
            sighting.mac = mac;
            let updates = self.devices.seen(now, sighting);
            self.apply(updates);
        }
    }

    fn on_ports(&mut self, periodic: bool, found: Vec<(String, BTreeSet<u16>)>) {
        if periodic {
            self.probing = false;
        }
        let now = now_ms();
        for (id, open) in found {
            let updates = self.devices.ports(now, &id, open);
            self.apply(updates);
        }
    }

    async fn on_tick(&mut self) {
        let updates = self.devices.tick(now_ms());
        self.apply(updates);
        let due =
            |last: Option<Instant>, every: Duration| last.is_none_or(|at| at.elapsed() >= every);
        if due(self.last_sweep, self.settings.sweep_interval) {
            self.last_sweep = Some(Instant::now());
            for network in self.swept_networks() {
                self.sweep_network(&network, true);
            }
            for range in self.settings.routed.clone() {
                let request = Request {
                    network: range.to_string(),
                    method: Method::Icmp,
                    hosts: range
                        .hosts()
                        .map(|host| (host, self.prior(&range.to_string(), host, &BTreeMap::new())))
                        .collect(),
                    full: true,
                };
                let _ = self.sweep_requests.try_send(request);
            }
        }
        if !self.probing && due(self.last_probe, self.settings.probe_interval) {
            self.last_probe = Some(Instant::now());
            self.probing = true;
            self.probe(self.devices.present(), true);
        }
        if self.hub && !self.wireguard_missing && due(self.last_wireguard, WIREGUARD_EVERY) {
            self.last_wireguard = Some(Instant::now());
            self.read_wireguard().await;
        }
        if self.sd_dirty {
            self.write_file_sd();
        }
        let changed = self.saved_generation != Some(self.devices.generation());
        if (changed && self.last_save.elapsed() >= SAVE_EVERY)
            || self.last_save.elapsed() >= SAVE_ANYWAY
        {
            self.save();
        }
    }

    /// Publishes what changed and starts the probes a device's arrival calls for.
    fn apply(&mut self, updates: Vec<Update>) {
        for update in updates {
            match update {
                Update::Changed { event, device } => {
                    if let Some(event) = event {
                        self.metrics
                            .events
                            .with_label_values(&[event.as_str()])
                            .inc();
                        tracing::info!(
                            id = device.id,
                            name = device.name,
                            address = %device.address,
                            network = device.network,
                            event = event.as_str(),
                            "device {event}"
                        );
                        if matches!(
                            event,
                            DeviceEvent::Joined | DeviceEvent::Returned | DeviceEvent::Moved
                        ) {
                            self.probe_new(&device);
                        }
                    }
                    let _ = self
                        .bus
                        .publish(&topics::device_topic(&device.id), &*device, true);
                }
                Update::Forgotten { id } => {
                    let _ = self.bus.publish(
                        &topics::device_topic(&id),
                        &serde_json::Value::Null,
                        true,
                    );
                }
            }
        }
    }

    /// Tries the exporter ports of `devices` in a task of its own; the periodic probe is
    /// over when its answers come back (a second one never overlaps it).
    fn probe(&mut self, devices: Vec<(String, Ipv4Addr)>, periodic: bool) {
        if devices.is_empty() {
            if periodic {
                self.probing = false;
            }
            return;
        }
        let ports: Vec<u16> = self.settings.exporters.iter().map(|e| e.port).collect();
        self.metrics
            .frames_sent
            .with_label_values(&["tcp"])
            .inc_by((devices.len() * ports.len()) as u64);
        let sender = self.ports_sender.clone();
        tokio::spawn(async move {
            let found = probe::probe(devices, ports).await;
            let _ = sender.send((periodic, found)).await;
        });
    }

    /// Tries a device just seen until an exporter port answers (see `probe::new_device`). On
    /// a network of this appliance, each try is preceded by an ARP request to the device's MAC
    /// from the appliance's address: the kernel, whose first attempt to resolve the address
    /// may have gone out before the device had it, asks again only a second later; the
    /// device's answer to this request completes the kernel's entry at once.
    fn probe_new(&mut self, device: &topics::Device) {
        let (id, address) = (device.id.clone(), device.address);
        let ports: Vec<u16> = self.settings.exporters.iter().map(|e| e.port).collect();
        let sender = self.ports_sender.clone();
        let frames = self.metrics.frames_sent.with_label_values(&["tcp"]);
        let arp_frames = self.metrics.frames_sent.with_label_values(&["arp"]);
        let swept = self.swept_networks();
        let nudge = device.mac.and_then(|mac| {
            let network = self
                .config
                .networks
                .iter()
                .find(|n| n.name == device.network && swept.contains(&n.name))?;
            Some((network.interface.clone()?, network.gateway, mac))
        });
        tokio::spawn(async move {
            let nudge = nudge.and_then(|(interface, sender, mac)| {
                let index = fieldnet::raw::interface_index(&interface).ok()?;
                let own = Mac(fieldnet::raw::interface_mac(&interface).ok()?);
                let socket = fieldnet::raw::RawSocket::arp(index).ok()?;
                Some((
                    socket,
                    crate::frames::arp_request(own, sender, address),
                    mac,
                ))
            });
            let (open, tried) = probe::new_device(address, &ports, || {
                if let Some((socket, frame, mac)) = &nudge
                    && socket.send_to_link(frame, mac.0).is_ok()
                {
                    arp_frames.inc();
                }
            })
            .await;
            frames.inc_by(tried);
            let _ = sender.send((false, vec![(id, open)])).await;
        });
    }

    /// The networks swept by ARP here: this appliance's own, and those it has taken over.
    fn swept_networks(&self) -> Vec<String> {
        self.config
            .networks
            .iter()
            .filter(|network| {
                network.interface.is_some()
                    && (network.area == self.config.appliance.area
                        || self.taken.contains(&network.name))
            })
            .map(|network| network.name.clone())
            .collect()
    }

    /// Queues a sweep of the network `name` (every host, the known ones by unicast first).
    fn sweep_network(&mut self, name: &str, full: bool) {
        let Some(network) = self.config.networks.iter().find(|n| n.name == name) else {
            return;
        };
        let Some(interface) = network.interface.clone() else {
            return;
        };
        let hints: BTreeMap<Ipv4Addr, Option<Mac>> =
            self.devices.known_on(name).into_iter().collect();
        let hosts = network
            .subnet
            .hosts()
            .filter(|host| *host != network.gateway)
            .map(|host| (host, self.prior(name, host, &hints)))
            .collect();
        let request = Request {
            network: name.to_owned(),
            method: Method::Arp {
                interface,
                sender: network.gateway,
            },
            hosts,
            full,
        };
        if self.sweep_requests.try_send(request).is_err() {
            tracing::debug!(network = name, "sweeps queued up; this one skipped");
        }
    }

    /// What the last full sweep of `network` learned of `address`.
    fn prior(
        &self,
        network: &str,
        address: Ipv4Addr,
        hints: &BTreeMap<Ipv4Addr, Option<Mac>>,
    ) -> Prior {
        let silent = self
            .silent
            .get(network)
            .is_some_and(|silent| silent.contains(&address));
        Prior::of(hints.get(&address).copied().flatten(), silent)
    }

    /// Asks `address` again (a lease ended, the kernel failed to reach it).
    fn ask_again(&mut self, address: Ipv4Addr) {
        let hint = self
            .devices
            .list()
            .find(|device| device.address == address && device.state == DeviceState::Present)
            .and_then(|device| device.mac);
        let swept = self.swept_networks();
        if let Some(network) = self.config.networks.iter().find(|n| {
            n.subnet.contains(&address) && swept.contains(&n.name) && n.gateway != address
        }) && let Some(interface) = network.interface.clone()
        {
            let request = Request {
                network: network.name.clone(),
                method: Method::Arp {
                    interface,
                    sender: network.gateway,
                },
                hosts: vec![(address, Prior::of(hint, false))],
                full: false,
            };
            let _ = self.sweep_requests.try_send(request);
        } else if self
            .settings
            .routed
            .iter()
            .any(|range| range.contains(&address))
        {
            let request = Request {
                network: address.to_string(),
                method: Method::Icmp,
                hosts: vec![(address, Prior::Unknown)],
                full: false,
            };
            let _ = self.sweep_requests.try_send(request);
        }
    }

    async fn read_wireguard(&mut self) {
        let output = tokio::process::Command::new("wg")
            .args(["show", "all", "dump"])
            .output()
            .await;
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                tracing::warn!(stderr = %String::from_utf8_lossy(&output.stderr).trim(), "wg show failed");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot run wg; WireGuard peers are not listed");
                self.wireguard_missing = true;
                return;
            }
        };
        let now = now_ms();
        let peers =
            wireguard::connected_peers(&String::from_utf8_lossy(&output.stdout), now / 1000);
        for peer in peers {
            let mut sighting = Sighting::new(DeviceSource::Wireguard, peer.address);
            sighting.peer = Some(peer.key);
            let updates = self.devices.seen(now, sighting);
            self.apply(updates);
        }
    }

    /// Renders what is served, if the list changed since it was last rendered.
    fn render(&mut self) {
        let generation = self.devices.generation();
        if self.rendered == Some(generation) {
            return;
        }
        self.rendered = Some(generation);
        let mut snapshot = Snapshot::default();
        for exporter in &self.settings.exporters {
            let groups = sd::target_groups(self.devices.list(), exporter.port);
            snapshot
                .jobs
                .insert(exporter.job.clone(), Bytes::from(sd::render(&groups)));
        }
        let all: Vec<&topics::Device> = self.devices.list().collect();
        snapshot.devices = Bytes::from(serde_json::to_vec(&all).expect("devices serialise"));
        self.shared.replace(snapshot);
        self.sd_dirty = true;

        self.metrics.devices.reset();
        for device in self.devices.list() {
            self.metrics
                .devices
                .with_label_values(&[
                    device.area.as_deref().unwrap_or(""),
                    &device.network,
                    device.class.as_deref().unwrap_or(""),
                    device.state.as_str(),
                ])
                .inc();
        }
    }

    /// The file_sd files, one per job, beside the state file.
    fn write_file_sd(&mut self) {
        let directory = store::sd_directory(&self.settings.state);
        let mut ok = true;
        for (job, body) in &self.shared.current().jobs {
            let path = directory.join(format!("{job}.json"));
            if let Err(error) = fieldnet::files::replace(&path, body, 0o644) {
                tracing::warn!(error = %format!("{error:#}"), "file_sd not written");
                ok = false;
            }
        }
        self.sd_dirty = !ok;
    }

    fn save(&mut self) {
        let all: Vec<&topics::Device> = self.devices.list().collect();
        let bytes = serde_json::to_vec(&all).expect("devices serialise");
        match fieldnet::files::replace(&self.settings.state, &bytes, 0o640) {
            Ok(()) => self.saved_generation = Some(self.devices.generation()),
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "device list not saved"),
        }
        self.last_save = Instant::now();
    }
}
