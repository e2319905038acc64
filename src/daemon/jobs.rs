//! The daemon's side jobs, planned in the same loop as backups and with the same rule
//! (`schedule::plan` from a persisted last fire time): the self-check (`[self-check] schedule`,
//! and once at daemon start) and own snapshots (`[snapshots] schedule`: create, then prune by
//! `[snapshots.retention]`). Also what the loop learns after a scheduled backup (its prune, the
//! newest backup).
//!
//! Invariants:
//! * the self-check and snapshot fire times are persisted (`State::last_selfcheck`,
//!   `State::last_snapshot_scheduled`) through the same deferred, lock-guarded write as
//!   `last_scheduled`, a snapshot fire time *before* its run starts; the self-check time never
//!   takes the lock by itself (it rides along with the next write, see `OwedWrite::is_empty`);
//! * a self-check that could not run (PVE unreachable, identity unknown, inconclusive answers)
//!   changes neither the health verdict nor the refusal; only a conclusive check does;
//! * with `on-violation = "refuse"`, after a check with violations no scheduled snapshot,
//!   backup or prune starts until a check passes; each one due is counted as skipped with
//!   reason [`SKIP_SELFCHECK`];
//! * a side job is abandoned on SIGTERM: the self-check and listings are read-only, and an
//!   interrupted snapshot create or delete is finished or cleaned up by the next prune; except
//!   a snapshot run with `[snapshots] quiesce = true` (hooks or fsfreeze configured), which is
//!   awaited to its end — its posts run and its mounts thaw before the daemon exits.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::records::SKIP_SELFCHECK;
use super::runner::{Daemon, STOP_EXTEND, Wake, changed};
use crate::backup::follow::Shutdown;
use crate::backup::run::{Agent, Summary};
use crate::config::{Config, OnViolation, Schedule};
use crate::health::{LastPrune, Newest, SelfCheckSummary, SnapshotRun};
use crate::pve::retry::TokioSleeper;
use crate::pve::types::GuestType;
use crate::retention::Decision;
use crate::schedule::{CronSchedule, Plan, format_run, plan, splay_offset};
use crate::selfcheck::{self, SelfCheckReport, Verdict};
use crate::snapshots::{self, CreateOutcome, DeleteResult, Guest, SnapshotInfo};
use crate::state::GuestKind;

/// The compiled side-job schedules (in the backup schedule's time zone).
#[derive(Debug, Clone, Default)]
pub struct JobSchedules {
    pub selfcheck: Option<CronSchedule>,
    pub snapshots: Option<CronSchedule>,
}

/// Compiles `self-check.schedule` and `snapshots.schedule`.
pub fn compile_jobs(cfg: &Config) -> Result<JobSchedules, String> {
    let tz = cfg.backup.timezone.clone().unwrap_or_else(TimeZone::system);
    let compile = |s: &Option<Schedule>, key: &str| -> Result<Option<CronSchedule>, String> {
        s.as_ref()
            .map(|s| CronSchedule::new(s, tz.clone()).map_err(|e| format!("{key}: {e}")))
            .transpose()
    };
    Ok(JobSchedules {
        selfcheck: compile(&cfg.self_check.schedule, "self-check.schedule")?,
        snapshots: compile(&cfg.snapshots.schedule, "snapshots.schedule")?,
    })
}

fn now_epoch() -> i64 {
    Timestamp::now().as_second()
}

fn ts(t: Option<i64>) -> Option<Timestamp> {
    t.and_then(|s| Timestamp::from_second(s).ok())
}

/// What [`Daemon::with_heartbeat`] does with its job on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnStop {
    /// Drop it: nothing is owed by an interrupted job.
    Abandon,
    /// Await it to its end (it owes something, e.g. the quiesce posts): `log` is logged and
    /// `status` sent as the systemd `STATUS=` line when the stop is requested.
    Finish {
        log: &'static str,
        status: &'static str,
    },
}

/// Whether a scheduled snapshot quiesces (hooks or fsfreeze), so must not be dropped midway.
fn quiesces(cfg: &Config) -> bool {
    cfg.snapshots.quiesce && (!cfg.quiesce.hooks.is_empty() || !cfg.quiesce.fsfreeze.is_empty())
}

