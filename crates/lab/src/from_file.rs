//! A lab site built from a site file: every appliance and hub the file names, with the
//! interfaces, addresses, links, legs and tunnels it gives them, each a [`Machine`] whose
//! `/etc/fieldnet/site.toml` is that file, unchanged. Agents started on a machine find
//! themselves in it by host name, as on site.
//!
//! What the file does not say comes from the lab's plan (`docs/lab.md`): the internet bridge
//! and its hosts (the file's probe targets and resolvers among them), uplink routers (LAN: the
//! uplink's gateway /24, the appliance next to it; WAN: `198.51.100.<10·id+k>`), clients on
//! each area's network from `.101`, the hubs on `203.0.113.0/24`, the VPC between them, and
//! WireGuard ports (51820 + the appliance's id on each hub).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Context;
use fieldnet::config::{MachineRole, PathKind as ConfigPathKind, SiteConfig, SiteKey, UplinkKind};

use crate::lab::Lab;
use crate::machine::Machine;
use crate::netns::Netns;
use crate::site::{
    AreaLab, ClientLab, HUB_GATEWAY, INTERNET_BRIDGE, INTERNET_HOSTS, LegLab, PathKind, PathLab,
    ROUTER_WAN_GATEWAY, Site, UplinkLab, VpnLab, forwarding, route_over_cables,
};

/// The documentation ranges "internet" hosts may use (RFC 5737).
fn on_the_lab_internet(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
}

