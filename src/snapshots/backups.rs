//! Retention of this guest's own backups on the backup storage (reference §5).
//!
//! PVE decides: `GET …/prunebackups` (dry run) with `vmid`, `type` and a `prune-backups`
//! property string built from the policy gives PVE's marks; `DELETE …/prunebackups` with the same
//! parameters removes what it marked `remove` (needs only `VM.Backup` + `Datastore.AllocateSpace`
//! with `vmid`). vzdump's own `prune-backups` parameter is never used. Our planner runs on the
//! same data to explain each mark; a disagreement (e.g. a time zone that is not the node's) is
//! reported, never acted on. Protected and renamed backups are never removed and do not count.

use jiff::tz::TimeZone;
use serde::Serialize;

use super::Guest;
use super::wait::{TaskEnd, Waits, parse_upid, poll_task};
use crate::pve::retry::Sleeper;
use crate::pve::types::{BackupVolume, PruneEntry, PruneMark};
use crate::pve::{ApiError, ApiPath, PveClient};
use crate::retention::{Decision, Item, Policy, plan};

/// `[backup]` storage and `[backup.retention]`, with the node's time zone.
#[derive(Debug, Clone)]
pub struct BackupRetention {
    pub storage: String,
    pub policy: Policy,
    /// The node's local time zone (PVE buckets backups in it).
    pub tz: TimeZone,
}

/// One backup of this guest with PVE's mark and our reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    pub volid: String,
    pub ctime: i64,
    pub size: u64,
    pub protected: bool,
    pub notes: Option<String>,
    /// PVE's dry-run mark: `keep`, `remove`, `protected`, `renamed`.
    pub mark: String,
    pub decision: Decision,
    pub reason: String,
}

/// Result of [`backups_list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupListing {
    pub guest: Guest,
    pub storage: String,
    /// The `prune-backups` value the plan is for.
    pub prune_backups: String,
    /// Oldest first.
    pub backups: Vec<BackupInfo>,
    /// Backups where our planner and PVE disagree (should be empty).
    pub disagreements: Vec<String>,
}

/// Result of [`backups_prune`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupPruneReport {
    pub dry_run: bool,
    /// The plan before pruning.
    pub listing: BackupListing,
    pub upid: Option<String>,
    /// Exit status of the prune task (or why it did not end).
    pub task_result: Option<String>,
    /// Volumes gone after the task.
    pub removed: Vec<String>,
}

fn mark_str(m: &PruneMark) -> &'static str {
    match m {
        PruneMark::Keep => "keep",
        PruneMark::Remove => "remove",
        PruneMark::Protected => "protected",
        PruneMark::Renamed => "renamed",
        PruneMark::Other => "unknown",
    }
}

fn storage_path(guest: &Guest, storage: &str, what: &str) -> ApiPath {
    ApiPath::new(["nodes", guest.node.as_str(), "storage", storage, what])
}

fn prune_params(guest: &Guest, policy: &Policy) -> Vec<(&'static str, String)> {
    vec![
        ("prune-backups", policy.to_property_string()),
        ("type", guest.kind.as_str().to_string()),
        ("vmid", guest.vmid.to_string()),
    ]
}

async fn content(
    client: &PveClient,
    guest: &Guest,
    storage: &str,
) -> Result<Vec<BackupVolume>, ApiError> {
    let all: Vec<BackupVolume> = client
        .get(
            storage_path(guest, storage, "content"),
            &[
                ("content", "backup".to_string()),
                ("vmid", guest.vmid.to_string()),
            ],
        )
        .await?;
    // The dir-storage vmid filter is a file-name match: keep exactly this guest's backups.
    Ok(all
        .into_iter()
        .filter(|v| v.vmid == Some(guest.vmid))
        .filter(|v| {
            v.subtype
                .as_deref()
                .is_none_or(|t| t == guest.kind.as_str())
        })
        .collect())
}

