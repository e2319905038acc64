//! [`HealthView`]: the plain-data picture of the agent that the health endpoint serves.
//!
//! The daemon owns a [`super::Health`] handle and keeps the view current (phase, heartbeat,
//! counters, a copy of the interesting parts of [`State`]); the server only ever reads
//! snapshots. Invariants: the view has no place for a secret (it is served verbatim on
//! `/status`); counters only grow during the life of the process; the number of distinct skip
//! reasons is bounded ([`MAX_SKIP_REASONS`]) so a buggy caller cannot blow up metric
//! cardinality.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::inventory::{Inventory, JobCounters};
use crate::state::{Identity, JournalState, PendingTask, RunKind, RunRecord, RunResult, State};

/// How many of the most recent run records the view carries.
pub const VIEW_RUNS: usize = 10;
/// Distinct `reason` labels kept for skipped runs; further reasons are counted under
/// [`OTHER_SKIP_REASON`].
pub const MAX_SKIP_REASONS: usize = 16;
/// The skip reason used once [`MAX_SKIP_REASONS`] distinct reasons have been seen.
pub const OTHER_SKIP_REASON: &str = "other";

/// What the scheduler loop is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for the next scheduled run.
    Idle,
    /// Settling work a crashed or interrupted run left in the journal.
    Recovering,
    /// Running `pre` hooks.
    Quiescing,
    /// Asking PVE to start vzdump.
    StartingTask,
    /// Polling the vzdump task.
    WaitingForTask,
    /// Running `post` hooks.
    Releasing,
    /// Writing the run record.
    Recording,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Recovering => "recovering",
            Phase::Quiescing => "quiescing",
            Phase::StartingTask => "starting-task",
            Phase::WaitingForTask => "waiting-for-task",
            Phase::Releasing => "releasing",
            Phase::Recording => "recording",
        }
    }
}

/// The run in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentJob {
    pub kind: RunKind,
    /// Epoch seconds.
    pub started: i64,
    /// Set once PVE answered the vzdump request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
}

/// Outcome of the last self-check (permissions of the token, config sanity, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfCheckSummary {
    pub ok: bool,
    pub violations: Vec<String>,
    /// Epoch seconds.
    pub last_run: i64,
}

/// Liveness of the scheduler loop. `instant` is monotonic and is what `/livez` judges;
/// `epoch` is for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    #[serde(skip)]
    pub instant: Instant,
    /// Epoch seconds of the last tick (or of the view's creation before the first tick).
    pub epoch: i64,
    pub ticks: u64,
}

/// Runs recorded by result, since the process started. Every result always has a value, so
/// each `result` series exists from the first scrape on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    pub ok: u64,
    pub warnings: u64,
    pub failed: u64,
    pub busy: u64,
    pub skipped: u64,
    pub missed: u64,
}

impl RunCounts {
    pub fn add(&mut self, result: RunResult) {
        let slot = match result {
            RunResult::Ok => &mut self.ok,
            RunResult::Warnings => &mut self.warnings,
            RunResult::Failed => &mut self.failed,
            RunResult::Busy => &mut self.busy,
            RunResult::Skipped => &mut self.skipped,
            RunResult::Missed => &mut self.missed,
        };
        *slot = slot.saturating_add(1);
    }

    /// `(result label, count)` in a fixed order.
    pub fn labelled(&self) -> [(&'static str, u64); 6] {
        [
            ("ok", self.ok),
            ("warnings", self.warnings),
            ("failed", self.failed),
            ("busy", self.busy),
            ("skipped", self.skipped),
            ("missed", self.missed),
        ]
    }
}

/// PVE API requests by outcome, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PveRequestCounts {
    pub ok: u64,
    pub error: u64,
}

/// Everything `/metrics` needs beyond the state copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    pub runs: RunCounts,
    /// Skipped scheduling decisions by reason (a small fixed vocabulary chosen by the daemon).
    pub skipped: BTreeMap<String, u64>,
    pub pve_requests: PveRequestCounts,
    /// `finished - started` of the last run that reached PVE.
    pub last_backup_duration_seconds: Option<f64>,
    pub last_quiesce_window_seconds: Option<f64>,
    /// Snapshot runs, pruned items and skipped side jobs.
    pub jobs: JobCounters,
}

