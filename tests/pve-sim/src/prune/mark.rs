//! Marking one backup group (one vmid + guest type on one storage), after pve-storage
//! `PVE::Storage::prune_mark_backup_group` and the grouping in `Plugin::prune_backups`.
//!
//! Invariants: one mark per input item, in input order; protected items are never `Keep` or
//! `Remove`; non-standard names are never part of the group.
//!
//! The exact PVE semantics reproduced here:
//! * Items whose name is not standard (`is_std_name` false) are left out of the group and marked
//!   `renamed`; protected items are marked `protected` (this wins over `renamed`). Protected
//!   standard-name items stay in the group but are pre-marked, so they neither take a slot of any
//!   keep-* option nor make their period "already covered".
//! * keep-all, or no positive keep-* value: every unmarked group item is `keep`.
//! * Otherwise the group is sorted newest first with a **stable** sort (Perl's mergesort), so
//!   equal ctimes keep the input order. PVE's input order is the storage listing order, i.e. for
//!   dir storages the file glob order (alphabetical) **[inferred]**.
//! * Then, in the order last, hourly, daily, weekly, monthly, yearly, each positive option N:
//!   periods ("ids") of items already marked `keep` are "already included"; walking the list,
//!   an item that is marked, or whose period is already included, is skipped; an item opening a
//!   new period is kept unless N periods were already opened by this option, which ends the
//!   option's walk; an item in a period this option opened earlier is marked `remove` at once
//!   (so a later option cannot keep it). keep-last's period is the ctime itself, so of two
//!   items with the same ctime only the first is kept.
//! * Periods use the local time of the node (`localtime`): hour/day/month/year, ISO week +
//!   ISO week-year (`%V`/`%G`), month/year, year. In a repeated DST hour both occurrences fall
//!   in the same hourly period.
//! * Everything still unmarked is `remove`.

use std::collections::HashSet;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use super::PruneOptions;

/// The outcome for one backup, as in the `mark` field of `GET …/prunebackups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Keep,
    Remove,
    Protected,
    Renamed,
}

/// One backup of the group. `ctime` is the name's timestamp for standard names (see
/// `parse_volname`), `std_name` is `archive_info`'s `is_std_name`.
#[derive(Clone, Debug)]
pub struct PruneItem {
    pub volid: String,
    pub ctime: i64,
    pub protected: bool,
    pub std_name: bool,
}

#[derive(Clone, Copy)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A period id. `Raw` is keep-last's id (the ctime itself) and also stands in for ctimes outside
/// jiff's range (years -9999..=9999), which then form a period of their own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Civil([i64; 4]),
    Raw(i64),
}

fn bucket(period: Period, ctime: i64, tz: &TimeZone) -> Bucket {
    let civil = |f: fn(&Zoned) -> [i64; 4]| match Timestamp::from_second(ctime) {
        Ok(ts) => Bucket::Civil(f(&ts.to_zoned(tz.clone()))),
        Err(_) => Bucket::Raw(ctime),
    };
    match period {
        Period::Last => Bucket::Raw(ctime),
        Period::Hourly => civil(|z| {
            [
                z.year().into(),
                z.month().into(),
                z.day().into(),
                z.hour().into(),
            ]
        }),
        Period::Daily => civil(|z| [z.year().into(), z.month().into(), z.day().into(), 0]),
        Period::Weekly => civil(|z| {
            let iso = z.date().iso_week_date();
            [iso.year().into(), iso.week().into(), 0, 0]
        }),
        Period::Monthly => civil(|z| [z.year().into(), z.month().into(), 0, 0]),
        Period::Yearly => civil(|z| [z.year().into(), 0, 0, 0]),
    }
}

