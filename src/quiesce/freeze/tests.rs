use super::*;

const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=1g
41 22 8:17 / /srv/data rw,relatime shared:30 - ext4 /dev/sdb1 rw
42 41 8:33 / /srv/data/db rw,relatime shared:31 - xfs /dev/sdc1 rw
43 22 8:17 /sub /mnt/bind rw,relatime shared:30 - ext4 /dev/sdb1 rw
44 22 8:49 / /srv/my\\040files rw,relatime shared:32 - ext4 /dev/sdd\\0401 rw
45 22 8:1 /var/lib /mnt/rootbind rw shared:1 - ext4 /dev/sda1 rw
46 22 7:0 / /var/lib/felhom-agent rw shared:33 - ext4 /dev/loop0 rw
";

fn mounts() -> Vec<MountEntry> {
    parse_mountinfo(MOUNTINFO)
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn state() -> Vec<(&'static str, PathBuf)> {
    vec![("state directory", p("/var/lib/felhom-agent"))]
}

#[test]
fn parses_mountinfo_lines_with_optional_fields_and_escapes() {
    let m = mounts();
    assert_eq!(m.len(), 9);
    assert_eq!(
        m[3],
        MountEntry {
            id: 41,
            parent: 22,
            dev: (8, 17),
            mount_point: p("/srv/data"),
            fstype: "ext4".into(),
            source: "/dev/sdb1".into(),
        }
    );
    assert_eq!(m[6].mount_point, p("/srv/my files"));
    assert_eq!(m[6].source, "/dev/sdd 1");
    // No optional fields at all, and garbage lines are skipped.
    let m = parse_mountinfo("7 1 0:5 / /x rw - tmpfs none rw\nnot a mountinfo line\n");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].fstype, "tmpfs");
}

#[test]
fn mount_of_takes_the_deepest_component_wise_prefix() {
    let m = mounts();
    let at = |s: &str| m[mount_of(&p(s), &m).unwrap()].mount_point.clone();
    assert_eq!(at("/srv/data/db/x"), p("/srv/data/db"));
    assert_eq!(at("/srv/data/dbx"), p("/srv/data"));
    assert_eq!(at("/srv/database"), p("/"));
    assert_eq!(at("/"), p("/"));
    // An over-mount hides the earlier mount on the same point.
    let m2 = parse_mountinfo(
        "1 0 8:1 / / rw - ext4 a rw\n2 1 8:2 / /d rw - ext4 b rw\n3 1 8:3 / /d rw - ext4 c rw\n",
    );
    assert_eq!(m2[mount_of(&p("/d/f"), &m2).unwrap()].source, "c");
}

#[test]
fn normalise_resolves_dots_and_trailing_slashes() {
    assert_eq!(normalise(&p("/srv/data/")), p("/srv/data"));
    assert_eq!(normalise(&p("/srv/./x/../data")), p("/srv/data"));
    assert_eq!(normalise(&p("/..")), p("/"));
}

#[test]
fn refuses_root_non_mount_points_root_aliases_and_the_state_filesystem() {
    let m = mounts();
    let st = state();
    assert_eq!(
        refusal(&p("/"), &m, &st).unwrap(),
        "refusing to freeze \"/\": the root filesystem holds the agent's own files, logs and \
         binaries, and freezing it would hang the guest"
    );
    assert_eq!(refusal(&p("/srv/data/"), &m, &st), None);
    assert_eq!(
        refusal(&p("/srv/data/db/tables"), &m, &st).unwrap(),
        "/srv/data/db/tables is not a mount point; it is on the filesystem mounted at \
         /srv/data/db (write that mount point, or mount a filesystem at /srv/data/db/tables)"
    );
    assert_eq!(
        refusal(&p("/mnt/rootbind"), &m, &st).unwrap(),
        "refusing to freeze /mnt/rootbind: it is the same filesystem as \"/\" (device 8:1)"
    );
    assert_eq!(
        refusal(&p("/var/lib/felhom-agent"), &m, &st).unwrap(),
        "refusing to freeze /var/lib/felhom-agent: it holds the state directory \
         /var/lib/felhom-agent (the agent writes there while the filesystem would be frozen); \
         move the state directory to another filesystem"
    );
    // The state dir inside a frozen mount, through a bind mount of the same device.
    let st2 = vec![("state directory", p("/mnt/bind/agent"))];
    assert!(
        refusal(&p("/srv/data"), &m, &st2).unwrap().starts_with(
            "refusing to freeze /srv/data: it holds the state directory /mnt/bind/agent"
        )
    );
}

