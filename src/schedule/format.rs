//! Human-readable fire times for the `next-runs` command: local wall time with offset and zone
//! abbreviation, then the same instant in UTC, e.g.
//! `2026-10-25 02:30:00 +02:00 (CEST)  2026-10-25T00:30:00Z`.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{CronSchedule, next_runs};

/// One fire time as `YYYY-MM-DD HH:MM:SS ±HH:MM (ABBR)  YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_run(t: Timestamp, tz: &TimeZone) -> String {
    let local = t.to_zoned(tz.clone());
    format!(
        "{}  {}",
        local.strftime("%Y-%m-%d %H:%M:%S %:z (%Z)"),
        t.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The next `n` fire times after `from`, one [`format_run`] line each (each ends in `\n`).
pub fn format_next_runs(schedule: &CronSchedule, from: Timestamp, n: usize) -> String {
    next_runs(schedule, from, n)
        .into_iter()
        .map(|t| format_run(t, schedule.time_zone()) + "\n")
        .collect()
}
