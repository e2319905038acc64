//! `felhom-agent run` with the self-check and snapshots scheduled in the same loop as backups:
//! the start-up self-check, `/healthz` and the metrics it drives, `on-violation = "refuse"`,
//! and a scheduled snapshot run with its prune.

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use felhom_agent::schedule::CronSchedule;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Env, T101, WIDE, with_snapshots};

struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

impl Daemon {
    async fn start(env: &Env) -> Daemon {
        let mut c = env.command(&["run"]);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
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
            port: 0,
        };
        const LISTEN: &str = "health endpoint listening on http://127.0.0.1:";
        d.wait_log(LISTEN).await;
        let log = d.stderr();
        let at = log.find(LISTEN).unwrap() + LISTEN.len();
        let port: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
        d.port = port.parse().unwrap();
        d
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn wait_log(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{needle:?} not logged:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    async fn wait_metric(&self, line: &str) {
        let t0 = Instant::now();
        loop {
            let m = self.metrics().await;
            if m.lines().any(|l| l == line) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "metric line {line:?} not seen:\n{m}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit code.
    async fn stop(&mut self) -> i32 {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daily schedule twelve hours away from now (in the config's Europe/Budapest zone) and its
/// latest fire time: nothing fires during a test unless the state makes it due.
fn daily() -> (String, Timestamp) {
    let tz = TimeZone::get("Europe/Budapest").unwrap();
    let now = Timestamp::now();
    let hour = (now.to_zoned(tz.clone()).hour() + 12) % 24;
    let expr = format!("0 {hour} * * *");
    let s = CronSchedule::parse(&expr, tz).unwrap();
    let next = s.next_after(now).unwrap();
    let latest = next - jiff::SignedDuration::from_hours(24);
    (expr, latest)
}

const DAY: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

fn write_state(env: &Env, doc: serde_json::Value) {
    std::fs::write(env.dir.join("state/state.json"), doc.to_string()).unwrap();
}

fn state(env: &Env) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(env.dir.join("state/state.json")).unwrap())
        .unwrap()
}

async fn wait_state(env: &Env, d: &Daemon, pred: impl Fn(&serde_json::Value) -> bool) {
    let t0 = Instant::now();
    loop {
        if std::fs::read_to_string(env.dir.join("state/state.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .is_some_and(|v| pred(&v))
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "state not as expected: {:?}\n{}",
            std::fs::read_to_string(env.dir.join("state/state.json")),
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_the_self_check_at_start_and_a_scoped_token_passes() {
    let env = Env::basic(1.0).await;
    let (expr, _) = daily();
    env.configure(T101, "", &format!("schedule = \"{expr}\""), "");
    let mut d = Daemon::start(&env).await;
    d.wait_metric("felhom_selfcheck_ok 1").await;
    let m = d.metrics().await;
    for check in ["own-guest", "foreign-refused", "scope", "visibility", "tls"] {
        let line = format!("felhom_selfcheck_violations{{check=\"{check}\"}} 0");
        assert!(m.lines().any(|l| l == line), "{line}\n{m}");
    }
    let last_run: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("felhom_selfcheck_last_run_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no last-run metric:\n{m}"))
        .parse()
        .unwrap();
    assert!((last_run - Timestamp::now().as_second()).abs() < 60);
    assert_eq!(d.get("/healthz").await, (200, "ok\n".to_string()));
    let st = d.status().await;
    assert_eq!(st["self_check"]["ok"], true, "{st}");
    assert_eq!(st["self_check"]["violations"], serde_json::json!([]));
    assert!(
        d.stderr().contains("self-check passed: all "),
        "{}",
        d.stderr()
    );
    // Nothing mutating was sent, and the daemon did not take the run lock for the check alone
    // (no state was written).
    assert_eq!(env.mutating_since(0), Vec::<String>::new());
    assert!(!env.dir.join("state/state.json").exists());
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_token_turns_healthz_503_and_refuse_skips_the_catch_up_backup_and_snapshot() {
    let env = Env::basic(1.0).await;
    let (expr, latest) = daily();
    env.configure(
        WIDE,
        "vmid = 101",
        &format!("schedule = \"{expr}\"\ncatch-up = \"25h\""),
        &format!("[snapshots]\nschedule = \"{expr}\"\n\n[self-check]\non-violation = \"refuse\"\n"),
    );
    let due = (latest - DAY).as_second();
    write_state(
        &env,
        serde_json::json!({"version": 1, "last_scheduled": due, "last_snapshot_scheduled": due}),
    );
    let mut d = Daemon::start(&env).await;
    d.wait_metric("felhom_selfcheck_ok 0").await;
    d.wait_metric("felhom_backup_skipped_total{reason=\"self-check violation\"} 1")
        .await;
    d.wait_metric("felhom_skipped_total{reason=\"self-check violation\"} 2")
        .await;
    d.wait_metric("felhom_snapshot_runs_total{result=\"skipped\"} 1")
        .await;
    let m = d.metrics().await;
    let foreign: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("felhom_selfcheck_violations{check=\"foreign-refused\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(foreign > 0, "{m}");
    let (code, body) = d.get("/healthz").await;
    assert_eq!(code, 503, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reasons: Vec<&str> = h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with(
            "self-check violation: [foreign-refused] GET /nodes/pve1/qemu/102/status/current: "
        )),
        "{reasons:?}"
    );
    // Nothing mutating reached PVE: no vzdump, no snapshot.
    assert_eq!(env.mutating_since(0), Vec::<String>::new());
    wait_state(&env, &d, |s| {
        s["runs"][0]["result"] == "skipped"
            && s["last_scheduled"].as_i64() == Some(latest.as_second())
            && s["last_snapshot_scheduled"].as_i64() == Some(latest.as_second())
    })
    .await;
    let s = state(&env);
    // The self-check time rode along with those writes.
    let checked = s["last_selfcheck"].as_i64().unwrap();
    assert!((checked - Timestamp::now().as_second()).abs() < 60, "{s}");
    assert!(
        s["runs"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("skipped (self-check violation): the last self-check found "),
        "{s}"
    );
    assert_eq!(s["consecutive_failures"], 0);
    let st = d.status().await;
    assert_eq!(st["inventory"]["last_snapshot_run"]["result"], "skipped");
    assert!(
        d.stderr()
            .contains("scheduled backups, snapshots and pruning are held back"),
        "{}",
        d.stderr()
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_snapshot_run_creates_prunes_and_shows_in_status_and_metrics() {
    let env = super::Env::start(with_snapshots(), 20.0).await;
    let (expr, latest) = daily();
    env.configure(
        T101,
        "",
        &format!("schedule = \"{expr}\"\ncatch-up = \"25h\""),
        &format!("[snapshots]\nschedule = \"{expr}\"\n[snapshots.retention]\nkeep-last = 2\n"),
    );
    write_state(
        &env,
        serde_json::json!({"version": 1, "last_snapshot_scheduled": (latest - DAY).as_second()}),
    );
    let mut d = Daemon::start(&env).await;
    d.wait_metric("felhom_snapshot_runs_total{result=\"ok\"} 1")
        .await;
    d.wait_metric("felhom_pruned_total{kind=\"snapshot\"} 2")
        .await;
    d.wait_metric("felhom_snapshots{owned=\"true\"} 2").await;
    d.wait_metric("felhom_snapshots{owned=\"false\"} 2").await;
    let m = d.metrics().await;
    assert!(
        m.contains("felhom_snapshot_last_success_timestamp_seconds "),
        "{m}"
    );
    assert!(m.contains("felhom_pruned_total{kind=\"backup\"} 0"), "{m}");
    let st = d.status().await;
    let inv = &st["inventory"];
    let newest = inv["newest_snapshot"]["name"].as_str().unwrap().to_string();
    assert!(newest.starts_with("felhom-"), "{st}");
    assert_ne!(newest, "felhom-20261117t110000z");
    assert_eq!(inv["last_prune"]["kind"], "snapshot");
    assert_eq!(inv["last_prune"]["removed"], 2);
    assert_eq!(
        inv["last_prune"]["names"],
        serde_json::json!(["felhom-20261114t110000z", "felhom-20261116t110000z"])
    );
    assert_eq!(inv["last_snapshot_run"]["result"], "ok");
    assert_eq!(inv["last_snapshot_run"]["detail"], newest.as_str());
    let mut want = vec![
        "before-upgrade".to_string(),
        "felhom-20261115t110000z".to_string(),
        "felhom-20261117t110000z".to_string(),
        newest,
    ];
    want.sort();
    assert_eq!(env.snapshot_names(101), want);
    // The fire time is persisted; no backup was due.
    wait_state(&env, &d, |s| {
        s["last_snapshot_scheduled"].as_i64() == Some(latest.as_second())
    })
    .await;
    assert!(
        !env.mutating_since(0).iter().any(|r| r.contains("vzdump")),
        "{:?}",
        env.mutating_since(0)
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_prunes_and_status_shows_the_newest_backup_and_the_prune() {
    let env = super::Env::start(super::with_backups(), 20.0).await;
    let (expr, latest) = daily();
    env.configure(
        T101,
        "",
        &format!("schedule = \"{expr}\"\ncatch-up = \"25h\"\n[backup.retention]\nkeep-last = 2"),
        "",
    );
    write_state(
        &env,
        serde_json::json!({"version": 1, "last_scheduled": (latest - DAY).as_second()}),
    );
    let mut d = Daemon::start(&env).await;
    d.wait_metric("felhom_backup_runs_total{result=\"ok\"} 1")
        .await;
    d.wait_metric("felhom_pruned_total{kind=\"backup\"} 2")
        .await;
    let t0 = Instant::now();
    let st = loop {
        let st = d.status().await;
        // At start the inventory shows the old newest backup; after the run, the new one.
        if st["inventory"]["newest_backup"]["time"]
            .as_i64()
            .is_some_and(|t| t > super::BASE)
        {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let inv = &st["inventory"];
    assert_eq!(inv["last_prune"]["kind"], "backup");
    assert_eq!(inv["last_prune"]["removed"], 2);
    assert!(inv["last_prune"].get("error").is_none(), "{st}");
    assert!(
        inv["newest_backup"]["name"]
            .as_str()
            .unwrap()
            .starts_with("pbs-main:backup/vm/101/"),
        "{st}"
    );
    assert_eq!(env.backups().len(), 4);
    assert_eq!(d.stop().await, 0);
}
