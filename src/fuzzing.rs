//! Hostile-input checks shared by the cargo-fuzz targets (`fuzz/`, run by `scripts/fuzz`) and
//! the proptest suite (`tests/hostile_input.rs`), so both enforce the same invariants.
//!
//! Each function takes arbitrary bytes, drives one parser or decoder with them and panics only
//! when an invariant is broken (the parser itself must never panic):
//! * [`config`]: file bytes → a config, or a `ConfigError` naming the file and a line:column;
//! * [`upid`]: text → a rejected UPID with its reason, or one that prints back and reparses;
//! * [`tasklog`]: vzdump log lines → one consistency point at most, sane progress, and a finite
//!   non-negative poll wait (it becomes a `Duration`);
//! * [`api_decode`]: a response body → every endpoint's type, or `ApiError::Decode` naming the
//!   call; decoded values through the code that consumes them (guest pick, identity proof);
//!   the same bytes through the error-response classifier;
//! * [`retention`]: items, policy and zone decoded from the bytes → a plan meeting the
//!   planner's invariants (see the function);
//! * [`guest_config`]: `key: value` lines → every guest config accessor, canonical MACs.
//!
//! Not part of the supported API (hidden from the docs); pure, no I/O.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::tz::{Offset, TimeZone};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup::logscan::{GuestType, LogScan, Mode, parse_duration};
use crate::backup::poll::PollPlan;
use crate::config::{self as cfg, ConfigError};
use crate::identity::{LocalFacts, pick_guest, verify};
use crate::pve::ApiError;
use crate::pve::client::decode;
use crate::pve::error::classify_response;
use crate::pve::guest_config::{
    GuestConfig, normalize_mac, parse_agent, parse_net, split_property_string,
};
use crate::pve::types::{
    BackupVolume, ClusterResource, GuestStatus, GuestType as PveGuestType, HaStatus, Permissions,
    PruneEntry, Snapshot, StorageStatus, TaskListEntry, TaskLogLine, TaskStart, TaskStatus,
    Version,
};
use crate::pve::upid::Upid;
use crate::retention::{Decision, Item, Policy, Rule, Why, plan};

/// The configuration loader after the file read ([`crate::config::parse_bytes`]).
pub fn config(data: &[u8]) {
    let path = Path::new("/etc/felhom-agent/config.toml");
    match cfg::parse_bytes(data.to_vec(), path) {
        Ok(c) => {
            let _ = (c.pve.api_base(), c.pve.token_user(), c.pve.token_name());
        }
        Err(
            e @ (ConfigError::Parse { line, column, .. }
            | ConfigError::Invalid { line, column, .. }),
        ) => {
            assert!(line >= 1 && column >= 1, "{e}");
            assert!(
                e.to_string().starts_with("/etc/felhom-agent/config.toml:"),
                "{e}"
            );
        }
        Err(e) => panic!("parsing a document returned a non-document error: {e}"),
    }
}

/// UPID parsing and printing.
pub fn upid(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<Upid>() {
        Ok(u) => {
            let printed = u.to_string();
            let again: Upid = printed.parse().expect("a printed UPID parses");
            assert_eq!(again, u);
            // Canonical apart from hex case and a 9-digit pstart with a leading zero.
            let nine_digit_pstart = s.split(':').nth(3).is_some_and(|p| p.len() == 9);
            assert!(
                printed.eq_ignore_ascii_case(s) || nine_digit_pstart,
                "{s} → {printed}"
            );
            let _ = (u.user_is_token(), u.owner_user(), u.vmid());
        }
        Err(e) => {
            assert_eq!(e.input, s);
            assert!(!e.reason.is_empty());
        }
    }
}

