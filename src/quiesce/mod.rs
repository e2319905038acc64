//! Quiesce hooks: run each hook's `pre` before the backup and its `post` after, undoing in
//! reverse order.
//!
//! Semantics (after rustic's before/after/failed/finally hooks and sanoid's pre/post scripts):
//! * `pre` hooks run in configuration order. A hook whose `pre` succeeded (or has no `pre`)
//!   owes its `post`.
//! * A `pre` that fails (non-zero exit, signal, timeout, cannot start):
//!   - `on_error = Abort`: the owed `post`s run at once in reverse order, then
//!     [`Quiescer::pre_all`] returns [`QuiesceError::PreFailed`] naming the hook, its status and
//!     its output tail. The failed hook's own `post` does **not** run.
//!   - `on_error = Continue`: the failure is reported (event + [`PreReport::continued_failures`])
//!     and the next hook runs. Its `post` is **not** owed either (like sanoid without
//!     `force_post`): a `post` undoes a *successful* `pre`, so a failing `pre` must leave things
//!     as they were.
//! * [`Quiescer::post_all`] runs every owed `post` in reverse order exactly once; a failing post
//!   is reported and does not stop the others. A second call is a no-op.
//! * Observers get a [`QuiesceEvent`] synchronously *before* the quiescer continues, so the
//!   caller can journal "pre of X succeeded" (the event carries the full owed list) or
//!   "post of X ran". This module knows nothing about the journal.

pub mod freeze;
pub mod fsfreeze_sys;
mod output;
mod run;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

pub use output::{BoundedOutput, tail_of};
pub use run::{
    DEFAULT_KILL_GRACE, DEFAULT_OUTPUT_LIMIT, HOOK_PATH, HookOutcome, HookStatus, RunLimits,
    run_argv, run_argv_with,
};

/// What to do when a hook's `pre` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Abort,
    Continue,
}

/// One quiesce hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub name: String,
    /// argv of the pre command; empty = nothing to run (counts as success).
    pub pre: Vec<String>,
    /// argv of the post command; empty = nothing to run.
    pub post: Vec<String>,
    /// Applies to `pre` and `post` separately.
    pub timeout: Duration,
    pub on_error: OnError,
    /// Run `argv[0]` with `/bin/sh -c`; further elements become `$1`, `$2`, … (`$0` is
    /// `felhom-hook`).
    pub shell: bool,
}

impl HookSpec {
    /// The argv actually executed for `argv` (shell wrapping applied).
    pub fn command(&self, argv: &[String]) -> Vec<String> {
        match argv.split_first() {
            Some((script, rest)) if self.shell => {
                let mut v = vec![
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    script.clone(),
                    "felhom-hook".to_string(),
                ];
                v.extend(rest.iter().cloned());
                v
            }
            _ => argv.to_vec(),
        }
    }
}

/// Progress notifications, delivered before the quiescer moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuiesceEvent {
    PreStarting {
        hook: String,
    },
    /// `outcome` is `None` when the hook has no `pre`. `owed`: all hooks whose post is now
    /// owed, in pre order (journal this).
    PreSucceeded {
        hook: String,
        outcome: Option<HookOutcome>,
        owed: Vec<String>,
    },
    PreFailed {
        hook: String,
        outcome: HookOutcome,
        on_error: OnError,
    },
    PostStarting {
        hook: String,
    },
    PostFinished {
        hook: String,
        outcome: HookOutcome,
    },
}

/// Result of a successful [`Quiescer::pre_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreReport {
    /// Every `pre` that ran, in order.
    pub outcomes: Vec<(String, HookOutcome)>,
    /// Hooks whose `pre` failed with `on_error = Continue`.
    pub continued_failures: Vec<String>,
}

/// Result of [`Quiescer::post_all`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostReport {
    /// Every `post` that ran, in the order run.
    pub outcomes: Vec<(String, HookOutcome)>,
    /// From the start of the first `pre` to the end of the last `post` (the time the guest was
    /// quiesced); `None` if no hook ran in this process.
    pub window: Option<Duration>,
}

impl PostReport {
    /// Names of the posts that did not succeed.
    pub fn failures(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, o)| !o.success())
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    /// An `Abort` hook's pre failed; `unwound` are the posts that were run to undo the others.
    #[error("pre hook \"{hook}\" failed ({status}){}", output_suffix(.output))]
    PreFailed {
        hook: String,
        status: HookStatus,
        output: String,
        unwound: Vec<(String, HookOutcome)>,
    },
    #[error("quiesce hooks were already run by this quiescer")]
    AlreadyUsed,
}

fn output_suffix(output: &str) -> String {
    let tail = tail_of(output, 10, 2000);
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Quiesced,
    Released,
}

/// The pre/post state machine for one backup run.
#[derive(Debug)]
pub struct Quiescer {
    phase: Phase,
    /// Hooks whose post is owed, in pre order.
    owed: Vec<HookSpec>,
    kill_grace: Duration,
    output_limit: usize,
    first_started: Option<Instant>,
}

