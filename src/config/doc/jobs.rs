//! The sections of the agent's periodic jobs besides the backup itself: `[backup.retention]`,
//! `[snapshots]` (with `[snapshots.retention]`) and `[self-check]`.
//!
//! Invariants: a retention table that is present keeps something less than everything (at least
//! one keep-* above 0: `keep-x = 0` means "option unused", which a reader easily takes for "keep
//! none", so a table of zeros is refused and "keep all" is written by leaving the table out);
//! every configured foreign VMID is a valid, distinct VMID other than `guest.vmid`.

use super::{ConfigError, Section, check_vmid};
use crate::config::values::{check_snapshot_marker, check_snapshot_prefix};
use crate::config::{
    DEFAULT_SELF_CHECK_SCHEDULE, DEFAULT_SNAPSHOT_MARKER, DEFAULT_SNAPSHOT_PREFIX, OnViolation,
    RetentionPolicy, SelfCheckConfig, SnapshotsConfig,
};

/// `<parent>.retention`, `None` when the table is absent. `items` ("backups", "snapshots") names
/// what is kept, for the all-zero message.
pub(super) fn build_retention(
    parent: &Section<'_, '_>,
    items: &str,
) -> Result<Option<RetentionPolicy>, ConfigError> {
    let Some(t) = parent.table("retention")? else {
        return Ok(None);
    };
    let mut policy = RetentionPolicy::default();
    for (key, slot) in [
        ("keep-last", &mut policy.keep_last),
        ("keep-hourly", &mut policy.keep_hourly),
        ("keep-daily", &mut policy.keep_daily),
        ("keep-weekly", &mut policy.keep_weekly),
        ("keep-monthly", &mut policy.keep_monthly),
        ("keep-yearly", &mut policy.keep_yearly),
    ] {
        *slot = t.count(key)?.unwrap_or(0);
    }
    if policy.keeps_all() {
        return Err(parent.err_at(
            "retention",
            t.span.clone(),
            format!(
                "no keep-* option is above 0, which would keep all {items} (0 means the option \
                 is unused, not \"keep none\"); remove the [{}] table to keep all {items}, or \
                 set at least one option, e.g. keep-last = 3",
                t.name
            ),
        ));
    }
    Ok(Some(policy))
}

pub(super) fn build_snapshots(s: &Section<'_, '_>) -> Result<SnapshotsConfig, ConfigError> {
    let prefix = s.parsed("prefix", |v| {
        check_snapshot_prefix(v).map(|()| v.to_owned())
    })?;
    let description = s.parsed("description", |v| {
        check_snapshot_marker(v).map(|()| v.to_owned())
    })?;
    Ok(SnapshotsConfig {
        schedule: s.schedule("schedule", "")?,
        prefix: prefix.unwrap_or_else(|| DEFAULT_SNAPSHOT_PREFIX.to_owned()),
        vmstate: s.bool("vmstate")?.unwrap_or(false),
        description: description.unwrap_or_else(|| DEFAULT_SNAPSHOT_MARKER.to_owned()),
        quiesce: s.bool("quiesce")?.unwrap_or(false),
        retention: build_retention(s, "snapshots")?.unwrap_or_default(),
    })
}

/// `own` is `guest.vmid`, which must not be listed as foreign.
pub(super) fn build_self_check(
    s: &Section<'_, '_>,
    own: Option<u32>,
) -> Result<SelfCheckConfig, ConfigError> {
    let schedule = s.schedule("schedule", DEFAULT_SELF_CHECK_SCHEDULE)?;
    let key = "foreign-vmids";
    let mut foreign_vmids: Vec<u32> = Vec::new();
    for (n, span) in s.integer_array(key)?.unwrap_or_default() {
        let vmid = check_vmid(n).map_err(|m| s.err_at(key, span.clone(), m))?;
        if own == Some(vmid) {
            return Err(s.err_at(
                key,
                span,
                format!(
                    "VMID {vmid} is this guest's own (guest.vmid); list only other guests, which \
                     the token must not reach"
                ),
            ));
        }
        if foreign_vmids.contains(&vmid) {
            return Err(s.err_at(key, span, format!("VMID {vmid} is listed twice")));
        }
        foreign_vmids.push(vmid);
    }
    let on_violation = s.choice(
        "on-violation",
        &[
            ("report", OnViolation::Report),
            ("refuse", OnViolation::Refuse),
        ],
        OnViolation::Report,
    )?;
    Ok(SelfCheckConfig {
        schedule,
        foreign_vmids,
        on_violation,
    })
}
