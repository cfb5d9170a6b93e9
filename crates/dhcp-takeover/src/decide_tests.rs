use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use fieldnet::config::Config;

use super::*;

const CONFIG: &str = r#"
[site]
name = "lab"
domain = "lab.example"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[areas]]
name = "north"

[[areas]]
name = "south"

[[networks]]
name = "NETWORK1"
area = "north"
subnet = "10.101.0.0/24"
gateway = "10.101.0.1"
interface = "lan0"
pools = ["10.101.0.100-10.101.0.102"]

[[networks.reservations]]
mac = "02:00:00:00:00:aa"
address = "10.101.0.50"
hostname = "till-1"

[[networks]]
name = "NETWORK2"
area = "south"
subnet = "10.102.0.0/24"
gateway = "10.102.0.1"

[[appliances]]
id = 1
name = "one"
area = "north"

[[appliances]]
id = 2
name = "two"
area = "south"
interfaces = { NETWORK2 = "lan1" }

[dhcp_takeover]
lease_time_s = 600
ntp_servers = ["10.101.0.1"]
mtu = 1400
routes = ["10.200.0.0/16"]

[[dhcp_takeover.classes]]
name = "cameras"
mac_prefixes = ["00:80:f0"]
ranges = ["10.101.0.20-10.101.0.21"]
lease_time_s = 86400
"#;

/// Appliance 1's view of [`CONFIG`].
fn config() -> Config {
    fieldnet::config::SiteConfig::from_str(CONFIG, "test.toml")
        .unwrap()
        .view("one")
        .unwrap()
        .clone()
}

const NOW: u64 = 1_800_000_000_000;
const N1: Ipv4Addr = Ipv4Addr::new(10, 101, 0, 1);
/// How long a conflict check waits, in these tests.
const PROBE_MS: u64 = 250;

fn server(probe: bool) -> Server {
    let config = config();
    let probe_ms = probe.then_some(PROBE_MS);
    let mut server = Server::new(Plan::new(&config), 1, 30_000, probe_ms, Leases::default());
    server.serve("NETWORK1", true);
    server
}

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

fn message(kind: MessageType, mac: [u8; 6]) -> Message {
    let mut message = Message::default();
    message
        .set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(0x1234)
        .set_flags(Flags::default())
        .set_chaddr(&mac);
    message.opts_mut().insert(DhcpOption::MessageType(kind));
    message
}

fn with(mut message: Message, option: DhcpOption) -> Message {
    message.opts_mut().insert(option);
    message
}

