//! The rules of `sessions.rs`, and a simulated STS that can go away: twelve hours of outage run
//! in milliseconds.

use super::*;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const T0: u64 = 1_800_000_000_000;

fn mac(last: u8) -> Mac {
    Mac([0, 0x80, 0xf0, 0, 0, last])
}

/// The defaults: one-hour sessions, 30 minutes handed out at least, nothing below 25; a
/// twelve-hour reserve for cameras.
fn sessions() -> Sessions {
    let roles = BTreeMap::from([(
        "cameras".to_owned(),
        ClassRole {
            role_arn: "arn:aws:iam::123456789012:role/cams".to_owned(),
            reserve_duration: Duration::from_secs(12 * 3600),
        },
    )]);
    Sessions::new(
        Policy {
            session: Duration::from_secs(3600),
            min_validity: Duration::from_secs(1800),
            refuse_below: Duration::from_secs(1500),
        },
        "appliance-1",
        roles,
    )
}

/// STS, simulated: answers each fetch at once while `up`.
struct Sts {
    up: bool,
    issued: u64,
    calls: usize,
}

impl Sts {
    fn new() -> Sts {
        Sts {
            up: true,
            issued: 0,
            calls: 0,
        }
    }

    fn answer(&mut self, now: u64, fetch: &Fetch) -> Option<Credentials> {
        self.calls += 1;
        if !self.up {
            return None;
        }
        self.issued += 1;
        Some(Credentials {
            access_key_id: format!("ASIA{}", self.issued),
            secret_access_key: "secret".to_owned(),
            session_token: "token".to_owned(),
            expiration: now + fetch.duration.as_millis() as u64,
            issued: now,
            rendered: Default::default(),
        })
    }

    /// Runs every due fetch at `now`.
    fn serve_all(&mut self, sessions: &mut Sessions, now: u64) -> Vec<Fetch> {
        let fetches = sessions.due(now, usize::MAX);
        for fetch in &fetches {
            let answer = self.answer(now, fetch);
            sessions.fetched(now, &fetch.subject, answer);
        }
        fetches
    }
}

fn left(served: Served<'_>, now: u64) -> Option<u64> {
    match served {
        Served::Own(credentials) | Served::Reserve(credentials) => {
            Some(credentials.expiration - now)
        }
        Served::Unavailable => None,
    }
}

#[test]
fn a_device_gets_its_own_session_at_once_named_for_it() {
    let mut sessions = sessions();
    sessions.device(mac(1), Some("cameras"), "camera-1");
    sessions.device(mac(2), Some("printers"), "printer-1");
    sessions.device(mac(3), None, "unknown");
    let fetches = sessions.due(T0, usize::MAX);
    let device = fetches
        .iter()
        .find(|fetch| fetch.subject == Subject::Device(mac(1)))
        .unwrap();
    assert_eq!(device.session_name, "camera-1");
    assert_eq!(device.source_identity, "00-80-f0-00-00-01");
    assert_eq!(device.duration, Duration::from_secs(3600));
    let reserve = fetches
        .iter()
        .find(|fetch| fetch.subject == Subject::Reserve("cameras".to_owned()))
        .unwrap();
    assert_eq!(reserve.duration, Duration::from_secs(12 * 3600));
    assert_eq!(fetches.len(), 2, "no class role, no session: {fetches:?}");
    // In flight: not asked twice.
    assert!(sessions.due(T0 + 1, usize::MAX).is_empty());
}

#[test]
fn a_device_always_holds_at_least_min_validity_while_sts_answers() {
    let mut sessions = sessions();
    let mut sts = Sts::new();
    sessions.device(mac(1), Some("cameras"), "camera-1");
    for minute in 0..(24 * 60) {
        let now = T0 + minute * MINUTE;
        sts.serve_all(&mut sessions, now);
        match sessions.serve(now, mac(1), "cameras") {
            Served::Own(credentials) => {
                assert!(
                    credentials.expiration - now >= 30 * MINUTE,
                    "minute {minute}"
                )
            }
            other => panic!("minute {minute}: {other:?}"),
        }
    }
    // One device session every 20 minutes, one reserve every 15: about 168 calls a day.
    assert!(sts.calls < 24 * 3 + 24 * 4 + 4, "{} calls", sts.calls);
}

#[test]
fn a_failed_fetch_backs_off_and_is_tried_again() {
    let mut sessions = sessions();
    sessions.device(mac(1), Some("cameras"), "camera-1");
    let subject = Subject::Device(mac(1));
    for fetch in sessions.due(T0, usize::MAX) {
        sessions.fetched(T0, &fetch.subject, None);
    }
    assert!(sessions.due(T0 + 4_999, usize::MAX).is_empty());
    let again = sessions.due(T0 + 5_000, usize::MAX);
    assert!(again.iter().any(|fetch| fetch.subject == subject));
    for fetch in &again {
        sessions.fetched(T0 + 5_000, &fetch.subject, None);
    }
    assert!(sessions.due(T0 + 14_999, usize::MAX).is_empty(), "doubled");
    assert_eq!(sessions.next_due(), Some(T0 + 15_000));
}

