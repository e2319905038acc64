use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "felhom-state-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn record(result: RunResult, finished: i64) -> RunRecord {
    RunRecord {
        kind: RunKind::Backup,
        started: finished - 60,
        finished,
        mode: "snapshot".into(),
        upid: None,
        node: None,
        result,
        exitstatus: None,
        warnings: 0,
        quiesce_window_seconds: None,
        error: None,
        log_tail: Vec::new(),
    }
}

fn state_with(finished: i64) -> State {
    let mut s = State::default();
    s.push_run(record(RunResult::Ok, finished));
    s
}

#[test]
fn open_creates_private_directory() {
    let t = TempDir::new("open");
    let p = t.path().join("a/b");
    let dir = StateDir::open(&p).unwrap();
    assert_eq!(dir.path(), p);
    let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // Opening again is fine.
    StateDir::open(&p).unwrap();
}

#[test]
fn atomic_write_replaces_and_leaves_no_temp() {
    let t = TempDir::new("aw");
    atomic_write(t.path(), "f", b"one").unwrap();
    atomic_write(t.path(), "f", b"two").unwrap();
    assert_eq!(fs::read(t.path().join("f")).unwrap(), b"two");
    let mode = fs::metadata(t.path().join("f"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["f".to_string()]);
}

#[test]
fn atomic_write_failure_names_path_and_keeps_target() {
    let t = TempDir::new("awfail");
    atomic_write(t.path(), "f", b"good").unwrap();
    // Make the temp file impossible to create (works even as root).
    let tmp = t.path().join(format!(".f.tmp.{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = atomic_write(t.path(), "f", b"new").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot create {}: Is a directory (os error 21)",
            tmp.display()
        )
    );
    assert_eq!(fs::read(t.path().join("f")).unwrap(), b"good");
    let missing = t.path().join("nope");
    let err = atomic_write(&missing, "f", b"x").unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot create {}/.f.tmp.", missing.display())),
        "{err}"
    );
}

#[test]
fn missing_state_loads_default_without_warning() {
    let t = TempDir::new("missing");
    let dir = StateDir::open(t.path()).unwrap();
    let loaded = dir.load_state().unwrap();
    assert_eq!(loaded.state, State::default());
    assert_eq!(loaded.warning, None);
}

#[test]
fn save_keeps_previous_generation() {
    let t = TempDir::new("save");
    let dir = StateDir::open(t.path()).unwrap();
    dir.save_state(&state_with(100)).unwrap();
    assert!(!t.path().join(STATE_PREV_FILE).exists());
    dir.save_state(&state_with(200)).unwrap();
    let loaded = dir.load_state().unwrap();
    assert_eq!(loaded.state, state_with(200));
    assert_eq!(loaded.warning, None);
    let prev: State =
        serde_json::from_slice(&fs::read(t.path().join(STATE_PREV_FILE)).unwrap()).unwrap();
    assert_eq!(prev, state_with(100));
}

#[test]
fn serialised_format_is_stable() {
    let mut s = State {
        identity: Some(Identity {
            vmid: 101,
            node: "pve1".into(),
            kind: GuestKind::Qemu,
            name: Some("web".into()),
        }),
        ..State::default()
    };
    let mut r = record(RunResult::Warnings, 1000);
    r.upid = Some("UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:".into());
    r.warnings = 2;
    r.quiesce_window_seconds = Some(1.5);
    s.push_run(r);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "version": 1,
            "identity": {"vmid": 101, "node": "pve1", "type": "qemu", "name": "web"},
            "runs": [{
                "kind": "backup", "started": 940, "finished": 1000, "mode": "snapshot",
                "upid": "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:",
                "result": "warnings", "warnings": 2, "quiesce_window_seconds": 1.5,
                "log_tail": []
            }],
            "pending": null,
            "last_success": 1000,
            "consecutive_failures": 0
        })
    );
}

#[test]
fn unknown_fields_survive_a_save() {
    let t = TempDir::new("extra");
    fs::write(
        t.path().join(STATE_FILE),
        r#"{"version":1,"future_field":{"a":1}}"#,
    )
    .unwrap();
    let dir = StateDir::open(t.path()).unwrap();
    let loaded = dir.load_state().unwrap();
    dir.save_state(&loaded.state).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(v["future_field"], serde_json::json!({"a": 1}));
}

