//! Behaviour 9: storage status, content filtering, delete, prunebackups (§5, §7).

use crate::harness::*;

fn seed(h: &H) {
    let mut w = h.sim.world();
    let tz = w.tz.clone();
    let st = w.storages.get_mut("pbs-main").unwrap();
    // 101: seven daily backups at 01:00 local; 102: one backup (not ours).
    for d in 0..7 {
        let mut v = pve_sim::world::make_volume(
            st,
            pve_sim::scenario::GuestKind::Qemu,
            101,
            1_794_358_800 + d * 86_400,
            10,
            &tz,
            None,
        );
        v.protected = d == 0;
        st.volumes.push(v);
    }
    let v = pve_sim::world::make_volume(
        st,
        pve_sim::scenario::GuestKind::Qemu,
        102,
        1_794_358_800,
        10,
        &tz,
        None,
    );
    st.volumes.push(v);
}

#[tokio::test]
async fn status_and_content_filtered_by_check_volume_access() {
    let h = H::start().await;
    seed(&h);
    let st = h
        .get(T101, "/nodes/pve1/storage/pbs-main/status")
        .await
        .data();
    assert_eq!(st["type"], "pbs");
    assert_eq!(st["total"], 1_099_511_627_776u64);
    assert_eq!(st["avail"], 1_099_511_627_776u64 - 107_374_182_400u64);
    let all = h
        .get(T101, "/nodes/pve1/storage/pbs-main/content")
        .await
        .data();
    assert!(
        all.as_array().unwrap().iter().all(|v| v["vmid"] == 101),
        "102's backup is invisible to 101's token"
    );
    assert_eq!(all.as_array().unwrap().len(), 7);
    // Datastore.Audit alone lists nothing.
    assert!(
        h.get(AUDITOR, "/nodes/pve1/storage/pbs-main/content")
            .await
            .data()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = h.get(T101, "/nodes/pve1/storage/local/status").await;
    assert_eq!(
        r.reason,
        "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)"
    );
}

#[tokio::test]
async fn delete_own_backup_refuses_protected_and_foreign() {
    let h = H::start().await;
    seed(&h);
    let vols: Vec<String> = h.sim.world().storages["pbs-main"]
        .volumes
        .iter()
        .map(|v| v.volid.clone())
        .collect();
    let protected = &vols[0];
    let r = h
        .delete(
            T101,
            &format!(
                "/nodes/pve1/storage/pbs-main/content/{}?delay=5",
                enc(protected)
            ),
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        format!("cannot remove protected volume '{protected}' on 'pbs-main'")
    );
    let ok = h
        .delete(
            T101,
            &format!(
                "/nodes/pve1/storage/pbs-main/content/{}?delay=5",
                enc(&vols[1])
            ),
        )
        .await;
    assert_eq!(ok.data(), serde_json::Value::Null);
    let upid = h
        .delete(
            T101,
            &format!("/nodes/pve1/storage/pbs-main/content/{}", enc(&vols[2])),
        )
        .await
        .data();
    assert_eq!(
        upid.as_str().unwrap().split(':').nth(6).unwrap(),
        "101@pbs-main",
        "imgdel id is vmid@storage"
    );
    let foreign = h
        .delete(
            T101,
            &format!("/nodes/pve1/storage/pbs-main/content/{}", enc(&vols[7])),
        )
        .await;
    assert_eq!(foreign.status, 403);
    assert_eq!(h.sim.world().storages["pbs-main"].volumes.len(), 6);
}

#[tokio::test]
async fn prune_dry_run_then_delete_with_vmid() {
    let h = H::start().await;
    seed(&h);
    let q = "prune-backups=keep-last%3D2%2Ckeep-daily%3D2&vmid=101&type=qemu";
    let before = h.sim.requests().len();
    let plan = h
        .get(
            T101,
            &format!("/nodes/pve1/storage/pbs-main/prunebackups?{q}"),
        )
        .await
        .data();
    let marks: Vec<(i64, String)> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ctime"].as_i64().unwrap(),
                e["mark"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |m: &str| marks.iter().filter(|(_, x)| x == m).count();
    assert_eq!(
        (count("keep"), count("protected"), count("remove")),
        (4, 1, 2),
        "{marks:?}"
    );
    assert_eq!(
        h.sim.world().storages["pbs-main"].volumes.len(),
        8,
        "GET is a dry run"
    );
    let upid = h
        .delete(
            T101,
            &format!("/nodes/pve1/storage/pbs-main/prunebackups?{q}"),
        )
        .await
        .data();
    assert_eq!(
        upid.as_str().unwrap().split(':').nth(5).unwrap(),
        "prunebackups"
    );
    h.run_to_end(T101, upid.as_str().unwrap()).await;
    assert_eq!(h.sim.world().storages["pbs-main"].volumes.len(), 6);
    // Without vmid a narrow token needs Datastore.Allocate.
    let r = h
        .delete(
            T101,
            "/nodes/pve1/storage/pbs-main/prunebackups?prune-backups=keep-last%3D1",
        )
        .await;
    assert_eq!(
        r.reason,
        "Permission check failed (/storage/pbs-main, Datastore.Allocate)"
    );
    let logged: Vec<String> = h.sim.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.template.clone().unwrap_or_default()))
        .collect();
    assert!(logged.contains(&"DELETE /nodes/{node}/storage/{storage}/prunebackups".to_string()));
}
