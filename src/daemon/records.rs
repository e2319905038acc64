//! Pure helpers of the daemon: the run records it writes itself (skipped, missed), which records
//! of a re-read state are new since the last look, and the `STATUS=` texts.
//!
//! Invariant: no I/O and no clock reads; callers pass `now`.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::health::fmt_secs;
use crate::schedule::format_run;
use crate::state::{RunKind, RunRecord, RunResult};

/// The skip reason for a due run that found the run lock held.
pub const SKIP_BUSY: &str = "busy";
/// The skip reason for scheduled mutating work while `on-violation = "refuse"` holds it back.
pub const SKIP_SELFCHECK: &str = "self-check violation";

/// The records of `runs` appended after `seen` (the newest record at the previous look; `None`
/// when there was none, then every record is new). If `seen` is no longer in the list (it was
/// rotated out), the records that finished after it are new.
pub fn new_records<'a>(
    seen: Option<&RunRecord>,
    runs: &'a VecDeque<RunRecord>,
) -> Vec<&'a RunRecord> {
    let Some(seen) = seen else {
        return runs.iter().collect();
    };
    match runs.iter().rposition(|r| r == seen) {
        Some(i) => runs.iter().skip(i + 1).collect(),
        None => runs.iter().filter(|r| r.finished > seen.finished).collect(),
    }
}

/// A due run that did not start because another run held the lock.
pub fn skipped_record(now: i64, mode: &str, holder: &str) -> RunRecord {
    RunRecord {
        kind: RunKind::Backup,
        started: now,
        finished: now,
        mode: mode.to_string(),
        upid: None,
        node: None,
        result: RunResult::Skipped,
        exitstatus: None,
        warnings: 0,
        quiesce_window_seconds: None,
        error: Some(format!(
            "skipped ({SKIP_BUSY}): another run holds the lock ({holder})"
        )),
        log_tail: Vec::new(),
    }
}

/// A due backup not started because the last self-check failed and `on-violation = "refuse"`.
pub fn refused_record(now: i64, mode: &str, violations: usize) -> RunRecord {
    RunRecord {
        error: Some(format!(
            "skipped ({SKIP_SELFCHECK}): the last self-check found {violations} violation(s) and self-check.on-violation = \"refuse\" stops scheduled backups, snapshots and pruning until a check passes"
        )),
        ..skipped_record(now, mode, "")
    }
}

/// One record for `count` fire times (the latest being `scheduled`) that were too late to make
/// up. `started` is the latest fire time, `finished` when the daemon noticed.
pub fn missed_record(
    scheduled: i64,
    now: i64,
    mode: &str,
    count: u64,
    catch_up: Duration,
) -> RunRecord {
    let runs = if count == 1 { "run" } else { "runs" };
    RunRecord {
        kind: RunKind::Backup,
        started: scheduled,
        finished: now,
        mode: mode.to_string(),
        upid: None,
        node: None,
        result: RunResult::Missed,
        exitstatus: None,
        warnings: 0,
        quiesce_window_seconds: None,
        error: Some(format!(
            "missed {count} scheduled {runs}, the latest due at {}: more than backup.catch-up ({}) ago",
            Timestamp::from_second(scheduled)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| scheduled.to_string()),
            fmt_secs(catch_up.as_secs())
        )),
        log_tail: Vec::new(),
    }
}

/// `STATUS=` while waiting.
pub fn idle_status(next: Option<Timestamp>, tz: &TimeZone, schedule_enabled: bool) -> String {
    match next {
        Some(t) => format!("idle; next backup {}", format_run(t, tz)),
        None if schedule_enabled => "idle; the schedule has no future fire time".to_string(),
        None => "idle; no scheduled backups (backup.schedule is empty)".to_string(),
    }
}

/// `STATUS=` while a scheduled run is in progress.
pub fn running_status(scheduled: Timestamp, tz: &TimeZone) -> String {
    format!("backing up (scheduled {})", format_run(scheduled, tz))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(result: RunResult, started: i64, finished: i64) -> RunRecord {
        let mut r = skipped_record(started, "snapshot", "x");
        r.result = result;
        r.finished = finished;
        r
    }

    #[test]
    fn new_records_after_the_last_seen_one() {
        let a = rec(RunResult::Ok, 10, 20);
        let b = rec(RunResult::Failed, 30, 40);
        let c = rec(RunResult::Skipped, 50, 50);
        let runs: VecDeque<RunRecord> = [a.clone(), b.clone(), c.clone()].into();
        assert_eq!(new_records(None, &runs).len(), 3);
        assert_eq!(new_records(Some(&a), &runs), vec![&b, &c]);
        assert_eq!(new_records(Some(&c), &runs), Vec::<&RunRecord>::new());
        // Rotated out: what finished later counts.
        let gone = rec(RunResult::Ok, 25, 35);
        assert_eq!(new_records(Some(&gone), &runs), vec![&b, &c]);
        // Two equal records: the later occurrence is the one seen.
        let runs2: VecDeque<RunRecord> = [c.clone(), c.clone(), a.clone()].into();
        assert_eq!(new_records(Some(&c), &runs2), vec![&a]);
    }

    #[test]
    fn missed_and_skipped_texts() {
        let m = missed_record(
            1_795_000_000,
            1_795_100_000,
            "snapshot",
            3,
            Duration::from_secs(3600),
        );
        assert_eq!(m.result, RunResult::Missed);
        assert_eq!(m.started, 1_795_000_000);
        assert_eq!(
            m.error.as_deref(),
            Some(
                "missed 3 scheduled runs, the latest due at 2026-11-18T11:06:40Z: more than backup.catch-up (1h00m) ago"
            )
        );
        let one = missed_record(0, 1, "stop", 1, Duration::ZERO);
        assert!(one.error.unwrap().starts_with("missed 1 scheduled run, "));
        let r = refused_record(5, "snapshot", 3);
        assert_eq!(r.result, RunResult::Skipped);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "skipped (self-check violation): the last self-check found 3 violation(s) and self-check.on-violation = \"refuse\" stops scheduled backups, snapshots and pruning until a check passes"
            )
        );
        let s = skipped_record(5, "snapshot", "backup-now, pid 7");
        assert_eq!(s.result, RunResult::Skipped);
        assert_eq!(
            s.error.as_deref(),
            Some("skipped (busy): another run holds the lock (backup-now, pid 7)")
        );
    }

    #[test]
    fn status_texts() {
        let tz = TimeZone::get("Europe/Budapest").unwrap();
        let t = Timestamp::from_second(1_795_000_000).unwrap();
        assert_eq!(
            idle_status(Some(t), &tz, true),
            "idle; next backup 2026-11-18 12:06:40 +01:00 (CET)  2026-11-18T11:06:40Z"
        );
        assert_eq!(
            idle_status(None, &tz, false),
            "idle; no scheduled backups (backup.schedule is empty)"
        );
        assert_eq!(
            running_status(t, &tz),
            "backing up (scheduled 2026-11-18 12:06:40 +01:00 (CET)  2026-11-18T11:06:40Z)"
        );
    }
}
