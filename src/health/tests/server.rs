//! The health server on 127.0.0.1:0, spoken to over raw TCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::expo;
use super::{T0, rules};
use crate::config::HealthConfig;
use crate::health::{
    CurrentJob, Health, HealthServer, HealthView, Phase, SelfCheckSummary, ServeError,
    ServerOptions,
};
use crate::state::{GuestKind, Identity, RunKind};

/// Generous bound for "answers promptly" so a loaded CI machine does not flake.
pub(super) const PROMPT: Duration = Duration::from_secs(5);

pub(super) struct Running {
    pub(super) addr: SocketAddr,
    pub(super) health: Health,
    pub(super) stop: watch::Sender<bool>,
    pub(super) task: JoinHandle<()>,
}

pub(super) fn options() -> ServerOptions {
    ServerOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        rules(),
        Duration::from_secs(60),
    )
}

fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(super) async fn start(opts: ServerOptions) -> Running {
    let mut view = HealthView::new("9.8.7", now_epoch());
    view.last_success = Some(now_epoch() - 60);
    let health = Health::new(view);
    let server = HealthServer::bind(opts, health.clone()).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server.serve(rx));
    Running {
        addr,
        health,
        stop,
        task,
    }
}

#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Sends `raw` and reads until the server closes.
pub(super) async fn send(addr: SocketAddr, raw: &str) -> Reply {
    tokio::time::timeout(PROMPT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        parse_reply(&buf)
    })
    .await
    .expect("server answered in time")
}

pub(super) async fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"),
    )
    .await
}

#[tokio::test]
async fn livez_follows_the_heartbeat() {
    let mut opts = options();
    opts.livez_max_staleness = Duration::from_secs(2);
    let s = start(opts).await;
    let r = get(s.addr, "/livez", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let stale = Instant::now().checked_sub(Duration::from_secs(3)).unwrap();
    s.health.update(|v| v.heartbeat.instant = stale);
    let r = get(s.addr, "/livez", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "scheduler loop heartbeat is stale\n")
    );
    s.health.update(|v| v.tick(Instant::now(), now_epoch()));
    assert_eq!(get(s.addr, "/livez", "").await.status, 200);
}

#[tokio::test]
async fn healthz_ok_then_unhealthy_with_json_reasons() {
    let s = start(options()).await;
    let r = get(s.addr, "/healthz", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    s.health.update(|v| {
        v.consecutive_failures = 4;
        v.owed = vec!["run r1 owes post hooks: db".into()];
    });
    let r = get(s.addr, "/healthz", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "status": "unhealthy",
            "reasons": [
                "4 consecutive failed runs (health.max-consecutive-failures is 2)",
                "owed from an earlier run: run r1 owes post hooks: db"
            ]
        })
    );
}

#[tokio::test]
async fn status_serves_the_view_and_verdicts() {
    let s = start(options()).await;
    s.health.update(|v| {
        v.identity = Some(Identity {
            vmid: 101,
            node: "pve1".into(),
            kind: GuestKind::Lxc,
            name: None,
        });
        v.set_phase(Phase::WaitingForTask);
        v.current_job = Some(CurrentJob {
            kind: RunKind::Backup,
            started: T0,
            upid: Some("UPID:pve1:1".into()),
        });
        v.record_pve_request(true);
        v.warnings
            .push("state recovered from state.json.prev".into());
    });
    let r = get(s.addr, "/status", "").await;
    assert_eq!(r.status, 200);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["version"], "9.8.7");
    assert_eq!(
        j["identity"],
        serde_json::json!({"vmid": 101, "node": "pve1", "type": "lxc", "name": null})
    );
    assert_eq!(j["phase"], "waiting-for-task");
    assert_eq!(
        j["current_job"],
        serde_json::json!({"kind": "backup", "started": T0, "upid": "UPID:pve1:1"})
    );
    assert_eq!(
        j["counters"]["pve_requests"],
        serde_json::json!({"ok": 1, "error": 0})
    );
    assert_eq!(j["counters"]["runs"]["failed"], 0);
    assert_eq!(j["warnings"][0], "state recovered from state.json.prev");
    assert_eq!(j["self_check"], serde_json::Value::Null);
    assert_eq!(j["live"], true);
    assert_eq!(
        j["health"],
        serde_json::json!({"status": "healthy", "reasons": []})
    );
    assert_eq!(j["heartbeat"]["ticks"], 0);
    for key in [
        "started",
        "last_runs",
        "next_run",
        "last_success",
        "consecutive_failures",
        "pending_task",
        "owed",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {}", r.body);
    }
}

