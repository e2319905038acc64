//! Checks the health endpoint's `/metrics` and the shipped alerting rules with Prometheus's own
//! `promtool` (Debian package `prometheus`). When `promtool` is not on PATH the tests print a
//! loud SKIP line and pass; CI installs the package so they run there.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use felhom_agent::health::{Health, HealthRules, HealthServer, HealthView, ServerOptions};
use felhom_agent::state::{RunKind, RunRecord, RunResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/prometheus/felhom-agent.rules.yml"
);

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

/// Written to fd 2 directly (not `eprintln!`), so the line shows even though libtest captures
/// the output of passing tests.
fn skip(what: &str) {
    let line = format!(
        "\n*** SKIP {what}: promtool is not on PATH (install the Debian package `prometheus`) ***\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        let mut input = input;
        input.write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn fetch_metrics(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_string()
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let Some(promtool) = promtool() else {
        return skip("promtool check metrics");
    };
    let mut view = HealthView::new(env!("CARGO_PKG_VERSION"), 1_700_000_000);
    view.last_success = Some(1_700_000_000);
    view.next_run = Some(1_700_086_400);
    let mut record = RunRecord {
        kind: RunKind::Backup,
        started: 1_700_000_000,
        finished: 1_700_000_100,
        mode: "snapshot".into(),
        upid: Some("UPID:pve1:1".into()),
        node: Some("pve1".into()),
        result: RunResult::Ok,
        exitstatus: Some("OK".into()),
        warnings: 0,
        quiesce_window_seconds: Some(3.5),
        error: None,
        log_tail: vec![],
    };
    view.record_run(&record);
    record.result = RunResult::Failed;
    view.record_run(&record);
    view.record_skip("pending-task");
    view.record_pve_request(true);
    view.record_pve_request(false);
    view.self_check = Some(felhom_agent::health::SelfCheckSummary {
        ok: true,
        violations: vec![],
        last_run: 1_700_000_000,
    });
    let health = Health::new(view);
    let opts = ServerOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        HealthRules {
            max_backup_age: Duration::from_secs(26 * 3600),
            max_consecutive_failures: 2,
        },
        Duration::from_secs(60),
    );
    let server = HealthServer::bind(opts, health).await.unwrap();
    let addr = server.local_addr();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.serve(rx));

    let body = fetch_metrics(addr).await;
    for name in [
        "felhom_backup_last_success_timestamp_seconds",
        "felhom_backup_runs_total",
        "felhom_backup_duration_seconds",
        "felhom_quiesce_window_seconds",
        "felhom_next_backup_timestamp_seconds",
        "felhom_backup_skipped_total",
        "felhom_backup_consecutive_failures",
        "felhom_pve_requests_total",
        "felhom_build_info",
        "felhom_selfcheck_ok",
        "felhom_healthy",
        "felhom_pending_work",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing in\n{body}"
        );
    }
    let (ok, out) = run(
        Command::new(&promtool).args(["check", "metrics"]),
        Some(body.as_bytes()),
    );
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- metrics ---\n{body}"
    );
    assert_eq!(out.trim(), "", "promtool lint findings:\n{out}");

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[test]
fn promtool_accepts_the_rules() {
    let Some(promtool) = promtool() else {
        return skip("promtool check rules");
    };
    let (ok, out) = run(
        Command::new(&promtool).args(["check", "rules", RULES]),
        None,
    );
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = promtool() else {
        return skip("promtool test rules");
    };
    let dir = std::env::temp_dir().join(format!("felhom-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules_test.yml");
    std::fs::write(&file, rule_tests(Path::new(RULES))).unwrap();
    let (ok, out) = run(
        Command::new(&promtool).arg("test").arg("rules").arg(&file),
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "promtool test rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// promtool unit tests: each alert fires on its condition after its `for:`, and not before.
fn rule_tests(rules: &Path) -> String {
    let inst = r#"job="felhom-agent",instance="g1:9742""#;
    format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{{inst}}}'
        values: '1 0x20'
      - series: 'felhom_backup_consecutive_failures{{{inst}}}'
        values: '1 2x20'
      - series: 'felhom_backup_runs_total{{result="failed",{inst}}}'
        values: '0 1x20'
      - series: 'felhom_selfcheck_ok{{{inst}}}'
        values: '0x20'
      - series: 'felhom_pending_work{{{inst}}}'
        values: '1x40'
      - series: 'felhom_healthy{{{inst}}}'
        values: '1x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: FelhomAgentDown
        exp_alerts: []
      - eval_time: 11m
        alertname: FelhomAgentDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: felhom-agent, instance: "g1:9742"}}
            exp_annotations:
              summary: "felhom-agent on g1:9742 cannot be scraped"
              description: "The hub has not been able to scrape felhom-agent on g1:9742 for 10 minutes: the guest, the agent or the network path is down, so backups of this guest are not being watched."
      - eval_time: 6m
        alertname: FelhomBackupFailing
        exp_alerts:
          - exp_labels: {{severity: critical, job: felhom-agent, instance: "g1:9742"}}
            exp_annotations:
              summary: "Backups of g1:9742 keep failing"
              description: "2 backup runs of g1:9742 failed in a row. The reasons are in the agent's /status (last_runs[].error) and in the PVE task log."
      - eval_time: 4m
        alertname: FelhomBackupFailing
        exp_alerts: []
      - eval_time: 15m
        alertname: FelhomSelfCheckViolation
        exp_alerts:
          - exp_labels: {{severity: warning, job: felhom-agent, instance: "g1:9742"}}
            exp_annotations:
              summary: "felhom-agent self-check fails on g1:9742"
              description: "The agent's self-check on g1:9742 reports violations (e.g. the API token has more privileges than it needs). The list is in /healthz and /status."
      - eval_time: 29m
        alertname: FelhomPendingWorkStuck
        exp_alerts: []
      - eval_time: 30m
        alertname: FelhomPendingWorkStuck
        exp_alerts:
          - exp_labels: {{severity: critical, job: felhom-agent, instance: "g1:9742"}}
            exp_annotations:
              summary: "felhom-agent on g1:9742 has work owed from an earlier run"
              description: "For 30 minutes an earlier run of g1:9742 has left work owed: post hooks that never ran (services may still be quiesced) or a PVE task whose end was never seen. See /healthz for the details."
      - eval_time: 35m
        alertname: FelhomAgentUnhealthy
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'felhom_backup_last_success_timestamp_seconds{{{inst}}}'
        values: '3600x2000'
      - series: 'felhom_loop_last_tick_timestamp_seconds{{{inst}}}'
        values: '0+60x1000'
    alert_rule_test:
      - eval_time: 27h10m
        alertname: FelhomBackupStale
        exp_alerts: []
      - eval_time: 27h16m
        alertname: FelhomBackupStale
        exp_alerts:
          - exp_labels: {{severity: critical, job: felhom-agent, instance: "g1:9742"}}
            exp_annotations:
              summary: "No fresh backup of g1:9742"
              description: "The last successful backup of g1:9742 finished 1d 2h 16m 0s ago (more than 26h). Check /status on the agent and the PVE task log."
      - eval_time: 16h
        alertname: FelhomSchedulerStalled
        exp_alerts: []
"#,
        rules = rules.display()
    )
}
