//! `felhom-agent run`: the long-lived daemon, and `next-runs`.
//!
//! Start-up order (the `READY=1` contract of the systemd unit): the configuration is valid and
//! its schedule compiles; the state directory is open and `state.json` readable; what an earlier
//! process left is repaired (owed post hooks run, a pending PVE task reconciled — the shared
//! `backup::run::reconcile`); the health listener is bound; only then `READY=1`. After that the
//! scheduler loop ([`runner`]) runs until SIGTERM/SIGINT; SIGHUP reloads the configuration.
//!
//! Owns: the daemon's start-up and shutdown, the systemd notification protocol ([`sdnotify`]),
//! SIGHUP ([`signals`]), the state-directory watch ([`watch`]) and the scheduler loop. The
//! backup itself, the schedule maths and the health endpoint belong to their own modules.

pub mod jobs;
pub mod records;
pub mod runner;
pub mod sdnotify;
pub mod signals;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::backup::run::{Agent, reconcile};
use crate::cli::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Signals};
use crate::config::{self, Config};
use crate::health::{Health, HealthServer, HealthView, Phase, ServerOptions, fmt_secs};
use crate::schedule::{CronSchedule, format_next_runs, splay_offset};

use runner::{Daemon, SLEEP_CAP};

/// `/livez` turns 503 when the loop has not ticked for this long (it ticks at least every
/// [`SLEEP_CAP`] when idle and every [`runner::RUN_TICK`] during a run).
pub const LIVEZ_STALENESS: Duration = Duration::from_secs(SLEEP_CAP.as_secs() + 60);

/// The backup schedule compiled in its time zone; `None` when `backup.schedule` is empty.
pub fn compile_schedule(cfg: &Config) -> Result<Option<CronSchedule>, String> {
    let Some(s) = &cfg.backup.schedule else {
        return Ok(None);
    };
    let tz = cfg.backup.timezone.clone().unwrap_or_else(TimeZone::system);
    CronSchedule::new(s, tz)
        .map(Some)
        .map_err(|e| format!("backup.schedule: {e}"))
}

fn tz_name(tz: &TimeZone) -> String {
    tz.iana_name()
        .map_or_else(|| "the system time zone".to_string(), str::to_string)
}

/// `felhom-agent next-runs [-n N]`.
pub fn next_runs(cfg: &Config, n: usize) -> i32 {
    let schedule = match compile_schedule(cfg) {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!("backup.schedule is empty: no scheduled backups");
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("felhom-agent: {e}");
            return EXIT_CONFIG;
        }
    };
    let text = cfg.backup.schedule.as_ref().map_or("", |s| s.as_str());
    println!("schedule {text:?} in {}", tz_name(schedule.time_zone()));
    let window = cfg.backup.splay;
    match cfg.guest.vmid {
        _ if window.as_secs() == 0 => println!("splay: none (backup.splay = 0s)"),
        Some(v) => println!(
            "splay for guest {v}: {} after each fire time (backup.splay = {})",
            fmt_secs(splay_offset(v, window).as_secs()),
            fmt_secs(window.as_secs())
        ),
        None => println!(
            "splay: a fixed delay in [0, {}) derived from the VMID (set guest.vmid to see this guest's)",
            fmt_secs(window.as_secs())
        ),
    }
    print!("{}", format_next_runs(&schedule, Timestamp::now(), n));
    EXIT_OK
}

/// Loads and checks a new configuration for SIGHUP. Settings that only a restart can apply
/// (`state.dir`, `[health]`) keep their running values, with a warning.
pub fn load_for_reload(path: &Path, old: &Agent) -> Result<(Agent, Option<CronSchedule>), String> {
    let mut cfg = config::load(path).map_err(|e| e.to_string())?;
    let schedule = compile_schedule(&cfg)?;
    let env = |k: &str| std::env::var(k).ok();
    if cfg.state.resolve_dir(&env) != old.dir.path() {
        tracing::warn!(
            "state.dir changed: the new directory is used after a restart; keeping {}",
            old.dir.path().display()
        );
        cfg.state.dir = Some(old.dir.path().to_path_buf());
    }
    crate::cli::check_mounts(&cfg)?;
    if cfg.health != old.cfg.health {
        tracing::warn!("[health] changed: it takes effect after a restart");
    }
    let agent = crate::cli::build_agent(cfg)?;
    Ok((agent, schedule))
}

/// `felhom-agent run`. Returns the exit code.
pub async fn run(agent: Agent, config_path: PathBuf, signals: Arc<Signals>) -> i32 {
    let notify = sdnotify::Notifier::from_env();
    let watchdog = sdnotify::watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    );
    let hup = signals::Hangup::install();
    let schedule = match compile_schedule(&agent.cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
    };
    let jobs = match jobs::compile_jobs(&agent.cfg) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
    };
    let health = Health::new(HealthView::new(
        env!("CARGO_PKG_VERSION"),
        Timestamp::now().as_second(),
    ));
    health.update(|v| v.set_phase(Phase::Recovering));
    notify.status("starting: repairing what an earlier run left");
    let initial = match agent.dir.load_state() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot read the state: {e}");
            return EXIT_FAILED;
        }
    };
    if let Some(w) = &initial.warning {
        tracing::warn!("{w}");
        health.update(|v| v.warnings.push(w.clone()));
    }
    health.update(|v| v.apply_state(&initial.state));
    let opts = match ServerOptions::from_config(&agent.cfg.health, LIVEZ_STALENESS) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_CONFIG;
        }
    };
    let mut d = Daemon::new(
        Arc::new(agent),
        config_path,
        schedule,
        signals,
        hup,
        notify,
        watchdog,
        health.clone(),
    );
    d.last_scheduled = initial.state.last_scheduled;
    d.last_selfcheck = initial.state.last_selfcheck;
    d.last_snapshot_scheduled = initial.state.last_snapshot_scheduled;
    d.selfcheck_at_start = jobs.selfcheck.is_some();
    d.jobs = jobs;
    d.seen = initial.state.runs.back().cloned();
    d.beat();
    // Repairs: owed post hooks, a pending task looked at once (a still-running one is followed
    // by the next run, which reattaches to it).
    match reconcile(&d.agent, d.signals.as_ref()).await {
        Ok(notes) => {
            for n in notes {
                tracing::info!("start-up repair: {n}");
            }
        }
        Err(e) => {
            tracing::warn!("start-up repair incomplete: {e}");
            health.update(|v| v.warnings.push(format!("start-up repair incomplete: {e}")));
        }
    }
    d.reload_state();
    d.refresh_owed();
    d.beat();
    match watch::DirWatch::new(d.agent.dir.path()) {
        Ok(w) => d.watch = Some(w),
        Err(e) => tracing::warn!(
            "cannot watch {} ({e}); changes by other processes show up within {}s",
            d.agent.dir.path().display(),
            SLEEP_CAP.as_secs()
        ),
    }
    let server = match HealthServer::bind(opts, health.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_FAILED;
        }
    };
    tracing::info!(
        "health endpoint listening on http://{}",
        server.local_addr()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server.serve(stop_rx));
    health.update(|v| v.set_phase(Phase::Idle));
    d.notify.ready("idle");
    tracing::info!("ready");
    d.run_loop().await;
    d.notify.stopping("stopping");
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), serving).await;
    EXIT_OK
}
