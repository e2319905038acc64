//! `[backup.retention]`, `[snapshots]` (with `[snapshots.retention]`) and `[self-check]`:
//! defaults, conversion and exact error messages.

use super::{CFG, err, min, ok};
use crate::config::values::{check_snapshot_marker, check_snapshot_prefix};
use crate::config::*;
use crate::snapshots::naming::{Prefix, check_marker};

#[test]
fn absent_sections_get_defaults() {
    let c = ok(&min(""));
    assert_eq!(c.backup.retention, None);
    assert_eq!(
        c.self_check,
        SelfCheckConfig {
            schedule: Some(values::parse_schedule("0 */6 * * *").unwrap()),
            foreign_vmids: vec![],
            on_violation: OnViolation::Report,
        }
    );
    assert_eq!(
        c.self_check.schedule.as_ref().map(Schedule::as_str),
        Some("0 */6 * * *")
    );
    assert_eq!(
        c.snapshots,
        SnapshotsConfig {
            schedule: None,
            prefix: "felhom".into(),
            vmstate: false,
            description: "[felhom-agent]".into(),
            quiesce: false,
            retention: RetentionPolicy::default(),
        }
    );
    assert!(c.snapshots.retention.keeps_all());
    // Empty sections are the same as absent ones.
    let c2 = ok(&min("[snapshots]\n[self-check]\n"));
    assert_eq!((c2.snapshots, c2.self_check), (c.snapshots, c.self_check));
}

#[test]
fn every_key_is_converted() {
    let c = ok(&min("protected = true\n\
         [backup.retention]\nkeep-last = 3\nkeep-hourly = 0\nkeep-daily = 7\nkeep-weekly = 4\n\
         keep-monthly = 12\nkeep-yearly = 4294967295\n\
         [guest]\nvmid = 101\n\
         [snapshots]\nschedule = \"@hourly\"\nprefix = \"Auto_snap-1\"\nvmstate = true\n\
         description = \"owned by felhom \u{e9}\"\nquiesce = true\n\
         [snapshots.retention]\nkeep-hourly = 24\n\
         [self-check]\nschedule = \"\"\nforeign-vmids = [102, 100, 999999999]\n\
         on-violation = \"refuse\"\n"));
    assert!(c.backup.protected);
    assert_eq!(
        c.backup.retention,
        Some(RetentionPolicy {
            keep_last: 3,
            keep_hourly: 0,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: u32::MAX,
        })
    );
    let s = &c.snapshots;
    assert_eq!(
        s.schedule.as_ref().unwrap().fields(),
        ["0", "*", "*", "*", "*"]
    );
    assert_eq!(s.prefix, "Auto_snap-1");
    assert!(s.vmstate && s.quiesce);
    assert_eq!(s.description, "owned by felhom \u{e9}");
    assert_eq!(
        s.retention,
        RetentionPolicy {
            keep_hourly: 24,
            ..RetentionPolicy::default()
        }
    );
    assert_eq!(c.self_check.schedule, None);
    assert_eq!(c.self_check.foreign_vmids, vec![102, 100, 999_999_999]);
    assert_eq!(c.self_check.on_violation, OnViolation::Refuse);
    assert_eq!(c.self_check.on_violation.as_str(), "refuse");
    // Inline tables are the same document.
    let c = ok(&min(
        "retention = { keep-last = 1 }\n[snapshots]\nretention = { keep-daily = 2 }\n",
    ));
    assert_eq!(c.backup.retention.unwrap().keep_last, 1);
    assert_eq!(c.snapshots.retention.keep_daily, 2);
}