fn sent(decision: Decision) -> Reply {
    match decision {
        Decision::Send(reply) => reply,
        Decision::Commit {
            reply: Some(reply), ..
        } => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn kind(reply: &Reply) -> MessageType {
    message_type(&reply.message).unwrap()
}

/// DISCOVER (answering any probe with "free") → the offered address.
fn offer(server: &mut Server, now: u64, request: &Message) -> Reply {
    let mut decision = server.handle(now, Some("NETWORK1"), request);
    while let Decision::Probe { .. } = decision {
        // Nothing claims the address before the check's deadline.
        decision = server.tick(now + PROBE_MS).pop().unwrap();
    }
    let reply = sent(decision);
    assert_eq!(kind(&reply), MessageType::Offer);
    reply
}

/// The full DISCOVER/OFFER/REQUEST/ACK exchange → the ACKed lease.
fn bind(server: &mut Server, now: u64, client: [u8; 6]) -> Lease {
    let offered = offer(server, now, &message(MessageType::Discover, client));
    let request = with(
        with(
            message(MessageType::Request, client),
            DhcpOption::ServerIdentifier(N1),
        ),
        DhcpOption::RequestedIpAddress(offered.message.yiaddr()),
    );
    match server.handle(now, Some("NETWORK1"), &request) {
        Decision::Commit {
            lease,
            reply: Some(reply),
        } => {
            assert_eq!(kind(&reply), MessageType::Ack);
            assert_eq!(reply.message.yiaddr(), lease.address);
            lease
        }
        other => panic!("expected an ACK to commit, got {other:?}"),
    }
}

#[test]
fn discover_probes_a_fresh_address_then_offers_it_with_every_option() {
    let mut server = server(true);
    let discover = message(MessageType::Discover, mac(1));
    let Decision::Probe { network, address } = server.handle(NOW, Some("NETWORK1"), &discover)
    else {
        panic!("a never-used address is probed first");
    };
    assert_eq!(network, "NETWORK1");
    assert_eq!(address, Ipv4Addr::new(10, 101, 0, 100));
    assert_eq!(server.next_deadline(), Some(NOW + PROBE_MS));
    assert!(
        server.tick(NOW + PROBE_MS - 1).is_empty(),
        "no answer before the deadline"
    );
    let reply = sent(server.tick(NOW + PROBE_MS).remove(0));
    assert_eq!(server.next_deadline(), None);
    assert_eq!(reply.to, Destination::Broadcast);
    let m = &reply.message;
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234);
    assert_eq!(m.yiaddr(), address);
    let opts = m.opts();
    assert_eq!(
        opts.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(N1))
    );
    assert_eq!(
        opts.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opts.get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert_eq!(
        opts.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    assert_eq!(
        opts.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opts.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![N1]))
    );
    assert_eq!(
        opts.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![N1]))
    );
    assert_eq!(
        opts.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("lab.example".to_owned()))
    );
    assert_eq!(
        opts.get(OptionCode::NtpServers),
        Some(&DhcpOption::NtpServers(vec![N1]))
    );
    assert_eq!(
        opts.get(OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1400))
    );
    // RFC 3442: with option 121 the client ignores the router option, so the default route
    // is in the list too.
    assert_eq!(
        opts.get(OptionCode::ClasslessStaticRoute),
        Some(&DhcpOption::ClasslessStaticRoute(vec![
            ("10.200.0.0/16".parse().unwrap(), N1),
            ("0.0.0.0/0".parse().unwrap(), N1),
        ]))
    );
    // The encoded reply decodes to the same message.
    assert_eq!(decode(&encode(m)).as_ref(), Some(m));
}

#[test]
fn offered_address_is_held_for_its_client_only() {
    let mut server = server(false);
    let first = offer(&mut server, NOW, &message(MessageType::Discover, mac(1)));
    let second = offer(&mut server, NOW, &message(MessageType::Discover, mac(2)));
    assert_ne!(first.message.yiaddr(), second.message.yiaddr());
    // The same client asking again gets the same offer.
    let again = offer(&mut server, NOW, &message(MessageType::Discover, mac(1)));
    assert_eq!(again.message.yiaddr(), first.message.yiaddr());
    // Once the holds have passed, the addresses can go to someone else, lowest first.
    server.tick(NOW + 31_000);
    let third = offer(
        &mut server,
        NOW + 31_000,
        &message(MessageType::Discover, mac(3)),
    );
    assert_eq!(third.message.yiaddr(), Ipv4Addr::new(10, 101, 0, 100));
}

#[test]
fn request_after_offer_commits_then_acks_and_the_client_keeps_its_address() {
    let mut server = server(true);
    let lease = bind(&mut server, NOW, mac(1));
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.expires, NOW + 600_000);
    assert_eq!(lease.mac, Mac(mac(1)));
    // Its own address comes back without a probe (the probe would find the client itself).
    let later = NOW + 700_000;
    assert!(matches!(
        server.handle(later, Some("NETWORK1"), &message(MessageType::Discover, mac(1))),
        Decision::Send(reply) if reply.message.yiaddr() == lease.address
    ));
}

#[test]
fn selecting_another_server_drops_our_offer() {
    let mut server = server(false);
    let offered = offer(&mut server, NOW, &message(MessageType::Discover, mac(1)));
    let request = with(
        with(
            message(MessageType::Request, mac(1)),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 101, 0, 2)),
        ),
        DhcpOption::RequestedIpAddress(offered.message.yiaddr()),
    );
    assert_eq!(
        server.handle(NOW, Some("NETWORK1"), &request),
        Decision::Ignore("client chose another server")
    );
    let other = offer(&mut server, NOW, &message(MessageType::Discover, mac(2)));
    assert_eq!(other.message.yiaddr(), offered.message.yiaddr());
}

