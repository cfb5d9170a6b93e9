//! The standard field-site topology of the demo and the system tests: an "internet" bridge with
//! documentation-address hosts, an optional hub, and per area an appliance with NAT'd uplink
//! routers, client hosts, and cable and wifi links to every other appliance.
//! Invariant: addresses follow one fixed plan (see `docs/lab.md`), derived only from the area
//! id and the uplink or client number, so tests can name them without asking the lab.

use std::fmt::Write as _;

use anyhow::Context;

use crate::lab::Lab;
use crate::netns::Netns;

/// The bridge in the internet namespace that routers' WAN ports and the hub attach to.
pub const INTERNET_BRIDGE: &str = "br0";
/// "Internet hosts": addresses on the internet bridge that answer ping (probe targets).
pub const INTERNET_HOSTS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "192.0.2.3"];
/// The hub's address on the internet.
pub const HUB_ADDR: &str = "203.0.113.10";
/// The hub's address inside the tunnels (on each of its tunnel interfaces).
pub const HUB_TUNNEL_ADDR: &str = "10.253.0.254";
/// Gateway of the routers' WAN network, on the internet bridge.
pub(crate) const ROUTER_WAN_GATEWAY: &str = "198.51.100.1";
/// Gateway of the hub, on the internet bridge.
pub(crate) const HUB_GATEWAY: &str = "203.0.113.1";

/// What to build. The default is the demo site: 3 areas, 2 uplinks and 2 clients each, a hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteSpec {
    /// Number of areas (appliances), 1..=9.
    pub areas: u8,
    /// Uplink routers per appliance, 1..=9.
    pub uplinks_per_area: u8,
    /// Client hosts on each area's LAN, 0..=50.
    pub clients_per_area: u8,
    /// Whether to build the hub namespace.
    pub hub: bool,
    /// Whether every appliance gets a WireGuard tunnel to the hub (needs `hub`; userspace
    /// `wireguard-go`, configured with `wg`).
    pub vpn: bool,
}

impl SiteSpec {
    /// `areas` areas with one uplink and `clients` clients each, no hub: what an agent that
    /// serves its own LAN (DNS, DHCP) needs.
    pub fn lan(areas: u8, clients: u8) -> SiteSpec {
        SiteSpec {
            areas,
            uplinks_per_area: 1,
            clients_per_area: clients,
            hub: false,
            vpn: false,
        }
    }
}

impl Default for SiteSpec {
    fn default() -> SiteSpec {
        SiteSpec {
            areas: 3,
            uplinks_per_area: 2,
            clients_per_area: 2,
            hub: true,
            vpn: true,
        }
    }
}

/// A built site. Plain data: the namespaces belong to the [`Lab`] that built it.
#[derive(Clone, Debug)]
pub struct Site {
    /// The internet: bridge [`INTERNET_BRIDGE`] holding the internet hosts, the routers'
    /// gateway 198.51.100.1/24 and the hub's gateway 203.0.113.1/24; forwards between them.
    pub internet: Netns,
    /// Bridge name in `internet`.
    pub internet_bridge: String,
    /// Addresses of the internet hosts (probe targets), [`INTERNET_HOSTS`].
    pub internet_hosts: Vec<String>,
    /// The hub ("AWS"): 203.0.113.10/24 on `hub_if`, default route to the internet.
    pub hub: Option<Netns>,
    /// The hub's interface name (`eth0`).
    pub hub_if: String,
    /// The hub's port on the internet bridge (`hub`).
    pub hub_port: String,
    /// The hub's address without prefix, [`HUB_ADDR`].
    pub hub_addr: String,
    /// The areas, `areas[0]` has id 1.
    pub areas: Vec<AreaLab>,
    /// The hub's address inside the tunnels, [`HUB_TUNNEL_ADDR`] (when `vpn`).
    pub hub_tunnel_addr: String,
    /// Each appliance and hub as a machine of its own (host name, `/run`, `/var/lib`, `/etc`),
    /// in a site built from a site file ([`Lab::site_from_file`]); empty otherwise.
    pub machines: Vec<crate::machine::Machine>,
}