/// Marks one backup group like `prune_mark_backup_group` (see the module doc for the exact
/// rules). `tz` is the node's local time zone. Returns one mark per item, in input order.
pub fn mark_group(items: &[PruneItem], opts: &PruneOptions, tz: &TimeZone) -> Vec<Mark> {
    let mut marks: Vec<Option<Mark>> = items
        .iter()
        .map(|it| {
            if it.protected {
                Some(Mark::Protected)
            } else if !it.std_name {
                Some(Mark::Renamed)
            } else {
                None
            }
        })
        .collect();
    let group: Vec<usize> = (0..items.len()).filter(|&i| items[i].std_name).collect();

    if opts.keeps_all() {
        for &i in &group {
            marks[i].get_or_insert(Mark::Keep);
        }
    } else {
        let mut order = group.clone();
        // Vec::sort_by is stable, like Perl's sort.
        order.sort_by(|&a, &b| items[b].ctime.cmp(&items[a].ctime));
        let passes = [
            (opts.keep_last, Period::Last),
            (opts.keep_hourly, Period::Hourly),
            (opts.keep_daily, Period::Daily),
            (opts.keep_weekly, Period::Weekly),
            (opts.keep_monthly, Period::Monthly),
            (opts.keep_yearly, Period::Yearly),
        ];
        for (count, period) in passes {
            let Some(n) = count.filter(|&n| n > 0) else {
                continue;
            };
            let ids: Vec<Bucket> = order
                .iter()
                .map(|&i| bucket(period, items[i].ctime, tz))
                .collect();
            mark_pass(&order, &ids, &mut marks, n);
        }
        for &i in &group {
            marks[i].get_or_insert(Mark::Remove);
        }
    }
    marks
        .into_iter()
        .map(|m| m.unwrap_or(Mark::Remove))
        .collect()
}

