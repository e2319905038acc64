//! Property tests of `next_after` against an independent brute-force oracle that steps minute by
//! minute over real instants near DST changes in several zones.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;

use super::super::CronSchedule;
use super::{ts, tz};

/// A small cron grammar the oracle understands: minute, hour and day-of-week sets.
#[derive(Debug, Clone)]
struct Expr {
    minute: String,
    hour: String,
    dow: String,
}

impl Expr {
    fn text(&self) -> String {
        format!("{} {} * * {}", self.minute, self.hour, self.dow)
    }
    fn fixed(&self) -> bool {
        !self.minute.contains('*') && !self.hour.contains('*')
    }
    fn matches(&self, wall: DateTime) -> bool {
        let wd = i64::from(wall.weekday().to_sunday_zero_offset());
        in_set(&self.minute, 0, 59, i64::from(wall.minute()))
            && in_set(&self.hour, 0, 23, i64::from(wall.hour()))
            && in_set(&self.dow, 0, 6, wd)
    }
}

/// Membership in a field made of `*`, `*/n`, `a-b`, and comma lists of numbers.
fn in_set(field: &str, lo: i64, hi: i64, v: i64) -> bool {
    field.split(',').any(|item| {
        if item == "*" {
            true
        } else if let Some(step) = item.strip_prefix("*/") {
            (v - lo) % step.parse::<i64>().unwrap() == 0 && v <= hi
        } else if let Some((a, b)) = item.split_once('-') {
            (a.parse().unwrap()..=b.parse().unwrap()).contains(&v)
        } else {
            item.parse::<i64>().unwrap() == v
        }
    })
}

/// Oracle: is the minute-aligned instant `u` a fire time of `e` in `zone`?
fn is_fire(e: &Expr, zone: &TimeZone, u: Timestamp) -> bool {
    let wall = zone.to_datetime(u);
    match zone.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Fold { after, .. } if after.to_timestamp(wall).unwrap() == u => {
            // Second pass of a repeated wall time: interval jobs only.
            if !e.fixed() {
                return e.matches(wall);
            }
        }
        _ => {
            if e.matches(wall) {
                return true;
            }
        }
    }
    if e.fixed() {
        // A fixed job whose wall time was skipped by a gap that ends at `u` fires at `u`.
        let before = zone.to_offset(u - SignedDuration::from_nanos(1));
        let after = zone.to_offset(u);
        if after > before {
            let mut c = before.to_datetime(u);
            let end = after.to_datetime(u);
            while c < end {
                if e.matches(c) {
                    return true;
                }
                c = c.checked_add(1.minute()).unwrap();
            }
        }
    }
    false
}

fn expr() -> impl Strategy<Value = Expr> {
    let minute = prop_oneof![
        (0..60i64).prop_map(|m| m.to_string()),
        prop::sample::select(vec![1, 5, 7, 15, 20, 30]).prop_map(|n| format!("*/{n}")),
        (0..30i64, 30..60i64).prop_map(|(a, b)| format!("{a},{b}")),
    ];
    // Hours 1-3 hold the DST changes of every zone below, so they are drawn often.
    let hour = prop_oneof![
        Just("*".to_string()),
        (1..4i64).prop_map(|h| h.to_string()),
        (0..24i64).prop_map(|h| h.to_string()),
        prop::sample::select(vec![2, 3, 5]).prop_map(|n| format!("*/{n}")),
        (1..4i64, 4..24i64).prop_map(|(a, b)| format!("{a},{b}")),
        (0..3i64, 2..5i64).prop_map(|(a, b)| format!("{a}-{}", a.max(b))),
    ];
    let dow = prop_oneof![
        3 => Just("*".to_string()),
        1 => (0..7i64).prop_map(|d| d.to_string()),
    ];
    (minute, hour, dow).prop_map(|(minute, hour, dow)| Expr { minute, hour, dow })
}

/// Zones with their 2026 DST changes (UTC), to start near.
const ZONES: [(&str, &[&str]); 6] = [
    (
        "Europe/Budapest",
        &["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"],
    ),
    (
        "Australia/Sydney",
        &["2026-04-04T16:00:00Z", "2026-10-03T16:00:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        &["2026-04-04T15:00:00Z", "2026-10-03T15:30:00Z"],
    ),
    (
        "America/New_York",
        &["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"],
    ),
    // Two-hour shifts: +00 → +02 and back.
    (
        "Antarctica/Troll",
        &["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"],
    ),
    ("UTC", &["2026-06-01T00:00:00Z"]),
];

/// A zone and an instant near one of its DST changes: usually within 4 hours, else within
/// 2 days; whole seconds or sub-second.
fn zone_and_instant() -> impl Strategy<Value = (&'static str, Timestamp)> {
    (
        prop::sample::select(ZONES.to_vec()),
        any::<prop::sample::Index>(),
        prop_oneof![
            2 => -4 * 3600i64..4 * 3600,
            1 => -2 * 86_400i64..2 * 86_400,
        ],
        prop_oneof![3 => Just(0i32), 1 => 0..1_000_000_000i32],
    )
        .prop_map(|((zone, changes), i, secs, nanos)| {
            (
                zone,
                ts(i.get::<&str>(changes)) + SignedDuration::new(secs, nanos),
            )
        })
}

fn compile(e: &Expr, zone: &str) -> CronSchedule {
    CronSchedule::parse(&e.text(), tz(zone)).unwrap()
}

/// The first whole minute strictly after `t`.
fn minute_after(t: Timestamp) -> Timestamp {
    let s = t.as_second().div_euclid(60) * 60 + 60;
    Timestamp::from_second(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn next_after_is_the_first_fire(
        e in expr(),
        (zone, t) in zone_and_instant(),
    ) {
        let s = compile(&e, zone);
        let z = tz(zone);
        let n = s.next_after(t).expect("fires within years");
        prop_assert!(n > t);
        prop_assert_eq!(n.subsec_nanosecond(), 0);
        prop_assert_eq!(n.as_second() % 60, 0);
        prop_assert!(is_fire(&e, &z, n), "{} in {}: {} is not a fire", e.text(), zone, n);
        // No fire strictly between t and n (within a 3-day brute-force window).
        let limit = n.min(t + SignedDuration::from_hours(72));
        let mut u = minute_after(t);
        while u < limit {
            prop_assert!(!is_fire(&e, &z, u), "{} in {}: missed fire {} before {}", e.text(), zone, u, n);
            u += SignedDuration::from_mins(1);
        }
    }

    #[test]
    fn next_after_is_monotonic(
        e in expr(),
        (zone, t) in zone_and_instant(),
        gap in 0i64..2 * 86_400,
    ) {
        let s = compile(&e, zone);
        let later = t + SignedDuration::from_secs(gap);
        let (a, b) = (s.next_after(t).unwrap(), s.next_after(later).unwrap());
        prop_assert!(a <= b, "{}: next_after({}) = {} > next_after({}) = {}", e.text(), t, a, later, b);
        // Chaining never skips: the fire after `t` reaches `b` by stepping.
        let mut cur = a;
        while cur < b {
            cur = s.next_after(cur).unwrap();
        }
        prop_assert_eq!(cur, b);
    }
}
