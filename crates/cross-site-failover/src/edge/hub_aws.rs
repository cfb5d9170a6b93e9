//! Hub mode's AWS side: the VPC route-table entries for the site networks follow the live hub,
//! the partner's Route53 switch follows its liveness, and tunnel health goes to CloudWatch.
//!
//! Works by reconciling: the wanted state comes from the agent (`HubView`), the real state is
//! read back from AWS, and only differences are written, so a call that failed (throttled,
//! timed out, refused) is simply made again on the next pass, and a change of mind while a call
//! was being retried is never overwritten by the stale one: the wanted state is re-read right
//! before every write. Only the standby writes routes (see `hub`).

use std::time::{Duration, Instant};

use fieldnet::config::{Config, HubMode, HubRole};
use fieldnet_aws::{AwsApi, AwsError, MetricDatum, RouteTarget};
use prometheus::{IntCounterVec, IntGauge, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::{HubView, RouteOwner};
use crate::tunnel::TunnelVerdict;

/// After a failed pass, the next one comes this soon (the client already retried each call).
const RETRY_PASS_AFTER: Duration = Duration::from_secs(1);

struct Metrics {
    calls: IntCounterVec,
    owner: IntGauge,
    partner_up: IntGauge,
}

impl Metrics {
    fn register(registry: &Registry) -> anyhow::Result<Self> {
        let m = fieldnet::obs::Metrics(registry);
        let calls = m.counters(
            "fieldnet_cross_site_aws_calls_total",
            "AWS calls by API action and outcome (after the client's own retries)",
            &["call", "outcome"],
        )?;
        let owner = m.gauge(
            "fieldnet_cross_site_route_owner_standby",
            "1 while this hub wants the VPC routes on the standby",
        )?;
        let partner_up = m.gauge(
            "fieldnet_cross_site_hub_partner_up",
            "1 while the partner hub counts as up",
        )?;
        Ok(Self {
            calls,
            owner,
            partner_up,
        })
    }

    fn outcome<T>(&self, call: &str, result: &Result<T, AwsError>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.calls.with_label_values(&[call, outcome]).inc();
    }
}

/// Starts the AWS task: the real client (credentials from the default chain), or with
/// `dry_run` one that logs every write instead of making it.
pub async fn spawn(
    config: &Config,
    hub: HubMode,
    dry_run: bool,
    view: watch::Receiver<HubView>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Metrics::register(registry)?;
    let destinations: Vec<String> = config
        .networks
        .iter()
        .map(|n| n.subnet.to_string())
        .collect();
    let name = config.appliance.name.clone();
    let mut client_config = fieldnet_aws::ClientConfig::new(hub.aws_region.clone());
    client_config.endpoint = hub.aws_endpoint.clone();
    let client = fieldnet_aws::Client::from_environment(client_config).await?;
    if dry_run {
        tracing::warn!("dry run: AWS writes are logged, not made");
        let api = fieldnet_aws::DryRun {
            inner: Some(client),
        };
        tokio::spawn(run(api, hub, name, destinations, view, metrics, shutdown));
    } else {
        tokio::spawn(run(
            client,
            hub,
            name,
            destinations,
            view,
            metrics,
            shutdown,
        ));
    }
    Ok(())
}

async fn run<A: AwsApi>(
    api: A,
    hub: HubMode,
    name: String,
    destinations: Vec<String>,
    mut view: watch::Receiver<HubView>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut state = Applied::default();
    let mut reconcile = tokio::time::interval(hub.reconcile_interval);
    let mut cloudwatch = tokio::time::interval(hub.cloudwatch_interval);
    let mut retry: Option<Instant> = None;
    let mut pending = true;
    loop {
        if pending {
            pending = false;
            match pass(&api, &hub, &destinations, &view, &metrics, &mut state).await {
                Ok(true) => {
                    retry = None;
                    state.decided = Some(decision(&view.borrow()));
                }
                // The wanted state changed during the pass: go again at once.
                Ok(false) => pending = true,
                Err(error) => {
                    tracing::warn!(error = %error, "AWS pass failed; trying again");
                    retry = Some(Instant::now() + RETRY_PASS_AFTER);
                }
            }
            if pending {
                continue;
            }
        }
        let retry_sleep = async {
            match retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = state.decided != Some(decision(&view.borrow()));
            }
            _ = reconcile.tick() => pending = true,
            () = retry_sleep => pending = true,
            _ = cloudwatch.tick() => {
                let current = view.borrow().clone();
                let data = metric_data(&name, &current);
                let result = api.put_metrics(&hub.cloudwatch_namespace, &data).await;
                metrics.outcome("PutMetricData", &result);
                if let Err(error) = result {
                    tracing::warn!(error = %error, "publishing tunnel metrics to CloudWatch");
                }
            }
        }
    }
}

