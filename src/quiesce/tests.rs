use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn sh(script: &str) -> Vec<String> {
    s(&["/bin/sh", "-c", script])
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "felhom-quiesce-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits (up to 1 s, via pidfd, no polling loop) until `pid` has terminated. A zombie counts as
/// terminated: it runs nothing and waits for init to reap it.
fn terminated(pid: i32) -> bool {
    // SAFETY: plain syscalls on a pidfd we own and close.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if fd < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let n = libc::poll(&mut pfd, 1, 1000);
        libc::close(fd);
        n == 1
    }
}

fn read_pids(path: &std::path::Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn exit_codes_and_signals() {
    assert_eq!(
        run_argv(&s(&["true"]), &[], SEC).await.status,
        HookStatus::Exited(0)
    );
    assert_eq!(
        run_argv(&sh("exit 3"), &[], SEC).await.status,
        HookStatus::Exited(3)
    );
    assert_eq!(
        run_argv(&sh("kill -9 $$"), &[], SEC).await.status,
        HookStatus::Signaled(9)
    );
    let o = run_argv(&s(&["/nonexistent/hook"]), &[], SEC).await;
    assert_eq!(
        o.status,
        HookStatus::SpawnFailed("/nonexistent/hook: No such file or directory (os error 2)".into())
    );
    assert_eq!(
        o.status.to_string(),
        "could not be started: /nonexistent/hook: No such file or directory (os error 2)"
    );
    assert_eq!(
        run_argv(&[], &[], SEC).await.status,
        HookStatus::SpawnFailed("empty command".into())
    );
    // argv is not split by a shell; PATH lookup uses the hook PATH.
    let o = run_argv(&s(&["printf", "%s|", "a b", "$HOME"]), &[], SEC).await;
    assert_eq!(o.output, "a b|$HOME|");
}

#[tokio::test]
async fn output_is_merged_and_bounded() {
    let o = run_argv(&sh("echo out; echo err >&2; echo out2"), &[], SEC).await;
    assert_eq!(o.output, "out\nerr\nout2\n");

    let o = run_argv(&sh("head -c 100000 /dev/zero | tr '\\0' a"), &[], SEC).await;
    assert_eq!(o.status, HookStatus::Exited(0));
    let half = "a".repeat(8192);
    assert_eq!(
        o.output,
        format!("{half}\n[… {} bytes elided …]\n{half}", 100000 - 16384)
    );
}

#[tokio::test]
async fn environment_is_exactly_the_fixed_set() {
    let env = vec![
        ("FELHOM_VMID".to_string(), "101".to_string()),
        ("FELHOM_PHASE".to_string(), "pre".to_string()),
    ];
    let o = run_argv(&s(&["env"]), &env, SEC).await;
    let mut lines: Vec<&str> = o.output.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "FELHOM_PHASE=pre",
            "FELHOM_VMID=101",
            "LANG=C.UTF-8",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    );
    let o = run_argv(&s(&["pwd"]), &[], SEC).await;
    assert_eq!(o.output, "/\n");
    // stdin is /dev/null: `cat` ends at once.
    let o = run_argv(&s(&["cat"]), &[], SEC).await;
    assert_eq!((o.status, o.output), (HookStatus::Exited(0), String::new()));
}

fn limits(timeout_ms: u64, grace_ms: u64) -> RunLimits {
    RunLimits {
        timeout: Duration::from_millis(timeout_ms),
        kill_grace: Duration::from_millis(grace_ms),
        output_limit: DEFAULT_OUTPUT_LIMIT,
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let t = TempDir::new("tmo");
    let pidfile = t.0.join("pids");
    let script = format!(
        "echo started; sleep 30 & echo $$ $! > {}; sleep 30",
        pidfile.display()
    );
    let o = run_argv_with(&sh(&script), &[], &limits(300, 100)).await;
    assert_eq!(o.status, HookStatus::TimedOut);
    assert_eq!(o.output, "started\n");
    assert!(o.duration < Duration::from_millis(1500), "{:?}", o.duration);
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(terminated(pid), "pid {pid} survived");
    }
}

