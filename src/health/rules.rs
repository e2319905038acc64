//! The health verdict: pure functions from a [`HealthView`] and the clock to reasons.
//!
//! Invariants: no I/O, no clock reads (the caller passes `now`); an empty reason list means
//! healthy; reasons are full sentences an operator can act on, in a fixed order (backup age,
//! failures, pending task, owed work, self-check).

use std::time::{Duration, Instant};

use super::view::HealthView;
use crate::config::HealthConfig;

/// The thresholds of [`health_reasons`], from `[health]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRules {
    pub max_backup_age: Duration,
    pub max_consecutive_failures: u32,
}

impl From<&HealthConfig> for HealthRules {
    fn from(cfg: &HealthConfig) -> Self {
        HealthRules {
            max_backup_age: cfg.max_backup_age,
            max_consecutive_failures: cfg.max_consecutive_failures,
        }
    }
}

/// Why the agent is unhealthy at epoch second `now`; empty = healthy.
///
/// * Backup age: unhealthy when the last success is older than `max_backup_age`. With no
///   success ever, the clock starts at the earlier of the agent's start and the oldest run the
///   state remembers, so a fresh install gets one full `max_backup_age` of grace but restarts
///   do not reset the grace period once runs have been recorded. A success in the future (clock
///   stepped back) counts as fresh.
/// * `consecutive_failures >= max_consecutive_failures`.
/// * A pending PVE task, unless it is the current job's task (then the run is still tracking it).
/// * Each item of owed work left by an earlier run.
/// * Each self-check violation (or a bare failure without violations).
pub fn health_reasons(view: &HealthView, now: i64, rules: &HealthRules) -> Vec<String> {
    let mut reasons = Vec::new();
    let max_age = rules.max_backup_age.as_secs();
    match view.last_success {
        Some(at) => {
            let age = now.saturating_sub(at);
            if age > 0 && age as u64 > max_age {
                reasons.push(format!(
                    "last successful backup finished {} ago, more than health.max-backup-age ({})",
                    fmt_secs(age as u64),
                    fmt_secs(max_age)
                ));
            }
        }
        None => {
            let since = view
                .first_run_started
                .map_or(view.started, |first| first.min(view.started));
            let waited = now.saturating_sub(since);
            if waited > 0 && waited as u64 > max_age {
                reasons.push(format!(
                    "no successful backup recorded in {}, more than health.max-backup-age ({})",
                    fmt_secs(waited as u64),
                    fmt_secs(max_age)
                ));
            }
        }
    }
    if view.consecutive_failures >= rules.max_consecutive_failures {
        reasons.push(format!(
            "{} consecutive failed runs (health.max-consecutive-failures is {})",
            view.consecutive_failures, rules.max_consecutive_failures
        ));
    }
    if let Some(task) = pending_task_outside_job(view) {
        reasons.push(format!(
            "PVE task {} on node {} was started by this agent and has not been seen to finish ({})",
            task.upid, task.node, task.reason
        ));
    }
    for owed in &view.owed {
        reasons.push(format!("owed from an earlier run: {owed}"));
    }
    if let Some(check) = &view.self_check
        && !check.ok
    {
        if check.violations.is_empty() {
            reasons.push("self-check failed".to_string());
        }
        for v in &check.violations {
            reasons.push(format!("self-check violation: {v}"));
        }
    }
    reasons
}

/// True when work is owed outside the current run (drives `felhom_pending_work`).
pub fn has_pending_work(view: &HealthView) -> bool {
    !view.owed.is_empty() || pending_task_outside_job(view).is_some()
}

fn pending_task_outside_job(view: &HealthView) -> Option<&crate::state::PendingTask> {
    let task = view.pending_task.as_ref()?;
    let tracked = view
        .current_job
        .as_ref()
        .and_then(|j| j.upid.as_deref())
        .is_some_and(|upid| upid == task.upid)
        // Another live process (e.g. a manual `backup-now`) is following it right now.
        || view.active_run.as_ref().and_then(|r| r.upid.as_deref()) == Some(task.upid.as_str());
    (!tracked).then_some(task)
}

/// True while the scheduler loop ticked within `max_staleness` of `now` (monotonic clock).
pub fn is_live(view: &HealthView, now: Instant, max_staleness: Duration) -> bool {
    now.saturating_duration_since(view.heartbeat.instant) <= max_staleness
}

/// `93784` → `1d2h03m`, `3600` → `1h00m`, `61` → `1m01s`, `5` → `5s`.
pub fn fmt_secs(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d{h}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}
