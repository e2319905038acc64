//! Running one hook command: own process group, fixed environment, bounded merged output,
//! timeout that kills the whole process group.
//!
//! Invariants: the child runs with `env_clear()` plus `PATH=`[`HOOK_PATH`], `LANG=C.UTF-8` and
//! the caller's variables only; stdin is `/dev/null`; cwd is `/`. It leads its own process group
//! (`process_group(0)`). On timeout the group gets SIGTERM, then (after the grace, or as soon as
//! the group is empty) SIGKILL, and the child is reaped before returning. If the returned future is
//! dropped while the child runs, the group is SIGKILLed. When a hook exits on its own, descendants
//! it left in the background are *not* killed (a post hook may legitimately start a service);
//! reading their output stops after the grace period.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep, sleep_until};

use super::output::BoundedOutput;

/// `PATH` given to hooks.
pub const HOOK_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Time between SIGTERM and SIGKILL on timeout.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes of merged output kept per hook (head + tail).
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024;
const GROUP_POLL: Duration = Duration::from_millis(20);

/// How long a command may run and how much of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_limit: usize,
}

impl RunLimits {
    pub fn new(timeout: Duration) -> RunLimits {
        RunLimits {
            timeout,
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStatus {
    Exited(i32),
    /// Killed by this signal (not by us: a timeout is [`HookStatus::TimedOut`]).
    Signaled(i32),
    TimedOut,
    SpawnFailed(String),
}

impl std::fmt::Display for HookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookStatus::Exited(c) => write!(f, "exit status {c}"),
            HookStatus::Signaled(s) => write!(f, "killed by signal {s}"),
            HookStatus::TimedOut => f.write_str("timed out"),
            HookStatus::SpawnFailed(m) => write!(f, "could not be started: {m}"),
        }
    }
}

/// Result of [`run_argv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    pub status: HookStatus,
    pub duration: Duration,
    /// Merged stdout+stderr, bounded (see [`super::output::BoundedOutput`]).
    pub output: String,
}

impl HookOutcome {
    pub fn success(&self) -> bool {
        self.status == HookStatus::Exited(0)
    }
}

/// Runs `argv` with the default kill grace and output limit.
pub async fn run_argv(argv: &[String], env: &[(String, String)], timeout: Duration) -> HookOutcome {
    run_argv_with(argv, env, &RunLimits::new(timeout)).await
}

/// Kills the process group on drop unless disarmed.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: plain syscall; pgid > 0 is the group our child leads.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

fn absorb(r: io::Result<usize>, buf: &[u8], out: &mut BoundedOutput, eof: &mut bool) {
    match r {
        Ok(0) => *eof = true,
        Ok(n) => out.push(&buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => {
            out.note(format!("[reading output failed: {e}]"));
            *eof = true;
        }
    }
}

/// Runs `argv` (no shell) as described in the module doc and returns how it ended.
pub async fn run_argv_with(
    argv: &[String],
    env: &[(String, String)],
    limits: &RunLimits,
) -> HookOutcome {
    let started = Instant::now();
    let failed = |msg: String| HookOutcome {
        status: HookStatus::SpawnFailed(msg),
        duration: started.elapsed(),
        output: String::new(),
    };
    let Some(program) = argv.first() else {
        return failed("empty command".into());
    };
    let (reader, writer) = match io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot create pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("cannot create pipe: {e}")),
    };
    let mut rx = match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(rx) => rx,
        Err(e) => return failed(format!("cannot create pipe: {e}")),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("LANG", "C.UTF-8")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    drop(cmd); // closes our copies of the write end, so EOF comes when the child's close
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("{program}: {e}")),
    };
    let pgid = child.id().map(|p| p as i32);
    let mut guard = GroupGuard { pgid };

    let mut out = BoundedOutput::new(limits.output_limit);
    let mut buf = vec![0u8; 8192];
    let mut eof = false;
    let deadline = started + limits.timeout;

    let mut exit: Option<io::Result<ExitStatus>> = None;
    while exit.is_none() {
        tokio::select! {
            r = child.wait() => exit = Some(r),
            r = rx.read(&mut buf), if !eof => absorb(r, &buf, &mut out, &mut eof),
            () = sleep_until(deadline) => break,
        }
    }
    let timed_out = exit.is_none();
    if timed_out {
        let grace_end = Instant::now() + limits.kill_grace;
        if let Some(pgid) = pgid {
            signal_group(pgid, libc::SIGTERM);
        }
        while exit.is_none() {
            tokio::select! {
                r = child.wait() => exit = Some(r),
                r = rx.read(&mut buf), if !eof => absorb(r, &buf, &mut out, &mut eof),
                () = sleep_until(grace_end) => break,
            }
        }
        // Descendants may outlive the leader; give them the rest of the grace.
        if let Some(pgid) = pgid {
            while group_exists(pgid) && Instant::now() < grace_end {
                tokio::select! {
                    r = rx.read(&mut buf), if !eof => absorb(r, &buf, &mut out, &mut eof),
                    () = sleep(GROUP_POLL) => {}
                }
            }
            signal_group(pgid, libc::SIGKILL);
        }
        if exit.is_none() {
            exit = Some(child.wait().await);
        }
    }
    // The leader is reaped: from here on the group is left alone (see module doc).
    guard.pgid = None;

    let drain_end = Instant::now() + limits.kill_grace;
    while !eof {
        tokio::select! {
            r = rx.read(&mut buf) => absorb(r, &buf, &mut out, &mut eof),
            () = sleep_until(drain_end) => {
                out.note("[output still held open by a background process; stopped reading]");
                break;
            }
        }
    }

    let status = match exit {
        _ if timed_out => HookStatus::TimedOut,
        Some(Ok(st)) => match (st.code(), st.signal()) {
            (Some(c), _) => HookStatus::Exited(c),
            (None, Some(s)) => HookStatus::Signaled(s),
            (None, None) => HookStatus::SpawnFailed(format!("{program}: unknown wait status {st}")),
        },
        Some(Err(e)) => HookStatus::SpawnFailed(format!("{program}: waiting failed: {e}")),
        None => HookStatus::SpawnFailed(format!("{program}: not reaped")),
    };
    HookOutcome {
        status,
        duration: started.elapsed(),
        output: out.finish(),
    }
}
