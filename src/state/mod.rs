//! Persisted state of felhom-agent: the state directory, `state.json`, the run lock and the
//! crash journal.
//!
//! Invariants:
//! * every file is replaced atomically ([`atomic_write`]: temp file in the same directory, fsync,
//!   rename, fsync of the directory), so a crash leaves either the old or the new content;
//! * `state.json.prev` always holds the last generation of `state.json` that parsed; a file that
//!   does not parse is never overwritten silently: it is copied to `state.json.bad-<epoch>` and
//!   loading falls back to `.prev` with a warning for the caller to log;
//! * when a write fails (unwritable dir, disk full) the error names the path and the previous
//!   good file is left untouched;
//! * nothing here can hold the API token secret: the types have no field for it.

mod journal;
mod lock;
mod types;

#[cfg(test)]
mod tests;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use journal::{Journal, JournalState, JournalStep, VzdumpRequest};
pub use lock::{LockError, LockInfo, RunLock};
pub use types::{
    FreezeRecord, GuestKind, Identity, MAX_RUNS, PendingTask, RunKind, RunRecord, RunResult,
    STATE_VERSION, State,
};

/// File names inside the state directory.
pub const STATE_FILE: &str = "state.json";
pub const STATE_PREV_FILE: &str = "state.json.prev";
pub const LOCK_FILE: &str = "run.lock";
pub const JOURNAL_FILE: &str = "journal.json";

/// Errors of the state directory. Every variant names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state file {} is unusable ({detail}) and so is its previous generation {} ({prev_detail}); \
         {}move {} aside to start with an empty state (run history and pending-task tracking are lost)",
        path.display(),
        prev.display(),
        bad_copy.as_ref().map(|p| format!("a copy was kept at {}; ", p.display())).unwrap_or_default(),
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        detail: String,
        prev: PathBuf,
        prev_detail: String,
        bad_copy: Option<PathBuf>,
    },
    #[error(
        "{} has version {found}, this felhom-agent understands up to {STATE_VERSION}; \
         refusing to use or overwrite it (upgrade felhom-agent)",
        path.display()
    )]
    TooNew { path: PathBuf, found: u64 },
    #[error(
        "journal {} is unusable ({detail}); a crashed run may still owe post hooks \
         (thaw/resume your services by hand), then delete the file",
        path.display()
    )]
    JournalCorrupt { path: PathBuf, detail: String },
    #[error(
        "journal {} still holds unfinished run {run_id}; recover it (resume) before starting a new run",
        path.display()
    )]
    JournalUnfinished { path: PathBuf, run_id: String },
    #[error("no journal run was begun")]
    JournalNotBegun,
}

impl StateError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StateError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result of [`StateDir::load_state`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedState {
    pub state: State,
    /// Set when the state had to be recovered; the caller logs it.
    pub warning: Option<String>,
}

/// Serialises writers inside this process (the temp file name is per-process).
static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Atomically replaces `dir/name` with `bytes` (mode 0600): writes `.<name>.tmp.<pid>` in `dir`,
/// fsyncs it, renames it over the target and fsyncs the directory. On failure the temp file is
/// removed and the target is untouched; the error names the failing path.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let target = dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StateError::io("cannot create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| StateError::io("cannot write", &tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| StateError::io("cannot replace", &target, e))
    })();
    if let Err(err) = written {
        // Best effort; a directory pre-existing at the temp path is not ours to remove.
        if tmp.symlink_metadata().is_ok_and(|m| m.is_file()) {
            let _ = fs::remove_file(&tmp);
        }
        return Err(err);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io("cannot fsync directory", dir, e))
}

