//! The agent: the metadata address on the LAN interfaces, HTTP on it, and one loop that feeds
//! the pure parts. From the bus: leases (`dhcp/lease/<address>`: a new device's session is
//! fetched at once), networks taken over (`dhcp/takeover/<network>`: served too, the address
//! put on their interface), devices forgotten (`imds/forget/<mac>`). To STS: the fetches the
//! sessions machine says are due, at most [`FETCHES_IN_FLIGHT`] at once, each one attempt
//! bounded by [`STS_TIMEOUT`] (the machine backs off). To the bus: `imds/state`.
//!
//! Invariant: STS is never called on a device's request path; the cache file is written after
//! every change of sessions (at most once a [`TICK`]) and read at start, so a restart during an
//! outage serves again as soon as the listener is up.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fieldnet::bus::topics::{
    self, DeviceForgotten, ImdsClass, ImdsState, Lease, StsHealth, TOPIC_IMDS_FORGET,
};
use fieldnet::bus::{BusClient, BusEvent, Subscription};
use fieldnet::config::{Config, IMDS_ADDRESS, ImdsEndpointConfig};
use fieldnet::rt::AgentContext;
use fieldnet_aws::{AssumeRole, Client, ClientConfig};
use tokio::sync::mpsc;

use super::http::{self, Shared};
use super::kernel;
use super::metrics::Metrics;
use super::store;
use crate::cache::CacheFile;
use crate::identity::{Identity, Mac};
use crate::protocol::Imds;
use crate::sessions::{Credentials, Sessions, Subject};

const TICK: Duration = Duration::from_secs(1);
pub const FETCHES_IN_FLIGHT: usize = 4;
pub const STS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the appliance's own credentials are looked for while there are none.
const STS_RETRY: Duration = Duration::from_secs(30);

/// A fetch's answer: the subject and the session, if STS gave one.
type Fetched = (Subject, Option<Credentials>);

pub async fn run(context: AgentContext) -> anyhow::Result<()> {
    let AgentContext {
        config,
        registry,
        health,
        shutdown,
        bus,
    } = context;
    let settings = config.agents.imds_endpoint.clone();
    let metrics = Metrics::register(&registry)?;
    let now = fieldnet::bus::unix_millis();

    let mut identity = Identity::from_config(&config);
    let mut sessions = Sessions::from_config(&settings, &config.appliance.name);
    if let Some(file) = store::load(&settings.cache) {
        sessions.restore(file.sessions, now);
        for mac in file.forgotten {
            identity.forget(mac, true);
        }
        tracing::info!(
            cache = %settings.cache.display(),
            devices = sessions.device_count(),
            "sessions taken back from the cache"
        );
    }
    let imds = Imds::new(&settings, identity, sessions);

    let handle = fieldnet::net::connect()?;
    kernel::hold_address(&handle, IMDS_ADDRESS, &own_interfaces(&config)).await?;
    let neighbours = kernel::mirror_neighbours(shutdown.clone()).await?;
    let address = SocketAddr::from((IMDS_ADDRESS, settings.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    if let Err(error) = http::defer_accept(&listener) {
        tracing::warn!(%error, "TCP_DEFER_ACCEPT refused; connections are taken at once");
    }
    let shared = Arc::new(Shared::new(imds, neighbours, metrics.clone()));
    tokio::spawn(http::serve(listener, Arc::clone(&shared), shutdown.clone()));
    tracing::info!(%address, roles = settings.roles.len(), "serving instance metadata");
    fieldnet::rt::ready(&health, &shutdown);

    let mut agent = Agent {
        config: config.clone(),
        settings: settings.clone(),
        shared,
        metrics,
        bus: bus.clone(),
        handle,
        client: None,
        last_connect: None,
        in_flight: 0,
        dirty: false,
        sts: StsHealth::Unknown,
        last_sts_answer: None,
        published: None,
    };
    let (fetched_tx, mut fetched) = mpsc::unbounded_channel::<Fetched>();
    let mut dhcp = bus.subscribe(DHCP_PREFIX);
    let mut forget = bus.subscribe(TOPIC_IMDS_FORGET);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = dhcp.recv() => match event {
                Some(BusEvent::Message(envelope)) => agent.on_dhcp(&envelope.topic, &envelope.body).await,
                _ => dhcp = resubscribe(&bus, dhcp, DHCP_PREFIX),
            },
            event = forget.recv() => match event {
                Some(BusEvent::Message(envelope)) => agent.on_forget(&envelope.topic, &envelope.body),
                _ => forget = resubscribe(&bus, forget, TOPIC_IMDS_FORGET),
            },
            Some((subject, result)) = fetched.recv() => {
                agent.in_flight -= 1;
                agent.on_fetched(&subject, result);
            }
            _ = tick.tick() => {
                agent.tick();
            }
        }
        agent.start_fetches(&fetched_tx).await;
    }
    agent.save();
    Ok(())
}

