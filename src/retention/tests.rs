//! Fixed cases (DST, ISO week-year boundaries, reasons) and the equivalence property against the
//! simulator's reference implementation of PVE's prune (`pve_sim::prune::mark_group`).

use super::*;
use proptest::prelude::*;
use pve_sim::prune::{Mark, PruneItem, PruneOptions, mark_group};

fn ts(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_second()
}

fn budapest() -> TimeZone {
    TimeZone::get("Europe/Budapest").unwrap()
}

fn items(ats: &[&str]) -> Vec<Item> {
    ats.iter()
        .map(|a| Item {
            id: a.to_string(),
            timestamp: ts(a),
            protected: false,
            owned: true,
        })
        .collect()
}

fn reasons(p: &[Planned]) -> Vec<String> {
    p.iter().map(|p| p.reason.clone()).collect()
}

fn decisions(p: &[Planned]) -> Vec<Decision> {
    p.iter().map(|p| p.decision).collect()
}

use Decision::{Keep, Remove};

#[test]
fn daily_reasons_name_the_rule_the_rank_and_the_day() {
    let it = items(&[
        "2026-11-17T15:00:00Z",
        "2026-11-18T15:00:00Z",
        "2026-11-19T15:00:00Z",
        "2026-11-20T15:00:00Z",
        "2026-11-21T15:00:00Z",
        "2026-11-22T15:00:00Z",
        "2026-11-22T09:00:00Z",
    ]);
    let pol = Policy {
        keep_last: 1,
        keep_daily: 3,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(
        reasons(&p),
        [
            "no rule keeps it",
            "no rule keeps it",
            "keep-daily #3 (2026-11-19)",
            "keep-daily #2 (2026-11-20)",
            "keep-daily #1 (2026-11-21)",
            "keep-last #1",
            // 22nd is already covered by keep-last, so keep-daily skips it entirely
            "no rule keeps it",
        ]
    );
    assert_eq!(
        decisions(&p),
        [Remove, Remove, Keep, Keep, Keep, Keep, Remove]
    );
}

#[test]
fn superseded_items_are_removed_at_once_and_not_rescued_by_later_rules() {
    // keep-hourly=2 opens 12h and 11h; the 11:10 item is superseded by 11:50. keep-daily then
    // cannot keep it (its day is covered anyway, but the mark is already final).
    let it = items(&[
        "2026-11-20T12:00:00Z",
        "2026-11-20T11:50:00Z",
        "2026-11-20T11:10:00Z",
        "2026-11-19T11:10:00Z",
    ]);
    let pol = Policy {
        keep_hourly: 2,
        keep_daily: 5,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(
        reasons(&p),
        [
            "keep-hourly #1 (2026-11-20 12:00 UTC)",
            "keep-hourly #2 (2026-11-20 11:00 UTC)",
            "keep-hourly keeps a newer one of 2026-11-20 11:00 UTC",
            "keep-daily #1 (2026-11-19)",
        ]
    );
}

#[test]
fn all_zero_keeps_everything_protected_and_foreign_are_never_removed() {
    let mut it = items(&[
        "2026-11-20T12:00:00Z",
        "2026-11-19T12:00:00Z",
        "2026-11-18T12:00:00Z",
    ]);
    let p = plan(&it, &Policy::default(), &TimeZone::UTC);
    assert_eq!(decisions(&p), [Keep, Keep, Keep]);
    assert_eq!(p[0].reason, "keep-all (no keep-* option set)");
    it[0].protected = true;
    it[1].owned = false;
    let pol = Policy {
        keep_last: 1,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(reasons(&p), ["protected", "not ours", "keep-last #1"]);
    assert_eq!(Policy::default().to_property_string(), "keep-all=1");
    assert_eq!(
        Policy {
            keep_last: 3,
            keep_daily: 7,
            keep_yearly: 1,
            ..Policy::default()
        }
        .to_property_string(),
        "keep-last=3,keep-daily=7,keep-yearly=1"
    );
}

#[test]
fn dst_fall_back_repeated_hour_is_one_hourly_period_in_budapest() {
    // 2026-10-25: 03:00 CEST -> 02:00 CET. 00:30Z is 02:30 CEST, 01:30Z is 02:30 CET.
    let it = items(&[
        "2026-10-25T01:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-24T23:30:00Z", // 01:30 CEST
        "2026-10-24T22:30:00Z", // 00:30 CEST
    ]);
    let pol = Policy {
        keep_hourly: 3,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &budapest());
    assert_eq!(
        reasons(&p),
        [
            "keep-hourly #1 (2026-10-25 02:00 CET)",
            "keep-hourly keeps a newer one of 2026-10-25 02:00 CEST",
            "keep-hourly #2 (2026-10-25 01:00 CEST)",
            "keep-hourly #3 (2026-10-25 00:00 CEST)",
        ]
    );
    // In UTC the same instants are four distinct hours.
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(decisions(&p), [Keep, Keep, Keep, Remove]);
}

#[test]
fn dst_spring_forward_days_and_hours_follow_local_time() {
    // 2026-03-29: 02:00 CET -> 03:00 CEST. 22:30Z on the 28th is already the 29th in Budapest.
    let it = items(&[
        "2026-03-29T01:30:00Z", // 03:30 CEST
        "2026-03-29T00:30:00Z", // 01:30 CET
        "2026-03-28T23:30:00Z", // 00:30 CET, 29th
        "2026-03-28T22:30:00Z", // 23:30 CET, 28th
    ]);
    let pol = Policy {
        keep_daily: 2,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &budapest());
    assert_eq!(
        reasons(&p),
        [
            "keep-daily #1 (2026-03-29)",
            "keep-daily keeps a newer one of 2026-03-29",
            "keep-daily keeps a newer one of 2026-03-29",
            "keep-daily #2 (2026-03-28)",
        ]
    );
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(decisions(&p), [Keep, Remove, Keep, Remove]);
}

#[test]
fn iso_week_year_boundary_2026_w53() {
    // 2026-12-28 (Mon) .. 2027-01-03 (Sun) is 2026-W53; 2027-01-04 is 2027-W01.
    let it = items(&[
        "2027-01-04T12:00:00Z",
        "2027-01-03T12:00:00Z",
        "2027-01-01T12:00:00Z",
        "2026-12-28T12:00:00Z",
        "2026-12-27T12:00:00Z",
    ]);
    let pol = Policy {
        keep_weekly: 3,
        keep_yearly: 3,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(
        reasons(&p),
        [
            "keep-weekly #1 (2027-W01)",
            "keep-weekly #2 (2026-W53)",
            "keep-weekly keeps a newer one of 2026-W53",
            "keep-weekly keeps a newer one of 2026-W53",
            "keep-weekly #3 (2026-W52)",
        ]
    );
    // Yearly is by calendar year, not ISO year: 2027-01-01 and 2026-12-28 differ.
    let pol = Policy {
        keep_yearly: 2,
        ..Policy::default()
    };
    let p = plan(&it, &pol, &TimeZone::UTC);
    assert_eq!(
        reasons(&p),
        [
            "keep-yearly #1 (2027)",
            "keep-yearly keeps a newer one of 2027",
            "keep-yearly keeps a newer one of 2027",
            "keep-yearly #2 (2026)",
            "keep-yearly keeps a newer one of 2026",
        ]
    );
}

#[test]
fn iso_week_in_local_time_sunday_night_utc_is_monday_in_budapest() {
    // 2026-11-22 (Sun) 23:30Z is Monday 2026-11-23 00:30 CET: ISO week 48 locally, 47 in UTC.
    let it = items(&["2026-11-22T23:30:00Z", "2026-11-22T10:00:00Z"]);
    let pol = Policy {
        keep_weekly: 5,
        ..Policy::default()
    };
    assert_eq!(
        reasons(&plan(&it, &pol, &budapest())),
        ["keep-weekly #1 (2026-W48)", "keep-weekly #2 (2026-W47)"]
    );
    assert_eq!(
        reasons(&plan(&it, &pol, &TimeZone::UTC)),
        [
            "keep-weekly #1 (2026-W47)",
            "keep-weekly keeps a newer one of 2026-W47"
        ]
    );
}

// ---- equivalence with the reference implementation ---------------------------------------

/// Instants where bucket boundaries are interesting.
const ANCHORS: [&str; 8] = [
    "2026-03-29T01:00:00Z", // Budapest spring forward
    "2026-10-25T01:00:00Z", // Budapest fall back
    "2026-12-31T23:00:00Z", // new year in Budapest, 2026-W53
    "2027-01-03T23:00:00Z", // ISO week-year switch in Budapest
    "2020-12-31T12:00:00Z", // 2020 has 53 ISO weeks
    "2021-01-03T12:00:00Z",
    "2026-11-18T11:06:40Z", // the scenario start
    "2024-02-29T12:00:00Z",
];

const ZONES: [&str; 5] = [
    "Europe/Budapest",
    "UTC",
    "America/New_York",
    "Australia/Lord_Howe", // 30-minute DST shift
    "Asia/Kolkata",
];

fn arb_item() -> impl Strategy<Value = (usize, i64, bool, bool)> {
    (
        0..ANCHORS.len(),
        // within ±40 days, often on whole half-hours so ties and shared periods happen
        prop_oneof![
            (-80i64..80).prop_map(|h| h * 1800),
            -3_456_000i64..3_456_000,
            (-40i64..40).prop_map(|d| d * 86_400),
        ],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.9),
    )
}

fn arb_count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 4 => 1u32..5, 1 => 5u32..30]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        arb_count(),
        arb_count(),
        arb_count(),
        arb_count(),
        arb_count(),
        arb_count(),
    )
        .prop_map(|(l, h, d, w, m, y)| Policy {
            keep_last: l,
            keep_hourly: h,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_yearly: y,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn planner_equals_pve_reference(
        raw in prop::collection::vec(arb_item(), 0..40),
        pol in arb_policy(),
        zone in 0..ZONES.len(),
    ) {
        let tz = TimeZone::get(ZONES[zone]).unwrap();
        let items: Vec<Item> = raw
            .iter()
            .enumerate()
            .map(|(k, &(a, off, protected, owned))| Item {
                id: format!("i{k}"),
                timestamp: ts(ANCHORS[a]) + off,
                protected,
                owned,
            })
            .collect();
        let reference: Vec<PruneItem> = items
            .iter()
            .map(|it| PruneItem {
                volid: it.id.clone(),
                ctime: it.timestamp,
                protected: it.protected,
                std_name: it.owned,
            })
            .collect();
        let opts = PruneOptions {
            keep_all: None,
            keep_last: Some(pol.keep_last.into()),
            keep_hourly: Some(pol.keep_hourly.into()),
            keep_daily: Some(pol.keep_daily.into()),
            keep_weekly: Some(pol.keep_weekly.into()),
            keep_monthly: Some(pol.keep_monthly.into()),
            keep_yearly: Some(pol.keep_yearly.into()),
        };
        let want = mark_group(&reference, &opts, &tz);
        let got = plan(&items, &pol, &tz);
        prop_assert_eq!(got.len(), items.len());
        for ((g, w), it) in got.iter().zip(&want).zip(&items) {
            prop_assert_eq!(&g.id, &it.id);
            let expect = match w {
                Mark::Remove => Decision::Remove,
                Mark::Keep | Mark::Protected | Mark::Renamed => Decision::Keep,
            };
            prop_assert_eq!(g.decision, expect, "{} {:?} {}", it.id, w, g.reason);
            if *w == Mark::Protected && it.owned {
                prop_assert_eq!(&g.reason, "protected");
            }
        }
    }
}