/// Task-log scanning plus the poll planner fed with what the scan found. The first byte picks
/// the guest type, the mode and whether a consistency point is awaited; the rest are lines.
pub fn tasklog(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let guest = if sel & 1 == 0 {
        GuestType::Qemu
    } else {
        GuestType::Lxc
    };
    let mode = match (sel >> 1) % 3 {
        0 => Mode::Snapshot,
        1 => Mode::Suspend,
        _ => Mode::Stop,
    };
    let text = String::from_utf8_lossy(rest);
    let mut scan = LogScan::new(guest, mode);
    let mut poll = PollPlan::new(0.0, sel & 0x80 != 0, None);
    let mut reached = 0;
    for (i, line) in text.split('\n').enumerate() {
        let now = i as f64;
        if scan.push(line) {
            reached += 1;
            assert_eq!(scan.consistency_point(), Some(i));
            poll.observe_cp(now);
        }
        if let Some(p) = scan.progress() {
            assert!(p.pct <= 100);
            if let Some(e) = p.elapsed {
                assert!(e.is_finite() && e >= 0.0, "elapsed {e} from {line:?}");
            }
            poll.observe_progress(now, p.pct, p.elapsed);
        }
        let next = poll.next(now);
        assert!(
            next.wait.is_finite() && next.wait >= 0.0,
            "wait {} after {line:?}",
            next.wait
        );
        let _ = Duration::from_secs_f64(next.wait);
        if let Some(d) = parse_duration(line) {
            assert!(d.is_finite() && d >= 0.0, "duration {d} from {line:?}");
        }
    }
    assert!(reached <= 1);
    assert_eq!(reached == 1, scan.consistency_point().is_some());
    if (guest, mode) == (GuestType::Lxc, Mode::Stop) {
        assert_eq!(scan.consistency_point(), None);
    }
    assert!(scan.error_tail(5).len() <= 5);
    assert_eq!(scan.len(), text.split('\n').count());
}

const CALL: &str = "GET /nodes/pve1/qemu/101/status/current";

fn decodes<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    match decode::<T>(CALL, body) {
        Ok((v, _total)) => Some(v),
        Err(ApiError::Decode { call, message }) => {
            assert_eq!(call, CALL);
            assert!(!message.is_empty());
            None
        }
        Err(e) => panic!("decode returned a non-decode error: {e:?}"),
    }
}

/// Every response type the agent reads, from the same body; then the error classifier.
pub fn api_decode(body: &[u8]) {
    let _ = decodes::<Version>(body);
    let resources = decodes::<Vec<ClusterResource>>(body).unwrap_or_default();
    let perms = decodes::<Permissions>(body);
    if let Some(p) = &perms {
        let _ = (p.has("/vms/101", "VM.Backup"), p.vmids());
    }
    // Identity discovery relies on a picked guest having a vmid and a type.
    for configured in [None, Some(101)] {
        if let Ok(g) = pick_guest(&resources, perms.as_ref(), configured) {
            assert!(g.vmid.is_some() && g.guest_type().is_some(), "{g:?}");
        }
    }
    let _ = decodes::<HaStatus>(body);
    if let Some(s) = decodes::<GuestStatus>(body) {
        let _ = s.is_running();
    }
    if let Some(o) = decodes::<TaskStatus>(body).and_then(|s| s.outcome()) {
        let _ = o.is_success();
    }
    let _ = decodes::<Vec<TaskLogLine>>(body);
    for t in decodes::<Vec<TaskListEntry>>(body).unwrap_or_default() {
        let _ = t.parsed_upid();
    }
    let _ = decodes::<TaskStart>(body);
    for s in decodes::<Vec<Snapshot>>(body).unwrap_or_default() {
        let _ = s.is_current();
    }
    for s in decodes::<Vec<StorageStatus>>(body).unwrap_or_default() {
        let _ = s.has_content("backup");
    }
    for v in decodes::<Vec<BackupVolume>>(body).unwrap_or_default() {
        let _ = v.is_protected();
    }
    let _ = decodes::<Vec<PruneEntry>>(body);
    if let Some(c) = decodes::<GuestConfig>(body) {
        let _ = (c.name(), c.lock(), c.smbios_uuid(), c.agent());
        let local = LocalFacts {
            product_uuid: Some("9d9c1b2a-1111-4222-8333-444455556666".into()),
            macs: vec!["BC:24:11:AA:BB:CC".into()],
        };
        let _ = verify(PveGuestType::Qemu, 101, &c, &local);
        let _ = verify(PveGuestType::Lxc, 101, &c, &local);
    }
    let _ = decodes::<String>(body);
    let _ = decodes::<Value>(body);

    let status = body.first().map_or(500, |b| 400 + u16::from(*b % 200));
    let reason = body.get(1..8).map(String::from_utf8_lossy);
    let e = classify_response(CALL, status, reason.as_deref(), body);
    assert_eq!(e.call(), CALL);
    let _ = (e.to_string(), e.is_retryable());
}