#[test]
fn requests_for_addresses_not_theirs_are_naked_by_broadcast() {
    let mut server = server(false);
    let held = bind(&mut server, NOW, mac(1));
    // SELECTING an address we never offered.
    let selecting = with(
        with(
            message(MessageType::Request, mac(2)),
            DhcpOption::ServerIdentifier(N1),
        ),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 101, 0, 101)),
    );
    let reply = sent(server.handle(NOW, Some("NETWORK1"), &selecting));
    assert_eq!(kind(&reply), MessageType::Nak);
    assert_eq!(reply.to, Destination::Broadcast);
    // INIT-REBOOT with someone else's address.
    let reboot = with(
        message(MessageType::Request, mac(2)),
        DhcpOption::RequestedIpAddress(held.address),
    );
    assert_eq!(
        kind(&sent(server.handle(NOW, Some("NETWORK1"), &reboot))),
        MessageType::Nak
    );
    // INIT-REBOOT with an address of another network (the client moved).
    let moved = with(
        message(MessageType::Request, mac(3)),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 102, 0, 100)),
    );
    assert_eq!(
        kind(&sent(server.handle(NOW, Some("NETWORK1"), &moved))),
        MessageType::Nak
    );
}

#[test]
fn init_reboot_of_a_free_address_is_confirmed_authoritatively() {
    let mut server = server(false);
    let reboot = with(
        message(MessageType::Request, mac(4)),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 101, 0, 101)),
    );
    let Decision::Commit { lease, reply } = server.handle(NOW, Some("NETWORK1"), &reboot) else {
        panic!("a free, allowed address is confirmed");
    };
    assert_eq!(lease.address, Ipv4Addr::new(10, 101, 0, 101));
    assert_eq!(kind(&reply.unwrap()), MessageType::Ack);
    // Outside the pool (even on the right network) it is refused.
    let outside = with(
        message(MessageType::Request, mac(5)),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 101, 0, 200)),
    );
    assert_eq!(
        kind(&sent(server.handle(NOW, Some("NETWORK1"), &outside))),
        MessageType::Nak
    );
}

#[test]
fn renew_and_rebind_extend_the_lease_and_answer_the_client_directly() {
    let mut server = server(false);
    let lease = bind(&mut server, NOW, mac(1));
    let mut renew = message(MessageType::Request, mac(1));
    renew.set_ciaddr(lease.address);
    let later = NOW + 300_000;
    let Decision::Commit {
        lease: renewed,
        reply: Some(reply),
    } = server.handle(later, Some("NETWORK1"), &renew)
    else {
        panic!("renewal commits");
    };
    assert_eq!(renewed.expires, later + 600_000);
    assert_eq!(reply.to, Destination::Client(lease.address));
    assert_eq!(reply.message.ciaddr(), lease.address);
    // A renewal from someone claiming another client's address is refused.
    let mut thief = message(MessageType::Request, mac(9));
    thief.set_ciaddr(lease.address);
    assert_eq!(
        kind(&sent(server.handle(later, Some("NETWORK1"), &thief))),
        MessageType::Nak
    );
}

#[test]
fn release_frees_the_address_but_the_client_gets_it_back_first() {
    let mut server = server(false);
    let lease = bind(&mut server, NOW, mac(1));
    let mut release = message(MessageType::Release, mac(1));
    release.set_ciaddr(lease.address);
    let Decision::Commit {
        lease: released,
        reply: None,
    } = server.handle(NOW + 1, Some("NETWORK1"), &release)
    else {
        panic!("a release is stored, not answered");
    };
    assert_eq!(released.state, LeaseState::Released);
    // The client returns: same address.
    let back = offer(
        &mut server,
        NOW + 2,
        &message(MessageType::Discover, mac(1)),
    );
    assert_eq!(back.message.yiaddr(), lease.address);
    // A release of someone else's address changes nothing.
    let mut forged = message(MessageType::Release, mac(2));
    forged.set_ciaddr(lease.address);
    assert!(matches!(
        server.handle(NOW + 3, Some("NETWORK1"), &forged),
        Decision::Ignore(_)
    ));
}

