//! Behaviours 4 and 7: vzdump's synchronous checks and the worker (§3).

use std::time::Duration;

use crate::harness::*;

fn pos(log: &[String], needle: &str) -> usize {
    log.iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in {log:#?}"))
}

#[tokio::test]
async fn synchronous_privilege_checks_of_a_narrow_token() {
    let h = H::start().await;
    let r = h.post(T101, "/nodes/pve1/vzdump", &[("vmid", "101")]).await;
    assert_eq!(
        r.reason, "Permission check failed (/storage/local, Datastore.AllocateSpace)",
        "storage omitted → checked on local"
    );
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main"), ("tmpdir", "/tmp")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"]["tmpdir"],
        "Only root may set this option."
    );
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101"),
                ("storage", "pbs-main"),
                ("bwlimit", "1000"),
            ],
        )
        .await;
    assert_eq!(r.reason, "Permission check failed (/, Sys.Modify)");
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101"),
                ("storage", "pbs-main"),
                ("prune-backups", "keep-last=2"),
            ],
        )
        .await;
    assert_eq!(
        r.reason,
        "Permission check failed (/storage/pbs-main, Datastore.Allocate)"
    );
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main"), ("all", "1")],
        )
        .await;
    assert_eq!(
        r.json()["errors"]["all"],
        "option conflicts with option 'vmid'"
    );
    assert!(
        h.sim.world().tasks.is_empty(),
        "no task was started by a refused call"
    );
}

#[tokio::test]
async fn vm_backup_is_checked_inside_the_task() {
    let h = H::start().await;
    // T101 may write to pbs-main but has no VM.Backup on 102: 200 + UPID, then the task fails.
    let upid = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "102"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let upid = upid.as_str().unwrap();
    let st = h.run_to_end(T101, upid).await;
    assert_eq!(
        st["exitstatus"],
        "Permission check failed (/vms/102, VM.Backup)"
    );
}

#[tokio::test]
async fn qemu_snapshot_backup_log_lines_in_order_and_volume_appears() {
    let h = H::start().await;
    let upid = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101"),
                ("storage", "pbs-main"),
                ("mode", "snapshot"),
                ("notes-template", "{{guestname}} via felhom"),
                ("protected", "1"),
            ],
        )
        .await
        .data();
    let upid = upid.as_str().unwrap().to_string();
    assert_eq!(
        h.get(T101, "/nodes/pve1/qemu/101/status/current")
            .await
            .data()["lock"],
        "backup"
    );
    let st = h.run_to_end(T101, &upid).await;
    assert_eq!(st["exitstatus"], "OK");
    let log = h.task_log(T101, &upid).await;
    let order = [
        "INFO: starting new backup job: vzdump 101",
        "INFO: Starting Backup of VM 101 (qemu)",
        "INFO: VM Name: web01",
        "INFO: backup mode: snapshot",
        "INFO: creating Proxmox Backup Server archive 'vm/101/2026-11-18T11:06:40Z'",
        "INFO: issuing guest-agent 'fs-freeze' command",
        "INFO: issuing guest-agent 'fs-thaw' command",
        "INFO: started backup task",
        "INFO:  50% (",
        "INFO: adding notes to backup",
        "INFO: marking backup as protected",
        "INFO: Finished Backup of VM 101",
        "INFO: Backup job finished successfully",
        "TASK OK",
    ];
    let idx: Vec<usize> = order.iter().map(|n| pos(&log, n)).collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "out of order: {idx:?}\n{log:#?}"
    );
    assert!(
        h.get(T101, "/nodes/pve1/qemu/101/status/current")
            .await
            .data()
            .get("lock")
            .is_none()
    );
    let content = h
        .get(T101, "/nodes/pve1/storage/pbs-main/content?vmid=101")
        .await
        .data();
    let v = &content[0];
    assert_eq!(v["volid"], "pbs-main:backup/vm/101/2026-11-18T11:06:40Z");
    assert_eq!(v["notes"], "web01 via felhom");
    assert_eq!(v["protected"], 1);
    assert_eq!(v["format"], "pbs-vm");
}

