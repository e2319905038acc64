//! One backup run, as `backup-now` (and later the daemon) performs it: lock, repair what a
//! previous process left (owed post hooks, a pending task), identity, quiesce, vzdump on the
//! guest's current node, follow the task, release, classify, record.
//!
//! Invariants: post hooks whose pre succeeded run exactly once on every path (success, failure,
//! timeout, SIGINT/SIGTERM, and after a crash on the next start via the journal); a task we
//! started is never forgotten (journal + `state.pending` until its result is recorded); the
//! token secret is never part of anything written here.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::follow::{FollowOpts, FollowStats, Followed, RealClock, Shutdown, follow};
use super::freeze::Freezer;
use super::logscan::{GuestType, LogScan, Mode};
use crate::config::{BackupMode, Config, Release};
use crate::identity::{self, Identity, LocalFacts};
use crate::pve::types::{TaskListEntry, TaskOutcome, TaskStart};
use crate::pve::{ApiError, PveClient, Upid};
use crate::quiesce::freeze::FreezeJob;
use crate::quiesce::{HookSpec, OnError, QuiesceError, QuiesceEvent, Quiescer};
use crate::state::{
    FreezeRecord, GuestKind, JournalStep, LockError, LockInfo, PendingTask, RunKind, RunLock,
    RunRecord, RunResult, State, StateDir,
};

pub struct Agent {
    pub cfg: Config,
    pub client: PveClient,
    pub dir: StateDir,
    pub local: LocalFacts,
}

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub mode: Option<BackupMode>,
    pub wait: bool,
    /// Who runs it (lock holder name): `backup-now` or `daemon`.
    pub what: &'static str,
}

/// What a run ended with (printed as one line or as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// ok | warnings | failed | busy | started
    pub result: String,
    pub vmid: Option<u32>,
    pub node: Option<String>,
    pub upid: Option<String>,
    pub exitstatus: Option<String>,
    pub mode: String,
    pub started: String,
    pub finished: Option<String>,
    pub quiesce_window_seconds: Option<f64>,
    pub warnings: u32,
    pub error: Option<String>,
    /// Repairs done first (owed hooks run, a pending task reattached).
    pub repaired: Vec<String>,
    /// Backups removed by the `[backup.retention]` prune after this successful backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<usize>,
    /// Why that prune failed (the backup still counts as successful).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_error: Option<String>,
    /// Why the state file could not be saved (the previous good one is kept); the run then
    /// exits non-zero whatever its result, so the loss is never silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// What `quiesce.fsfreeze` did in this run (absent when nothing is configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsfreeze: Option<FreezeRecord>,
}

impl Summary {
    /// A run that has not got anywhere yet (result `failed` until something better is known).
    pub fn new(vmid: Option<u32>, mode: &str, started: i64) -> Summary {
        Summary {
            result: "failed".into(),
            vmid,
            node: None,
            upid: None,
            exitstatus: None,
            mode: mode.to_string(),
            started: rfc3339(started),
            finished: None,
            quiesce_window_seconds: None,
            warnings: 0,
            error: None,
            repaired: Vec::new(),
            pruned: None,
            prune_error: None,
            state_error: None,
            fsfreeze: None,
        }
    }

    pub fn exit_code(&self) -> i32 {
        if self.state_error.is_some() && self.result != "busy" {
            return 1;
        }
        match self.result.as_str() {
            "ok" | "warnings" | "started" => 0,
            "busy" => 3,
            _ => 1,
        }
    }

    pub fn line(&self) -> String {
        let who = match (self.vmid, &self.node) {
            (Some(v), Some(n)) => format!("backup of guest {v} on {n}"),
            (Some(v), None) => format!("backup of guest {v}"),
            _ => "backup".to_string(),
        };
        let mut s = format!("{who}: {}", self.result);
        if let Some(x) = &self.exitstatus {
            s.push_str(&format!(" (exit status {x})"));
        }
        if let Some(u) = &self.upid {
            s.push_str(&format!(", task {u}"));
        }
        if let Some(w) = self.quiesce_window_seconds {
            s.push_str(&format!(", quiesce window {w:.1}s"));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(": {e}"));
        }
        if let Some(n) = self.pruned {
            s.push_str(&format!("; pruned {n} old backup(s)"));
        }
        if let Some(e) = &self.prune_error {
            s.push_str(&format!("; pruning old backups failed: {e}"));
        }
        if let Some(e) = &self.state_error {
            s.push_str(&format!("; {e}"));
        }
        s
    }
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn mode_of(m: BackupMode) -> Mode {
    match m {
        BackupMode::Snapshot => Mode::Snapshot,
        BackupMode::Stop => Mode::Stop,
        BackupMode::Suspend => Mode::Suspend,
    }
}