impl Lab {
    /// Builds the site `text` (a site file, named `file` in errors) describes, with
    /// `clients_per_area` client hosts on each area's first network. Every machine gets `text`
    /// as its `/etc/fieldnet/site.toml`, and a fresh key at the file's `key_file`.
    pub fn site_from_file(
        &mut self,
        text: &str,
        file: &str,
        clients_per_area: u8,
    ) -> anyhow::Result<Site> {
        let config =
            SiteConfig::from_str(text, file).map_err(|error| anyhow::anyhow!("{error}"))?;
        anyhow::ensure!(
            clients_per_area <= 50,
            "site: {clients_per_area} clients per area, expected at most 50"
        );
        let mut files = vec![(
            std::path::PathBuf::from("/etc/fieldnet/site.toml"),
            text.to_owned(),
        )];
        let any = &config
            .machines
            .first()
            .context("the site has no machine")?
            .config;
        if let SiteKey::File(path) = &any.site.key {
            files.push((path.clone(), format!("{}\n", random_hex(32)?)));
        }

        let internet = self.internet(&extra_hosts(&config))?;
        let mut machines = Vec::new();

        // Hubs: on the internet at their endpoint, and the VPC between them.
        let mut hubs: Vec<(Netns, u8)> = Vec::new();
        for hub in config.hubs() {
            let ns = self.netns(hub.name())?;
            forwarding(&ns)?;
            let endpoint = config
                .appliances()
                .find_map(|a| a.config.hub.as_ref())
                .and_then(|h| {
                    let index = usize::from(!matches!(
                        hub.role,
                        MachineRole::Hub(fieldnet::config::HubRole::Primary)
                    ));
                    h.endpoints.get(index).copied()
                })
                .context("the hubs' endpoints")?;
            let address = match endpoint.ip() {
                std::net::IpAddr::V4(address) if address.octets()[..3] == [203, 0, 113] => address,
                other => anyhow::bail!(
                    "hub {}: the lab puts hubs on 203.0.113.0/24, not {other}",
                    hub.name()
                ),
            };
            let port = format!("h-{}", hub.name());
            self.veth(&ns, "eth0", &internet, &port)?;
            self.enslave(&internet, &port, INTERNET_BRIDGE)?;
            self.addr(&ns, "eth0", &format!("{address}/24"))?;
            ns.ip(&["route", "add", "default", "via", HUB_GATEWAY, "dev", "eth0"])?;
            hubs.push((ns, hub.id()));
        }
        let modes: Vec<_> = config
            .hubs()
            .filter_map(|hub| hub.config.agents.cross_site_failover.hub.clone())
            .collect();
        if let ([a, b], [(a_ns, _), (b_ns, _)]) = (modes.as_slice(), hubs.as_slice()) {
            // Two interfaces of one name in two namespaces: created in one, moved to the other.
            a_ns.ip(&[
                "link",
                "add",
                "name",
                &a.interface,
                "type",
                "veth",
                "peer",
                "name",
                "vpc-peer",
                "netns",
                b_ns.name(),
            ])?;
            b_ns.ip(&["link", "set", "dev", "vpc-peer", "name", &b.interface])?;
            for (ns, mode) in [(a_ns, a), (b_ns, b)] {
                ns.ip(&["link", "set", "dev", &mode.interface, "up"])?;
                self.addr(ns, &mode.interface, &format!("{}/24", mode.local))?;
            }
        }

        // Appliances: the own network's bridge, clients, uplink routers.
        let mut areas: Vec<AreaLab> = Vec::new();
        for appliance in config.appliances() {
            let view = &appliance.config;
            let ns = self.netns(appliance.name())?;
            forwarding(&ns)?;
            let own = view
                .own_networks()
                .next()
                .with_context(|| format!("appliance {} serves no network", appliance.name()))?;
            let lan_if = own
                .interface
                .clone()
                .context("checked: own network has an interface")?;
            self.bridge(&ns, &lan_if)?;
            let prefix = own.subnet.prefix_len();
            self.addr(&ns, &lan_if, &format!("{}/{prefix}", own.gateway))?;
            let mut clients = Vec::new();
            for k in 1..=clients_per_area {
                let client = self.netns(&format!("{}-c{k}", appliance.name()))?;
                let port = format!("c{k}");
                let address = own
                    .subnet
                    .hosts()
                    .nth(100 + usize::from(k) - 1)
                    .context("the network is too small for the lab's clients (.101 up)")?;
                self.veth(&client, "eth0", &ns, &port)?;
                self.enslave(&ns, &port, &lan_if)?;
                self.addr(&client, "eth0", &format!("{address}/{prefix}"))?;
                client.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &own.gateway.to_string(),
                    "dev",
                    "eth0",
                ])?;
                clients.push(ClientLab {
                    ns: client,
                    addr: address.to_string(),
                    ifname: "eth0".to_owned(),
                    appliance_port: port,
                });
            }
            let mut uplinks = Vec::new();
            for (k, uplink) in view
                .uplinks
                .iter()
                .filter(|u| matches!(u.kind, UplinkKind::Local { .. }))
                .enumerate()
            {
                let UplinkKind::Local { interface, gateway } = &uplink.kind else {
                    continue;
                };
                uplinks.push(self.router(
                    &ns,
                    &internet,
                    appliance.id(),
                    k,
                    &uplink.name,
                    interface,
                    *gateway,
                )?);
            }
            if let Some(first) = uplinks.first() {
                ns.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    &first.router_lan_addr,
                    "dev",
                    &first.appliance_if,
                ])?;
            }
            areas.push(AreaLab {
                id: appliance.id(),
                appliance: ns,
                lan_if,
                network: own.subnet.to_string(),
                gateway: own.gateway.to_string(),
                uplinks,
                clients,
                paths: Vec::new(),
                vpn: None,
                legs: Vec::new(),
            });
        }

        // Legs: an appliance's interface for another area's network is a port of that area's
        // bridge (in production, the VLAN over the cable).
        for appliance in config.appliances() {
            for network in &appliance.config.networks {
                let (Some(interface), Some(owner)) = (
                    &network.interface,
                    appliance
                        .config
                        .areas
                        .iter()
                        .find(|area| area.name == network.area)
                        .map(|area| area.appliance),
                ) else {
                    continue;
                };
                if owner == appliance.id() {
                    continue;
                }
                let position = |id: u8| areas.iter().position(|a| a.id == id);
                let (Some(here), Some(there)) = (position(appliance.id()), position(owner)) else {
                    continue;
                };
                let port = format!("x{}", appliance.id());
                let (near, far) = (
                    areas[here].appliance.clone(),
                    areas[there].appliance.clone(),
                );
                self.veth(&near, interface, &far, &port)?;
                self.enslave(&far, &port, &areas[there].lan_if.clone())?;
                areas[here].legs.push(LegLab {
                    peer: owner,
                    ifname: interface.clone(),
                    peer_port: port,
                });
            }
        }

        // Cables and wifi bridges, point to point; routes to the other areas over the cables.
        let mut made: BTreeSet<(u8, u8, String)> = BTreeSet::new();
        for appliance in config.appliances() {
            for peer in &appliance.config.peers {
                for path in &peer.paths {
                    let kind = match path.kind {
                        ConfigPathKind::Cable => PathKind::Cable,
                        ConfigPathKind::Wifi => PathKind::Wifi,
                        ConfigPathKind::Vpn => continue,
                    };
                    let (low, high) = (appliance.id().min(peer.id), appliance.id().max(peer.id));
                    let link = if appliance.id() == low {
                        path.local
                    } else {
                        path.remote
                    };
                    if !made.insert((low, high, link.to_string())) {
                        continue;
                    }
                    let theirs = config
                        .machines
                        .iter()
                        .find(|m| m.id() == peer.id)
                        .and_then(|m| m.config.peers.iter().find(|p| p.id == appliance.id()))
                        .and_then(|p| p.paths.iter().find(|q| q.local == path.remote))
                        .context("the other end of a link")?;
                    let position = |id: u8| areas.iter().position(|a| a.id == id).expect("area");
                    let (here, there) = (position(appliance.id()), position(peer.id));
                    let (near, far) = (
                        areas[here].appliance.clone(),
                        areas[there].appliance.clone(),
                    );
                    self.veth(&near, &path.interface, &far, &theirs.interface)?;
                    for (ns, interface, local, remote) in [
                        (&near, &path.interface, path.local, path.remote),
                        (&far, &theirs.interface, theirs.local, theirs.remote),
                    ] {
                        ns.ip(&[
                            "addr",
                            "add",
                            &local.to_string(),
                            "peer",
                            &remote.to_string(),
                            "dev",
                            interface,
                        ])?;
                    }
                    areas[here].paths.push(PathLab {
                        kind,
                        peer: peer.id,
                        ifname: path.interface.clone(),
                        addr: format!("{}/32", path.local),
                        peer_addr: path.remote.to_string(),
                    });
                    areas[there].paths.push(PathLab {
                        kind,
                        peer: appliance.id(),
                        ifname: theirs.interface.clone(),
                        addr: format!("{}/32", theirs.local),
                        peer_addr: theirs.remote.to_string(),
                    });
                }
            }
        }
        route_over_cables(&mut areas)?;

        // Every machine: its files, its host name, booted.
        for machine in &config.machines {
            let ns = areas
                .iter()
                .find(|a| a.id == machine.id())
                .map(|a| a.appliance.clone())
                .or_else(|| {
                    hubs.iter()
                        .find(|(_, id)| *id == machine.id())
                        .map(|(ns, _)| ns.clone())
                })
                .context("every machine has a namespace")?;
            let hostname = machine
                .hostname
                .clone()
                .unwrap_or_else(|| machine.name().to_owned());
            machines.push(Machine::boot(self, machine.name(), &hostname, ns, &files)?);
        }

        // Tunnels: each appliance to the primary hub; the standby has its interfaces, unused
        // (appliances tunnel to the primary only).
        self.file_vpn(&config, &machines, &mut areas)?;

        let hub_addr = config
            .appliances()
            .find_map(|a| a.config.hub.as_ref())
            .and_then(|h| h.endpoints.first())
            .map(|e| e.ip().to_string())
            .unwrap_or_default();
        let hub_tunnel_addr = config
            .appliances()
            .find_map(|a| a.config.hub.as_ref())
            .map(|h| h.tunnel_address.to_string())
            .unwrap_or_default();
        let mut internet_hosts: Vec<String> =
            INTERNET_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        internet_hosts.extend(extra_hosts(&config).iter().map(|h| h.to_string()));
        Ok(Site {
            internet,
            internet_bridge: INTERNET_BRIDGE.to_owned(),
            internet_hosts,
            hub: hubs.first().map(|(ns, _)| ns.clone()),
            hub_if: "eth0".to_owned(),
            hub_port: config
                .hubs()
                .next()
                .map(|hub| format!("h-{}", hub.name()))
                .unwrap_or_default(),
            hub_addr,
            areas,
            hub_tunnel_addr,
            machines,
        })
    }

    /// The internet namespace: the bridge with its hosts ([`INTERNET_HOSTS`] and `extra`), the
    /// routers' and hubs' gateways; it forwards between them.
    pub(crate) fn internet(&mut self, extra: &[Ipv4Addr]) -> anyhow::Result<Netns> {
        let internet = self.netns("internet")?;
        forwarding(&internet)?;
        // Hub <-> router traffic enters and leaves br0; no ICMP redirects for that.
        for key in [
            "net.ipv4.conf.all.send_redirects",
            "net.ipv4.conf.default.send_redirects",
        ] {
            internet.sysctl(key, "0")?;
        }
        self.bridge(&internet, INTERNET_BRIDGE)?;
        let hosts = INTERNET_HOSTS
            .iter()
            .map(|host| (*host).to_owned())
            .chain(extra.iter().map(|host| host.to_string()))
            .chain([ROUTER_WAN_GATEWAY.to_owned(), HUB_GATEWAY.to_owned()]);
        for host in hosts {
            self.addr(&internet, INTERNET_BRIDGE, &format!("{host}/24"))?;
        }
        Ok(internet)
    }

    /// One uplink router: LAN `gateway`/24 towards the appliance's `interface` (the appliance
    /// next to it, .2), WAN `198.51.100.<10·id+k>` on the internet, NAT; every area's networks
    /// and the links between appliances sit behind the appliance.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn router(
        &mut self,
        appliance: &Netns,
        internet: &Netns,
        id: u8,
        k: usize,
        name: &str,
        interface: &str,
        gateway: Ipv4Addr,
    ) -> anyhow::Result<UplinkLab> {
        let router = self.netns(name)?;
        for (key, value) in [
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            router.sysctl(key, value)?;
        }
        let [a, b, c, d] = gateway.octets();
        let near = Ipv4Addr::new(a, b, c, if d == 2 { 3 } else { 2 });
        let wan_host = 10 * usize::from(id) + k;
        anyhow::ensure!(
            wan_host <= 254,
            "appliance {id}: too many uplinks for the lab's WAN plan"
        );
        let wan = format!("198.51.100.{wan_host}/24");
        self.veth(&router, "lan", appliance, interface)?;
        self.addr(&router, "lan", &format!("{gateway}/24"))?;
        self.addr(appliance, interface, &format!("{near}/24"))?;
        self.veth(&router, "wan", internet, name)?;
        self.enslave(internet, name, INTERNET_BRIDGE)?;
        self.addr(&router, "wan", &wan)?;
        router.ip(&[
            "route",
            "add",
            "default",
            "via",
            ROUTER_WAN_GATEWAY,
            "dev",
            "wan",
        ])?;
        router.ip(&[
            "route",
            "add",
            "10.0.0.0/8",
            "via",
            &near.to_string(),
            "dev",
            "lan",
        ])?;
        self.nat(&router, "wan")?;
        Ok(UplinkLab {
            name: name.to_owned(),
            router,
            appliance_if: interface.to_owned(),
            router_lan_if: "lan".to_owned(),
            router_lan_addr: gateway.to_string(),
            appliance_addr: format!("{near}/24"),
            router_wan_if: "wan".to_owned(),
            router_wan_addr: wan,
            internet_port: name.to_owned(),
        })
    }

    /// The appliances' WireGuard tunnels, each daemon on its machine (its control socket in the
    /// machine's own `/run`, under the interface name the file gives).
    fn file_vpn(
        &mut self,
        config: &SiteConfig,
        machines: &[Machine],
        areas: &mut [AreaLab],
    ) -> anyhow::Result<()> {
        let machine = |name: &str| machines.iter().find(|m| m.name == name).expect("machine");
        let hubs: Vec<_> = config.hubs().collect();
        if hubs.is_empty() {
            return Ok(());
        }
        let mut hub_keys = Vec::new();
        for hub in &hubs {
            hub_keys.push(self.wireguard_key(hub.name())?);
        }
        for appliance in config.appliances() {
            let Some(hub_view) = &appliance.config.hub else {
                continue;
            };
            let Some(interface) = &hub_view.interface else {
                continue;
            };
            let own = machine(appliance.name());
            let (private, public) = self.wireguard_key(appliance.name())?;
            let port = (51820 + u16::from(appliance.id())).to_string();
            let mut own_address = None;
            for (index, hub) in hubs.iter().enumerate() {
                let Some(path) = hub
                    .config
                    .peers
                    .iter()
                    .find(|p| p.id == appliance.id())
                    .and_then(|p| p.paths.first())
                else {
                    continue;
                };
                own_address = Some(path.remote);
                let at_hub = machine(hub.name());
                self.machine_wireguard(at_hub, &path.interface)?;
                at_hub.exec(
                    "wg",
                    &[
                        "set",
                        &path.interface,
                        "private-key",
                        &hub_keys[index].0,
                        "listen-port",
                        &port,
                        "peer",
                        &public,
                        "allowed-ips",
                        "0.0.0.0/0",
                    ],
                )?;
                let hub_ns = &at_hub.ns;
                self.addr(hub_ns, &path.interface, &format!("{}/32", path.local))?;
                hub_ns.ip(&["link", "set", "dev", &path.interface, "up"])?;
                hub_ns.ip(&[
                    "route",
                    "add",
                    &format!("{}/32", path.remote),
                    "dev",
                    &path.interface,
                ])?;
                for network in appliance.config.own_networks() {
                    hub_ns.ip(&[
                        "route",
                        "add",
                        &network.subnet.to_string(),
                        "dev",
                        &path.interface,
                    ])?;
                }
            }
            let own_address = own_address.context("no hub has a tunnel to this appliance")?;
            let endpoint = format!(
                "{}:{port}",
                hub_view
                    .endpoints
                    .first()
                    .context("the primary hub's endpoint")?
                    .ip()
            );
            self.machine_wireguard(own, interface)?;
            own.exec(
                "wg",
                &[
                    "set",
                    interface,
                    "private-key",
                    &private,
                    "peer",
                    &hub_keys[0].1,
                    "endpoint",
                    &endpoint,
                    "allowed-ips",
                    "0.0.0.0/0",
                    "persistent-keepalive",
                    "25",
                ],
            )?;
            self.addr(&own.ns, interface, &format!("{own_address}/24"))?;
            own.ns.ip(&["link", "set", "dev", interface, "up"])?;
            if let Some(area) = areas.iter_mut().find(|a| a.id == appliance.id()) {
                area.vpn = Some(VpnLab {
                    ifname: interface.clone(),
                    addr: own_address.to_string(),
                    hub_ifname: hubs[0]
                        .config
                        .peers
                        .iter()
                        .find(|p| p.id == appliance.id())
                        .and_then(|p| p.paths.first())
                        .map(|p| p.interface.clone())
                        .unwrap_or_default(),
                    endpoint,
                });
            }
        }
        for area in areas.iter() {
            if let Some(vpn) = &area.vpn {
                let _ = vpn;
                area.appliance
                    .wait_reachable(&hub_tunnel(config), std::time::Duration::from_secs(20))
                    .with_context(|| format!("area {}'s tunnel to the hub", area.id))?;
            }
        }
        Ok(())
    }

    /// A machine of its own on `ns` beside a site's (a laptop, a remote device): host name
    /// `name`, its own `/run`, `/var/lib` and `/etc`, as [`Machine`] describes.
    pub fn machine(&mut self, name: &str, ns: Netns) -> anyhow::Result<Machine> {
        Machine::boot(self, name, name, ns, &[])
    }

    /// Starts `wireguard-go` for `interface` on `machine` and waits for its interface and its
    /// control socket in the machine's `/run` (configure it with `wg` run on the machine).
    pub fn machine_wireguard(&mut self, machine: &Machine, interface: &str) -> anyhow::Result<()> {
        let words = machine.command("wireguard-go", &["-f", interface]);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        self.spawn_daemon(&machine.ns, refs[0], &refs[1..])?;
        let socket = machine
            .run_dir()
            .join(format!("wireguard/{interface}.sock"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while machine.ns.link(interface).is_err() || !socket.exists() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "wireguard-go did not create {interface} on {} within 10 s",
                machine.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The hubs' address inside the tunnels.
fn hub_tunnel(config: &SiteConfig) -> String {
    config
        .appliances()
        .find_map(|a| a.config.hub.as_ref())
        .map(|h| h.tunnel_address.to_string())
        .unwrap_or_default()
}

/// Addresses the file expects on the internet (probe targets, resolvers) that the lab's plan
/// does not already have, hub endpoints excepted.
fn extra_hosts(config: &SiteConfig) -> Vec<Ipv4Addr> {
    let mut taken: BTreeSet<Ipv4Addr> = INTERNET_HOSTS
        .iter()
        .chain([ROUTER_WAN_GATEWAY, HUB_GATEWAY].iter())
        .filter_map(|h| h.parse().ok())
        .collect();
    for machine in config.appliances() {
        if let Some(hub) = &machine.config.hub {
            for endpoint in &hub.endpoints {
                if let std::net::IpAddr::V4(address) = endpoint.ip() {
                    taken.insert(address);
                }
            }
        }
    }
    let mut extra = Vec::new();
    for machine in config.appliances() {
        let agents = &machine.config.agents;
        let wanted = agents
            .uplink_monitor
            .targets
            .iter()
            .map(|t| t.address())
            .chain(
                agents
                    .whereami
                    .upstreams
                    .iter()
                    .filter_map(|u| match u.ip() {
                        std::net::IpAddr::V4(address) => Some(address),
                        std::net::IpAddr::V6(_) => None,
                    }),
            );
        for address in wanted {
            if on_the_lab_internet(address) && taken.insert(address) {
                extra.push(address);
            }
        }
    }
    extra
}

/// `bytes` random bytes as hex, from the kernel.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut buffer))
        .context("reading /dev/urandom")?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}