/// 2023-11-14T22:13:20Z, a base for dense timestamps.
const BASE: i64 = 1_700_000_000;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Mostly small keep counts (so rules run out), sometimes huge ones.
fn keep_count(b: u8) -> u32 {
    if b >= 0xF0 {
        u32::MAX - u32::from(b & 0xF)
    } else {
        u32::from(b % 9)
    }
}

fn zone(b: u8) -> TimeZone {
    match b % 5 {
        0 => TimeZone::UTC,
        1 => TimeZone::fixed(Offset::constant(14)),
        2 => TimeZone::fixed(Offset::constant(-12)),
        3 => TimeZone::get("Europe/Budapest").unwrap_or(TimeZone::UTC),
        _ => TimeZone::get("America/St_Johns").unwrap_or(TimeZone::UTC),
    }
}

/// Decodes a policy (6 bytes), a zone (1 byte) and items (a flags byte — bit 0 protected,
/// bit 1 foreign, bits 4–5 the timestamp's encoding — then 0, 2, 4 or 8 bytes of timestamp).
pub fn retention_input(data: &[u8]) -> Option<(Vec<Item>, Policy, TimeZone)> {
    let mut b = Bytes(data);
    let head = b.take::<7>()?;
    let policy = Policy {
        keep_last: keep_count(head[0]),
        keep_hourly: keep_count(head[1]),
        keep_daily: keep_count(head[2]),
        keep_weekly: keep_count(head[3]),
        keep_monthly: keep_count(head[4]),
        keep_yearly: keep_count(head[5]),
    };
    let mut items: Vec<Item> = Vec::new();
    while let Some([flags]) = b.take::<1>() {
        let timestamp = match (flags >> 4) & 3 {
            0 => match b.take::<2>() {
                Some(v) => BASE + i64::from(u16::from_le_bytes(v)) * 900,
                None => break,
            },
            1 => match b.take::<4>() {
                Some(v) => BASE + i64::from(i32::from_le_bytes(v)),
                None => break,
            },
            2 => match b.take::<8>() {
                Some(v) => i64::from_le_bytes(v),
                None => break,
            },
            _ => items.last().map_or(BASE, |i| i.timestamp),
        };
        items.push(Item {
            id: format!("item{}", items.len()),
            timestamp,
            protected: flags & 1 != 0,
            owned: flags & 2 == 0,
        });
    }
    Some((items, policy, zone(head[6])))
}

/// The retention planner on decoded input ([`retention_input`]); see [`check_plan`].
pub fn retention(data: &[u8]) {
    if let Some((items, policy, tz)) = retention_input(data) {
        check_plan(&items, &policy, &tz);
    }
}

