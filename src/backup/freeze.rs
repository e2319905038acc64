//! `quiesce.fsfreeze` in a run: decide (who freezes), plan, journal, freeze under the watchdog,
//! thaw at release, and the start-up repair that thaws what a dead process left frozen.
//!
//! Invariants: the journal gets `freeze-planned` *before* the first FIFREEZE (a journal write
//! failure means no freeze), `frozen` after, `thawed` after the thaw; a mount found frozen by
//! someone else (EBUSY) is recorded and never thawed by us; a freeze failure thaws what this run
//! froze and fails the run (no backup claims a consistency it did not get); the watchdog
//! ([`FreezeSession`]) thaws at `quiesce.max-freeze` whatever the async flow does.

use std::path::PathBuf;
use std::sync::Arc;

use super::run::Agent;
use crate::identity::Identity;
use crate::pve::guest_config::GuestConfig;
use crate::pve::types::GuestType;
use crate::quiesce::freeze::{Decision, FreezeGuest, FreezeJob, plan};
use crate::quiesce::fsfreeze_sys::{
    FreezeResult, FreezeSession, ThawResult, canonical_or_ancestor, read_mounts, thaw,
};
use crate::state::{FreezeRecord, Journal, JournalStep};

/// One run's freeze. Created by [`Freezer::begin`]; [`Freezer::release`] thaws (idempotent).
pub struct Freezer {
    session: Option<Arc<FreezeSession>>,
    pub record: FreezeRecord,
}

fn strings(v: &[PathBuf]) -> Vec<String> {
    v.iter().map(|p| p.display().to_string()).collect()
}

/// The qemu `agent` option, read from the guest config (None when it cannot be read).
async fn agent_option(
    agent: &Agent,
    id: &Identity,
) -> Option<crate::pve::guest_config::AgentOption> {
    let vm = id.vmid.to_string();
    let r: Result<GuestConfig, _> = agent
        .client
        .get(
            ["nodes", id.node.as_str(), "qemu", vm.as_str(), "config"],
            &[],
        )
        .await;
    match r {
        Ok(c) => Some(c.agent()),
        Err(e) => {
            tracing::warn!(error = %e, "fsfreeze: cannot read the guest config to see whether PVE freezes too");
            None
        }
    }
}

impl Freezer {
    /// Freezes the configured mounts (after the pre hooks). `Ok(None)`: nothing configured.
    /// `Err`: the run must not go on (plan refused, journal unwritable, a FIFREEZE failed —
    /// whatever this call froze is thawed again before it returns).
    pub async fn begin(
        agent: &Agent,
        id: &Identity,
        job: FreezeJob,
        run_started: i64,
        journal: &mut Journal,
    ) -> Result<Option<Freezer>, String> {
        let q = &agent.cfg.quiesce;
        if q.fsfreeze.is_empty() {
            return Ok(None);
        }
        let mut record = FreezeRecord {
            job: match job {
                FreezeJob::Backup { .. } => "backup",
                FreezeJob::Snapshot { .. } => "snapshot",
            }
            .into(),
            run_started,
            ..FreezeRecord::default()
        };
        let (guest, agent_opt) = match id.kind {
            GuestType::Qemu => (FreezeGuest::Qemu, agent_option(agent, id).await),
            GuestType::Lxc => (FreezeGuest::Lxc, None),
        };
        match crate::quiesce::freeze::decide(guest, job, agent_opt, q.fsfreeze_force) {
            Decision::Skip { reason } => {
                tracing::info!("fsfreeze skipped: {reason}");
                record.skipped = Some(reason);
                return Ok(Some(Freezer {
                    session: None,
                    record,
                }));
            }
            Decision::Freeze { note: Some(n) } => tracing::info!("fsfreeze: {n}"),
            Decision::Freeze { note: None } => {}
        }
        let mounts =
            read_mounts().map_err(|e| format!("fsfreeze: reading /proc/self/mountinfo: {e}"))?;
        let state_dir = canonical_or_ancestor(agent.dir.path());
        let entries: Vec<PathBuf> = q
            .fsfreeze
            .iter()
            .map(|f| canonical_or_ancestor(&f.path))
            .collect();
        let plan = plan(&entries, &mounts, &[("state directory", state_dir)])
            .map_err(|e| format!("quiesce.fsfreeze: {e}"))?;
        for (entry, mount) in &plan.merged {
            tracing::info!(
                "fsfreeze: {} is on the same filesystem as {}; frozen once",
                entry.display(),
                mount.display()
            );
        }
        journal
            .record(JournalStep::FreezePlanned {
                mounts: strings(&plan.freeze_order),
            })
            .map_err(|e| format!("fsfreeze: cannot journal the freeze plan, not freezing: {e}"))?;
        let session =
            Arc::new(FreezeSession::start(q.max_freeze).map_err(|e| {
                format!("fsfreeze: cannot start the thaw watchdog, not freezing: {e}")
            })?);
        let mut frozen: Vec<PathBuf> = Vec::new();
        let mut already: Vec<PathBuf> = Vec::new();
        let mut failure: Option<String> = None;
        for m in &plan.freeze_order {
            let s = session.clone();
            let mp = m.clone();
            let r = tokio::task::spawn_blocking(move || s.freeze(&mp))
                .await
                .unwrap_or_else(|e| FreezeResult::Failed(format!("freeze thread: {e}")));
            match r {
                FreezeResult::Frozen => frozen.push(m.clone()),
                FreezeResult::AlreadyFrozen => {
                    tracing::warn!(
                        mount = %m.display(),
                        "fsfreeze: already frozen by someone else (EBUSY); recorded, and it will not be thawed by the agent"
                    );
                    already.push(m.clone());
                }
                FreezeResult::Failed(e) => {
                    failure = Some(format!("fsfreeze of {} failed: {e}", m.display()));
                    break;
                }
            }
        }
        record.frozen = strings(&frozen);
        record.already_frozen = strings(&already);
        if let Err(e) = journal.record(JournalStep::Frozen {
            frozen: strings(&frozen),
            already_frozen: strings(&already),
        }) {
            tracing::error!("fsfreeze: journal write failed after freezing: {e}");
        }
        tracing::info!(frozen = ?record.frozen, already_frozen = ?record.already_frozen, "fsfreeze: frozen");
        let mut fz = Freezer {
            session: Some(session),
            record,
        };
        if let Some(msg) = failure {
            fz.release(journal, "failure").await;
            return Err(format!(
                "{msg}; the filesystems this run froze were thawed again"
            ));
        }
        Ok(Some(fz))
    }

