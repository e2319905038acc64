use super::*;

fn de<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(s).unwrap()
}

#[test]
fn exitstatus_classification() {
    assert_eq!(TaskOutcome::from_exitstatus("OK"), TaskOutcome::Ok);
    assert_eq!(
        TaskOutcome::from_exitstatus("WARNINGS: 3"),
        TaskOutcome::Warnings(3)
    );
    for failed in [
        "job errors",
        "unexpected status",
        "Permission check failed (/vms/102, VM.Backup)",
        "WARNINGS: x",
        "WARNINGS: ",
        "WARNINGS:3",
        "ok",
        "unable to get last line from task log - No such file",
    ] {
        assert_eq!(
            TaskOutcome::from_exitstatus(failed),
            TaskOutcome::Failed(failed.to_string()),
            "{failed}"
        );
    }
    assert!(TaskOutcome::Warnings(1).is_success());
    assert!(!TaskOutcome::Failed("x".into()).is_success());
}

#[test]
fn task_status_running_and_stopped_token() {
    let t: TaskStatus = de(
        r#"{"upid":"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:","node":"pve1","pid":123456,"pstart":8765432,"starttime":1735707601,"type":"vzdump","id":"101","user":"backup@pve","tokenid":"guestd","status":"running"}"#,
    );
    assert_eq!(t.status, TaskState::Running);
    assert_eq!(t.outcome(), None);
    assert_eq!(t.tokenid.as_deref(), Some("guestd"));
    assert_eq!(t.user, "backup@pve");
    let t: TaskStatus = de(
        r#"{"upid":"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump::root@pam:","node":"pve1","pid":"123456","pstart":"8765432","starttime":"1735707601","type":"vzdump","id":"","user":"root@pam","status":"stopped","exitstatus":"WARNINGS: 2"}"#,
    );
    assert_eq!(t.pid, 123456);
    assert_eq!(t.outcome(), Some(TaskOutcome::Warnings(2)));
    let t: TaskStatus = de(
        r#"{"upid":"u","node":"pve1","pid":1,"pstart":1,"starttime":1,"type":"imgdel","id":101,"user":"root@pam","status":"stopped"}"#,
    );
    assert_eq!(t.id, "101");
    assert_eq!(
        t.outcome(),
        Some(TaskOutcome::Failed("stopped without exitstatus".into()))
    );
}