#[test]
fn plan_orders_deeper_later_mounts_first_and_merges_one_filesystem() {
    let m = mounts();
    let plan = plan(
        &[
            p("/srv/data"),
            p("/srv/my files"),
            p("/srv/data/db"),
            p("/mnt/bind"),
        ],
        &m,
        &state(),
    )
    .unwrap();
    assert_eq!(
        plan.freeze_order,
        vec![p("/srv/my files"), p("/srv/data/db"), p("/srv/data")]
    );
    assert_eq!(plan.merged, vec![(p("/mnt/bind"), p("/srv/data"))]);
    assert!(super::plan(&[p("/srv/data"), p("/")], &m, &state()).is_err());
}

fn agent(enabled: bool, freeze_fs: bool) -> Option<AgentOption> {
    Some(AgentOption { enabled, freeze_fs })
}

const SNAP: FreezeJob = FreezeJob::Backup {
    snapshot: true,
    stop: false,
};

#[test]
fn qemu_with_a_freezing_guest_agent_is_skipped_unless_forced() {
    let d = decide(FreezeGuest::Qemu, SNAP, agent(true, true), false);
    assert_eq!(
        d,
        Decision::Skip {
            reason: "PVE freezes the guest's filesystems through the QEMU guest agent (agent \
                     enabled, freeze-fs on); set quiesce.fsfreeze-force = true to freeze anyway"
                .into()
        }
    );
    assert!(matches!(
        decide(FreezeGuest::Qemu, SNAP, agent(true, true), true),
        Decision::Freeze { note: Some(_) }
    ));
    assert_eq!(
        decide(FreezeGuest::Qemu, SNAP, agent(true, false), false),
        Decision::Freeze { note: None }
    );
    assert_eq!(
        decide(FreezeGuest::Qemu, SNAP, agent(false, true), false),
        Decision::Freeze { note: None }
    );
    let suspend = FreezeJob::Backup {
        snapshot: false,
        stop: false,
    };
    assert_eq!(
        decide(FreezeGuest::Qemu, suspend, agent(true, true), false),
        Decision::Freeze { note: None }
    );
    // Unknown config: freeze.
    assert!(matches!(
        decide(FreezeGuest::Qemu, SNAP, None, false),
        Decision::Freeze { note: Some(_) }
    ));
    // PVE snapshots: the agent freezes unless vmstate is taken.
    assert!(matches!(
        decide(
            FreezeGuest::Qemu,
            FreezeJob::Snapshot { vmstate: false },
            agent(true, true),
            false
        ),
        Decision::Skip { .. }
    ));
    assert_eq!(
        decide(
            FreezeGuest::Qemu,
            FreezeJob::Snapshot { vmstate: true },
            agent(true, true),
            false
        ),
        Decision::Freeze { note: None }
    );
}

#[test]
fn stop_mode_never_freezes_and_lxc_snapshot_freezes_with_a_note() {
    let stop = FreezeJob::Backup {
        snapshot: false,
        stop: true,
    };
    for g in [FreezeGuest::Qemu, FreezeGuest::Lxc] {
        assert!(matches!(
            decide(g, stop, agent(false, false), true),
            Decision::Skip { .. }
        ));
    }
    match decide(FreezeGuest::Lxc, SNAP, None, false) {
        Decision::Freeze { note: Some(n) } => assert!(n.contains("cgroup freezer"), "{n}"),
        d => panic!("{d:?}"),
    }
}