#[test]
fn retention_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[backup.retention]\n",
            "7:9: backup.retention: no keep-* option is above 0, which would keep all backups (0 \
             means the option is unused, not \"keep none\"); remove the [backup.retention] table \
             to keep all backups, or set at least one option, e.g. keep-last = 3",
        ),
        (
            "[backup.retention]\nkeep-last = 0\nkeep-daily = 0\n",
            "7:9: backup.retention: no keep-* option is above 0, which would keep all backups (0 \
             means the option is unused, not \"keep none\"); remove the [backup.retention] table \
             to keep all backups, or set at least one option, e.g. keep-last = 3",
        ),
        (
            "[snapshots.retention]\nkeep-yearly = 0\n",
            "7:12: snapshots.retention: no keep-* option is above 0, which would keep all \
             snapshots (0 means the option is unused, not \"keep none\"); remove the \
             [snapshots.retention] table to keep all snapshots, or set at least one option, e.g. \
             keep-last = 3",
        ),
        (
            "[backup.retention]\nkeep-last = -1\n",
            "8:13: backup.retention.keep-last: -1 is out of range: expected an integer from 0 to \
             4294967295",
        ),
        (
            "[backup.retention]\nkeep-daily = 4294967296\n",
            "8:14: backup.retention.keep-daily: 4294967296 is out of range: expected an integer \
             from 0 to 4294967295",
        ),
        (
            "[snapshots.retention]\nkeep-weekly = \"4\"\n",
            "8:15: snapshots.retention.keep-weekly: expected an integer, found string",
        ),
        (
            "[backup.retention]\nkeep-last = 1\nkeep-dialy = 7\n",
            "9:1: backup.retention.keep-dialy: unknown key \"keep-dialy\" (did you mean \
             \"keep-daily\"?); valid keys here: keep-last, keep-hourly, keep-daily, keep-weekly, \
             keep-monthly, keep-yearly",
        ),
        (
            "retention = 3\n",
            "7:13: backup.retention: expected a table ([backup.retention]), found integer",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(&min(extra)), format!("{CFG}:{want}"), "for {extra:?}");
    }
}

#[test]
fn snapshots_errors() {
    let long_prefix = format!("a{}", "b".repeat(23));
    let long_marker = "m".repeat(129);
    let cases: Vec<(String, String)> = vec![
        (
            "prefix = \"\"".into(),
            "8:10: snapshots.prefix: must not be empty: snapshots are named \
             <prefix>-YYYYMMDDtHHMMSSz, e.g. prefix = \"felhom\""
                .into(),
        ),
        (
            "prefix = \"1st\"".into(),
            "8:10: snapshots.prefix: prefix \"1st\" must start with a letter and contain only \
             letters, digits, '-' and '_' (PVE snapshot names)"
                .into(),
        ),
        (
            "prefix = \"a.b\"".into(),
            "8:10: snapshots.prefix: prefix \"a.b\" must start with a letter and contain only \
             letters, digits, '-' and '_' (PVE snapshot names)"
                .into(),
        ),
        (
            format!("prefix = \"{long_prefix}\""),
            format!(
                "8:10: snapshots.prefix: prefix \"{long_prefix}\" is 24 characters long: at \
                 most 23, so that <prefix>-YYYYMMDDtHHMMSSz fits PVE's 40-character snapshot \
                 names"
            ),
        ),
        (
            "description = \" \"".into(),
            "8:15: snapshots.description: must not be empty: it is how the agent recognises its \
             own snapshots"
                .into(),
        ),
        (
            "description = \"a\\nb\"".into(),
            "8:15: snapshots.description: must be a single line".into(),
        ),
        (
            "description = \"a\\tb\"".into(),
            "8:15: snapshots.description: must not contain control characters".into(),
        ),
        (
            format!("description = \"{long_marker}\""),
            "8:15: snapshots.description: is longer than 128 characters".into(),
        ),
        (
            "schedule = \"0 25 * * *\"".into(),
            "8:12: snapshots.schedule: invalid schedule \"0 25 * * *\": hour field \"25\": 25 is \
             out of range (allowed 0-23)"
                .into(),
        ),
        (
            "vmstate = 1".into(),
            "8:11: snapshots.vmstate: expected true or false, found integer".into(),
        ),
        (
            "retain = 3".into(),
            "8:1: snapshots.retain: unknown key \"retain\"; valid keys here: schedule, prefix, \
             vmstate, description, quiesce, retention"
                .into(),
        ),
    ];
    for (body, want) in &cases {
        assert_eq!(
            err(&min(&format!("[snapshots]\n{body}\n"))),
            format!("{CFG}:{want}"),
            "for {body:?}"
        );
    }
    // 23 characters is the limit, and fits PVE's 40.
    let fits = format!("a{}", "b".repeat(22));
    assert_eq!(
        ok(&min(&format!("[snapshots]\nprefix = \"{fits}\"\n")))
            .snapshots
            .prefix,
        fits
    );
    let marker = "\u{e9}".repeat(128);
    assert_eq!(
        ok(&min(&format!("[snapshots]\ndescription = \"{marker}\"\n")))
            .snapshots
            .description,
        marker
    );
}