/// One area: its appliance, uplinks, clients and paths to the other areas.
#[derive(Clone, Debug)]
pub struct AreaLab {
    /// Appliance id, 1-based.
    pub id: u8,
    /// The appliance namespace: forwarding on, default route via the first uplink's router.
    pub appliance: Netns,
    /// The LAN bridge in the appliance (`lan0`), holding `gateway`/24; clients are its ports.
    pub lan_if: String,
    /// The area's network, `10.10<id>.0.0/24`.
    pub network: String,
    /// The gateway address on `lan_if`, `10.10<id>.0.1` (no prefix length).
    pub gateway: String,
    /// Local uplinks, in order (`wan0` first).
    pub uplinks: Vec<UplinkLab>,
    /// Client hosts on the LAN.
    pub clients: Vec<ClientLab>,
    /// Cable and wifi links to every other appliance.
    pub paths: Vec<PathLab>,
    /// The WireGuard tunnel to the hub, when the site has a VPN.
    pub vpn: Option<VpnLab>,
    /// Legs into the other areas' LANs, after [`Lab::legs`].
    pub legs: Vec<LegLab>,
}

/// A leg from one appliance into another area's LAN (in production a VLAN carried over the
/// cable), so it can take over that area's network.
#[derive(Clone, Debug)]
pub struct LegLab {
    /// The area whose LAN it reaches.
    pub peer: u8,
    /// Its interface in this appliance, `leg<peer>` (no address until a takeover adds one).
    pub ifname: String,
    /// Its port on the other appliance's LAN bridge, `x<this id>`.
    pub peer_port: String,
}

/// One appliance's WireGuard tunnel to the hub. The hub has one interface per appliance
/// (route-based: which tunnel carries an area is a route, not a WireGuard peer setting).
#[derive(Clone, Debug)]
pub struct VpnLab {
    /// The appliance's tunnel interface, `wg<tag>a<id>` (unique per lab: the userspace
    /// daemon's control socket lives in the shared `/var/run/wireguard`).
    pub ifname: String,
    /// The appliance's tunnel address, `10.253.0.<id>` (/24 on `ifname`).
    pub addr: String,
    /// The hub's interface for this appliance, `wg<tag>h<id>`.
    pub hub_ifname: String,
    /// The hub's WireGuard endpoint for this appliance, `203.0.113.10:<51820 + id>`.
    pub endpoint: String,
}

/// One uplink: a NAT router between an appliance port and the internet bridge.
#[derive(Clone, Debug)]
pub struct UplinkLab {
    /// `a<id>-up<k+1>`, also the router's namespace short name and its internet port name.
    pub name: String,
    /// The router namespace.
    pub router: Netns,
    /// The appliance's interface to this router, `wan<k>`.
    pub appliance_if: String,
    /// The router's LAN interface, `lan` (take it down to fail the uplink with carrier loss).
    pub router_lan_if: String,
    /// The router's LAN address, `192.168.<8+k>.1` (no prefix; the appliance's next hop).
    pub router_lan_addr: String,
    /// The appliance's address on `appliance_if`, `192.168.<8+k>.2/24`.
    pub appliance_addr: String,
    /// The router's WAN interface, `wan` (masqueraded).
    pub router_wan_if: String,
    /// The router's WAN address, `198.51.100.<10*id+k>/24` (what the internet sees).
    pub router_wan_addr: String,
    /// The router's port on the internet bridge, same as `name`.
    pub internet_port: String,
}

/// One client host on an area's LAN.
#[derive(Clone, Debug)]
pub struct ClientLab {
    /// The client namespace.
    pub ns: Netns,
    /// Its address, `10.10<id>.0.<100+k>` for client k = 1, 2, … (no prefix; /24 on the link).
    pub addr: String,
    /// Its interface, `eth0`; default route via the area gateway.
    pub ifname: String,
    /// Its port on the appliance's LAN bridge, `c<k>`.
    pub appliance_port: String,
}

/// Kind of a link between two appliances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The LAG cable: `cab<peer>`, 10.255.<i><j>.0/30. Routes to other areas use it.
    Cable,
    /// The wifi bridge: `wifi<peer>`, 10.254.<i><j>.0/30. No routes use it at first.
    Wifi,
}

/// One end of a link between two appliances, seen from this appliance.
#[derive(Clone, Debug)]
pub struct PathLab {
    /// Cable or wifi.
    pub kind: PathKind,
    /// The other appliance's id.
    pub peer: u8,
    /// This end's interface, `cab<peer>` or `wifi<peer>`.
    pub ifname: String,
    /// This end's address with prefix, e.g. `10.255.12.1/30`.
    pub addr: String,
    /// The other end's address without prefix, e.g. `10.255.12.2`.
    pub peer_addr: String,
}

