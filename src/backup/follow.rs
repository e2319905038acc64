//! Following a vzdump task to its end: incremental log reads on the node named in the UPID,
//! adaptive polling (`poll::PollPlan`), releasing the quiesce at the consistency point, tolerance
//! of transient errors until the task timeout, and a prompt, safe stop on shutdown.
//!
//! Invariant: whatever way this returns, the caller still owes nothing but `post_all` (which is
//! idempotent); the release callback runs at most once.

use std::time::{Duration, Instant};

use super::logscan::{GuestType, LogScan, Mode};
use super::poll::PollPlan;
use crate::pve::types::{TaskLogLine, TaskStatus};
use crate::pve::{ApiError, PveClient, Upid};

/// How following ended.
#[derive(Debug)]
pub enum Followed {
    /// The task stopped; its status and the whole log are known.
    Stopped { status: TaskStatus },
    /// `task-timeout` passed while the task was still running.
    TimedOut,
    /// The agent is shutting down; the task goes on without us.
    Interrupted,
    /// We cannot follow the task any more (token rejected, task unknown on its node).
    Lost(ApiError),
    /// With `--no-wait`: released and returning early.
    Detached,
}

pub struct FollowOpts {
    pub guest: GuestType,
    pub mode: Mode,
    /// Post hooks are owed at the consistency point.
    pub release_at_cp: bool,
    pub task_timeout: Duration,
    /// Previous comparable run's duration, to predict the end.
    pub expected: Option<Duration>,
    /// Return once released (or at once if nothing is owed): `--no-wait`.
    pub detach_after_release: bool,
}

/// Stats about how the task was followed (benchmarks and logs).
#[derive(Debug, Default, Clone)]
pub struct FollowStats {
    pub requests: u32,
    pub polls: u32,
}

/// Time as the follower sees it: seconds on a monotonic clock and a way to wait. Production uses
/// [`RealClock`]; the API-economy benchmark drives the simulator's clock through it.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

pub struct RealClock(Instant);

impl RealClock {
    pub fn new() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Default for RealClock {
    fn default() -> Self {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Something that resolves when the agent must stop (SIGINT/SIGTERM).
pub trait Shutdown: Send + Sync {
    fn requested(&self) -> bool;
    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

#[allow(clippy::too_many_arguments)]
pub async fn follow(
    client: &PveClient,
    clock: &dyn Clock,
    upid: &Upid,
    opts: &FollowOpts,
    scan: &mut LogScan,
    shutdown: &dyn Shutdown,
    mut on_release: impl AsyncFnMut(),
    stats: &mut FollowStats,
) -> Followed {
    let start = clock.now();
    let secs = || clock.now() - start;
    let elapsed = || Duration::from_secs_f64(secs().max(0.0));
    let mut plan = PollPlan::new(
        0.0,
        opts.release_at_cp,
        opts.expected.map(|d| d.as_secs_f64()),
    );
    let mut released = !opts.release_at_cp;
    if released && opts.detach_after_release {
        return Followed::Detached;
    }
    let mut ask_status = false;
    loop {
        // Read new log lines (start = lines seen so far).
        stats.polls += 1;
        stats.requests += 1;
        let mut task_line_seen = false;
        match client.task_log(upid, scan.len() as u64, 5000).await {
            Ok(log) => {
                for TaskLogLine { n, t } in log.lines {
                    if n as usize <= scan.len() {
                        continue; // a repeated line (never expected, harmless)
                    }
                    if t == "no content" && n == 1 {
                        continue;
                    }
                    if t.starts_with("TASK ") {
                        task_line_seen = true;
                    }
                    if scan.push(&t) {
                        plan.observe_cp(secs());
                        tracing::info!(line = %t, "consistency point reached");
                    }
                    if let Some(p) = super::logscan::parse_progress(&t) {
                        plan.observe_progress(secs(), p.pct, p.elapsed);
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "reading the task log failed; will retry")
            }
            Err(e) => return Followed::Lost(e),
        }
        if !released && scan.consistency_point().is_some() {
            on_release().await;
            released = true;
            if opts.detach_after_release {
                return Followed::Detached;
            }
        }
        if task_line_seen || ask_status {
            stats.requests += 1;
            match client.task_status(upid).await {
                Ok(st) if st.status == crate::pve::types::TaskState::Stopped => {
                    // Read whatever the log still holds after the TASK line race.
                    if !task_line_seen
                        && let Ok(log) = client.task_log(upid, scan.len() as u64, 5000).await
                    {
                        stats.requests += 1;
                        for l in log.lines {
                            if l.n as usize > scan.len() {
                                scan.push(&l.t);
                            }
                        }
                    }
                    return Followed::Stopped { status: st };
                }
                Ok(_) => {}
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "reading the task status failed; will retry")
                }
                Err(e) => return Followed::Lost(e),
            }
        }
        if elapsed() >= opts.task_timeout {
            return Followed::TimedOut;
        }
        let next = plan.next(secs());
        ask_status = next.ask_status;
        let wait =
            Duration::from_secs_f64(next.wait).min(opts.task_timeout.saturating_sub(elapsed()));
        if shutdown.requested() {
            return Followed::Interrupted;
        }
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = shutdown.wait() => return Followed::Interrupted,
        }
    }
}