#[test]
fn task_log_and_list() {
    let l: Vec<TaskLogLine> = de(r#"[{"n":1,"t":"INFO: starting"},{"n":"2","t":"TASK OK"}]"#);
    assert_eq!(
        l[1],
        TaskLogLine {
            n: 2,
            t: "TASK OK".into()
        }
    );
    let e: Vec<TaskListEntry> = de(
        r#"[{"upid":"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:","node":"pve1","pid":123456,"pstart":8765432,"starttime":1735707601,"endtime":1735707700,"type":"vzdump","id":"101","user":"backup@pve","tokenid":"guestd","status":"OK"}]"#,
    );
    assert_eq!(e[0].endtime, Some(1735707700));
    assert_eq!(e[0].parsed_upid().unwrap().pid, 123456);
}

#[test]
fn task_start_ok_or_upid() {
    let s: TaskStart = de(r#""OK""#);
    assert_eq!(s, TaskStart::NoTask("OK".into()));
    let s: TaskStart =
        de(r#""UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:""#);
    assert!(matches!(s, TaskStart::Started(u) if u.id == "101"));
    let s: TaskStart = de("null");
    assert_eq!(s, TaskStart::NoTask(String::new()));
}

#[test]
fn cluster_resources() {
    let r: Vec<ClusterResource> = de(
        r#"[{"id":"qemu/101","type":"qemu","vmid":101,"node":"pve2","status":"running","name":"web","template":0,"lock":"backup","maxmem":1024,"cpu":0.02},
            {"id":"node/pve1","type":"node","node":"pve1","status":"online","level":""}]"#,
    );
    assert_eq!(r[0].guest_type(), Some(GuestType::Qemu));
    assert_eq!(r[0].vmid, Some(101));
    assert_eq!(r[0].node.as_deref(), Some("pve2"));
    assert_eq!(r[0].template, Some(false));
    assert_eq!(r[0].lock.as_deref(), Some("backup"));
    assert_eq!(r[1].guest_type(), None);
    assert_eq!(r[1].vmid, None);
}

#[test]
fn permissions_map() {
    let p: Permissions = de(
        r#"{"/vms/101":{"VM.Audit":1,"VM.Backup":0},"/storage/nas":{"Datastore.AllocateSpace":1},"/vms/7":{"VM.Audit":true},"/vms":{}}"#,
    );
    assert!(p.has("/vms/101", "VM.Backup"));
    assert!(!p.0["/vms/101"]["VM.Backup"]);
    assert!(!p.has("/vms/101", "VM.Snapshot"));
    assert!(!p.has("/nodes", "Sys.Audit"));
    assert_eq!(p.vmids(), vec![101, 7]);
    assert!(serde_json::from_str::<Permissions>(r#"{"/":{"X":"maybe"}}"#).is_err());
}

#[test]
fn guest_status_shapes() {
    let s: GuestStatus = de(
        r#"{"vmid":101,"status":"running","qmpstatus":"paused","agent":1,"name":"web","ha":{"managed":0},"lock":"backup","uptime":"55"}"#,
    );
    assert_eq!(s.agent, Some(true));
    assert_eq!(
        s.ha,
        Some(HaStatus {
            managed: false,
            state: None
        })
    );
    assert!(!s.is_running());
    assert_eq!(s.uptime, Some(55));
    let s: GuestStatus = de(
        r#"{"vmid":"200","type":"lxc","status":"running","ha":{"managed":1,"state":"started"}}"#,
    );
    assert!(s.is_running());
    assert_eq!(s.vmid, Some(200));
    assert_eq!(s.ha.unwrap().state.as_deref(), Some("started"));
}

#[test]
fn snapshots_with_current_last() {
    let s: Vec<Snapshot> = de(
        r#"[{"name":"daily1","description":"","snaptime":1735707601,"vmstate":0,"parent":"a"},
            {"name":"p","snapstate":"prepare","description":"x"},
            {"name":"current","description":"You are here!","digest":"abc","running":1,"parent":"daily1"}]"#,
    );
    assert_eq!(s[0].vmstate, Some(false));
    assert_eq!(s[1].snapstate.as_deref(), Some("prepare"));
    assert_eq!(s[1].snaptime, None);
    assert!(s[2].is_current());
    assert_eq!(s[2].running, Some(true));
}

#[test]
fn storage_backup_and_prune() {
    let st: StorageStatus = de(
        r#"{"type":"dir","content":"backup,iso","enabled":1,"active":1,"shared":0,"total":1000,"used":"400","avail":600}"#,
    );
    assert!(st.has_content("backup"));
    assert!(!st.has_content("images"));
    assert_eq!(st.used, Some(400));
    assert_eq!(st.shared, Some(false));

    let b: Vec<BackupVolume> = de(
        r#"[{"volid":"nas:backup/vzdump-qemu-101-2025_01_01-05_00_01.vma.zst","content":"backup","format":"vma.zst","subtype":"qemu","vmid":101,"ctime":1735707601,"size":12345,"notes":"felhom","protected":1},
            {"volid":"pbs:backup/vm/101/2025-01-01T05:00:01Z","format":"pbs-vm","vmid":"101","ctime":"1735707601","size":1,"verification":{"state":"ok"}}]"#,
    );
    assert!(b[0].is_protected());
    assert!(!b[1].is_protected());
    assert_eq!(b[1].vmid, Some(101));
    assert_eq!(b[1].ctime, 1735707601);

    let p: Vec<PruneEntry> = de(
        r#"[{"volid":"a","ctime":1,"mark":"keep","type":"qemu","vmid":101},{"volid":"b","ctime":2,"mark":"remove","type":"qemu","vmid":101},{"volid":"c","ctime":3,"mark":"renamed","type":"unknown"},{"volid":"d","ctime":4,"mark":"weird","type":"lxc"}]"#,
    );
    assert_eq!(p[0].mark, PruneMark::Keep);
    assert_eq!(p[1].mark, PruneMark::Remove);
    assert_eq!(p[2].mark, PruneMark::Renamed);
    assert_eq!(p[2].vmid, None);
    assert_eq!(p[3].mark, PruneMark::Other);
}

#[test]
fn version() {
    let v: Version =
        de(r#"{"version":"9.1.1","release":"9.1","repoid":"abc","console":"xtermjs"}"#);
    assert_eq!(v.version, "9.1.1");
    assert_eq!(v.release, "9.1");
}