impl Default for Quiescer {
    fn default() -> Self {
        Quiescer::new()
    }
}

/// Observer type taken by the quiescer.
pub type Observer<'a> = &'a mut (dyn FnMut(QuiesceEvent) + Send);

impl Quiescer {
    pub fn new() -> Quiescer {
        Quiescer {
            phase: Phase::Idle,
            owed: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            first_started: None,
        }
    }

    /// After a crash: a quiescer that owes the posts of `owed` (given in pre order, e.g. the
    /// journal's `hooks_ran_pre` mapped back to the configured hooks).
    pub fn resume(owed: Vec<HookSpec>) -> Quiescer {
        Quiescer {
            phase: Phase::Quiesced,
            owed,
            ..Quiescer::new()
        }
    }

    pub fn with_kill_grace(mut self, grace: Duration) -> Quiescer {
        self.kill_grace = grace;
        self
    }

    pub fn with_output_limit(mut self, limit: usize) -> Quiescer {
        self.output_limit = limit;
        self
    }

    /// Names of the hooks whose post is owed, in pre order.
    pub fn owed(&self) -> Vec<String> {
        self.owed.iter().map(|h| h.name.clone()).collect()
    }

    fn limits(&self, timeout: Duration) -> RunLimits {
        RunLimits {
            timeout,
            kill_grace: self.kill_grace,
            output_limit: self.output_limit,
        }
    }

    /// Runs the `pre` of each hook in order (see the module doc for failure handling).
    pub async fn pre_all(
        &mut self,
        hooks: &[HookSpec],
        env: &[(String, String)],
        observer: Observer<'_>,
    ) -> Result<PreReport, QuiesceError> {
        self.pre_all_until(hooks, env, observer, &|| false).await
    }

    /// [`Quiescer::pre_all`], but starts no further hook once `stop()` is true (the agent is
    /// shutting down); the hooks that ran stay owed, the caller releases them.
    pub async fn pre_all_until(
        &mut self,
        hooks: &[HookSpec],
        env: &[(String, String)],
        observer: Observer<'_>,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<PreReport, QuiesceError> {
        if self.phase != Phase::Idle {
            return Err(QuiesceError::AlreadyUsed);
        }
        self.phase = Phase::Quiesced;
        self.first_started = Some(Instant::now());
        let mut report = PreReport {
            outcomes: Vec::new(),
            continued_failures: Vec::new(),
        };
        for hook in hooks {
            if stop() {
                break;
            }
            if hook.pre.is_empty() {
                self.owed.push(hook.clone());
                observer(QuiesceEvent::PreSucceeded {
                    hook: hook.name.clone(),
                    outcome: None,
                    owed: self.owed(),
                });
                continue;
            }
            observer(QuiesceEvent::PreStarting {
                hook: hook.name.clone(),
            });
            let outcome =
                run_argv_with(&hook.command(&hook.pre), env, &self.limits(hook.timeout)).await;
            report.outcomes.push((hook.name.clone(), outcome.clone()));
            if outcome.success() {
                self.owed.push(hook.clone());
                observer(QuiesceEvent::PreSucceeded {
                    hook: hook.name.clone(),
                    outcome: Some(outcome),
                    owed: self.owed(),
                });
                continue;
            }
            observer(QuiesceEvent::PreFailed {
                hook: hook.name.clone(),
                outcome: outcome.clone(),
                on_error: hook.on_error,
            });
            match hook.on_error {
                OnError::Continue => report.continued_failures.push(hook.name.clone()),
                OnError::Abort => {
                    // The unwinding posts run as posts: FELHOM_PHASE=post.
                    let post_env: Vec<(String, String)> = env
                        .iter()
                        .map(|(k, v)| {
                            let v = if k == "FELHOM_PHASE" {
                                "post".to_string()
                            } else {
                                v.clone()
                            };
                            (k.clone(), v)
                        })
                        .collect();
                    let unwound = self.post_all(&post_env, observer).await.outcomes;
                    return Err(QuiesceError::PreFailed {
                        hook: hook.name.clone(),
                        status: outcome.status,
                        output: outcome.output,
                        unwound,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Runs the owed posts in reverse order, once. Later calls return an empty report.
    pub async fn post_all(
        &mut self,
        env: &[(String, String)],
        observer: Observer<'_>,
    ) -> PostReport {
        if self.phase != Phase::Quiesced {
            return PostReport::default();
        }
        self.phase = Phase::Released;
        let mut report = PostReport::default();
        let owed = std::mem::take(&mut self.owed);
        for hook in owed.iter().rev() {
            if hook.post.is_empty() {
                continue;
            }
            observer(QuiesceEvent::PostStarting {
                hook: hook.name.clone(),
            });
            let outcome =
                run_argv_with(&hook.command(&hook.post), env, &self.limits(hook.timeout)).await;
            report.outcomes.push((hook.name.clone(), outcome.clone()));
            observer(QuiesceEvent::PostFinished {
                hook: hook.name.clone(),
                outcome,
            });
        }
        report.window = self.first_started.map(|t| t.elapsed());
        report
    }
}
