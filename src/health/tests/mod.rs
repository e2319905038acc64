mod expo;
mod hostile;
mod server;

use std::time::{Duration, Instant};

use super::metrics::{render_openmetrics, to_prometheus_text};
use super::*;
use crate::state::{
    GuestKind, Identity, JournalState, PendingTask, RunKind, RunRecord, RunResult, State,
    VzdumpRequest,
};

const T0: i64 = 1_700_000_000;
const H: i64 = 3600;

fn rules() -> HealthRules {
    HealthRules {
        max_backup_age: Duration::from_secs(26 * 3600),
        max_consecutive_failures: 2,
    }
}

fn run(result: RunResult, started: i64, finished: i64) -> RunRecord {
    RunRecord {
        kind: RunKind::Backup,
        started,
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

fn pending(upid: &str) -> PendingTask {
    PendingTask {
        upid: upid.into(),
        node: "pve1".into(),
        kind: RunKind::Backup,
        started: T0,
        reason: "timed out".into(),
    }
}

fn view() -> HealthView {
    HealthView::new("1.2.3", T0)
}

// ---- health_reasons ----

#[test]
fn fresh_view_is_healthy() {
    assert_eq!(
        health_reasons(&view(), T0 + H, &rules()),
        Vec::<String>::new()
    );
}

#[test]
fn recent_success_is_healthy_up_to_the_boundary() {
    let mut v = view();
    v.last_success = Some(T0);
    assert!(health_reasons(&v, T0 + 26 * H, &rules()).is_empty());
    // A success "in the future" (clock stepped back) is fresh.
    assert!(health_reasons(&v, T0 - 5 * H, &rules()).is_empty());
}

#[test]
fn stale_success_is_a_reason() {
    let mut v = view();
    v.last_success = Some(T0);
    assert_eq!(
        health_reasons(&v, T0 + 26 * H + 61, &rules()),
        vec![
            "last successful backup finished 1d2h01m ago, more than health.max-backup-age (1d2h00m)"
                .to_string()
        ]
    );
}

#[test]
fn never_succeeded_gets_one_max_age_of_grace_from_start() {
    let v = view();
    assert!(health_reasons(&v, T0 + 26 * H, &rules()).is_empty());
    assert_eq!(
        health_reasons(&v, T0 + 27 * H, &rules()),
        vec![
            "no successful backup recorded in 1d3h00m, more than health.max-backup-age (1d2h00m)"
                .to_string()
        ]
    );
}

#[test]
fn never_succeeded_counts_from_the_oldest_recorded_run_across_restarts() {
    // Restarted an hour ago, but the state remembers runs from two days ago.
    let mut v = HealthView::new("1.2.3", T0 + 47 * H);
    v.first_run_started = Some(T0);
    assert_eq!(
        health_reasons(&v, T0 + 48 * H, &rules()),
        vec![
            "no successful backup recorded in 2d0h00m, more than health.max-backup-age (1d2h00m)"
                .to_string()
        ]
    );
}

#[test]
fn consecutive_failures_at_the_limit_are_a_reason() {
    let mut v = view();
    v.last_success = Some(T0);
    v.consecutive_failures = 1;
    assert!(health_reasons(&v, T0 + H, &rules()).is_empty());
    v.consecutive_failures = 2;
    assert_eq!(
        health_reasons(&v, T0 + H, &rules()),
        vec!["2 consecutive failed runs (health.max-consecutive-failures is 2)".to_string()]
    );
}

#[test]
fn pending_task_is_a_reason_unless_the_current_job_tracks_it() {
    let upid = "UPID:pve1:0000A1B2:00C3D4E5:65F00000:vzdump:101:felhom@pve!agent:";
    let mut v = view();
    v.pending_task = Some(pending(upid));
    let expected = format!(
        "PVE task {upid} on node pve1 was started by this agent and has not been seen to finish (timed out)"
    );
    assert_eq!(health_reasons(&v, T0 + H, &rules()), vec![expected]);
    assert!(has_pending_work(&v));

    v.current_job = Some(CurrentJob {
        kind: RunKind::Backup,
        started: T0,
        upid: Some(upid.into()),
    });
    assert!(health_reasons(&v, T0 + H, &rules()).is_empty());
    assert!(!has_pending_work(&v));
}

#[test]
fn owed_work_is_a_reason_each() {
    let mut v = view();
    v.owed = vec!["run r1 owes post hooks: db".into(), "x".into()];
    assert_eq!(
        health_reasons(&v, T0 + H, &rules()),
        vec![
            "owed from an earlier run: run r1 owes post hooks: db".to_string(),
            "owed from an earlier run: x".to_string(),
        ]
    );
    assert!(has_pending_work(&v));
}

#[test]
fn self_check_violations_are_reasons() {
    let mut v = view();
    v.self_check = Some(SelfCheckSummary {
        ok: true,
        violations: vec![],
        last_run: T0,
    });
    assert!(health_reasons(&v, T0 + H, &rules()).is_empty());
    v.self_check = Some(SelfCheckSummary {
        ok: false,
        violations: vec![
            "token may Sys.Modify on /".into(),
            "state dir is 0755".into(),
        ],
        last_run: T0,
    });
    assert_eq!(
        health_reasons(&v, T0 + H, &rules()),
        vec![
            "self-check violation: token may Sys.Modify on /".to_string(),
            "self-check violation: state dir is 0755".to_string(),
        ]
    );
    v.self_check = Some(SelfCheckSummary {
        ok: false,
        violations: vec![],
        last_run: T0,
    });
    assert_eq!(
        health_reasons(&v, T0 + H, &rules()),
        vec!["self-check failed".to_string()]
    );
}

#[test]
fn reasons_come_in_a_fixed_order() {
    let mut v = view();
    v.self_check = Some(SelfCheckSummary {
        ok: false,
        violations: vec!["v".into()],
        last_run: T0,
    });
    v.owed = vec!["o".into()];
    v.pending_task = Some(pending("U"));
    v.consecutive_failures = 3;
    let r = health_reasons(&v, T0 + 30 * H, &rules());
    let heads: Vec<&str> = r.iter().map(|s| s.split(' ').next().unwrap()).collect();
    assert_eq!(heads, ["no", "3", "PVE", "owed", "self-check"]);
}

#[test]
fn liveness_follows_the_heartbeat() {
    let mut v = view();
    let base = Instant::now();
    v.tick(base, T0 + 10);
    assert_eq!(v.heartbeat.ticks, 1);
    assert_eq!(v.heartbeat.epoch, T0 + 10);
    let bound = Duration::from_secs(60);
    assert!(is_live(&v, base + Duration::from_secs(60), bound));
    assert!(!is_live(&v, base + Duration::from_secs(61), bound));
    // A `now` before the tick (cannot happen with a monotonic clock) is live.
    assert!(is_live(&v, base, bound));
}

#[test]
fn durations_format_compactly() {
    assert_eq!(fmt_secs(0), "0s");
    assert_eq!(fmt_secs(59), "59s");
    assert_eq!(fmt_secs(61), "1m01s");
    assert_eq!(fmt_secs(3600), "1h00m");
    assert_eq!(fmt_secs(93_784), "1d2h03m");
}

// ---- view ----

#[test]
fn apply_state_copies_the_state_and_keeps_the_last_runs() {
    let mut state = State {
        identity: Some(Identity {
            vmid: 101,
            node: "pve1".into(),
            kind: GuestKind::Qemu,
            name: Some("web".into()),
        }),
        ..State::default()
    };
    for i in 0..15 {
        state.push_run(run(RunResult::Failed, T0 + i * H, T0 + i * H + 60));
    }
    state.push_run(run(RunResult::Ok, T0 + 20 * H, T0 + 20 * H + 90));
    state.pending = Some(pending("U1"));
    let mut v = view();
    v.apply_state(&state);
    assert_eq!(v.identity, state.identity);
    assert_eq!(v.last_runs.len(), view::VIEW_RUNS);
    assert_eq!(v.last_runs.last().unwrap().result, RunResult::Ok);
    assert_eq!(v.last_runs[0].started, T0 + 6 * H);
    assert_eq!(v.first_run_started, Some(T0));
    assert_eq!(v.last_success, Some(T0 + 20 * H + 90));
    assert_eq!(v.consecutive_failures, 0);
    assert_eq!(v.pending_task.as_ref().unwrap().upid, "U1");
}

#[test]
fn record_run_counts_and_measures() {
    let mut v = view();
    let mut ok = run(RunResult::Ok, T0, T0 + 95);
    ok.quiesce_window_seconds = Some(2.5);
    v.record_run(&ok);
    v.record_run(&run(RunResult::Busy, T0 + H, T0 + H));
    let mut failed = run(RunResult::Failed, T0 + 2 * H, T0 + 2 * H + 7);
    failed.upid = None; // failed before reaching PVE: duration is kept from the last real run
    v.record_run(&failed);
    assert_eq!(
        v.counters.runs,
        RunCounts {
            ok: 1,
            busy: 1,
            failed: 1,
            ..RunCounts::default()
        }
    );
    assert_eq!(v.counters.last_backup_duration_seconds, Some(95.0));
    assert_eq!(v.counters.last_quiesce_window_seconds, Some(2.5));
    failed.upid = Some("U".into());
    v.record_run(&failed);
    assert_eq!(v.counters.last_backup_duration_seconds, Some(7.0));
}

#[test]
fn skip_reasons_are_bounded() {
    let mut v = view();
    for i in 0..20 {
        v.record_skip(&format!("r{i}"));
    }
    v.record_skip("r0");
    assert_eq!(v.counters.skipped.len(), view::MAX_SKIP_REASONS + 1);
    assert_eq!(v.counters.skipped["r0"], 2);
    assert_eq!(v.counters.skipped[view::OTHER_SKIP_REASON], 4);
    v.record_pve_request(true);
    v.record_pve_request(false);
    v.record_pve_request(true);
    assert_eq!(
        v.counters.pve_requests,
        PveRequestCounts { ok: 2, error: 1 }
    );
}

#[test]
fn idle_clears_the_current_job() {
    let mut v = view();
    v.current_job = Some(CurrentJob {
        kind: RunKind::Backup,
        started: T0,
        upid: None,
    });
    v.set_phase(Phase::Releasing);
    assert!(v.current_job.is_some());
    v.set_phase(Phase::Idle);
    assert_eq!(v.current_job, None);
}

#[test]
fn journal_descriptions() {
    let mut js = JournalState {
        run_id: "r7".into(),
        started: T0,
        posts_owed: vec!["db".into(), "web".into()],
        pending_upid: Some(("UPID:x".into(), "pve1".into())),
        requested_without_upid: Some(VzdumpRequest {
            at: T0 + 5,
            node: "pve1".into(),
        }),
        finished: false,
    };
    assert_eq!(
        describe_journal(&js),
        vec![
            "run r7 owes post hooks: db, web".to_string(),
            "run r7 started task UPID:x on node pve1; its end was not recorded".to_string(),
            format!(
                "run r7 requested vzdump on node pve1 at {} without receiving a UPID",
                T0 + 5
            ),
        ]
    );
    js.finished = true;
    assert!(describe_journal(&js).is_empty());
}

#[test]
fn health_handle_updates_and_snapshots() {
    let h = Health::new(view());
    let h2 = h.clone();
    h2.update(|v| v.next_run = Some(T0 + 99));
    assert_eq!(h.snapshot().next_run, Some(T0 + 99));
    assert_eq!(h.read(|v| v.version.clone()), "1.2.3");
}

// ---- metrics ----

fn busy_view() -> HealthView {
    let mut v = view();
    v.last_success = Some(T0 - 60);
    v.next_run = Some(T0 + 3600);
    v.consecutive_failures = 1;
    let mut ok = run(RunResult::Ok, T0 - 200, T0 - 60);
    ok.quiesce_window_seconds = Some(1.25);
    v.record_run(&ok);
    v.record_run(&run(RunResult::Failed, T0, T0 + 1));
    v.record_skip("catch-up-disabled");
    v.record_skip("say \"hi\"\\");
    v.record_pve_request(true);
    v.record_pve_request(false);
    v.self_check = Some(SelfCheckSummary {
        ok: false,
        violations: vec!["x".into()],
        last_run: T0,
    });
    v.tick(Instant::now(), T0 + 5);
    v
}

#[test]
fn openmetrics_output_parses_and_carries_the_values() {
    let om = render_openmetrics(&busy_view(), false, true);
    let e = expo::parse(&om, true);
    let expect = [
        ("felhom_build_info{version=\"1.2.3\"}", 1.0),
        (
            "felhom_backup_last_success_timestamp_seconds",
            (T0 - 60) as f64,
        ),
        ("felhom_next_backup_timestamp_seconds", (T0 + 3600) as f64),
        ("felhom_backup_duration_seconds", 140.0),
        ("felhom_quiesce_window_seconds", 1.25),
        ("felhom_backup_runs_total{result=\"ok\"}", 1.0),
        ("felhom_backup_runs_total{result=\"failed\"}", 1.0),
        ("felhom_backup_runs_total{result=\"missed\"}", 0.0),
        (
            "felhom_backup_skipped_total{reason=\"catch-up-disabled\"}",
            1.0,
        ),
        ("felhom_backup_skipped_total{reason=\"say \"hi\"\\\"}", 1.0),
        ("felhom_backup_consecutive_failures", 1.0),
        ("felhom_pve_requests_total{result=\"ok\"}", 1.0),
        ("felhom_pve_requests_total{result=\"error\"}", 1.0),
        ("felhom_selfcheck_ok", 0.0),
        ("felhom_selfcheck_last_run_timestamp_seconds", T0 as f64),
        ("felhom_snapshot_runs_total{result=\"ok\"}", 0.0),
        ("felhom_snapshot_runs_total{result=\"failed\"}", 0.0),
        ("felhom_snapshot_runs_total{result=\"skipped\"}", 0.0),
        ("felhom_pruned_total{kind=\"backup\"}", 0.0),
        ("felhom_pruned_total{kind=\"snapshot\"}", 0.0),
        ("felhom_healthy", 0.0),
        ("felhom_pending_work", 1.0),
        ("felhom_loop_ticks_total", 1.0),
        ("felhom_loop_last_tick_timestamp_seconds", (T0 + 5) as f64),
    ];
    for (key, value) in expect {
        assert_eq!(e.get(key), Some(value), "{key} in\n{om}");
    }
    assert_eq!(e.samples.len(), expect.len() + 3, "{om}"); // + warnings/busy/skipped runs
    assert_eq!(e.types["felhom_backup_runs"], "counter");
    assert_eq!(e.types["felhom_build"], "info");
    assert!(om.contains("# UNIT felhom_backup_duration_seconds seconds\n"));
}

#[test]
fn unknown_values_are_left_out_not_zero() {
    let om = render_openmetrics(&view(), true, false);
    let e = expo::parse(&om, true);
    for absent in [
        "felhom_backup_last_success_timestamp_seconds",
        "felhom_next_backup_timestamp_seconds",
        "felhom_backup_duration_seconds",
        "felhom_quiesce_window_seconds",
        "felhom_selfcheck_ok",
        "felhom_selfcheck_last_run_timestamp_seconds",
        "felhom_snapshot_last_success_timestamp_seconds",
        "felhom_snapshots{owned=\"true\"}",
    ] {
        assert_eq!(e.get(absent), None, "{absent}");
    }
    assert_eq!(e.get("felhom_healthy"), Some(1.0));
    assert_eq!(e.get("felhom_pending_work"), Some(0.0));
    assert_eq!(e.get("felhom_backup_runs_total{result=\"ok\"}"), Some(0.0));
}

#[test]
fn side_job_metrics_carry_the_inventory_counters_and_violations() {
    let mut v = view();
    v.self_check = Some(SelfCheckSummary {
        ok: false,
        violations: vec!["a".into(), "b".into()],
        last_run: T0,
    });
    v.self_check_violations = [("scope", 2u64), ("tls", 0)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    v.inventory.snapshots_owned = Some(3);
    v.inventory.snapshots_foreign = Some(1);
    v.inventory.last_snapshot_success = Some(T0 - 10);
    v.counters.jobs.snapshot_runs.ok = 4;
    v.counters.jobs.snapshot_runs.skipped = 1;
    v.counters.jobs.pruned_snapshots = 5;
    v.counters.jobs.pruned_backups = 2;
    v.counters.jobs.record_skip("locked (backup)");
    v.counters.jobs.record_skip("self-check violation");
    v.counters.jobs.record_skip("self-check violation");
    let om = render_openmetrics(&v, false, false);
    let e = expo::parse(&om, true);
    for (key, value) in [
        ("felhom_selfcheck_violations{check=\"scope\"}", 2.0),
        ("felhom_selfcheck_violations{check=\"tls\"}", 0.0),
        ("felhom_selfcheck_last_run_timestamp_seconds", T0 as f64),
        ("felhom_snapshots{owned=\"true\"}", 3.0),
        ("felhom_snapshots{owned=\"false\"}", 1.0),
        ("felhom_snapshot_runs_total{result=\"ok\"}", 4.0),
        ("felhom_snapshot_runs_total{result=\"failed\"}", 0.0),
        ("felhom_snapshot_runs_total{result=\"skipped\"}", 1.0),
        (
            "felhom_snapshot_last_success_timestamp_seconds",
            (T0 - 10) as f64,
        ),
        ("felhom_pruned_total{kind=\"snapshot\"}", 5.0),
        ("felhom_pruned_total{kind=\"backup\"}", 2.0),
        ("felhom_skipped_total{reason=\"locked (backup)\"}", 1.0),
        ("felhom_skipped_total{reason=\"self-check violation\"}", 2.0),
    ] {
        assert_eq!(e.get(key), Some(value), "{key} in\n{om}");
    }
    assert_eq!(e.types["felhom_snapshots"], "gauge");
    assert_eq!(e.types["felhom_pruned"], "counter");
}

#[test]
fn text_format_conversion() {
    let om = "# HELP felhom_build Build.\n# TYPE felhom_build info\nfelhom_build_info{version=\"1\"} 1\n\
              # HELP felhom_x Runs.\n# TYPE felhom_x counter\nfelhom_x_total{result=\"ok\"} 3\n\
              # HELP felhom_d_seconds Dur.\n# TYPE felhom_d_seconds gauge\n# UNIT felhom_d_seconds seconds\nfelhom_d_seconds 2.5\n# EOF\n";
    assert_eq!(
        to_prometheus_text(om),
        "# HELP felhom_build_info Build.\n# TYPE felhom_build_info gauge\nfelhom_build_info{version=\"1\"} 1\n\
         # HELP felhom_x_total Runs.\n# TYPE felhom_x_total counter\nfelhom_x_total{result=\"ok\"} 3\n\
         # HELP felhom_d_seconds Dur.\n# TYPE felhom_d_seconds gauge\nfelhom_d_seconds 2.5\n"
    );
    let full = to_prometheus_text(&render_openmetrics(&busy_view(), true, false));
    let e = expo::parse(&full, false);
    assert_eq!(e.types["felhom_backup_runs_total"], "counter");
    assert_eq!(e.types["felhom_build_info"], "gauge");
    assert_eq!(
        e.get("felhom_backup_runs_total{result=\"failed\"}"),
        Some(1.0)
    );
}
