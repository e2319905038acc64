//! `/metrics`: the view rendered as Prometheus metrics.
//!
//! Encoding is done by `prometheus-client` (OpenMetrics 1.0 text) from a registry built per
//! scrape out of a view snapshot, so nothing here holds a lock while formatting. For clients
//! that do not ask for OpenMetrics, [`to_prometheus_text`] turns that output into the classic
//! text format 0.0.4 (what `promtool check metrics` and plain `curl` users read).
//!
//! Invariants: every name is in the `felhom_` namespace and carries its unit; a gauge whose
//! value is unknown (no success yet, no next run, no self-check yet) is left out instead of
//! being reported as 0, so alert expressions never see a fake epoch 0.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::view::HealthView;

/// Content type of [`render_openmetrics`] output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`to_prometheus_text`] output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type LabelFamily = Family<[(&'static str, String); 1], Counter>;
type GaugeFamily = Family<[(&'static str, String); 1], Gauge>;

/// Own snapshots, snapshot runs, pruning and skipped side jobs.
fn register_jobs(reg: &mut Registry, view: &HealthView) {
    let inv = &view.inventory;
    let jobs = &view.counters.jobs;
    if let (Some(owned), Some(foreign)) = (inv.snapshots_owned, inv.snapshots_foreign) {
        let snaps = GaugeFamily::default();
        for (label, n) in [("true", owned), ("false", foreign)] {
            snaps
                .get_or_create(&[("owned", label.to_string())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        reg.register(
            "snapshots",
            "Snapshots of this guest, by whether they are the agent's own",
            snaps,
        );
    }
    let runs = LabelFamily::default();
    for (result, n) in jobs.snapshot_runs.labelled() {
        runs.get_or_create(&[("result", result.to_string())])
            .inc_by(n);
    }
    reg.register(
        "snapshot_runs",
        "Scheduled snapshot runs since the agent started, by result",
        runs,
    );
    if let Some(at) = inv.last_snapshot_success {
        reg.register_with_unit(
            "snapshot_last_success_timestamp",
            "When the last snapshot was created (Unix time)",
            Unit::Seconds,
            ConstGauge::new(at),
        );
    }
    let pruned = LabelFamily::default();
    for (kind, n) in jobs.pruned_labelled() {
        pruned
            .get_or_create(&[("kind", kind.to_string())])
            .inc_by(n);
    }
    reg.register(
        "pruned",
        "Own snapshots and backups removed by retention since the agent started, by kind",
        pruned,
    );
    let skipped = LabelFamily::default();
    for (reason, n) in &jobs.skipped {
        skipped
            .get_or_create(&[("reason", reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "skipped",
        "Scheduled jobs (backups, snapshots, pruning) skipped since the agent started, by reason",
        skipped,
    );
}

/// Renders the view (plus the verdicts computed by the caller) as an OpenMetrics exposition.
pub fn render_openmetrics(view: &HealthView, healthy: bool, pending_work: bool) -> String {
    let mut reg = Registry::with_prefix("felhom");

    reg.register(
        "build",
        "Build information of felhom-agent",
        Info::new([("version", view.version.clone())]),
    );
    if let Some(at) = view.last_success {
        reg.register_with_unit(
            "backup_last_success_timestamp",
            "End of the last run that produced a backup (Unix time)",
            Unit::Seconds,
            ConstGauge::new(at),
        );
    }
    if let Some(at) = view.next_run {
        reg.register_with_unit(
            "next_backup_timestamp",
            "When the next scheduled backup run is due (Unix time)",
            Unit::Seconds,
            ConstGauge::new(at),
        );
    }
    if let Some(d) = view.counters.last_backup_duration_seconds {
        reg.register_with_unit(
            "backup_duration",
            "Duration of the last backup run that reached PVE",
            Unit::Seconds,
            ConstGauge::new(d),
        );
    }
    if let Some(w) = view.counters.last_quiesce_window_seconds {
        reg.register_with_unit(
            "quiesce_window",
            "How long services were quiesced during the last run",
            Unit::Seconds,
            ConstGauge::new(w),
        );
    }

    let runs = LabelFamily::default();
    for (result, n) in view.counters.runs.labelled() {
        runs.get_or_create(&[("result", result.to_string())])
            .inc_by(n);
    }
    reg.register(
        "backup_runs",
        "Backup runs recorded since the agent started, by result",
        runs,
    );

    let skipped = LabelFamily::default();
    for (reason, n) in &view.counters.skipped {
        skipped
            .get_or_create(&[("reason", reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "backup_skipped",
        "Scheduled backups skipped since the agent started, by reason",
        skipped,
    );

    reg.register(
        "backup_consecutive_failures",
        "Failed or missed runs in a row",
        ConstGauge::new(i64::from(view.consecutive_failures)),
    );

    let pve = LabelFamily::default();
    let counts = view.counters.pve_requests;
    for (result, n) in [("ok", counts.ok), ("error", counts.error)] {
        pve.get_or_create(&[("result", result.to_string())])
            .inc_by(n);
    }
    reg.register(
        "pve_requests",
        "PVE API requests since the agent started, by result",
        pve,
    );

    if let Some(check) = &view.self_check {
        reg.register(
            "selfcheck_ok",
            "1 when the last self-check found no violation",
            ConstGauge::new(i64::from(check.ok)),
        );
        reg.register_with_unit(
            "selfcheck_last_run_timestamp",
            "When the last conclusive self-check ran (Unix time)",
            Unit::Seconds,
            ConstGauge::new(check.last_run),
        );
        let violations = GaugeFamily::default();
        for (c, n) in &view.self_check_violations {
            violations
                .get_or_create(&[("check", c.clone())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        reg.register(
            "selfcheck_violations",
            "Failing rows of the last self-check, by check",
            violations,
        );
    }
    register_jobs(&mut reg, view);
    reg.register(
        "healthy",
        "1 when /healthz reports healthy",
        ConstGauge::new(i64::from(healthy)),
    );
    reg.register(
        "pending_work",
        "1 when an earlier run left work owed (post hooks, an unfinished PVE task)",
        ConstGauge::new(i64::from(pending_work)),
    );
    reg.register_with_unit(
        "loop_last_tick_timestamp",
        "Last iteration of the scheduler loop (Unix time)",
        Unit::Seconds,
        ConstGauge::new(view.heartbeat.epoch),
    );
    reg.register(
        "loop_ticks",
        "Scheduler loop iterations since the agent started",
        ConstCounter::new(view.heartbeat.ticks),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Converts prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4:
/// drops `# UNIT` and `# EOF`, renames counter families to their `_total` sample name and
/// turns `info` families into gauges named `<name>_info`. Sample lines are unchanged.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (new_name, new_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((help_name, text)) = help.take()
                && help_name == name
            {
                out.push_str(&format!("# HELP {new_name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {new_name} {new_kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
