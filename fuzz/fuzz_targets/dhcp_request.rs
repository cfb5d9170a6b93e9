//! Any datagram arriving on a DHCP socket, as dhcp-takeover's request path sees it: decoded,
//! decided on (twice, so the second sees the state the first left), the conflict check
//! answered both ways, and every reply encoded. None may panic, whatever the bytes.
//! Input: 1 byte choosing the ingress network (even: NETWORK1, odd: none), then the datagram.
#![no_main]

use std::sync::LazyLock;

use dhcp_takeover::decide::{self, Decision, Server};
use dhcp_takeover::lease::Leases;
use dhcp_takeover::plan::Plan;
use fieldnet::config::SiteConfig;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[site]
name = "fuzz"
domain = "site.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[[areas]]
name = "north"
[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"
[[networks.reservations]]
mac = "02:00:00:00:00:01"
address = "10.101.0.5"
[[appliances]]
id = 1
name = "one"
area = "north"
[dhcp_takeover]
routes = ["10.200.0.0/16"]
ntp_servers = ["10.101.0.1"]
[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80"]
ranges = ["10.101.0.2-10.101.0.4"]
"#;

static PLAN: LazyLock<Plan> = LazyLock::new(|| {
    let site = SiteConfig::from_str(CONFIG, "fuzz.toml").unwrap();
    Plan::new(site.view("one").unwrap())
});

fn encode_replies(decision: &Decision) {
    match decision {
        Decision::Send(reply)
        | Decision::Commit {
            reply: Some(reply), ..
        } => {
            let bytes = decide::encode(&reply.message);
            assert!(decide::decode(&bytes).is_some(), "a reply decodes");
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let Some(request) = decide::decode(datagram) else {
        return;
    };
    let ingress = (selector % 2 == 0).then_some("NETWORK1");
    let now = 1_800_000_000_000;
    // Each probe outcome on its own server: free (the offer), and in use (the quarantine and
    // the next check).
    for in_use in [false, true] {
        let mut server = Server::new(PLAN.clone(), 1, 30_000, Some(250), Leases::default());
        server.serve("NETWORK1", true);
        for round in 0..2 {
            let decision = server.handle(now + round, ingress, &request);
            encode_replies(&decision);
            if let Decision::Probe { network, address } = decision {
                let outcome = if in_use {
                    server.claimed(now + round, &network, address)
                } else {
                    server.tick(now + 250)
                };
                outcome.iter().for_each(encode_replies);
            }
        }
        for decision in server.tick(now + 60_000) {
            encode_replies(&decision);
        }
    }
});
