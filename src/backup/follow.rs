//! Following a vzdump task to its end: incremental log reads on the node named in the UPID,
//! adaptive polling (`poll::PollPlan`), releasing the quiesce at the consistency point, tolerance
//! of transient errors until the task timeout, and a prompt, safe stop on shutdown.
//!
//! Transient transport errors are retried until the task timeout. HTTP >= 500 answers from PVE
//! itself (`ApiError::Server`; pveproxy/pvedaemon answer 500 while pvedaemon restarts, e.g.
//! during an upgrade) are tolerated for a bounded streak: the [`MAX_SERVER_ERRORS`]th
//! consecutive one ends following (`Lost`); any successful read resets the streak; between
//! tries the follower waits at least the plan's next wait and at least [`SERVER_ERROR_WAIT`].
//! Other errors (401, 403, 404, 400, decode, TLS) end following at once.
//!
//! Invariant: whatever way this returns, the caller still owes nothing but `post_all` (which is
//! idempotent); the release callback runs at most once.

use std::time::{Duration, Instant};

use super::logscan::{GuestType, LogScan, Mode};
use super::poll::PollPlan;
use crate::pve::types::{TaskLogLine, TaskStatus};
use crate::pve::{ApiError, PveClient, Upid};

/// The number of consecutive HTTP >= 500 answers on the task log/status reads that ends
/// following with [`Followed::Lost`].
pub const MAX_SERVER_ERRORS: u32 = 5;
/// The least wait before the next read after an HTTP >= 500 answer.
pub const SERVER_ERROR_WAIT: Duration = Duration::from_secs(1);

/// What to do with a failed task log/status read.
enum ReadError {
    /// Retry at the next poll (transient transport error).
    Retry,
    /// Retry, after at least [`SERVER_ERROR_WAIT`] (a tolerated HTTP >= 500).
    RetrySlowly,
    /// Stop following.
    Fatal(ApiError),
}

/// Classify a failed read; `streak` counts consecutive HTTP >= 500 answers.
fn on_read_error(e: ApiError, what: &str, streak: &mut u32) -> ReadError {
    if e.is_retryable() {
        tracing::warn!(error = %e, "reading the task {what} failed; will retry");
        return ReadError::Retry;
    }
    if matches!(e, ApiError::Server { status, .. } if status >= 500) {
        *streak += 1;
        if *streak < MAX_SERVER_ERRORS {
            tracing::warn!(
                error = %e,
                consecutive = *streak,
                max = MAX_SERVER_ERRORS,
                "reading the task {what} failed with a server error; will retry"
            );
            return ReadError::RetrySlowly;
        }
    }
    ReadError::Fatal(e)
}

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
    // Consecutive HTTP >= 500 answers on the reads; reset by any successful read.
    let mut server_errors = 0u32;
    loop {
        let mut slow = false;
        // Read new log lines (start = lines seen so far).
        stats.polls += 1;
        stats.requests += 1;
        let mut task_line_seen = false;
        match client.task_log(upid, scan.len() as u64, 5000).await {
            Ok(log) => {
                server_errors = 0;
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
                    match t.as_str() {
                        "INFO: trying to get global lock - waiting..." => {
                            plan.observe_lock_wait(secs());
                            tracing::info!(
                                "the task waits for the node's vzdump lock (another backup runs on the node)"
                            );
                        }
                        "INFO: got global lock" if plan.lock_waiting() => {
                            plan.observe_lock_acquired(secs());
                            tracing::info!("the task got the node's vzdump lock");
                        }
                        _ => {}
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
            Err(e) => match on_read_error(e, "log", &mut server_errors) {
                ReadError::Retry => {}
                ReadError::RetrySlowly => slow = true,
                ReadError::Fatal(e) => return Followed::Lost(e),
            },
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
                Ok(_) => server_errors = 0,
                Err(e) => match on_read_error(e, "status", &mut server_errors) {
                    ReadError::Retry => {}
                    ReadError::RetrySlowly => slow = true,
                    ReadError::Fatal(e) => return Followed::Lost(e),
                },
            }
        }
        if elapsed() >= opts.task_timeout {
            return Followed::TimedOut;
        }
        let next = plan.next(secs());
        ask_status = next.ask_status;
        let mut wait = Duration::from_secs_f64(next.wait);
        if slow {
            wait = wait.max(SERVER_ERROR_WAIT);
        }
        let wait = wait.min(opts.task_timeout.saturating_sub(elapsed()));
        if shutdown.requested() {
            return Followed::Interrupted;
        }
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = shutdown.wait() => return Followed::Interrupted,
        }
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