/// The agent's state directory (e.g. `/var/lib/felhom-agent`).
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it (mode 0700) if missing.
    pub fn open(path: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let path = path.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| StateError::io("cannot create state directory", &path, e))?;
        let meta = fs::metadata(&path)
            .map_err(|e| StateError::io("cannot stat state directory", &path, e))?;
        if !meta.is_dir() {
            return Err(StateError::io(
                "state directory is not a directory:",
                &path,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Ok(StateDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The crash journal living in this directory.
    pub fn journal(&self) -> Journal {
        Journal::new(self.path.clone())
    }

    /// Takes the exclusive run lock (non-blocking); see [`RunLock`].
    /// Who holds the run lock right now, read without touching the lock (so a probe never
    /// makes another process's `try_lock` fail): the holder info written into the lock file,
    /// if that process is still alive. `None` when nobody runs.
    pub fn lock_holder(&self) -> Option<LockInfo> {
        let text = std::fs::read_to_string(self.path.join(LOCK_FILE)).ok()?;
        let info: LockInfo = serde_json::from_str(text.trim()).ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(info.pid as libc::pid_t, 0) } == 0;
        alive.then_some(info)
    }

    pub fn try_lock(&self, holder: &LockInfo) -> Result<RunLock, LockError> {
        RunLock::try_acquire(&self.path.join(LOCK_FILE), holder)
    }

    /// Loads `state.json`. A missing file (and no `.prev`) gives the default state. A corrupt
    /// file is copied to `state.json.bad-<epoch>` and `.prev` is used instead, with a warning;
    /// if `.prev` is unusable too, the error says what to do.
    pub fn load_state(&self) -> Result<LoadedState, StateError> {
        let path = self.path.join(STATE_FILE);
        let prev = self.path.join(STATE_PREV_FILE);
        let detail = match read_optional(&path)? {
            Some(bytes) => match parse_state(&path, &bytes)? {
                Ok(state) => {
                    return Ok(LoadedState {
                        state,
                        warning: None,
                    });
                }
                Err(detail) => {
                    let bad = self.keep_bad_copy(&bytes)?;
                    return self.fall_back(&path, &prev, detail, Some(bad));
                }
            },
            None => "file is missing".to_string(),
        };
        if prev.exists() {
            self.fall_back(&path, &prev, detail, None)
        } else {
            Ok(LoadedState {
                state: State::default(),
                warning: None,
            })
        }
    }

    fn fall_back(
        &self,
        path: &Path,
        prev: &Path,
        detail: String,
        bad_copy: Option<PathBuf>,
    ) -> Result<LoadedState, StateError> {
        let prev_result = match read_optional(prev)? {
            Some(bytes) => parse_state(prev, &bytes)?,
            None => Err("file is missing".to_string()),
        };
        match prev_result {
            Ok(state) => Ok(LoadedState {
                state,
                warning: Some(format!(
                    "state file {} is unusable ({detail}); {}continuing with the previous generation {}",
                    path.display(),
                    bad_copy
                        .as_ref()
                        .map(|p| format!("kept a copy at {}; ", p.display()))
                        .unwrap_or_default(),
                    prev.display()
                )),
            }),
            Err(prev_detail) => Err(StateError::Corrupt {
                path: path.to_path_buf(),
                detail,
                prev: prev.to_path_buf(),
                prev_detail,
                bad_copy,
            }),
        }
    }

    fn keep_bad_copy(&self, bytes: &[u8]) -> Result<PathBuf, StateError> {
        let now = epoch_now();
        let mut name = format!("{STATE_FILE}.bad-{now}");
        let mut n = 1;
        while self.path.join(&name).exists() {
            name = format!("{STATE_FILE}.bad-{now}.{n}");
            n += 1;
        }
        atomic_write(&self.path, &name, bytes)?;
        Ok(self.path.join(name))
    }

    /// Saves `state`: the current `state.json`, if it parses, first becomes `state.json.prev`;
    /// then the new content replaces `state.json`. Both steps are atomic. Refuses
    /// ([`StateError::TooNew`]) to replace a file written by a newer version.
    pub fn save_state(&self, state: &State) -> Result<(), StateError> {
        let path = self.path.join(STATE_FILE);
        // A file from a newer version makes this fail (TooNew) instead of being overwritten.
        if let Some(bytes) = read_optional(&path)?
            && parse_state(&path, &bytes)?.is_ok()
        {
            atomic_write(&self.path, STATE_PREV_FILE, &bytes)?;
        }
        let mut json = serde_json::to_vec_pretty(state)
            .map_err(|e| StateError::io("cannot serialise", &path, io::Error::other(e)))?;
        json.push(b'\n');
        atomic_write(&self.path, STATE_FILE, &json)
    }
}

/// Reads a file; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("cannot read", path, e)),
    }
}

/// Outer error: refuse outright (too new). Inner error: unusable, with a reason.
fn parse_state(path: &Path, bytes: &[u8]) -> Result<Result<State, String>, StateError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        version: Option<u64>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { version: None }) => return Ok(Err("no \"version\" field".to_string())),
        Ok(Probe { version: Some(v) }) if v > u64::from(STATE_VERSION) => {
            return Err(StateError::TooNew {
                path: path.to_path_buf(),
                found: v,
            });
        }
        Ok(_) => {}
        Err(e) => return Ok(Err(format!("invalid JSON: {e}"))),
    }
    Ok(serde_json::from_slice::<State>(bytes).map_err(|e| format!("invalid content: {e}")))
}

pub(crate) fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