/// What a scheduled snapshot run did (computed off the loop, applied to the view after).
#[derive(Debug, Default)]
struct SnapshotJob {
    run: Option<SnapshotRun>,
    created_at: Option<i64>,
    /// Reasons to count under `felhom_skipped_total`.
    skips: Vec<String>,
    prune: Option<LastPrune>,
    /// The snapshots after the run, when listed.
    listing: Option<Vec<SnapshotInfo>>,
}

fn failed(detail: impl Into<String>) -> SnapshotRun {
    SnapshotRun {
        at: now_epoch(),
        result: "failed".into(),
        detail: detail.into(),
    }
}

/// Create, then prune; every outcome explained.
async fn snapshot_job(agent: &Agent) -> SnapshotJob {
    let mut job = SnapshotJob::default();
    let id = match crate::jobs::resolve_identity(&agent.client, &agent.cfg, &agent.local).await {
        Ok(id) => id,
        Err(e) => {
            job.run = Some(failed(e));
            return job;
        }
    };
    let settings = match crate::jobs::snapshot_settings(&agent.cfg) {
        Ok(s) => s,
        Err(e) => {
            job.run = Some(failed(e.to_string()));
            return job;
        }
    };
    let guest = crate::jobs::guest(&id);
    let client = &agent.client;
    let created =
        crate::jobs::snapshot_create::create_snapshot(agent, &id, &guest, &settings).await;
    let at = now_epoch();
    let mut prune_now = false;
    job.run = Some(match created {
        Ok(CreateOutcome::Created { name, .. }) => {
            job.created_at = Some(at);
            prune_now = true;
            SnapshotRun {
                at,
                result: "ok".into(),
                detail: name,
            }
        }
        Ok(CreateOutcome::Skipped(s)) => {
            job.skips.push(s.reason.clone());
            SnapshotRun {
                at,
                result: "skipped".into(),
                detail: format!("{}: {}", s.reason, s.hint),
            }
        }
        Ok(CreateOutcome::Failed { name, error, .. }) => failed(format!("{name}: {error}")),
        Err(e) => failed(e),
    });
    if prune_now {
        match snapshots::prune(client, &guest, &settings, false, &TokioSleeper).await {
            Ok(r) => {
                let names: Vec<String> = r.deleted().into_iter().map(str::to_string).collect();
                let mut errors: Vec<String> = r
                    .actions
                    .iter()
                    .filter_map(|a| match &a.result {
                        DeleteResult::Failed { error } => Some(format!("{}: {error}", a.name)),
                        _ => None,
                    })
                    .collect();
                if let Some(s) = &r.skipped {
                    job.skips.push(s.reason.clone());
                    errors.push(format!("{}: {}", s.reason, s.hint));
                }
                job.listing = Some(
                    r.snapshots
                        .iter()
                        .filter(|s| !names.contains(&s.name))
                        .cloned()
                        .collect(),
                );
                job.prune = Some(LastPrune {
                    kind: "snapshot".into(),
                    at: now_epoch(),
                    removed: names.len() as u64,
                    names,
                    error: (!errors.is_empty()).then(|| errors.join("; ")),
                });
            }
            Err(e) => {
                job.prune = Some(LastPrune {
                    kind: "snapshot".into(),
                    at: now_epoch(),
                    removed: 0,
                    names: Vec::new(),
                    error: Some(e.to_string()),
                });
            }
        }
    }
    if job.listing.is_none()
        && let Ok(l) = snapshots::list(client, &guest, &settings).await
    {
        job.listing = Some(l.snapshots);
    }
    job
}

/// Own snapshots and own backups as listed now (only GETs); `None` parts could not be listed.
async fn inventory(
    agent: &Agent,
    guest: &Guest,
) -> (Option<Vec<SnapshotInfo>>, Option<Option<Newest>>) {
    let snaps = if agent.cfg.snapshots.schedule.is_some() {
        match crate::jobs::snapshot_settings(&agent.cfg) {
            Ok(s) => snapshots::list(&agent.client, guest, &s)
                .await
                .ok()
                .map(|l| l.snapshots),
            Err(_) => None,
        }
    } else {
        None
    };
    let retention = crate::jobs::backup_listing_retention(&agent.cfg);
    let backups = snapshots::backups_list(&agent.client, guest, &retention)
        .await
        .ok()
        .map(|l| {
            l.backups.iter().max_by_key(|b| b.ctime).map(|b| Newest {
                name: b.volid.clone(),
                time: b.ctime,
            })
        });
    (snaps, backups)
}

