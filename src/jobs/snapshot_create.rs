//! Creating our own snapshot as a job: under the agent's run lock (it never overlaps a backup of
//! this agent, and a busy lock is a skip, not a failure), and wrapped in the quiesce hooks when
//! `[snapshots] quiesce = true` — every `pre` before the snapshot task, the owed `post`s once it
//! has ended, on every path. The journal records the quiesce exactly as for backups, so a crash
//! in between leaves the posts owed to the next start, whose repair runs them first.
//! With `quiesce = true` the `quiesce.fsfreeze` mounts are frozen after the pres and thawed
//! before the posts, exactly as for backups (same skip rule: a qemu guest whose guest agent PVE
//! uses to freeze is not frozen by us unless forced, unless the snapshot includes RAM); the
//! window is the whole snapshot task, bounded by `quiesce.max-freeze`.

use crate::backup::freeze::Freezer;
use crate::backup::run::{Agent, hook_env, hook_specs, log_event, now};
use crate::identity::Identity;
use crate::quiesce::freeze::FreezeJob;
use crate::quiesce::{QuiesceEvent, Quiescer};
use crate::snapshots::{self, CreateOutcome, Guest, Skipped, SnapshotSettings};
use crate::state::{JournalStep, LockError, LockInfo};

pub async fn create_snapshot(
    agent: &Agent,
    id: &Identity,
    guest: &Guest,
    settings: &SnapshotSettings,
) -> Result<CreateOutcome, String> {
    let _lock = match agent.dir.try_lock(&LockInfo::current("snapshot")) {
        Ok(l) => l,
        Err(LockError::Busy(holder)) => {
            let who = holder
                .map(|h| h.to_string())
                .unwrap_or_else(|| "holder unknown".into());
            return Ok(CreateOutcome::Skipped(Skipped {
                reason: "busy".into(),
                lock: "run.lock".into(),
                waited_secs: 0.0,
                unlock_command: String::new(),
                hint: format!(
                    "another run of this agent holds the lock ({who}); the next scheduled snapshot will run"
                ),
            }));
        }
        Err(e) => return Err(format!("cannot take the run lock: {e}")),
    };
    let hooks = if agent.cfg.snapshots.quiesce {
        hook_specs(&agent.cfg)
    } else {
        Vec::new()
    };
    let freeze = agent.cfg.snapshots.quiesce && !agent.cfg.quiesce.fsfreeze.is_empty();
    if hooks.is_empty() && !freeze {
        return snapshots::create(
            &agent.client,
            guest,
            settings,
            jiff::Timestamp::now(),
            &crate::pve::retry::TokioSleeper,
        )
        .await
        .map_err(|e| e.to_string());
    }
    let mut journal = agent.dir.journal();
    let started = now();
    journal
        .begin(
            format!("snapshot-{started}-{}", std::process::id()),
            started,
        )
        .map_err(|e| format!("journal: {e}"))?;
    let mut q = Quiescer::new();
    let env = hook_env("pre", id.vmid, &id.node, "pve-snapshot", None);
    let mut observer = |ev: QuiesceEvent| {
        log_event(&ev);
        if let QuiesceEvent::PreSucceeded { owed, .. } = &ev {
            let _ = journal.record(JournalStep::QuiesceStarted {
                hooks_ran_pre: owed.clone(),
                post_owed: true,
            });
        }
    };
    if let Err(e) = q.pre_all(&hooks, &env, &mut observer).await {
        let _ = journal.clear();
        return Err(format!("quiesce before the snapshot: {e}"));
    }
    let job = FreezeJob::Snapshot {
        vmstate: settings.vmstate,
    };
    let mut fz = None;
    let created = match Freezer::begin(agent, id, job, started, &mut journal).await {
        Ok(f) => {
            fz = f;
            snapshots::create(
                &agent.client,
                guest,
                settings,
                jiff::Timestamp::now(),
                &crate::pve::retry::TokioSleeper,
            )
            .await
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    if let Some(f) = fz.as_mut() {
        f.release(&mut journal, "release").await;
        remember_freeze(agent, f.record.clone());
    }
    let env = hook_env("post", id.vmid, &id.node, "pve-snapshot", None);
    let mut observer = |ev: QuiesceEvent| {
        log_event(&ev);
        if let QuiesceEvent::PostFinished { hook, .. } = &ev {
            let _ = journal.record(JournalStep::PostRan { hook: hook.clone() });
        }
    };
    q.post_all(&env, &mut observer).await;
    let _ = journal.record(JournalStep::Released);
    let _ = journal.clear();
    created
}

/// Keeps the snapshot's fsfreeze outcome in the state (`last_fsfreeze`); we hold the run lock.
fn remember_freeze(agent: &Agent, rec: crate::state::FreezeRecord) {
    let saved = agent.dir.load_state().and_then(|l| {
        let mut st = l.state;
        st.last_fsfreeze = Some(rec);
        agent.dir.save_state(&st)
    });
    if let Err(e) = saved {
        tracing::error!("could not record the snapshot's fsfreeze in the state: {e}");
    }
}