/// What this hub last made true in Route53 (routes are read back every pass instead).
#[derive(Debug, Default)]
struct Applied {
    partner_inverted: Option<bool>,
    /// The decision the last complete pass carried out.
    decided: Option<(RouteOwner, bool)>,
}

/// One reconciling pass. `Ok(false)`: the wanted state changed under it.
async fn pass<A: AwsApi>(
    api: &A,
    hub: &HubMode,
    destinations: &[String],
    view: &watch::Receiver<HubView>,
    metrics: &Metrics,
    applied: &mut Applied,
) -> Result<bool, AwsError> {
    let wanted = view.borrow().clone();
    metrics
        .owner
        .set(i64::from(wanted.owner == RouteOwner::Standby));
    metrics.partner_up.set(i64::from(wanted.partner_up));

    if hub.role == HubRole::Standby && !hub.route_tables.is_empty() {
        let target = match wanted.owner {
            RouteOwner::Standby => &hub.instance_id,
            RouteOwner::Primary => &hub.partner_instance_id,
        };
        let routes = api.describe_routes(&hub.route_tables).await;
        metrics.outcome("DescribeRouteTables", &routes);
        let routes = routes?;
        for table in &hub.route_tables {
            for destination in destinations {
                let Some(route) = routes
                    .iter()
                    .find(|r| &r.route_table_id == table && &r.destination == destination)
                else {
                    tracing::error!(%table, %destination, "no route for a site network in this VPC route table (terraform creates them); not creating one");
                    continue;
                };
                if route.instance_id.as_ref() == Some(target) {
                    continue;
                }
                // Never write a stale wish: the view may have moved while calls were retried.
                if view.borrow().owner != wanted.owner {
                    return Ok(false);
                }
                let result = api
                    .replace_route(table, destination, &RouteTarget::Instance(target.clone()))
                    .await;
                metrics.outcome("ReplaceRoute", &result);
                result?;
                tracing::info!(
                    %table,
                    %destination,
                    from = route.instance_id.as_deref().unwrap_or("-"),
                    to = %target,
                    owner = %wanted.owner.as_str(),
                    "VPC route replaced"
                );
            }
        }
    }

    if let Some(check) = &hub.partner_health_check {
        let inverted = !wanted.partner_up;
        if applied.partner_inverted != Some(inverted) {
            if inverted && let Some(own) = &hub.own_health_check {
                let status = api.health_check_status(own).await;
                metrics.outcome("GetHealthCheckStatus", &status);
                match status {
                    Ok(status) if status.observers > 0 && !status.is_healthy() => tracing::warn!(
                        own_check = %own,
                        "this hub's own Route53 check is unhealthy too: with every check unhealthy Route53 answers with every value"
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(error = %error, "reading own health check status")
                    }
                }
            }
            let result = api.set_health_check_inverted(check, inverted).await;
            metrics.outcome("UpdateHealthCheck", &result);
            result?;
            applied.partner_inverted = Some(inverted);
            tracing::info!(
                health_check = %check,
                inverted,
                partner_up = wanted.partner_up,
                "Route53 switch of the partner hub set"
            );
        }
    }
    Ok(decision(&view.borrow()) == decision(&wanted))
}

