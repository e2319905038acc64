//! The parts of the health view about the agent's scheduled side jobs: own snapshots, own
//! backups on the backup storage, the last prune, and their counters (snapshot runs by result,
//! pruned items by kind, skipped jobs by reason).
//!
//! Invariants: plain data, no I/O; counters only grow; the number of distinct skip reasons is
//! bounded by [`super::view::MAX_SKIP_REASONS`] (further reasons count under
//! [`super::view::OTHER_SKIP_REASON`]); an unknown value (nothing listed yet) is `None`, never 0.

use std::collections::BTreeMap;

use serde::Serialize;

use super::view::{MAX_SKIP_REASONS, OTHER_SKIP_REASON};

/// A snapshot or backup named with its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Newest {
    /// Snapshot name or backup volume id.
    pub name: String,
    /// Epoch seconds (`snaptime` / `ctime`).
    pub time: i64,
}

/// The last prune the daemon did (after a backup, or after a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastPrune {
    /// `backup` or `snapshot`.
    pub kind: String,
    /// Epoch seconds.
    pub at: i64,
    /// How many were removed.
    pub removed: u64,
    /// Their names (snapshot names / volume ids) when known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How the last scheduled snapshot run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRun {
    /// Epoch seconds.
    pub at: i64,
    /// `ok`, `failed` or `skipped`.
    pub result: String,
    /// The snapshot name, or why it failed / was skipped.
    pub detail: String,
}

/// Own snapshots and backups as last seen, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Snapshots of the guest that are ours (`None` until listed).
    pub snapshots_owned: Option<u64>,
    /// Snapshots of the guest that are not ours (`None` until listed).
    pub snapshots_foreign: Option<u64>,
    pub newest_snapshot: Option<Newest>,
    pub newest_backup: Option<Newest>,
    pub last_prune: Option<LastPrune>,
    pub last_snapshot_run: Option<SnapshotRun>,
    /// Epoch seconds of the last snapshot this daemon created.
    pub last_snapshot_success: Option<i64>,
}

/// Snapshot runs by result since the process started; every result always has a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotRunCounts {
    pub ok: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl SnapshotRunCounts {
    /// `(result label, count)` in a fixed order.
    pub fn labelled(&self) -> [(&'static str, u64); 3] {
        [
            ("ok", self.ok),
            ("failed", self.failed),
            ("skipped", self.skipped),
        ]
    }
}

/// Counters of the side jobs since the process started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobCounters {
    pub snapshot_runs: SnapshotRunCounts,
    /// Snapshots removed by pruning.
    pub pruned_snapshots: u64,
    /// Backups removed by pruning.
    pub pruned_backups: u64,
    /// Skipped scheduled jobs (backups, snapshots, pruning) by reason.
    pub skipped: BTreeMap<String, u64>,
}

impl JobCounters {
    /// Counts a skipped job; see [`MAX_SKIP_REASONS`].
    pub fn record_skip(&mut self, reason: &str) {
        let key = if self.skipped.contains_key(reason) || self.skipped.len() < MAX_SKIP_REASONS {
            reason
        } else {
            OTHER_SKIP_REASON
        };
        let n = self.skipped.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// `(kind label, count)` of pruned items in a fixed order.
    pub fn pruned_labelled(&self) -> [(&'static str, u64); 2] {
        [
            ("backup", self.pruned_backups),
            ("snapshot", self.pruned_snapshots),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_are_bounded() {
        let mut c = JobCounters::default();
        for i in 0..MAX_SKIP_REASONS + 3 {
            c.record_skip(&format!("r{i}"));
        }
        c.record_skip("r0");
        assert_eq!(c.skipped.len(), MAX_SKIP_REASONS + 1);
        assert_eq!(c.skipped["r0"], 2);
        assert_eq!(c.skipped[OTHER_SKIP_REASON], 3);
    }
}