/// The planner's invariants: one decision per item in input order; foreign and protected
/// items kept; an all-zero policy keeps everything; otherwise the newest candidate is kept,
/// no rule keeps more periods than its count (numbered 1..), only candidates are kept by a
/// rule, and a superseded item has a kept item of the same rule and period at least as new
/// (not checked for keep-hourly, whose label carries the zone abbreviation); deterministic.
pub fn check_plan(items: &[Item], policy: &Policy, tz: &TimeZone) {
    let out = plan(items, policy, tz);
    assert_eq!(out, plan(items, policy, tz), "deterministic");
    assert_eq!(out.len(), items.len());
    for (it, p) in items.iter().zip(&out) {
        assert_eq!((&it.id, it.timestamp), (&p.id, p.timestamp));
        if !it.owned {
            assert_eq!((p.decision, &p.why), (Decision::Keep, &Why::NotOurs));
        } else if it.protected {
            assert_eq!((p.decision, &p.why), (Decision::Keep, &Why::Protected));
        } else if policy.keeps_all() {
            assert_eq!((p.decision, &p.why), (Decision::Keep, &Why::KeepAll));
        }
        assert!(!p.reason.is_empty());
    }
    if policy.keeps_all() {
        return;
    }
    let candidates: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].owned && !items[i].protected)
        .collect();
    let newest = candidates.iter().copied().reduce(|a, c| {
        if items[c].timestamp > items[a].timestamp {
            c
        } else {
            a
        }
    });
    if let Some(i) = newest {
        assert_eq!(out[i].decision, Decision::Keep, "newest {:?}", items[i]);
    }
    let mut kept_by_rules = 0usize;
    for (rule, n) in policy.rules() {
        let mut ns: Vec<u32> = out
            .iter()
            .filter_map(|p| match &p.why {
                Why::Kept { rule: r, n, .. } if *r == rule => Some(*n),
                _ => None,
            })
            .collect();
        ns.sort_unstable();
        assert!(
            ns.len() as u64 <= u64::from(n),
            "{rule:?} kept {ns:?} > {n}"
        );
        assert!(
            (1..).zip(&ns).all(|(k, &m)| k == m),
            "{rule:?} numbering {ns:?}"
        );
        kept_by_rules += ns.len();
    }
    let kept = candidates
        .iter()
        .filter(|&&i| out[i].decision == Decision::Keep)
        .count();
    assert_eq!(kept, kept_by_rules);
    for p in &out {
        if let Why::Superseded { rule, period } = &p.why
            && *rule != Rule::Hourly
        {
            let held = out.iter().any(|k| {
                matches!(&k.why, Why::Kept { rule: r, period: q, .. }
                    if r == rule && q == period && k.timestamp >= p.timestamp)
            });
            assert!(held, "{p:?} superseded without a newer kept item");
        }
    }
}

fn is_canonical_mac(m: &str) -> bool {
    m.len() == 17
        && m.bytes().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                b == b':'
            } else {
                b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
            }
        })
}

/// Guest config lines (`key: value`, PVE's config file shape) and their property strings.
pub fn guest_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut raw = BTreeMap::new();
    for line in text.lines() {
        for (k, _) in split_property_string(line) {
            assert!(k.is_none_or(|k| !k.contains('=')));
        }
        if let Some(m) = normalize_mac(line) {
            assert!(is_canonical_mac(&m), "{m}");
        }
        if let Some(nif) = parse_net("net0", line) {
            assert!(is_canonical_mac(&nif.mac), "{nif:?}");
        }
        let _ = parse_agent(line);
        if let Some((k, v)) = line.split_once(':') {
            raw.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
        }
    }
    let cfg = GuestConfig { raw };
    let _ = (cfg.name(), cfg.lock(), cfg.agent());
    if let Some(u) = cfg.smbios_uuid() {
        assert_eq!(u, u.to_ascii_lowercase());
    }
    let nets = cfg.net_interfaces();
    let numbers: Vec<u32> = nets
        .iter()
        .map(|n| {
            n.key
                .strip_prefix("net")
                .and_then(|d| d.parse().ok())
                .expect("netN key")
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
    assert!(nets.iter().all(|n| is_canonical_mac(&n.mac)));
}
