//! Hub mode on a real lab site against moto's server as AWS: two appliances with WireGuard
//! tunnels to the primary hub, a standby hub beside it on the "internet", moto on a lab
//! address both hubs reach, and the standby's AWS calls passing a proxy that throttles every
//! other request. The primary is killed and restarted; the VPC routes and the Route53 switch
//! follow, and CloudWatch receives the tunnel metrics.

use std::time::{Duration, Instant};

use fieldnet_aws::testing::fixtures::{
    RouteFixture, first_text, health_check_request, route_fixture,
};
use fieldnet_aws::testing::{FaultProxy, Faults, MOTO_SERVER_PROGRAM, MotoServer};
use fieldnet_aws::{AwsApi, Client, ClientConfig, Service};
use lab::{INTERNET_BRIDGE, Lab, LabProcess, Netns, SiteSpec};

const PATIENCE: Duration = Duration::from_secs(30);
const MOTO: &str = "203.0.113.1:5000";
const REGION: &str = "us-east-1";
const NETWORKS: [&str; 2] = ["10.101.0.0/24", "10.102.0.0/24"];

fn wait(agent: &LabProcess, needle: &str) {
    agent
        .wait_for_log(needle, PATIENCE)
        .unwrap_or_else(|e| panic!("{e:#}"));
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

/// A hub's agent, with moto's test credentials in its environment.
fn start_hub(lab: &mut Lab, ns: &Netns, config: &str) -> LabProcess {
    let binary = env!("CARGO_BIN_EXE_cross-site-failover");
    let args = [
        "AWS_ACCESS_KEY_ID=testing",
        "AWS_SECRET_ACCESS_KEY=testing",
        "AWS_EC2_METADATA_DISABLED=true",
        binary,
        "--config",
        config,
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

#[allow(clippy::too_many_arguments)]
fn hub_config(
    site: &lab::Site,
    dir: &std::path::Path,
    name: &str,
    role: &str,
    local: &str,
    partner: &str,
    endpoint: &str,
    fixture: &RouteFixture,
    checks: [&str; 2],
    tunnels: bool,
) -> String {
    let (own, other) = if role == "primary" {
        (&fixture.instance_a, &fixture.instance_b)
    } else {
        (&fixture.instance_b, &fixture.instance_a)
    };
    let mut text = format!(
        "[site]\nname = \"lab\"\ndomain = \"lab.fieldnet.example\"\nkey = \"{}\"\n\n[appliance]\nid = 201\nname = \"{name}\"\n\n",
        "5a".repeat(32)
    );
    for area in &site.areas {
        text += &format!(
            "[[areas]]\nname = \"area{0}\"\nappliance = {0}\n\n[[networks]]\nname = \"NETWORK{0}\"\narea = \"area{0}\"\nsubnet = \"{1}\"\ngateway = \"{2}\"\n\n",
            area.id, area.network, area.gateway
        );
        if let (true, Some(vpn)) = (tunnels, &area.vpn) {
            text += &format!(
                "[[peers]]\nid = {0}\nname = \"appliance-{0}\"\n\n[[peers.paths]]\nkind = \"vpn\"\ninterface = \"{1}\"\nlocal = \"{2}\"\nremote = \"{3}\"\n\n",
                area.id, vpn.hub_ifname, site.hub_tunnel_addr, vpn.addr
            );
        }
    }
    text += &format!(
        "[bus]\nsocket = \"{}\"\n\n[cross_site_failover]\nmode = \"hub\"\n\n[cross_site_failover.hub]\nrole = \"{role}\"\ninterface = \"eth0\"\nlocal = \"{local}\"\npartner = \"{partner}\"\ntakeover_after_ms = 1000\ngiveback_hold_ms = 3000\naws_region = \"{REGION}\"\naws_endpoint = \"{endpoint}\"\nroute_tables = [\"{}\"]\ninstance_id = \"{own}\"\npartner_instance_id = \"{other}\"\nown_health_check = \"{}\"\npartner_health_check = \"{}\"\ncloudwatch_interval_ms = 1000\nreconcile_interval_ms = 2000\n",
        dir.join(format!("bus-{name}.sock")).display(),
        fixture.route_table,
        if role == "primary" {
            checks[0]
        } else {
            checks[1]
        },
        if role == "primary" {
            checks[1]
        } else {
            checks[0]
        },
    );
    text
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

    let binary = env!("CARGO_BIN_EXE_cross-site-failover");
    let dir = lab.dir().to_path_buf();
    let write = |name: &str, text: String| {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let a_config = write(
        "hub-a",
        hub_config(
            &site,
            &dir,
            "hub-a",
            "primary",
            "203.0.113.10",
            "203.0.113.11",
            &format!("http://{MOTO}"),
            &fixture,
            checks,
            true,
        ),
    );
    let b_config = write(
        "hub-b",
        hub_config(
            &site,
            &dir,
            "hub-b",
            "standby",
            "203.0.113.11",
            "203.0.113.10",
            &proxy.endpoint(),
            &fixture,
            checks,
            true,
        ),
    );
    let primary = start_hub(&mut lab, &hub_a, &a_config);
    let standby = start_hub(&mut lab, &hub_b, &b_config);
    let mut appliances = Vec::new();
    for area in &site.areas {
        let config = write(
            &format!("appliance-{}", area.id),
            lab::appliance_config(&site, area.id, &dir, ""),
        );
        appliances.push(
            lab.spawn(&area.appliance, binary, &["--config", &config])
                .unwrap(),
        );
    }

    // The primary routes each area into its own appliance's tunnel, and judges the tunnels
    // healthy in all three layers; so do the appliances theirs.
    for area in &site.areas {
        let vpn = area.vpn.as_ref().unwrap();
        // (An area may first ride the other tunnel, if the other appliance answered first.)
        wait(&primary, &format!("hub routes moved area_of={0}", area.id));
        wait(
            &primary,
            &format!(
                "tunnel health changed tunnel={} peer=appliance-{} verdict=healthy",
                vpn.hub_ifname, area.id
            ),
        );
        let own_tunnel = format!("via {} dev {} proto 202", vpn.addr, vpn.hub_ifname);
        eventually(
            &format!("area {} routed into its own tunnel", area.id),
            || {
                let route = hub_a.ip_output(&["route", "show", &area.network]).unwrap();
                route.contains(&own_tunnel)
            },
        );
    }
    for appliance in &appliances {
        wait(appliance, "peer=hub verdict=healthy");
    }
    wait(
        &standby,
        "peer liveness changed peer=0 alive=true role=Partner",
    );

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
    primary.kill().unwrap();
    wait(
        &standby,
        "hub partner changed partner_up=false owner=standby",
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
    let primary = start_hub(&mut lab, &hub_a, &a_config);
    wait(&primary, "hub routes moved area_of=1");
    wait(
        &standby,
        "hub partner changed partner_up=true owner=primary",
    );
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
