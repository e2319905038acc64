//! `quiesce.fsfreeze` end to end on a real loop-mounted ext4 (root only): frozen during the
//! window and thawed at the consistency point; the watchdog thawing at max-freeze; SIGKILL while
//! frozen and the next start thawing first; SIGTERM while frozen thawing before the post hooks
//! and the exit; someone else's freeze (EBUSY) left alone; the qemu
//! guest-agent skip; the load-time refusals. Without root or a loop device every test prints a
//! loud SKIP line and returns. A freeze outlives its process, so [`LoopFs`] thaws, unmounts and
//! detaches in `Drop` whatever happened.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

fn ioctl(mount: &Path, req: libc::c_ulong) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mount.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path; the fd is closed below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW on our own fd.
    let r = unsafe { libc::ioctl(fd, req as _, &mut arg) };
    let e = std::io::Error::last_os_error();
    // SAFETY: opened above.
    unsafe { libc::close(fd) };
    if r < 0 { Err(e) } else { Ok(()) }
}

/// A 64 MiB ext4 on a loop device, mounted for one test.
struct LoopFs {
    dir: PathBuf,
    mnt: PathBuf,
    dev: String,
    mounted: bool,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl LoopFs {
    fn setup(test: &str) -> Option<LoopFs> {
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: fsfreeze tests need root (loop devices, mount, FIFREEZE)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "felhom-fsfreeze-{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let img = dir.join("fs.img");
        let made = (|| -> Result<LoopFs, String> {
            let img_s = img.to_str().unwrap();
            sh("truncate", &["-s", "64M", img_s])?;
            sh("mkfs.ext4", &["-q", "-F", img_s])?;
            let dev = sh("losetup", &["--find", "--show", img_s])?;
            let mut fs = LoopFs {
                dir: dir.clone(),
                mnt: mnt.clone(),
                dev,
                mounted: false,
            };
            sh("mount", &[fs.dev.as_str(), mnt.to_str().unwrap()])?;
            fs.mounted = true;
            Ok(fs)
        })();
        match made {
            Ok(fs) => Some(fs),
            Err(e) => {
                eprintln!("SKIP {test}: cannot set up a loop-mounted ext4: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    fn mnt_str(&self) -> String {
        self.mnt.display().to_string()
    }

    /// Probe: FIFREEZE → EBUSY means frozen; success means it was not (thawed again at once).
    fn is_frozen(&self) -> bool {
        match ioctl(&self.mnt, FIFREEZE) {
            Ok(()) => {
                ioctl(&self.mnt, FITHAW).expect("thaw after probe");
                false
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => true,
            Err(e) => panic!("FIFREEZE probe on {}: {e}", self.mnt.display()),
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = ioctl(&self.mnt, FITHAW);
        if self.mounted {
            let _ = sh("umount", &[self.mnt.to_str().unwrap()]);
        }
        let _ = sh("losetup", &["-d", self.dev.as_str()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The quiesce section freezing `fs`.
fn quiesce(fs: &LoopFs, extra: &str) -> String {
    format!("\n[quiesce]\nfsfreeze = [\"{}\"]\n{extra}\n", fs.mnt_str())
}

/// Scenario with the consistency point (and the end) far away: the test moves the clock.
fn slow(s: String) -> String {
    s.replace("consistency-point = 2.0", "consistency-point = 600.0")
        .replace("duration = 20.0", "duration = 1200.0")
}

async fn wait_journal(env: &Env, needle: &str) {
    let path = env.dir.join("state/journal.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = std::fs::read_to_string(&path).unwrap_or_default();
        if j.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "journal never showed {needle}: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Moves the simulated clock past the task's end — once the vzdump task exists: the freeze comes
/// before the POST, so "frozen" in the journal does not mean the task has started yet.
async fn finish_task(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.posts("/nodes/{node}/vzdump").is_empty() {
        assert!(Instant::now() < deadline, "vzdump was never requested");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut w = env.sim.world();
    w.clock.advance(1300.0);
    w.tick();
}

async fn wait_child(child: std::process::Child) -> (i32, serde_json::Value, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let j = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), j, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lxc_backup_freezes_during_the_window_and_thaws_at_the_consistency_point() {
    let Some(fs) = LoopFs::setup("window") else {
        return;
    };
    let env = Env::start(Guest::Lxc103, 1.0, slow).await;
    env.write_config(
        &env.config_text("felhom103@pve!agent", &quiesce(&fs, "max-freeze = \"60s\"")),
    );
    let child = env.spawn(&["backup-now", "--json"]);
    wait_journal(&env, "\"step\": \"frozen\"").await;
    assert!(fs.is_frozen(), "frozen during the window");
    let journal = std::fs::read_to_string(env.dir.join("state/journal.json")).unwrap();
    assert!(
        journal.contains("\"step\": \"freeze-planned\"") && journal.contains(&fs.mnt_str()),
        "{journal}"
    );
    finish_task(&env).await;
    let (code, j, stderr) = wait_child(child).await;
    assert_eq!(code, 0, "{j}\n{stderr}");
    assert_eq!(j["result"], "ok", "{j}");
    assert_eq!(j["fsfreeze"]["frozen"], serde_json::json!([fs.mnt_str()]));
    assert_eq!(j["fsfreeze"]["already_frozen"], serde_json::json!([]));
    assert_eq!(j["fsfreeze"]["cut_short"], false);
    assert!(j["fsfreeze"]["frozen_seconds"].as_f64().unwrap() > 0.0);
    assert!(!fs.is_frozen(), "thawed after the run");
    assert_eq!(
        env.state()["last_fsfreeze"]["frozen"],
        j["fsfreeze"]["frozen"]
    );
    assert!(
        stderr.contains("PVE also pauses the whole container"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_thaws_at_max_freeze_when_the_consistency_point_never_comes() {
    let Some(fs) = LoopFs::setup("watchdog") else {
        return;
    };
    let env = Env::start(Guest::Lxc103, 1.0, slow).await;
    env.write_config(&env.config_text("felhom103@pve!agent", &quiesce(&fs, "max-freeze = \"1s\"")));
    let child = env.spawn(&["backup-now", "--json"]);
    wait_journal(&env, "\"step\": \"frozen\"").await;
    let frozen_seen = Instant::now();
    assert!(fs.is_frozen());
    // The consistency point is 600 simulated seconds away; the watchdog must thaw at ~1 s.
    let deadline = frozen_seen + Duration::from_secs(10);
    while fs.is_frozen() {
        assert!(Instant::now() < deadline, "the watchdog never thawed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finish_task(&env).await;
    let (code, j, stderr) = wait_child(child).await;
    assert_eq!(code, 0, "{j}\n{stderr}");
    assert_eq!(j["result"], "warnings", "{j}");
    assert_eq!(j["fsfreeze"]["cut_short"], true, "{j}");
    let err = j["error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!(
            "fsfreeze: the watchdog thawed {} after quiesce.max-freeze (1s)",
            fs.mnt_str()
        )),
        "{err}"
    );
    assert!(stderr.contains("the watchdog thawed"), "{stderr}");
    let st = env.state();
    assert_eq!(st["runs"][0]["result"], "warnings");
    assert_eq!(st["last_fsfreeze"]["cut_short"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_frozen_leaves_it_frozen_and_the_next_start_thaws_it_first() {
    let Some(fs) = LoopFs::setup("sigkill") else {
        return;
    };
    let env = Env::start(Guest::Lxc103, 1.0, slow).await;
    env.write_config(
        &env.config_text("felhom103@pve!agent", &quiesce(&fs, "max-freeze = \"60s\"")),
    );
    let mut child = env.spawn(&["backup-now", "--json"]);
    wait_journal(&env, "\"step\": \"frozen\"").await;
    // Frozen, and the task is running (its consistency point is far away).
    wait_journal(&env, "\"step\": \"upid-received\"").await;
    child.kill().unwrap(); // SIGKILL: the watchdog thread dies too
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fs.is_frozen(), "a freeze outlives the process that made it");
    finish_task(&env).await;
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    let repaired: Vec<&str> = j["repaired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        repaired[0],
        format!(
            "thawed filesystems frozen by an interrupted run: {} thawed",
            fs.mnt_str()
        ),
        "the thaw is the first repair: {repaired:?}"
    );
    assert!(
        repaired.iter().any(|n| n.contains("reattached")),
        "{repaired:?}"
    );
    assert!(!fs.is_frozen(), "thawed by the restart");
    let first_repair_log = r
        .stderr
        .lines()
        .position(|l| l.contains("start-up repair: fsfreeze left by an interrupted run"))
        .expect("logged");
    let reattach_log = r.stderr.lines().position(|l| l.contains("reattached"));
    assert!(
        reattach_log.is_none_or(|p| p > first_repair_log),
        "{}",
        r.stderr
    );
    assert!(!env.dir.join("state/journal.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_frozen_thaws_before_the_post_hooks_and_before_exiting() {
    let Some(fs) = LoopFs::setup("sigterm") else {
        return;
    };
    let env = Env::start(Guest::Lxc103, 1.0, slow).await;
    let extra = format!(
        "{}{}",
        env.hook("app"),
        quiesce(&fs, "max-freeze = \"60s\"")
    );
    env.write_config(&env.config_text("felhom103@pve!agent", &extra));
    let child = env.spawn(&["backup-now", "--json"]);
    wait_journal(&env, "\"step\": \"frozen\"").await;
    wait_journal(&env, "\"step\": \"upid-received\"").await;
    assert!(fs.is_frozen(), "frozen while the task runs");
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, j, stderr) = wait_child(child).await;
    // Right after the exit: FIFREEZE by us succeeds (then thaws), so the agent had thawed.
    assert!(
        !fs.is_frozen(),
        "the agent exited with the filesystem frozen"
    );
    assert_eq!(code, 1, "{j}\n{stderr}");
    assert!(
        j["error"].as_str().unwrap().starts_with("interrupted; "),
        "{j}"
    );
    assert_eq!(j["fsfreeze"]["frozen"], serde_json::json!([fs.mnt_str()]));
    assert_eq!(j["fsfreeze"]["cut_short"], false, "{j}");
    assert!(
        env.marker().iter().any(|l| l.starts_with("app-post ")),
        "{:?}",
        env.marker()
    );
    // The journal (kept: the task is pending) says thawed by the release, before the post ran.
    let journal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.join("state/journal.json")).unwrap())
            .unwrap();
    let steps: Vec<&str> = journal["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    let thawed = steps.iter().position(|s| *s == "thawed").expect("thawed");
    let post = steps
        .iter()
        .position(|s| *s == "post-ran")
        .expect("post-ran");
    assert!(thawed < post, "{steps:?}");
    assert_eq!(journal["steps"][thawed]["by"], "release");
    assert_eq!(
        journal["steps"][thawed]["mounts"],
        serde_json::json!([fs.mnt_str()])
    );
    assert_eq!(env.state()["pending"]["reason"], "agent stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_frozen_by_someone_else_is_recorded_and_not_thawed() {
    let Some(fs) = LoopFs::setup("ebusy") else {
        return;
    };
    let env = Env::start(Guest::Lxc103, 20.0, |s| s).await;
    env.write_config(&env.config_text("felhom103@pve!agent", &quiesce(&fs, "")));
    ioctl(&fs.mnt, FIFREEZE).expect("freeze it ourselves first");
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["fsfreeze"]["frozen"], serde_json::json!([]));
    assert_eq!(
        j["fsfreeze"]["already_frozen"],
        serde_json::json!([fs.mnt_str()])
    );
    assert!(
        r.stderr
            .contains("already frozen by someone else (EBUSY); recorded, and it will not be thawed by the agent"),
        "{}",
        r.stderr
    );
    assert!(
        fs.is_frozen(),
        "our freeze is still in place (teardown thaws it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_with_a_freezing_guest_agent_is_skipped_unless_forced() {
    let Some(fs) = LoopFs::setup("qemu-skip") else {
        return;
    };
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.write_config(&env.config_text("felhom101@pve!agent", &quiesce(&fs, "")));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(
        j["fsfreeze"]["skipped"],
        "PVE freezes the guest's filesystems through the QEMU guest agent (agent enabled, \
         freeze-fs on); set quiesce.fsfreeze-force = true to freeze anyway"
    );
    assert!(
        r.stderr.contains("fsfreeze skipped: PVE freezes"),
        "{}",
        r.stderr
    );
    assert_eq!(j["fsfreeze"]["frozen"], serde_json::json!([]));
    // Forced: frozen and thawed.
    env.write_config(&env.config_text(
        "felhom101@pve!agent",
        &quiesce(&fs, "fsfreeze-force = true"),
    ));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert!(j["fsfreeze"]["skipped"].is_null(), "{j}");
    assert_eq!(j["fsfreeze"]["frozen"], serde_json::json!([fs.mnt_str()]));
    assert!(!fs.is_frozen());
}

fn location(text: &str, needle: &str) -> (usize, usize) {
    let off = text.find(needle).expect("needle");
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_refuses_root_and_the_state_directory_filesystem() {
    let env = Env::start(Guest::Lxc103, 20.0, |s| s).await;
    let cfg_path = env.dir.join("config.toml");
    let text = env.config_text("felhom103@pve!agent", "\n[quiesce]\nfsfreeze = [\"/\"]\n");
    env.write_config(&text);
    let r = env.run(&["check-config"]).await;
    let (l, c) = location(&text, "\"/\"]");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "felhom-agent: {}:{l}:{c}: quiesce.fsfreeze: refusing to freeze \"/\": the root \
             filesystem holds the agent's own files, logs and binaries, and freezing it would \
             hang the guest",
            cfg_path.display()
        )
    );
    let Some(fs) = LoopFs::setup("config") else {
        return;
    };
    let state = format!("{}/state", fs.mnt_str());
    let text = env
        .config_text("felhom103@pve!agent", &quiesce(&fs, ""))
        .replace(&format!("{}/state", env.dir.display()), &state);
    env.write_config(&text);
    let r = env.run(&["check-config"]).await;
    let (l, c) = location(&text, &format!("\"{}\"]", fs.mnt_str()));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "felhom-agent: {}:{l}:{c}: quiesce.fsfreeze: refusing to freeze {m}: it holds the \
             state directory {state} (the agent writes there while the filesystem would be \
             frozen); move the state directory to another filesystem",
            cfg_path.display(),
            m = fs.mnt_str()
        )
    );
    // A path inside the mount is not a mount point.
    let inner = format!("{}/lost+found", fs.mnt_str());
    let text = env.config_text(
        "felhom103@pve!agent",
        &format!("\n[quiesce]\nfsfreeze = [\"{inner}\"]\n"),
    );
    env.write_config(&text);
    let r = env.run(&["check-config"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "quiesce.fsfreeze: {inner} is not a mount point; it is on the filesystem mounted at {}",
            fs.mnt_str()
        )),
        "{}",
        r.stderr
    );
}

/// Set (to a mount point) only in the child process [`a_panic_while_frozen_thaws_before_the_process_dies`] spawns.
const PANIC_CHILD_MOUNT: &str = "FELHOM_TEST_PANIC_CHILD_MOUNT";

/// The child side of [`a_panic_while_frozen_thaws_before_the_process_dies`] (the same test,
/// re-run by itself with [`PANIC_CHILD_MOUNT`] set). Freezes the mount through a
/// `FreezeSession`, then panics inside an `extern "C"` function: unwinding stops at that
/// boundary and the process aborts — as with `panic = "abort"` — so the session is never
/// dropped and its watchdog dies with the process; only the panic hook runs.
fn panic_child_freezes_and_aborts(mount: &std::ffi::OsStr) {
    let session =
        felhom_agent::quiesce::fsfreeze_sys::FreezeSession::start(Duration::from_secs(120))
            .unwrap();
    let r = session.freeze(Path::new(mount));
    assert_eq!(r, felhom_agent::quiesce::fsfreeze_sys::FreezeResult::Frozen);
    extern "C" fn boom() {
        panic!("test panic while frozen");
    }
    boom();
    drop(session);
}

#[test]
fn a_panic_while_frozen_thaws_before_the_process_dies() {
    if let Some(mount) = std::env::var_os(PANIC_CHILD_MOUNT) {
        return panic_child_freezes_and_aborts(&mount);
    }
    let Some(fs) = LoopFs::setup("panic_while_frozen") else {
        return;
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "fsfreeze::a_panic_while_frozen_thaws_before_the_process_dies",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD_MOUNT, &fs.mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    // Aborted: no unwinding reached the session's Drop.
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(stderr.contains("test panic while frozen"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fsfreeze: panic while frozen: thawing {}: thawed",
            fs.mnt.display()
        )),
        "{stderr}"
    );
    // The hook ran before the previous one (the panic message comes after the thaw).
    assert!(
        stderr.find("fsfreeze: panic while frozen").unwrap()
            < stderr.find("test panic while frozen").unwrap(),
        "{stderr}"
    );
    // Thawed: our own FIFREEZE succeeds (EBUSY if the child had left it frozen).
    ioctl(&fs.mnt, FIFREEZE).expect("the filesystem was left frozen");
    ioctl(&fs.mnt, FITHAW).unwrap();
}