#[test]
fn declined_and_conflicting_addresses_are_quarantined() {
    let mut server = server(true);
    let lease = bind(&mut server, NOW, mac(1));
    let decline = with(
        message(MessageType::Decline, mac(1)),
        DhcpOption::RequestedIpAddress(lease.address),
    );
    let Decision::Commit {
        lease: declined, ..
    } = server.handle(NOW, Some("NETWORK1"), &decline)
    else {
        panic!("a decline is stored");
    };
    assert_eq!(declined.state, LeaseState::Declined);
    assert_eq!(declined.expires, NOW + QUARANTINE_MS);
    // Nobody, not even the decliner, gets it during the quarantine.
    for client in [1, 2] {
        let reply = offer(
            &mut server,
            NOW + 1,
            &message(MessageType::Discover, mac(client)),
        );
        assert_ne!(reply.message.yiaddr(), lease.address);
    }

    // The conflict probe finds .102 answering: quarantined durably, the next one probed.
    let mut server = self::server(true);
    let discover = message(MessageType::Discover, mac(3));
    let Decision::Probe { address, .. } = server.handle(NOW, Some("NETWORK1"), &discover) else {
        panic!("probe first");
    };
    assert!(
        server.claimed(NOW, "NETWORK2", address).is_empty(),
        "a claim on another network is not this check's"
    );
    let decisions = server.claimed(NOW + 10, "NETWORK1", address);
    assert!(matches!(
        &decisions[0],
        Decision::Commit { lease, reply: None } if lease.address == address && lease.state == LeaseState::Declined
    ));
    assert!(matches!(
        decisions[1],
        Decision::Probe { address: next, .. } if next != address
    ));
    // A late claim for the quarantined address changes nothing more.
    assert!(server.claimed(NOW + 20, "NETWORK1", address).is_empty());
}

#[test]
fn a_retransmitted_discover_waits_for_the_running_check() {
    // Found in review: the client held the address, so a second DISCOVER was offered it at
    // once, before the check could find it in use.
    let mut server = server(true);
    let discover = message(MessageType::Discover, mac(1));
    assert!(matches!(
        server.handle(NOW, Some("NETWORK1"), &discover),
        Decision::Probe { .. }
    ));
    assert_eq!(
        server.handle(NOW + 100, Some("NETWORK1"), &discover),
        Decision::Ignore("conflict check in progress")
    );
    assert_eq!(
        kind(&sent(server.tick(NOW + PROBE_MS).remove(0))),
        MessageType::Offer
    );
}

#[test]
fn a_check_ending_after_the_client_went_elsewhere_offers_nothing() {
    let mut server = server(true);
    let discover = message(MessageType::Discover, mac(1));
    let Decision::Probe { address, .. } = server.handle(NOW, Some("NETWORK1"), &discover) else {
        panic!("probe first");
    };
    let elsewhere = with(
        with(
            message(MessageType::Request, mac(1)),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 101, 0, 2)),
        ),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 101, 0, 77)),
    );
    server.handle(NOW + 10, Some("NETWORK1"), &elsewhere);
    assert!(
        server.tick(NOW + PROBE_MS).is_empty(),
        "no offer after the client left"
    );
    // And the address is free for the next client.
    let next = offer(
        &mut server,
        NOW + 300,
        &message(MessageType::Discover, mac(2)),
    );
    assert_eq!(next.message.yiaddr(), address);
}

#[test]
fn a_record_made_in_the_same_millisecond_as_the_last_still_wins() {
    // Found in review: a RELEASE stamped now + 1 and a REQUEST stamped now left the released
    // record in memory while the bound one went to disk.
    let mut server = server(false);
    let lease = bind(&mut server, NOW, mac(1));
    let mut release = message(MessageType::Release, mac(1));
    release.set_ciaddr(lease.address);
    server.handle(NOW, Some("NETWORK1"), &release);
    let reboot = with(
        message(MessageType::Request, mac(1)),
        DhcpOption::RequestedIpAddress(lease.address),
    );
    let Decision::Commit { lease: bound, .. } = server.handle(NOW, Some("NETWORK1"), &reboot)
    else {
        panic!("the address is free again and confirmed");
    };
    assert_eq!(server.leases().get(lease.address), Some(&bound));
    assert_eq!(bound.state, LeaseState::Bound);
}

#[test]
fn stopping_serving_a_network_frees_its_offers() {
    // Found in review: the held address was dropped without going back among the fresh ones.
    let mut server = server(false);
    let first = offer(&mut server, NOW, &message(MessageType::Discover, mac(1)));
    server.serve("NETWORK1", false);
    server.serve("NETWORK1", true);
    let again = offer(&mut server, NOW, &message(MessageType::Discover, mac(2)));
    assert_eq!(again.message.yiaddr(), first.message.yiaddr());
}