#[tokio::test]
async fn timeout_escalates_to_sigkill_when_term_is_ignored() {
    let t = TempDir::new("tmokill");
    let pidfile = t.0.join("pids");
    let script = format!(
        "trap '' TERM; sleep 30 & echo $$ $! > {}; wait",
        pidfile.display()
    );
    let o = run_argv_with(&sh(&script), &[], &limits(300, 100)).await;
    assert_eq!(o.status, HookStatus::TimedOut);
    assert!(o.duration >= Duration::from_millis(400), "{:?}", o.duration);
    assert!(o.duration < Duration::from_millis(1500), "{:?}", o.duration);
    for pid in read_pids(&pidfile) {
        assert!(terminated(pid), "pid {pid} survived");
    }
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let t = TempDir::new("drop");
    let pidfile = t.0.join("pids");
    let script = format!("sleep 30 & echo $$ $! > {}; wait", pidfile.display());
    let argv = sh(&script);
    let lim = limits(10_000, 100);
    let run = run_argv_with(&argv, &[], &lim);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), run)
            .await
            .is_err()
    );
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(terminated(pid), "pid {pid} survived");
    }
}

fn hook(name: &str, pre: &str, post: &str, on_error: OnError) -> HookSpec {
    HookSpec {
        name: name.into(),
        pre: if pre.is_empty() {
            vec![]
        } else {
            vec![pre.into()]
        },
        post: if post.is_empty() {
            vec![]
        } else {
            vec![post.into()]
        },
        timeout: SEC,
        on_error,
        shell: true,
    }
}

fn marker_hook(name: &str, pre_exit: i32, on_error: OnError) -> HookSpec {
    hook(
        name,
        &format!("echo pre {name} >> \"$FELHOM_MARKER\"; echo {name}-said; exit {pre_exit}"),
        &format!("echo post {name} >> \"$FELHOM_MARKER\""),
        on_error,
    )
}

