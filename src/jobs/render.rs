//! Plain-text rendering of snapshot and backup listings, prune reports and a snapshot create
//! outcome: one table line per item with the retention decision and *why*. Pure; `--json`
//! prints the serialised structs instead.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::retention::Decision;
use crate::snapshots::{
    BackupListing, BackupPruneReport, CreateOutcome, DeleteResult, PruneReport, SnapshotListing,
};

/// Local time of an epoch second, e.g. `2026-11-18 12:06:40 +01:00`.
pub fn local_time(t: i64, tz: &TimeZone) -> String {
    Timestamp::from_second(t)
        .map(|ts| {
            ts.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

fn decision(d: Decision) -> &'static str {
    match d {
        Decision::Keep => "keep",
        Decision::Remove => "remove",
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| -> String {
        let n = cols.len();
        let mut s = String::new();
        for (i, c) in cols.into_iter().enumerate() {
            if i + 1 < n {
                let pad = widths[i] - c.chars().count() + 2;
                s.push_str(&c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&c);
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn snapshot_rows(l: &[crate::snapshots::SnapshotInfo], tz: &TimeZone) -> Vec<Vec<String>> {
    l.iter()
        .map(|s| {
            vec![
                s.name.clone(),
                local_time(s.snaptime, tz),
                if s.owned { "yes" } else { "no" }.to_string(),
                decision(s.decision).to_string(),
                s.reason.clone(),
            ]
        })
        .collect()
}

const SNAP_HEADER: [&str; 5] = ["NAME", "SNAPTIME", "OURS", "PLAN", "WHY"];

/// `snapshots list`.
pub fn snapshot_listing(l: &SnapshotListing, tz: &TimeZone) -> String {
    let mut out = format!(
        "snapshots of guest {} ({}) on {}",
        l.guest.vmid, l.guest.kind, l.guest.node
    );
    if let Some(lock) = &l.lock {
        out.push_str(&format!(" (locked: {lock})"));
    }
    out.push('\n');
    out.push_str(&table(&SNAP_HEADER, &snapshot_rows(&l.snapshots, tz)));
    let ours = l.snapshots.iter().filter(|s| s.owned).count();
    let remove = l
        .snapshots
        .iter()
        .filter(|s| s.decision == Decision::Remove)
        .count();
    out.push_str(&format!(
        "{} snapshot(s), {ours} ours, {remove} to remove by the retention policy\n",
        l.snapshots.len()
    ));
    out
}

/// `snapshots prune [--dry-run]`.
pub fn snapshot_prune(r: &PruneReport, tz: &TimeZone) -> String {
    let mut out = format!(
        "{} snapshots of guest {} ({}) on {}\n",
        if r.dry_run { "dry run: prune" } else { "prune" },
        r.guest.vmid,
        r.guest.kind,
        r.guest.node
    );
    out.push_str(&table(&SNAP_HEADER, &snapshot_rows(&r.snapshots, tz)));
    for a in &r.actions {
        let what = match &a.result {
            DeleteResult::Deleted { forced: false } => "deleted".to_string(),
            DeleteResult::Deleted { forced: true } => "deleted (force)".to_string(),
            DeleteResult::Failed { error } => format!("FAILED: {error}"),
            DeleteResult::NotAttempted { reason } => format!("not attempted: {reason}"),
        };
        out.push_str(&format!("{}: {what}\n", a.name));
    }
    if let Some(s) = &r.skipped {
        out.push_str(&format!("skipped: {}: {}\n", s.reason, s.hint));
    }
    let planned = r
        .snapshots
        .iter()
        .filter(|s| s.owned && s.decision == Decision::Remove)
        .count();
    if r.dry_run {
        out.push_str(&format!(
            "dry run: {planned} snapshot(s) would be removed; nothing was changed\n"
        ));
    } else {
        out.push_str(&format!(
            "{} of {planned} snapshot(s) removed\n",
            r.deleted().len()
        ));
    }
    out
}

/// `snapshots create`.
pub fn create_outcome(o: &CreateOutcome) -> String {
    match o {
        CreateOutcome::Created {
            name,
            upid,
            exitstatus,
        } => format!("created snapshot {name} (task {upid}, exit status {exitstatus})\n"),
        CreateOutcome::Skipped(s) => format!("skipped: {}: {}\n", s.reason, s.hint),
        CreateOutcome::Failed { name, error, .. } => {
            format!("snapshot {name} failed: {error}\n")
        }
    }
}

fn backup_rows(l: &BackupListing, tz: &TimeZone) -> Vec<Vec<String>> {
    l.backups
        .iter()
        .map(|b| {
            vec![
                b.volid.clone(),
                local_time(b.ctime, tz),
                if b.protected { "yes" } else { "no" }.to_string(),
                decision(b.decision).to_string(),
                b.reason.clone(),
            ]
        })
        .collect()
}

const BACKUP_HEADER: [&str; 5] = ["VOLID", "CTIME", "PROTECTED", "PLAN", "WHY"];

fn backup_body(l: &BackupListing, tz: &TimeZone) -> String {
    let mut out = table(&BACKUP_HEADER, &backup_rows(l, tz));
    for d in &l.disagreements {
        out.push_str(&format!("disagreement: {d}\n"));
    }
    out
}

/// `backups list`.
pub fn backup_listing(l: &BackupListing, tz: &TimeZone) -> String {
    let mut out = format!(
        "backups of guest {} ({}) on {} with prune-backups {}\n",
        l.guest.vmid, l.guest.kind, l.storage, l.prune_backups
    );
    out.push_str(&backup_body(l, tz));
    let remove = l
        .backups
        .iter()
        .filter(|b| b.decision == Decision::Remove)
        .count();
    out.push_str(&format!(
        "{} backup(s), {remove} to remove by the retention policy\n",
        l.backups.len()
    ));
    out
}

/// `backups prune [--dry-run]`.
pub fn backup_prune(r: &BackupPruneReport, tz: &TimeZone) -> String {
    let l = &r.listing;
    let mut out = format!(
        "{} backups of guest {} ({}) on {} with prune-backups {}\n",
        if r.dry_run { "dry run: prune" } else { "prune" },
        l.guest.vmid,
        l.guest.kind,
        l.storage,
        l.prune_backups
    );
    out.push_str(&backup_body(l, tz));
    let planned = l
        .backups
        .iter()
        .filter(|b| b.decision == Decision::Remove)
        .count();
    if r.dry_run {
        out.push_str(&format!(
            "dry run: {planned} backup(s) would be removed; nothing was changed\n"
        ));
    } else {
        if let Some(t) = &r.task_result {
            out.push_str(&format!("prune task: {t}\n"));
        }
        for v in &r.removed {
            out.push_str(&format!("removed {v}\n"));
        }
        out.push_str(&format!(
            "{} of {planned} backup(s) removed\n",
            r.removed.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_all_but_the_last_column() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "last col".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   last col\n");
    }

    #[test]
    fn local_time_in_the_given_zone() {
        let tz = TimeZone::get("Europe/Budapest").unwrap();
        assert_eq!(local_time(1_795_000_000, &tz), "2026-11-18 12:06:40 +01:00");
        assert_eq!(
            local_time(1_795_000_000, &TimeZone::UTC),
            "2026-11-18 11:06:40 +00:00"
        );
    }
}