#[test]
fn a_full_pool_reuses_the_address_free_longest() {
    let mut server = server(false);
    let leases: Vec<Lease> = (1..=3)
        .map(|c| bind(&mut server, NOW + u64::from(c), mac(c)))
        .collect();
    assert_eq!(
        server.handle(
            NOW + 10,
            Some("NETWORK1"),
            &message(MessageType::Discover, mac(4))
        ),
        Decision::Ignore("no free address")
    );
    // After the leases end, the one that ended first goes to the newcomer.
    let later = NOW + 700_000;
    let reply = offer(&mut server, later, &message(MessageType::Discover, mac(4)));
    assert_eq!(reply.message.yiaddr(), leases[0].address);
}

#[test]
fn classes_get_their_own_range_and_options_and_reservations_their_address() {
    let mut server = server(false);
    let camera = bind(&mut server, NOW, [0x00, 0x80, 0xf0, 1, 2, 3]);
    assert_eq!(camera.address, Ipv4Addr::new(10, 101, 0, 20));
    assert_eq!(camera.class.as_deref(), Some("cameras"));
    assert_eq!(camera.expires, NOW + 86_400_000);

    let till = bind(&mut server, NOW, mac(0xaa));
    assert_eq!(till.address, Ipv4Addr::new(10, 101, 0, 50));
    assert_eq!(till.hostname.as_deref(), Some("till-1"));
    // Nobody else can ask for the reserved address.
    let grab = with(
        message(MessageType::Request, mac(7)),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 101, 0, 50)),
    );
    assert_eq!(
        kind(&sent(server.handle(NOW, Some("NETWORK1"), &grab))),
        MessageType::Nak
    );
}

#[test]
fn relayed_requests_are_placed_by_giaddr_and_answered_to_the_relay() {
    let mut server = server(false);
    server.serve("NETWORK2", true);
    let mut discover = message(MessageType::Discover, mac(1));
    discover.set_giaddr(Ipv4Addr::new(10, 102, 0, 254));
    // A relay on NETWORK2's own LAN (the one place a relay is believed).
    let reply = sent(server.handle(NOW, Some("NETWORK2"), &discover));
    assert_eq!(kind(&reply), MessageType::Offer);
    assert_eq!(reply.network, "NETWORK2");
    assert_eq!(reply.to, Destination::Relay(Ipv4Addr::new(10, 102, 0, 254)));
    // NETWORK2 has the default pool: .10 onwards.
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::new(10, 102, 0, 10));
    assert_eq!(
        reply.message.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 102, 0, 1)))
    );
}

#[test]
fn networks_not_served_are_left_alone() {
    let mut server = server(false);
    assert_eq!(
        server.handle(
            NOW,
            Some("NETWORK2"),
            &message(MessageType::Discover, mac(1))
        ),
        Decision::Ignore("network not served here")
    );
    assert_eq!(
        server.handle(NOW, None, &message(MessageType::Discover, mac(1))),
        Decision::Ignore("no network for this request")
    );
    let mut reply = message(MessageType::Offer, mac(1));
    reply.set_opcode(Opcode::BootReply);
    assert_eq!(
        server.handle(NOW, Some("NETWORK1"), &reply),
        Decision::Ignore("not a request")
    );
}

#[test]
fn inform_gets_options_without_a_lease() {
    let mut server = server(false);
    let mut inform = message(MessageType::Inform, mac(1));
    inform.set_ciaddr(Ipv4Addr::new(10, 101, 0, 7));
    let reply = sent(server.handle(NOW, Some("NETWORK1"), &inform));
    assert_eq!(kind(&reply), MessageType::Ack);
    assert_eq!(reply.to, Destination::Client(Ipv4Addr::new(10, 101, 0, 7)));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(
        reply
            .message
            .opts()
            .get(OptionCode::AddressLeaseTime)
            .is_none()
    );
    assert!(reply.message.opts().get(OptionCode::Router).is_some());
}