#[tokio::test]
async fn large_status_documents_are_served_whole() {
    let s = start(options()).await;
    let mut state = crate::state::State::default();
    for i in 0..12 {
        let mut rec = crate::state::RunRecord {
            kind: RunKind::Backup,
            started: T0 + i,
            finished: T0 + i + 1,
            mode: "snapshot".into(),
            upid: None,
            node: None,
            result: crate::state::RunResult::Failed,
            exitstatus: None,
            warnings: 0,
            quiesce_window_seconds: None,
            error: Some("boom".into()),
            log_tail: Vec::new(),
        };
        rec.log_tail = (0..60)
            .map(|n| format!("{i}/{n} {}", "x".repeat(100)))
            .collect();
        state.push_run(rec);
    }
    s.health.update(|v| v.apply_state(&state));
    let r = get(s.addr, "/status", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 64 * 1024, "{}", r.body.len());
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["last_runs"].as_array().unwrap().len(), 10);
    assert_eq!(
        j["last_runs"][9]["log_tail"][59].as_str().unwrap().len(),
        106
    );
}

#[tokio::test]
async fn metrics_in_both_formats_reflect_updates() {
    let s = start(options()).await;
    let next = now_epoch() + 3600;
    s.health.update(|v| {
        v.next_run = Some(next);
        v.record_skip("pending-task");
        v.self_check = Some(SelfCheckSummary {
            ok: true,
            violations: vec![],
            last_run: T0,
        });
    });
    let r = get(s.addr, "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let e = expo::parse(&r.body, false);
    assert_eq!(
        e.get("felhom_next_backup_timestamp_seconds"),
        Some(next as f64)
    );
    assert_eq!(
        e.get("felhom_backup_skipped_total{reason=\"pending-task\"}"),
        Some(1.0)
    );
    assert_eq!(e.get("felhom_selfcheck_ok"), Some(1.0));
    assert_eq!(e.get("felhom_healthy"), Some(1.0));
    assert_eq!(e.get("felhom_build_info{version=\"9.8.7\"}"), Some(1.0));

    s.health.update(|v| v.consecutive_failures = 2);
    let r = get(
        s.addr,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let e = expo::parse(&r.body, true);
    assert_eq!(e.get("felhom_backup_consecutive_failures"), Some(2.0));
    assert_eq!(e.get("felhom_healthy"), Some(0.0));
    assert_eq!(e.get("felhom_pending_work"), Some(0.0));
}

/// A 0600 file holding `content`, unique per call.
fn secret_file(content: &str) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "felhom-health-token-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
    path
}

#[tokio::test]
async fn bearer_token_guards_all_but_livez() {
    let path = secret_file("s3cret-token\n");
    let cfg = HealthConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        bearer_token_file: Some(path.clone()),
        max_backup_age: Duration::from_secs(26 * 3600),
        max_consecutive_failures: 2,
    };
    let opts = ServerOptions::from_config(&cfg, Duration::from_secs(60)).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(opts.rules, rules());
    assert_eq!(format!("{:?}", opts.bearer_token), "Some([redacted])");
    let s = start(opts).await;
    for path in ["/healthz", "/status", "/metrics"] {
        let r = get(s.addr, path, "").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (401, "unauthorized\n"),
            "{path}"
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"felhom-agent\"")
        );
        let r = get(s.addr, path, "Authorization: Bearer s3cret-tokeN\r\n").await;
        assert_eq!(r.status, 401, "{path} wrong token");
        let r = get(s.addr, path, "Authorization: Basic czNjcmV0LXRva2Vu\r\n").await;
        assert_eq!(r.status, 401, "{path} wrong scheme");
        let r = get(s.addr, path, "Authorization: Bearer s3cret-token\r\n").await;
        assert_eq!(r.status, 200, "{path} right token");
        assert!(!r.body.contains("s3cret"), "{path} leaks the token");
    }
    let r = get(s.addr, "/healthz", "Authorization: bearer s3cret-token\r\n").await;
    assert_eq!(r.status, 200, "scheme is case-insensitive");
    assert_eq!(get(s.addr, "/livez", "").await.status, 200);
}

