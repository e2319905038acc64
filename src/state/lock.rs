//! The exclusive run lock: `flock(LOCK_EX|LOCK_NB)` on `<statedir>/run.lock`.
//!
//! Invariants: at most one [`RunLock`] exists per lock file across all processes (flock locks
//! belong to the open file description, so two opens in one process exclude each other too);
//! the lock is released when the `RunLock` is dropped or the process dies; the descriptor is
//! close-on-exec so hooks and other children never inherit it. While held, the file contains the
//! holder's [`LockInfo`] as JSON so a second process can say who is running; it is emptied on
//! release.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateError;

/// Who holds the run lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    /// `backup-now`, `daemon`, …
    pub what: String,
    /// Epoch seconds.
    pub started: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
}

impl LockInfo {
    /// Info for the current process.
    pub fn current(what: impl Into<String>) -> LockInfo {
        LockInfo {
            pid: std::process::id(),
            what: what.into(),
            started: super::epoch_now(),
            upid: None,
        }
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started = jiff::Timestamp::from_second(self.started)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| self.started.to_string());
        write!(f, "{}, pid {}, started {started}", self.what, self.pid)?;
        if let Some(upid) = &self.upid {
            write!(f, ", UPID {upid}")?;
        }
        Ok(())
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Held by someone else. `None` when the holder has not written its info yet (or is not a
    /// felhom-agent).
    #[error("a backup is already running ({})", match .0 {
        Some(info) => info.to_string(),
        None => "holder unknown".to_string(),
    })]
    Busy(Option<LockInfo>),
    #[error(transparent)]
    Io(#[from] StateError),
}

/// The held run lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    info: LockInfo,
}

impl RunLock {
    pub(super) fn try_acquire(path: &Path, holder: &LockInfo) -> Result<RunLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StateError::io("cannot open lock file", path, e))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    let mut content = String::new();
                    let info = file
                        .read_to_string(&mut content)
                        .ok()
                        .and_then(|_| serde_json::from_str::<LockInfo>(content.trim()).ok());
                    return Err(LockError::Busy(info));
                }
                _ => return Err(StateError::io("cannot lock", path, err).into()),
            }
        }
        let lock = RunLock {
            file,
            path: path.to_path_buf(),
            info: holder.clone(),
        };
        lock.write_info()?;
        Ok(lock)
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Records the UPID of the task this run started, for others to see.
    pub fn set_upid(&mut self, upid: impl Into<String>) -> Result<(), StateError> {
        self.info.upid = Some(upid.into());
        self.write_info()
    }

    fn write_info(&self) -> Result<(), StateError> {
        let mut json = serde_json::to_vec(&self.info)
            .map_err(|e| StateError::io("cannot serialise", &self.path, io::Error::other(e)))?;
        json.push(b'\n');
        let mut f = &self.file;
        f.set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)))
            .and_then(|_| f.write_all(&json))
            .map_err(|e| StateError::io("cannot write lock file", &self.path, e))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty the info while still holding the lock; closing the file releases it.
        let _ = self.file.set_len(0);
    }
}