#[test]
fn client_identifier_is_the_identity_and_is_echoed() {
    let mut server = server(false);
    let id = DhcpOption::ClientIdentifier(vec![0xff, 1, 2, 3, 4]);
    let first = offer(
        &mut server,
        NOW,
        &with(message(MessageType::Discover, mac(1)), id.clone()),
    );
    assert_eq!(
        first.message.opts().get(OptionCode::ClientIdentifier),
        Some(&id)
    );
    // Same identifier on another MAC (a re-imaged device keeps its DUID): same client.
    let second = offer(
        &mut server,
        NOW,
        &with(message(MessageType::Discover, mac(2)), id),
    );
    assert_eq!(first.message.yiaddr(), second.message.yiaddr());
}

#[test]
fn hostnames_become_dns_labels() {
    // The rule whereami names clients by (fieldnet::names::dns_label), so both agree.
    for (sent, stored) in [
        ("Till-1.local", Some("till-1")),
        ("My_Laptop", Some("my-laptop")),
        ("---", None),
    ] {
        let mut server = server(false);
        let discover = with(
            message(MessageType::Discover, mac(1)),
            DhcpOption::Hostname(sent.to_owned()),
        );
        let offered = offer(&mut server, NOW, &discover);
        let request = with(
            with(discover, DhcpOption::ServerIdentifier(N1)),
            DhcpOption::RequestedIpAddress(offered.message.yiaddr()),
        );
        let mut request = request;
        request
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        let Decision::Commit { lease, .. } = server.handle(NOW, Some("NETWORK1"), &request) else {
            panic!("ACK");
        };
        assert_eq!(lease.hostname.as_deref(), stored, "{sent}");
    }
}

#[test]
fn a_hardware_length_past_the_chaddr_field_is_not_a_message() {
    // Found by the fuzz target: dhcproto decodes hlen = 224, then `chaddr()` would panic.
    let mut bytes = encode(&message(MessageType::Discover, mac(1)));
    bytes[2] = 224;
    assert!(decode(&bytes).is_none());
    bytes[2] = 6;
    assert!(decode(&bytes).is_some());
}

#[test]
fn options_whose_length_dhcproto_assumes_are_checked_first() {
    // Found by the fuzz target: option 152 (a u32) with length 5 trips dhcproto's assertion.
    let mut bytes = encode(&message(MessageType::Discover, mac(1)));
    let end = bytes.len() - 1;
    bytes.splice(end..end, [152, 5, 0, 0, 0, 0, 0]);
    assert!(decode(&bytes).is_none());
    // Client FQDN (81) shorter than its 3 fixed bytes.
    let mut bytes = encode(&message(MessageType::Discover, mac(1)));
    let end = bytes.len() - 1;
    bytes.splice(end..end, [81, 1, 0]);
    assert!(decode(&bytes).is_none());
    let mut bytes = encode(&message(MessageType::Discover, mac(1)));
    let end = bytes.len() - 1;
    bytes.splice(end..end, [81, 3, 0, 0, 0]);
    assert!(decode(&bytes).is_some());
}

#[test]
fn a_taker_hands_out_never_used_addresses_from_the_top_of_the_pool() {
    let config = config();
    let mut owner = Server::new(Plan::new(&config), 1, 30_000, None, Leases::default());
    owner.serve("NETWORK1", true);
    let mut taker = Server::new(Plan::new(&config), 2, 30_000, None, Leases::default());
    taker.serve_for_peer("NETWORK1");
    let low = bind(&mut owner, NOW, mac(1)).address;
    let high = bind(&mut taker, NOW, mac(2)).address;
    assert!(high > low, "{high} is above {low}");
    assert_eq!(
        high,
        Ipv4Addr::new(10, 101, 0, 102),
        "the taker starts at the top"
    );
    // Serving as owner again: bottom up.
    taker.serve("NETWORK1", false);
    taker.serve("NETWORK1", true);
    assert_eq!(
        bind(&mut taker, NOW, mac(3)).address,
        Ipv4Addr::new(10, 101, 0, 100)
    );
}