#[test]
fn corrupt_state_falls_back_to_prev_and_keeps_bad_copy() {
    let t = TempDir::new("corrupt");
    let dir = StateDir::open(t.path()).unwrap();
    dir.save_state(&state_with(100)).unwrap();
    dir.save_state(&state_with(200)).unwrap();
    let truncated = br#"{"version":1,"runs":[{"kind":"bac"#;
    fs::write(t.path().join(STATE_FILE), truncated).unwrap();

    let loaded = dir.load_state().unwrap();
    assert_eq!(loaded.state, state_with(100));
    let bad: Vec<PathBuf> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("state.json.bad-")
        })
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(fs::read(&bad[0]).unwrap(), truncated);
    assert_eq!(
        loaded.warning.unwrap(),
        format!(
            "state file {} is unusable (invalid JSON: EOF while parsing a string at line 1 column 33); \
             kept a copy at {}; continuing with the previous generation {}",
            t.path().join(STATE_FILE).display(),
            bad[0].display(),
            t.path().join(STATE_PREV_FILE).display()
        )
    );
    // The corrupt file was not overwritten by loading …
    assert_eq!(fs::read(t.path().join(STATE_FILE)).unwrap(), truncated);
    // … and saving does not promote it to .prev.
    dir.save_state(&state_with(300)).unwrap();
    let prev: State =
        serde_json::from_slice(&fs::read(t.path().join(STATE_PREV_FILE)).unwrap()).unwrap();
    assert_eq!(prev, state_with(100));
    assert_eq!(dir.load_state().unwrap().state, state_with(300));
}

#[test]
fn both_generations_bad_is_an_error_that_says_what_to_do() {
    let t = TempDir::new("bothbad");
    fs::write(t.path().join(STATE_FILE), b"").unwrap();
    fs::write(t.path().join(STATE_PREV_FILE), br#"{"runs":[]}"#).unwrap();
    let dir = StateDir::open(t.path()).unwrap();
    let err = dir.load_state().unwrap_err();
    let StateError::Corrupt { bad_copy, .. } = &err else {
        panic!("{err:?}")
    };
    let bad = bad_copy.clone().unwrap();
    let p = t.path().join(STATE_FILE);
    assert_eq!(
        err.to_string(),
        format!(
            "state file {} is unusable (invalid JSON: EOF while parsing a value at line 1 column 0) \
             and so is its previous generation {} (no \"version\" field); a copy was kept at {}; \
             move {} aside to start with an empty state (run history and pending-task tracking are lost)",
            p.display(),
            t.path().join(STATE_PREV_FILE).display(),
            bad.display(),
            p.display()
        )
    );
}

#[test]
fn newer_version_is_refused_and_untouched() {
    let t = TempDir::new("toonew");
    let content = br#"{"version":2}"#;
    fs::write(t.path().join(STATE_FILE), content).unwrap();
    let dir = StateDir::open(t.path()).unwrap();
    let err = dir.load_state().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} has version 2, this felhom-agent understands up to 1; refusing to use or overwrite it \
             (upgrade felhom-agent)",
            t.path().join(STATE_FILE).display()
        )
    );
    assert!(matches!(
        dir.save_state(&State::default()),
        Err(StateError::TooNew { found: 2, .. })
    ));
    assert_eq!(fs::read(t.path().join(STATE_FILE)).unwrap(), content);
}

#[test]
fn failed_save_names_path_and_keeps_previous_state() {
    let t = TempDir::new("savefail");
    let dir = StateDir::open(t.path()).unwrap();
    dir.save_state(&state_with(100)).unwrap();
    let tmp = t
        .path()
        .join(format!(".state.json.tmp.{}", std::process::id()));
    fs::create_dir(&tmp).unwrap();
    let err = dir.save_state(&state_with(200)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot create {}", tmp.display())),
        "{err}"
    );
    fs::remove_dir(&tmp).unwrap();
    assert_eq!(dir.load_state().unwrap().state, state_with(100));
}

