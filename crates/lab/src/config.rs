//! The fieldnet appliance file for a lab site's area, written the way an operator would write
//! it, so tests and the demo run the agents on exactly the topology the lab built.

use std::fmt::Write as _;
use std::path::Path;

use crate::site::{INTERNET_HOSTS, PathKind, Site};

/// The appliance file of area `id`, with its bus socket under `dir`; `extra` is appended
/// (agent sections a test wants to tune).
pub fn appliance_config(site: &Site, id: u8, dir: &Path, extra: &str) -> String {
    let mut text = String::new();
    let area = site.area(id).expect("area exists");
    let _ = writeln!(
        text,
        "[site]\nname = \"lab\"\ndomain = \"lab.fieldnet.example\"\nkey = \"{}\"\n",
        "5a".repeat(32)
    );
    let _ = writeln!(
        text,
        "[appliance]\nid = {id}\nname = \"appliance-{id}\"\narea = \"area{id}\"\n"
    );
    for other in &site.areas {
        let _ = writeln!(
            text,
            "[[areas]]\nname = \"area{0}\"\nappliance = {0}\n",
            other.id
        );
    }
    for other in &site.areas {
        // The own LAN, or the leg into another area's LAN if the lab built one.
        let interface = if other.id == id {
            Some(other.lan_if.clone())
        } else {
            area.legs
                .iter()
                .find(|leg| leg.peer == other.id)
                .map(|leg| leg.ifname.clone())
        };
        let _ = writeln!(
            text,
            "[[networks]]\nname = \"NETWORK{0}\"\narea = \"area{0}\"\nsubnet = \"{1}\"\ngateway = \"{2}\"",
            other.id, other.network, other.gateway
        );
        if let Some(interface) = interface {
            let _ = writeln!(text, "interface = \"{interface}\"");
        }
        text.push('\n');
    }
    for (index, uplink) in area.uplinks.iter().enumerate() {
        let _ = writeln!(
            text,
            "[[uplinks]]\nname = \"{}\"\nkind = \"local\"\ninterface = \"{}\"\ngateway = \"{}\"\npreference = {}\n",
            uplink.name,
            uplink.appliance_if,
            uplink.router_lan_addr,
            10 * (index + 1)
        );
    }
    for other in site.areas.iter().filter(|other| other.id != id) {
        if let Some(uplink) = other.uplinks.first() {
            let _ = writeln!(
                text,
                "[[uplinks]]\nname = \"{}\"\nkind = \"remote\"\npeer = {}\npreference = 50\n",
                uplink.name, other.id
            );
        }
    }
    for other in site.areas.iter().filter(|other| other.id != id) {
        let _ = writeln!(
            text,
            "[[peers]]\nid = {0}\nname = \"appliance-{0}\"\n",
            other.id
        );
        for kind in [PathKind::Cable, PathKind::Wifi] {
            if let Some(path) = area.path(kind, other.id) {
                let local = path.addr.split('/').next().unwrap_or(&path.addr);
                let _ = writeln!(
                    text,
                    "[[peers.paths]]\nkind = \"{}\"\ninterface = \"{}\"\nlocal = \"{local}\"\nremote = \"{}\"\n",
                    match kind {
                        PathKind::Cable => "cable",
                        PathKind::Wifi => "wifi",
                    },
                    path.ifname,
                    path.peer_addr
                );
            }
        }
        // Through the hub: the appliance's own tunnel, addressed to the peer's tunnel address.
        if let (Some(own), Some(theirs)) = (&area.vpn, &other.vpn) {
            let _ = writeln!(
                text,
                "[[peers.paths]]\nkind = \"vpn\"\ninterface = \"{}\"\nlocal = \"{}\"\nremote = \"{}\"\n",
                own.ifname, own.addr, theirs.addr
            );
        }
    }
    if let Some(vpn) = &area.vpn {
        let _ = writeln!(
            text,
            "[hub]\nendpoints = [\"{}\"]\ntunnel_address = \"{}\"\ninterface = \"{}\"\n",
            vpn.endpoint, site.hub_tunnel_addr, vpn.ifname
        );
    } else if site.hub.is_some() {
        let _ = writeln!(
            text,
            "[hub]\nendpoints = [\"203.0.113.10:51820\"]\ntunnel_address = \"10.253.0.254\"\n"
        );
    }
    let targets: Vec<String> = INTERNET_HOSTS.iter().map(|h| format!("\"{h}\"")).collect();
    let _ = writeln!(
        text,
        "[bus]\nsocket = \"{}\"\nmetrics_listen = \"127.0.0.1:9700\"\n",
        dir.join(format!("bus-{id}.sock")).display()
    );
    if !extra.contains("[uplink_monitor]") {
        let _ = writeln!(
            text,
            "[uplink_monitor]\ntargets = [{}]\n",
            targets.join(", ")
        );
    }
    text.push_str(extra);
    text
}

/// The path of another workspace binary next to `own_binary` (a test's
/// `env!("CARGO_BIN_EXE_…")`), built with `cargo build -p package` first if it is not there.
pub fn sibling_binary(own_binary: &str, package: &str, binary: &str) -> String {
    let path = Path::new(own_binary).with_file_name(binary);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", package, "--bin", binary])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {binary}");
    }
    path.display().to_string()
}
