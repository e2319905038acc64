//! Snapshot create / list / prune against the API (reference §4). See the parent module for
//! the invariants; the plan itself is the pure [`plan_snapshots`].

use jiff::Timestamp;
use serde::Serialize;

use super::naming::ownership;
use super::wait::{LockState, TaskEnd, locked_by, parse_upid, poll_task, read_lock, wait_unlocked};
use super::{Guest, RETRY_TAG, SnapshotSettings};
use crate::pve::retry::Sleeper;
use crate::pve::types::{GuestType, Snapshot, TaskOutcome};
use crate::pve::{ApiError, PveClient};
use crate::retention::{Decision, Item, plan};

/// A run that did not act because the guest stayed locked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// `locked (backup)`.
    pub reason: String,
    pub lock: String,
    pub waited_secs: f64,
    /// `qm unlock 101` / `pct unlock 103`.
    pub unlock_command: String,
    /// What the operator should know.
    pub hint: String,
}

pub(super) fn skipped(guest: &Guest, lock: &str, waited_secs: f64) -> Skipped {
    let cmd = guest.unlock_command();
    let hint = if lock == "snapshot-delete" {
        format!(
            "stale lock 'snapshot-delete' left by an interrupted snapshot delete; an API token cannot clear it: run `{cmd}` on node {}, the next run finishes the delete",
            guest.node
        )
    } else {
        format!(
            "the guest stayed locked ({lock}) for {waited_secs:.0}s; if no {lock} is running on node {}, the lock is stale: clear it with `{cmd}`",
            guest.node
        )
    };
    Skipped {
        reason: format!("locked ({lock})"),
        lock: lock.to_string(),
        waited_secs,
        unlock_command: cmd,
        hint,
    }
}

/// Result of [`create`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CreateOutcome {
    Created {
        name: String,
        upid: String,
        /// `OK` or `WARNINGS: n`.
        exitstatus: String,
    },
    Skipped(Skipped),
    Failed {
        name: String,
        upid: Option<String>,
        error: String,
    },
}

pub(super) fn outcome_text(o: &TaskOutcome) -> String {
    match o {
        TaskOutcome::Ok => "OK".into(),
        TaskOutcome::Warnings(n) => format!("WARNINGS: {n}"),
        TaskOutcome::Failed(e) => e.clone(),
    }
}

/// Takes a snapshot named for `now` and follows its task to the end.
pub async fn create(
    client: &PveClient,
    guest: &Guest,
    settings: &SnapshotSettings,
    now: Timestamp,
    sleeper: &dyn Sleeper,
) -> Result<CreateOutcome, ApiError> {
    let lock = wait_unlocked(client, guest, &settings.waits, sleeper).await?;
    if let Some(l) = &lock.held {
        return Ok(CreateOutcome::Skipped(skipped(guest, l, lock.waited_secs)));
    }
    // Names carry the UTC second: if one is taken (a manual and a scheduled snapshot in the
    // same second), the next free second is used instead of failing with "already used".
    let existing: Vec<Snapshot> = client.get(guest.path(&["snapshot"]), &[]).await?;
    let mut at = now;
    let mut name = settings.prefix.name_at(at);
    for _ in 0..60 {
        if !existing.iter().any(|s| s.name == name) {
            break;
        }
        at = at
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(at);
        name = settings.prefix.name_at(at);
    }
    let mut form = vec![
        ("snapname", name.clone()),
        ("description", settings.description()),
    ];
    if settings.vmstate && guest.kind == GuestType::Qemu {
        form.push(("vmstate", "1".into()));
    }
    let path = guest.path(&["snapshot"]);
    let call = format!("POST {}", path.display());
    let raw: String = client.post_form(path, &form).await?;
    let upid = parse_upid(&call, &raw)?;
    Ok(
        match poll_task(client, &upid, &settings.waits, sleeper).await? {
            TaskEnd::Stopped(TaskOutcome::Failed(e)) => match locked_by(&e) {
                // The lock was taken between our check and the task: the same "skipped".
                Some(l) => CreateOutcome::Skipped(skipped(guest, &l, lock.waited_secs)),
                None => CreateOutcome::Failed {
                    name,
                    upid: Some(raw),
                    error: e,
                },
            },
            TaskEnd::Stopped(o) => CreateOutcome::Created {
                name,
                upid: raw,
                exitstatus: outcome_text(&o),
            },
            TaskEnd::TimedOut => CreateOutcome::Failed {
                name,
                upid: Some(raw),
                error: format!(
                    "snapshot task still running after {}s",
                    settings.waits.task_timeout.as_secs()
                ),
            },
        },
    )
}

/// One snapshot with its ownership and plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub description: String,
    pub snaptime: i64,
    pub snapstate: Option<String>,
    pub vmstate: bool,
    pub owned: bool,
    /// `ours`, or why not.
    pub ownership: String,
    pub decision: Decision,
    pub reason: String,
}