    /// Thaws what this run froze (a no-op the second time) and journals it. `by` names the
    /// regular path (`release`, `failure`); a thaw the watchdog already did is recorded as such.
    pub async fn release(&mut self, journal: &mut Journal, by: &str) {
        let Some(session) = self.session.take() else {
            return;
        };
        let report = tokio::task::spawn_blocking(move || session.thaw_all())
            .await
            .unwrap_or_default();
        let mounts: Vec<PathBuf> = report.thawed.iter().map(|(m, _)| m.clone()).collect();
        let by = if report.by_watchdog { "watchdog" } else { by };
        if !mounts.is_empty() {
            let _ = journal.record(JournalStep::Thawed {
                mounts: strings(&mounts),
                by: by.to_string(),
            });
        }
        for (m, r) in &report.thawed {
            match r {
                ThawResult::Failed(e) => {
                    tracing::error!(mount = %m.display(), "fsfreeze: thaw failed: {e}");
                    self.record
                        .errors
                        .push(format!("thaw of {} failed: {e}", m.display()));
                }
                r => tracing::info!(mount = %m.display(), "fsfreeze: {r}"),
            }
        }
        self.record.frozen_seconds = report.frozen_for.map(|d| d.as_secs_f64());
        self.record.cut_short = report.by_watchdog && !mounts.is_empty();
        if self.record.cut_short {
            tracing::warn!(
                "fsfreeze: the freeze window was cut short by quiesce.max-freeze (the watchdog thawed before the release)"
            );
        }
    }

    /// The warning text for a run whose freeze the watchdog cut short.
    pub fn cut_short_warning(&self, max_freeze: std::time::Duration) -> Option<String> {
        self.record.cut_short.then(|| {
            format!(
                "fsfreeze: the watchdog thawed {} after quiesce.max-freeze ({}s), before the release; the backup went on with the filesystems thawed",
                self.record.frozen.join(", "),
                max_freeze.as_secs()
            )
        })
    }
}

/// Start-up repair, done first: thaws every mount the journal says a previous process froze (or
/// was about to freeze) and did not record as thawed. Returns a note for the run's summary.
pub fn repair_thaw(journal: &mut Journal) -> Option<String> {
    let owed = journal.thaw_owed();
    if owed.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for m in &owed {
        let r = thaw(std::path::Path::new(m));
        tracing::warn!(mount = %m, "start-up repair: fsfreeze left by an interrupted run: {r}");
        parts.push(format!("{m} {r}"));
    }
    let _ = journal.record(JournalStep::Thawed {
        mounts: owed,
        by: "repair".into(),
    });
    Some(format!(
        "thawed filesystems frozen by an interrupted run: {}",
        parts.join(", ")
    ))
}