fn guest_of(k: crate::pve::types::GuestType) -> GuestType {
    match k {
        crate::pve::types::GuestType::Qemu => GuestType::Qemu,
        crate::pve::types::GuestType::Lxc => GuestType::Lxc,
    }
}

/// The configured hooks in the quiescer's terms.
pub fn hook_specs(cfg: &Config) -> Vec<HookSpec> {
    use crate::config::Command;
    let argv = |c: &Option<Command>| match c {
        Some(Command::Argv(v)) => v.clone(),
        Some(Command::Shell(s)) => vec![s.clone()],
        None => Vec::new(),
    };
    cfg.quiesce
        .hooks
        .iter()
        .map(|h| HookSpec {
            name: h.name.clone(),
            pre: argv(&h.pre),
            post: argv(&h.post),
            timeout: h.timeout,
            on_error: match h.on_error {
                crate::config::OnError::Abort => OnError::Abort,
                crate::config::OnError::Continue => OnError::Continue,
            },
            shell: matches!(h.pre, Some(Command::Shell(_)))
                || matches!(h.post, Some(Command::Shell(_))),
        })
        .collect()
}

pub(crate) fn hook_env(
    phase: &str,
    vmid: u32,
    node: &str,
    mode: &str,
    upid: Option<&str>,
) -> Vec<(String, String)> {
    let mut e = vec![
        ("FELHOM_PHASE".to_string(), phase.to_string()),
        ("FELHOM_VMID".to_string(), vmid.to_string()),
        ("FELHOM_NODE".to_string(), node.to_string()),
        ("FELHOM_MODE".to_string(), mode.to_string()),
    ];
    if let Some(u) = upid {
        e.push(("FELHOM_UPID".to_string(), u.to_string()));
    }
    e
}

pub(crate) fn log_event(ev: &QuiesceEvent) {
    match ev {
        QuiesceEvent::PreStarting { hook } => tracing::info!(hook, "quiesce: running pre hook"),
        QuiesceEvent::PreSucceeded { hook, outcome, .. } => {
            let ms = outcome
                .as_ref()
                .map(|o| o.duration.as_millis())
                .unwrap_or(0);
            let output = outcome.as_ref().map(|o| o.output.trim_end()).unwrap_or("");
            tracing::info!(hook, ms, output, "quiesce: pre hook succeeded");
        }
        QuiesceEvent::PreFailed { hook, outcome, .. } => {
            tracing::warn!(hook, status = %outcome.status, output = %outcome.output.trim_end(), "quiesce: pre hook failed")
        }
        QuiesceEvent::PostStarting { hook } => tracing::info!(hook, "release: running post hook"),
        QuiesceEvent::PostFinished { hook, outcome } => {
            if outcome.success() {
                tracing::info!(
                    hook,
                    ms = outcome.duration.as_millis() as u64,
                    output = %outcome.output.trim_end(),
                    "release: post hook succeeded"
                )
            } else {
                tracing::warn!(hook, status = %outcome.status, output = %outcome.output.trim_end(), "release: post hook failed")
            }
        }
    }
}

const INTERRUPTED_BEFORE_VZDUMP: &str =
    "interrupted before vzdump was requested; nothing was started";

struct Ctx<'a> {
    agent: &'a Agent,
    state: State,
    summary: Summary,
    started: i64,
}

impl Ctx<'_> {
    fn save(&mut self) {
        if let Err(e) = self.agent.dir.save_state(&self.state) {
            tracing::error!(error = %e, "could not save the state file; the previous good state is kept");
            self.summary.state_error = Some(format!(
                "could not save the state file ({e}); the previous good state is kept and this \
                 result is recorded only here: free space or fix permissions in {}",
                self.agent.dir.path().display()
            ));
        }
    }

    fn record(&mut self, rec: RunRecord) {
        self.state.push_run(rec);
        self.save();
    }
}

fn fail(summary: &mut Summary, msg: impl Into<String>) {
    summary.result = "failed".into();
    summary.error = Some(msg.into());
    summary.finished = Some(rfc3339(now()));
}

/// Runs one backup (or finishes one a previous process left behind), then, when it succeeded
/// and `[backup.retention]` is set, prunes this guest's old backups (see [`crate::jobs::prune`]).
pub async fn backup_now(agent: &Agent, req: &RunRequest, shutdown: &dyn Shutdown) -> Summary {
    let mut summary = backup_once(agent, req, shutdown).await;
    crate::jobs::prune::after_backup(agent, &mut summary).await;
    summary
}

