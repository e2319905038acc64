//! The fsfreeze system side: FIFREEZE/FITHAW ioctls, reading `/proc/self/mountinfo`, the
//! load-time refusal check, and the thaw watchdog.
//!
//! Invariants:
//! * every ioctl opens a fresh `O_RDONLY|O_DIRECTORY` fd of the mount point and closes it;
//! * a [`FreezeSession`] starts its watchdog (a dedicated `std::thread`, independent of the async
//!   runtime) *before* the first FIFREEZE; the watchdog thaws every mount the session froze once
//!   the deadline passes, unless [`FreezeSession::thaw_all`] stopped it first;
//! * a mount is only ever added to the session's "we froze it" list after FIFREEZE succeeded;
//!   FIFREEZE runs *outside* the session lock (it flushes first and may block for long, and the
//!   watchdog must still thaw the mounts frozen before at the deadline); a FIFREEZE that
//!   completes after the watchdog fired is thawed again at once, so once the watchdog has fired
//!   nothing stays frozen; EBUSY (someone else froze it) is reported and never thawed by us;
//! * EINVAL on thaw means "not frozen" (already thawed): fine, and reported as such;
//! * every mount a live session froze is also in a process-wide registry (added after FIFREEZE
//!   succeeded, removed after its thaw); the first [`FreezeSession::start`] installs a panic
//!   hook (chained before the previous one) that thaws every registered mount. With
//!   `panic = "abort"` a panic kills the watchdog thread with the process, but the hook still
//!   runs first, so a panic never leaves a filesystem frozen. A panic the program survives (a
//!   tokio task's) thaws early too: the window gets shorter, never longer.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::freeze::{MountEntry, parse_mountinfo, refusal};
use crate::config::{Config, ConfigError};

/// `_IOWR('X', 119, int)`.
pub const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
pub const FITHAW: libc::c_ulong = 0xC004_5878;

/// How one FIFREEZE ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeResult {
    Frozen,
    /// EBUSY: already frozen by someone else (e.g. PVE's guest agent).
    AlreadyFrozen,
    Failed(String),
}

/// How one FITHAW ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThawResult {
    Thawed,
    /// EINVAL: it was not frozen.
    NotFrozen,
    Failed(String),
}

impl std::fmt::Display for ThawResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThawResult::Thawed => f.write_str("thawed"),
            ThawResult::NotFrozen => f.write_str("was not frozen (already thawed)"),
            ThawResult::Failed(e) => write!(f, "thaw failed: {e}"),
        }
    }
}

fn ioctl_on(mount: &Path, request: libc::c_ulong) -> io::Result<()> {
    let c = CString::new(mount.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; the fd is closed below on every path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW take an int argument (ignored); fd is ours.
    let r = unsafe { libc::ioctl(fd, request as _, &mut arg) };
    let err = io::Error::last_os_error();
    // SAFETY: fd was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    if r < 0 { Err(err) } else { Ok(()) }
}

/// FIFREEZE on `mount` (blocking: it flushes dirty data first).
pub fn freeze(mount: &Path) -> FreezeResult {
    match ioctl_on(mount, FIFREEZE) {
        Ok(()) => FreezeResult::Frozen,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => FreezeResult::AlreadyFrozen,
        Err(e) => FreezeResult::Failed(describe(&e)),
    }
}

/// FITHAW on `mount`.
pub fn thaw(mount: &Path) -> ThawResult {
    match ioctl_on(mount, FITHAW) {
        Ok(()) => ThawResult::Thawed,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => ThawResult::NotFrozen,
        Err(e) => ThawResult::Failed(describe(&e)),
    }
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!("{e} (FIFREEZE needs CAP_SYS_ADMIN)"),
        Some(libc::EOPNOTSUPP) => format!("{e} (this filesystem type cannot be frozen)"),
        _ => e.to_string(),
    }
}