#[tokio::test]
async fn lxc_snapshot_backup_shows_the_temporary_vzdump_snapshot() {
    let h = H::start().await;
    let upid = h
        .post(
            T103,
            "/nodes/pve2/vzdump",
            &[
                ("vmid", "103"),
                ("storage", "pbs-main"),
                ("mode", "snapshot"),
            ],
        )
        .await
        .data();
    let upid = upid.as_str().unwrap().to_string();
    let snaps = h.get(T103, "/nodes/pve2/lxc/103/snapshot").await.data();
    let names: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["vzdump", "current"],
        "vzdump snapshot visible during the backup"
    );
    assert_eq!(
        h.get(T103, "/nodes/pve2/lxc/103/status/current")
            .await
            .data()["lock"],
        "snapshot"
    );
    h.advance(3.0);
    assert_eq!(
        h.get(T103, "/nodes/pve2/lxc/103/status/current")
            .await
            .data()["lock"],
        "backup"
    );
    h.run_to_end(T103, &upid).await;
    let log = h.task_log(T103, &upid).await;
    assert!(
        pos(&log, "INFO: create storage snapshot 'vzdump'")
            < pos(
                &log,
                "INFO: creating Proxmox Backup Server archive 'ct/103/"
            )
    );
    assert!(pos(&log, "INFO: cleanup temporary 'vzdump' snapshot") < pos(&log, "TASK OK"));
    let snaps = h.get(T103, "/nodes/pve2/lxc/103/snapshot").await.data();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "only `current` left: {snaps}"
    );
}