impl Daemon {
    /// `Some(violations)` while `on-violation = "refuse"` holds scheduled mutating work back.
    pub fn refusing(&self) -> Option<usize> {
        if self.agent.cfg.self_check.on_violation == OnViolation::Refuse {
            self.selfcheck_violations
        } else {
            None
        }
    }

    fn selfcheck_plan(&self, now: Timestamp) -> Option<Plan> {
        let s = self.jobs.selfcheck.as_ref()?;
        Some(plan(
            s,
            ts(self.last_selfcheck),
            now,
            Duration::ZERO,
            Duration::ZERO,
        ))
    }

    fn snapshot_plan(&self, now: Timestamp) -> Option<Plan> {
        let s = self.jobs.snapshots.as_ref()?;
        let cfg = &self.agent.cfg;
        let vmid = cfg
            .guest
            .vmid
            .or_else(|| self.health.read(|v| v.identity.as_ref().map(|i| i.vmid)));
        let splay = vmid.map_or(Duration::ZERO, |v| splay_offset(v, cfg.backup.splay));
        Some(plan(
            s,
            ts(self.last_snapshot_scheduled),
            now,
            cfg.backup.catch_up,
            splay,
        ))
    }

    /// When a side job is next due (the loop sleeps until the earliest of this and the backup).
    pub fn next_job_wakeup(&self, now: Timestamp) -> Option<Timestamp> {
        let until = |p: Option<Plan>| match p {
            Some(Plan::WaitUntil { until, .. }) => Some(until),
            _ => None,
        };
        [
            until(self.selfcheck_plan(now)),
            until(self.snapshot_plan(now)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the side job that is due, if any; `true` when something was done (plan again).
    pub async fn run_due_jobs(&mut self, now: Timestamp) -> bool {
        let selfcheck_due = self.jobs.selfcheck.is_some()
            && (self.selfcheck_at_start
                || matches!(
                    self.selfcheck_plan(now),
                    Some(Plan::RunNow { .. } | Plan::Missed { .. })
                ));
        if selfcheck_due {
            self.run_selfcheck().await;
            return true;
        }
        match self.snapshot_plan(now) {
            Some(Plan::RunNow { scheduled, .. }) => {
                self.set_last_snapshot(scheduled);
                self.flush();
                self.run_snapshots(scheduled).await;
                true
            }
            Some(Plan::Missed {
                scheduled,
                missed_count,
                ..
            }) => {
                tracing::warn!(
                    "missed {missed_count} scheduled snapshot(s), the latest due at {scheduled}: more than backup.catch-up ago"
                );
                self.set_last_snapshot(scheduled);
                self.health
                    .update(|v| v.counters.jobs.record_skip("missed"));
                self.flush();
                true
            }
            _ => false,
        }
    }

    fn set_last_snapshot(&mut self, scheduled: Timestamp) {
        self.last_snapshot_scheduled = Some(scheduled.as_second());
        self.owed.last_snapshot_scheduled = self.last_snapshot_scheduled;
    }

    /// Awaits `fut` while keeping the heartbeat, noting SIGHUP and state changes. `None` when
    /// a stop was requested and `on_stop` is [`OnStop::Abandon`] (the job is dropped); with
    /// [`OnStop::Finish`] a stop is noted (the loop exits after the job) and the job is awaited
    /// to its end while more stop time is asked for on every tick.
    pub(crate) async fn with_heartbeat<T>(
        &mut self,
        fut: impl Future<Output = T>,
        on_stop: OnStop,
    ) -> Option<T> {
        let mut fut = std::pin::pin!(fut);
        let mut tick = tokio::time::interval(self.run_tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let signals = self.signals.clone();
        let mut stopping = false;
        loop {
            let wake = tokio::select! {
                out = &mut fut => return Some(out),
                _ = tick.tick() => Wake::Timer,
                _ = signals.wait(), if !stopping => Wake::Term,
                _ = self.hup.recv() => Wake::Hup,
                c = changed(&self.watch) => Wake::Changed(c),
            };
            match wake {
                Wake::Timer => {
                    self.beat();
                    if stopping {
                        self.notify.extend_timeout(STOP_EXTEND);
                    }
                }
                Wake::Term => match on_stop {
                    OnStop::Abandon => {
                        tracing::info!("stop requested: abandoning the running side job");
                        return None;
                    }
                    OnStop::Finish { log, status } => {
                        stopping = true;
                        tracing::info!("{log}");
                        self.notify.extend_timeout(STOP_EXTEND);
                        self.status(status.into());
                    }
                },
                Wake::Hup => {
                    tracing::info!("configuration reload requested; applied after the running job");
                    self.reload_requested = true;
                }
                Wake::Changed(c) => self.on_changed(c),
            }
        }
    }

    /// The self-check: at start and on its schedule. Updates the health view, the refusal
    /// and (when it could run) the inventory.
    async fn run_selfcheck(&mut self) {
        let at_start = std::mem::take(&mut self.selfcheck_at_start);
        self.status(if at_start {
            "running the start-up self-check".into()
        } else {
            "running the scheduled self-check".into()
        });
        let agent = self.agent.clone();
        let work = async {
            let id = crate::jobs::resolve_identity(&agent.client, &agent.cfg, &agent.local).await?;
            let report =
                selfcheck::run(&agent.client, crate::jobs::selfcheck_input(&agent.cfg, &id)).await;
            let inv = inventory(&agent, &crate::jobs::guest(&id)).await;
            Ok::<_, String>((report, inv))
        };
        let Some(result) = self.with_heartbeat(work, OnStop::Abandon).await else {
            return;
        };
        let now = now_epoch();
        self.last_selfcheck = Some(now);
        self.owed.last_selfcheck = Some(now);
        match result {
            Err(e) => tracing::warn!("self-check could not run: {e}"),
            Ok((report, inv)) => {
                self.apply_selfcheck(&report, now);
                self.apply_inventory(inv);
            }
        }
        self.flush();
    }

    fn apply_selfcheck(&mut self, report: &SelfCheckReport, now: i64) {
        let pass = match report.verdict {
            Verdict::CouldNotRun => {
                tracing::warn!(
                    "self-check could not run: {}",
                    report
                        .error
                        .as_deref()
                        .unwrap_or("some answers proved nothing")
                );
                return;
            }
            Verdict::Pass => true,
            Verdict::Violation => false,
        };
        let messages = report.violation_messages();
        if pass {
            tracing::info!("self-check passed: all {} rows hold", report.rows.len());
        } else {
            for m in &messages {
                tracing::warn!("self-check violation: {m}");
            }
        }
        let was_refusing = self.refusing().is_some();
        self.selfcheck_violations = (!pass).then(|| report.failures().count());
        match (was_refusing, self.refusing()) {
            (false, Some(n)) => tracing::warn!(
                "self-check.on-violation = \"refuse\": {n} violation(s); scheduled backups, snapshots and pruning are held back until a self-check passes"
            ),
            (true, None) => {
                tracing::info!("self-check passes again: scheduled work resumes")
            }
            _ => {}
        }
        let by_check: std::collections::BTreeMap<String, u64> = report
            .violations_by_check()
            .into_iter()
            .map(|(k, n)| (k.to_string(), n as u64))
            .collect();
        self.health.update(|v| {
            v.self_check = Some(SelfCheckSummary {
                ok: pass,
                violations: messages,
                last_run: now,
            });
            v.self_check_violations = by_check;
        });
    }

    fn apply_inventory(&self, inv: (Option<Vec<SnapshotInfo>>, Option<Option<Newest>>)) {
        let (snaps, newest_backup) = inv;
        self.health.update(|v| {
            if let Some(s) = snaps {
                set_snapshots(&mut v.inventory, &s);
            }
            if let Some(b) = newest_backup {
                v.inventory.newest_backup = b;
            }
        });
    }

    /// A scheduled snapshot run (create, then prune), or its skip while refusing.
    async fn run_snapshots(&mut self, scheduled: Timestamp) {
        if let Some(n) = self.refusing() {
            tracing::warn!(
                "scheduled snapshot skipped: the last self-check found {n} violation(s) and on-violation = \"refuse\""
            );
            self.health.update(|v| {
                v.counters.jobs.record_skip(SKIP_SELFCHECK);
                v.counters.jobs.snapshot_runs.skipped += 1;
                v.inventory.last_snapshot_run = Some(SnapshotRun {
                    at: now_epoch(),
                    result: "skipped".into(),
                    detail: format!("skipped ({SKIP_SELFCHECK})"),
                });
            });
            return;
        }
        self.status(format!(
            "taking a snapshot (scheduled {})",
            format_run(scheduled, &self.time_zone())
        ));
        tracing::info!("scheduled snapshot starting (fire time {scheduled})");
        let agent = self.agent.clone();
        // With quiesce the pres may have run and mounts may be frozen: dropping the job would
        // leave the posts owed until the next start (the application stays paused meanwhile).
        let on_stop = if quiesces(&agent.cfg) {
            OnStop::Finish {
                log: "stop requested during a snapshot run: letting it finish so its quiesce is released",
                status: "stopping: waiting for a snapshot run to finish",
            }
        } else {
            OnStop::Abandon
        };
        let Some(job) = self.with_heartbeat(snapshot_job(&agent), on_stop).await else {
            return;
        };
        if let Some(r) = &job.run {
            match r.result.as_str() {
                "ok" => tracing::info!("scheduled snapshot {} created", r.detail),
                "skipped" => tracing::warn!("scheduled snapshot skipped: {}", r.detail),
                _ => tracing::warn!("scheduled snapshot failed: {}", r.detail),
            }
        }
        if let Some(p) = &job.prune {
            match &p.error {
                None => tracing::info!("pruned {} snapshot(s): {:?}", p.removed, p.names),
                Some(e) => tracing::warn!(
                    "snapshot prune removed {} and did not finish: {e}",
                    p.removed
                ),
            }
        }
        self.health.update(|v| {
            let jobs = &mut v.counters.jobs;
            if let Some(r) = &job.run {
                let c = &mut jobs.snapshot_runs;
                match r.result.as_str() {
                    "ok" => c.ok += 1,
                    "skipped" => c.skipped += 1,
                    _ => c.failed += 1,
                }
            }
            for s in &job.skips {
                jobs.record_skip(s);
            }
            if let Some(p) = &job.prune {
                jobs.pruned_snapshots += p.removed;
                v.inventory.last_prune = Some(p.clone());
            }
            if let Some(at) = job.created_at {
                v.inventory.last_snapshot_success = Some(at);
            }
            if let Some(r) = job.run {
                v.inventory.last_snapshot_run = Some(r);
            }
            if let Some(l) = &job.listing {
                set_snapshots(&mut v.inventory, l);
            }
        });
    }

    /// After a scheduled backup: its prune into the counters and `/status`, then the newest
    /// backup as listed now.
    pub(crate) async fn after_scheduled_backup(&mut self, summary: &Summary) {
        if summary.pruned.is_some() || summary.prune_error.is_some() {
            let p = LastPrune {
                kind: "backup".into(),
                at: now_epoch(),
                removed: summary.pruned.unwrap_or(0) as u64,
                names: Vec::new(),
                error: summary.prune_error.clone(),
            };
            self.health.update(|v| {
                v.counters.jobs.pruned_backups += p.removed;
                v.inventory.last_prune = Some(p);
            });
        }
        if !matches!(summary.result.as_str(), "ok" | "warnings") {
            return;
        }
        let Some(guest) = self.health.read(|v| {
            v.identity.as_ref().map(|i| Guest {
                node: summary.node.clone().unwrap_or_else(|| i.node.clone()),
                vmid: i.vmid,
                kind: match i.kind {
                    GuestKind::Qemu => GuestType::Qemu,
                    GuestKind::Lxc => GuestType::Lxc,
                },
            })
        }) else {
            return;
        };
        let agent = self.agent.clone();
        if let Some(inv) = self
            .with_heartbeat(inventory(&agent, &guest), OnStop::Abandon)
            .await
        {
            self.apply_inventory(inv);
        }
    }
}

/// Counts and newest of the listed snapshots into the inventory.
fn set_snapshots(inv: &mut crate::health::Inventory, list: &[SnapshotInfo]) {
    let owned = list.iter().filter(|s| s.owned).count() as u64;
    inv.snapshots_owned = Some(owned);
    inv.snapshots_foreign = Some(list.len() as u64 - owned);
    inv.newest_snapshot = list
        .iter()
        .filter(|s| s.owned && s.decision == Decision::Keep && s.snapstate.is_none())
        .max_by_key(|s| s.snaptime)
        .map(|s| Newest {
            name: s.name.clone(),
            time: s.snaptime,
        });
}