async fn backup_once(agent: &Agent, req: &RunRequest, shutdown: &dyn Shutdown) -> Summary {
    let started = now();
    let mode_cfg = req.mode.unwrap_or(agent.cfg.backup.mode);
    let mut summary = Summary::new(agent.cfg.guest.vmid, mode_cfg.as_str(), started);
    let mut lock = match agent.dir.try_lock(&LockInfo::current(req.what)) {
        Ok(l) => l,
        Err(LockError::Busy(info)) => {
            summary.result = "busy".into();
            summary.error = Some(match info {
                Some(i) => format!("{i}"),
                None => "a backup is already running (holder unknown)".into(),
            });
            summary.upid = None;
            return summary;
        }
        Err(e) => {
            fail(&mut summary, format!("cannot take the run lock: {e}"));
            return summary;
        }
    };
    let state = match agent.dir.load_state() {
        Ok(l) => {
            if let Some(w) = l.warning {
                tracing::warn!("{w}");
            }
            l.state
        }
        Err(e) => {
            fail(&mut summary, format!("cannot read the state: {e}"));
            return summary;
        }
    };
    let mut ctx = Ctx {
        agent,
        state,
        summary,
        started,
    };
    // 1. Repair what a previous process left.
    match repair(&mut ctx, &mut lock, shutdown, true).await {
        Ok(Some(finished)) => {
            // A backup we started earlier was still in flight: its result is this run's result.
            let mut s = finished;
            s.repaired = std::mem::take(&mut ctx.summary.repaired);
            return s;
        }
        Ok(None) => {}
        Err(e) => {
            fail(&mut ctx.summary, e);
            return ctx.summary;
        }
    }
    run_fresh(&mut ctx, &mut lock, req, mode_cfg, shutdown).await;
    ctx.summary
}