impl AreaLab {
    /// The path of `kind` to appliance `peer`, if any.
    pub fn path(&self, kind: PathKind, peer: u8) -> Option<&PathLab> {
        self.paths
            .iter()
            .find(|path| path.kind == kind && path.peer == peer)
    }
}

impl Site {
    /// Area `id` (1-based).
    pub fn area(&self, id: u8) -> Option<&AreaLab> {
        self.areas.iter().find(|area| area.id == id)
    }

    /// The machine named `name`, in a site built from a site file.
    pub fn machine(&self, name: &str) -> Option<&crate::machine::Machine> {
        self.machines.iter().find(|machine| machine.name == name)
    }

    /// A readable plan of the site: namespaces, interfaces, addresses and routes.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let ns_prefix = self
            .internet
            .name()
            .strip_suffix(self.internet.short_name())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "site lab {ns_prefix}  ({} areas; run commands with `ip netns exec <namespace> …`)",
            self.areas.len()
        );
        let _ = writeln!(
            out,
            "internet   {:<24} {}: {}/24 (internet hosts), {ROUTER_WAN_GATEWAY}/24 (routers' gateway), {HUB_GATEWAY}/24 (hub gateway)",
            self.internet.name(),
            self.internet_bridge,
            self.internet_hosts.join(", ")
        );
        if let Some(hub) = &self.hub {
            let _ = writeln!(
                out,
                "hub        {:<24} {} {}/24, default via {HUB_GATEWAY} (internet port {})",
                hub.name(),
                self.hub_if,
                self.hub_addr,
                self.hub_port
            );
        }
        for area in &self.areas {
            let _ = writeln!(
                out,
                "area {}     {:<24} {} {}/24, network {}",
                area.id,
                area.appliance.name(),
                area.lan_if,
                area.gateway,
                area.network
            );
            for uplink in &area.uplinks {
                let _ = writeln!(
                    out,
                    "  uplink   {:<24} {} {} <-> appliance {} {}; {} {} NAT (internet port {})",
                    uplink.router.name(),
                    uplink.router_lan_if,
                    uplink.router_lan_addr,
                    uplink.appliance_if,
                    uplink.appliance_addr,
                    uplink.router_wan_if,
                    uplink.router_wan_addr,
                    uplink.internet_port
                );
            }
            for client in &area.clients {
                let _ = writeln!(
                    out,
                    "  client   {:<24} {} {}/24, default via {} (appliance port {})",
                    client.ns.name(),
                    client.ifname,
                    client.addr,
                    area.gateway,
                    client.appliance_port
                );
            }
            for path in &area.paths {
                let _ = writeln!(
                    out,
                    "  {:<8} to area {}: {} {} -> peer {}",
                    match path.kind {
                        PathKind::Cable => "cable",
                        PathKind::Wifi => "wifi",
                    },
                    path.peer,
                    path.ifname,
                    path.addr,
                    path.peer_addr
                );
            }
            if let Some(vpn) = &area.vpn {
                let _ = writeln!(
                    out,
                    "  vpn      {} {}/24 -> hub {} (hub interface {}, wireguard-go)",
                    vpn.ifname, vpn.addr, vpn.endpoint, vpn.hub_ifname
                );
            }
            if let Some(first) = area.uplinks.first() {
                let _ = writeln!(
                    out,
                    "  routes   default via {} dev {}",
                    first.router_lan_addr, first.appliance_if
                );
            }
            for other in self.areas.iter().filter(|other| other.id != area.id) {
                if let Some(cable) = area.path(PathKind::Cable, other.id) {
                    let _ = writeln!(
                        out,
                        "           {} via {} dev {}",
                        other.network, cable.peer_addr, cable.ifname
                    );
                }
            }
        }
        out
    }
}

