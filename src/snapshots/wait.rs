//! Bounded waiting: for the guest lock to go away, and for a task to stop.
//!
//! Every wait goes through an injected [`Sleeper`], and time is accounted as the sum of the
//! waits asked for (no wall clock), so tests decide what a wait means (e.g. advancing the
//! simulator's clock). Both loops are bounded by [`Waits`].

use std::time::Duration;

use serde::Serialize;

use super::Guest;
use crate::pve::retry::Sleeper;
use crate::pve::types::{GuestStatus, TaskOutcome};
use crate::pve::{ApiError, PveClient, Upid};

/// Limits of the waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// How long a foreign lock (backup, migration, …) may be waited for in total.
    pub lock_total: Duration,
    /// First lock re-check delay; doubles up to `lock_max`.
    pub lock_first: Duration,
    pub lock_max: Duration,
    /// How long a snapshot task may take.
    pub task_timeout: Duration,
    /// First task poll delay; doubles up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            lock_total: Duration::from_secs(600),
            lock_first: Duration::from_secs(5),
            lock_max: Duration::from_secs(60),
            task_timeout: Duration::from_secs(1800),
            poll_first: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
        }
    }
}

/// The guest lock after waiting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockState {
    /// The lock still held, if any.
    pub held: Option<String>,
    /// The first lock seen, if any.
    pub seen: Option<String>,
    pub waited_secs: f64,
}

/// Reads the guest's `lock` (`GET …/status/current`).
pub async fn read_lock(client: &PveClient, guest: &Guest) -> Result<Option<String>, ApiError> {
    let st: GuestStatus = client.get(guest.path(&["status", "current"]), &[]).await?;
    Ok(st.lock.filter(|l| !l.is_empty()))
}

/// Waits with capped exponential backoff until the guest is unlocked or `waits.lock_total`
/// has been waited.
pub async fn wait_unlocked(
    client: &PveClient,
    guest: &Guest,
    waits: &Waits,
    sleeper: &dyn Sleeper,
) -> Result<LockState, ApiError> {
    let mut waited = Duration::ZERO;
    let mut delay = waits.lock_first;
    let mut seen = None;
    loop {
        let lock = read_lock(client, guest).await?;
        if seen.is_none() {
            seen.clone_from(&lock);
        }
        let Some(l) = lock else {
            return Ok(LockState {
                held: None,
                seen,
                waited_secs: waited.as_secs_f64(),
            });
        };
        if waited >= waits.lock_total {
            return Ok(LockState {
                held: Some(l),
                seen,
                waited_secs: waited.as_secs_f64(),
            });
        }
        let d = delay.min(waits.lock_total - waited);
        tracing::info!(vmid = guest.vmid, lock = %l, wait = ?d, "guest is locked; waiting");
        sleeper.sleep(d).await;
        waited += d;
        delay = (delay * 2).min(waits.lock_max);
    }
}

/// How a polled task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    Stopped(TaskOutcome),
    /// Still running after `waits.task_timeout`.
    TimedOut,
}

/// Polls `GET …/tasks/{upid}/status` until the task stops or the timeout has been waited.
pub async fn poll_task(
    client: &PveClient,
    upid: &Upid,
    waits: &Waits,
    sleeper: &dyn Sleeper,
) -> Result<TaskEnd, ApiError> {
    let mut waited = Duration::ZERO;
    let mut delay = waits.poll_first;
    loop {
        let st = client.task_status(upid).await?;
        if let Some(outcome) = st.outcome() {
            return Ok(TaskEnd::Stopped(outcome));
        }
        if waited >= waits.task_timeout {
            return Ok(TaskEnd::TimedOut);
        }
        let d = delay.min(waits.task_timeout - waited);
        sleeper.sleep(d).await;
        waited += d;
        delay = (delay * 2).min(waits.poll_max);
    }
}

/// Parses the UPID a task-starting call returned.
pub fn parse_upid(call: &str, s: &str) -> Result<Upid, ApiError> {
    s.parse().map_err(|e| ApiError::Decode {
        call: call.to_string(),
        message: format!("expected a UPID, got {s:?}: {e}"),
    })
}

/// If a task error is PVE's `VM is locked (x)` / `CT is locked (x)`, the lock name.
pub fn locked_by(error: &str) -> Option<String> {
    let rest = error
        .strip_prefix("VM is locked (")
        .or_else(|| error.strip_prefix("CT is locked ("))?;
    let name = rest.split(')').next()?;
    (!name.is_empty()).then(|| name.to_string())
}