#[tokio::test]
async fn unknown_paths_methods_and_bodies() {
    let s = start(options()).await;
    let r = get(s.addr, "/nope", "").await;
    assert_eq!((r.status, r.body.as_str()), (404, "not found\n"));
    let r = send(
        s.addr,
        "DELETE /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = send(
        s.addr,
        "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (413, "request bodies are not accepted\n")
    );
    assert_eq!(r.header("connection"), Some("close"));
    let r = send(
        s.addr,
        "GET /livez HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413);
    let r = send(
        s.addr,
        "HEAD /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let s = start(options()).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let raw = format!("GET /livez HTTP/1.1\r\nHost: t\r\n{big}\r\n");
    let outcome = tokio::time::timeout(PROMPT, async {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        // The server may close before taking everything; a write error is a refusal too.
        let _ = c.write_all(raw.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("connection ended in time");
    if !outcome.is_empty() {
        assert_eq!(parse_reply(&outcome).status, 431);
    }
    // The server still serves others.
    assert_eq!(get(s.addr, "/livez", "").await.status, 200);
}

#[tokio::test]
async fn slow_loris_does_not_block_livez() {
    let s = start(options()).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(c);
    }
    let began = Instant::now();
    let r = get(s.addr, "/livez", "").await;
    assert_eq!(r.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn at_the_limit_the_oldest_unserved_connection_is_evicted() {
    let mut opts = options();
    opts.max_connections = 2;
    let s = start(opts).await;
    // A keep-alive client that completed a request, then a slow one that did not.
    let mut served = TcpStream::connect(s.addr).await.unwrap();
    served
        .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PROMPT, served.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parse_reply(&buf[..n]).status, 200);
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // A third client is accepted at once (the header timeout is 5 s) and evicts the slow one.
    let began = Instant::now();
    let r = get(s.addr, "/livez", "").await;
    assert_eq!(r.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PROMPT, slow.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Err(_)) | Ok(Ok(0))),
        "slow client not closed: {closed:?}"
    );
    // The served keep-alive connection is still open and serves again.
    served
        .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(PROMPT, served.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parse_reply(&buf[..n]).status, 200);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_then_idles_out() {
    let mut opts = options();
    opts.header_read_timeout = Duration::from_millis(300);
    let s = start(opts).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(PROMPT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let r = parse_reply(&buf[..n]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    }
    // Idle: the server closes the connection after the header timeout.
    let mut rest = Vec::new();
    tokio::time::timeout(PROMPT, c.read_to_end(&mut rest))
        .await
        .expect("idle connection closed in time")
        .ok();
}

#[tokio::test]
async fn graceful_shutdown_stops_serving() {
    let s = start(options()).await;
    // An idle keep-alive connection must not hold the shutdown up.
    let idle = TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(get(s.addr, "/livez", "").await.status, 200);
    s.stop.send(true).unwrap();
    tokio::time::timeout(PROMPT, s.task)
        .await
        .expect("server stopped in time")
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err());
    drop(idle);
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let s = start(options()).await;
    let mut opts = options();
    opts.listen = s.addr;
    let err = HealthServer::bind(opts, s.health.clone())
        .await
        .unwrap_err();
    let ServeError::Bind { addr, .. } = &err;
    assert_eq!(*addr, s.addr);
    assert!(
        err.to_string().starts_with(&format!(
            "cannot listen on {} for the health endpoint (health.listen): ",
            s.addr
        )),
        "{err}"
    );
}