/// Orders each area's paths (cables first) and routes every other area's network over the cable
/// to it, as the site starts before any agent runs.
pub(crate) fn route_over_cables(areas: &mut [AreaLab]) -> anyhow::Result<()> {
    for area in areas.iter_mut() {
        area.paths
            .sort_by_key(|path| (path.kind == PathKind::Wifi, path.peer));
    }
    for area in areas.iter() {
        for other in areas.iter().filter(|other| other.id != area.id) {
            if let Some(cable) = area.path(PathKind::Cable, other.id) {
                area.appliance.ip(&[
                    "route",
                    "add",
                    &other.network,
                    "via",
                    &cable.peer_addr,
                    "dev",
                    &cable.ifname,
                ])?;
            }
        }
    }
    Ok(())
}

/// Forwarding on and reverse-path filtering off, as every appliance, hub and the internet have.
pub(crate) fn forwarding(ns: &Netns) -> anyhow::Result<()> {
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(key, value)?;
    }
    Ok(())
}

/// Addresses of the /30 between appliances `i` and `j` in `10.<second>.<i><j>.0/30`, as seen
/// from `from`: (own address with prefix, peer address).
fn pair_addresses(second: u8, i: u8, j: u8, from: u8) -> (String, String) {
    let (low, high) = (i.min(j), i.max(j));
    let net = format!("10.{second}.{low}{high}");
    if from == low {
        (format!("{net}.1/30"), format!("{net}.2"))
    } else {
        (format!("{net}.2/30"), format!("{net}.1"))
    }
}

impl Lab {
    /// Builds the site topology of `spec` (see [`Site`] and `docs/lab.md`). With the default
    /// spec: 17 namespaces (internet, hub, 3 × (appliance, 2 routers, 2 clients)).
    pub fn site(&mut self, spec: &SiteSpec) -> anyhow::Result<Site> {
        anyhow::ensure!(
            (1..=9).contains(&spec.areas),
            "site: {} areas, expected 1 to 9 (addresses are 10.10<id>.0.0/24)",
            spec.areas
        );
        anyhow::ensure!(
            (1..=9).contains(&spec.uplinks_per_area),
            "site: {} uplinks per area, expected 1 to 9",
            spec.uplinks_per_area
        );
        anyhow::ensure!(
            spec.clients_per_area <= 50,
            "site: {} clients per area, expected at most 50",
            spec.clients_per_area
        );
        let bridge = INTERNET_BRIDGE;

        let internet = self.internet(&[])?;

        let hub = if spec.hub {
            let hub = self.netns("hub")?;
            self.veth(&hub, "eth0", &internet, "hub")?;
            self.enslave(&internet, "hub", bridge)?;
            self.addr(&hub, "eth0", &format!("{HUB_ADDR}/24"))?;
            hub.ip(&["route", "add", "default", "via", HUB_GATEWAY, "dev", "eth0"])?;
            Some(hub)
        } else {
            None
        };

        let mut areas = Vec::new();
        for id in 1..=spec.areas {
            areas.push(
                self.site_area(spec, id, &internet)
                    .with_context(|| format!("building area {id}"))?,
            );
        }

        for i in 1..=spec.areas {
            for j in (i + 1)..=spec.areas {
                for (kind, second, stem) in
                    [(PathKind::Cable, 255, "cab"), (PathKind::Wifi, 254, "wifi")]
                {
                    let i_if = format!("{stem}{j}");
                    let j_if = format!("{stem}{i}");
                    let (i_addr, i_peer) = pair_addresses(second, i, j, i);
                    let (j_addr, j_peer) = pair_addresses(second, i, j, j);
                    let (a, b) = (usize::from(i - 1), usize::from(j - 1));
                    self.veth(&areas[a].appliance, &i_if, &areas[b].appliance, &j_if)?;
                    self.addr(&areas[a].appliance, &i_if, &i_addr)?;
                    self.addr(&areas[b].appliance, &j_if, &j_addr)?;
                    areas[a].paths.push(PathLab {
                        kind,
                        peer: j,
                        ifname: i_if,
                        addr: i_addr,
                        peer_addr: i_peer,
                    });
                    areas[b].paths.push(PathLab {
                        kind,
                        peer: i,
                        ifname: j_if,
                        addr: j_addr,
                        peer_addr: j_peer,
                    });
                }
            }
        }
        route_over_cables(&mut areas)?;

        if spec.vpn {
            let hub = hub
                .as_ref()
                .context("site: a VPN needs the hub (set `hub: true`)")?;
            self.site_vpn(hub, &mut areas).context("building the VPN")?;
        }

        Ok(Site {
            internet,
            internet_bridge: bridge.to_owned(),
            internet_hosts: INTERNET_HOSTS
                .iter()
                .map(|host| (*host).to_owned())
                .collect(),
            hub,
            hub_if: "eth0".to_owned(),
            hub_port: "hub".to_owned(),
            hub_addr: HUB_ADDR.to_owned(),
            areas,
            hub_tunnel_addr: HUB_TUNNEL_ADDR.to_owned(),
            machines: Vec::new(),
        })
    }