async fn run_fresh(
    ctx: &mut Ctx<'_>,
    lock: &mut RunLock,
    req: &RunRequest,
    mode_cfg: BackupMode,
    shutdown: &dyn Shutdown,
) {
    let agent = ctx.agent;
    // 2. Identity.
    // A stop request while looking the guest up (retries can take a while) starts nothing.
    let found = tokio::select! {
        r = identity::discover(&agent.client, agent.cfg.guest.vmid, &agent.local) => Some(r),
        _ = shutdown.wait() => None,
    };
    let id = match found {
        Some(Ok(id)) => id,
        Some(Err(e)) => {
            let msg = format!("identity: {e}");
            record_failure(ctx, None, &msg, None, None);
            return;
        }
        None => {
            record_failure(ctx, None, INTERRUPTED_BEFORE_VZDUMP, None, None);
            return;
        }
    };
    ctx.summary.vmid = Some(id.vmid);
    ctx.summary.node = Some(id.node.clone());
    ctx.state.identity = Some(crate::state::Identity {
        vmid: id.vmid,
        node: id.node.clone(),
        kind: match id.kind {
            crate::pve::types::GuestType::Qemu => GuestKind::Qemu,
            crate::pve::types::GuestType::Lxc => GuestKind::Lxc,
        },
        name: id.name.clone(),
    });
    let mode = mode_of(mode_cfg);
    let mode_s = mode.as_str();
    // 3. Quiesce.
    let hooks = hook_specs(&agent.cfg);
    let skip_hooks = mode == Mode::Stop && !agent.cfg.quiesce.in_stop_mode;
    if skip_hooks && !hooks.is_empty() {
        tracing::info!(
            "quiesce skipped: stop mode shuts the guest down (set quiesce.in-stop-mode = true to run hooks anyway)"
        );
    }
    let hooks: Vec<HookSpec> = if skip_hooks { Vec::new() } else { hooks };
    let mut journal = agent.dir.journal();
    let run_id = format!("{}-{}", ctx.started, std::process::id());
    if let Err(e) = journal.begin(run_id, ctx.started) {
        record_failure(ctx, Some(&id), &format!("journal: {e}"), None, None);
        return;
    }
    let mut q = Quiescer::new();
    let quiesce_started = Instant::now();
    if !hooks.is_empty() {
        let env = hook_env("pre", id.vmid, &id.node, mode_s, None);
        let mut jerr = None;
        let mut observer = |ev: QuiesceEvent| {
            log_event(&ev);
            if let QuiesceEvent::PreSucceeded { owed, .. } = &ev
                && let Err(e) = journal.record(JournalStep::QuiesceStarted {
                    hooks_ran_pre: owed.clone(),
                    post_owed: true,
                })
            {
                jerr = Some(e.to_string());
            }
        };
        let stop = || shutdown.requested();
        let r = q.pre_all_until(&hooks, &env, &mut observer, &stop).await;
        if let Some(e) = jerr {
            tracing::error!("journal write failed during quiesce: {e}");
        }
        if let Err(e) = r {
            let msg = match &e {
                QuiesceError::PreFailed { unwound, .. } => {
                    format!(
                        "quiesce: {e}; the post hooks of {} hook(s) that had run were run again in reverse order",
                        unwound.len()
                    )
                }
                _ => format!("quiesce: {e}"),
            };
            let _ = journal.clear();
            record_failure(ctx, Some(&id), &msg, None, None);
            return;
        }
    }
    // 3b. fsfreeze (after the pre hooks flushed the applications).
    let job = FreezeJob::Backup {
        snapshot: mode == Mode::Snapshot,
        stop: mode == Mode::Stop,
    };
    let mut fz = match Freezer::begin(agent, &id, job, ctx.started, &mut journal).await {
        Ok(f) => f,
        Err(msg) => {
            let mut window = None;
            release(
                &mut q,
                &mut None,
                &mut journal,
                &id,
                mode_s,
                None,
                quiesce_started,
                &mut window,
            )
            .await;
            let _ = journal.clear();
            record_failure(ctx, Some(&id), &msg, None, window);
            return;
        }
    };
    let freezing = fz.as_ref().is_some_and(|f| f.record.skipped.is_none());
    // 4. vzdump on the guest's current node (re-resolved right before the call).
    let release_at_cp =
        (!hooks.is_empty() || freezing) && agent.cfg.quiesce.release == Release::ConsistencyPoint;
    let mut window: Option<f64> = None;
    let started = if shutdown.requested() {
        // Stopped during quiesce: start nothing new.
        Err(INTERRUPTED_BEFORE_VZDUMP.to_string())
    } else {
        start_vzdump(agent, &id, mode_s, &mut journal).await
    };
    let (upid, node) = match started {
        Ok(x) => x,
        Err(msg) => {
            release(
                &mut q,
                &mut fz,
                &mut journal,
                &id,
                mode_s,
                None,
                quiesce_started,
                &mut window,
            )
            .await;
            let _ = journal.clear();
            note_freeze(ctx, &fz);
            record_failure(ctx, Some(&id), &msg, None, window);
            return;
        }
    };
    let upid_s = upid.to_string();
    ctx.summary.upid = Some(upid_s.clone());
    ctx.summary.node = Some(node.clone());
    let _ = lock.set_upid(&upid_s);
    ctx.state.pending = Some(PendingTask {
        upid: upid_s.clone(),
        node: node.clone(),
        kind: RunKind::Backup,
        started: ctx.started,
        reason: "running".into(),
    });
    ctx.save();
    tracing::info!(upid = %upid_s, "vzdump task started");
    // 5. Follow.
    let expected = ctx
        .state
        .runs
        .iter()
        .rev()
        .find(|r| r.mode == mode_s && matches!(r.result, RunResult::Ok | RunResult::Warnings))
        .map(|r| Duration::from_secs((r.finished - r.started).max(1) as u64));
    let opts = FollowOpts {
        guest: guest_of(id.kind),
        mode,
        release_at_cp,
        task_timeout: agent.cfg.backup.task_timeout,
        expected,
        detach_after_release: !req.wait,
    };
    let mut scan = LogScan::new(opts.guest, opts.mode);
    let mut stats = FollowStats::default();
    let followed = {
        let q = &mut q;
        let fz = &mut fz;
        let journal = &mut journal;
        let window = &mut window;
        let id = &id;
        let upid_s = upid_s.clone();
        follow(
            &agent.client,
            &RealClock::new(),
            &upid,
            &opts,
            &mut scan,
            shutdown,
            async || {
                release(
                    q,
                    fz,
                    journal,
                    id,
                    mode_s,
                    Some(&upid_s),
                    quiesce_started,
                    window,
                )
                .await;
            },
            &mut stats,
        )
        .await
    };
    tracing::debug!(
        requests = stats.requests,
        polls = stats.polls,
        "followed the task"
    );
    // 6. Whatever happened: release what is still owed.
    release(
        &mut q,
        &mut fz,
        &mut journal,
        &id,
        mode_s,
        Some(&upid_s),
        quiesce_started,
        &mut window,
    )
    .await;
    ctx.summary.quiesce_window_seconds = window;
    note_freeze(ctx, &fz);
    match followed {
        Followed::Stopped { status } => {
            let exit = status
                .exitstatus
                .clone()
                .unwrap_or_else(|| "unexpected status".into());
            finish_with(ctx, &id, &upid_s, &node, &exit, &scan, window);
            if let Some(w) = fz
                .as_ref()
                .and_then(|f| f.cut_short_warning(agent.cfg.quiesce.max_freeze))
            {
                warn_cut_short(ctx, w);
            }
            let _ = journal.clear();
        }
        Followed::Detached => {
            ctx.summary.result = "started".into();
            ctx.summary.finished = None;
        }
        Followed::TimedOut => {
            let msg = format!(
                "timed out waiting for {upid_s} after {}; the task keeps running on {node} and its result will be recorded by the next start",
                humantime(agent.cfg.backup.task_timeout)
            );
            if let Some(p) = ctx.state.pending.as_mut() {
                p.reason = "timed out".into();
            }
            record_failure(ctx, Some(&id), &msg, Some(&upid_s), window);
        }
        Followed::Interrupted => {
            if let Some(p) = ctx.state.pending.as_mut() {
                p.reason = "agent stopped".into();
            }
            ctx.save();
            ctx.summary.result = "failed".into();
            ctx.summary.error = Some(format!(
                "interrupted; {upid_s} keeps running on {node}, the next start records its result"
            ));
            ctx.summary.finished = Some(rfc3339(now()));
        }
        Followed::Lost(e) => {
            let msg = format!("lost track of {upid_s}: {e}");
            if let Some(p) = ctx.state.pending.as_mut() {
                p.reason = "lost".into();
            }
            record_failure(ctx, Some(&id), &msg, Some(&upid_s), window);
        }
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Keeps what fsfreeze did in the summary and the state (saved with the run record).
fn note_freeze(ctx: &mut Ctx<'_>, fz: &Option<Freezer>) {
    if let Some(f) = fz {
        ctx.summary.fsfreeze = Some(f.record.clone());
        ctx.state.last_fsfreeze = Some(f.record.clone());
    }
}

/// A freeze cut short by the watchdog turns an `ok` run into `warnings` (the backup went on).
fn warn_cut_short(ctx: &mut Ctx<'_>, warning: String) {
    tracing::warn!("{warning}");
    if let Some(r) = ctx.state.runs.back_mut() {
        if r.result == RunResult::Ok {
            r.result = RunResult::Warnings;
        }
        r.warnings += 1;
        r.log_tail.push(warning.clone());
    }
    if ctx.summary.result == "ok" {
        ctx.summary.result = "warnings".into();
    }
    ctx.summary.warnings += 1;
    ctx.summary.error.get_or_insert(warning);
    ctx.save();
}

/// Thaws what fsfreeze froze, then runs the owed post hooks (no-op when none are owed or they
/// already ran) and journals it.
#[allow(clippy::too_many_arguments)]
async fn release(
    q: &mut Quiescer,
    fz: &mut Option<Freezer>,
    journal: &mut crate::state::Journal,
    id: &Identity,
    mode: &str,
    upid: Option<&str>,
    started: Instant,
    window: &mut Option<f64>,
) {
    if let Some(f) = fz.as_mut() {
        f.release(journal, "release").await;
    }
    if q.owed().is_empty() {
        return;
    }
    let env = hook_env("post", id.vmid, &id.node, mode, upid);
    let mut observer = |ev: QuiesceEvent| {
        log_event(&ev);
        if let QuiesceEvent::PostFinished { hook, .. } = &ev {
            let _ = journal.record(JournalStep::PostRan { hook: hook.clone() });
        }
    };
    let report = q.post_all(&env, &mut observer).await;
    let _ = journal.record(JournalStep::Released);
    *window = Some(
        report
            .window
            .unwrap_or_else(|| started.elapsed())
            .as_secs_f64(),
    );
}

/// POST vzdump with only what a narrow token may send (§3); follows a migration once.
async fn start_vzdump(
    agent: &Agent,
    id: &Identity,
    mode: &str,
    journal: &mut crate::state::Journal,
) -> Result<(Upid, String), String> {
    let b = &agent.cfg.backup;
    let mut form: Vec<(&str, String)> = vec![
        ("vmid", id.vmid.to_string()),
        ("storage", b.storage.clone()),
        ("mode", mode.to_string()),
        ("compress", b.compress.as_str().to_string()),
    ];
    if let Some(t) = &b.notes_template {
        form.push(("notes-template", t.clone()));
    }
    if b.protected {
        form.push(("protected", "1".into()));
    }
    if let Some(m) = b.lockwait_minutes {
        form.push(("lockwait", m.to_string()));
    }
    let mut node = identity::current_node(&agent.client, id.vmid)
        .await
        .map_err(|e| format!("resolving the node of guest {}: {e}", id.vmid))?;
    for attempt in 0..2 {
        let _ = journal.record(JournalStep::VzdumpRequested {
            at: now(),
            node: node.clone(),
        });
        let r: Result<TaskStart, ApiError> = agent
            .client
            .post_form(["nodes", node.as_str(), "vzdump"], &form)
            .await;
        match r {
            Ok(TaskStart::Started(upid)) => {
                let _ = journal.record(JournalStep::UpidReceived {
                    upid: upid.to_string(),
                    node: upid.node.clone(),
                });
                let n = upid.node.clone();
                return Ok((upid, n));
            }
            Ok(TaskStart::NoTask(answer)) => {
                let now_node = identity::current_node(&agent.client, id.vmid)
                    .await
                    .map_err(|e| format!("resolving the node of guest {}: {e}", id.vmid))?;
                if attempt == 0 && now_node != node {
                    tracing::warn!(from = %node, to = %now_node, "guest migrated; asking the new node");
                    node = now_node;
                    continue;
                }
                return Err(format!(
                    "POST /nodes/{node}/vzdump for guest {} answered {answer:?} and started no task: PVE does that when the guest is not on that node (is it migrating?); nothing was backed up",
                    id.vmid
                ));
            }
            Err(e) => return Err(format!("vzdump of guest {} on {node}: {e}", id.vmid)),
        }
    }
    Err(format!(
        "guest {} kept moving between nodes; nothing was backed up",
        id.vmid
    ))
}

fn finish_with(
    ctx: &mut Ctx<'_>,
    id: &Identity,
    upid: &str,
    node: &str,
    exit: &str,
    scan: &LogScan,
    window: Option<f64>,
) {
    let outcome = TaskOutcome::from_exitstatus(exit);
    let (result, error) = match &outcome {
        TaskOutcome::Ok => (RunResult::Ok, None),
        TaskOutcome::Warnings(_) => (RunResult::Warnings, None),
        TaskOutcome::Failed(_) => {
            let tail = scan.error_tail(5);
            (
                RunResult::Failed,
                Some(format!(
                    "vzdump of guest {} ended with '{exit}': {}",
                    id.vmid,
                    tail.join(" | ")
                )),
            )
        }
    };
    let warnings = match outcome {
        TaskOutcome::Warnings(n) => n,
        _ => scan.warnings(),
    };
    let finished = now();
    ctx.state.pending = None;
    let rec = RunRecord {
        kind: RunKind::Backup,
        started: ctx.started,
        finished,
        mode: ctx.summary.mode.clone(),
        upid: Some(upid.to_string()),
        node: Some(node.to_string()),
        result,
        exitstatus: Some(exit.to_string()),
        warnings,
        quiesce_window_seconds: window,
        error: error.clone(),
        log_tail: scan.error_tail(10),
    };
    ctx.record(rec);
    ctx.summary.result = match result {
        RunResult::Ok => "ok",
        RunResult::Warnings => "warnings",
        _ => "failed",
    }
    .into();
    ctx.summary.exitstatus = Some(exit.to_string());
    ctx.summary.warnings = warnings;
    ctx.summary.error = error;
    ctx.summary.finished = Some(rfc3339(finished));
    ctx.summary.quiesce_window_seconds = window;
}

fn record_failure(
    ctx: &mut Ctx<'_>,
    id: Option<&Identity>,
    msg: &str,
    upid: Option<&str>,
    window: Option<f64>,
) {
    let finished = now();
    let rec = RunRecord {
        kind: RunKind::Backup,
        started: ctx.started,
        finished,
        mode: ctx.summary.mode.clone(),
        upid: upid.map(str::to_string),
        node: id.map(|i| i.node.clone()),
        result: RunResult::Failed,
        exitstatus: None,
        warnings: 0,
        quiesce_window_seconds: window,
        error: Some(msg.to_string()),
        log_tail: Vec::new(),
    };
    ctx.record(rec);
    fail(&mut ctx.summary, msg);
    ctx.summary.quiesce_window_seconds = window;
}

/// Repairs a previous process's leftovers. `wait`: follow a pending task to its end (backup-now,
/// daemon) or only look once (status). Returns the summary of a finished earlier backup.
async fn repair(
    ctx: &mut Ctx<'_>,
    lock: &mut RunLock,
    shutdown: &dyn Shutdown,
    wait: bool,
) -> Result<Option<Summary>, String> {
    let agent = ctx.agent;
    let mut journal = agent.dir.journal();
    let js = journal
        .resume()
        .map_err(|e| format!("cannot read the crash journal: {e}"))?;
    // First of all: a filesystem a dead process left frozen.
    if let Some(note) = super::freeze::repair_thaw(&mut journal) {
        ctx.summary.repaired.push(note);
    }
    let mut pending: Option<(String, String, i64)> = ctx
        .state
        .pending
        .as_ref()
        .map(|p| (p.upid.clone(), p.node.clone(), p.started));
    if let Some(js) = &js {
        if !js.posts_owed.is_empty() {
            let specs: Vec<HookSpec> = hook_specs(&agent.cfg)
                .into_iter()
                .filter(|h| js.posts_owed.contains(&h.name))
                .collect();
            let missing: Vec<&String> = js
                .posts_owed
                .iter()
                .filter(|n| !specs.iter().any(|s| &s.name == *n))
                .collect();
            let mut q = Quiescer::resume(specs);
            let vmid = ctx.state.identity.as_ref().map(|i| i.vmid).unwrap_or(0);
            let node = ctx
                .state
                .identity
                .as_ref()
                .map(|i| i.node.clone())
                .unwrap_or_default();
            let env = hook_env(
                "post",
                vmid,
                &node,
                &ctx.summary.mode,
                js.pending_upid.as_ref().map(|(u, _)| u.as_str()),
            );
            let mut observer = |ev: QuiesceEvent| {
                log_event(&ev);
                if let QuiesceEvent::PostFinished { hook, .. } = &ev {
                    let _ = journal.record(JournalStep::PostRan { hook: hook.clone() });
                }
            };
            let report = q.post_all(&env, &mut observer).await;
            let _ = journal.record(JournalStep::Released);
            let ran: Vec<&str> = report.outcomes.iter().map(|(n, _)| n.as_str()).collect();
            let note = format!(
                "ran post hooks owed by an interrupted run: {}",
                ran.join(", ")
            );
            tracing::warn!("{note}");
            ctx.summary.repaired.push(note);
            if !missing.is_empty() {
                let note =
                    format!("post hooks owed but no longer configured (not run): {missing:?}");
                tracing::error!("{note}");
                ctx.summary.repaired.push(note);
            }
        }
        if let Some((u, n)) = &js.pending_upid {
            pending = Some((u.clone(), n.clone(), js.started));
        } else if let Some(req) = &js.requested_without_upid {
            // The process died between POST and the UPID: find the task in the list.
            let known = ctx
                .state
                .identity
                .as_ref()
                .map(|i| i.vmid)
                .or(agent.cfg.guest.vmid);
            let vmid = match known {
                Some(v) => Some(v),
                None => identity::discover(&agent.client, None, &agent.local)
                    .await
                    .ok()
                    .map(|i| i.vmid),
            };
            match find_task(&agent.client, &req.node, vmid, req.at).await {
                Some(u) => {
                    ctx.summary
                        .repaired
                        .push(format!("found the vzdump task started before a crash: {u}"));
                    pending = Some((u, req.node.clone(), js.started));
                }
                None => {
                    let msg = format!(
                        "a vzdump was requested on {} at {} by a process that died before it got the task id, and no such task was found",
                        req.node,
                        rfc3339(req.at)
                    );
                    ctx.summary.repaired.push(msg.clone());
                    // Record the lost run under its own start time; this run keeps its own.
                    let now_started = std::mem::replace(&mut ctx.started, js.started);
                    record_failure(ctx, None, &msg, None, None);
                    ctx.started = now_started;
                    ctx.summary.started = rfc3339(now_started);
                }
            }
        }
    }
    let Some((upid_s, node, started)) = pending else {
        let _ = journal.clear();
        return Ok(None);
    };
    let upid: Upid = upid_s
        .parse()
        .map_err(|e| format!("pending task id {upid_s:?} is not a UPID: {e}"))?;
    let _ = lock.set_upid(&upid_s);
    ctx.started = started;
    ctx.summary.started = rfc3339(started);
    ctx.summary.upid = Some(upid_s.clone());
    ctx.summary.node = Some(node.clone());
    ctx.summary.vmid = upid.vmid().or(ctx.summary.vmid);
    if let Some(r) = ctx
        .state
        .runs
        .iter()
        .rev()
        .find(|r| r.upid.as_deref() == Some(&upid_s))
    {
        ctx.summary.mode = r.mode.clone();
    }
    let note = format!("reattached to {upid_s} (started {})", rfc3339(started));
    tracing::info!("{note}");
    ctx.summary.repaired.push(note);
    let kind = ctx.state.identity.as_ref().map(|i| i.kind);
    let guest = match kind {
        Some(GuestKind::Lxc) => GuestType::Lxc,
        _ => GuestType::Qemu,
    };
    let mode = match ctx.summary.mode.as_str() {
        "stop" => Mode::Stop,
        "suspend" => Mode::Suspend,
        _ => Mode::Snapshot,
    };
    let mut scan = LogScan::new(guest, mode);
    let opts = FollowOpts {
        guest,
        mode,
        release_at_cp: false,
        task_timeout: if wait {
            agent.cfg.backup.task_timeout
        } else {
            Duration::ZERO
        },
        expected: None,
        detach_after_release: false,
    };
    let mut stats = FollowStats::default();
    let followed = follow(
        &agent.client,
        &RealClock::new(),
        &upid,
        &opts,
        &mut scan,
        shutdown,
        async || {},
        &mut stats,
    )
    .await;
    let id = Identity {
        vmid: ctx.summary.vmid.unwrap_or(0),
        node: node.clone(),
        kind: match guest {
            GuestType::Lxc => crate::pve::types::GuestType::Lxc,
            GuestType::Qemu => crate::pve::types::GuestType::Qemu,
        },
        name: None,
        proof: "recorded earlier".into(),
    };
    match followed {
        Followed::Stopped { status } => {
            let exit = status
                .exitstatus
                .clone()
                .unwrap_or_else(|| "unexpected status".into());
            if let Some(m) = scan.logged_mode() {
                ctx.summary.mode = m.to_string();
            }
            let window = ctx
                .state
                .runs
                .iter()
                .rev()
                .find(|r| r.upid.as_deref() == Some(&upid_s))
                .and_then(|r| r.quiesce_window_seconds);
            // An earlier "timed out"/"interrupted" record for this UPID is superseded by the real end.
            finish_with(ctx, &id, &upid_s, &node, &exit, &scan, window);
            let _ = journal.clear();
            Ok(Some(ctx.summary.clone()))
        }
        Followed::Lost(e) => Err(format!("cannot follow the pending task {upid_s}: {e}")),
        _ if !wait => Ok(None),
        Followed::TimedOut => Err(format!(
            "the pending task {upid_s} is still running after the task timeout"
        )),
        Followed::Interrupted | Followed::Detached => Err(format!(
            "interrupted while waiting for the pending task {upid_s}"
        )),
    }
}

/// `GET /nodes/{node}/tasks?typefilter=vzdump&vmid=N&source=all`: our task started at or after `at`.
async fn find_task(client: &PveClient, node: &str, vmid: Option<u32>, at: i64) -> Option<String> {
    let mut q: Vec<(&str, String)> = vec![
        ("typefilter", "vzdump".into()),
        ("source", "all".into()),
        ("since", (at - 60).to_string()),
    ];
    if let Some(v) = vmid {
        q.push(("vmid", v.to_string()));
    }
    let list: Vec<TaskListEntry> = client.get(["nodes", node, "tasks"], &q).await.ok()?;
    let me = client.token_id().to_string();
    list.into_iter()
        .filter(|t| t.starttime >= at - 5)
        .filter(|t| {
            t.user == me || format!("{}!{}", t.user, t.tokenid.clone().unwrap_or_default()) == me
        })
        .min_by_key(|t| t.starttime)
        .map(|t| t.upid)
}

/// `status`: reconcile a pending task without waiting (records it if it has ended).
pub async fn reconcile(agent: &Agent, shutdown: &dyn Shutdown) -> Result<Vec<String>, String> {
    let mut lock = match agent.dir.try_lock(&LockInfo::current("status")) {
        Ok(l) => l,
        Err(LockError::Busy(_)) => return Ok(vec!["a run is in progress; not reconciling".into()]),
        Err(e) => return Err(e.to_string()),
    };
    let state = agent.dir.load_state().map_err(|e| e.to_string())?.state;
    let started = now();
    let summary = Summary::new(
        agent.cfg.guest.vmid,
        agent.cfg.backup.mode.as_str(),
        started,
    );
    let mut ctx = Ctx {
        agent,
        state,
        summary,
        started,
    };
    repair(&mut ctx, &mut lock, shutdown, false).await?;
    Ok(ctx.summary.repaired)
}
