//! Pure parts: names, ownership, the snapshot plan, lock message parsing.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::naming::{NameError, Prefix, is_valid_snapshot_name, ownership};
use super::wait::locked_by;
use super::*;
use crate::pve::types::Snapshot;
use crate::retention::{Decision, Policy};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[test]
fn names_are_valid_pve_snapshot_names_and_round_trip() {
    let p = Prefix::new("felhom").unwrap();
    let n = p.name_at(at("2026-11-23T15:00:00Z"));
    assert_eq!(n, "felhom-20261123t150000z");
    assert!(is_valid_snapshot_name(&n));
    assert_eq!(p.parse(&n), Some(at("2026-11-23T15:00:00Z")));
    assert_eq!(
        p.parse("felhom-20261123T150000Z"),
        Some(at("2026-11-23T15:00:00Z"))
    );
    for bad in [
        "felhom-20261123t150000",
        "felhom-20261323t150000z",
        "felhomx-20261123t150000z",
        "felhom-20261123x150000z",
        "felhom-2026112t3150000z",
        "felhom20261123t150000z",
    ] {
        assert_eq!(p.parse(bad), None, "{bad}");
    }
    let longest = Prefix::new(&"a".repeat(23)).unwrap();
    let n = longest.name_at(at("2099-12-31T23:59:59Z"));
    assert_eq!(n.len(), 40);
    assert!(is_valid_snapshot_name(&n));
}

#[test]
fn prefixes_that_would_make_invalid_names_are_refused() {
    assert_eq!(Prefix::new(""), Err(NameError::Empty));
    assert_eq!(
        Prefix::new(&"a".repeat(24)),
        Err(NameError::TooLong("a".repeat(24)))
    );
    for bad in ["1abc", "-abc", "_x", "fel hom", "felhöm", "fel.hom", "a/b"] {
        assert_eq!(
            Prefix::new(bad),
            Err(NameError::Charset(bad.into())),
            "{bad}"
        );
    }
    assert!(Prefix::new("Felhom_A-1").is_ok());
    assert_eq!(
        NameError::TooLong("x".into()).to_string(),
        "[snapshots] prefix 'x' is too long: at most 23 characters, so that '<prefix>-YYYYMMDDtHHMMSSz' fits PVE's 40-character snapshot names"
    );
    assert!(
        SnapshotSettings::new(
            "felhom",
            Some("two\nlines"),
            false,
            Policy::default(),
            TimeZone::UTC
        )
        .is_err()
    );
    assert!(
        SnapshotSettings::new("felhom", Some(" "), false, Policy::default(), TimeZone::UTC)
            .is_err()
    );
}

#[test]
fn reserved_and_malformed_names_are_invalid() {
    for bad in ["current", "vzdump", "PENDING", "pending", "a", "1a", "a.b"] {
        assert!(!is_valid_snapshot_name(bad), "{bad}");
    }
    assert!(!is_valid_snapshot_name(&"a".repeat(41)));
}

#[test]
fn ownership_needs_prefix_name_and_marker() {
    let p = Prefix::new("felhom").unwrap();
    let m = "[felhom-agent]";
    assert_eq!(
        ownership(
            &p,
            m,
            "felhom-20261123t150000z",
            "[felhom-agent] rolling snapshot"
        ),
        Ok(())
    );
    assert_eq!(
        ownership(&p, m, "felhom-20261123t150000z", "my own"),
        Err("not ours: description lacks the marker [felhom-agent]".into())
    );
    assert_eq!(
        ownership(&p, m, "before-upgrade", "[felhom-agent]"),
        Err("not ours: name is not felhom-YYYYMMDDtHHMMSSz".into())
    );
    assert_eq!(
        ownership(&p, m, "vzdump", "vzdump backup snapshot"),
        Err("not ours: vzdump's temporary backup snapshot".into())
    );
    assert_eq!(
        ownership(&p, m, "current", "You are here!"),
        Err("not ours: PVE's current state".into())
    );
}

fn snap(name: &str, desc: &str, t: &str, state: Option<&str>) -> Snapshot {
    Snapshot {
        name: name.into(),
        description: desc.into(),
        snaptime: Some(at(t).as_second()),
        parent: None,
        snapstate: state.map(str::to_string),
        vmstate: Some(false),
        running: None,
    }
}

#[test]
fn plan_keeps_foreign_finishes_interrupted_and_uses_snaptime_not_the_name() {
    let settings = SnapshotSettings::new(
        "felhom",
        None,
        false,
        Policy {
            keep_last: 1,
            ..Policy::default()
        },
        TimeZone::UTC,
    )
    .unwrap();
    let ours = "[felhom-agent] rolling snapshot";
    let entries = vec![
        // the name claims the newest time, but snaptime says it is the oldest
        snap(
            "felhom-20991231t000000z",
            ours,
            "2026-11-20T10:00:00Z",
            None,
        ),
        snap(
            "felhom-20261121t100000z",
            ours,
            "2026-11-21T10:00:00Z",
            None,
        ),
        snap(
            "felhom-20261119t100000z",
            "user",
            "2026-11-19T10:00:00Z",
            None,
        ),
        snap(
            "felhom-20261118t100000z",
            ours,
            "2026-11-18T10:00:00Z",
            Some("delete"),
        ),
        snap(
            "felhom-20261117t100000z",
            ours,
            "2026-11-17T10:00:00Z",
            Some("prepare"),
        ),
        snap(
            "vzdump",
            "vzdump backup snapshot",
            "2026-11-22T10:00:00Z",
            None,
        ),
        Snapshot {
            name: "current".into(),
            description: "You are here!".into(),
            snaptime: None,
            parent: None,
            snapstate: None,
            vmstate: None,
            running: Some(true),
        },
    ];
    let p = plan_snapshots(&entries, &settings);
    let got: Vec<(&str, Decision, &str)> = p
        .iter()
        .map(|s| (s.name.as_str(), s.decision, s.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "felhom-20261117t100000z",
                Decision::Remove,
                "incomplete snapshot (snapstate=prepare)"
            ),
            (
                "felhom-20261118t100000z",
                Decision::Remove,
                "interrupted delete (snapstate=delete): finish it"
            ),
            (
                "felhom-20261119t100000z",
                Decision::Keep,
                "not ours: description lacks the marker [felhom-agent]"
            ),
            (
                "felhom-20991231t000000z",
                Decision::Remove,
                "no rule keeps it"
            ),
            ("felhom-20261121t100000z", Decision::Keep, "keep-last #1"),
            (
                "vzdump",
                Decision::Keep,
                "not ours: vzdump's temporary backup snapshot"
            ),
        ]
    );
}

#[test]
fn lock_errors_are_recognised() {
    assert_eq!(locked_by("VM is locked (backup)"), Some("backup".into()));
    assert_eq!(
        locked_by("CT is locked (snapshot-delete)"),
        Some("snapshot-delete".into())
    );
    assert_eq!(locked_by("snapshot 'x' does not exist"), None);
}

#[test]
fn unlock_commands_and_paths() {
    let g = Guest {
        node: "pve1".into(),
        vmid: 101,
        kind: crate::pve::types::GuestType::Qemu,
    };
    assert_eq!(g.unlock_command(), "qm unlock 101");
    assert_eq!(
        g.path(&["snapshot", "x"]).display(),
        "/nodes/pve1/qemu/101/snapshot/x"
    );
    let c = Guest {
        node: "pve2".into(),
        vmid: 103,
        kind: crate::pve::types::GuestType::Lxc,
    };
    assert_eq!(c.unlock_command(), "pct unlock 103");
}