/// `$prune_mark`: one keep-* option over the sorted group. `ids[k]` is the period of `order[k]`.
fn mark_pass(order: &[usize], ids: &[Bucket], marks: &mut [Option<Mark>], n: u64) {
    let already: HashSet<Bucket> = order
        .iter()
        .zip(ids)
        .filter(|&(&i, _)| marks[i] == Some(Mark::Keep))
        .map(|(_, &id)| id)
        .collect();
    let mut newly: HashSet<Bucket> = HashSet::new();
    for (&i, &id) in order.iter().zip(ids) {
        if marks[i].is_some() || already.contains(&id) {
            continue;
        }
        if newly.contains(&id) {
            marks[i] = Some(Mark::Remove);
        } else {
            if newly.len() as u64 >= n {
                break;
            }
            newly.insert(id);
            marks[i] = Some(Mark::Keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mark::{Keep, Protected, Remove, Renamed};
    use super::*;

    fn ts(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }
    fn item(at: &str) -> PruneItem {
        PruneItem {
            volid: format!("local:backup/{at}"),
            ctime: ts(at),
            protected: false,
            std_name: true,
        }
    }
    fn items(ats: &[&str]) -> Vec<PruneItem> {
        ats.iter().map(|a| item(a)).collect()
    }
    fn budapest() -> TimeZone {
        TimeZone::get("Europe/Budapest").unwrap()
    }
    fn opts(s: &str) -> PruneOptions {
        PruneOptions::parse(s).unwrap()
    }

    #[test]
    fn week_of_dailies_keep_daily_3() {
        // input oldest first: the marks must come back in input order
        let it = items(&[
            "2026-11-17T15:00:01Z",
            "2026-11-18T15:00:01Z",
            "2026-11-19T15:00:01Z",
            "2026-11-20T15:00:01Z",
            "2026-11-21T15:00:01Z",
            "2026-11-22T15:00:01Z",
            "2026-11-23T03:00:00Z",
            "2026-11-23T15:00:01Z",
        ]);
        let m = mark_group(&it, &opts("keep-daily=3"), &TimeZone::UTC);
        assert_eq!(
            m,
            [Remove, Remove, Remove, Remove, Keep, Keep, Remove, Keep]
        );
    }

    #[test]
    fn keep_last_and_weekly_across_iso_year_boundary() {
        // 2026-12-28 (Mon) .. 2027-01-03 (Sun) is ISO week 53 of 2026; 2027-01-04 is 2027-W01.
        let it = items(&[
            "2027-01-04T12:00:00Z", // W01/2027
            "2027-01-03T12:00:00Z", // W53/2026
            "2027-01-02T12:00:00Z",
            "2027-01-01T12:00:00Z",
            "2026-12-31T12:00:00Z",
            "2026-12-30T12:00:00Z",
            "2026-12-29T12:00:00Z",
            "2026-12-28T12:00:00Z",
            "2026-12-21T12:00:00Z", // W52
            "2026-12-14T12:00:00Z", // W51
        ]);
        // keep-last takes the two newest; their weeks count as covered for keep-weekly
        let m = mark_group(&it, &opts("keep-last=2,keep-weekly=2"), &TimeZone::UTC);
        assert_eq!(
            m,
            [
                Keep, Keep, Remove, Remove, Remove, Remove, Remove, Remove, Keep, Keep
            ]
        );
        // keep-weekly alone: the newest of W53 is kept, the rest of W53 removed, W51 beyond N
        let m = mark_group(&it, &opts("keep-weekly=3"), &TimeZone::UTC);
        assert_eq!(
            m,
            [
                Keep, Keep, Remove, Remove, Remove, Remove, Remove, Remove, Keep, Remove
            ]
        );
    }

    #[test]
    fn keep_monthly_uses_local_time() {
        let it = items(&[
            "2026-03-10T12:00:00Z",
            "2026-03-01T12:00:00Z",
            "2026-02-10T12:00:00Z",
            "2026-01-31T23:30:00Z", // 2026-02-01 00:30 in Budapest
            "2025-12-31T12:00:00Z",
        ]);
        let o = opts("keep-monthly=3");
        assert_eq!(
            mark_group(&it, &o, &TimeZone::UTC),
            [Keep, Remove, Keep, Keep, Remove]
        );
        assert_eq!(
            mark_group(&it, &o, &budapest()),
            [Keep, Remove, Keep, Remove, Keep]
        );
    }

    #[test]
    fn keep_yearly_and_daily_combined() {
        let it = items(&[
            "2026-06-02T12:00:00Z",
            "2026-06-01T12:00:00Z",
            "2026-01-01T12:00:00Z",
            "2025-07-01T12:00:00Z",
            "2024-07-01T12:00:00Z",
            "2023-07-01T12:00:00Z",
        ]);
        // daily keeps 06-02 and 06-01; yearly: 2026 already covered, takes 2025 and 2024
        let m = mark_group(&it, &opts("keep-daily=2,keep-yearly=2"), &TimeZone::UTC);
        assert_eq!(m, [Keep, Keep, Remove, Keep, Keep, Remove]);
    }

    #[test]
    fn protected_is_not_counted_and_does_not_cover_its_period() {
        let mut it = items(&[
            "2026-11-23T15:00:00Z",
            "2026-11-23T14:00:00Z",
            "2026-11-22T15:00:00Z",
            "2026-11-21T15:00:00Z",
        ]);
        it[0].protected = true;
        assert_eq!(
            mark_group(&it, &opts("keep-last=2"), &TimeZone::UTC),
            [Protected, Keep, Keep, Remove]
        );
        // the protected newest backup of the 23rd does not cover the 23rd for keep-daily
        assert_eq!(
            mark_group(&it, &opts("keep-daily=1"), &TimeZone::UTC),
            [Protected, Keep, Remove, Remove]
        );
    }

    #[test]
    fn renamed_items_are_outside_the_group() {
        let mut it = items(&[
            "2026-11-24T00:00:00Z",
            "2026-11-23T15:00:00Z",
            "2026-11-22T15:00:00Z",
            "2026-11-25T00:00:00Z",
        ]);
        it[0].std_name = false;
        it[3].std_name = false;
        it[3].protected = true;
        assert_eq!(
            mark_group(&it, &opts("keep-last=1"), &TimeZone::UTC),
            [Renamed, Keep, Remove, Protected]
        );
    }

    #[test]
    fn keep_all_and_all_zero_keep_everything_but_preserve_marks() {
        let mut it = items(&[
            "2026-11-23T15:00:00Z",
            "2026-11-22T15:00:00Z",
            "2026-11-21T15:00:00Z",
        ]);
        it[1].protected = true;
        it[2].std_name = false;
        let expect = [Keep, Protected, Renamed];
        assert_eq!(mark_group(&it, &opts("keep-all=1"), &TimeZone::UTC), expect);
        assert_eq!(
            mark_group(&it, &PruneOptions::default(), &TimeZone::UTC),
            expect
        );
        let zeros = PruneOptions {
            keep_last: Some(0),
            keep_daily: Some(0),
            ..Default::default()
        };
        assert_eq!(mark_group(&it, &zeros, &TimeZone::UTC), expect);
        // keep-all=1 wins even next to a positive option (PVE's parser would reject that)
        let both = PruneOptions {
            keep_all: Some(true),
            keep_last: Some(1),
            ..Default::default()
        };
        assert_eq!(mark_group(&it, &both, &TimeZone::UTC), expect);
    }

    #[test]
    fn equal_ctimes_keep_input_order_and_share_a_keep_last_slot() {
        let mut it = items(&[
            "2026-11-23T15:00:00Z",
            "2026-11-23T15:00:00Z",
            "2026-11-22T15:00:00Z",
        ]);
        it[0].volid = "local:backup/vzdump-qemu-101-2026_11_23-15_00_00.vma.gz".into();
        it[1].volid = "local:backup/vzdump-qemu-101-2026_11_23-15_00_00.vma.zst".into();
        // same ctime = same keep-last id: the first in input order is kept, the second removed
        // at once, and the next slot goes to the older backup
        assert_eq!(
            mark_group(&it, &opts("keep-last=2"), &TimeZone::UTC),
            [Keep, Remove, Keep]
        );
        it.swap(0, 1);
        assert_eq!(
            mark_group(&it, &opts("keep-last=2"), &TimeZone::UTC),
            [Keep, Remove, Keep]
        );
    }

    #[test]
    fn hourly_across_spring_forward_in_budapest() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); local hour 2 does not exist
        let it = items(&[
            "2026-03-29T01:30:00Z", // 03:30 CEST
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T00:59:59Z", // 01:59:59 CET
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-28T23:30:00Z", // 00:30 CET
        ]);
        assert_eq!(
            mark_group(&it, &opts("keep-hourly=3"), &budapest()),
            [Keep, Remove, Keep, Remove, Keep]
        );
        // the same instants in UTC fall in hours 01, 01, 00, 00, 23 (of the day before)
        assert_eq!(
            mark_group(&it, &opts("keep-hourly=2"), &TimeZone::UTC),
            [Keep, Remove, Keep, Remove, Remove]
        );
    }

    #[test]
    fn hourly_across_fall_back_in_budapest_merges_the_repeated_hour() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); local 02:xx occurs twice
        let it = items(&[
            "2026-10-25T02:15:00Z", // 03:15 CET
            "2026-10-25T01:45:00Z", // 02:45 CET
            "2026-10-25T01:15:00Z", // 02:15 CET
            "2026-10-25T00:45:00Z", // 02:45 CEST
            "2026-10-25T00:15:00Z", // 02:15 CEST
        ]);
        let o = opts("keep-hourly=3");
        // both 02:xx hours are one period: only the newest of them is kept
        assert_eq!(
            mark_group(&it, &o, &budapest()),
            [Keep, Keep, Remove, Remove, Remove]
        );
        assert_eq!(
            mark_group(&it, &o, &TimeZone::UTC),
            [Keep, Keep, Remove, Keep, Remove]
        );
    }

    #[test]
    fn empty_group_and_mark_serialization() {
        assert!(mark_group(&[], &opts("keep-last=1"), &TimeZone::UTC).is_empty());
        assert_eq!(
            serde_json::to_string(&[Keep, Remove, Protected, Renamed]).unwrap(),
            r#"["keep","remove","protected","renamed"]"#
        );
    }
}
