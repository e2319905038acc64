//! Deciding what the daemon does now, from the schedule, the persisted last run and the clock.
//!
//! Rule (after proxmox-backup's job state): the next run is the first fire time after the
//! persisted last run, delayed by the guest's splay. The value to persist is the `scheduled`
//! fire time a [`Plan`] names (not the wall time the run started), both after a run and after
//! recording a missed run; then the next [`plan`] call waits for the following fire.
//!
//! * Fresh install (no last run): wait for the first fire after now — never run at install.
//! * Last run in the future (the clock was stepped back): do not run; wait for the first fire
//!   after now and say so ([`WaitReason::ClockBehindLastRun`]).
//! * Fires due while the guest was off: only the latest one counts. If it is late by at most
//!   `catch_up` (or by [`ON_TIME_GRACE`], for a daemon that merely woke late) run once now;
//!   otherwise record one missed run. Either way the number of fires not run is reported.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::CronSchedule;

/// Lateness that is never a missed run, even with catch-up disabled: the daemon wakes a little
/// after the due time (timer slack, the 5-minute sleep cap is not involved).
pub const ON_TIME_GRACE: Duration = Duration::from_secs(60);

/// Counting stops here; a count equal to the cap means "at least this many".
pub const MISSED_COUNT_CAP: u64 = 100_000;

/// What the daemon should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Run one backup now for fire time `scheduled` (due at `scheduled` + splay, not later than
    /// now). `skipped` older due fires are folded into this run and not run separately.
    RunNow { scheduled: Timestamp, skipped: u64 },
    /// The latest due fire `scheduled` is older than catch-up: record one missed run (covering
    /// `missed_count` fires, `scheduled` included), persist `scheduled`, and wait for `next`
    /// (the following fire plus splay).
    Missed {
        scheduled: Timestamp,
        next: Timestamp,
        missed_count: u64,
    },
    /// Nothing due: sleep until `until` (= `scheduled` + splay), then plan again.
    WaitUntil {
        until: Timestamp,
        scheduled: Timestamp,
        reason: WaitReason,
    },
    /// The schedule has no fire time left (only past the end of the supported calendar).
    NoFutureRun,
}

/// Why a [`Plan::WaitUntil`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The next fire after the last run is not due yet.
    Scheduled,
    /// No run was ever recorded: the first fire after now.
    FreshInstall,
    /// The persisted last run lies after now, so the wall clock went backwards; the first fire
    /// after now (other than the persisted one) is taken.
    ClockBehindLastRun,
}

/// Plans the next action. `splay_offset` is this guest's [`super::splay_offset`]; `catch_up` is
/// the configured catch-up window (zero disables catch-up beyond [`ON_TIME_GRACE`]).
pub fn plan(
    schedule: &CronSchedule,
    last_run: Option<Timestamp>,
    now: Timestamp,
    catch_up: Duration,
    splay_offset: Duration,
) -> Plan {
    let splay = signed(splay_offset);
    let wait = |scheduled: Timestamp, reason| Plan::WaitUntil {
        until: add(scheduled, splay),
        scheduled,
        reason,
    };
    let Some(last) = last_run else {
        return match schedule.next_after(now) {
            Some(n) => wait(n, WaitReason::FreshInstall),
            None => Plan::NoFutureRun,
        };
    };
    if last > now {
        let next = schedule.next_after(now).and_then(|n| {
            if n == last {
                schedule.next_after(n)
            } else {
                Some(n)
            }
        });
        return match next {
            Some(n) => wait(n, WaitReason::ClockBehindLastRun),
            None => Plan::NoFutureRun,
        };
    }
    // A fire f is due once f + splay <= now.
    let due_limit = sub(now, splay);
    let Some(first) = schedule.next_after(last) else {
        return Plan::NoFutureRun;
    };
    if first > due_limit {
        return wait(first, WaitReason::Scheduled);
    }
    let latest = latest_fire(schedule, first, due_limit);
    let count = count_fires(schedule, last, latest);
    let late = now.duration_since(add(latest, splay));
    if late <= signed(catch_up.max(ON_TIME_GRACE)) {
        return Plan::RunNow {
            scheduled: latest,
            skipped: count.saturating_sub(1),
        };
    }
    match schedule.next_after(latest) {
        Some(n) => Plan::Missed {
            scheduled: latest,
            next: add(n, splay),
            missed_count: count,
        },
        None => Plan::NoFutureRun,
    }
}

/// The latest fire at or before `limit`, given that `first` is a fire at or before it. Searches
/// back from `limit` over doubling windows so a long outage costs no full scan.
fn latest_fire(schedule: &CronSchedule, first: Timestamp, limit: Timestamp) -> Timestamp {
    let mut span = SignedDuration::from_hours(1);
    loop {
        let from = sub(limit, span).max(first);
        // `from` itself is a fire only when it is `first`; the search is strictly after it.
        let mut latest = if from == first { Some(first) } else { None };
        let mut cursor = from;
        while let Some(f) = schedule.next_after(cursor).filter(|f| *f <= limit) {
            latest = Some(f);
            cursor = f;
        }
        if let Some(l) = latest {
            return l;
        }
        span = span.checked_mul(2).unwrap_or(SignedDuration::MAX);
    }
}

/// Fires in `(after, upto]`, counted up to [`MISSED_COUNT_CAP`].
fn count_fires(schedule: &CronSchedule, after: Timestamp, upto: Timestamp) -> u64 {
    let mut count = 0;
    let mut cursor = after;
    while count < MISSED_COUNT_CAP {
        match schedule.next_after(cursor) {
            Some(f) if f <= upto => {
                count += 1;
                cursor = f;
            }
            _ => break,
        }
    }
    count
}

/// How long to sleep before re-reading the wall clock: `target - now`, at most `cap` (so a
/// suspend/resume or a clock step is noticed within `cap`), zero when `target` has passed.
pub fn sleep_for(now: Timestamp, target: Timestamp, cap: Duration) -> Duration {
    match Duration::try_from(target.duration_since(now)) {
        Ok(d) => d.min(cap),
        Err(_) => Duration::ZERO,
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}
