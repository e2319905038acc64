//! Behaviour 8: snapshots for qemu and lxc (§4).

use crate::harness::*;

async fn names(h: &H, t: (&str, &str), path: &str) -> Vec<String> {
    h.get(t, path)
        .await
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn create_list_delete_with_real_task_types() {
    let h = H::start().await;
    for (t, base, qm) in [
        (T101, "/nodes/pve1/qemu/101", true),
        (T103, "/nodes/pve2/lxc/103", false),
    ] {
        let upid = h
            .post(
                t,
                &format!("{base}/snapshot"),
                &[("snapname", "felhom-a"), ("description", "marker")],
            )
            .await
            .data();
        let upid = upid.as_str().unwrap().to_string();
        assert_eq!(
            upid.split(':').nth(5).unwrap(),
            if qm { "qmsnapshot" } else { "vzsnapshot" }
        );
        let during = h.get(t, &format!("{base}/snapshot")).await.data();
        assert_eq!(during[0]["snapstate"], "prepare");
        assert_eq!(
            h.get(t, &format!("{base}/status/current")).await.data()["lock"],
            "snapshot"
        );
        assert_eq!(h.run_to_end(t, &upid).await["exitstatus"], "OK");
        let upid2 = h
            .post(t, &format!("{base}/snapshot"), &[("snapname", "felhom-b")])
            .await
            .data();
        h.run_to_end(t, upid2.as_str().unwrap()).await;
        let list = h.get(t, &format!("{base}/snapshot")).await.data();
        let arr = list.as_array().unwrap();
        assert_eq!(
            arr.last().unwrap()["name"],
            "current",
            "current is always last"
        );
        assert_eq!(arr.last().unwrap()["description"], "You are here!");
        assert_eq!(arr.last().unwrap()["parent"], "felhom-b");
        let b = arr.iter().find(|s| s["name"] == "felhom-b").unwrap();
        assert_eq!(b["parent"], "felhom-a");
        let a = arr.iter().find(|s| s["name"] == "felhom-a").unwrap();
        let (ta, tb) = (
            a["snaptime"].as_i64().unwrap(),
            b["snaptime"].as_i64().unwrap(),
        );
        assert!(
            ta >= 1_795_000_000 && tb > ta,
            "snaptime is the creation epoch: {ta} {tb}"
        );
        assert_eq!(b.get("vmstate").is_some(), qm, "vmstate only on qemu");
        let del = h
            .delete(t, &format!("{base}/snapshot/felhom-a"))
            .await
            .data();
        let del = del.as_str().unwrap().to_string();
        assert_eq!(
            del.split(':').nth(5).unwrap(),
            if qm { "qmdelsnapshot" } else { "vzdelsnapshot" }
        );
        assert_eq!(h.run_to_end(t, &del).await["exitstatus"], "OK");
        let n = names(&h, t, &format!("{base}/snapshot")).await;
        assert_eq!(n, ["felhom-b", "current"]);
        let again = h
            .delete(t, &format!("{base}/snapshot/felhom-a"))
            .await
            .data();
        assert_eq!(
            h.run_to_end(t, again.as_str().unwrap()).await["exitstatus"],
            "snapshot 'felhom-a' does not exist"
        );
    }
}

#[tokio::test]
async fn name_rules_reserved_names_and_duplicates() {
    let h = H::start().await;
    let r = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "current")],
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "unable to use snapshot name 'current' (reserved name)")
    );
    let r = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "PENDING")],
        )
        .await;
    assert_eq!(
        r.reason,
        "unable to use snapshot name 'PENDING' (reserved name)"
    );
    let r = h
        .post(
            T103,
            "/nodes/pve2/lxc/103/snapshot",
            &[("snapname", "vzdump")],
        )
        .await;
    assert_eq!(
        r.reason,
        "unable to use snapshot name 'vzdump' (reserved name)"
    );
    let long = "a".repeat(41);
    let r = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", &long)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"]["snapname"],
        "value may only be 40 characters long"
    );
    for bad in ["1abc", "a", "a b"] {
        let r = h
            .post(T101, "/nodes/pve1/qemu/101/snapshot", &[("snapname", bad)])
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    let u = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "dup")],
        )
        .await
        .data();
    h.run_to_end(T101, u.as_str().unwrap()).await;
    let u = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "dup")],
        )
        .await
        .data();
    assert_eq!(
        h.run_to_end(T101, u.as_str().unwrap()).await["exitstatus"],
        "snapshot name 'dup' already used"
    );
}

