//! `fieldctl site`: what each appliance and hub will do with the site file, in plain words — its
//! networks, its ways to the internet, its paths to every other area, and who takes over whose
//! network when an appliance dies. Pure: the text is a function of the validated site.

use std::fmt::Write as _;

use fieldnet::config::{
    Config, HubRole, Machine, MachineRole, Network, PathKind, SiteConfig, UplinkKind,
};

/// The whole site, machine by machine, then the takeover order.
pub fn describe(site: &SiteConfig) -> String {
    let mut out = String::new();
    let Some(first) = site.machines.first() else {
        return "The site file describes no appliance.\n".to_owned();
    };
    let config = &first.config;
    let _ = writeln!(
        out,
        "Site {} ({}): {} {}, {} {}, {} {}.",
        config.site.name,
        config.site.domain,
        config.areas.len(),
        plural(config.areas.len(), "area", "areas"),
        site.appliances().count(),
        plural(site.appliances().count(), "appliance", "appliances"),
        site.hubs().count(),
        plural(site.hubs().count(), "hub", "hubs"),
    );
    for machine in site.appliances() {
        out.push('\n');
        appliance(&mut out, site, machine);
    }
    for machine in site.hubs() {
        out.push('\n');
        hub(&mut out, site, machine);
    }
    out.push('\n');
    takeovers(&mut out, site);
    out
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

fn appliance(out: &mut String, site: &SiteConfig, machine: &Machine) {
    let config = &machine.config;
    let host = machine
        .hostname
        .as_ref()
        .map(|host| format!(", host name {host}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Appliance {} \"{}\"{host} serves area {}.",
        config.appliance.id, config.appliance.name, config.appliance.area
    );
    for network in config.own_networks() {
        let _ = writeln!(out, "  Its network: {}.", network_line(config, network));
    }
    let carried: Vec<String> = config
        .networks
        .iter()
        .filter(|n| n.area != config.appliance.area)
        .filter_map(|n| {
            n.interface
                .as_ref()
                .map(|interface| format!("{} on {interface}", n.name))
        })
        .collect();
    if carried.is_empty() {
        let _ = writeln!(
            out,
            "  It carries no other area's network, so it takes none over."
        );
    } else {
        let _ = writeln!(
            out,
            "  It also carries {}, to take them over.",
            join_and(&carried)
        );
    }
    let mut uplinks: Vec<&fieldnet::config::Uplink> = config.uplinks.iter().collect();
    uplinks.sort_by_key(|uplink| uplink.preference);
    if uplinks.is_empty() {
        let _ = writeln!(out, "  Internet: none.");
    }
    for (index, uplink) in uplinks.iter().enumerate() {
        let lead = if index == 0 {
            "  Internet, best first:"
        } else {
            "                       "
        };
        let how = match &uplink.kind {
            UplinkKind::Local { interface, gateway } => {
                format!("its router {gateway} on {interface}")
            }
            UplinkKind::Remote { peer } => {
                format!("through {} and its uplinks", name_of(site, *peer))
            }
        };
        let metered = if uplink.metered { ", metered" } else { "" };
        let _ = writeln!(
            out,
            "{lead} {} ({how}; preference {}{metered})",
            uplink.name, uplink.preference
        );
    }
    for peer in &config.peers {
        let area = config
            .areas
            .iter()
            .find(|a| a.appliance == peer.id)
            .map_or("no area", |a| a.name.as_str());
        let paths: Vec<String> = peer
            .paths
            .iter()
            .map(|path| match path.kind {
                PathKind::Vpn => format!("the VPN through the hub on {}", path.interface),
                kind => format!(
                    "{} on {} ({} to {})",
                    kind.as_str(),
                    path.interface,
                    path.local,
                    path.remote
                ),
            })
            .collect();
        let how = if paths.is_empty() {
            "no path at all".to_owned()
        } else {
            paths.join(", else ")
        };
        let _ = writeln!(
            out,
            "  To area {area} (appliance {} \"{}\"): {how}.",
            peer.id,
            name_of(site, peer.id)
        );
    }
    if let Some(hub) = &config.hub {
        let endpoints: Vec<String> = hub.endpoints.iter().map(|e| e.to_string()).collect();
        match &hub.interface {
            Some(interface) => {
                let _ = writeln!(
                    out,
                    "  Tunnel to the hubs: {interface}, hubs at {} inside it; hub endpoints {}.",
                    hub.tunnel_address,
                    endpoints.join(" then ")
                );
            }
            None => {
                let _ = writeln!(out, "  No tunnel to the hubs.");
            }
        }
    }
}

fn network_line(config: &Config, network: &Network) -> String {
    let interface = network
        .interface
        .as_ref()
        .map_or("no interface".to_owned(), |i| format!("on {i}"));
    let pools: Vec<String> = config
        .agents
        .dhcp_takeover
        .pools
        .iter()
        .filter(|pool| pool.network == network.name)
        .map(|pool| format!("{}-{}", pool.start, pool.end))
        .collect();
    let dhcp = if pools.is_empty() {
        "DHCP from the default pool".to_owned()
    } else {
        format!("DHCP {}", pools.join(", "))
    };
    format!(
        "{} {} {interface}, gateway {}, {dhcp}",
        network.name, network.subnet, network.gateway
    )
}

fn hub(out: &mut String, site: &SiteConfig, machine: &Machine) {
    let config = &machine.config;
    let Some(mode) = &config.agents.cross_site_failover.hub else {
        return;
    };
    let role = match machine.role {
        MachineRole::Hub(HubRole::Primary) => "the primary: the VPC routes point at it",
        _ => "the standby: it takes the VPC routes when the primary is dead",
    };
    let _ = writeln!(
        out,
        "Hub {} \"{}\", {role}.",
        config.appliance.id, config.appliance.name
    );
    let partner = site
        .hubs()
        .find(|other| other.name() != machine.name())
        .map_or("its partner", |other| other.name());
    let when = match mode.role {
        HubRole::Primary => format!(
            "after an outage the routes come back to it once it has been alive for {} s",
            mode.giveback_hold.as_secs()
        ),
        HubRole::Standby => format!(
            "it takes the routes once {partner} has been silent for {} ms",
            mode.takeover_after.as_millis()
        ),
    };
    let _ = writeln!(
        out,
        "  Watches {partner} over {} ({} to {}); {when}.",
        mode.interface, mode.local, mode.partner,
    );
    let tunnels: Vec<String> = config
        .peers
        .iter()
        .flat_map(|peer| {
            peer.paths
                .iter()
                .map(move |path| format!("{} on {}", peer.name, path.interface))
        })
        .collect();
    if tunnels.is_empty() {
        let _ = writeln!(out, "  Tunnels: none.");
    } else {
        let _ = writeln!(out, "  Tunnels to {}.", join_and(&tunnels));
    }
    let endpoint = mode.aws_endpoint.as_deref().unwrap_or("AWS itself");
    let tables = if mode.route_tables.is_empty() {
        "no route tables".to_owned()
    } else {
        format!("route tables {}", mode.route_tables.join(", "))
    };
    let _ = writeln!(
        out,
        "  AWS: {} in {} ({endpoint}), {tables}.",
        mode.instance_id, mode.aws_region
    );
}

/// For every appliance: who takes its networks over when it dies, in order.
fn takeovers(out: &mut String, site: &SiteConfig) {
    let _ = writeln!(
        out,
        "When an appliance dies, the lowest-numbered live appliance that carries its network takes it over:"
    );
    for machine in site.appliances() {
        let config = &machine.config;
        for network in config.own_networks() {
            let mut takers: Vec<&Machine> = site
                .appliances()
                .filter(|other| other.id() != machine.id())
                .filter(|other| {
                    other
                        .config
                        .networks
                        .iter()
                        .any(|n| n.name == network.name && n.interface.is_some())
                })
                .collect();
            takers.sort_by_key(|other| other.id());
            let who = match takers.as_slice() {
                [] => "nobody can take it over: no other appliance carries it".to_owned(),
                [only] => format!("{} ({}) takes it over", only.name(), only.id()),
                [first, rest @ ..] => {
                    let rest: Vec<String> = rest
                        .iter()
                        .map(|m| format!("{} ({})", m.name(), m.id()))
                        .collect();
                    format!(
                        "{} ({}) takes it over; if that one is dead too, {}",
                        first.name(),
                        first.id(),
                        rest.join(", then ")
                    )
                }
            };
            let _ = writeln!(
                out,
                "  {} ({}) dies: {} — {who}.",
                machine.name(),
                machine.id(),
                network.name
            );
        }
    }
}

fn name_of(site: &SiteConfig, id: u8) -> &str {
    site.machines
        .iter()
        .find(|machine| machine.id() == id)
        .map_or("?", |machine| machine.name())
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The riverside example in plain words, held by a golden file; a change to the wording or
    /// to the example shows up here. `FIELDCTL_BLESS=1` rewrites the golden file.
    #[test]
    fn the_riverside_site_in_plain_words() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = root.join("../../deploy/examples/riverside/site.toml");
        let site = SiteConfig::load(&example).unwrap();
        let text = describe(&site);
        let golden = root.join("tests/golden/riverside-site.txt");
        if std::env::var("FIELDCTL_BLESS").as_deref() == Ok("1") {
            std::fs::write(&golden, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(
            text, expected,
            "fieldctl site changed; if that is intended, run with FIELDCTL_BLESS=1"
        );
        assert!(text.contains(
            "north (1) dies: NETWORK1 — stage (2) takes it over; if that one is dead too, south (3)."
        ));
        assert!(text.contains("To area stage (appliance 2 \"stage\"): cable on cab-stage"));
    }

    #[test]
    fn lists_read_as_sentences() {
        let words =
            |items: &[&str]| join_and(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(words(&["a"]), "a");
        assert_eq!(words(&["a", "b"]), "a and b");
        assert_eq!(words(&["a", "b", "c"]), "a, b and c");
    }
}