/// Audit finding 2: leases whose commit failed stayed bound in memory, were published and
/// counted, and would have gone to peers. A record is visible only once stored; one that
/// could not be stored is taken back, and its address is free again.
#[test]
fn unstored_leases_live_on() {
    let mut server = server(false);
    let before = server.leases().cursor();
    let lease = bind(&mut server, NOW, mac(1));
    // Decided: it counts for decisions at once, but nobody else sees it yet.
    assert_eq!(server.leases().get(lease.address), Some(&lease));
    assert_eq!(server.visible(lease.address), None);
    assert_eq!(server.visible_leases().count(), 0);
    assert!(server.changed_since(before, 100).records.is_empty());
    assert_eq!(server.unstored_count(), 1);

    // The disk refused it: taken back, and the address goes to the next client.
    server.unstored(&lease);
    assert_eq!(server.leases().get(lease.address), None);
    assert_eq!(server.unstored_count(), 0);
    let other = bind(&mut server, NOW + 10, mac(2));
    assert_eq!(other.address, lease.address);

    // Stored: now it is seen, and a peer that asked meanwhile hears of it.
    let asked = server.leases().cursor();
    server.stored(&other);
    assert_eq!(server.visible(other.address), Some(&other));
    assert_eq!(
        server.changed_since(asked, 100).records,
        vec![other.clone()]
    );
    assert_eq!(server.unstored_count(), 0);
}

/// A renewal that could not be stored falls back to the stored lease, which stays visible.
#[test]
fn an_unstored_renewal_falls_back_to_the_stored_lease() {
    let mut server = server(false);
    let lease = bind(&mut server, NOW, mac(1));
    server.stored(&lease);
    let renew = with(
        message(MessageType::Request, mac(1)),
        DhcpOption::RequestedIpAddress(lease.address),
    );
    let Decision::Commit { lease: renewed, .. } =
        server.handle(NOW + 1_000, Some("NETWORK1"), &renew)
    else {
        panic!("a renewal commits");
    };
    assert_eq!(server.visible(lease.address), Some(&lease));
    server.unstored(&renewed);
    assert_eq!(server.leases().get(lease.address), Some(&lease));
    assert_eq!(server.visible(lease.address), Some(&lease));
}

/// Audit finding 5: one DHCPREQUEST from a device on NETWORK1 with giaddr set to another
/// network's address made a durable lease in NETWORK2 without an OFFER. On a served network's
/// interface, giaddr may only name that network.
#[test]
fn relay_trust_a_lan_device_cannot_lease_in_another_network_by_setting_giaddr() {
    let mut server = server(false);
    server.serve("NETWORK2", true);
    let mut grab = with(
        message(MessageType::Request, mac(9)),
        DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 102, 0, 20)),
    );
    grab.set_giaddr(Ipv4Addr::new(10, 102, 0, 254));
    assert_eq!(
        server.handle(NOW, Some("NETWORK1"), &grab),
        Decision::Ignore("giaddr of another network from a served LAN")
    );
    let mut discover = message(MessageType::Discover, mac(9));
    discover.set_giaddr(Ipv4Addr::new(10, 102, 0, 254));
    assert_eq!(
        server.handle(NOW, Some("NETWORK1"), &discover),
        Decision::Ignore("giaddr of another network from a served LAN")
    );
    assert!(server.leases().is_empty());
    // A relay on NETWORK1 itself (perfdhcp in the lab) is still answered, for NETWORK1.
    let mut relayed = message(MessageType::Discover, mac(9));
    relayed.set_giaddr(Ipv4Addr::new(10, 101, 0, 77));
    let reply = sent(server.handle(NOW, Some("NETWORK1"), &relayed));
    assert_eq!(reply.network, "NETWORK1");
    assert_eq!(reply.to, Destination::Relay(Ipv4Addr::new(10, 101, 0, 77)));
}