/// The current mounts of this process.
pub fn read_mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// `path` canonicalised, or its nearest existing ancestor canonicalised with the rest appended
/// (the state dir may not exist yet).
pub fn canonical_or_ancestor(path: &Path) -> PathBuf {
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            out.extend(rest.iter().rev());
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(p), Some(n)) => {
                rest.push(n);
                cur = p;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The load-time check of `quiesce.fsfreeze` against the real mounts: every entry must be a
/// mount point that is neither `/` nor the filesystem of the state directory (which holds the
/// journal too). The error names the key, its location and the path.
pub fn check_config(cfg: &Config, state_dir: &Path) -> Result<(), ConfigError> {
    if cfg.quiesce.fsfreeze.is_empty() {
        return Ok(());
    }
    let mounts = read_mounts().map_err(|e| ConfigError::Io {
        path: PathBuf::from("/proc/self/mountinfo"),
        source: e,
    })?;
    let protected = [("state directory", canonical_or_ancestor(state_dir))];
    for e in &cfg.quiesce.fsfreeze {
        let canon = canonical_or_ancestor(&e.path);
        // Refuse the literal "/" before symlink resolution hides it.
        let why = refusal(&e.path, &mounts, &protected)
            .filter(|_| e.path == Path::new("/"))
            .or_else(|| refusal(&canon, &mounts, &protected));
        if let Some(why) = why {
            return Err(ConfigError::Invalid {
                path: e.file.clone(),
                key: "quiesce.fsfreeze".into(),
                line: e.line,
                column: e.column,
                message: why,
            });
        }
    }
    Ok(())
}

/// Mounts frozen by any live session of this process, for the panic hook.
static REGISTRY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HOOK: std::sync::Once = std::sync::Once::new();

fn registry() -> MutexGuard<'static, Vec<PathBuf>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(mount: &Path) {
    registry().push(mount.to_path_buf());
}

/// Removes one entry per mount (a mount is in the registry at most once: a second FIFREEZE of
/// a frozen mount fails with EBUSY).
fn unregister(mounts: &[PathBuf]) {
    let mut r = registry();
    for m in mounts {
        if let Some(i) = r.iter().position(|x| x == m) {
            r.remove(i);
        }
    }
}

/// The panic hook's work: thaws every registered mount, reverse freeze order. The registry
/// lock is only ever held for a push or a removal (nothing in there panics), so a held lock is
/// another thread's and frees at once; it is still tried for a bounded time only, so the hook
/// can never hang a dying process.
fn thaw_registered() {
    let deadline = Instant::now() + Duration::from_millis(200);
    let mounts = loop {
        match REGISTRY.try_lock() {
            Ok(g) => break g.clone(),
            Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner().clone(),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                eprintln!("fsfreeze: panic while the freeze registry is busy; not thawed here");
                return;
            }
        }
    };
    for m in mounts.iter().rev() {
        // stderr directly: the tracing subscriber may be what panicked.
        eprintln!(
            "fsfreeze: panic while frozen: thawing {}: {}",
            m.display(),
            thaw(m)
        );
    }
}

/// Installs (once per process) the panic hook that thaws what live sessions froze, before the
/// previous hook runs.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            thaw_registered();
            previous(info);
        }));
    });
}

/// The outcome of a session once it is thawed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThawReport {
    /// `(mount, result)` in thaw order.
    pub thawed: Vec<(PathBuf, ThawResult)>,
    /// The watchdog thawed (the deadline passed before the release).
    pub by_watchdog: bool,
    /// From the first successful FIFREEZE to the thaw.
    pub frozen_for: Option<Duration>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Mounts we froze, in freeze order.
    frozen: Vec<PathBuf>,
    first_frozen: Option<Instant>,
    stop: bool,
    /// Tests: fire the watchdog now instead of at the deadline.
    expire: bool,
    /// Set once the session thawed (by the watchdog or by `thaw_all`).
    report: Option<ThawReport>,
}

struct Shared {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Thaws `inner.frozen` in reverse freeze order and records the report.
fn thaw_locked(inner: &mut Inner, by_watchdog: bool) {
    if inner.report.is_some() {
        return;
    }
    let thawed = inner
        .frozen
        .iter()
        .rev()
        .map(|m| (m.clone(), thaw(m)))
        .collect();
    unregister(&inner.frozen);
    inner.report = Some(ThawReport {
        thawed,
        by_watchdog,
        frozen_for: inner.first_frozen.map(|t| t.elapsed()),
    });
}

/// One run's freezes, guarded by the watchdog thread.
pub struct FreezeSession {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for FreezeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreezeSession").finish_non_exhaustive()
    }
}

