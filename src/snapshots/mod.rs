//! The agent's own rolling PVE snapshots (create, list, prune) and the retention of its own
//! backups (list, prune through `prunebackups`), both planned by [`crate::retention`].
//!
//! Invariants:
//! * Nothing that is not ours is ever deleted: `current`, LXC's `vzdump` snapshot and every
//!   snapshot whose name is not `<prefix>-<timestamp>` **or** whose description lacks the
//!   marker ([`naming::ownership`]). Backups are pruned only through
//!   `DELETE /nodes/{node}/storage/{storage}/prunebackups` with this guest's `vmid` and `type`,
//!   and PVE's own dry-run decides (protected and renamed backups are never removed).
//! * Retention uses `snaptime` / `ctime`, never the name.
//! * The guest lock is read before acting; a lock that does not go away within the bounded
//!   wait gives a `skipped: locked (<lock>)` result with the exact `qm unlock` / `pct unlock`
//!   command, never an unexplained failure.
//! * A dry run sends only GET requests.
//! * `force=1` is used only on our own snapshot left in `snapstate=delete`, and only after a
//!   normal delete of it failed (this run, or an earlier one: before retrying normally the
//!   description gets [`RETRY_TAG`], so the next run knows).
//!
//! Results are plain serialisable structs for `--json`, state and metrics.

pub mod backups;
pub mod naming;
mod ops;
pub mod wait;

#[cfg(test)]
mod tests;

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::pve::ApiPath;
use crate::pve::types::GuestType;
use crate::retention::Policy;

pub use backups::{
    BackupInfo, BackupListing, BackupPruneReport, BackupRetention, backups_list, backups_prune,
};
pub use naming::{DEFAULT_MARKER, NameError, Prefix};
pub use ops::{
    Attempt, CreateOutcome, DeleteAction, DeleteResult, PruneReport, Skipped, SnapshotInfo,
    SnapshotListing, create, list, plan_snapshots, prune,
};
pub use wait::Waits;

/// Appended to an interrupted snapshot's description before a normal delete is retried.
pub const RETRY_TAG: &str = "[delete-retry]";

/// The guest acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guest {
    pub node: String,
    pub vmid: u32,
    #[serde(rename = "type")]
    pub kind: GuestType,
}

impl Guest {
    /// `/nodes/{node}/{qemu|lxc}/{vmid}/<rest…>`.
    pub fn path(&self, rest: &[&str]) -> ApiPath {
        let vmid = self.vmid.to_string();
        let mut segs = vec![
            "nodes",
            self.node.as_str(),
            self.kind.as_str(),
            vmid.as_str(),
        ];
        segs.extend_from_slice(rest);
        ApiPath::new(segs)
    }

    /// The command an operator runs on the node to clear a stale lock.
    pub fn unlock_command(&self) -> String {
        match self.kind {
            GuestType::Qemu => format!("qm unlock {}", self.vmid),
            GuestType::Lxc => format!("pct unlock {}", self.vmid),
        }
    }
}

/// `[snapshots]` settings, validated.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    pub prefix: Prefix,
    /// Ownership marker in the description.
    pub marker: String,
    /// qemu only: include RAM state.
    pub vmstate: bool,
    pub policy: Policy,
    /// Time zone of the retention periods.
    pub tz: TimeZone,
    pub waits: Waits,
}

impl SnapshotSettings {
    /// Validates prefix and marker (`None` = [`DEFAULT_MARKER`]).
    pub fn new(
        prefix: &str,
        marker: Option<&str>,
        vmstate: bool,
        policy: Policy,
        tz: TimeZone,
    ) -> Result<SnapshotSettings, NameError> {
        let marker = marker.unwrap_or(DEFAULT_MARKER);
        naming::check_marker(marker)?;
        Ok(SnapshotSettings {
            prefix: Prefix::new(prefix)?,
            marker: marker.to_string(),
            vmstate,
            policy,
            tz,
            waits: Waits::default(),
        })
    }

    /// The description written on our snapshots.
    pub fn description(&self) -> String {
        format!("{} rolling snapshot", self.marker)
    }
}