/// Audit finding 7: a DISCOVER with a wrong magic cookie, an all-zero or a broadcast chaddr
/// got an OFFER and held an address. Refused before any decision.
#[test]
fn bad_packets_answered_wrong_cookie_zero_or_broadcast_chaddr() {
    let mut server = server(false);
    let good = encode(&message(MessageType::Discover, mac(1)));
    assert!(decode(&good).is_some());
    let mut no_cookie = good.clone();
    no_cookie[236..240].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(decode(&no_cookie), None);
    assert_eq!(decode(&good[..239]), None);
    for chaddr in [[0; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
        assert_eq!(
            server.handle(
                NOW,
                Some("NETWORK1"),
                &message(MessageType::Discover, chaddr)
            ),
            Decision::Ignore("no usable hardware address"),
            "{chaddr:02x?}"
        );
    }
    assert!(server.leases().is_empty());
}

/// A server on NETWORK1 with a pool of 50 (10.101.0.100-149) and `limits`.
fn server_with_pool_of_50(limits: Limits) -> Server {
    let config = fieldnet::config::SiteConfig::from_str(
        &CONFIG.replace("10.101.0.100-10.101.0.102", "10.101.0.100-10.101.0.149"),
        "test.toml",
    )
    .unwrap()
    .view("one")
    .unwrap()
    .clone();
    let mut server = Server::new(Plan::new(&config), 1, 30_000, None, Leases::default());
    server.set_limits(limits);
    server.serve("NETWORK1", true);
    server
}

/// DISCOVER then REQUEST from `client` at `now`: the decision on the REQUEST, or the DISCOVER's
/// when it was not answered with an offer.
fn dora(server: &mut Server, now: u64, client: [u8; 6]) -> Decision {
    let decision = server.handle(
        now,
        Some("NETWORK1"),
        &message(MessageType::Discover, client),
    );
    let Decision::Send(offer) = decision else {
        return decision;
    };
    let request = with(
        with(
            message(MessageType::Request, client),
            DhcpOption::ServerIdentifier(N1),
        ),
        DhcpOption::RequestedIpAddress(offer.message.yiaddr()),
    );
    server.handle(now, Some("NETWORK1"), &request)
}

/// Audit finding 6: 2,000 DISCOVERs held a 50-address pool while it counted as 1/50 used, and
/// 48 random-MAC DORAs filled it in 5 s. Offers outstanding are capped and counted, new clients
/// are taken at a bounded rate, returning clients are never held back.
#[test]
fn pool_exhaustion_by_made_up_macs_is_capped_and_counted() {
    let mut server = server_with_pool_of_50(Limits::default());
    // A DISCOVER flood: half the pool is offered, no more, and the offers count as used. The
    // network has 52 addresses to give: the pool's 50 and its device class's 2.
    let mut offered = 0;
    for n in 0..2000_u32 {
        let mac = [2, 0xee, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        match server.handle(NOW, Some("NETWORK1"), &message(MessageType::Discover, mac)) {
            Decision::Send(_) => offered += 1,
            Decision::Ignore(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(offered, 26);
    assert_eq!(server.held_on("NETWORK1"), 26);

    // Once the offers lapse, 48 made-up MACs completing the exchange within 5 s: the rest of
    // the allowance, not the pool.
    let later = NOW + 31_000;
    server.tick(later);
    assert_eq!(server.held_on("NETWORK1"), 0);
    let mut acked = 0;
    for n in 0..48_u8 {
        if let Decision::Commit { .. } = dora(
            &mut server,
            later + u64::from(n) * 100,
            [2, 0xdd, 0, 0, 0, n],
        ) {
            acked += 1;
        }
    }
    assert!(acked <= 26, "{acked} leases to made-up MACs in 5 s");
    assert!(server.leases().len() < 50);

    // A returning client is answered whatever the allowance.
    let mut fresh = server_with_pool_of_50(Limits::default());
    let regular = bind(&mut fresh, NOW, mac(1));
    for n in 0..40_u8 {
        dora(&mut fresh, NOW + 1, [2, 0xcc, 0, 0, 0, n]);
    }
    let back = with(
        message(MessageType::Request, mac(1)),
        DhcpOption::RequestedIpAddress(regular.address),
    );
    assert!(matches!(
        fresh.handle(NOW + 2, Some("NETWORK1"), &back),
        Decision::Commit { .. }
    ));
    // And a minute later, new clients are taken again.
    assert!(matches!(
        dora(&mut fresh, NOW + 61_000, [2, 0xbb, 0, 0, 0, 1]),
        Decision::Commit { .. }
    ));
}

#[test]
fn pool_limits_default_to_half_the_pool_and_zero_lifts_them() {
    let limits = Limits::default();
    assert_eq!(limits.offers(50), Some(25));
    assert_eq!(limits.newcomers(245), Some(122));
    assert_eq!(limits.offers(10), Some(16), "a floor for small pools");
    let off = Limits {
        max_offers: Some(0),
        new_clients_per_minute: Some(0),
    };
    assert_eq!((off.offers(50), off.newcomers(50)), (None, None));
    let set = Limits {
        max_offers: Some(7),
        new_clients_per_minute: Some(300),
    };
    assert_eq!((set.offers(50), set.newcomers(50)), (Some(7), Some(300)));
}
