//! The scheduler loop: plan from the persisted last fire time and the wall clock, sleep until the
//! next deadline (capped, so suspend/resume and clock steps are noticed), run the backup through
//! `backup_now` under the run lock, record what happened, keep the health view current.
//!
//! Invariants:
//! * the wall clock is re-read and the plan recomputed after every wake-up;
//! * every write of `state.json` happens under the run lock; what cannot be written now (the
//!   lock is held by a manual run) is kept in [`OwedWrite`] and written once the lock frees;
//! * the last scheduled fire time is persisted *before* its run starts, so a crash mid-run does
//!   not repeat the run on the next start (the pending task is reattached instead);
//! * the heartbeat — and with it every `WATCHDOG=1` — comes only from this loop: each loop
//!   iteration and each tick while a run is awaited; nothing pings on its own;
//! * after SIGTERM/SIGINT no run starts; a run in progress is left to reach its safe point
//!   (`backup_now` observes the same shutdown request) while `EXTEND_TIMEOUT_USEC` is re-sent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::jobs::{JobSchedules, OnStop};
use super::records::{self, SKIP_BUSY, SKIP_SELFCHECK};
use super::sdnotify::Notifier;
use super::signals::Hangup;
use super::watch::{Changes, DirWatch};
use crate::backup::follow::Shutdown;
use crate::backup::run::{Agent, RunRequest, backup_now};
use crate::cli::Signals;
use crate::health::{CurrentJob, Health, Phase, describe_journal};
use crate::schedule::{CronSchedule, Plan, plan, sleep_for, splay_offset};
use crate::state::{LockError, LockInfo, RunKind, RunRecord};

/// Longest idle sleep before the wall clock is re-read.
pub const SLEEP_CAP: Duration = Duration::from_secs(300);
/// Heartbeat period while a run is awaited.
pub const RUN_TICK: Duration = Duration::from_secs(10);
/// Retry period for state writes deferred by a busy lock (a lock release normally wakes the
/// loop at once through the directory watch; this covers a missing watch).
pub const RETRY: Duration = Duration::from_secs(2);
/// How much more stop time is asked for at a time while a run reaches its safe point.
pub const STOP_EXTEND: Duration = Duration::from_secs(30);

/// State changes that wait for the run lock.
#[derive(Debug, Default)]
pub struct OwedWrite {
    pub records: Vec<RunRecord>,
    pub last_scheduled: Option<i64>,
    pub last_selfcheck: Option<i64>,
    pub last_snapshot_scheduled: Option<i64>,
}

impl OwedWrite {
    /// Nothing that needs a write of its own. `last_selfcheck` alone never takes the run lock
    /// (a manual `backup-now` at that moment would find it busy): it rides along with the next
    /// write, and losing it costs nothing since every start runs a self-check anyway.
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.last_scheduled.is_none()
            && self.last_snapshot_scheduled.is_none()
    }
}

pub(crate) enum Wake {
    Timer,
    Term,
    Hup,
    Changed(std::io::Result<Changes>),
}

pub struct Daemon {
    pub agent: Arc<Agent>,
    pub config_path: PathBuf,
    pub schedule: Option<CronSchedule>,
    pub signals: Arc<Signals>,
    pub hup: Hangup,
    pub watch: Option<DirWatch>,
    pub notify: Notifier,
    pub watchdog: Option<Duration>,
    pub health: Health,
    pub last_scheduled: Option<i64>,
    /// Newest run record already counted into the metrics.
    pub seen: Option<RunRecord>,
    pub owed: OwedWrite,
    pub reload_requested: bool,
    /// The self-check and snapshot schedules (see [`super::jobs`]).
    pub jobs: JobSchedules,
    pub last_selfcheck: Option<i64>,
    pub last_snapshot_scheduled: Option<i64>,
    /// The start-up self-check is still owed.
    pub selfcheck_at_start: bool,
    /// Failing rows of the last conclusive self-check; `None` when it passed or none ran.
    pub selfcheck_violations: Option<usize>,
    last_status: String,
}

fn now_epoch() -> i64 {
    Timestamp::now().as_second()
}

