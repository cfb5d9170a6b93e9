//! What whereami answers, decided purely from the asker's address and the question.
//!
//! Views are by asker: the network a query comes *from* decides the `whereami` answer, not the
//! address it was sent to, so a device on a network this appliance serves only during a
//! takeover still learns that network's name. Names under the site zone are answered here
//! (authoritatively, with the zone's SOA on negative answers); everything else is forwarded;
//! askers outside the site networks are refused, so the server is never an open resolver.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use fieldnet::config::Config;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use ipnet::Ipv4Net;

/// Names a DHCP client may never take: browsers and Windows look them up to configure
/// themselves (`wpad`: the proxy auto-configuration, a way to hijack every browser on the site;
/// `isatap`: an IPv6 tunnel router).
pub const BLOCKED_LABELS: [&str; 2] = ["wpad", "isatap"];

/// The label devices look up: TXT `whereami.<zone>`.
pub const WHEREAMI_LABEL: &str = "whereami";
/// TXT `area.whereami.<zone>`: the area of the asker's network.
pub const AREA_LABEL: &str = "area";
/// TXT `appliance.whereami.<zone>`: the id of the appliance that answered.
pub const APPLIANCE_LABEL: &str = "appliance";

/// One network as a view: who is on it, what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    pub subnet: Ipv4Net,
    pub name: String,
    pub area: String,
}

/// What to do with one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The asker is not on a site network.
    Refused,
    /// Answered here, authoritatively.
    Local {
        code: ResponseCode,
        answers: Vec<Record>,
        /// The zone's SOA, on negative answers.
        soa: Option<Box<Record>>,
    },
    /// Not ours: ask the upstreams (through the cache).
    Forward,
}

/// Everything the answers depend on.
#[derive(Debug, Clone)]
pub struct Views {
    zone: Name,
    zone_lower: LowerName,
    whereami: LowerName,
    area: LowerName,
    appliance: LowerName,
    appliance_id: u8,
    networks: Vec<NetworkView>,
    /// Fully qualified names → addresses.
    hosts: HashMap<LowerName, Vec<IpAddr>>,
    /// Reverse names (`…in-addr.arpa.`) → the name they point to.
    reverse: HashMap<LowerName, Name>,
    /// Names from the configuration (appliances, hosts) and whereami's own: never given to a
    /// DHCP client that asks for one.
    fixed: HashSet<LowerName>,
    ttl: u32,
    soa: Record,
}

impl Views {
    /// The views of an appliance's config: every site network, the appliances (by the gateway
    /// addresses of the networks they serve) and the configured hosts.
    pub fn from_config(config: &Config) -> anyhow::Result<Views> {
        let zone = Name::from_ascii(format!("{}.", config.site.domain))?;
        let ttl = config.agents.whereami.local_ttl.as_secs() as u32;
        let networks = config
            .networks
            .iter()
            .map(|n| NetworkView {
                subnet: n.subnet,
                name: n.name.clone(),
                area: n.area.clone(),
            })
            .collect();
        let mut views = Views::new(
            zone,
            config.appliance.id,
            &config.appliance.name,
            ttl,
            networks,
        )?;
        let mut appliances: Vec<(u8, &str)> =
            vec![(config.appliance.id, config.appliance.name.as_str())];
        appliances.extend(config.peers.iter().map(|p| (p.id, p.name.as_str())));
        for (id, name) in appliances {
            for network in config.networks_of(id) {
                views.add_host(name, IpAddr::V4(network.gateway))?;
            }
        }
        for host in &config.agents.whereami.hosts {
            views.add_host(&host.name, host.address)?;
        }
        Ok(views)
    }