/// The whole view. Plain data: cloning it is how readers get a consistent snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthView {
    pub version: String,
    /// Epoch seconds when this process started watching.
    pub started: i64,
    pub identity: Option<Identity>,
    pub phase: Phase,
    pub current_job: Option<CurrentJob>,
    /// The last [`VIEW_RUNS`] run records, oldest first.
    pub last_runs: Vec<RunRecord>,
    /// Start of the oldest run the state remembers (bounds "never succeeded" across restarts).
    pub first_run_started: Option<i64>,
    /// Epoch seconds of the next scheduled run.
    pub next_run: Option<i64>,
    /// Epoch seconds of the end of the last run that produced a backup.
    pub last_success: Option<i64>,
    pub consecutive_failures: u32,
    /// A PVE task this agent started and has not seen finish (from [`State::pending`]).
    pub pending_task: Option<PendingTask>,
    /// The process holding the run lock (a manual `backup-now` or this daemon), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<crate::state::LockInfo>,
    /// Work an earlier (crashed or interrupted) run left owed, one description each; see
    /// [`describe_journal`]. Never the in-flight steps of the current run.
    pub owed: Vec<String>,
    /// Non-fatal problems worth showing an operator (e.g. the state file was recovered).
    pub warnings: Vec<String>,
    /// `None` until the first self-check ran.
    pub self_check: Option<SelfCheckSummary>,
    /// Failing rows of the last self-check by check (every check present once one ran).
    pub self_check_violations: BTreeMap<String, u64>,
    /// Own snapshots and backups, the last prune and the last snapshot run.
    pub inventory: Inventory,
    pub heartbeat: Heartbeat,
    pub counters: Counters,
}

impl HealthView {
    /// A fresh view for this process; the heartbeat counts as ticked now.
    pub fn new(version: impl Into<String>, now_epoch: i64) -> HealthView {
        HealthView {
            version: version.into(),
            started: now_epoch,
            identity: None,
            phase: Phase::Idle,
            current_job: None,
            last_runs: Vec::new(),
            first_run_started: None,
            next_run: None,
            last_success: None,
            consecutive_failures: 0,
            pending_task: None,
            active_run: None,
            owed: Vec::new(),
            warnings: Vec::new(),
            self_check: None,
            self_check_violations: BTreeMap::new(),
            inventory: Inventory::default(),
            heartbeat: Heartbeat {
                instant: Instant::now(),
                epoch: now_epoch,
                ticks: 0,
            },
            counters: Counters::default(),
        }
    }

    /// Copies what the view shows of the persisted state.
    pub fn apply_state(&mut self, state: &State) {
        self.identity = state.identity.clone();
        let skip = state.runs.len().saturating_sub(VIEW_RUNS);
        self.last_runs = state.runs.iter().skip(skip).cloned().collect();
        self.first_run_started = state.runs.front().map(|r| r.started);
        self.last_success = state.last_success;
        self.consecutive_failures = state.consecutive_failures;
        self.pending_task = state.pending.clone();
    }

    /// Counts a finished run record. Runs that reached PVE (`ok`, `warnings`, `failed` with a
    /// UPID) also set the last duration; a quiesce window, when measured, sets the last window.
    pub fn record_run(&mut self, record: &RunRecord) {
        self.counters.runs.add(record.result);
        let reached_pve = match record.result {
            RunResult::Ok | RunResult::Warnings => true,
            RunResult::Failed => record.upid.is_some(),
            RunResult::Busy | RunResult::Skipped | RunResult::Missed => false,
        };
        if reached_pve {
            self.counters.last_backup_duration_seconds =
                Some(record.finished.saturating_sub(record.started).max(0) as f64);
        }
        if let Some(window) = record.quiesce_window_seconds {
            self.counters.last_quiesce_window_seconds = Some(window);
        }
    }

    /// Counts a skipped scheduling decision; see [`MAX_SKIP_REASONS`].
    pub fn record_skip(&mut self, reason: &str) {
        let key = if self.counters.skipped.contains_key(reason)
            || self.counters.skipped.len() < MAX_SKIP_REASONS
        {
            reason
        } else {
            OTHER_SKIP_REASON
        };
        let n = self.counters.skipped.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Counts one PVE API request.
    pub fn record_pve_request(&mut self, ok: bool) {
        let n = if ok {
            &mut self.counters.pve_requests.ok
        } else {
            &mut self.counters.pve_requests.error
        };
        *n = n.saturating_add(1);
    }

    /// Marks the scheduler loop alive.
    pub fn tick(&mut self, now: Instant, now_epoch: i64) {
        self.heartbeat.instant = now;
        self.heartbeat.epoch = now_epoch;
        self.heartbeat.ticks = self.heartbeat.ticks.saturating_add(1);
    }

    /// Enters `phase`; `Idle` clears the current job.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        if phase == Phase::Idle {
            self.current_job = None;
        }
    }
}

/// Describes what a journal left by an earlier run still owes, one line each (empty when the
/// journal is settled). Meant for [`HealthView::owed`] at start-up / during recovery.
pub fn describe_journal(journal: &JournalState) -> Vec<String> {
    let mut out = Vec::new();
    if journal.finished {
        return out;
    }
    if !journal.posts_owed.is_empty() {
        out.push(format!(
            "run {} owes post hooks: {}",
            journal.run_id,
            journal.posts_owed.join(", ")
        ));
    }
    if let Some((upid, node)) = &journal.pending_upid {
        out.push(format!(
            "run {} started task {upid} on node {node}; its end was not recorded",
            journal.run_id
        ));
    }
    if let Some(req) = &journal.requested_without_upid {
        out.push(format!(
            "run {} requested vzdump on node {} at {} without receiving a UPID",
            journal.run_id, req.node, req.at
        ));
    }
    out
}