#[tokio::test]
async fn stop_mode_shuts_the_guest_down_as_a_hookable_event_and_starts_it_again() {
    let h = H::start().await;
    let upid = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main"), ("mode", "stop")],
        )
        .await
        .data();
    let upid = upid.as_str().unwrap().to_string();
    assert!(
        h.sim.events().iter().all(|e| e.kind != "guest-shutdown"),
        "the shutdown starts a moment after the worker"
    );
    h.advance(1.0);
    let ev = h
        .sim
        .wait_event(Duration::from_secs(5), |e| {
            e.kind == "guest-shutdown" && e.vmid == Some(101)
        })
        .await;
    assert!(ev.is_some(), "the shutdown is an event a test can hook");
    h.advance(3.0);
    let log = h.task_log(T101, &upid).await;
    assert!(
        pos(&log, "INFO: stopping virtual guest")
            < pos(&log, "INFO: starting kvm to execute backup task")
    );
    assert!(
        pos(&log, "INFO: starting kvm to execute backup task")
            < pos(&log, "INFO: resuming VM again after 3 seconds")
    );
    h.run_to_end(T101, &upid).await;
    let kinds: Vec<String> = h
        .sim
        .events()
        .iter()
        .filter(|e| e.vmid == Some(101))
        .map(|e| e.kind.clone())
        .collect();
    let p = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(
        p("guest-shutdown") < p("guest-stopped") && p("guest-stopped") < p("guest-started"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn locked_guest_fails_with_job_errors() {
    let h = H::start().await;
    h.sim.world().guests.get_mut(&101).unwrap().lock = Some("snapshot".into());
    let upid = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let st = h.run_to_end(T101, upid.as_str().unwrap()).await;
    assert_eq!(st["exitstatus"], "job errors");
    let log = h.task_log(T101, upid.as_str().unwrap()).await;
    assert!(
        log.contains(&"ERROR: Backup of VM 101 failed - VM is locked (snapshot)".to_string()),
        "{log:#?}"
    );
    assert_eq!(log.last().unwrap(), "TASK ERROR: job errors");
}

#[tokio::test]
async fn guest_on_another_node_returns_bare_ok_and_missing_vmid_fails_in_task() {
    let h = H::start().await;
    let r = h
        .post(
            T101,
            "/nodes/pve2/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")],
        )
        .await;
    assert_eq!(r.data(), "OK");
    assert!(
        h.sim.world().tasks.is_empty(),
        "no task for a guest on another node"
    );
    let upid = h
        .post(
            WIDE,
            "/nodes/pve1/vzdump",
            &[("vmid", "999"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let st = h.run_to_end(WIDE, upid.as_str().unwrap()).await;
    assert_eq!(st["exitstatus"], "job errors");
    let log = h.task_log(WIDE, upid.as_str().unwrap()).await;
    assert!(log.contains(&"ERROR: Backup of VM 999 failed - unable to find VM '999'".to_string()));
}

#[tokio::test]
async fn warnings_and_error_outcomes_and_unexpected_status() {
    let h = H::start().await;
    for (outcome, expect) in [
        ("warnings:2", "WARNINGS: 2"),
        ("error:disk full", "job errors"),
        ("unexpected", "unexpected status"),
    ] {
        h.sim.world().guests.get_mut(&101).unwrap().backup =
            Some(pve_sim::scenario::VzdumpBehaviour {
                outcome: outcome.into(),
                duration: 10.0,
                ..Default::default()
            });
        h.sim.world().guests.get_mut(&101).unwrap().lock = None;
        let upid = h
            .post(
                T101,
                "/nodes/pve1/vzdump",
                &[("vmid", "101"), ("storage", "pbs-main")],
            )
            .await
            .data();
        let st = h.run_to_end(T101, upid.as_str().unwrap()).await;
        assert_eq!(st["exitstatus"], expect, "{outcome}");
        let log = h.task_log(T101, upid.as_str().unwrap()).await;
        if outcome == "unexpected" {
            assert!(
                !log.last().unwrap().starts_with("TASK "),
                "no TASK line for a dead worker"
            );
        }
    }
}

#[tokio::test]
async fn global_lock_serialises_vzdumps_and_lockwait_zero_gives_up() {
    let h = H::start().await;
    let a = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let b = h
        .post(
            WIDE,
            "/nodes/pve1/vzdump",
            &[("vmid", "102"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let c = h
        .post(
            WIDE,
            "/nodes/pve1/vzdump",
            &[("vmid", "102"), ("storage", "pbs-main"), ("lockwait", "0")],
        )
        .await
        .data();
    let (a, b, c) = (
        a.as_str().unwrap(),
        b.as_str().unwrap(),
        c.as_str().unwrap(),
    );
    let st_c = h.task_status(WIDE, c).await;
    assert_eq!(st_c["exitstatus"], "unexpected status");
    assert!(h.task_log(WIDE, c).await[0].contains("can't acquire lock '/var/run/vzdump.lock'"));
    assert_eq!(
        h.task_log(WIDE, b).await,
        ["INFO: trying to get global lock - waiting..."]
    );
    h.run_to_end(T101, a).await;
    h.advance(1.0);
    let lb = h.task_log(WIDE, b).await;
    assert_eq!(lb[1], "INFO: got global lock");
    assert_eq!(h.run_to_end(WIDE, b).await["exitstatus"], "OK");
}

#[tokio::test]
async fn remove_zero_max_backup_limit() {
    let h = H::start().await;
    // local keeps 3 (keep-last=3): with remove=0, the 4th backup is refused.
    {
        let mut w = h.sim.world();
        let tz = w.tz.clone();
        let st = w.storages.get_mut("local").unwrap();
        for i in 0..3 {
            let v = pve_sim::world::make_volume(
                st,
                pve_sim::scenario::GuestKind::Qemu,
                102,
                1_790_000_000 + i * 86_400,
                1,
                &tz,
                None,
            );
            st.volumes.push(v);
        }
    }
    let upid = h
        .post(
            WIDE,
            "/nodes/pve1/vzdump",
            &[("vmid", "102"), ("storage", "local"), ("remove", "0")],
        )
        .await
        .data();
    let st = h.run_to_end(WIDE, upid.as_str().unwrap()).await;
    assert_eq!(st["exitstatus"], "job errors");
    let log = h.task_log(WIDE, upid.as_str().unwrap()).await.join("\n");
    assert!(log.contains("There is a max backup limit of 3 enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backups."), "{log}");
    // With remove=1 (default) the storage's keep-last=3 prunes instead.
    let upid = h
        .post(
            WIDE,
            "/nodes/pve1/vzdump",
            &[("vmid", "102"), ("storage", "local")],
        )
        .await
        .data();
    assert_eq!(
        h.run_to_end(WIDE, upid.as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let log = h.task_log(WIDE, upid.as_str().unwrap()).await;
    assert!(
        log.contains(&"INFO: prune older backups with retention: keep-last=3".to_string()),
        "{log:#?}"
    );
    assert!(
        log.contains(&"INFO: pruned 1 backup(s) not covered by keep-retention policy".to_string())
    );
    let n = h.sim.world().storages["local"]
        .volumes
        .iter()
        .filter(|v| v.vmid == 102)
        .count();
    assert_eq!(n, 3);
}