struct Rig {
    _dir: TempDir,
    marker: PathBuf,
    env: Vec<(String, String)>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = TempDir::new(tag);
        let marker = dir.0.join("marker");
        fs::write(&marker, "").unwrap();
        let env = vec![("FELHOM_MARKER".to_string(), marker.display().to_string())];
        Rig {
            _dir: dir,
            marker,
            env,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }
    fn observer(&self) -> impl FnMut(QuiesceEvent) + Send + 'static {
        let events = self.events.clone();
        move |e| {
            let line = match e {
                QuiesceEvent::PreStarting { hook } => format!("pre-start {hook}"),
                QuiesceEvent::PreSucceeded { hook, owed, .. } => {
                    format!("pre-ok {hook} owed={}", owed.join(","))
                }
                QuiesceEvent::PreFailed { hook, outcome, .. } => {
                    format!("pre-failed {hook} {}", outcome.status)
                }
                QuiesceEvent::PostStarting { hook } => format!("post-start {hook}"),
                QuiesceEvent::PostFinished { hook, outcome } => {
                    format!("post-done {hook} {}", outcome.status)
                }
            };
            events.lock().unwrap().push(line);
        }
    }
    fn marker(&self) -> String {
        fs::read_to_string(&self.marker).unwrap()
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn abort_unwinds_posts_in_reverse_order() {
    let rig = Rig::new("abort");
    let hooks = vec![
        marker_hook("a", 0, OnError::Abort),
        marker_hook("b", 0, OnError::Abort),
        marker_hook("c", 7, OnError::Abort),
        marker_hook("d", 0, OnError::Abort),
    ];
    let mut obs = rig.observer();
    let mut q = Quiescer::new();
    let err = q.pre_all(&hooks, &rig.env, &mut obs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "pre hook \"c\" failed (exit status 7): c-said"
    );
    let QuiesceError::PreFailed { unwound, .. } = &err else {
        panic!("{err:?}")
    };
    let names: Vec<&str> = unwound.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(rig.marker(), "pre a\npre b\npre c\npost b\npost a\n");
    assert_eq!(
        rig.events(),
        [
            "pre-start a",
            "pre-ok a owed=a",
            "pre-start b",
            "pre-ok b owed=a,b",
            "pre-start c",
            "pre-failed c exit status 7",
            "post-start b",
            "post-done b exit status 0",
            "post-start a",
            "post-done a exit status 0",
        ]
    );
    // Nothing is owed any more: post_all and a second pre_all do nothing.
    let report = q.post_all(&rig.env, &mut obs).await;
    assert_eq!(report, PostReport::default());
    assert!(matches!(
        q.pre_all(&hooks, &rig.env, &mut obs).await,
        Err(QuiesceError::AlreadyUsed)
    ));
    assert_eq!(rig.marker(), "pre a\npre b\npre c\npost b\npost a\n");
}

#[tokio::test]
async fn continue_mode_skips_the_failed_hooks_post() {
    let rig = Rig::new("continue");
    let hooks = vec![
        marker_hook("a", 0, OnError::Abort),
        marker_hook("b", 1, OnError::Continue),
        marker_hook("c", 0, OnError::Abort),
    ];
    let mut obs = rig.observer();
    let mut q = Quiescer::new();
    let report = q.pre_all(&hooks, &rig.env, &mut obs).await.unwrap();
    assert_eq!(report.continued_failures, ["b"]);
    assert_eq!(report.outcomes.len(), 3);
    assert_eq!(q.owed(), ["a", "c"]);
    let post = q.post_all(&rig.env, &mut obs).await;
    assert_eq!(post.failures(), Vec::<&str>::new());
    assert!(post.window.is_some());
    assert_eq!(rig.marker(), "pre a\npre b\npre c\npost c\npost a\n");
}

#[tokio::test]
async fn posts_run_once_and_a_failing_post_does_not_stop_the_others() {
    let rig = Rig::new("once");
    let hooks = vec![
        marker_hook("a", 0, OnError::Abort),
        hook(
            "b",
            "",
            "echo post b >> \"$FELHOM_MARKER\"; exit 4",
            OnError::Abort,
        ),
        hook("c", "echo pre c >> \"$FELHOM_MARKER\"", "", OnError::Abort),
    ];
    let mut obs = rig.observer();
    let mut q = Quiescer::new();
    q.pre_all(&hooks, &rig.env, &mut obs).await.unwrap();
    assert_eq!(q.owed(), ["a", "b", "c"]);
    let post = q.post_all(&rig.env, &mut obs).await;
    let statuses: Vec<(&str, &HookStatus)> = post
        .outcomes
        .iter()
        .map(|(n, o)| (n.as_str(), &o.status))
        .collect();
    assert_eq!(
        statuses,
        [("b", &HookStatus::Exited(4)), ("a", &HookStatus::Exited(0))]
    );
    assert_eq!(post.failures(), ["b"]);
    let second = q.post_all(&rig.env, &mut obs).await;
    assert_eq!(second, PostReport::default());
    assert_eq!(rig.marker(), "pre a\npre c\npost b\npost a\n");
}

#[tokio::test]
async fn resumed_quiescer_runs_owed_posts_in_reverse() {
    let rig = Rig::new("resume");
    let owed = vec![
        marker_hook("a", 0, OnError::Abort),
        marker_hook("b", 0, OnError::Abort),
    ];
    let mut obs = rig.observer();
    let mut q = Quiescer::resume(owed);
    let post = q.post_all(&rig.env, &mut obs).await;
    assert_eq!(post.window, None);
    assert_eq!(rig.marker(), "post b\npost a\n");
}

#[tokio::test]
async fn pre_timeout_aborts_with_its_status() {
    let rig = Rig::new("pretmo");
    let mut slow = marker_hook("slow", 0, OnError::Abort);
    slow.pre = vec!["echo waiting; exec sleep 30".into()];
    slow.timeout = Duration::from_millis(200);
    let hooks = vec![marker_hook("a", 0, OnError::Abort), slow];
    let mut obs = rig.observer();
    let mut q = Quiescer::new().with_kill_grace(Duration::from_millis(100));
    let err = q.pre_all(&hooks, &rig.env, &mut obs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "pre hook \"slow\" failed (timed out): waiting"
    );
    assert_eq!(rig.marker(), "pre a\npost a\n");
}

#[test]
fn shell_wrapping() {
    let mut h = hook("x", "", "", OnError::Abort);
    assert_eq!(
        h.command(&s(&["echo \"$1\"", "arg"])),
        s(&["/bin/sh", "-c", "echo \"$1\"", "felhom-hook", "arg"])
    );
    h.shell = false;
    assert_eq!(h.command(&s(&["echo", "arg"])), s(&["echo", "arg"]));
    assert_eq!(h.command(&[]), Vec::<String>::new());
}