const DHCP_PREFIX: &str = "dhcp/";

fn resubscribe(bus: &BusClient, old: Subscription, prefix: &str) -> Subscription {
    drop(old);
    bus.subscribe(prefix)
}

/// The interfaces of this appliance's own networks.
fn own_interfaces(config: &Config) -> Vec<String> {
    config
        .networks
        .iter()
        .filter(|network| network.area == config.appliance.area)
        .filter_map(|network| network.interface.clone())
        .collect()
}

struct Agent {
    config: Config,
    settings: ImdsEndpointConfig,
    shared: Arc<Shared>,
    metrics: Metrics,
    bus: BusClient,
    handle: rtnetlink::Handle,
    client: Option<Client>,
    /// When the credential chain was last asked.
    last_connect: Option<std::time::Instant>,
    in_flight: usize,
    /// Sessions changed since the cache was last written.
    dirty: bool,
    sts: StsHealth,
    last_sts_answer: Option<u64>,
    published: Option<ImdsState>,
}

impl Agent {
    async fn on_dhcp(&mut self, topic: &str, body: &serde_json::Value) {
        if let Some(address) = topic.strip_prefix(topics::TOPIC_DHCP_LEASES) {
            let Ok(address) = address.parse::<Ipv4Addr>() else {
                return;
            };
            let lease: Option<Lease> = if body.is_null() {
                None
            } else {
                match serde_json::from_value(body.clone()) {
                    Ok(lease) => Some(lease),
                    Err(error) => {
                        tracing::warn!(topic, %error, "unreadable lease");
                        return;
                    }
                }
            };
            let mut imds = self.shared.imds();
            if let Some((mac, name)) = imds.identity.lease(address, lease.as_ref()) {
                let class = imds.identity.class_of(mac).map(str::to_owned);
                if !imds.identity.is_forgotten(mac) {
                    imds.sessions.device(mac, class.as_deref(), &name);
                }
            }
        } else if let Some(network) = topic.strip_prefix(topics::TOPIC_DHCP_TAKEOVERS) {
            let taken = !body.is_null();
            self.shared.imds().identity.taken(network, taken);
            let interface = self
                .config
                .networks
                .iter()
                .find(|known| known.name == network)
                .and_then(|known| known.interface.clone());
            if taken
                && let Some(interface) = interface
                && let Err(error) =
                    kernel::hold_address(&self.handle, IMDS_ADDRESS, &[interface]).await
            {
                tracing::warn!(network, error = %format!("{error:#}"), "cannot serve the taken network's devices");
            }
            tracing::info!(network, taken, "serving a taken-over network's devices");
        }
    }

    fn on_forget(&mut self, topic: &str, body: &serde_json::Value) {
        let Some(mac) = topic
            .strip_prefix(TOPIC_IMDS_FORGET)
            .and_then(|mac| mac.parse::<Mac>().ok())
        else {
            tracing::warn!(topic, "not a MAC in a forget topic");
            return;
        };
        let forgotten = serde_json::from_value::<DeviceForgotten>(body.clone()).is_ok();
        let mut imds = self.shared.imds();
        imds.identity.forget(mac, forgotten);
        if forgotten {
            imds.sessions.remove(mac);
            tracing::warn!(%mac, "device forgotten: no longer served");
        } else {
            tracing::info!(%mac, "device remembered again");
            if let Some(name) = imds.identity.leased_name(mac) {
                let class = imds.identity.class_of(mac).map(str::to_owned);
                imds.sessions.device(mac, class.as_deref(), &name);
            }
        }
        self.dirty = true;
    }

    fn on_fetched(&mut self, subject: &Subject, result: Option<Credentials>) {
        let now = fieldnet::bus::unix_millis();
        let ok = result.is_some();
        self.metrics
            .sts_calls
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.sts = if ok {
            StsHealth::Ok
        } else {
            StsHealth::Failing
        };
        if ok {
            self.last_sts_answer = Some(now);
        }
        if self.shared.imds().sessions.fetched(now, subject, result) {
            self.dirty = true;
        }
    }

