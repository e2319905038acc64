//! The crash journal (`journal.json`): what a run has done that a restarted agent must know.
//!
//! A step is written (atomically) *before* the action it announces has effects that would need
//! undoing or tracking: e.g. `QuiesceStarted` listing the hooks whose `pre` succeeded is rewritten
//! after each successful pre, `VzdumpRequested` before the POST, `UpidReceived` as soon as the
//! answer arrives. Steps are appended; the file is the whole history of one run.
//!
//! Invariants: at most one run per journal; [`Journal::begin`] refuses to overwrite a journal
//! whose run is not `Finished` (its owed post hooks would be forgotten); a corrupt journal is
//! an error, never silently replaced.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{JOURNAL_FILE, StateError, atomic_write, read_optional};

const JOURNAL_VERSION: u32 = 1;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum JournalStep {
    /// Quiesce in progress: the hooks whose `pre` succeeded, in the order they ran. Rewritten
    /// (appended again) after each successful pre; the last one counts.
    QuiesceStarted {
        hooks_ran_pre: Vec<String>,
        post_owed: bool,
    },
    /// The `post` of this hook has run (during release or recovery).
    PostRan {
        hook: String,
    },
    /// About to POST `/nodes/{node}/vzdump`; `at` is epoch seconds.
    VzdumpRequested {
        at: i64,
        node: String,
    },
    UpidReceived {
        upid: String,
        node: String,
    },
    /// About to FIFREEZE these mount points (freeze order). Until a `Frozen` step follows, a
    /// restarted agent thaws all of them (EINVAL = was not frozen, harmless).
    FreezePlanned {
        mounts: Vec<String>,
    },
    /// FIFREEZE done: `frozen` by us (owed a thaw), `already_frozen` by someone else (EBUSY;
    /// never thawed by us).
    Frozen {
        frozen: Vec<String>,
        already_frozen: Vec<String>,
    },
    /// These mounts were thawed (`by`: `release`, `watchdog`, `failure`, `repair`).
    Thawed {
        mounts: Vec<String>,
        by: String,
    },
    /// All owed posts have run.
    Released,
    /// The run is over; nothing is owed.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JournalFile {
    version: u32,
    run_id: String,
    started: i64,
    steps: Vec<JournalStep>,
}

/// A vzdump request without a recorded UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzdumpRequest {
    pub at: i64,
    pub node: String,
}

/// What a restarted process must do about the journalled run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalState {
    pub run_id: String,
    pub started: i64,
    /// Hooks whose `post` is owed, in the order they must run (reverse of the pre order).
    pub posts_owed: Vec<String>,
    /// `(upid, node)` of a task that was started and whose end was not recorded.
    pub pending_upid: Option<(String, String)>,
    /// vzdump was requested but no UPID came back: look it up in the node's task list.
    pub requested_without_upid: Option<VzdumpRequest>,
    pub finished: bool,
}

impl JournalState {
    /// True when nothing is owed and nothing is to be tracked.
    pub fn is_settled(&self) -> bool {
        self.finished
            || (self.posts_owed.is_empty()
                && self.pending_upid.is_none()
                && self.requested_without_upid.is_none())
    }