    pub fn new(
        zone: Name,
        appliance_id: u8,
        appliance_name: &str,
        ttl: u32,
        networks: Vec<NetworkView>,
    ) -> anyhow::Result<Views> {
        let child = |label: &str| -> anyhow::Result<Name> {
            Ok(Name::from_ascii(label)?.append_domain(&zone)?)
        };
        let whereami = child(WHEREAMI_LABEL)?;
        let area = Name::from_ascii(AREA_LABEL)?.append_domain(&whereami)?;
        let appliance = Name::from_ascii(APPLIANCE_LABEL)?.append_domain(&whereami)?;
        let soa = Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(
                child(appliance_name)?,
                child("hostmaster")?,
                1,
                3600,
                600,
                86_400,
                ttl,
            )),
        );
        Ok(Views {
            zone_lower: LowerName::from(zone.clone()),
            zone,
            whereami: LowerName::from(whereami),
            area: LowerName::from(area),
            appliance: LowerName::from(appliance),
            appliance_id,
            networks,
            hosts: HashMap::new(),
            reverse: HashMap::new(),
            fixed: HashSet::new(),
            ttl,
            soa,
        })
    }

    /// Adds a fixed name (an appliance, a configured host): `<label>.<zone>` → `address`, and
    /// the reverse name.
    pub fn add_host(&mut self, label: &str, address: IpAddr) -> anyhow::Result<()> {
        let name = Name::from_ascii(label)?.append_domain(&self.zone)?;
        self.fixed.insert(LowerName::from(name));
        self.insert_host(label, address)
    }

    fn insert_host(&mut self, label: &str, address: IpAddr) -> anyhow::Result<()> {
        let name = Name::from_ascii(label)?.append_domain(&self.zone)?;
        let entry = self.hosts.entry(LowerName::from(name.clone())).or_default();
        if !entry.contains(&address) {
            entry.push(address);
        }
        self.reverse
            .insert(LowerName::from(Name::from(address)), name);
        Ok(())
    }

    /// Adds a DHCP client's name, unless it is one of the fixed names (a client calling itself
    /// `appliance-1` gets no name), a name others' software looks up to configure itself
    /// ([`BLOCKED_LABELS`]), or a name another device holds (the first owner keeps it). False:
    /// refused.
    pub fn add_lease(&mut self, label: &str, address: IpAddr) -> anyhow::Result<bool> {
        let name = LowerName::from(Name::from_ascii(label)?.append_domain(&self.zone)?);
        if self.fixed.contains(&name)
            || self.whereami.zone_of(&name)
            || BLOCKED_LABELS
                .iter()
                .any(|blocked| label.eq_ignore_ascii_case(blocked))
        {
            return Ok(false);
        }
        if self
            .hosts
            .get(&name)
            .is_some_and(|held| !held.contains(&address))
        {
            return Ok(false);
        }
        self.insert_host(label, address)?;
        Ok(true)
    }

    /// How many names are answered locally.
    pub fn local_names(&self) -> usize {
        self.hosts.len()
    }

    /// The site networks, in configuration order.
    pub fn networks(&self) -> &[NetworkView] {
        &self.networks
    }

    /// Removes `<label>.<zone>` → `address` (a lease that ended).
    pub fn remove_host(&mut self, label: &str, address: IpAddr) -> anyhow::Result<()> {
        let name = LowerName::from(Name::from_ascii(label)?.append_domain(&self.zone)?);
        if let Some(addresses) = self.hosts.get_mut(&name) {
            addresses.retain(|a| *a != address);
            if addresses.is_empty() {
                self.hosts.remove(&name);
            }
        }
        let reverse = LowerName::from(Name::from(address));
        if self.reverse.get(&reverse).map(LowerName::from).as_ref() == Some(&name) {
            self.reverse.remove(&reverse);
        }
        Ok(())
    }

    /// The network `source` is on, if it is on one.
    pub fn view_of(&self, source: IpAddr) -> Option<&NetworkView> {
        let IpAddr::V4(source) = source else {
            return None;
        };
        self.networks.iter().find(|n| n.subnet.contains(&source))
    }

    /// The answer to `name`/`qtype`/`qclass` asked by `source`.
    pub fn decide(
        &self,
        source: IpAddr,
        name: &LowerName,
        original: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Decision {
        // The appliance itself asks from loopback; it belongs to its own first network.
        let view = if source.is_loopback() {
            self.networks.first()
        } else {
            self.view_of(source)
        };
        let Some(view) = view else {
            return Decision::Refused;
        };
        if qclass != DNSClass::IN {
            return Decision::Refused;
        }
        if self.zone_lower.zone_of(name) {
            return self.local(view, name, original, qtype);
        }
        if let Some(target) = self.reverse.get(name) {
            return self.positive(
                qtype == RecordType::PTR,
                Record::from_rdata(original.clone(), self.ttl, RData::PTR(PTR(target.clone()))),
            );
        }
        if self.is_site_reverse(name) {
            return self.negative(ResponseCode::NXDomain);
        }
        Decision::Forward
    }

    fn local(
        &self,
        view: &NetworkView,
        name: &LowerName,
        original: &Name,
        qtype: RecordType,
    ) -> Decision {
        let txt = |text: String| {
            Record::from_rdata(original.clone(), self.ttl, RData::TXT(TXT::new(vec![text])))
        };
        if *name == self.whereami {
            return self.positive(qtype == RecordType::TXT, txt(view.name.clone()));
        }
        if *name == self.area {
            return self.positive(qtype == RecordType::TXT, txt(view.area.clone()));
        }
        if *name == self.appliance {
            return self.positive(qtype == RecordType::TXT, txt(self.appliance_id.to_string()));
        }
        if *name == self.zone_lower && qtype == RecordType::SOA {
            return Decision::Local {
                code: ResponseCode::NoError,
                answers: vec![self.soa.clone()],
                soa: None,
            };
        }
        match self.hosts.get(name) {
            Some(addresses) => {
                let answers: Vec<Record> = addresses
                    .iter()
                    .filter_map(|address| match (address, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                        (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                        _ => None,
                    })
                    .map(|data| Record::from_rdata(original.clone(), self.ttl, data))
                    .collect();
                if answers.is_empty() {
                    self.negative(ResponseCode::NoError)
                } else {
                    Decision::Local {
                        code: ResponseCode::NoError,
                        answers,
                        soa: None,
                    }
                }
            }
            // An existing name with nothing of this type is NODATA; the zone apex and the
            // whereami names exist.
            None if *name == self.zone_lower || self.whereami.zone_of(name) => {
                self.negative(ResponseCode::NoError)
            }
            None => self.negative(ResponseCode::NXDomain),
        }
    }

    fn positive(&self, matches: bool, record: Record) -> Decision {
        if matches {
            Decision::Local {
                code: ResponseCode::NoError,
                answers: vec![record],
                soa: None,
            }
        } else {
            self.negative(ResponseCode::NoError)
        }
    }

    fn negative(&self, code: ResponseCode) -> Decision {
        Decision::Local {
            code,
            answers: Vec::new(),
            soa: Some(Box::new(self.soa.clone())),
        }
    }

    /// Whether `name` is a reverse name inside a site network (answered here, never forwarded:
    /// the internet knows nothing of private addresses).
    fn is_site_reverse(&self, name: &LowerName) -> bool {
        let text = name.to_string();
        let Some(octets) = text.strip_suffix(".in-addr.arpa.") else {
            return false;
        };
        let parts: Vec<u8> = octets
            .split('.')
            .rev()
            .map_while(|p| p.parse().ok())
            .collect();
        if parts.len() != 4 {
            return false;
        }
        let address = Ipv4Addr::new(parts[0], parts[1], parts[2], parts[3]);
        self.networks.iter().any(|n| n.subnet.contains(&address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views() -> Views {
        let networks = vec![
            NetworkView {
                subnet: "10.101.0.0/24".parse().unwrap(),
                name: "NETWORK1".into(),
                area: "north".into(),
            },
            NetworkView {
                subnet: "10.102.0.0/24".parse().unwrap(),
                name: "NETWORK2".into(),
                area: "stage".into(),
            },
        ];
        let mut views = Views::new(
            Name::from_ascii("site.example.").unwrap(),
            1,
            "north-appliance",
            60,
            networks,
        )
        .unwrap();
        views
            .add_host("north-appliance", "10.101.0.1".parse().unwrap())
            .unwrap();
        views
            .add_host("cache", "10.101.0.10".parse().unwrap())
            .unwrap();
        views
            .add_host("cache", "fd00::10".parse().unwrap())
            .unwrap();
        views
    }

    fn ask(views: &Views, source: &str, name: &str, qtype: RecordType) -> Decision {
        let original = Name::from_ascii(name).unwrap();
        views.decide(
            source.parse().unwrap(),
            &LowerName::from(original.clone()),
            &original,
            qtype,
            DNSClass::IN,
        )
    }

    fn texts(decision: &Decision) -> Vec<String> {
        match decision {
            Decision::Local { answers, .. } => answers
                .iter()
                .map(|r| match &r.data {
                    RData::TXT(txt) => txt.to_string(),
                    other => other.to_string(),
                })
                .collect(),
            other => panic!("not local: {other:?}"),
        }
    }

    fn code(decision: &Decision) -> ResponseCode {
        match decision {
            Decision::Local { code, .. } => *code,
            other => panic!("not local: {other:?}"),
        }
    }

    #[test]
    fn each_network_learns_its_own_name_whoever_it_asks() {
        let views = views();
        let one = ask(
            &views,
            "10.101.0.55",
            "whereami.site.example.",
            RecordType::TXT,
        );
        let two = ask(
            &views,
            "10.102.0.7",
            "WhereAmI.Site.Example.",
            RecordType::TXT,
        );
        assert_eq!(texts(&one), ["NETWORK1"]);
        assert_eq!(texts(&two), ["NETWORK2"]);
        // The answer keeps the asker's spelling of the name.
        let Decision::Local { answers, .. } = &two else {
            unreachable!()
        };
        assert_eq!(answers[0].name.to_string(), "WhereAmI.Site.Example.");
        assert_eq!(
            texts(&ask(
                &views,
                "10.102.0.7",
                "area.whereami.site.example.",
                RecordType::TXT
            )),
            ["stage"]
        );
        assert_eq!(
            texts(&ask(
                &views,
                "10.102.0.7",
                "appliance.whereami.site.example.",
                RecordType::TXT
            )),
            ["1"]
        );
    }

    #[test]
    fn askers_outside_the_site_networks_are_refused() {
        let views = views();
        for source in ["192.168.8.1", "203.0.113.7", "10.103.0.1", "fd00::1"] {
            assert_eq!(
                ask(&views, source, "whereami.site.example.", RecordType::TXT),
                Decision::Refused,
                "{source}"
            );
            assert_eq!(
                ask(&views, source, "example.org.", RecordType::A),
                Decision::Refused,
                "{source}"
            );
        }
    }

    #[test]
    fn local_names_answer_by_type_with_nodata_and_nxdomain() {
        let views = views();
        assert_eq!(
            texts(&ask(
                &views,
                "10.101.0.9",
                "cache.site.example.",
                RecordType::A
            )),
            ["10.101.0.10"]
        );
        assert_eq!(
            texts(&ask(
                &views,
                "10.101.0.9",
                "cache.site.example.",
                RecordType::AAAA
            )),
            ["fd00::10"]
        );
        let nodata = ask(&views, "10.101.0.9", "cache.site.example.", RecordType::MX);
        assert_eq!(code(&nodata), ResponseCode::NoError);
        assert!(
            matches!(nodata, Decision::Local { ref answers, soa: Some(_), .. } if answers.is_empty())
        );
        let whereami_a = ask(
            &views,
            "10.101.0.9",
            "whereami.site.example.",
            RecordType::A,
        );
        assert_eq!(code(&whereami_a), ResponseCode::NoError);
        let missing = ask(&views, "10.101.0.9", "nothing.site.example.", RecordType::A);
        assert_eq!(code(&missing), ResponseCode::NXDomain);
        assert!(matches!(missing, Decision::Local { soa: Some(_), .. }));
    }

    #[test]
    fn reverse_names_of_site_addresses_are_answered_here() {
        let views = views();
        assert_eq!(
            texts(&ask(
                &views,
                "10.101.0.9",
                "10.0.101.10.in-addr.arpa.",
                RecordType::PTR
            )),
            ["cache.site.example."]
        );
        let unknown = ask(
            &views,
            "10.101.0.9",
            "99.0.101.10.in-addr.arpa.",
            RecordType::PTR,
        );
        assert_eq!(code(&unknown), ResponseCode::NXDomain);
        assert_eq!(
            ask(
                &views,
                "10.101.0.9",
                "1.2.0.192.in-addr.arpa.",
                RecordType::PTR
            ),
            Decision::Forward
        );
    }

    #[test]
    fn everything_else_is_forwarded_and_leases_come_and_go() {
        let mut views = views();
        assert_eq!(
            ask(&views, "10.101.0.9", "example.org.", RecordType::A),
            Decision::Forward
        );
        assert!(
            views
                .add_lease("laptop-7", "10.101.0.107".parse().unwrap())
                .unwrap()
        );
        assert_eq!(
            texts(&ask(
                &views,
                "10.102.0.9",
                "laptop-7.site.example.",
                RecordType::A
            )),
            ["10.101.0.107"]
        );
        views
            .remove_host("laptop-7", "10.101.0.107".parse().unwrap())
            .unwrap();
        let gone = ask(
            &views,
            "10.102.0.9",
            "laptop-7.site.example.",
            RecordType::A,
        );
        assert_eq!(code(&gone), ResponseCode::NXDomain);
        let reverse = ask(
            &views,
            "10.102.0.9",
            "107.0.101.10.in-addr.arpa.",
            RecordType::PTR,
        );
        assert_eq!(code(&reverse), ResponseCode::NXDomain);
    }

    #[test]
    fn a_client_cannot_take_a_fixed_name() {
        let mut views = views();
        let client = "10.101.0.66".parse().unwrap();
        assert!(!views.add_lease("north-appliance", client).unwrap());
        assert!(!views.add_lease("cache", client).unwrap());
        assert!(!views.add_lease("whereami", client).unwrap());
        assert_eq!(
            texts(&ask(
                &views,
                "10.101.0.9",
                "cache.site.example.",
                RecordType::A
            )),
            ["10.101.0.10"]
        );
        assert!(views.add_lease("printer", client).unwrap());
    }

    /// Audit finding 14: a DHCP host name `wpad` became `wpad.<zone>`, a proxy-autoconfig
    /// hijack. Blocked (any case), as is `isatap`; and a name already held stays its first
    /// owner's.
    #[test]
    fn names_wpad_and_isatap_are_blocked_and_the_first_owner_keeps_a_name() {
        let mut views = views();
        let client = "10.101.0.66".parse().unwrap();
        for label in ["wpad", "WPAD", "isatap"] {
            assert!(!views.add_lease(label, client).unwrap(), "{label}");
        }
        let wpad = ask(&views, "10.101.0.9", "wpad.site.example.", RecordType::A);
        assert_eq!(code(&wpad), ResponseCode::NXDomain);
        assert!(views.add_lease("till", client).unwrap());
        let other = "10.101.0.67".parse().unwrap();
        assert!(!views.add_lease("till", other).unwrap());
        assert!(
            views.add_lease("till", client).unwrap(),
            "a renewal keeps it"
        );
        assert_eq!(
            texts(&ask(
                &views,
                "10.101.0.9",
                "till.site.example.",
                RecordType::A
            )),
            ["10.101.0.66"]
        );
        // Once the owner's lease ends, the name is free for the next.
        views.remove_host("till", client).unwrap();
        assert!(views.add_lease("till", other).unwrap());
    }

    #[test]
    fn loopback_is_the_appliance_itself() {
        let views = views();
        assert_eq!(
            texts(&ask(
                &views,
                "127.0.0.1",
                "whereami.site.example.",
                RecordType::TXT
            )),
            ["NETWORK1"]
        );
    }
}
