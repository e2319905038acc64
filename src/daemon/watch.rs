//! Noticing, without polling, that another process (a manual `backup-now`, `status`) changed the
//! state directory: an inotify watch on the directory for `state.json` being replaced (the
//! atomic rename lands as `IN_MOVED_TO`) and for `run.lock` being modified (`IN_MODIFY`: the
//! holder writes its info when a run starts and truncates the file when it ends). A failed,
//! busy `try_lock` only reads the lock file, so probing it does not wake the prober.
//!
//! Invariants: an idle daemon wakes only when one of those files changes; reading events is
//! cancel-safe (a cancelled wait leaves the events in the kernel queue); event parsing is pure
//! ([`parse_events`]) and tolerant of a truncated buffer.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::state::{LOCK_FILE, STATE_FILE};

/// Which watched files changed in one batch of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub state: bool,
    pub lock: bool,
}

impl Changes {
    pub fn any(self) -> bool {
        self.state || self.lock
    }
}

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

/// Parses a buffer of `struct inotify_event` records (`wd`, `mask`, `cookie`, `len`, then `len`
/// bytes of NUL-padded name) into the files of interest.
pub fn parse_events(buf: &[u8]) -> Changes {
    let mut out = Changes::default();
    let mut rest = buf;
    while rest.len() >= EVENT_HEADER {
        let len = u32::from_ne_bytes([rest[12], rest[13], rest[14], rest[15]]) as usize;
        let Some(name) = rest.get(EVENT_HEADER..EVENT_HEADER + len) else {
            break;
        };
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        if name == STATE_FILE.as_bytes() {
            out.state = true;
        } else if name == LOCK_FILE.as_bytes() {
            out.lock = true;
        }
        rest = &rest[EVENT_HEADER + len..];
    }
    out
}

/// An inotify watch on the state directory.
pub struct DirWatch {
    fd: AsyncFd<OwnedFd>,
}

impl DirWatch {
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        // SAFETY: plain syscall; the returned descriptor is checked and then owned.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mask = libc::IN_MOVED_TO | libc::IN_MODIFY;
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor is owned by the `OwnedFd` moved into the `AsyncFd`; nothing
        // closes or replaces it while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(DirWatch { fd })
    }

    /// Waits for the next batch of events that touches a watched file.
    pub async fn changed(&self) -> io::Result<Changes> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => {
                    let c = parse_events(&buf[..n]);
                    if c.any() {
                        return Ok(c);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, pad: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&1i32.to_ne_bytes());
        v.extend_from_slice(&(libc::IN_MOVED_TO).to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&((name.len() + pad) as u32).to_ne_bytes());
        v.extend_from_slice(name.as_bytes());
        v.extend(std::iter::repeat_n(0u8, pad));
        v
    }

    #[test]
    fn parses_names_and_ignores_temp_files() {
        let mut buf = event(".state.json.tmp.42", 6);
        assert_eq!(parse_events(&buf), Changes::default());
        buf.extend(event("state.json", 6));
        assert_eq!(
            parse_events(&buf),
            Changes {
                state: true,
                lock: false
            }
        );
        buf.extend(event("run.lock", 8));
        assert_eq!(
            parse_events(&buf),
            Changes {
                state: true,
                lock: true
            }
        );
        // A truncated trailing record is ignored, not a panic.
        let mut cut = event("run.lock", 8);
        cut.truncate(20);
        assert_eq!(parse_events(&cut), Changes::default());
    }

    #[tokio::test]
    async fn sees_an_atomic_replace_of_the_state_file() {
        let dir = std::env::temp_dir().join(format!("felhom-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = DirWatch::new(&dir).unwrap();
        std::fs::write(dir.join("other"), "x").unwrap();
        crate::state::atomic_write(&dir, STATE_FILE, b"{}").unwrap();
        let c = w.changed().await.unwrap();
        assert!(c.state, "{c:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
