//! The DHCP peer API's request parsing: any query and tag never panic; a request signed with
//! the key always verifies; a parsed request is taken once and only once; any peer reply body
//! is read without panicking.
#![no_main]

use dhcp_takeover::peer::{Freshness, PeerKey, SYNC_PATH, SyncParams, SyncReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = PeerKey::new(&[7; 32]);
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let query = String::from_utf8_lossy(&data[..split]);
    let tag = String::from_utf8_lossy(data.get(split + 1..).unwrap_or_default());
    let path = format!("{SYNC_PATH}?{query}");
    assert!(key.verify_request(&path, &key.sign_request(&path)));
    let _ = key.verify_request(&path, &tag);
    if let Some(params) = SyncParams::parse(&query) {
        assert!((8..=64).contains(&params.nonce.len()));
        let mut fresh = Freshness::default();
        assert!(fresh.check(&params, params.ts).is_ok());
        assert!(fresh.check(&params, params.ts).is_err(), "taken twice");
        let _ = Freshness::default().check(&params, 0);
        let _ = Freshness::default().check(&params, u64::MAX);
    }
    let _ = serde_json::from_slice::<SyncReply>(data);
});
