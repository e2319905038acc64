//! End-to-end tests of `felhom-agent run` (the real binary) against pve-sim over real TLS: the
//! sd_notify messages on a `NOTIFY_SOCKET` the test owns, the health endpoint, the state file,
//! signals; plus `next-runs` and the systemd unit checked with `systemd-analyze`.
//!
//! Runs are made due honestly: a fresh install never runs at start, but a persisted
//! `last_scheduled` older than the latest fire time is caught up at start. Daily schedules use
//! an hour twelve hours away from now, so no fire time falls inside a test.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use felhom_agent::schedule::{CronSchedule, format_next_runs, splay_offset};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use pve_sim::{Scenario, Sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASIC: &str = include_str!("pve-sim/scenarios/basic.toml");
const SECRET101: &str = "11111111-2222-3333-4444-555555555101";
const BIN: &str = env!("CARGO_BIN_EXE_felhom-agent");

// ---------------------------------------------------------------------------------------------
// Harness

struct Env {
    sim: Sim,
    dir: PathBuf,
}

impl Env {
    async fn start(speed: f64) -> Env {
        let text = BASIC.replace("clock-speed = 1.0", &format!("clock-speed = {speed}"));
        let sim = Sim::start(
            &Scenario::parse(&text).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "felhom-daemon-test-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("sys/class/net/eth0")).unwrap();
        std::fs::write(
            dir.join("sys/class/net/eth0/address"),
            "bc:24:11:aa:bb:01\n",
        )
        .unwrap();
        std::fs::write(dir.join("token"), format!("{SECRET101}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Env { sim, dir }
    }

    /// `backup` lines go into `[backup]`, `extra` after the other sections.
    fn config(&self, backup: &str, extra: &str) -> String {
        format!(
            "[pve]\nurl = \"{url}\"\ntoken-id = \"felhom101@pve!agent\"\n\
             token-secret-file = \"{dir}/token\"\nfingerprint = \"{fp}\"\ntimeout = \"5s\"\n\n\
             [backup]\nstorage = \"pbs-main\"\nmode = \"snapshot\"\ntask-timeout = \"2m\"\n\
             splay = \"0s\"\n{backup}\n\n[state]\ndir = \"{dir}/state\"\n\n\
             [health]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            url = self.sim.url(),
            dir = self.dir.display(),
            fp = self.sim.fingerprint(),
        )
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    fn write_state(&self, last_scheduled: Timestamp) {
        let doc = serde_json::json!({"version": 1, "last_scheduled": last_scheduled.as_second()});
        std::fs::write(self.dir.join("state/state.json"), doc.to_string()).unwrap();
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state/state.json")).unwrap())
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args);
        c.env("FELHOM_AGENT_SYSFS_ROOT", self.dir.join("sys"))
            .env("FELHOM_LOG", "info")
            .env_remove("FELHOM_AGENT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM");
        c
    }

    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = self.command(args);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn vzdumps(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.template.as_deref() == Some("/nodes/{node}/vzdump"))
            .count()
    }

    /// A hook whose pre sleeps while `hang` exists; both phases append to `marker`.
    fn hook(&self) -> String {
        let m = self.dir.join("marker");
        let f = self.dir.join("hang");
        format!(
            "[[quiesce.hooks]]\nname = \"app\"\n\
             pre = [\"/bin/sh\", \"-c\", \"echo app-pre >> {m}; while [ -e {f} ]; do sleep 0.05; done\"]\n\
             post = [\"/bin/sh\", \"-c\", \"echo app-post >> {m}\"]\ntimeout = \"30s\"\n",
            m = m.display(),
            f = f.display()
        )
    }

    fn marker(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("marker"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The running daemon with its stderr and the sd_notify datagrams it sent.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    notes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Daemon {
    /// Spawns `run` with `NOTIFY_SOCKET` = `socket` (a path or `@abstract`), waits for READY=1
    /// and checks that the health listener already answered at that moment.
    async fn start(env: &Env, socket: &str) -> Daemon {
        Daemon::start_with(env, socket, &[]).await
    }

    async fn start_with(env: &Env, socket: &str, vars: &[(&str, &str)]) -> Daemon {
        let rx = match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                UnixDatagram::bind_addr(&a).unwrap()
            }
            None => UnixDatagram::bind(socket).unwrap(),
        };
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n2, s2) = (notes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s2.load(Ordering::SeqCst) {
                if let Ok(len) = rx.recv(&mut buf) {
                    n2.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..len]).into_owned());
                }
            }
        });
        let mut c = env.command(&["run"]);
        c.env("NOTIFY_SOCKET", socket)
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, e2) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut d = Daemon {
            child,
            stderr,
            notes,
            stop,
            port: 0,
        };
        d.wait_note(Duration::from_secs(10), |n| n.starts_with("READY=1"))
            .await;
        // The line was written before READY=1 was sent; the pipe reader may lag a little.
        d.wait_log(
            Duration::from_secs(2),
            "health endpoint listening on http://127.0.0.1:",
        )
        .await;
        let log = d.stderr();
        let at = log
            .find("health endpoint listening on http://127.0.0.1:")
            .unwrap();
        let port: String = log[at + 46..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        d.port = port.parse().unwrap();
        // Bound before READY=1: the endpoint answers at once.
        assert_eq!(d.get("/livez").await, (200, "ok\n".to_string()));
        d
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }

    async fn wait_note(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(n) = self.notes().into_iter().find(|n| pred(n)) {
                return n;
            }
            assert!(
                t0.elapsed() < timeout,
                "no such notification; got {:?}\nstderr:\n{}",
                self.notes(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_log(&self, timeout: Duration, needle: &str) {
        wait(timeout, || self.stderr().contains(needle), || self.stderr()).await;
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        (code, body.to_string())
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").await.1).unwrap()
    }

    async fn wait_metric(&self, line: &str) {
        let t0 = Instant::now();
        loop {
            let m = self.get("/metrics").await.1;
            if m.lines().any(|l| l == line) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "metric line {line:?} not seen:\n{m}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the exit; returns the code and how long it took.
    async fn exit(&mut self, timeout: Duration) -> (i32, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), t0.elapsed());
            }
            assert!(
                t0.elapsed() < timeout,
                "daemon did not exit; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait(timeout: Duration, cond: impl Fn() -> bool, what: impl Fn() -> String) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out; {}", what());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daily UTC schedule twelve hours away from now, and its latest fire time.
fn daily() -> (String, Timestamp) {
    let now = Timestamp::now();
    let hour = (now.to_zoned(TimeZone::UTC).hour() + 12) % 24;
    let expr = format!("0 {hour} * * *");
    let s = CronSchedule::parse(&expr, TimeZone::UTC).unwrap();
    let next = s.next_after(now).unwrap();
    let latest = next - jiff::SignedDuration::from_hours(24);
    (expr, latest)
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

fn sock(env: &Env) -> String {
    env.dir.join("notify.sock").display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_run_at_start_shows_in_status_and_metrics() {
    let env = Env::start(20.0).await;
    let (expr, latest) = daily();
    env.write_config(&env.config(
        &format!("schedule = \"{expr}\"\ntimezone = \"UTC\"\ncatch-up = \"25h\""),
        "",
    ));
    env.write_state(latest - days(1));
    let mut d = Daemon::start(&env, &sock(&env)).await;
    let notes = d.notes();
    assert_eq!(
        notes[0], "STATUS=starting: repairing what an earlier run left",
        "{notes:?}"
    );
    d.wait_metric("felhom_backup_runs_total{result=\"ok\"} 1")
        .await;
    let st = d.status().await;
    assert_eq!(st["last_runs"][0]["result"], "ok", "{st}");
    assert_eq!(st["phase"], "idle");
    let next = latest + days(1);
    assert_eq!(st["next_run"], next.as_second());
    let m = d.get("/metrics").await.1;
    assert!(
        m.lines()
            .any(|l| l == format!("felhom_next_backup_timestamp_seconds {}", next.as_second())),
        "{m}"
    );
    assert!(m.contains("felhom_backup_last_success_timestamp_seconds "));
    let api_ok: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("felhom_pve_requests_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(api_ok >= 5, "the run's API requests are counted: {m}");
    assert_eq!(env.vzdumps(), 1);
    assert_eq!(env.state()["last_scheduled"], latest.as_second());
    // STATUS lines: running, then idle with the next fire time in UTC.
    let notes = d.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("STATUS=backing up (scheduled ")),
        "{notes:?}"
    );
    let idle = format!(
        "STATUS=idle; next backup {}",
        felhom_agent::schedule::format_run(next, &TimeZone::UTC)
    );
    d.wait_note(Duration::from_secs(5), |n| n == idle).await;
    d.signal(libc::SIGTERM);
    let (code, took) = d.exit(Duration::from_secs(5)).await;
    assert_eq!(code, 0, "{}", d.stderr());
    assert!(took < Duration::from_secs(3), "{took:?}");
    d.wait_note(Duration::from_secs(1), |n| n.starts_with("STOPPING=1"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_backup_now_shows_up_without_restart_and_sigterm_exits_promptly() {
    let env = Env::start(20.0).await;
    env.write_config(&env.config("schedule = \"0 3 1 1 *\"\ntimezone = \"UTC\"", ""));
    let name = format!(
        "@felhom-daemon-test-{}-{}",
        std::process::id(),
        Timestamp::now().as_nanosecond()
    );
    // An abstract NOTIFY_SOCKET, and a 1 s watchdog: the idle loop wakes and pings every 0.5 s.
    let mut d = Daemon::start_with(&env, &name, &[("WATCHDOG_USEC", "1000000")]).await;
    // A fresh install waits for the first fire time; it never backs up at start.
    let st = d.status().await;
    let s = CronSchedule::parse("0 3 1 1 *", TimeZone::UTC).unwrap();
    assert_eq!(
        st["next_run"],
        s.next_after(Timestamp::now()).unwrap().as_second()
    );
    assert!(st["last_runs"].as_array().unwrap().is_empty());
    let (code, out, err) = env.run(&["backup-now"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    d.wait_metric("felhom_backup_runs_total{result=\"ok\"} 1")
        .await;
    let st = d.status().await;
    assert_eq!(st["last_runs"][0]["result"], "ok");
    assert!(st["last_success"].as_i64().is_some());
    assert_eq!(env.vzdumps(), 1);
    let pings = || d.notes().iter().filter(|n| *n == "WATCHDOG=1").count();
    let before = pings();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(pings() >= before + 2, "{:?}", d.notes());
    d.signal(libc::SIGTERM);
    let (code, took) = d.exit(Duration::from_secs(5)).await;
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_run_while_backup_now_holds_the_lock_is_skipped() {
    let env = Env::start(20.0).await;
    let (expr, latest) = daily();
    env.write_config(&env.config(
        &format!("schedule = \"{expr}\"\ntimezone = \"UTC\"\ncatch-up = \"25h\""),
        &env.hook(),
    ));
    env.write_state(latest - days(1));
    std::fs::write(env.dir.join("hang"), "").unwrap();
    let mut manual = env.command(&["backup-now"]);
    let mut manual = manual
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait(
        Duration::from_secs(10),
        || env.marker().contains(&"app-pre".to_string()),
        || format!("{:?}", env.marker()),
    )
    .await;
    let d = Daemon::start(&env, &sock(&env)).await;
    d.wait_metric("felhom_backup_skipped_total{reason=\"busy\"} 1")
        .await;
    d.wait_log(
        Duration::from_secs(5),
        "scheduled backup skipped: another run holds the lock (backup-now, pid ",
    )
    .await;
    std::fs::remove_file(env.dir.join("hang")).unwrap();
    let code = tokio::task::spawn_blocking(move || manual.wait().unwrap().code())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // The manual run and the deferred skip record both reach the state and the metrics.
    d.wait_metric("felhom_backup_runs_total{result=\"ok\"} 1")
        .await;
    d.wait_metric("felhom_backup_runs_total{result=\"skipped\"} 1")
        .await;
    let st = env.state();
    let results: Vec<&str> = st["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["ok", "skipped"], "{st}");
    assert!(
        st["runs"][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("skipped (busy): another run holds the lock (backup-now, pid "),
        "{st}"
    );
    assert_eq!(st["last_scheduled"], latest.as_second());
    assert_eq!(env.vzdumps(), 1, "the daemon started no second backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_run_beyond_catch_up_is_recorded_once_with_the_count() {
    let env = Env::start(20.0).await;
    let (expr, latest) = daily();
    env.write_config(&env.config(
        &format!("schedule = \"{expr}\"\ntimezone = \"UTC\"\ncatch-up = \"1m\""),
        "",
    ));
    env.write_state(latest - days(3));
    let d = Daemon::start(&env, &sock(&env)).await;
    d.wait_metric("felhom_backup_runs_total{result=\"missed\"} 1")
        .await;
    let st = env.state();
    assert_eq!(st["runs"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["runs"][0]["result"], "missed");
    assert_eq!(
        st["runs"][0]["error"],
        format!(
            "missed 3 scheduled runs, the latest due at {latest}: more than backup.catch-up (1m00s) ago"
        )
    );
    assert_eq!(st["last_scheduled"], latest.as_second());
    assert_eq!(st["consecutive_failures"], 1);
    assert_eq!(d.status().await["next_run"], (latest + days(1)).as_second());
    assert_eq!(env.vzdumps(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_exits_zero_after_the_safe_path() {
    let env = Env::start(1.0).await; // the vzdump task takes 20 s
    let (expr, latest) = daily();
    env.write_config(&env.config(
        &format!("schedule = \"{expr}\"\ntimezone = \"UTC\"\ncatch-up = \"25h\""),
        &env.hook(),
    ));
    env.write_state(latest - days(1));
    let mut d = Daemon::start(&env, &sock(&env)).await;
    let pending_running = || {
        std::fs::read_to_string(env.dir.join("state/state.json"))
            .is_ok_and(|s| s.contains("\"reason\": \"running\""))
    };
    wait(Duration::from_secs(10), pending_running, || d.stderr()).await;
    let t0 = Instant::now();
    let st = loop {
        let st = d.status().await;
        if st["phase"] == "waiting-for-task" {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let upid = env.state()["pending"]["upid"].as_str().unwrap().to_string();
    assert_eq!(st["current_job"]["upid"], upid.as_str());
    d.signal(libc::SIGTERM);
    let (code, took) = d.exit(Duration::from_secs(8)).await;
    assert_eq!(code, 0, "{}", d.stderr());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let st = env.state();
    assert_eq!(st["pending"]["upid"], upid.as_str(), "{st}");
    assert_eq!(st["pending"]["reason"], "agent stopped");
    assert_eq!(env.marker(), ["app-pre", "app-post"]);
    d.wait_note(Duration::from_secs(1), |n| n.starts_with("STOPPING=1"))
        .await;
    let notes = d.notes();
    assert!(
        notes.contains(&"EXTEND_TIMEOUT_USEC=30000000".to_string()),
        "{notes:?}"
    );
    assert!(
        notes.contains(
            &"STATUS=stopping: waiting for the backup run to reach a safe point".to_string()
        ),
        "{notes:?}"
    );
    assert!(notes.last().unwrap().starts_with("STOPPING=1"), "{notes:?}");
    drop(d);
    // The task ends while no agent runs; the next start records it before READY=1 and starts
    // no second backup (the fire time it ran for was persisted before the run).
    env.sim.advance(60.0);
    std::fs::remove_file(env.dir.join("notify.sock")).unwrap();
    let d = Daemon::start(&env, &sock(&env)).await;
    let st = env.state();
    assert!(st["pending"].is_null(), "{st}");
    let last = st["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["upid"], upid.as_str(), "{st}");
    assert_eq!(last["result"], "ok", "{st}");
    d.wait_metric("felhom_backup_runs_total{result=\"ok\"} 1")
        .await;
    assert_eq!(d.status().await["next_run"], (latest + days(1)).as_second());
    assert_eq!(env.vzdumps(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_the_old_one() {
    let env = Env::start(20.0).await;
    let good = env.config("schedule = \"0 3 1 1 *\"\ntimezone = \"UTC\"", "");
    env.write_config(&good);
    let mut d = Daemon::start(&env, &sock(&env)).await;
    let now = Timestamp::now();
    let jan = CronSchedule::parse("0 3 1 1 *", TimeZone::UTC)
        .unwrap()
        .next_after(now)
        .unwrap();
    assert_eq!(d.status().await["next_run"], jan.as_second());
    env.write_config(&good.replace("0 3 1 1 *", "61 3 1 1 *"));
    d.signal(libc::SIGHUP);
    d.wait_log(
        Duration::from_secs(5),
        "failed, keeping the old configuration: ",
    )
    .await;
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("keeping the old configuration"))
        .unwrap();
    assert!(line.contains("backup.schedule"), "{line}");
    assert!(line.contains(&env.dir.join("config.toml").display().to_string()));
    assert_eq!(d.get("/livez").await.0, 200);
    assert_eq!(d.status().await["next_run"], jan.as_second());
    assert!(d.notes().contains(&"RELOADING=1".to_string()));
    // A valid config is taken.
    env.write_config(&good.replace("0 3 1 1 *", "0 3 1 2 *"));
    d.signal(libc::SIGHUP);
    d.wait_log(Duration::from_secs(5), "configuration reloaded from ")
        .await;
    let feb = CronSchedule::parse("0 3 1 2 *", TimeZone::UTC)
        .unwrap()
        .next_after(now)
        .unwrap();
    let t0 = Instant::now();
    while d.status().await["next_run"] != feb.as_second() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.signal(libc::SIGTERM);
    assert_eq!(d.exit(Duration::from_secs(5)).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_runs_prints_local_and_utc_times_and_the_splay() {
    let env = Env::start(20.0).await;
    let text = env
        .config(
            "schedule = \"30 2 * * *\"\ntimezone = \"Europe/Budapest\"",
            "\n[guest]\nvmid = 101\n",
        )
        .replace("splay = \"0s\"", "splay = \"15m\"");
    env.write_config(&text);
    std::fs::remove_file(env.dir.join("token")).unwrap(); // not needed to print a schedule
    let (code, out, err) = env.run(&["next-runs", "-n", "3"]).await;
    assert_eq!(code, 0, "{err}");
    let s = CronSchedule::parse("30 2 * * *", TimeZone::get("Europe/Budapest").unwrap()).unwrap();
    let offset = splay_offset(101, Duration::from_secs(900));
    let expected = format!(
        "schedule \"30 2 * * *\" in Europe/Budapest\nsplay for guest 101: {} after each fire time (backup.splay = 15m00s)\n{}",
        felhom_agent::health::fmt_secs(offset.as_secs()),
        format_next_runs(&s, Timestamp::now(), 3)
    );
    assert_eq!(out, expected);
    assert_eq!(out.lines().count(), 5);
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/felhom-agent.service");

fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

/// The unit as shipped, with ExecStart pointing at the binary just built (verify checks that the
/// binary exists on this machine).
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/felhom-agent run\n"));
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("felhom-agent.service");
    std::fs::write(
        &p,
        text.replace(
            "ExecStart=/usr/bin/felhom-agent",
            &format!("ExecStart={BIN}"),
        ),
    )
    .unwrap();
    p
}

#[test]
fn unit_passes_systemd_analyze_verify_and_security() {
    let Some(sa) = systemd_analyze() else {
        let _ = std::io::stderr().write_all(
            b"\n*** SKIP unit_passes_systemd_analyze_verify_and_security: systemd-analyze is not on PATH ***\n",
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("felhom-unit-{}", std::process::id()));
    let unit = unit_copy(&dir);
    let out = Command::new(&sa).arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    let out = Command::new(&sa)
        .args(["security", "--offline=true", "--threshold=25"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("felhom-agent.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure line:\n{text}"));
    let _ = std::io::stderr()
        .write_all(format!("systemd-analyze security exposure: {score}\n").as_bytes());
    assert!(score <= 2.5, "exposure {score}");
    // Every directive the daemon relies on is there.
    let text = std::fs::read_to_string(UNIT).unwrap();
    for key in [
        "Type=notify\n",
        "NotifyAccess=main\n",
        "WatchdogSec=",
        "LoadCredential=pve-token:/etc/felhom-agent/token\n",
        "StateDirectory=felhom-agent\n",
        "CapabilityBoundingSet=\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
    ] {
        assert!(text.contains(key), "missing {key:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_ok_while_a_manual_backup_runs() {
    // Real-time simulator speed: the manual backup's task runs for 20 s.
    let env = Env::start(1.0).await;
    let (expr, latest) = daily();
    env.write_config(&env.config(&format!("schedule = \"{expr}\"\ntimezone = \"UTC\""), ""));
    env.write_state(latest);
    let d = Daemon::start(&env, &sock(&env)).await;
    let mut manual = env.command(&["backup-now"]);
    let mut manual = manual
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait(
        Duration::from_secs(10),
        || env.state()["pending"]["upid"].is_string(),
        || format!("{}", env.state()),
    )
    .await;
    // The daemon has seen the pending task of the live manual run…
    let mut seen = false;
    for _ in 0..100 {
        let (_, status) = d.get("/status").await;
        let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        if v["pending_task"]["upid"].is_string() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "daemon picked up the manual run");
    // …and does not call it unhealthy: a live process is following it.
    let (code, body) = d.get("/healthz").await;
    assert_eq!(code, 200, "{body}");
    manual.kill().unwrap();
    let _ = manual.wait();
}

/// SIGTERM while a scheduled snapshot with `[snapshots] quiesce = true` waits for its task: the
/// daemon does not drop the run (that would leave the application paused by its pre hook until
/// the next start) but awaits it, runs the post, clears the journal, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_quiesced_snapshot_lets_it_finish_and_runs_the_post() {
    let env = Env::start(0.05).await; // the snapshot task (2 simulated s) takes 40 s unheld
    let (expr, latest) = daily();
    env.write_config(&env.config(
        "schedule = \"0 3 1 1 *\"\ntimezone = \"UTC\"\ncatch-up = \"25h\"",
        &format!(
            "[snapshots]\nschedule = \"{expr}\"\nquiesce = true\n\n{}",
            env.hook()
        ),
    ));
    let due = (latest - days(1)).as_second();
    std::fs::write(
        env.dir.join("state/state.json"),
        serde_json::json!({"version": 1, "last_snapshot_scheduled": due}).to_string(),
    )
    .unwrap();
    let mut d = Daemon::start(&env, &sock(&env)).await;
    let snapshot_task = || {
        env.sim
            .world()
            .tasks
            .iter()
            .find(|t| t.parsed.wtype == "qmsnapshot")
            .map(|t| t.upid.clone())
    };
    wait(
        Duration::from_secs(15),
        || snapshot_task().is_some(),
        || d.stderr(),
    )
    .await;
    let upid = snapshot_task().unwrap();
    env.sim.world().task_mut(&upid).unwrap().held = true;
    let journal = env.dir.join("state/journal.json");
    assert!(journal.exists(), "{}", d.stderr());
    assert_eq!(env.marker(), ["app-pre"]);
    d.signal(libc::SIGTERM);
    d.wait_log(
        Duration::from_secs(5),
        "stop requested during a snapshot run: letting it finish so its quiesce is released",
    )
    .await;
    d.wait_note(Duration::from_secs(2), |n| {
        n == "STATUS=stopping: waiting for a snapshot run to finish"
    })
    .await;
    assert!(
        d.notes()
            .contains(&"EXTEND_TIMEOUT_USEC=30000000".to_string()),
        "{:?}",
        d.notes()
    );
    // Held: the daemon keeps waiting, the application stays quiesced, the post still owed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(d.child.try_wait().unwrap().is_none(), "{}", d.stderr());
    assert_eq!(env.marker(), ["app-pre"]);
    assert!(env.sim.world().task_mut(&upid).unwrap().running());
    env.sim.world().task_mut(&upid).unwrap().held = false;
    env.sim.advance(10.0);
    let (code, _) = d.exit(Duration::from_secs(20)).await;
    let log = d.stderr();
    assert_eq!(code, 0, "{log}");
    assert_eq!(env.marker(), ["app-pre", "app-post"], "{log}");
    assert!(!journal.exists(), "{log}");
    let w = env.sim.world();
    let task = w.tasks.iter().find(|t| t.upid == upid).unwrap();
    assert_eq!(task.exitstatus.as_deref(), Some("OK"), "{log}");
    let name = w.guests[&101].snapshots.last().unwrap().name.clone();
    drop(w);
    assert!(name.starts_with("felhom-"), "{name}");
    assert!(
        log.contains(&format!("scheduled snapshot {name} created")),
        "{log}"
    );
    assert_eq!(
        env.state()["last_snapshot_scheduled"].as_i64(),
        Some(latest.as_second())
    );
    assert!(!log.contains(SECRET101));
    let notes = d.notes();
    assert!(notes.last().unwrap().starts_with("STOPPING=1"), "{notes:?}");
    assert!(!notes.iter().any(|n| n.contains(SECRET101)));
}
