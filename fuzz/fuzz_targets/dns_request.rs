//! Any datagram from any IPv4 source, as whereami's request path sees it: the answer cache's
//! parser keys it (and, as if it were a cached response, finds its TTLs), hickory parses it
//! into a request, and whereami decides the answer. None may panic, whatever the bytes.
//! Input: 4 bytes of source address, then the DNS message.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

use hickory_proto::rr::Name;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use libfuzzer_sys::fuzz_target;
use whereami::answer::{NetworkView, Views};

static VIEWS: LazyLock<Views> = LazyLock::new(|| {
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
        "north",
        60,
        networks,
    )
    .unwrap();
    views
        .add_host("cache", "10.101.0.10".parse().unwrap())
        .unwrap();
    views
});

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let source = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
    let mut key = [0; whereami::packet::MAX_KEY];
    if let Some(query) = whereami::packet::parse(&data[4..], 1, 1232, &mut key) {
        assert!(query.key_len <= key.len() && query.question.end <= data.len() - 4);
    }
    let _ = whereami::packet::ttl_fields(&data[4..]);
    let Ok(request) = Request::from_bytes(
        data[4..].to_vec(),
        SocketAddr::new(source, 5353),
        Protocol::Udp,
    ) else {
        return;
    };
    if let Ok(info) = request.request_info() {
        let query = info.query;
        let _ = VIEWS.decide(
            source,
            query.name(),
            query.original().name(),
            query.query_type(),
            query.query_class(),
        );
    }
});
