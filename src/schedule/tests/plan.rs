//! `plan` with an injected clock, and `sleep_for`.
//!
//! Schedule `0 2 * * *` in Europe/Budapest (summer: 02:00 CEST = 00:00Z), splay 7m13s,
//! catch-up 12h unless a test says otherwise.

use std::time::Duration;

use super::super::{MISSED_COUNT_CAP, Plan, WaitReason, plan, sleep_for};
use super::{sched, ts};

const SPLAY: Duration = Duration::from_secs(7 * 60 + 13);
const CATCH_UP: Duration = Duration::from_secs(12 * 3600);

fn daily(last: Option<&str>, now: &str) -> Plan {
    let s = sched("0 2 * * *", "Europe/Budapest");
    plan(&s, last.map(ts), ts(now), CATCH_UP, SPLAY)
}

fn wait(until: &str, scheduled: &str, reason: WaitReason) -> Plan {
    Plan::WaitUntil {
        until: ts(until),
        scheduled: ts(scheduled),
        reason,
    }
}

const LAST: Option<&str> = Some("2026-06-10T00:00:00Z");

#[test]
fn waits_for_next_fire_after_last_run_plus_splay() {
    assert_eq!(
        daily(LAST, "2026-06-10T12:00:00Z"),
        wait(
            "2026-06-11T00:07:13Z",
            "2026-06-11T00:00:00Z",
            WaitReason::Scheduled
        )
    );
    // One second before the splayed due time it still waits; at it, it runs.
    assert_eq!(
        daily(LAST, "2026-06-11T00:07:12Z"),
        wait(
            "2026-06-11T00:07:13Z",
            "2026-06-11T00:00:00Z",
            WaitReason::Scheduled
        )
    );
    assert_eq!(
        daily(LAST, "2026-06-11T00:07:13Z"),
        Plan::RunNow {
            scheduled: ts("2026-06-11T00:00:00Z"),
            skipped: 0
        }
    );
}

#[test]
fn guest_off_over_night_within_catch_up_runs_once_now() {
    // Off from 2026-06-10 22:00 until 11:00 local; the 02:00 run is 8h52m47s late.
    assert_eq!(
        daily(LAST, "2026-06-11T09:00:00Z"),
        Plan::RunNow {
            scheduled: ts("2026-06-11T00:00:00Z"),
            skipped: 0
        }
    );
    // Exactly at the catch-up limit still runs.
    assert_eq!(
        daily(LAST, "2026-06-11T12:07:13Z"),
        Plan::RunNow {
            scheduled: ts("2026-06-11T00:00:00Z"),
            skipped: 0
        }
    );
}

#[test]
fn guest_off_beyond_catch_up_records_one_miss() {
    assert_eq!(
        daily(LAST, "2026-06-11T12:07:14Z"),
        Plan::Missed {
            scheduled: ts("2026-06-11T00:00:00Z"),
            next: ts("2026-06-12T00:07:13Z"),
            missed_count: 1
        }
    );
}

#[test]
fn many_days_off() {
    // Ten fires missed (06-11 .. 06-20); the latest is within catch-up: run it, skip nine.
    assert_eq!(
        daily(LAST, "2026-06-20T05:00:00Z"),
        Plan::RunNow {
            scheduled: ts("2026-06-20T00:00:00Z"),
            skipped: 9
        }
    );
    // Later that day the latest is beyond catch-up: one missed record covering all ten.
    assert_eq!(
        daily(LAST, "2026-06-20T23:00:00Z"),
        Plan::Missed {
            scheduled: ts("2026-06-20T00:00:00Z"),
            next: ts("2026-06-21T00:07:13Z"),
            missed_count: 10
        }
    );
    // After persisting the missed `scheduled`, the next plan waits for the following fire.
    assert_eq!(
        daily(Some("2026-06-20T00:00:00Z"), "2026-06-20T23:00:00Z"),
        wait(
            "2026-06-21T00:07:13Z",
            "2026-06-21T00:00:00Z",
            WaitReason::Scheduled
        )
    );
}

#[test]
fn fresh_install_never_runs_immediately() {
    // Installed 3 minutes after today's fire, inside its splay window: wait for tomorrow.
    assert_eq!(
        daily(None, "2026-06-10T00:03:00Z"),
        wait(
            "2026-06-11T00:07:13Z",
            "2026-06-11T00:00:00Z",
            WaitReason::FreshInstall
        )
    );
}