#[tokio::test]
async fn snapshot_during_backup_fails_with_the_lock_as_exit_status() {
    let h = H::start().await;
    let b = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let s = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "felhom-x")],
        )
        .await
        .data();
    assert_eq!(
        h.run_to_end(T101, s.as_str().unwrap()).await["exitstatus"],
        "VM is locked (backup)"
    );
    h.run_to_end(T101, b.as_str().unwrap()).await;
    let s = h
        .post(T103, "/nodes/pve2/lxc/103/snapshot", &[("snapname", "x1")])
        .await
        .data();
    h.run_to_end(T103, s.as_str().unwrap()).await;
    h.sim.world().guests.get_mut(&103).unwrap().lock = Some("backup".into());
    let d = h
        .delete(T103, "/nodes/pve2/lxc/103/snapshot/x1")
        .await
        .data();
    assert_eq!(
        h.run_to_end(T103, d.as_str().unwrap()).await["exitstatus"],
        "CT is locked (backup)"
    );
}

#[tokio::test]
async fn interrupted_delete_leaves_state_and_force_recovers_after_unlock() {
    let h = H::start().await;
    let c = h
        .post(
            T101,
            "/nodes/pve1/qemu/101/snapshot",
            &[("snapname", "felhom-old")],
        )
        .await
        .data();
    h.run_to_end(T101, c.as_str().unwrap()).await;
    let d = h
        .delete(T101, "/nodes/pve1/qemu/101/snapshot/felhom-old")
        .await
        .data();
    let d = d.as_str().unwrap().to_string();
    h.advance(0.6); // disks removed, config not yet
    assert!(h.sim.world().kill_task(&d));
    let list = h.get(T101, "/nodes/pve1/qemu/101/snapshot").await.data();
    assert_eq!(list[0]["snapstate"], "delete");
    assert_eq!(
        h.task_status(T101, &d).await["exitstatus"],
        "unexpected status"
    );
    // The stale lock blocks everything, force included.
    let f = h
        .send_form(
            "DELETE",
            T101,
            "/nodes/pve1/qemu/101/snapshot/felhom-old",
            &[("force", "1")],
        )
        .await;
    assert_eq!(
        f.status, 501,
        "parameters of DELETE go in the query string, not the body"
    );
    let f = h
        .delete(T101, "/nodes/pve1/qemu/101/snapshot/felhom-old?force=1")
        .await
        .data();
    assert_eq!(
        h.run_to_end(T101, f.as_str().unwrap()).await["exitstatus"],
        "VM is locked (snapshot-delete)"
    );
    // After `qm unlock`, a normal delete fails on the missing disk snapshot; force removes it.
    h.sim.world().guests.get_mut(&101).unwrap().lock = None;
    let n = h
        .delete(T101, "/nodes/pve1/qemu/101/snapshot/felhom-old")
        .await
        .data();
    let st = h.run_to_end(T101, n.as_str().unwrap()).await;
    assert!(
        st["exitstatus"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{st}"
    );
    h.sim.world().guests.get_mut(&101).unwrap().lock = None;
    let f = h
        .delete(T101, "/nodes/pve1/qemu/101/snapshot/felhom-old?force=1")
        .await
        .data();
    assert_eq!(
        h.run_to_end(T101, f.as_str().unwrap()).await["exitstatus"],
        "WARNINGS: 1"
    );
    assert_eq!(
        names(&h, T101, "/nodes/pve1/qemu/101/snapshot").await,
        ["current"]
    );
}

#[tokio::test]
async fn rollback_stops_the_guest() {
    let h = H::start().await;
    let c = h
        .post(T101, "/nodes/pve1/qemu/101/snapshot", &[("snapname", "r1")])
        .await
        .data();
    h.run_to_end(T101, c.as_str().unwrap()).await;
    let r = h
        .post(T101, "/nodes/pve1/qemu/101/snapshot/r1/rollback", &[])
        .await
        .data();
    assert_eq!(r.as_str().unwrap().split(':').nth(5).unwrap(), "qmrollback");
    h.run_to_end(T101, r.as_str().unwrap()).await;
    assert!(
        h.sim
            .events()
            .iter()
            .any(|e| e.kind == "guest-shutdown" && e.vmid == Some(101))
    );
    assert_eq!(
        h.get(T101, "/nodes/pve1/qemu/101/status/current")
            .await
            .data()["status"],
        "stopped"
    );
}