    /// A WireGuard tunnel from every appliance to the hub: `wireguard-go` on both ends, one hub
    /// interface per appliance, the hub routing each area's network and tunnel address into
    /// that area's tunnel. Returns once every tunnel has passed a packet.
    fn site_vpn(&mut self, hub: &Netns, areas: &mut [AreaLab]) -> anyhow::Result<()> {
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            hub.sysctl(key, value)?;
        }
        let tag = self.tag();
        let (hub_private, hub_public) = self.wireguard_key("hub")?;
        for area in areas.iter_mut() {
            let id = area.id;
            let hub_if = format!("wg{tag}h{id}");
            let own_if = format!("wg{tag}a{id}");
            let port = (51820 + u16::from(id)).to_string();
            let endpoint = format!("{HUB_ADDR}:{port}");
            let (own_private, own_public) = self.wireguard_key(&format!("a{id}"))?;
            // The hub end first, so the appliance's first handshake finds it ready.
            self.wireguard(hub, &hub_if)?;
            hub.exec(
                "wg",
                &[
                    "set",
                    &hub_if,
                    "private-key",
                    &hub_private,
                    "listen-port",
                    &port,
                    "peer",
                    &own_public,
                    "allowed-ips",
                    "0.0.0.0/0",
                ],
            )?;
            self.addr(hub, &hub_if, &format!("{HUB_TUNNEL_ADDR}/32"))?;
            hub.ip(&["link", "set", "dev", &hub_if, "up"])?;
            hub.ip(&["route", "add", &format!("10.253.0.{id}/32"), "dev", &hub_if])?;
            hub.ip(&["route", "add", &area.network, "dev", &hub_if])?;

            self.wireguard(&area.appliance, &own_if)?;
            area.appliance.exec(
                "wg",
                &[
                    "set",
                    &own_if,
                    "private-key",
                    &own_private,
                    "peer",
                    &hub_public,
                    "endpoint",
                    &endpoint,
                    "allowed-ips",
                    "0.0.0.0/0",
                    "persistent-keepalive",
                    "25",
                ],
            )?;
            self.addr(&area.appliance, &own_if, &format!("10.253.0.{id}/24"))?;
            area.appliance.ip(&["link", "set", "dev", &own_if, "up"])?;
            area.vpn = Some(VpnLab {
                ifname: own_if,
                addr: format!("10.253.0.{id}"),
                hub_ifname: hub_if,
                endpoint,
            });
        }
        for area in areas.iter() {
            area.appliance
                .wait_reachable(HUB_TUNNEL_ADDR, std::time::Duration::from_secs(20))
                .with_context(|| format!("area {}'s tunnel to the hub", area.id))?;
        }
        Ok(())
    }

    /// Starts `wireguard-go` for `ifname` in `ns` and waits for its interface.
    fn wireguard(&mut self, ns: &Netns, ifname: &str) -> anyhow::Result<()> {
        self.spawn_daemon(ns, "wireguard-go", &["-f", ifname])?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let socket = format!("/var/run/wireguard/{ifname}.sock");
        while ns.link(ifname).is_err() || !std::path::Path::new(&socket).exists() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "wireguard-go did not create {ifname} in {} within 10 s",
                ns.name()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// A fresh WireGuard key pair: (path of the private key file in the lab directory, public
    /// key). Generated by `wg`, which touches no network.
    pub fn wireguard_key(&self, name: &str) -> anyhow::Result<(String, String)> {
        let run = |args: &[&str], input: Option<&str>| -> anyhow::Result<String> {
            use std::io::Write as _;
            let mut child = std::process::Command::new("wg")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("running `wg` (Debian package wireguard-tools)")?;
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .context("wg stdin")?
                    .write_all(input.as_bytes())?;
            }
            drop(child.stdin.take());
            let output = child.wait_with_output()?;
            anyhow::ensure!(output.status.success(), "wg {args:?} failed");
            Ok(String::from_utf8(output.stdout)?.trim().to_owned())
        };
        let private = run(&["genkey"], None)?;
        let public = run(&["pubkey"], Some(&private))?;
        let path = self.dir().join(format!("wg-{name}.key"));
        std::fs::write(&path, format!("{private}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((path.display().to_string(), public))
    }

    /// Gives every appliance a leg into every other area's LAN: a veth `leg<j>` in appliance
    /// `i` whose other end, `x<i>`, is a port of appliance `j`'s LAN bridge.
    pub fn legs(&mut self, site: &mut Site) -> anyhow::Result<()> {
        let bridges: Vec<(u8, Netns, String)> = site
            .areas
            .iter()
            .map(|area| (area.id, area.appliance.clone(), area.lan_if.clone()))
            .collect();
        for area in &mut site.areas {
            for (peer, peer_ns, peer_bridge) in bridges.iter().filter(|(id, ..)| *id != area.id) {
                let ifname = format!("leg{peer}");
                let peer_port = format!("x{}", area.id);
                self.veth(&area.appliance, &ifname, peer_ns, &peer_port)?;
                self.enslave(peer_ns, &peer_port, peer_bridge)?;
                area.legs.push(LegLab {
                    peer: *peer,
                    ifname,
                    peer_port,
                });
            }
        }
        Ok(())
    }

    fn site_area(&mut self, spec: &SiteSpec, id: u8, internet: &Netns) -> anyhow::Result<AreaLab> {
        let appliance = self.netns(&format!("a{id}"))?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            appliance.sysctl(key, value)?;
        }
        let lan_if = "lan0".to_owned();
        let gateway = format!("10.10{id}.0.1");
        self.bridge(&appliance, &lan_if)?;
        self.addr(&appliance, &lan_if, &format!("{gateway}/24"))?;

        let mut uplinks = Vec::new();
        for k in 0..spec.uplinks_per_area {
            // Router k on 192.168.<8+k>.1, the appliance's wan<k> next to it.
            let gateway = std::net::Ipv4Addr::new(192, 168, 8 + k, 1);
            uplinks.push(self.router(
                &appliance,
                internet,
                id,
                usize::from(k),
                &format!("a{id}-up{}", k + 1),
                &format!("wan{k}"),
                gateway,
            )?);
        }
        if let Some(first) = uplinks.first() {
            appliance.ip(&[
                "route",
                "add",
                "default",
                "via",
                &first.router_lan_addr,
                "dev",
                &first.appliance_if,
            ])?;
        }

        let mut clients = Vec::new();
        for k in 1..=spec.clients_per_area {
            let ns = self.netns(&format!("a{id}-c{k}"))?;
            let port = format!("c{k}");
            let addr = format!("10.10{id}.0.{}", 100 + u16::from(k));
            self.veth(&ns, "eth0", &appliance, &port)?;
            self.enslave(&appliance, &port, &lan_if)?;
            self.addr(&ns, "eth0", &format!("{addr}/24"))?;
            ns.ip(&["route", "add", "default", "via", &gateway, "dev", "eth0"])?;
            clients.push(ClientLab {
                ns,
                addr,
                ifname: "eth0".to_owned(),
                appliance_port: port,
            });
        }

        Ok(AreaLab {
            id,
            appliance,
            lan_if,
            network: format!("10.10{id}.0.0/24"),
            gateway,
            uplinks,
            clients,
            paths: Vec::new(),
            vpn: None,
            legs: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_addresses_follow_the_plan() {
        assert_eq!(
            pair_addresses(255, 1, 2, 1),
            ("10.255.12.1/30".to_owned(), "10.255.12.2".to_owned())
        );
        assert_eq!(
            pair_addresses(255, 1, 2, 2),
            ("10.255.12.2/30".to_owned(), "10.255.12.1".to_owned())
        );
        assert_eq!(
            pair_addresses(254, 3, 2, 3),
            ("10.254.23.2/30".to_owned(), "10.254.23.1".to_owned())
        );
    }

    #[test]
    fn default_spec_is_the_demo_site() {
        let spec = SiteSpec::default();
        assert_eq!(
            (
                spec.areas,
                spec.uplinks_per_area,
                spec.clients_per_area,
                spec.hub,
                spec.vpn
            ),
            (3, 2, 2, true, true)
        );
    }
}