#[test]
fn twelve_hours_without_sts_devices_keep_being_served_from_the_reserve_then_are_refused() {
    let mut sessions = sessions();
    let mut sts = Sts::new();
    for id in 1..=3 {
        sessions.device(mac(id), Some("cameras"), &format!("camera-{id}"));
    }
    // An hour with STS.
    let mut now = T0;
    while now < T0 + HOUR {
        sts.serve_all(&mut sessions, now);
        now += MINUTE;
    }
    // The reserve was renewed 15 minutes ago: 12 h less those, less the 25 minutes below
    // which nothing is handed out.
    assert_eq!(
        sessions.runway(now),
        Some(Duration::from_millis(12 * HOUR - 40 * MINUTE))
    );
    // STS goes away for twelve hours.
    sts.up = false;
    let outage_start = now;
    let mut last_served = None;
    let mut refused_from = None;
    while now < outage_start + 12 * HOUR {
        sts.serve_all(&mut sessions, now);
        if now == outage_start + 5 * HOUR {
            // A device joins during the outage, and is served from the reserve at once.
            sessions.device(mac(9), Some("cameras"), "camera-9");
            sts.serve_all(&mut sessions, now);
            assert!(matches!(
                sessions.serve(now, mac(9), "cameras"),
                Served::Reserve(_)
            ));
        }
        for id in [1, 2, 3, 9] {
            match left(sessions.serve(now, mac(id), "cameras"), now) {
                Some(left) => {
                    assert!(refused_from.is_none(), "served again after a refusal");
                    assert!(left >= 25 * MINUTE, "handed out with {left} ms left");
                    if now < outage_start + 10 * HOUR {
                        assert!(
                            left >= 30 * MINUTE,
                            "at {} min: {left}",
                            (now - outage_start) / MINUTE
                        );
                    }
                    last_served = Some(now);
                }
                None => {
                    refused_from.get_or_insert(now);
                }
            }
        }
        // The runway says how long is left, and is right.
        let runway = sessions.runway(now).unwrap();
        if runway > Duration::ZERO {
            assert!(matches!(
                sessions.serve(now, mac(1), "cameras"),
                Served::Own(_) | Served::Reserve(_)
            ));
        }
        now += MINUTE;
    }
    // The reserve was renewed within 15 minutes before the outage, so it carries the devices
    // for 11 h 20 min to 11 h 35 min of the 12 h; then nothing, never expired credentials.
    let served_for = last_served.unwrap() - outage_start;
    assert!(
        (11 * HOUR + 20 * MINUTE..=11 * HOUR + 36 * MINUTE).contains(&served_for),
        "{served_for}"
    );
    assert!(refused_from.is_some());
    assert_eq!(sessions.runway(now), Some(Duration::ZERO));
    // Fetches were tried all along, at most one a minute per subject.
    assert!(sts.calls < 5 * 13 * 60, "{}", sts.calls);
    // STS returns: within a backoff, everyone is served again.
    sts.up = true;
    for _ in 0..2 {
        now += MINUTE;
        sts.serve_all(&mut sessions, now);
    }
    for id in [1, 2, 3, 9] {
        assert!(
            matches!(sessions.serve(now, mac(id), "cameras"), Served::Own(_)),
            "{id}"
        );
    }
}

#[test]
fn a_snapshot_restores_what_is_still_of_use() {
    let mut sessions = sessions();
    let mut sts = Sts::new();
    sessions.device(mac(1), Some("cameras"), "camera-1");
    sts.serve_all(&mut sessions, T0);
    let snapshot = sessions.snapshot();
    assert_eq!((snapshot.devices.len(), snapshot.reserves.len()), (1, 1));

    let mut restarted = self::sessions();
    restarted.restore(snapshot.clone(), T0 + HOUR);
    // The device's session is over; the reserve still serves it.
    assert!(matches!(
        restarted.serve(T0 + HOUR, mac(1), "cameras"),
        Served::Reserve(_)
    ));
    let mut restarted = self::sessions();
    restarted.restore(snapshot, T0 + 12 * HOUR);
    assert_eq!(
        restarted.serve(T0 + 12 * HOUR, mac(1), "cameras"),
        Served::Unavailable
    );
}

#[test]
fn a_forgotten_device_loses_its_session_even_if_a_fetch_comes_back_late() {
    let mut sessions = sessions();
    let mut sts = Sts::new();
    sessions.device(mac(1), Some("cameras"), "camera-1");
    let fetches = sessions.due(T0, usize::MAX);
    assert!(sessions.remove(mac(1)));
    for fetch in &fetches {
        let answer = sts.answer(T0, fetch);
        sessions.fetched(T0, &fetch.subject, answer);
    }
    assert!(sessions.snapshot().devices.is_empty());
    assert_eq!(sessions.device_count(), 0);
}

#[test]
fn at_most_limit_fetches_go_out_and_the_rest_stay_due_without_a_backoff() {
    let mut sessions = sessions();
    for id in 1..=5 {
        sessions.device(mac(id), Some("cameras"), &format!("camera-{id}"));
    }
    let first = sessions.due(T0, 4);
    assert_eq!(first.len(), 4);
    assert_eq!(
        first[0].subject,
        Subject::Reserve("cameras".to_owned()),
        "reserves first"
    );
    // The sixth (a device) was not asked, and is not held back by a backoff.
    let rest = sessions.due(T0, 4);
    assert_eq!(rest.len(), 2);
    assert!(sessions.due(T0, 4).is_empty(), "all in flight");
}