    fn from_file(file: &JournalFile) -> JournalState {
        let mut ran_pre: Vec<String> = Vec::new();
        let mut post_owed = false;
        let mut posts_done: Vec<&str> = Vec::new();
        let mut pending_upid = None;
        let mut requested = None;
        let mut finished = false;
        for step in &file.steps {
            match step {
                JournalStep::QuiesceStarted {
                    hooks_ran_pre,
                    post_owed: owed,
                } => {
                    ran_pre.clone_from(hooks_ran_pre);
                    post_owed = *owed;
                }
                JournalStep::PostRan { hook } => posts_done.push(hook),
                JournalStep::VzdumpRequested { at, node } => {
                    requested = Some(VzdumpRequest {
                        at: *at,
                        node: node.clone(),
                    });
                    pending_upid = None;
                }
                JournalStep::UpidReceived { upid, node } => {
                    pending_upid = Some((upid.clone(), node.clone()));
                    requested = None;
                }
                JournalStep::Released => post_owed = false,
                JournalStep::Finished => finished = true,
                JournalStep::FreezePlanned { .. }
                | JournalStep::Frozen { .. }
                | JournalStep::Thawed { .. } => {}
            }
        }
        let posts_owed = if post_owed && !finished {
            ran_pre
                .into_iter()
                .rev()
                .filter(|h| !posts_done.contains(&h.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        if finished {
            pending_upid = None;
            requested = None;
        }
        JournalState {
            run_id: file.run_id.clone(),
            started: file.started,
            posts_owed,
            pending_upid,
            requested_without_upid: requested,
            finished,
        }
    }
}

/// Mount points the journalled run froze (or was about to freeze) and has not recorded as
/// thawed, in thaw order (the reverse of the freeze order). Empty once `Finished`.
fn thaw_owed(file: &JournalFile) -> Vec<String> {
    let mut owed: Vec<String> = Vec::new();
    for step in &file.steps {
        match step {
            JournalStep::FreezePlanned { mounts } => {
                for m in mounts {
                    if !owed.contains(m) {
                        owed.push(m.clone());
                    }
                }
            }
            JournalStep::Frozen { already_frozen, .. } => {
                owed.retain(|m| !already_frozen.contains(m));
            }
            JournalStep::Thawed { mounts, .. } => owed.retain(|m| !mounts.contains(m)),
            JournalStep::Finished => owed.clear(),
            _ => {}
        }
    }
    owed.reverse();
    owed
}

/// Handle on `journal.json`.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    current: Option<JournalFile>,
}

impl Journal {
    pub(super) fn new(dir: PathBuf) -> Journal {
        Journal { dir, current: None }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn read(&self) -> Result<Option<JournalFile>, StateError> {
        let path = self.path();
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let file: JournalFile =
            serde_json::from_slice(&bytes).map_err(|e| StateError::JournalCorrupt {
                path: path.clone(),
                detail: format!("invalid JSON: {e}"),
            })?;
        if file.version != JOURNAL_VERSION {
            return Err(StateError::JournalCorrupt {
                path,
                detail: format!("unknown version {}", file.version),
            });
        }
        Ok(Some(file))
    }

    fn write(&self, file: &JournalFile) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(file).map_err(|e| {
            StateError::io("cannot serialise", &self.path(), std::io::Error::other(e))
        })?;
        atomic_write(&self.dir, JOURNAL_FILE, &json)
    }

    /// What the journal on disk says, for a restarted process. `None` when there is none.
    pub fn load(&self) -> Result<Option<JournalState>, StateError> {
        Ok(self.read()?.as_ref().map(JournalState::from_file))
    }

    /// Starts a new run. Fails with [`StateError::JournalUnfinished`] if the journal on disk
    /// holds a run that is not settled.
    pub fn begin(&mut self, run_id: impl Into<String>, started: i64) -> Result<(), StateError> {
        if let Some(old) = self.read()?
            && (!JournalState::from_file(&old).is_settled() || !thaw_owed(&old).is_empty())
        {
            return Err(StateError::JournalUnfinished {
                path: self.path(),
                run_id: old.run_id,
            });
        }
        let file = JournalFile {
            version: JOURNAL_VERSION,
            run_id: run_id.into(),
            started,
            steps: Vec::new(),
        };
        self.write(&file)?;
        self.current = Some(file);
        Ok(())
    }

    /// Adopts the run on disk (after a restart) so that recovery steps can be recorded.
    pub fn resume(&mut self) -> Result<Option<JournalState>, StateError> {
        self.current = self.read()?;
        Ok(self.current.as_ref().map(JournalState::from_file))
    }

    /// Mounts the adopted (or begun) run still owes a thaw, in thaw order; see [`thaw_owed`].
    pub fn thaw_owed(&self) -> Vec<String> {
        self.current.as_ref().map(thaw_owed).unwrap_or_default()
    }

    /// [`Journal::thaw_owed`] of the journal on disk (for `status`).
    pub fn load_thaw_owed(&self) -> Result<Vec<String>, StateError> {
        Ok(self.read()?.as_ref().map(thaw_owed).unwrap_or_default())
    }

    /// Appends a step and writes the journal atomically before returning.
    pub fn record(&mut self, step: JournalStep) -> Result<(), StateError> {
        let mut file = self.current.clone().ok_or(StateError::JournalNotBegun)?;
        file.steps.push(step);
        self.write(&file)?;
        self.current = Some(file);
        Ok(())
    }

    /// Removes the journal (the run is over and recorded in the state).
    pub fn clear(&mut self) -> Result<(), StateError> {
        let path = self.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io("cannot remove", &path, e)),
        }
        self.current = None;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StateError::io("cannot fsync directory", &self.dir, e))
    }
}