#[test]
fn push_run_bounds_history_and_counts_failures() {
    let mut s = State::default();
    for i in 0..60 {
        s.push_run(record(RunResult::Ok, i));
    }
    assert_eq!(s.runs.len(), MAX_RUNS);
    assert_eq!(s.runs.front().unwrap().finished, 10);
    assert_eq!(s.last_success, Some(59));
    s.push_run(record(RunResult::Failed, 70));
    s.push_run(record(RunResult::Busy, 71));
    s.push_run(record(RunResult::Missed, 72));
    s.push_run(record(RunResult::Skipped, 73));
    assert_eq!(s.consecutive_failures, 2);
    assert_eq!(s.last_success, Some(59));
    s.push_run(record(RunResult::Warnings, 80));
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.last_success, Some(80));
    assert_eq!(s.last_run().unwrap().finished, 80);
}

fn info(what: &str) -> LockInfo {
    LockInfo {
        pid: 1234,
        what: what.into(),
        started: 1_735_707_601,
        upid: None,
    }
}

#[test]
fn run_lock_excludes_second_holder_and_reports_it() {
    let t = TempDir::new("lock");
    let a = StateDir::open(t.path()).unwrap();
    let b = StateDir::open(t.path()).unwrap();
    let mut held = a.try_lock(&info("backup-now")).unwrap();
    let err = b.try_lock(&info("daemon")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a backup is already running (backup-now, pid 1234, started 2025-01-01T05:00:01Z)"
    );
    held.set_upid("UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:")
        .unwrap();
    match b.try_lock(&info("daemon")) {
        Err(LockError::Busy(Some(i))) => {
            assert_eq!(i, *held.info());
            assert_eq!(
                i.upid.as_deref(),
                Some("UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:")
            );
        }
        other => panic!("{other:?}"),
    }
    drop(held);
    assert_eq!(fs::read(t.path().join(LOCK_FILE)).unwrap(), b"");
    let again = b.try_lock(&info("daemon")).unwrap();
    assert_eq!(again.info().what, "daemon");
}

#[test]
fn run_lock_held_by_other_process_is_released_when_it_dies() {
    let t = TempDir::new("lockproc");
    let dir = StateDir::open(t.path()).unwrap();
    let lock_path = t.path().join(LOCK_FILE);
    // flock(1) holds the lock itself (-o: the command does not inherit it) until `cat` ends.
    let mut child = Command::new("flock")
        .arg("-o")
        .arg(&lock_path)
        .args(["sh", "-c", "echo ready; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    assert!(matches!(
        dir.try_lock(&info("daemon")),
        Err(LockError::Busy(None))
    ));
    child.kill().unwrap(); // SIGKILL the lock holder: no cleanup code runs
    child.wait().unwrap();
    drop(child.stdin.take()); // let the orphaned `cat` finish
    let held = dir.try_lock(&info("daemon")).unwrap();
    assert_eq!(held.info().what, "daemon");
}

#[test]
fn journal_tells_a_restarted_process_what_is_owed() {
    let t = TempDir::new("journal");
    let dir = StateDir::open(t.path()).unwrap();
    assert_eq!(dir.journal().load().unwrap(), None);
    let mut j = dir.journal();
    assert!(matches!(
        j.record(JournalStep::Finished),
        Err(StateError::JournalNotBegun)
    ));
    j.begin("run-1", 500).unwrap();
    j.record(JournalStep::QuiesceStarted {
        hooks_ran_pre: vec!["db".into()],
        post_owed: true,
    })
    .unwrap();
    j.record(JournalStep::QuiesceStarted {
        hooks_ran_pre: vec!["db".into(), "fs".into()],
        post_owed: true,
    })
    .unwrap();
    j.record(JournalStep::VzdumpRequested {
        at: 510,
        node: "pve1".into(),
    })
    .unwrap();

    // A second process (restart) reads it.
    let s = dir.journal().load().unwrap().unwrap();
    assert_eq!(
        s,
        JournalState {
            run_id: "run-1".into(),
            started: 500,
            posts_owed: vec!["fs".into(), "db".into()],
            pending_upid: None,
            requested_without_upid: Some(VzdumpRequest {
                at: 510,
                node: "pve1".into()
            }),
            finished: false,
        }
    );
    let err = dir.journal().begin("run-2", 600).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "journal {} still holds unfinished run run-1; recover it (resume) before starting a new run",
            t.path().join(JOURNAL_FILE).display()
        )
    );

    j.record(JournalStep::UpidReceived {
        upid: "UPID:x".into(),
        node: "pve1".into(),
    })
    .unwrap();
    j.record(JournalStep::PostRan { hook: "fs".into() })
        .unwrap();
    let s = dir.journal().load().unwrap().unwrap();
    assert_eq!(s.posts_owed, vec!["db".to_string()]);
    assert_eq!(s.pending_upid, Some(("UPID:x".into(), "pve1".into())));
    assert_eq!(s.requested_without_upid, None);

    // Recovery in a new process adopts the journal and finishes it.
    let mut r = dir.journal();
    assert_eq!(
        r.resume().unwrap().unwrap().posts_owed,
        vec!["db".to_string()]
    );
    r.record(JournalStep::Released).unwrap();
    assert_eq!(
        dir.journal().load().unwrap().unwrap().posts_owed,
        Vec::<String>::new()
    );
    r.record(JournalStep::Finished).unwrap();
    let s = dir.journal().load().unwrap().unwrap();
    assert!(s.finished && s.is_settled() && s.pending_upid.is_none());
    dir.journal().begin("run-2", 600).unwrap();
    r.clear().unwrap();
    assert!(!t.path().join(JOURNAL_FILE).exists());
    assert_eq!(dir.journal().load().unwrap(), None);
}

