//! Schedule maths for the backup daemon: when the next backup fires, how a run missed while the
//! guest was off is handled, the per-guest splay and how long the daemon may sleep.
//!
//! Pure: no I/O, no sleeping, no clock reads — every function takes `now` (or another instant)
//! as an argument. The daemon loop owns the clock and the persisted last run.
//!
//! Owns:
//! * [`CronSchedule`]: a 5-field cron expression (or `@hourly`/`@daily`/`@weekly`/`@monthly`)
//!   compiled with `croner` and evaluated on the wall clock of a `jiff` time zone.
//!   [`CronSchedule::next_after`] is the first fire instant strictly after a given instant.
//! * [`splay_offset`]: a fixed, VMID-derived delay in `[0, splay)`.
//! * [`plan`]: what to do now given the persisted last run, with catch-up.
//! * [`next_runs`] / [`format_next_runs`] for the `next-runs` command, and [`sleep_for`].
//!
//! DST rules (those of Vixie cron, see `docs/decisions/0001-scheduler-croner-jiff.md`): a
//! schedule whose minute and hour fields contain no `*` is *wall-clock fixed* — a fire time that
//! falls in a spring-forward gap runs at the first instant after the gap (02:30 → 03:00), and a
//! wall time repeated by a fall-back runs once, on its first occurrence. Any other schedule is an
//! *interval*: wall times inside a gap do not exist and are skipped, and a repeated wall time
//! fires on both occurrences (an hourly job keeps running every real hour).
//!
//! Invariants (tested, partly by property tests): `next_after(t) > t`; `next_after` is
//! monotonic; no fire instant lies strictly between `t` and `next_after(t)`; the local wall time
//! of every fire matches the expression, except a wall-clock-fixed fire moved out of a gap.

mod format;
mod plan;
mod splay;

#[cfg(test)]
mod tests;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

pub use format::{format_next_runs, format_run};
pub use plan::{MISSED_COUNT_CAP, ON_TIME_GRACE, Plan, WaitReason, plan, sleep_for};
pub use splay::splay_offset;

/// Why a schedule expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule {expr:?}: {reason}")]
    Invalid { expr: String, reason: String },
    #[error("schedule {expr:?} never fires (no such date in any year)")]
    NeverFires { expr: String },
}

/// A compiled cron schedule bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The five fields, single-space separated (macros expanded).
    expr: String,
    cron: Cron,
    tz: TimeZone,
    /// Minute and hour fields hold no `*`: the Vixie cron "fixed-time" job.
    wall_fixed: bool,
}

/// How far ahead of an instant a fall-back may repeat wall times that lie before the instant's
/// own wall time. Real offset changes are hours; a day is a wide margin.
const FOLD_LOOKAHEAD: SignedDuration = SignedDuration::from_hours(24);

impl CronSchedule {
    /// Compiles a schedule already validated by the configuration module.
    pub fn new(schedule: &crate::config::Schedule, tz: TimeZone) -> Result<Self, ScheduleError> {
        Self::parse(&schedule.fields().join(" "), tz)
    }

    /// Compiles a 5-field expression or `@hourly`/`@daily`/`@midnight`/`@weekly`/`@monthly`.
    /// Only standard cron syntax is accepted: numbers, `*`, `,`, `-`, `/` and three-letter
    /// month/day names (no seconds field, no `L`, `W`, `#`, `?`).
    pub fn parse(expr: &str, tz: TimeZone) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let invalid = |reason: String| ScheduleError::Invalid {
            expr: trimmed.to_owned(),
            reason,
        };
        if expanded.starts_with('@') {
            return Err(invalid(
                "unknown macro, expected @hourly, @daily, @weekly or @monthly".into(),
            ));
        }
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(invalid(format!(
                "found {} fields, expected 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            )));
        }
        for field in &fields {
            check_field_syntax(field).map_err(|why| invalid(format!("field {field:?}: {why}")))?;
        }
        let expr = fields.join(" ");
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&expr)
            .map_err(|e| invalid(e.to_string()))?;
        // Any satisfiable 5-field pattern fires within 8 years of any date (29 February is the
        // sparsest day); croner gives up (error) on a pattern that never matches.
        let epoch = DateTime::constant(2000, 1, 1, 0, 0, 0, 0);
        if cron.find_next_occurrence(&epoch, true).is_err() {
            return Err(ScheduleError::NeverFires {
                expr: trimmed.to_owned(),
            });
        }
        Ok(Self {
            wall_fixed: !fields[0].contains('*') && !fields[1].contains('*'),
            expr,
            cron,
            tz,
        })
    }

