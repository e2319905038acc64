//! The one retention engine: a pure planner that decides, for a set of timestamped items (own
//! snapshots, own backups), which are kept and which are removed — and says why.
//!
//! Semantics are Proxmox VE's prune (`PVE::Storage::prune_mark_backup_group`, reference §5):
//! * items not ours are outside the group and always kept ("not ours");
//! * protected items are always kept ("protected"); they take no slot of any keep-* option and
//!   do not make their period covered;
//! * an all-zero policy keeps every item ("keep-all");
//! * otherwise the group is sorted newest first (stable: equal timestamps keep input order) and
//!   the options run in the order last → hourly → daily → weekly (ISO week-year + week, `%G/%V`)
//!   → monthly → yearly. Each option with N > 0 walks the list; an item already decided, or
//!   whose period an earlier option already kept, is skipped; an item opening a new period is
//!   kept, unless the option has already opened N periods, which ends its walk; an item in a
//!   period this option opened before is removed at once (so a later option cannot keep it);
//!   periods without an item therefore do not count. keep-last's period is the timestamp itself;
//! * whatever is still undecided is removed ("no rule keeps it").
//!
//! Periods are computed in the given time zone (PVE: the node's local time). Timestamps outside
//! jiff's range form a period of their own. Invariant: [`plan`] returns one [`Planned`] per input
//! item, in input order; a protected or foreign item is never [`Decision::Remove`].

use std::collections::HashSet;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

/// keep-* counts; all zero keeps everything. Field names follow PVE's `prune-backups` keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl Policy {
    /// No positive keep-* value: everything is kept.
    pub fn keeps_all(&self) -> bool {
        self.rules().iter().all(|(_, n)| *n == 0)
    }

    /// The options with their counts, in PVE's processing order.
    pub fn rules(&self) -> [(Rule, u32); 6] {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Yearly, self.keep_yearly),
        ]
    }

    /// PVE's `prune-backups` property string: the positive options in processing order, or
    /// `keep-all=1` when none is positive (what PVE normalizes an all-zero value to).
    pub fn to_property_string(&self) -> String {
        if self.keeps_all() {
            return "keep-all=1".to_string();
        }
        self.rules()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.key()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One keep-* option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    /// `keep-last`, `keep-hourly`, …
    pub fn key(self) -> &'static str {
        match self {
            Rule::Last => "keep-last",
            Rule::Hourly => "keep-hourly",
            Rule::Daily => "keep-daily",
            Rule::Weekly => "keep-weekly",
            Rule::Monthly => "keep-monthly",
            Rule::Yearly => "keep-yearly",
        }
    }
}

/// One candidate: a snapshot or a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// Epoch seconds (snapshot `snaptime`, backup `ctime`).
    pub timestamp: i64,
    pub protected: bool,
    /// False for anything the agent does not own; such items are never removed.
    pub owned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Keep,
    Remove,
}

/// Why an item got its decision, machine-readable; [`Planned::reason`] is the human text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Why {
    NotOurs,
    Protected,
    KeepAll,
    /// Kept as the `n`-th period opened by `rule`; `period` is its label (e.g. `2026-W47`).
    Kept {
        rule: Rule,
        n: u32,
        period: String,
    },
    /// Removed by `rule` because a newer item already holds this period for it.
    Superseded {
        rule: Rule,
        period: String,
    },
    NoRule,
}

/// The decision for one item, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub id: String,
    pub timestamp: i64,
    pub decision: Decision,
    pub why: Why,
    /// e.g. "keep-daily #3 (2026-11-20)", "keep-last #1", "protected", "not ours",
    /// "no rule keeps it".
    pub reason: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Civil([i64; 4]),
    Raw(i64),
}

fn zoned(ts: i64, tz: &TimeZone) -> Option<Zoned> {
    Timestamp::from_second(ts)
        .ok()
        .map(|t| t.to_zoned(tz.clone()))
}