/// Joins PVE's dry-run marks with the content listing and explains them (pure).
pub fn explain(
    guest: &Guest,
    storage: &str,
    policy: &Policy,
    tz: &TimeZone,
    marks: &[PruneEntry],
    volumes: &[BackupVolume],
) -> BackupListing {
    let items: Vec<Item> = marks
        .iter()
        .map(|e| Item {
            id: e.volid.clone(),
            timestamp: e.ctime,
            protected: e.mark == PruneMark::Protected,
            owned: e.mark != PruneMark::Renamed,
        })
        .collect();
    let planned = plan(&items, policy, tz);
    let mut backups = Vec::new();
    let mut disagreements = Vec::new();
    for (e, p) in marks.iter().zip(planned) {
        let vol = volumes.iter().find(|v| v.volid == e.volid);
        let pve = if e.mark == PruneMark::Remove {
            Decision::Remove
        } else {
            Decision::Keep
        };
        let reason = match e.mark {
            PruneMark::Renamed => "renamed (not a standard backup name): never pruned".into(),
            _ => p.reason,
        };
        if pve != p.decision {
            disagreements.push(format!(
                "{}: PVE marks {}, the planner says {reason}",
                e.volid,
                mark_str(&e.mark)
            ));
        }
        backups.push(BackupInfo {
            volid: e.volid.clone(),
            ctime: e.ctime,
            size: vol.map_or(0, |v| v.size),
            protected: e.mark == PruneMark::Protected || vol.is_some_and(|v| v.is_protected()),
            notes: vol.and_then(|v| v.notes.clone()),
            mark: mark_str(&e.mark).to_string(),
            decision: pve,
            reason,
        });
    }
    backups.sort_by(|a, b| a.ctime.cmp(&b.ctime).then(a.volid.cmp(&b.volid)));
    BackupListing {
        guest: guest.clone(),
        storage: storage.to_string(),
        prune_backups: policy.to_property_string(),
        backups,
        disagreements,
    }
}

/// Lists this guest's backups on `storage` with PVE's prune plan for `policy`. Only GETs.
pub async fn backups_list(
    client: &PveClient,
    guest: &Guest,
    r: &BackupRetention,
) -> Result<BackupListing, ApiError> {
    let (storage, policy) = (r.storage.as_str(), &r.policy);
    let volumes = content(client, guest, storage).await?;
    let marks: Vec<PruneEntry> = client
        .get(
            storage_path(guest, storage, "prunebackups"),
            &prune_params(guest, policy),
        )
        .await?;
    let marks: Vec<PruneEntry> = marks
        .into_iter()
        .filter(|e| e.vmid.is_none_or(|v| v == guest.vmid))
        .collect();
    Ok(explain(guest, storage, policy, &r.tz, &marks, &volumes))
}

/// Prunes this guest's backups on `storage` by `policy`. A dry run (or a plan without
/// removals) sends only GETs.
pub async fn backups_prune(
    client: &PveClient,
    guest: &Guest,
    r: &BackupRetention,
    dry_run: bool,
    waits: &Waits,
    sleeper: &dyn Sleeper,
) -> Result<BackupPruneReport, ApiError> {
    let (storage, policy) = (r.storage.as_str(), &r.policy);
    let listing = backups_list(client, guest, r).await?;
    let mut report = BackupPruneReport {
        dry_run,
        listing,
        upid: None,
        task_result: None,
        removed: Vec::new(),
    };
    let planned: Vec<String> = report
        .listing
        .backups
        .iter()
        .filter(|b| b.decision == Decision::Remove)
        .map(|b| b.volid.clone())
        .collect();
    if dry_run || planned.is_empty() {
        return Ok(report);
    }
    let path = storage_path(guest, storage, "prunebackups");
    let call = format!("DELETE {}", path.display());
    let raw: String = client.delete(path, &prune_params(guest, policy)).await?;
    let upid = parse_upid(&call, &raw)?;
    report.upid = Some(raw);
    report.task_result = Some(match poll_task(client, &upid, waits, sleeper).await? {
        TaskEnd::Stopped(o) => super::ops::outcome_text(&o),
        TaskEnd::TimedOut => format!(
            "prune task still running after {}s",
            waits.task_timeout.as_secs()
        ),
    });
    let after = content(client, guest, storage).await?;
    report.removed = planned
        .into_iter()
        .filter(|v| !after.iter().any(|a| &a.volid == v))
        .collect();
    Ok(report)
}
