//! The persisted state document (`state.json`) and its records.
//!
//! Invariants: the document is versioned (`"version": 1`); every field added later must carry
//! `#[serde(default)]` so older files still load; fields this build does not know are kept in
//! [`State::extra`] and written back unchanged, so an older binary never strips data written by a
//! newer one. `runs` never holds more than [`MAX_RUNS`] records (oldest dropped first).
//! No type here has a place for the API token secret, so it cannot leak into the state dir.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Version written into `state.json`; a file with a higher version is refused, not rewritten.
pub const STATE_VERSION: u32 = 1;
/// How many run records are kept.
pub const MAX_RUNS: usize = 50;

/// The whole persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Cached identity of this guest, as last learnt from the API.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// The last [`MAX_RUNS`] runs, oldest first.
    #[serde(default)]
    pub runs: VecDeque<RunRecord>,
    /// A PVE task this agent started but has not seen finish.
    #[serde(default)]
    pub pending: Option<PendingTask>,
    /// Epoch seconds of the end of the last run that produced a backup.
    #[serde(default)]
    pub last_success: Option<i64>,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Epoch seconds of the scheduled fire time the daemon last ran or recorded as missed
    /// (the input of `schedule::plan`); written only under the run lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<i64>,
    /// Epoch seconds of the daemon's last self-check (the input of the self-check schedule's
    /// plan); written only under the run lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_selfcheck: Option<i64>,
    /// Epoch seconds of the snapshot fire time the daemon last ran, skipped or recorded as
    /// missed (the input of the snapshot schedule's plan); written only under the run lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_scheduled: Option<i64>,
    /// What the last run with `quiesce.fsfreeze` configured did about freezing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fsfreeze: Option<FreezeRecord>,
    /// Fields written by a newer build; preserved verbatim on save.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            identity: None,
            runs: VecDeque::new(),
            pending: None,
            last_success: None,
            consecutive_failures: 0,
            last_scheduled: None,
            last_selfcheck: None,
            last_snapshot_scheduled: None,
            last_fsfreeze: None,
            extra: serde_json::Map::new(),
        }
    }
}

impl State {
    /// Appends a run record, drops the oldest beyond [`MAX_RUNS`], and updates the counters:
    /// `ok`/`warnings` set `last_success` to the record's `finished` and reset
    /// `consecutive_failures`; `failed`/`missed` increment it; `busy`/`skipped` leave both alone
    /// (nothing was attempted by us).
    pub fn push_run(&mut self, record: RunRecord) {
        match record.result {
            RunResult::Ok | RunResult::Warnings => {
                self.last_success = Some(record.finished);
                self.consecutive_failures = 0;
            }
            RunResult::Failed | RunResult::Missed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
            RunResult::Busy | RunResult::Skipped => {}
        }
        self.runs.push_back(record);
        while self.runs.len() > MAX_RUNS {
            self.runs.pop_front();
        }
    }

    /// The most recent run record, if any.
    pub fn last_run(&self) -> Option<&RunRecord> {
        self.runs.back()
    }
}

/// Which kind of guest this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

/// Cached identity of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub vmid: u32,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: GuestKind,
    #[serde(default)]
    pub name: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Backup,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Ok,
    Warnings,
    Failed,
    /// Another run held the lock.
    Busy,
    Skipped,
    /// A scheduled run did not happen (agent down at the time).
    Missed,
}

/// One finished (or abandoned) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    /// Epoch seconds.
    pub started: i64,
    /// Epoch seconds.
    pub finished: i64,
    /// vzdump mode: `snapshot`, `suspend` or `stop`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub result: RunResult,
    /// The task's `exitstatus` as reported by PVE (`OK`, `WARNINGS: 2`, `job errors`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exitstatus: Option<String>,
    #[serde(default)]
    pub warnings: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce_window_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub log_tail: Vec<String>,
}

/// A PVE task started by us whose end we have not observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTask {
    pub upid: String,
    pub node: String,
    pub kind: RunKind,
    /// Epoch seconds.
    pub started: i64,
    /// Why it is pending, e.g. `timed out`, `agent stopped`.
    pub reason: String,
}

/// What one run did about `quiesce.fsfreeze`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FreezeRecord {
    /// `backup` or `snapshot`.
    pub job: String,
    /// Epoch seconds: when the run started (the `started` of its run record).
    pub run_started: i64,
    /// Mount points this run froze (and thawed), in freeze order.
    #[serde(default)]
    pub frozen: Vec<String>,
    /// Mount points found frozen by someone else (EBUSY): recorded, never thawed by the agent.
    #[serde(default)]
    pub already_frozen: Vec<String>,
    /// Why the agent did not freeze (e.g. PVE freezes through the guest agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// From the first FIFREEZE to the thaw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_seconds: Option<f64>,
    /// The watchdog thawed at `quiesce.max-freeze`, before the release.
    #[serde(default)]
    pub cut_short: bool,
    /// Freeze or thaw failures, one line each.
    #[serde(default)]
    pub errors: Vec<String>,
}
