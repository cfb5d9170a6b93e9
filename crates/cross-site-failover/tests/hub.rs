//! Hub mode on a real lab site against moto's server as AWS: two appliances with WireGuard
//! tunnels to the primary hub, a standby hub beside it on the "internet", moto on a lab
//! address both hubs reach, and the standby's AWS calls passing a proxy that throttles every
//! other request. The primary is killed and restarted; the VPC routes and the Route53 switch
//! follow, and CloudWatch receives the tunnel metrics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fieldnet::bus::topics::{self, HubRoutes, RouteOwner, TunnelState, TunnelVerdict};
use fieldnet_aws::testing::fixtures::{first_text, health_check_request, route_fixture};
use fieldnet_aws::testing::{FaultProxy, Faults, MOTO_SERVER_PROGRAM, MotoServer};
use fieldnet_aws::{AwsApi, Client, ClientConfig, Service};
use lab::{BusWatch, INTERNET_BRIDGE, Lab, LabProcess, Netns, SiteSpec};

const PATIENCE: Duration = Duration::from_secs(30);
const MOTO: &str = "203.0.113.1:5000";
const REGION: &str = "us-east-1";
const NETWORKS: [&str; 2] = ["10.101.0.0/24", "10.102.0.0/24"];

/// Waits on the bus at `socket` for `hub/routes` to hold what `wanted` asks.
fn wait_hub(socket: &Path, what: &str, wanted: impl Fn(&HubRoutes) -> bool) {
    BusWatch::subscribe(socket, topics::TOPIC_HUB_ROUTES, PATIENCE)
        .and_then(|mut watch| {
            watch.wait_for::<HubRoutes>(what, PATIENCE, |_, routes| wanted(routes))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Waits on the bus at `socket` for `tunnel/<interface>` to be judged healthy.
fn wait_healthy(socket: &Path, interface: &str) {
    BusWatch::subscribe(socket, &topics::tunnel_topic(interface), PATIENCE)
        .and_then(|mut watch| {
            watch.wait_for::<TunnelState>(&format!("{interface} healthy"), PATIENCE, |_, state| {
                state.interface == interface && state.verdict == TunnelVerdict::Healthy
            })
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The bus broker of the machine `name` (a hub or an appliance), from the site file.
fn start_broker(lab: &mut Lab, ns: &Netns, config: &str, name: &str) -> LabProcess {
    let binary = lab::sibling_binary(
        env!("CARGO_BIN_EXE_cross-site-failover"),
        "fieldnet-bus",
        "fieldnet-bus",
    );
    lab.spawn(ns, &binary, &["--config", config, "--appliance", name])
        .unwrap()
}

/// Runs `calls` against moto from inside `ns` (the test's own namespace cannot reach it).
fn aws<T: Send + 'static, F: Future<Output = T>>(
    ns: &Netns,
    calls: impl FnOnce(Client) -> F + Send + 'static,
) -> T {
    ns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = ClientConfig {
            endpoint: Some(format!("http://{MOTO}")),
            ..ClientConfig::new(REGION)
        };
        runtime.block_on(calls(Client::with_static_credentials(
            config, "testing", "testing", None,
        )))
    })
    .unwrap()
}

/// Where the site networks' routes point, and each hub's switch (`Inverted`).
fn aws_state(ns: &Netns, table: &str, checks: [&str; 2]) -> (Vec<String>, [String; 2]) {
    let (table, checks) = (table.to_owned(), checks.map(str::to_owned));
    aws(ns, move |client| async move {
        let routes = client.describe_routes(&[table]).await.unwrap();
        let mut targets: Vec<String> = NETWORKS
            .iter()
            .map(|network| {
                routes
                    .iter()
                    .find(|r| r.destination == *network)
                    .and_then(|r| r.instance_id.clone())
                    .unwrap_or_default()
            })
            .collect();
        targets.dedup();
        let mut inverted = [String::new(), String::new()];
        for (slot, check) in inverted.iter_mut().zip(&checks) {
            let body = client
                .rest_xml(
                    Service::Route53,
                    reqwest::Method::GET,
                    &format!("/2013-04-01/healthcheck/{check}"),
                    None,
                )
                .await
                .unwrap();
            *slot = first_text(&body, "Inverted");
        }
        (targets, inverted)
    })
}

/// A hub's agent (hub-a or hub-b of the site file), with moto's test credentials in its
/// environment.
fn start_hub(lab: &mut Lab, ns: &Netns, config: &str, name: &str) -> LabProcess {
    let binary = env!("CARGO_BIN_EXE_cross-site-failover");
    let args = [
        "AWS_ACCESS_KEY_ID=testing",
        "AWS_SECRET_ACCESS_KEY=testing",
        "AWS_EC2_METADATA_DISABLED=true",
        binary,
        "--config",
        config,
        "--appliance",
        name,
    ];
    lab.spawn(ns, "env", &args).unwrap()
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_standby_hub_takes_the_vpc_routes_and_switches_when_the_primary_dies_and_gives_them_back() {
    if !MotoServer::available() {
        assert_ne!(
            std::env::var(lab::LAB_REQUIRED_ENV).as_deref(),
            Ok("1"),
            "moto_server is missing: pip install 'moto[server]'"
        );
        eprintln!("moto_server unavailable; skipping");
        return;
    }
    let Some(mut lab) = Lab::for_test("csf-hub") else {
        return;
    };
    let site = lab
        .site(&SiteSpec {
            areas: 2,
            uplinks_per_area: 1,
            clients_per_area: 0,
            hub: true,
            vpn: true,
        })
        .unwrap();
    let hub_a = site.hub.clone().unwrap();
    let hub_b = lab.netns("hub-b").unwrap();
    lab.veth(&hub_b, "eth0", &site.internet, "hub-b").unwrap();
    lab.enslave(&site.internet, "hub-b", INTERNET_BRIDGE)
        .unwrap();
    lab.addr(&hub_b, "eth0", "203.0.113.11/24").unwrap();
    hub_b
        .ip(&[
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
            "dev",
            "eth0",
        ])
        .unwrap();

    // moto, as AWS, on the internet's hub-side gateway address.
    let (host, port) = MOTO.split_once(':').unwrap();
    let moto = lab
        .spawn(
            &site.internet,
            MOTO_SERVER_PROGRAM,
            &["-H", host, "-p", port],
        )
        .unwrap();
    site.internet
        .run(|| {
            let deadline = Instant::now() + PATIENCE;
            while std::net::TcpStream::connect(MOTO).is_err() {
                assert!(Instant::now() < deadline, "moto never listened");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .unwrap();
    let (fixture, checks) = aws(&site.internet, |client| async move {
        let fixture = route_fixture(&client, &NETWORKS).await;
        let mut checks = Vec::new();
        for reference in ["hub-a", "hub-b"] {
            let created = client
                .rest_xml(
                    Service::Route53,
                    reqwest::Method::POST,
                    "/2013-04-01/healthcheck",
                    Some(health_check_request(reference)),
                )
                .await
                .unwrap();
            checks.push(first_text(&created, "Id"));
        }
        (fixture, checks)
    });
    let checks = [checks[0].as_str(), checks[1].as_str()];
    let state = || aws_state(&site.internet, &fixture.route_table, checks);
    assert_eq!(
        state().0,
        vec![fixture.instance_a.clone()],
        "{}",
        moto.log()
    );

    // The standby's AWS calls pass a proxy that throttles every other request.
    // It listens on the standby's loopback: started from inside that namespace.
    let proxy = hub_b
        .run(|| {
            FaultProxy::start(
                &format!("http://{MOTO}"),
                Faults {
                    throttle_every: Some(2),
                    ..Faults::default()
                },
            )
        })
        .unwrap()
        .unwrap();

    // One site file for both hubs and both appliances; the hubs' AWS side is moto, the
    // standby's reached through the throttling proxy.
    let config = lab::SiteFile::new(&site, lab.dir())
        .hubs(lab::HubSettings {
            aws_region: REGION.to_owned(),
            route_tables: vec![fixture.route_table.clone()],
            instance_ids: [fixture.instance_a.clone(), fixture.instance_b.clone()],
            health_checks: [Some(checks[0].to_owned()), Some(checks[1].to_owned())],
            aws_endpoints: [Some(format!("http://{MOTO}")), Some(proxy.endpoint())],
            keys: "takeover_after_ms = 1000\ngiveback_hold_ms = 3000\ncloudwatch_interval_ms = 1000\nreconcile_interval_ms = 2000\n".to_owned(),
        })
        .write()
        .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let [hub_a_name, hub_b_name] = lab::HUB_NAMES;
    let hub_socket = |name: &str| -> PathBuf { lab.dir().join(format!("bus-{name}.sock")) };
    let (primary_bus, standby_bus) = (hub_socket(hub_a_name), hub_socket(hub_b_name));
    // Every machine runs its broker; the facts waited on below are read from it.
    let mut brokers = vec![
        start_broker(&mut lab, &hub_a, &config, hub_a_name),
        start_broker(&mut lab, &hub_b, &config, hub_b_name),
    ];
    for area in &site.areas {
        brokers.push(start_broker(
            &mut lab,
            &area.appliance,
            &config,
            &lab::appliance_name(area.id),
        ));
    }
    let primary = start_hub(&mut lab, &hub_a, &config, hub_a_name);
    let standby = start_hub(&mut lab, &hub_b, &config, hub_b_name);
    let binary = env!("CARGO_BIN_EXE_cross-site-failover");
    let mut appliances = Vec::new();
    for area in &site.areas {
        appliances.push(
            lab.spawn(
                &area.appliance,
                binary,
                &[
                    "--config",
                    &config,
                    "--appliance",
                    &lab::appliance_name(area.id),
                ],
            )
            .unwrap(),
        );
    }

    // The primary routes each area into its own appliance's tunnel, and judges the tunnels
    // healthy in all three layers; so do the appliances theirs.
    for area in &site.areas {
        let vpn = area.vpn.as_ref().unwrap();
        // (An area may first ride the other tunnel, if the other appliance answered first.)
        wait_hub(
            &primary_bus,
            &format!("area {} routed", area.id),
            |routes| routes.areas.iter().any(|known| known.area == area.id),
        );
        wait_healthy(&primary_bus, &vpn.hub_ifname);
        let own_tunnel = format!("via {} dev {} proto 202", vpn.addr, vpn.hub_ifname);
        eventually(
            &format!("area {} routed into its own tunnel", area.id),
            || {
                let route = hub_a.ip_output(&["route", "show", &area.network]).unwrap();
                route.contains(&own_tunnel)
            },
        );
    }
    for area in &site.areas {
        let vpn = area.vpn.as_ref().unwrap();
        wait_healthy(&lab::bus_socket(lab.dir(), area.id), &vpn.ifname);
    }
    wait_hub(&standby_bus, "the primary up", |routes| routes.partner_up);

    // CloudWatch receives the primary's tunnel metrics.
    let namespace_metrics = || {
        aws(&site.internet, |client| async move {
            let listed = client
                .query(
                    Service::CloudWatch,
                    "ListMetrics",
                    &[("Namespace".to_owned(), "fieldnet".to_owned())],
                )
                .await
                .unwrap();
            fieldnet_aws::testing::fixtures::all_texts(&listed, "MetricName")
        })
    };
    eventually("tunnel metrics in CloudWatch", || {
        let names = namespace_metrics();
        [
            "TunnelsUp",
            "TunnelConnectivity",
            "TunnelLatency",
            "CollectionSuccess",
        ]
        .iter()
        .all(|name| names.iter().any(|n| n == name))
    });

    // The primary dies: after the takeover time the standby points the routes at itself and
    // switches the primary's endpoint off, through the throttling proxy.
    // (The whole machine: its broker goes too, and comes back with it.)
    primary.kill().unwrap();
    brokers[0].kill().unwrap();
    wait_hub(
        &standby_bus,
        "the primary down, routes to the standby",
        |routes| !routes.partner_up && routes.owner == RouteOwner::Standby,
    );
    eventually("routes on the standby, primary switched off", || {
        state()
            == (
                vec![fixture.instance_b.clone()],
                ["true".to_owned(), "false".to_owned()],
            )
    });
    assert!(proxy.injected() > 0, "the proxy throttled nothing");
    assert!(
        standby.log().contains("VPC route replaced"),
        "{}",
        standby.log()
    );

    // It comes back: after the 3 s hold, the routes and its switch return.
    brokers[0] = start_broker(&mut lab, &hub_a, &config, hub_a_name);
    let primary = start_hub(&mut lab, &hub_a, &config, hub_a_name);
    wait_hub(&primary_bus, "area 1 routed", |routes| {
        routes.areas.iter().any(|known| known.area == 1)
    });
    wait_hub(&standby_bus, "the primary back, routes to it", |routes| {
        routes.partner_up && routes.owner == RouteOwner::Primary
    });
    eventually("routes back on the primary, switched on", || {
        state()
            == (
                vec![fixture.instance_a.clone()],
                ["false".to_owned(), "false".to_owned()],
            )
    });
    // Throttled calls were retried, never given up into a wrong route.
    let throttled = proxy.injected();
    assert!(throttled >= 2, "{throttled}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state().0, vec![fixture.instance_a.clone()]);
    drop(primary);
}