#[test]
fn clock_stepped_backwards() {
    // The run for 06-11 02:00 happened, then the clock was stepped back 30 minutes: the fire
    // already run is not repeated.
    assert_eq!(
        daily(Some("2026-06-11T00:00:00Z"), "2026-06-10T23:30:00Z"),
        wait(
            "2026-06-12T00:07:13Z",
            "2026-06-12T00:00:00Z",
            WaitReason::ClockBehindLastRun
        )
    );
    // A last run far in the future (bad RTC at the time) does not stall the schedule.
    assert_eq!(
        daily(Some("2027-01-01T01:00:00Z"), "2026-06-10T12:00:00Z"),
        wait(
            "2026-06-11T00:07:13Z",
            "2026-06-11T00:00:00Z",
            WaitReason::ClockBehindLastRun
        )
    );
}

#[test]
fn catch_up_zero_still_tolerates_a_late_wake() {
    let s = sched("0 2 * * *", "Europe/Budapest");
    let p = |now| plan(&s, LAST.map(ts), ts(now), Duration::ZERO, Duration::ZERO);
    assert_eq!(
        p("2026-06-11T00:01:00Z"),
        Plan::RunNow {
            scheduled: ts("2026-06-11T00:00:00Z"),
            skipped: 0
        }
    );
    assert_eq!(
        p("2026-06-11T00:01:01Z"),
        Plan::Missed {
            scheduled: ts("2026-06-11T00:00:00Z"),
            next: ts("2026-06-12T00:00:00Z"),
            missed_count: 1
        }
    );
}

#[test]
fn dense_schedule_long_outage_is_counted() {
    let s = sched("*/5 * * * *", "UTC");
    let got = plan(
        &s,
        Some(ts("2026-01-01T00:00:00Z")),
        ts("2026-06-01T00:02:00Z"),
        CATCH_UP,
        Duration::ZERO,
    );
    // 151 days of 288 fires, the last one run now.
    assert_eq!(
        got,
        Plan::RunNow {
            scheduled: ts("2026-06-01T00:00:00Z"),
            skipped: 151 * 288 - 1
        }
    );
    let s = sched("* * * * *", "UTC");
    let got = plan(
        &s,
        Some(ts("2025-01-01T00:00:00Z")),
        ts("2026-06-01T00:00:30Z"),
        Duration::ZERO,
        Duration::ZERO,
    );
    assert_eq!(
        got,
        Plan::RunNow {
            scheduled: ts("2026-06-01T00:00:00Z"),
            skipped: MISSED_COUNT_CAP - 1
        }
    );
}

#[test]
fn sparse_schedule_latest_fire_found_far_back() {
    let s = sched("0 0 1 1 *", "UTC");
    assert_eq!(
        plan(
            &s,
            Some(ts("2020-01-01T00:00:00Z")),
            ts("2026-06-01T00:00:00Z"),
            CATCH_UP,
            Duration::ZERO
        ),
        Plan::Missed {
            scheduled: ts("2026-01-01T00:00:00Z"),
            next: ts("2027-01-01T00:00:00Z"),
            missed_count: 6
        }
    );
}

#[test]
fn no_future_run_at_end_of_calendar() {
    let s = sched("0 0 1 1 *", "UTC");
    assert_eq!(
        plan(&s, None, ts("5000-06-01T00:00:00Z"), CATCH_UP, SPLAY),
        Plan::NoFutureRun
    );
}

#[test]
fn sleep_is_capped_and_never_negative() {
    let cap = Duration::from_secs(300);
    let now = ts("2026-06-10T00:00:00Z");
    assert_eq!(
        sleep_for(now, ts("2026-06-10T00:10:00Z"), cap),
        Duration::from_secs(300)
    );
    assert_eq!(
        sleep_for(now, ts("2026-06-10T00:02:00.5Z"), cap),
        Duration::from_millis(120_500)
    );
    assert_eq!(sleep_for(now, now, cap), Duration::ZERO);
    assert_eq!(
        sleep_for(now, ts("2026-06-09T23:00:00Z"), cap),
        Duration::ZERO
    );
}
