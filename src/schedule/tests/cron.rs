//! Fixed cases for `CronSchedule`: parsing and exact fire instants around DST changes.
//!
//! Europe/Budapest 2026: 03-29 01:00Z clocks go 02:00 CET → 03:00 CEST; 10-25 01:00Z clocks go
//! 03:00 CEST → 02:00 CET. Australia/Sydney 2026: 04-04 16:00Z 03:00 AEDT → 02:00 AEST;
//! 10-03 16:00Z 02:00 AEST → 03:00 AEDT. Australia/Lord_Howe shifts by 30 minutes.

use super::super::{CronSchedule, ScheduleError};
use super::{fires, sched, ts, tz};

#[test]
fn budapest_spring_forward_fixed_job_runs_at_first_time_after_gap() {
    let s = sched("30 2 * * *", "Europe/Budapest");
    assert!(s.is_wall_clock_fixed());
    assert_eq!(
        fires(&s, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
    // The moved fire is found from just before it, and not again from it.
    assert_eq!(
        s.next_after(ts("2026-03-29T00:59:59Z")),
        Some(ts("2026-03-29T01:00:00Z"))
    );
    assert_eq!(
        s.next_after(ts("2026-03-29T01:00:00Z")),
        Some(ts("2026-03-30T00:30:00Z"))
    );
}

#[test]
fn budapest_fall_back_fixed_job_runs_once() {
    let s = sched("30 2 * * *", "Europe/Budapest");
    assert_eq!(
        fires(&s, "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:30:00Z", // 02:30 CEST
            "2026-10-25T00:30:00Z", // first 02:30 (CEST) only
            "2026-10-26T01:30:00Z", // 02:30 CET
        ]
    );
    // From inside the repeated hour's second pass (02:10 CET) the second 02:30 is not a fire.
    assert_eq!(
        s.next_after(ts("2026-10-25T01:10:00Z")),
        Some(ts("2026-10-26T01:30:00Z"))
    );
}

#[test]
fn budapest_fixed_hour_list_follows_fixed_rules() {
    // croner alone treats a multi-hour list as an interval job (skipped in the gap, twice in the
    // fold); Vixie cron and this module treat it as fixed.
    let s = sched("30 2,14 * * *", "Europe/Budapest");
    assert_eq!(
        fires(&s, "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-28T13:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T12:30:00Z"
        ]
    );
    assert_eq!(
        fires(&s, "2026-10-24T20:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-25T13:30:00Z"]
    );
    // Two fire times in one gap collapse into one run.
    let s = sched("0,30 2 * * *", "Europe/Budapest");
    assert_eq!(
        fires(&s, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
    );
}

#[test]
fn budapest_interval_job_keeps_real_hours() {
    let s = sched("30 * * * *", "Europe/Budapest");
    assert!(!s.is_wall_clock_fixed());
    // Spring: 01:30 CET, (02:30 skipped), 03:30 CEST — one real hour apart.
    assert_eq!(
        fires(&s, "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T02:30:00Z"
        ]
    );
    // Fall: 02:30 CEST and 02:30 CET both fire.
    assert_eq!(
        fires(&s, "2026-10-24T23:00:00Z", 4),
        [
            "2026-10-24T23:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:30:00Z"
        ]
    );
    // From 02:50 CEST the next fire is 02:00 CET although its wall time is earlier.
    let s = sched("*/20 * * * *", "Europe/Budapest");
    assert_eq!(
        fires(&s, "2026-10-25T00:50:00Z", 3),
        [
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:20:00Z",
            "2026-10-25T01:40:00Z"
        ]
    );
    // A job only in the 2 o'clock hour has no fire on the spring day, eight on the fall day.
    let s = sched("*/15 2 * * *", "Europe/Budapest");
    assert_eq!(
        fires(&s, "2026-03-28T12:00:00Z", 1),
        ["2026-03-30T00:00:00Z"]
    );
    assert_eq!(fires(&s, "2026-10-24T12:00:00Z", 9).len(), 9);
    assert_eq!(
        fires(&s, "2026-10-24T12:00:00Z", 9)[7..],
        ["2026-10-25T01:45:00Z", "2026-10-26T01:00:00Z"]
    );
}

#[test]
fn sydney_dst_end_and_start() {
    let s = sched("30 2 * * *", "Australia/Sydney");
    assert_eq!(
        fires(&s, "2026-04-03T00:00:00Z", 3),
        [
            "2026-04-03T15:30:00Z", // 04-04 02:30 AEDT
            "2026-04-04T15:30:00Z", // 04-05 first 02:30 (AEDT) only
            "2026-04-05T16:30:00Z", // 04-06 02:30 AEST
        ]
    );
    assert_eq!(
        fires(&s, "2026-10-02T00:00:00Z", 3),
        [
            "2026-10-02T16:30:00Z", // 10-03 02:30 AEST
            "2026-10-03T16:00:00Z", // 10-04 02:30 does not exist: 03:00 AEDT
            "2026-10-04T15:30:00Z", // 10-05 02:30 AEDT
        ]
    );
}

#[test]
fn lord_howe_half_hour_gap() {
    // 2026-10-04 02:00 +10:30 → 02:30 +11 (15:30Z on 10-03).
    let s = sched("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        fires(&s, "2026-10-02T12:00:00Z", 2),
        ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z"]
    );
}

#[test]
fn macros_names_and_day_rules() {
    let utc = "UTC";
    // 2026-01-01 is a Thursday.
    assert_eq!(
        fires(&sched("@weekly", utc), "2026-01-01T00:00:00Z", 2),
        ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]
    );
    assert_eq!(
        fires(&sched("0 0 * * 7", utc), "2026-01-01T00:00:00Z", 1),
        ["2026-01-04T00:00:00Z"]
    );
    assert_eq!(
        fires(&sched("@monthly", utc), "2026-01-15T00:00:00Z", 2),
        ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]
    );
    assert_eq!(
        fires(&sched(" @daily ", utc), "2026-01-15T00:00:00Z", 1),
        ["2026-01-16T00:00:00Z"]
    );
    assert_eq!(
        fires(&sched("@hourly", utc), "2026-01-15T00:00:00Z", 1),
        ["2026-01-15T01:00:00Z"]
    );
    assert_eq!(
        fires(
            &sched("0 2 * Feb-mar MON,fri", utc),
            "2026-01-15T00:00:00Z",
            2
        ),
        ["2026-02-02T02:00:00Z", "2026-02-06T02:00:00Z"]
    );
    // Day-of-month and day-of-week both restricted: either matches (Vixie cron).
    assert_eq!(
        fires(&sched("0 0 13 * fri", utc), "2026-02-01T00:00:00Z", 3),
        [
            "2026-02-06T00:00:00Z",
            "2026-02-13T00:00:00Z",
            "2026-02-20T00:00:00Z"
        ]
    );
    assert_eq!(
        fires(&sched("0 0 29 2 *", utc), "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
}

#[test]
fn parse_errors() {
    let err = |e: &str| CronSchedule::parse(e, tz("UTC")).unwrap_err().to_string();
    assert_eq!(
        err("0 2 * *"),
        "invalid schedule \"0 2 * *\": found 4 fields, expected 5 (minute hour day-of-month \
         month day-of-week)"
    );
    assert_eq!(
        err("0 0 2 * * *"),
        "invalid schedule \"0 0 2 * * *\": found 6 fields, expected 5 (minute hour day-of-month \
         month day-of-week)"
    );
    assert_eq!(
        err("0 2 L * *"),
        "invalid schedule \"0 2 L * *\": field \"L\": \"L\" is not a month or weekday name"
    );
    assert_eq!(
        err("0 2 * * 5#3"),
        "invalid schedule \"0 2 * * 5#3\": field \"5#3\": character '#' is not allowed"
    );
    assert_eq!(
        err("@yearly"),
        "invalid schedule \"@yearly\": unknown macro, expected @hourly, @daily, @weekly or \
         @monthly"
    );
    assert!(err("61 2 * * *").starts_with("invalid schedule \"61 2 * * *\": "));
    assert_eq!(
        CronSchedule::parse("0 0 30 2 *", tz("UTC")).unwrap_err(),
        ScheduleError::NeverFires {
            expr: "0 0 30 2 *".into()
        }
    );
}

#[test]
fn from_config_schedule() {
    let text = "[pve]\nurl = \"https://pve.example:8006\"\ntoken-id = \"backup@pve!agent\"\n\
                fingerprint = \"AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA\"\n\
                [backup]\nstorage = \"pbs\"\nschedule = \"@daily\"\n";
    let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).expect("config");
    let schedule = cfg.backup.schedule.as_ref().expect("schedule");
    let s = CronSchedule::new(schedule, tz("Europe/Budapest")).expect("compiles");
    assert_eq!(s.expression(), "0 0 * * *");
    assert_eq!(
        fires(&s, "2026-06-01T12:00:00Z", 1),
        ["2026-06-01T22:00:00Z"]
    );
}

#[test]
fn end_of_calendar_is_none() {
    let s = sched("0 0 1 1 *", "UTC");
    assert_eq!(s.next_after(ts("5000-06-01T00:00:00Z")), None);
    assert!(fires(&s, "4999-06-01T00:00:00Z", 5).len() == 1);
}