/// Waits for the next watch event, or forever without a watch.
pub(crate) async fn changed(watch: &Option<DirWatch>) -> std::io::Result<Changes> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent: Arc<Agent>,
        config_path: PathBuf,
        schedule: Option<CronSchedule>,
        signals: Arc<Signals>,
        hup: Hangup,
        notify: Notifier,
        watchdog: Option<Duration>,
        health: Health,
    ) -> Daemon {
        Daemon {
            agent,
            config_path,
            schedule,
            signals,
            hup,
            watch: None,
            notify,
            watchdog,
            health,
            last_scheduled: None,
            seen: None,
            owed: OwedWrite::default(),
            reload_requested: false,
            jobs: JobSchedules::default(),
            last_selfcheck: None,
            last_snapshot_scheduled: None,
            selfcheck_at_start: false,
            selfcheck_violations: None,
            last_status: String::new(),
        }
    }

    pub fn time_zone(&self) -> TimeZone {
        match &self.schedule {
            Some(s) => s.time_zone().clone(),
            None => self
                .agent
                .cfg
                .backup
                .timezone
                .clone()
                .unwrap_or_else(TimeZone::system),
        }
    }

    /// Marks the loop alive; pings the watchdog when systemd asked for it.
    pub fn beat(&self) {
        self.health.update(|v| v.tick(Instant::now(), now_epoch()));
        if self.watchdog.is_some() {
            self.notify.watchdog();
        }
    }

    fn idle_cap(&self) -> Duration {
        match self.watchdog {
            Some(w) => SLEEP_CAP.min(w / 2),
            None => SLEEP_CAP,
        }
    }

    pub(crate) fn run_tick(&self) -> Duration {
        match self.watchdog {
            Some(w) => RUN_TICK.min(w / 2),
            None => RUN_TICK,
        }
    }

    /// Sends `STATUS=` when it changed.
    pub fn status(&mut self, text: String) {
        if text != self.last_status {
            self.notify.status(&text);
            self.last_status = text;
        }
    }

    /// Re-reads `state.json` into the view; records appended since the last look are counted.
    pub fn reload_state(&mut self) {
        let loaded = match self.agent.dir.load_state() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot re-read the state: {e}");
                return;
            }
        };
        if let Some(w) = &loaded.warning {
            tracing::warn!("{w}");
        }
        let st = loaded.state;
        let new = records::new_records(self.seen.as_ref(), &st.runs);
        let requests = self.agent.client.request_counts();
        let holder = self.agent.dir.lock_holder();
        self.health.update(|v| {
            v.active_run = holder;
            for r in &new {
                v.record_run(r);
            }
            v.apply_state(&st);
            // This process's API requests (HTTP attempts, retries included), by result.
            v.counters.pve_requests.ok = requests.ok;
            v.counters.pve_requests.error = requests.error;
            if let (Some(job), Some(p)) = (v.current_job.as_mut(), st.pending.as_ref())
                && p.started >= job.started
            {
                job.upid = Some(p.upid.clone());
                v.phase = Phase::WaitingForTask;
            }
        });
        if let Some(last) = st.runs.back() {
            self.seen = Some(last.clone());
        }
    }

    /// What an earlier run left owed, from the journal (start-up and after our own runs).
    pub fn refresh_owed(&self) {
        let owed = match self.agent.dir.journal().load() {
            Ok(Some(j)) => describe_journal(&j),
            Ok(None) => Vec::new(),
            Err(e) => vec![e.to_string()],
        };
        self.health.update(|v| v.owed = owed);
    }

    /// Writes [`OwedWrite`] under the run lock. Returns `false` only while the lock is busy
    /// (worth retrying soon); other failures are logged and retried at the normal pace.
    pub fn flush(&mut self) -> bool {
        if self.owed.is_empty() {
            return true;
        }
        let lock = match self.agent.dir.try_lock(&LockInfo::current("daemon")) {
            Ok(l) => l,
            Err(LockError::Busy(_)) => return false,
            Err(e) => {
                tracing::warn!("cannot record the scheduler's state yet: {e}");
                return true;
            }
        };
        let mut st = match self.agent.dir.load_state() {
            Ok(l) => l.state,
            Err(e) => {
                tracing::warn!("cannot record the scheduler's state yet: {e}");
                return true;
            }
        };
        for r in &self.owed.records {
            st.push_run(r.clone());
        }
        if let Some(t) = self.owed.last_scheduled {
            st.last_scheduled = Some(t);
        }
        if let Some(t) = self.owed.last_selfcheck {
            st.last_selfcheck = Some(t);
        }
        if let Some(t) = self.owed.last_snapshot_scheduled {
            st.last_snapshot_scheduled = Some(t);
        }
        let saved = self.agent.dir.save_state(&st);
        drop(lock);
        match saved {
            Ok(()) => {
                self.owed = OwedWrite::default();
                self.reload_state();
                true
            }
            Err(e) => {
                tracing::warn!("cannot record the scheduler's state yet: {e}");
                true
            }
        }
    }

    fn decide(&self, now: Timestamp) -> Option<Plan> {
        let schedule = self.schedule.as_ref()?;
        let cfg = &self.agent.cfg;
        let vmid = cfg
            .guest
            .vmid
            .or_else(|| self.health.read(|v| v.identity.as_ref().map(|i| i.vmid)));
        let splay = vmid.map_or(Duration::ZERO, |v| splay_offset(v, cfg.backup.splay));
        let last = self
            .last_scheduled
            .and_then(|s| Timestamp::from_second(s).ok());
        Some(plan(schedule, last, now, cfg.backup.catch_up, splay))
    }

    /// Puts the next backup fire time into the view when nothing is due now.
    fn show_next_run(&self, now: Timestamp) {
        if let Some(Plan::WaitUntil { until, .. }) = self.decide(now) {
            self.health.update(|v| v.next_run = Some(until.as_second()));
        }
    }

    fn set_last_scheduled(&mut self, scheduled: Timestamp) {
        self.last_scheduled = Some(scheduled.as_second());
        self.owed.last_scheduled = self.last_scheduled;
    }

    /// The loop; returns when a shutdown was requested and no run is in progress.
    pub async fn run_loop(&mut self) {
        loop {
            self.beat();
            if self.signals.requested() {
                return;
            }
            if std::mem::take(&mut self.reload_requested) {
                self.reload_config();
            }
            let lock_free = self.flush();
            let now = Timestamp::now();
            // The next backup shows in the view while a side job runs first.
            self.show_next_run(now);
            if self.run_due_jobs(now).await {
                continue;
            }
            let next = match self.decide(now) {
                Some(Plan::RunNow { scheduled, skipped }) => {
                    if skipped > 0 {
                        tracing::info!(
                            "{skipped} earlier fire time(s) passed while the agent was not running; one run makes up for them"
                        );
                    }
                    self.set_last_scheduled(scheduled);
                    self.flush();
                    match self.refusing() {
                        Some(n) => self.refuse_backup(n),
                        None => self.run_scheduled(scheduled).await,
                    }
                    continue;
                }
                Some(Plan::Missed {
                    scheduled,
                    missed_count,
                    ..
                }) => {
                    let rec = records::missed_record(
                        scheduled.as_second(),
                        now.as_second(),
                        self.agent.cfg.backup.mode.as_str(),
                        missed_count,
                        self.agent.cfg.backup.catch_up,
                    );
                    tracing::warn!("{}", rec.error.as_deref().unwrap_or_default());
                    self.owed.records.push(rec);
                    self.set_last_scheduled(scheduled);
                    self.flush();
                    continue;
                }
                Some(Plan::WaitUntil { until, .. }) => Some(until),
                Some(Plan::NoFutureRun) | None => None,
            };
            self.health.update(|v| {
                v.next_run = next.map(|t| t.as_second());
                v.set_phase(Phase::Idle);
            });
            let text = records::idle_status(next, &self.time_zone(), self.schedule.is_some());
            self.status(text);
            let cap = if lock_free { self.idle_cap() } else { RETRY };
            let wake_at = next.into_iter().chain(self.next_job_wakeup(now)).min();
            let sleep = wake_at.map_or(cap, |t| sleep_for(now, t, cap));
            let wake = tokio::select! {
                _ = tokio::time::sleep(sleep) => Wake::Timer,
                _ = self.signals.wait() => Wake::Term,
                _ = self.hup.recv() => Wake::Hup,
                c = changed(&self.watch) => Wake::Changed(c),
            };
            match wake {
                Wake::Timer => {}
                Wake::Term => return,
                Wake::Hup => self.reload_requested = true,
                Wake::Changed(c) => self.on_changed(c),
            }
        }
    }

    pub(crate) fn on_changed(&mut self, c: std::io::Result<Changes>) {
        match c {
            Ok(c) if c.state => self.reload_state(),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    "watching the state directory failed ({e}); changes by other processes show up within {}s",
                    SLEEP_CAP.as_secs()
                );
                self.watch = None;
            }
        }
    }

    /// One scheduled run through `backup_now`, with the heartbeat kept and signals handled.
    async fn run_scheduled(&mut self, scheduled: Timestamp) {
        let agent = self.agent.clone();
        let signals = self.signals.clone();
        let started = now_epoch();
        let first_phase = if agent.cfg.quiesce.hooks.is_empty() {
            Phase::StartingTask
        } else {
            Phase::Quiescing
        };
        self.health.update(|v| {
            v.set_phase(first_phase);
            v.current_job = Some(CurrentJob {
                kind: RunKind::Backup,
                started,
                upid: None,
            });
            v.next_run = None;
        });
        let text = records::running_status(scheduled, &self.time_zone());
        self.status(text);
        tracing::info!("scheduled backup starting (fire time {scheduled})");
        let req = RunRequest {
            mode: None,
            wait: true,
            what: "daemon",
        };
        let run = backup_now(&agent, &req, signals.as_ref());
        let stop = OnStop::Finish {
            log: "stop requested during a backup run: letting it reach a safe point",
            status: "stopping: waiting for the backup run to reach a safe point",
        };
        let summary = self
            .with_heartbeat(run, stop)
            .await
            .expect("a job awaited to its end always yields its output");
        self.health.update(|v| v.set_phase(Phase::Recording));
        if summary.result == "busy" {
            let holder = summary.error.clone().unwrap_or_default();
            tracing::warn!("scheduled backup skipped: another run holds the lock ({holder})");
            self.owed
                .records
                .push(records::skipped_record(now_epoch(), &summary.mode, &holder));
            self.health.update(|v| v.record_skip(SKIP_BUSY));
            self.flush();
        } else {
            for r in &summary.repaired {
                tracing::info!("repaired first: {r}");
            }
            tracing::info!("scheduled {}", summary.line());
        }
        self.reload_state();
        self.refresh_owed();
        self.health.update(|v| v.set_phase(Phase::Idle));
        self.show_next_run(Timestamp::now());
        if summary.result != "busy" {
            self.after_scheduled_backup(&summary).await;
        }
    }

    /// A due backup not started while `on-violation = "refuse"` holds scheduled work back.
    fn refuse_backup(&mut self, violations: usize) {
        tracing::warn!(
            "scheduled backup skipped: the last self-check found {violations} violation(s) and on-violation = \"refuse\""
        );
        self.owed.records.push(records::refused_record(
            now_epoch(),
            self.agent.cfg.backup.mode.as_str(),
            violations,
        ));
        self.health.update(|v| {
            v.record_skip(SKIP_SELFCHECK);
            v.counters.jobs.record_skip(SKIP_SELFCHECK);
        });
        self.flush();
    }

    /// SIGHUP: re-reads the configuration; an invalid one is refused and the old one kept.
    pub fn reload_config(&mut self) {
        self.notify.reloading();
        let path = self.config_path.clone();
        match super::load_for_reload(&path, &self.agent) {
            Ok((agent, schedule)) => {
                match super::jobs::compile_jobs(&agent.cfg) {
                    Ok(j) => self.jobs = j,
                    Err(e) => {
                        tracing::error!("{e}; keeping the old self-check and snapshot schedules")
                    }
                }
                self.agent = Arc::new(agent);
                self.schedule = schedule;
                tracing::info!("configuration reloaded from {}", path.display());
            }
            Err(e) => tracing::error!(
                "configuration reload from {} failed, keeping the old configuration: {e}",
                path.display()
            ),
        }
        self.last_status.clear();
        self.notify.send("READY=1");
    }
}