fn bucket(rule: Rule, ts: i64, tz: &TimeZone) -> Bucket {
    let z = match (rule, zoned(ts, tz)) {
        (Rule::Last, _) | (_, None) => return Bucket::Raw(ts),
        (_, Some(z)) => z,
    };
    let (y, m, d, h) = (
        i64::from(z.year()),
        i64::from(z.month()),
        i64::from(z.day()),
        i64::from(z.hour()),
    );
    Bucket::Civil(match rule {
        Rule::Hourly => [y, m, d, h],
        Rule::Daily => [y, m, d, 0],
        Rule::Weekly => {
            let iso = z.date().iso_week_date();
            [iso.year().into(), iso.week().into(), 0, 0]
        }
        Rule::Monthly => [y, m, 0, 0],
        // keep-last returned above
        Rule::Last | Rule::Yearly => [y, 0, 0, 0],
    })
}

/// The human label of an item's period for `rule`, in `tz`.
pub fn period_label(rule: Rule, ts: i64, tz: &TimeZone) -> String {
    let Some(z) = zoned(ts, tz) else {
        return format!("@{ts}");
    };
    match rule {
        Rule::Last => z.strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
        Rule::Hourly => z.strftime("%Y-%m-%d %H:00 %Z").to_string(),
        Rule::Daily => z.strftime("%Y-%m-%d").to_string(),
        Rule::Weekly => {
            let iso = z.date().iso_week_date();
            format!("{:04}-W{:02}", iso.year(), iso.week())
        }
        Rule::Monthly => z.strftime("%Y-%m").to_string(),
        Rule::Yearly => z.strftime("%Y").to_string(),
    }
}

/// Decides keep/remove for every item (see the module doc). Pure.
pub fn plan(items: &[Item], policy: &Policy, tz: &TimeZone) -> Vec<Planned> {
    let mut why: Vec<Option<Why>> = items
        .iter()
        .map(|it| {
            if !it.owned {
                Some(Why::NotOurs)
            } else if it.protected {
                Some(Why::Protected)
            } else if policy.keeps_all() {
                Some(Why::KeepAll)
            } else {
                None
            }
        })
        .collect();

    let mut order: Vec<usize> = (0..items.len()).filter(|&i| why[i].is_none()).collect();
    // Stable, like Perl's sort in PVE: equal timestamps keep input order.
    order.sort_by(|&a, &b| items[b].timestamp.cmp(&items[a].timestamp));

    for (rule, n) in policy.rules() {
        if n == 0 {
            continue;
        }
        let ids: Vec<Bucket> = order
            .iter()
            .map(|&i| bucket(rule, items[i].timestamp, tz))
            .collect();
        let already: HashSet<Bucket> = order
            .iter()
            .zip(&ids)
            .filter(|&(&i, _)| matches!(why[i], Some(Why::Kept { .. })))
            .map(|(_, &b)| b)
            .collect();
        let mut opened: HashSet<Bucket> = HashSet::new();
        for (&i, &b) in order.iter().zip(&ids) {
            if why[i].is_some() || already.contains(&b) {
                continue;
            }
            let period = period_label(rule, items[i].timestamp, tz);
            if opened.contains(&b) {
                why[i] = Some(Why::Superseded { rule, period });
            } else {
                if opened.len() >= n as usize {
                    break;
                }
                opened.insert(b);
                why[i] = Some(Why::Kept {
                    rule,
                    n: opened.len() as u32,
                    period,
                });
            }
        }
    }

    items
        .iter()
        .zip(why)
        .map(|(it, w)| {
            let w = w.unwrap_or(Why::NoRule);
            let decision = match w {
                Why::NotOurs | Why::Protected | Why::KeepAll | Why::Kept { .. } => Decision::Keep,
                Why::Superseded { .. } | Why::NoRule => Decision::Remove,
            };
            Planned {
                id: it.id.clone(),
                timestamp: it.timestamp,
                decision,
                reason: reason_text(&w),
                why: w,
            }
        })
        .collect()
}

/// The human text of a [`Why`].
pub fn reason_text(w: &Why) -> String {
    match w {
        Why::NotOurs => "not ours".into(),
        Why::Protected => "protected".into(),
        Why::KeepAll => "keep-all (no keep-* option set)".into(),
        Why::Kept {
            rule: Rule::Last,
            n,
            ..
        } => format!("keep-last #{n}"),
        Why::Kept { rule, n, period } => format!("{} #{n} ({period})", rule.key()),
        Why::Superseded { rule, period } => {
            format!("{} keeps a newer one of {period}", rule.key())
        }
        Why::NoRule => "no rule keeps it".into(),
    }
}

#[cfg(test)]
mod tests;