    /// The five fields as evaluated (macros expanded).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The time zone whose wall clock the expression is read on.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// `true` for a Vixie "fixed-time" schedule (no `*` in the minute and hour fields): moved
    /// out of a DST gap and run once in a repeated hour.
    pub fn is_wall_clock_fixed(&self) -> bool {
        self.wall_fixed
    }

    /// The first fire instant strictly after `t`, or `None` if there is none before the end of
    /// the supported calendar (year 5000).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Civil (wall clock) order equals instant order except across a fall-back, where the
        // repeated wall times lie *before* t's wall time yet are later instants. Start the civil
        // search low enough to see them.
        let horizon = t.checked_add(FOLD_LOOKAHEAD).unwrap_or(Timestamp::MAX);
        let mut start = self.tz.to_datetime(t);
        for tr in self.tz.following(t) {
            if tr.timestamp() > horizon {
                break;
            }
            if tr.offset() < self.offset_before(tr.timestamp()) {
                start = start.min(tr.offset().to_datetime(tr.timestamp()));
            }
        }
        let mut civil = self.cron.find_next_occurrence(&start, true).ok()?;
        let mut best: Option<Timestamp> = None;
        loop {
            for cand in self.instants_of(civil).into_iter().flatten() {
                if cand > t && best.is_none_or(|b| cand < b) {
                    best = Some(cand);
                }
            }
            let next = self.cron.find_next_occurrence(&civil, false).ok();
            if let Some(b) = best {
                // A later wall time c maps to an instant i with c = i + offset(i). An instant
                // before `b` therefore has c < b + (largest offset in force over (t, b]).
                let bound = self.max_offset_between(t, b).to_datetime(b);
                match next {
                    Some(n) if n < bound => civil = n,
                    _ => return best,
                }
            } else {
                civil = next?;
            }
        }
    }

    /// The instants at which the wall time `civil` fires (at most two).
    fn instants_of(&self, civil: DateTime) -> [Option<Timestamp>; 2] {
        match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => [offset.to_timestamp(civil).ok(), None],
            AmbiguousOffset::Fold { before, after } => {
                // `before` is the larger offset, so it names the earlier instant.
                let earlier = before.to_timestamp(civil).ok();
                let later = if self.wall_fixed {
                    None
                } else {
                    after.to_timestamp(civil).ok()
                };
                [earlier, later]
            }
            AmbiguousOffset::Gap { after, .. } => {
                if !self.wall_fixed {
                    return [None, None];
                }
                // civil - after lies just before the transition that opened the gap; the
                // transition instant is the first real time after the gap.
                let below = after.to_timestamp(civil).ok();
                [
                    below.and_then(|b| self.tz.following(b).next().map(|tr| tr.timestamp())),
                    None,
                ]
            }
        }
    }

    fn offset_before(&self, ts: Timestamp) -> Offset {
        let just_before = ts
            .checked_sub(SignedDuration::from_nanos(1))
            .unwrap_or(Timestamp::MIN);
        self.tz.to_offset(just_before)
    }

    /// The largest UTC offset in force at any instant in `(t, b]`.
    fn max_offset_between(&self, t: Timestamp, b: Timestamp) -> Offset {
        let mut max = self.tz.to_offset(t);
        for tr in self.tz.following(t) {
            if tr.timestamp() > b {
                break;
            }
            max = max.max(tr.offset());
        }
        max
    }
}

/// Standard cron characters only; letters must form a three-letter month or weekday name.
fn check_field_syntax(field: &str) -> Result<(), String> {
    const NAMES: [&str; 19] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "sun",
        "mon", "tue", "wed", "thu", "fri", "sat",
    ];
    if let Some(c) = field
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "*,-/".contains(*c)))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    for word in field
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        if !NAMES.iter().any(|n| n.eq_ignore_ascii_case(word)) {
            return Err(format!("{word:?} is not a month or weekday name"));
        }
    }
    Ok(())
}

/// The next `n` fire instants strictly after `from`, in order (fewer if the schedule ends).
pub fn next_runs(schedule: &CronSchedule, from: Timestamp, n: usize) -> Vec<Timestamp> {
    let mut out = Vec::with_capacity(n);
    let mut cursor = from;
    while out.len() < n {
        match schedule.next_after(cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}