#[test]
fn self_check_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[self-check]\nforeign-vmids = [100, 99]",
            "8:23: self-check.foreign-vmids: VMID 99 is out of range: expected 100 to 999999999",
        ),
        (
            "[self-check]\nforeign-vmids = [1000000000]",
            "8:18: self-check.foreign-vmids: VMID 1000000000 is out of range: expected 100 to \
             999999999",
        ),
        (
            "[self-check]\nforeign-vmids = [100, 102, 100]",
            "8:28: self-check.foreign-vmids: VMID 100 is listed twice",
        ),
        (
            "[guest]\nvmid = 101\n[self-check]\nforeign-vmids = [102, 101]",
            "10:23: self-check.foreign-vmids: VMID 101 is this guest's own (guest.vmid); list \
             only other guests, which the token must not reach",
        ),
        (
            "[self-check]\nforeign-vmids = 100",
            "8:17: self-check.foreign-vmids: expected an array of integers, found integer",
        ),
        (
            "[self-check]\nforeign-vmids = [100, \"102\"]",
            "8:23: self-check.foreign-vmids: expected an integer, found string",
        ),
        (
            "[self-check]\non-violation = \"abort\"",
            "8:16: self-check.on-violation: unknown variant \"abort\", expected one of report, \
             refuse",
        ),
        (
            "[self-check]\nschedule = \"@yearly\"",
            "8:12: self-check.schedule: unknown schedule macro \"@yearly\": expected @hourly, \
             @daily, @weekly or @monthly, a 5-field cron expression, or \"\" to disable",
        ),
        (
            "[self-chek]\n",
            "7:2: self-chek: unknown section \"self-chek\" (did you mean \"self-check\"?); valid \
             sections here: pve, guest, backup, quiesce, snapshots, self-check, state, health",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(&min(extra)), format!("{CFG}:{want}"), "for {extra:?}");
    }
    // Without guest.vmid nothing is known to be our own; the self-check excludes it at run time.
    let c = ok(&min("[self-check]\nforeign-vmids = [101]\n"));
    assert_eq!(c.self_check.foreign_vmids, vec![101]);
}

/// What the configuration accepts, the snapshot module accepts too (same prefix rule, and the
/// marker limit is within the module's).
#[test]
fn snapshot_names_agree_with_the_snapshot_module() {
    let long = "x".repeat(23);
    let too_long = "x".repeat(24);
    for p in [
        "felhom",
        "a",
        "A1",
        "a-b_c",
        "1a",
        "-a",
        "_a",
        "a.b",
        "a b",
        "",
        "\u{e9}t\u{e9}",
        &long,
        &too_long,
    ] {
        assert_eq!(
            check_snapshot_prefix(p).is_ok(),
            Prefix::new(p).is_ok(),
            "prefix {p:?}"
        );
    }
    for m in [
        "[felhom-agent]",
        "x",
        " ",
        "a\nb",
        &"m".repeat(128),
        &"m".repeat(129),
    ] {
        if check_snapshot_marker(m).is_ok() {
            assert_eq!(check_marker(m), Ok(()), "marker {m:?}");
        }
    }
    let s = ok(&min("")).snapshots;
    let settings = crate::snapshots::SnapshotSettings::new(
        &s.prefix,
        Some(&s.description),
        s.vmstate,
        s.retention,
        jiff::tz::TimeZone::UTC,
    )
    .unwrap();
    assert_eq!(settings.prefix.as_str(), DEFAULT_SNAPSHOT_PREFIX);
    assert_eq!(settings.marker, DEFAULT_SNAPSHOT_MARKER);
}