impl FreezeSession {
    /// Starts the watchdog: `max_freeze` from now, it thaws whatever the session froze.
    /// The first session of the process also installs the thaw-on-panic hook.
    pub fn start(max_freeze: Duration) -> io::Result<FreezeSession> {
        install_panic_hook();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            cv: Condvar::new(),
        });
        let deadline = Instant::now() + max_freeze;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fsfreeze-watchdog".into())
            .spawn(move || {
                let mut g = s.lock();
                loop {
                    if g.stop {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline || g.expire {
                        break;
                    }
                    g =
                        s.cv.wait_timeout(g, deadline - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                }
                if !g.frozen.is_empty() {
                    thaw_locked(&mut g, true);
                    // stderr, not a file: nothing may be written to disk while frozen.
                    tracing::warn!(
                        "fsfreeze: max-freeze passed before the release; the watchdog thawed {:?}",
                        g.frozen
                    );
                } else {
                    g.report = Some(ThawReport {
                        by_watchdog: true,
                        ..ThawReport::default()
                    });
                }
            })?;
        Ok(FreezeSession {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// FIFREEZE `mount` (blocking). Refused once the session has thawed (watchdog fired).
    pub fn freeze(&self, mount: &Path) -> FreezeResult {
        self.freeze_with(mount, freeze)
    }

    /// [`FreezeSession::freeze`] with the ioctl given. The ioctl runs *without* the session
    /// lock: FIFREEZE first flushes dirty data and can take long, and the watchdog must be able
    /// to thaw the mounts frozen before meanwhile. A mount whose FIFREEZE completes after the
    /// watchdog fired is thawed again at once and reported as a failure.
    fn freeze_with(&self, mount: &Path, op: impl FnOnce(&Path) -> FreezeResult) -> FreezeResult {
        if self.shared.lock().report.is_some() {
            return FreezeResult::Failed("max-freeze passed before this mount was frozen".into());
        }
        let r = op(mount);
        let mut g = self.shared.lock();
        if r != FreezeResult::Frozen {
            return r;
        }
        if let Some(report) = g.report.as_mut() {
            let t = thaw(mount);
            report.thawed.push((mount.to_path_buf(), t));
            return FreezeResult::Failed(
                "max-freeze passed while this mount was being frozen; thawed again".into(),
            );
        }
        register(mount);
        g.frozen.push(mount.to_path_buf());
        g.first_frozen.get_or_insert_with(Instant::now);
        r
    }

    /// Whether the watchdog has already thawed.
    pub fn cut_short(&self) -> bool {
        self.shared
            .lock()
            .report
            .as_ref()
            .is_some_and(|r| r.by_watchdog)
    }

    /// Thaws every mount we froze (reverse freeze order), stops the watchdog and returns what
    /// happened — including a thaw the watchdog already did. Idempotent.
    pub fn thaw_all(&self) -> ThawReport {
        let report = {
            let mut g = self.shared.lock();
            g.stop = true;
            thaw_locked(&mut g, false);
            self.shared.cv.notify_all();
            g.report.clone().unwrap_or_default()
        };
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        report
    }
}

#[cfg(test)]
impl FreezeSession {
    /// Makes the watchdog fire now; `false` when the session lock is held (it could not).
    fn try_expire(&self) -> bool {
        match self.shared.inner.try_lock() {
            Ok(mut g) => {
                g.expire = true;
                self.shared.cv.notify_all();
                true
            }
            Err(_) => false,
        }
    }

    fn watchdog_finished(&self) -> bool {
        self.thread
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }
}

impl Drop for FreezeSession {
    fn drop(&mut self) {
        self.thaw_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFREEZE that blocks (flushing) must not keep the watchdog from thawing the mounts
    /// frozen before it; the late one is thawed again at once.
    #[test]
    fn the_watchdog_thaws_while_a_later_fifreeze_is_still_running() {
        let dir = std::env::temp_dir();
        let a = dir.join("felhom-fsfreeze-unit-a");
        let b = dir.join("felhom-fsfreeze-unit-b");
        let s = FreezeSession::start(Duration::from_secs(3600)).unwrap();
        assert_eq!(
            s.freeze_with(&a, |_| FreezeResult::Frozen),
            FreezeResult::Frozen
        );
        let r = s.freeze_with(&b, |_| {
            // While this FIFREEZE "flushes", the deadline passes.
            assert!(s.try_expire(), "the session lock is held during FIFREEZE");
            let t0 = Instant::now();
            while !s.watchdog_finished() {
                assert!(t0.elapsed() < Duration::from_secs(10), "watchdog blocked");
                std::thread::yield_now();
            }
            FreezeResult::Frozen
        });
        assert_eq!(
            r,
            FreezeResult::Failed(
                "max-freeze passed while this mount was being frozen; thawed again".into()
            )
        );
        assert!(s.cut_short());
        let report = s.thaw_all();
        assert!(report.by_watchdog);
        let mounts: Vec<&Path> = report.thawed.iter().map(|(m, _)| m.as_path()).collect();
        assert_eq!(mounts, [a.as_path(), b.as_path()]);
        assert_eq!(
            s.freeze_with(&a, |_| FreezeResult::Frozen),
            FreezeResult::Failed("max-freeze passed before this mount was frozen".into())
        );
    }
}
