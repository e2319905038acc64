//! The retention planner's decisions with their reasons, snapshot-tested (insta) on fixed
//! histories around DST changes and ISO week/year boundaries — the cases where "which bucket"
//! is easy to get wrong. A changed decision or reason shows up as a snapshot diff; CI never
//! accepts new snapshots on its own (`CI=true`).

use felhom_agent::retention::{Item, Policy, plan};
use jiff::tz::TimeZone;

fn items(stamps: &[&str]) -> Vec<Item> {
    stamps
        .iter()
        .map(|s| {
            let t: jiff::Timestamp = s.parse().unwrap();
            Item {
                id: s.to_string(),
                timestamp: t.as_second(),
                protected: false,
                owned: true,
            }
        })
        .collect()
}

fn render(items: &[Item], policy: &Policy, tz: &str) -> String {
    let tz = TimeZone::get(tz).unwrap();
    let mut out = String::new();
    for p in plan(items, policy, &tz) {
        let local = jiff::Timestamp::from_second(p.timestamp)
            .unwrap()
            .to_zoned(tz.clone());
        out.push_str(&format!(
            "{}  {}  {:?}  {}\n",
            p.id,
            local.strftime("%Y-%m-%d %H:%M %Z (ISO %G-W%V)"),
            p.decision,
            p.reason
        ));
    }
    out
}

fn policy(last: u32, hourly: u32, daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Policy {
    Policy {
        keep_last: last,
        keep_hourly: hourly,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
        keep_yearly: yearly,
    }
}

#[test]
fn hourly_across_the_budapest_fall_back() {
    // 2026-10-25: 03:00 CEST → 02:00 CET; the local 02:xx hour happens twice.
    let it = items(&[
        "2026-10-24T23:30:00Z",
        "2026-10-25T00:10:00Z",
        "2026-10-25T00:40:00Z",
        "2026-10-25T01:10:00Z",
        "2026-10-25T01:40:00Z",
        "2026-10-25T02:10:00Z",
        "2026-10-25T03:10:00Z",
    ]);
    insta::assert_snapshot!(render(&it, &policy(0, 4, 0, 0, 0, 0), "Europe/Budapest"));
}

#[test]
fn daily_across_the_budapest_spring_forward() {
    let it = items(&[
        "2026-03-27T23:30:00Z",
        "2026-03-28T22:30:00Z",
        "2026-03-28T23:30:00Z",
        "2026-03-29T00:30:00Z",
        "2026-03-29T21:59:00Z",
        "2026-03-29T22:01:00Z",
    ]);
    insta::assert_snapshot!(render(&it, &policy(1, 0, 3, 0, 0, 0), "Europe/Budapest"));
}

#[test]
fn weekly_and_yearly_across_the_iso_year_boundary() {
    // 2026-12-31 is ISO 2026-W53; 2027-01-01..03 are still W53; 2027-01-04 starts 2027-W01.
    let it = items(&[
        "2026-12-21T12:00:00Z",
        "2026-12-28T12:00:00Z",
        "2026-12-31T12:00:00Z",
        "2027-01-02T12:00:00Z",
        "2027-01-04T12:00:00Z",
        "2027-01-10T12:00:00Z",
    ]);
    insta::assert_snapshot!(render(&it, &policy(0, 0, 0, 3, 0, 1), "UTC"));
}

#[test]
fn protected_and_foreign_items_are_kept_and_do_not_count() {
    let mut it = items(&[
        "2026-11-18T01:00:00Z",
        "2026-11-19T01:00:00Z",
        "2026-11-20T01:00:00Z",
        "2026-11-21T01:00:00Z",
    ]);
    it[3].protected = true;
    it[2].owned = false;
    insta::assert_snapshot!(render(&it, &policy(1, 0, 1, 0, 0, 0), "Europe/Budapest"));
}
