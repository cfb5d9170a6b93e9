//! The agent: one DNS listener (UDP and TCP) on every gateway address of the networks this
//! appliance serves, all sharing one handler. An address that is not there yet (the LAN still
//! coming up, a takeover address not yet added) is bound as soon as it appears.
//!
//! From the bus: DHCP leases (`dhcp/lease/<address>`) become local names, and networks taken
//! over from a dead peer (`dhcp/takeover/<network>`) are listened on until handed back. To the
//! bus: `dns/state`, retained, on every change.
//!
//! Invariant: whereami listens only on LAN addresses, never on the uplink side, and answers
//! only askers on site networks.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fieldnet::bus::{BusClient, BusEvent, Subscription, topics};
use fieldnet::config::UplinkKind;
use fieldnet::rt::AgentContext;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::answer::Views;
use crate::dhcp::{DhcpMessage, Leases, NameChange, network_roles};
use crate::edge::forward::Forwarder;
use crate::edge::server::{Handler, Metrics, State};
use crate::packet::AnswerCache;

/// How often addresses that could not be bound are tried again, expired leases dropped and
/// `dns/state` compared with what was last published.
const TICK: Duration = Duration::from_secs(1);
/// The bus prefix of everything dhcp-takeover publishes that whereami follows.
const DHCP_PREFIX: &str = "dhcp/";

/// One address being served.
struct Listener {
    /// Stops the TCP listener and its connections.
    tcp: CancellationToken,
    udp: crate::edge::udp::UdpListener,
}

impl Listener {
    fn stop(&self) {
        self.udp.stop();
        self.tcp.cancel();
    }
}

struct Agent {
    state: Arc<State>,
    networks: Vec<ipnet::Ipv4Net>,
    port: u16,
    /// Gateways of this appliance's own networks.
    own: Vec<Ipv4Addr>,
    /// Networks served for a dead peer: name → gateway.
    takeovers: BTreeMap<String, Ipv4Addr>,
    listeners: BTreeMap<SocketAddr, Listener>,
    /// DNS-over-TCP connections, over every listener.
    connections: crate::edge::tcp::Connections,
    leases: Leases,
    bus: BusClient,
    published: Option<topics::DnsState>,
    shutdown: CancellationToken,
}

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.whereami.clone();
    let metrics = Metrics::register(&registry)?;
    let state = Arc::new(State {
        views: RwLock::new(Views::from_config(&config)?),
        forwarder: Forwarder::new(
            &settings.upstreams,
            settings.cache_size,
            settings.upstream_timeout,
            settings.serve_stale,
        )?,
        metrics: metrics.clone(),
        answers: AnswerCache::new(usize::try_from(settings.cache_size).unwrap_or(usize::MAX)),
        uplinks: crate::edge::uplinks::Uplinks::new(
            config
                .uplinks
                .iter()
                .filter_map(|uplink| match &uplink.kind {
                    UplinkKind::Local { interface, .. } => Some(interface.clone()),
                    UplinkKind::Remote { .. } => None,
                })
                .collect(),
        ),
    });
    let mut agent = Agent {
        state,
        networks: config.networks.iter().map(|n| n.subnet).collect(),
        port: settings.port,
        own: config.own_networks().map(|n| n.gateway).collect(),
        takeovers: BTreeMap::new(),
        listeners: BTreeMap::new(),
        connections: crate::edge::tcp::Connections::new(metrics.clone()),
        leases: Leases::default(),
        bus: bus.clone(),
        published: None,
        shutdown: shutdown.clone(),
    };
    let mut dhcp = bus.subscribe(DHCP_PREFIX);
    let mut tick = tokio::time::interval(TICK);
    let mut ready = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = dhcp.recv() => match event {
                Some(BusEvent::Message(envelope)) => agent.on_dhcp(&envelope.topic, &envelope.body),
                Some(BusEvent::Lagged { missed }) => {
                    // Retained topics hold the current state: read it again. Leases whose end
                    // was missed still go when they expire.
                    tracing::warn!(missed, "missed DHCP events on the bus; reading them again");
                    dhcp = resubscribe(&bus, dhcp);
                }
                None => dhcp = resubscribe(&bus, dhcp),
            },
            _ = tick.tick() => {
                agent.state.uplinks.refresh();
                agent.listen();
                let ended = agent.leases.expire(fieldnet::bus::unix_millis());
                agent.apply(&ended, None);
                agent.publish();
                if !ready {
                    fieldnet::rt::ready(&health, &shutdown);
                    ready = true;
                }
            }
        }
    }
    for listener in std::mem::take(&mut agent.listeners).into_values() {
        listener.stop();
    }
    Ok(())
}

fn resubscribe(bus: &BusClient, old: Subscription) -> Subscription {
    drop(old);
    bus.subscribe(DHCP_PREFIX)
}