    async fn start_fetches(&mut self, sender: &mpsc::UnboundedSender<Fetched>) {
        if self.in_flight >= FETCHES_IN_FLIGHT {
            return;
        }
        let now = fieldnet::bus::unix_millis();
        if self.client.is_none() {
            // Only when a fetch is due, and at most every STS_RETRY: a chain without
            // credentials is not asked again and again.
            let due = self
                .shared
                .imds()
                .sessions
                .next_due()
                .is_some_and(|at| at <= now);
            if !due || self.last_connect.is_some_and(|at| at.elapsed() < STS_RETRY) {
                return;
            }
            self.last_connect = Some(std::time::Instant::now());
            self.client = self.connect_sts().await;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let due = self
            .shared
            .imds()
            .sessions
            .due(now, FETCHES_IN_FLIGHT - self.in_flight);
        for fetch in due {
            self.in_flight += 1;
            let client = client.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let request = AssumeRole {
                    role_arn: fetch.role_arn.clone(),
                    session_name: fetch.session_name.clone(),
                    source_identity: Some(fetch.source_identity.clone()),
                    duration: fetch.duration,
                };
                let result = match client.assume_role(&request).await {
                    Ok(session) => Some(Credentials {
                        access_key_id: session.access_key_id,
                        secret_access_key: session.secret_access_key,
                        session_token: session.session_token,
                        expiration: millis_of(session.expiration),
                        issued: fieldnet::bus::unix_millis(),
                        rendered: Default::default(),
                    }),
                    Err(error) => {
                        tracing::warn!(subject = ?fetch.subject, role = fetch.role_arn, %error, "STS AssumeRole failed");
                        None
                    }
                };
                let _ = sender.send((fetch.subject, result));
            });
        }
    }

    /// The STS client with the appliance's own credentials; `None` (said, and tried again next
    /// time) while the credential chain has none.
    async fn connect_sts(&self) -> Option<Client> {
        let config = ClientConfig {
            endpoint: self.settings.aws_endpoint.clone(),
            attempt_timeout: STS_TIMEOUT,
            max_attempts: 1,
            ..ClientConfig::new(self.settings.aws_region.clone())
        };
        match Client::from_environment(config).await {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "no credentials of the appliance's own for STS yet");
                None
            }
        }
    }

    fn tick(&mut self) {
        let now = fieldnet::bus::unix_millis();
        let state = {
            let mut imds = self.shared.imds();
            imds.tokens.sweep(now);
            imds.limits.sweep(now);
            self.metrics.tokens.set(imds.tokens.count() as i64);
            self.metrics
                .devices
                .set(imds.sessions.device_count() as i64);
            let runways = imds.sessions.runways(now);
            for (class, runway) in &runways {
                self.metrics
                    .runway_seconds
                    .with_label_values(&[class])
                    .set(runway.as_secs_f64());
            }
            let runway = runways.values().min().copied();
            self.metrics
                .runway_seconds
                .with_label_values(&["all"])
                .set(runway.map_or(0.0, |runway| runway.as_secs_f64()));
            ImdsState {
                // Whole minutes, so the state changes at most once a minute while all is well.
                runway_s: runway.map(|runway| runway.as_secs() / 60 * 60),
                classes: self
                    .settings
                    .roles
                    .iter()
                    .map(|role| ImdsClass {
                        class: role.class.clone(),
                        role: role.role_name().to_owned(),
                        runway_s: runways
                            .get(&role.class)
                            .map_or(0, |runway| runway.as_secs() / 60 * 60),
                        reserve_expires: imds.sessions.reserve_expiration(&role.class),
                    })
                    .collect(),
                devices: imds.sessions.device_count(),
                sts: self.sts,
                last_sts_answer: self.last_sts_answer,
            }
        };
        if self.dirty {
            self.save();
        }
        if self.published.as_ref() != Some(&state) {
            match self.bus.publish(topics::TOPIC_IMDS_STATE, &state, true) {
                Ok(()) => self.published = Some(state),
                Err(error) => tracing::warn!(%error, "cannot publish imds/state"),
            }
        }
    }

    fn save(&mut self) {
        let file = {
            let imds = self.shared.imds();
            CacheFile::new(
                fieldnet::bus::unix_millis(),
                imds.sessions.snapshot(),
                imds.identity.forgotten().collect(),
            )
        };
        match store::save(&self.settings.cache, &file) {
            Ok(()) => self.dirty = false,
            Err(error) => tracing::warn!(
                cache = %self.settings.cache.display(),
                error = %format!("{error:#}"),
                "cannot write the credentials cache"
            ),
        }
    }
}

fn millis_of(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