/// Result of [`list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotListing {
    pub guest: Guest,
    pub lock: Option<String>,
    /// Oldest first; `current` is never listed.
    pub snapshots: Vec<SnapshotInfo>,
}

/// The plan for a snapshot list (pure). Our complete snapshots go through the retention
/// planner; ours in `snapstate=delete` (interrupted delete) or `prepare` (failed create) are
/// removed; everything else is kept as not ours. `current` is left out.
pub fn plan_snapshots(entries: &[Snapshot], settings: &SnapshotSettings) -> Vec<SnapshotInfo> {
    let mut infos: Vec<SnapshotInfo> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    for s in entries.iter().filter(|s| !s.is_current()) {
        let own = ownership(&settings.prefix, &settings.marker, &s.name, &s.description);
        let snaptime = s.snaptime.unwrap_or(0);
        let mut info = SnapshotInfo {
            name: s.name.clone(),
            description: s.description.clone(),
            snaptime,
            snapstate: s.snapstate.clone(),
            vmstate: s.vmstate.unwrap_or(false),
            owned: own.is_ok(),
            ownership: own.clone().err().unwrap_or_else(|| "ours".into()),
            decision: Decision::Keep,
            reason: String::new(),
        };
        match (&own, s.snapstate.as_deref()) {
            (Err(why), _) => info.reason = why.clone(),
            (Ok(()), Some("delete")) => {
                info.decision = Decision::Remove;
                info.reason = "interrupted delete (snapstate=delete): finish it".into();
            }
            (Ok(()), Some(st)) => {
                info.decision = Decision::Remove;
                info.reason = format!("incomplete snapshot (snapstate={st})");
            }
            (Ok(()), None) => items.push(Item {
                id: s.name.clone(),
                timestamp: snaptime,
                protected: false,
                owned: true,
            }),
        }
        infos.push(info);
    }
    for p in plan(&items, &settings.policy, &settings.tz) {
        if let Some(info) = infos.iter_mut().find(|i| i.name == p.id) {
            info.decision = p.decision;
            info.reason = p.reason;
        }
    }
    infos.sort_by(|a, b| a.snaptime.cmp(&b.snaptime).then(a.name.cmp(&b.name)));
    infos
}

async fn fetch(client: &PveClient, guest: &Guest) -> Result<Vec<Snapshot>, ApiError> {
    client.get(guest.path(&["snapshot"]), &[]).await
}

/// Lists the guest's snapshots with ownership and the retention plan. Only GETs.
pub async fn list(
    client: &PveClient,
    guest: &Guest,
    settings: &SnapshotSettings,
) -> Result<SnapshotListing, ApiError> {
    let lock = read_lock(client, guest).await?;
    let entries = fetch(client, guest).await?;
    Ok(SnapshotListing {
        guest: guest.clone(),
        lock,
        snapshots: plan_snapshots(&entries, settings),
    })
}

/// One delete request and how its task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub force: bool,
    pub upid: Option<String>,
    /// Exit status, or the request error.
    pub result: String,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.upid.is_some() && TaskOutcome::from_exitstatus(&self.result).is_success()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum DeleteResult {
    Deleted { forced: bool },
    Failed { error: String },
    NotAttempted { reason: String },
}

/// What prune did to one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteAction {
    pub name: String,
    pub result: DeleteResult,
    pub attempts: Vec<Attempt>,
}

/// Result of [`prune`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    pub guest: Guest,
    pub dry_run: bool,
    /// The lock seen first (before any wait).
    pub lock: Option<String>,
    /// Set when nothing (more) could be done because of a lock.
    pub skipped: Option<Skipped>,
    /// The plan, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// Deletions, in the order done (empty on a dry run).
    pub actions: Vec<DeleteAction>,
}

impl PruneReport {
    /// Names deleted by this run.
    pub fn deleted(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|a| matches!(a.result, DeleteResult::Deleted { .. }))
            .map(|a| a.name.as_str())
            .collect()
    }
}

