//! Tests of the schedule maths. Time zones come from the system tz database (IANA names).

mod cron;
mod plan;
mod prop;
mod splay_format;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::CronSchedule;

pub(super) fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("time zone {name}: {e}"))
}

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("timestamp {s}: {e}"))
}

pub(super) fn sched(expr: &str, zone: &str) -> CronSchedule {
    CronSchedule::parse(expr, tz(zone)).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// The next `n` fires after `from`, as RFC 3339 UTC strings.
pub(super) fn fires(s: &CronSchedule, from: &str, n: usize) -> Vec<String> {
    super::next_runs(s, ts(from), n)
        .into_iter()
        .map(|t| t.to_string())
        .collect()
}