impl Agent {
    /// The addresses to listen on now: own gateways and taken-over ones.
    fn wanted(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self
            .own
            .iter()
            .chain(self.takeovers.values())
            .map(|gateway| SocketAddr::new(IpAddr::V4(*gateway), self.port))
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// Binds what is wanted and not bound yet; stops what is no longer wanted.
    fn listen(&mut self) {
        let wanted = self.wanted();
        let gone: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|address| !wanted.contains(address))
            .copied()
            .collect();
        for address in gone {
            if let Some(listener) = self.listeners.remove(&address) {
                listener.stop();
                tracing::info!(%address, "no longer answering DNS");
            }
        }
        for address in wanted {
            if self.listeners.contains_key(&address) {
                continue;
            }
            match listen(
                address,
                &self.state,
                &self.networks,
                &self.connections,
                &self.shutdown,
            ) {
                Ok(listener) => {
                    tracing::info!(%address, "answering DNS");
                    self.listeners.insert(address, listener);
                }
                Err(error) => {
                    tracing::warn!(%address, error = format!("{error:#}"), "cannot listen yet; trying again");
                }
            }
        }
    }

    /// A message under `dhcp/`: a lease, or a takeover.
    fn on_dhcp(&mut self, topic: &str, body: &serde_json::Value) {
        match DhcpMessage::parse(topic, body) {
            Ok(Some(DhcpMessage::Lease(address, lease))) => {
                let changes =
                    self.leases
                        .lease(address, lease.as_ref(), fieldnet::bus::unix_millis());
                self.apply(&changes, lease.as_ref().map(|l| l.mac.as_str()));
            }
            Ok(Some(DhcpMessage::Takeover(network, Some(takeover)))) => {
                tracing::info!(%network, gateway = %takeover.gateway, owner = takeover.owner, "network taken over; answering on its address");
                self.takeovers.insert(network, takeover.gateway);
            }
            Ok(Some(DhcpMessage::Takeover(network, None))) => {
                if self.takeovers.remove(&network).is_some() {
                    tracing::info!(%network, "network handed back; its address is dropped");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "ignoring a DHCP message on the bus"),
        }
    }

    /// Applies name changes to the views (`mac`: the client's, for the log).
    fn apply(&mut self, changes: &[NameChange], mac: Option<&str>) {
        if changes.is_empty() {
            return;
        }
        let mut views = self.state.views.write().unwrap_or_else(|p| p.into_inner());
        for change in changes {
            match change {
                NameChange::Add { label, address } => {
                    match views.add_lease(label, IpAddr::V4(*address)) {
                        Ok(true) => tracing::debug!(%label, %address, "client name added"),
                        Ok(false) => {
                            self.leases.refused(*address);
                            tracing::warn!(%label, %address, mac = mac.unwrap_or(""), "a DHCP client asked for a name that is fixed, blocked (wpad, isatap) or held by another device; not given");
                        }
                        Err(error) => {
                            self.leases.refused(*address);
                            tracing::warn!(%label, %error, "unusable client name");
                        }
                    }
                }
                NameChange::Remove { label, address } => {
                    let _ = views.remove_host(label, IpAddr::V4(*address));
                    tracing::debug!(%label, %address, "client name removed");
                }
            }
        }
        self.state.answers.views_changed();
    }

    fn dns_state(&self) -> topics::DnsState {
        let views = self.state.views.read().unwrap_or_else(|p| p.into_inner());
        let listening: Vec<IpAddr> = self.listeners.keys().map(SocketAddr::ip).collect();
        topics::DnsState {
            networks: network_roles(views.networks(), &self.own, &self.takeovers, &listening),
            upstreams: self.state.forwarder.upstreams(),
            local_names: views.local_names(),
        }
    }

    /// Publishes `dns/state` if it changed.
    fn publish(&mut self) {
        let state = self.dns_state();
        if self.published.as_ref() == Some(&state) {
            return;
        }
        if let Err(error) = self.bus.publish(topics::TOPIC_DNS_STATE, &state, true) {
            tracing::debug!(%error, "publishing dns/state");
            return;
        }
        self.published = Some(state);
    }
}

/// Serves `address`: UDP in a thread of ours ([`crate::edge::udp`]), TCP in a task
/// ([`crate::edge::tcp`]).
fn listen(
    address: SocketAddr,
    state: &Arc<State>,
    networks: &[ipnet::Ipv4Net],
    connections: &crate::edge::tcp::Connections,
    shutdown: &CancellationToken,
) -> anyhow::Result<Listener> {
    let udp = std::net::UdpSocket::bind(address)?;
    let tcp = std::net::TcpListener::bind(address)?;
    tcp.set_nonblocking(true)?;
    let tcp = TcpListener::from_std(tcp)?;
    let handler = Handler {
        state: Arc::clone(state),
    };
    let stop_tcp = shutdown.child_token();
    tokio::spawn(crate::edge::tcp::serve(
        tcp,
        handler.clone(),
        connections.clone(),
        stop_tcp.clone(),
    ));
    let udp = crate::edge::udp::spawn(
        udp,
        handler,
        networks.to_vec(),
        tokio::runtime::Handle::current(),
        shutdown.child_token(),
    )?;
    Ok(Listener { tcp: stop_tcp, udp })
}