/// Applies the retention plan: deletes our removable snapshots (interrupted deletes first,
/// then oldest first). A dry run reads the lock once, plans, and sends no mutating request.
pub async fn prune(
    client: &PveClient,
    guest: &Guest,
    settings: &SnapshotSettings,
    dry_run: bool,
    sleeper: &dyn Sleeper,
) -> Result<PruneReport, ApiError> {
    let lock = if dry_run {
        let l = read_lock(client, guest).await?;
        LockState {
            held: l.clone(),
            seen: l,
            waited_secs: 0.0,
        }
    } else {
        wait_unlocked(client, guest, &settings.waits, sleeper).await?
    };
    let entries = fetch(client, guest).await?;
    let snapshots = plan_snapshots(&entries, settings);
    let mut report = PruneReport {
        guest: guest.clone(),
        dry_run,
        lock: lock.seen.clone(),
        skipped: None,
        snapshots,
        actions: Vec::new(),
    };
    if dry_run {
        return Ok(report);
    }
    if let Some(l) = &lock.held {
        report.skipped = Some(skipped(guest, l, lock.waited_secs));
        return Ok(report);
    }
    let mut todo: Vec<&SnapshotInfo> = report
        .snapshots
        .iter()
        .filter(|s| s.owned && s.decision == Decision::Remove)
        .collect();
    todo.sort_by_key(|s| (s.snapstate.as_deref() != Some("delete"), s.snaptime));
    let todo: Vec<SnapshotInfo> = todo.into_iter().cloned().collect();
    let mut stop: Option<String> = None;
    for s in &todo {
        if let Some(reason) = &stop {
            report.actions.push(DeleteAction {
                name: s.name.clone(),
                result: DeleteResult::NotAttempted {
                    reason: reason.clone(),
                },
                attempts: Vec::new(),
            });
            continue;
        }
        let action = delete_one(client, guest, settings, s, sleeper).await;
        if let DeleteResult::Failed { error } = &action.result {
            // Whatever lock the failure left (or met) stops the run, with the unlock command.
            let lock = match locked_by(error) {
                Some(l) => Some(l),
                None => read_lock(client, guest).await?,
            };
            match lock {
                Some(l) => {
                    report.skipped = Some(skipped(guest, &l, 0.0));
                    stop = Some(format!("locked ({l})"));
                }
                None if action.attempts.iter().all(|a| a.upid.is_none()) => {
                    stop = Some(format!("an earlier request failed: {error}"));
                }
                None => {}
            }
        }
        report.actions.push(action);
    }
    Ok(report)
}

async fn run_delete(
    client: &PveClient,
    guest: &Guest,
    name: &str,
    force: bool,
    settings: &SnapshotSettings,
    sleeper: &dyn Sleeper,
) -> Attempt {
    let path = guest.path(&["snapshot", name]);
    let call = format!("DELETE {}", path.display());
    let query: Vec<(&str, String)> = if force {
        vec![("force", "1".to_string())]
    } else {
        Vec::new()
    };
    let started = async {
        let raw: String = client.delete(path, &query).await?;
        let upid = parse_upid(&call, &raw)?;
        let end = poll_task(client, &upid, &settings.waits, sleeper).await?;
        Ok::<_, ApiError>((raw, end))
    };
    match started.await {
        Ok((raw, TaskEnd::Stopped(o))) => Attempt {
            force,
            upid: Some(raw),
            result: outcome_text(&o),
        },
        Ok((raw, TaskEnd::TimedOut)) => Attempt {
            force,
            upid: Some(raw),
            result: format!(
                "delete task still running after {}s",
                settings.waits.task_timeout.as_secs()
            ),
        },
        Err(e) => Attempt {
            force,
            upid: None,
            result: e.to_string(),
        },
    }
}

fn finish(name: &str, attempts: Vec<Attempt>) -> DeleteAction {
    let last = attempts.last().expect("at least one attempt");
    let result = if last.ok() {
        DeleteResult::Deleted { forced: last.force }
    } else {
        DeleteResult::Failed {
            error: last.result.clone(),
        }
    };
    DeleteAction {
        name: name.to_string(),
        result,
        attempts,
    }
}

/// Deletes one of our snapshots. An interrupted one (`snapstate=delete`) is first tagged and
/// retried normally; `force` follows only once a normal delete has failed (now, or in an
/// earlier run, which the tag records) and the guest is not locked.
async fn delete_one(
    client: &PveClient,
    guest: &Guest,
    settings: &SnapshotSettings,
    s: &SnapshotInfo,
    sleeper: &dyn Sleeper,
) -> DeleteAction {
    let interrupted = s.snapstate.as_deref() == Some("delete");
    let mut attempts = Vec::new();
    if interrupted && s.description.contains(RETRY_TAG) {
        attempts.push(run_delete(client, guest, &s.name, true, settings, sleeper).await);
        return finish(&s.name, attempts);
    }
    if interrupted {
        let desc = format!("{} {RETRY_TAG}", s.description.trim_end());
        let path = guest.path(&["snapshot", &s.name, "config"]);
        if let Err(e) = client
            .put_form::<serde_json::Value>(path, &[("description", desc)])
            .await
        {
            return DeleteAction {
                name: s.name.clone(),
                result: DeleteResult::Failed {
                    error: e.to_string(),
                },
                attempts,
            };
        }
    }
    let normal = run_delete(client, guest, &s.name, false, settings, sleeper).await;
    let normal_ran = normal.upid.is_some();
    let normal_ok = normal.ok();
    let lock_err = locked_by(&normal.result);
    attempts.push(normal);
    if normal_ok || !normal_ran || lock_err.is_some() {
        return finish(&s.name, attempts);
    }
    // The normal delete ran and failed. Force only if nothing holds the guest now.
    match read_lock(client, guest).await {
        Ok(None) => {
            attempts.push(run_delete(client, guest, &s.name, true, settings, sleeper).await);
        }
        Ok(Some(_)) => {}
        Err(e) => attempts.push(Attempt {
            force: true,
            upid: None,
            result: e.to_string(),
        }),
    }
    finish(&s.name, attempts)
}
