//! The daemon (`felhom-agent run`) in the client namespace while PVE is unreachable (TCP
//! resets) and after the network is back: `/status` shows the failed manual run with the call
//! that failed, then the successful one; `/healthz`, `/status` and `/metrics` bodies join the
//! secret check; SIGTERM stops it promptly with exit 0.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::env::*;

/// `GET path` on the health endpoint inside the client namespace: (status, body).
fn get(env: &Env, port: u16, path: &str) -> (u16, String) {
    let path = path.to_string();
    let (code, body) = env.net().within(false, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let code: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (code, body)
    });
    env.record(&format!("health endpoint answer ({code})"), &body);
    (code, body)
}

async fn wait_status(env: &Env, port: u16, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let t0 = Instant::now();
    loop {
        let (_, body) = get(env, port, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if pred(&v) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reports_an_outage_and_the_recovery_without_leaking_the_secret() {
    let Some(env) = Env::with_net(20.0, |s| s).await else {
        return;
    };
    // A schedule twelve hours away: the daemon itself never runs a backup during the test.
    let hour = (jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .hour()
        + 12)
        % 24;
    env.configure("\n[health]\nlisten = \"127.0.0.1:0\"\n");
    let cfg = std::fs::read_to_string(env.dir.join("config.toml")).unwrap();
    std::fs::write(
        env.dir.join("config.toml"),
        cfg.replace(
            "task-timeout = \"2m\"",
            &format!("task-timeout = \"2m\"\nschedule = \"0 {hour} * * *\"\ntimezone = \"UTC\""),
        ),
    )
    .unwrap();
    let mut c = env.command(&["run"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut daemon = c.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (mut pipe, log2) = (daemon.stderr.take().unwrap(), log.clone());
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            log2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    const LISTEN: &str = "health endpoint listening on http://127.0.0.1:";
    let t0 = Instant::now();
    let port: u16 = loop {
        let l = log.lock().unwrap().clone();
        if let Some(at) = l.find(LISTEN) {
            let p: String = l[at + LISTEN.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            break p.parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{l}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // PVE unreachable: the manual run fails fast (connection refused) naming the call.
    env.net().reset();
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("GET /cluster/resources"), "{}", r.stdout);
    wait_status(&env, port, "the failed run shows", |v| {
        v["consecutive_failures"] == 1
            && v["last_runs"]
                .to_string()
                .contains("GET /cluster/resources")
    })
    .await;
    let (code, _) = get(&env, port, "/healthz");
    assert!(code == 200 || code == 503, "{code}");
    get(&env, port, "/metrics");
    // Back: the next manual run succeeds and the daemon shows it.
    env.net().restore();
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_status(&env, port, "the good run shows", |v| {
        v["consecutive_failures"] == 0 && v["last_success"].is_i64()
    })
    .await;
    let (code, body) = get(&env, port, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = get(&env, port, "/metrics");
    assert!(
        metrics.contains("felhom_backup_runs_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    signal(&daemon, libc::SIGTERM);
    let t0 = Instant::now();
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    reader.join().unwrap();
    env.record("daemon stderr", &log.lock().unwrap());
    env.assert_no_secret().await;
}
