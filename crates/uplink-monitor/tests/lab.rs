//! uplink-monitor on a real lab site: the agent binary in the appliance namespace, real
//! routers, real faults, and a client streaming UDP through the appliance to the internet.
//! These tests check what happens (traffic moves, flows survive, nothing flaps); the outage
//! times are measured by `cargo xtask bench failover`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lab::{EchoServer, Lab, LabProcess, Site, SiteSpec, Stream};

const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    lab: Lab,
    site: Site,
    agent: Option<LabProcess>,
    config: PathBuf,
    echo: EchoServer,
}

fn start(label: &str, areas: u8, extra: &str) -> Option<Running> {
    let mut lab = Lab::for_test(label)?;
    let spec = SiteSpec {
        areas,
        uplinks_per_area: 2,
        clients_per_area: 1,
        hub: false,
    };
    let site = lab.site(&spec).unwrap();
    let config = lab.dir().join("appliance-1.toml");
    std::fs::write(&config, lab::appliance_config(&site, 1, lab.dir(), extra)).unwrap();
    let echo = EchoServer::start(&site.internet, "192.0.2.1:7".parse().unwrap()).unwrap();
    let mut running = Running {
        lab,
        site,
        agent: None,
        config,
        echo,
    };
    running.start_agent();
    Some(running)
}

impl Running {
    fn start_agent(&mut self) {
        let area = &self.site.areas[0];
        let agent = self
            .lab
            .spawn(
                &area.appliance,
                env!("CARGO_BIN_EXE_uplink-monitor"),
                &["--config", self.config.to_str().unwrap()],
            )
            .unwrap();
        // Ready when both local uplinks have been judged up.
        for uplink in &area.uplinks {
            let needle = format!(
                "uplink health changed uplink={} from=unknown to=up",
                uplink.name
            );
            agent
                .wait_for_log(&needle, PATIENCE)
                .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()));
        }
        self.agent = Some(agent);
    }

    fn agent(&self) -> &LabProcess {
        self.agent.as_ref().unwrap()
    }

    fn default_route(&self) -> String {
        self.site.areas[0]
            .appliance
            .ip_output(&["route", "show", "default"])
            .unwrap()
    }

    fn stream(&self) -> Stream {
        let client = &self.site.areas[0].clients[0].ns;
        let server: SocketAddr = self.echo.address;
        Stream::start(
            client,
            server,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn wait_for_log(&self, needle: &str) {
        self.agent()
            .wait_for_log(needle, PATIENCE)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.agent().log()));
    }
}

#[test]
fn carrier_loss_moves_the_default_route_and_the_stream_survives() {
    let Some(running) = start("um-carrier", 1, "") else {
        return;
    };
    let area = &running.site.areas[0];
    assert!(
        running.default_route().contains("dev wan0"),
        "{}",
        running.default_route()
    );
    let stream = running.stream();
    std::thread::sleep(Duration::from_millis(500));
    let router = &area.uplinks[0].router;
    let _cut = running
        .lab
        .link_down(router, &area.uplinks[0].router_lan_if)
        .unwrap();
    running.wait_for_log("default route moved from=a1-up1 to=a1-up2 reason=link_down");
    std::thread::sleep(Duration::from_millis(500));
    let report = stream.finish();
    assert!(
        running.default_route().contains("dev wan1"),
        "{}",
        running.default_route()
    );
    assert!(report.received > report.sent / 2, "{report:?}");
    eprintln!("carrier loss: {report:?}");
}
