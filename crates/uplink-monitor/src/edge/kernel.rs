//! The kernel state uplink-monitor owns, through rtnetlink: the main table's default route,
//! one routing table per uplink (its own default route, for probes) and the fwmark rule that
//! selects it; plus the link and address facts it watches.
//!
//! Invariant: routes are only ever replaced, never deleted and re-added, and carry this agent's
//! route protocol number so `ip route` shows who owns them.

use std::net::Ipv4Addr;

use anyhow::Context as _;
use fieldnet::net::{NextHop, TABLE_MAIN};
use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

/// The route protocol number of uplink-monitor's routes (`ip route` shows `proto 201`).
pub const ROUTE_PROTOCOL: u8 = 201;
/// Rule priorities: uplink i's rule sits at `RULE_PRIORITY_BASE + i`, ahead of `main` (32766).
pub const RULE_PRIORITY_BASE: u32 = 1000;

/// The kernel's view of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    /// Administratively up with carrier.
    pub carrier: bool,
    /// Holds at least one IPv4 address.
    pub addressed: bool,
    /// Interface byte counters, for throughput.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl LinkFacts {
    pub fn usable(&self) -> bool {
        self.carrier && self.addressed
    }
}

/// A handle on the kernel's routing state.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

impl Kernel {
    /// Opens a netlink connection and drives it on the current runtime.
    pub fn connect() -> anyhow::Result<Self> {
        Ok(Self {
            handle: fieldnet::net::connect()?,
        })
    }

    /// Carrier and addresses of interface `name`; `None` if it does not exist.
    pub async fn link_facts(&self, name: &str) -> anyhow::Result<Option<LinkFacts>> {
        let Some(link) = fieldnet::net::find_link(&self.handle, name).await? else {
            return Ok(None);
        };
        let index = link.header.index;
        let addressed = self.has_ipv4_address(index).await?;
        let (rx_bytes, tx_bytes) = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(stats) => Some((stats.rx_bytes, stats.tx_bytes)),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some(LinkFacts {
            index,
            carrier: carrier(&link),
            addressed,
            rx_bytes,
            tx_bytes,
        }))
    }

    async fn has_ipv4_address(&self, index: u32) -> anyhow::Result<bool> {
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(address) = addresses.try_next().await.context("listing addresses")? {
            if address.header.family == AddressFamily::Inet
                && address
                    .attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(_)))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Points `table`'s default route at `hop` (table 254 is main).
    pub async fn replace_default(&self, table: u32, hop: NextHop) -> anyhow::Result<()> {
        let everywhere = ipnet::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid prefix");
        fieldnet::net::replace_route(&self.handle, table, everywhere, hop, ROUTE_PROTOCOL).await
    }

    /// Points the main table's default route at `hop`.
    pub async fn set_main_default(&self, hop: NextHop) -> anyhow::Result<()> {
        self.replace_default(TABLE_MAIN, hop).await
    }

    /// The main table's IPv4 default routes, as next hops.
    pub async fn main_defaults(&self) -> anyhow::Result<Vec<NextHop>> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(TABLE_MAIN)
            .build();
        let mut routes = self.handle.route().get(filter).execute();
        let mut hops = Vec::new();
        while let Some(route) = routes.try_next().await.context("listing routes")? {
            if let Some(hop) = default_hop(&route) {
                hops.push(hop);
            }
        }
        Ok(hops)
    }

    /// Makes sure packets marked `mark` use `table`, by exactly one rule at `priority`; other
    /// rules at that priority or with that mark are ours from an older config and go.
    pub async fn ensure_rule(&self, mark: u32, table: u32, priority: u32) -> anyhow::Result<()> {
        let mut rules = self.handle.rule().get(IpVersion::V4).execute();
        let mut present = false;
        let mut stale = Vec::new();
        while let Some(rule) = rules.try_next().await.context("listing rules")? {
            let has = |wanted: &RuleAttribute| rule.attributes.iter().any(|a| a == wanted);
            let ours = has(&RuleAttribute::FwMark(mark)) || has(&RuleAttribute::Priority(priority));
            if !ours {
                continue;
            }
            let rule_table = rule
                .attributes
                .iter()
                .find_map(|a| match a {
                    RuleAttribute::Table(id) => Some(*id),
                    _ => None,
                })
                .unwrap_or(u32::from(rule.header.table));
            let exact = has(&RuleAttribute::FwMark(mark))
                && has(&RuleAttribute::Priority(priority))
                && rule_table == table
                && rule.header.action == RuleAction::ToTable;
            if exact && !present {
                present = true;
            } else {
                stale.push(rule);
            }
        }
        for rule in stale {
            self.handle
                .rule()
                .del(rule)
                .execute()
                .await
                .context("removing a stale rule")?;
        }
        if present {
            return Ok(());
        }
        self.handle
            .rule()
            .add()
            .v4()
            .fw_mark(mark)
            .priority(priority)
            .table_id(table)
            .action(RuleAction::ToTable)
            .execute()
            .await
            .with_context(|| {
                format!("adding rule fwmark {mark:#x} lookup {table} priority {priority}")
            })
    }
}

fn carrier(link: &LinkMessage) -> bool {
    let flags = link.header.flags;
    let oper_up = link.attributes.iter().all(|a| match a {
        LinkAttribute::OperState(state) => !matches!(
            state,
            rtnetlink::packet_route::link::State::Down
                | rtnetlink::packet_route::link::State::LowerLayerDown
        ),
        _ => true,
    });
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp) && oper_up
}

/// Carrier as a link event tells it.
pub fn event_carrier(link: &LinkMessage) -> bool {
    carrier(link)
}

fn default_hop(route: &RouteMessage) -> Option<NextHop> {
    if route.header.address_family != AddressFamily::Inet
        || route.header.destination_prefix_length != 0
    {
        return None;
    }
    let mut gateway = None;
    let mut interface = None;
    let mut table = u32::from(route.header.table);
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(RouteAddress::Inet(address)) => gateway = Some(*address),
            RouteAttribute::Oif(index) => interface = Some(*index),
            RouteAttribute::Table(id) => table = *id,
            _ => {}
        }
    }
    (table == TABLE_MAIN).then_some(())?;
    Some(NextHop {
        gateway: gateway?,
        interface: interface?,
    })
}