/// The part of the view AWS state depends on (tunnel reports only feed CloudWatch).
fn decision(view: &HubView) -> (RouteOwner, bool) {
    (view.owner, view.partner_up)
}

/// CloudWatch data for one collection: tunnels up, per-tunnel connectivity and latency, the
/// partner, and whether the collection itself worked.
pub fn metric_data(hub_name: &str, view: &HubView) -> Vec<MetricDatum> {
    let hub_dimension = ("Hub".to_owned(), hub_name.to_owned());
    let datum = |name: &str, value: f64, unit: &str, extra: Option<(&str, &str)>| {
        let mut dimensions = vec![hub_dimension.clone()];
        if let Some((key, value)) = extra {
            dimensions.push((key.to_owned(), value.to_owned()));
        }
        MetricDatum {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            dimensions,
        }
    };
    let up = view
        .tunnels
        .iter()
        .filter(|t| t.verdict == TunnelVerdict::Healthy)
        .count();
    let mut data = vec![
        datum("TunnelsUp", up as f64, "Count", None),
        datum(
            "PartnerHubUp",
            f64::from(u8::from(view.partner_up)),
            "Count",
            None,
        ),
        datum(
            "CollectionSuccess",
            f64::from(u8::from(view.tunnels.iter().all(|t| t.collected))),
            "Count",
            None,
        ),
    ];
    for tunnel in &view.tunnels {
        let which = Some(("Tunnel", tunnel.peer.as_str()));
        data.push(datum(
            "TunnelConnectivity",
            f64::from(u8::from(tunnel.verdict == TunnelVerdict::Healthy)),
            "Count",
            which,
        ));
        if let Some(rtt) = tunnel.rtt {
            data.push(datum(
                "TunnelLatency",
                rtt.as_secs_f64() * 1000.0,
                "Milliseconds",
                which,
            ));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use fieldnet_aws::{HealthCheckStatus, RouteEntry};

    use super::*;
    use crate::hub::TunnelReport;

    /// AWS as a few maps; can fail the next writes, or change the wanted state mid-pass.
    #[derive(Default)]
    struct FakeAws {
        state: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        routes: Vec<RouteEntry>,
        inverted: HashMap<String, bool>,
        writes: Vec<String>,
        fail_writes: u32,
        on_describe: Option<(watch::Sender<HubView>, HubView)>,
    }

    impl FakeAws {
        fn with_routes(tables: &[&str], destinations: &[&str], instance: &str) -> Self {
            let fake = FakeAws::default();
            for table in tables {
                for destination in destinations {
                    fake.state.lock().unwrap().routes.push(RouteEntry {
                        route_table_id: (*table).to_owned(),
                        destination: (*destination).to_owned(),
                        instance_id: Some(instance.to_owned()),
                        network_interface_id: None,
                        gateway_id: None,
                        state: Some("active".to_owned()),
                    });
                }
            }
            fake
        }

        fn targets(&self) -> Vec<String> {
            let state = self.state.lock().unwrap();
            state
                .routes
                .iter()
                .map(|r| r.instance_id.clone().unwrap_or_default())
                .collect()
        }

        fn write(&self, what: String) -> Result<(), AwsError> {
            let mut state = self.state.lock().unwrap();
            if state.fail_writes > 0 {
                state.fail_writes -= 1;
                return Err(AwsError::Api {
                    service: "ec2",
                    action: what,
                    status: 400,
                    code: "Throttling".to_owned(),
                    message: "Rate exceeded".to_owned(),
                    request_id: None,
                });
            }
            state.writes.push(what);
            Ok(())
        }
    }

    impl AwsApi for FakeAws {
        async fn describe_routes(&self, tables: &[String]) -> Result<Vec<RouteEntry>, AwsError> {
            let mut state = self.state.lock().unwrap();
            if let Some((sender, next)) = state.on_describe.take() {
                sender.send_replace(next);
            }
            Ok(state
                .routes
                .iter()
                .filter(|r| tables.contains(&r.route_table_id))
                .cloned()
                .collect())
        }

        async fn replace_route(
            &self,
            table: &str,
            destination: &str,
            target: &RouteTarget,
        ) -> Result<(), AwsError> {
            self.write(format!("ReplaceRoute {table} {destination} {target:?}"))?;
            let RouteTarget::Instance(instance) = target else {
                panic!("hub routes point at instances")
            };
            let mut state = self.state.lock().unwrap();
            for route in &mut state.routes {
                if route.route_table_id == table && route.destination == destination {
                    route.instance_id = Some(instance.clone());
                }
            }
            Ok(())
        }

        async fn set_health_check_inverted(
            &self,
            id: &str,
            inverted: bool,
        ) -> Result<(), AwsError> {
            self.write(format!("UpdateHealthCheck {id} {inverted}"))?;
            self.state
                .lock()
                .unwrap()
                .inverted
                .insert(id.to_owned(), inverted);
            Ok(())
        }

        async fn health_check_status(&self, _id: &str) -> Result<HealthCheckStatus, AwsError> {
            Ok(HealthCheckStatus {
                observers: 3,
                healthy: 3,
            })
        }

        async fn put_metrics(&self, _ns: &str, data: &[MetricDatum]) -> Result<(), AwsError> {
            self.write(format!("PutMetricData {}", data.len()))
        }
    }

    const DESTINATIONS: [&str; 2] = ["10.101.0.0/24", "10.102.0.0/24"];

    fn hub_mode(role: HubRole) -> HubMode {
        HubMode {
            role,
            interface: "eth0".to_owned(),
            local: "203.0.113.11".parse().unwrap(),
            partner: "203.0.113.10".parse().unwrap(),
            takeover_after: Duration::from_secs(1),
            giveback_hold: Duration::from_secs(30),
            aws_region: "eu-west-1".to_owned(),
            aws_endpoint: None,
            route_tables: vec!["rtb-a".to_owned(), "rtb-b".to_owned()],
            instance_id: "i-standby".to_owned(),
            partner_instance_id: "i-primary".to_owned(),
            partner_health_check: Some("hc-partner".to_owned()),
            own_health_check: Some("hc-own".to_owned()),
            cloudwatch_namespace: "fieldnet".to_owned(),
            cloudwatch_interval: Duration::from_secs(60),
            reconcile_interval: Duration::from_secs(30),
        }
    }

    fn view(owner: RouteOwner, partner_up: bool) -> HubView {
        HubView {
            partner_up,
            owner,
            tunnels: Vec::new(),
        }
    }

    fn destinations() -> Vec<String> {
        DESTINATIONS.iter().map(|d| (*d).to_owned()).collect()
    }

    async fn run_pass(
        fake: &FakeAws,
        hub: &HubMode,
        receiver: &watch::Receiver<HubView>,
        applied: &mut Applied,
    ) -> Result<bool, AwsError> {
        let metrics = Metrics::register(&Registry::new()).unwrap();
        pass(fake, hub, &destinations(), receiver, &metrics, applied).await
    }

    #[tokio::test]
    async fn the_standby_moves_every_route_to_itself_and_back_and_writes_only_differences() {
        let fake = FakeAws::with_routes(&["rtb-a", "rtb-b"], &DESTINATIONS, "i-primary");
        let hub = hub_mode(HubRole::Standby);
        let (sender, receiver) = watch::channel(view(RouteOwner::Standby, false));
        let mut applied = Applied::default();
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-standby"; 4]);
        assert!(fake.state.lock().unwrap().inverted["hc-partner"]);
        let writes = fake.state.lock().unwrap().writes.len();
        assert_eq!(writes, 5, "4 routes and the partner's switch");

        // Nothing differs: a second pass writes nothing.
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.state.lock().unwrap().writes.len(), writes);

        sender.send_replace(view(RouteOwner::Primary, true));
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-primary"; 4]);
        assert!(!fake.state.lock().unwrap().inverted["hc-partner"]);
    }

    #[tokio::test]
    async fn a_failed_write_is_made_again_by_the_next_pass() {
        let fake = FakeAws::with_routes(&["rtb-a"], &DESTINATIONS, "i-primary");
        fake.state.lock().unwrap().fail_writes = 1;
        let hub = hub_mode(HubRole::Standby);
        let (_sender, receiver) = watch::channel(view(RouteOwner::Standby, false));
        let mut applied = Applied::default();
        let error = run_pass(&fake, &hub, &receiver, &mut applied)
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert_eq!(fake.targets(), vec!["i-primary"; 2]);
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-standby"; 2]);
    }

    #[tokio::test]
    async fn a_wish_that_changed_during_the_pass_is_never_written() {
        let fake = FakeAws::with_routes(&["rtb-a"], &DESTINATIONS, "i-primary");
        let hub = hub_mode(HubRole::Standby);
        let (sender, receiver) = watch::channel(view(RouteOwner::Standby, false));
        // The primary comes back while the route tables are being read.
        fake.state.lock().unwrap().on_describe = Some((sender, view(RouteOwner::Primary, true)));
        let mut applied = Applied::default();
        assert!(
            !run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-primary"; 2]);
        assert!(fake.state.lock().unwrap().writes.is_empty());
        // The next pass acts on the new wish, which the routes already match.
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-primary"; 2]);
    }

    #[tokio::test]
    async fn the_primary_never_writes_routes_but_switches_its_partner_off() {
        let fake = FakeAws::with_routes(&["rtb-a"], &DESTINATIONS, "i-standby");
        let hub = hub_mode(HubRole::Primary);
        let (_sender, receiver) = watch::channel(view(RouteOwner::Primary, false));
        let mut applied = Applied::default();
        assert!(
            run_pass(&fake, &hub, &receiver, &mut applied)
                .await
                .unwrap()
        );
        assert_eq!(fake.targets(), vec!["i-standby"; 2]);
        assert!(fake.state.lock().unwrap().inverted["hc-partner"]);
    }

    #[test]
    fn cloudwatch_data_counts_tunnels_and_shows_a_failed_collection() {
        let tunnel = |peer: &str, verdict, collected| TunnelReport {
            interface: format!("wg-{peer}"),
            peer: peer.to_owned(),
            verdict,
            rtt: Some(Duration::from_millis(12)),
            collected,
        };
        let mut current = view(RouteOwner::Primary, true);
        current.tunnels = vec![
            tunnel("a1", TunnelVerdict::Healthy, true),
            tunnel("a2", TunnelVerdict::DataPlaneDown, true),
        ];
        let data = metric_data("hub-a", &current);
        let value = |name: &str, tunnel: Option<&str>| {
            data.iter()
                .find(|d| {
                    d.name == name
                        && tunnel.is_none_or(|t| d.dimensions.iter().any(|(_, v)| v == t))
                })
                .map(|d| d.value)
        };
        assert_eq!(value("TunnelsUp", None), Some(1.0));
        assert_eq!(value("CollectionSuccess", None), Some(1.0));
        assert_eq!(value("TunnelConnectivity", Some("a2")), Some(0.0));
        assert_eq!(value("TunnelLatency", Some("a1")), Some(12.0));
        current.tunnels[1].collected = false;
        let data = metric_data("hub-a", &current);
        let success = data.iter().find(|d| d.name == "CollectionSuccess").unwrap();
        assert_eq!(success.value, 0.0);
    }
}