#[test]
fn corrupt_journal_is_an_error_and_kept() {
    let t = TempDir::new("badjournal");
    fs::write(t.path().join(JOURNAL_FILE), b"{\"version\":1,").unwrap();
    let dir = StateDir::open(t.path()).unwrap();
    let err = dir.journal().load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "journal {} is unusable (invalid JSON: EOF while parsing a value at line 1 column 13); \
             a crashed run may still owe post hooks (thaw/resume your services by hand), then delete the file",
            t.path().join(JOURNAL_FILE).display()
        )
    );
    assert!(dir.journal().begin("r", 1).is_err());
    assert_eq!(
        fs::read(t.path().join(JOURNAL_FILE)).unwrap(),
        b"{\"version\":1,"
    );
}

#[test]
fn journal_file_format() {
    let t = TempDir::new("jfmt");
    let dir = StateDir::open(t.path()).unwrap();
    let mut j = dir.journal();
    j.begin("r1", 7).unwrap();
    j.record(JournalStep::QuiesceStarted {
        hooks_ran_pre: vec!["db".into()],
        post_owed: true,
    })
    .unwrap();
    j.record(JournalStep::Released).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join(JOURNAL_FILE)).unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": 1, "run_id": "r1", "started": 7,
            "steps": [
                {"step": "quiesce-started", "hooks_ran_pre": ["db"], "post_owed": true},
                {"step": "released"}
            ]
        })
    );
}

#[test]
fn journal_owes_a_thaw_from_the_freeze_plan_until_thawed() {
    let t = TempDir::new("journal-freeze");
    let dir = StateDir::open(t.path()).unwrap();
    let mut j = dir.journal();
    j.begin("run-f", 700).unwrap();
    assert!(j.thaw_owed().is_empty());
    j.record(JournalStep::FreezePlanned {
        mounts: vec!["/srv/b".into(), "/srv/a".into(), "/srv/c".into()],
    })
    .unwrap();
    // Crash between the plan and the result: every planned mount is owed, thaw order.
    assert_eq!(
        dir.journal().load_thaw_owed().unwrap(),
        vec!["/srv/c", "/srv/a", "/srv/b"]
    );
    j.record(JournalStep::Frozen {
        frozen: vec!["/srv/b".into(), "/srv/a".into()],
        already_frozen: vec!["/srv/c".into()],
    })
    .unwrap();
    // Someone else's freeze is never ours to thaw.
    assert_eq!(
        dir.journal().load_thaw_owed().unwrap(),
        vec!["/srv/a", "/srv/b"]
    );
    // A new run is refused while a thaw is owed, even with nothing else pending.
    assert!(matches!(
        dir.journal().begin("run-g", 800),
        Err(StateError::JournalUnfinished { .. })
    ));
    j.record(JournalStep::Thawed {
        mounts: vec!["/srv/a".into()],
        by: "watchdog".into(),
    })
    .unwrap();
    let mut restarted = dir.journal();
    restarted.resume().unwrap();
    assert_eq!(restarted.thaw_owed(), vec!["/srv/b"]);
    j.record(JournalStep::Thawed {
        mounts: vec!["/srv/b".into()],
        by: "release".into(),
    })
    .unwrap();
    assert!(dir.journal().load_thaw_owed().unwrap().is_empty());
    dir.journal().begin("run-g", 800).unwrap();
}
