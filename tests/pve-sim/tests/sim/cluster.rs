//! Behaviour 10: cluster reads and migration (§6, §7).

use crate::harness::*;

#[tokio::test]
async fn scoped_token_sees_only_its_guest_and_bare_nodes() {
    let h = H::start().await;
    let res = h.get(T101, "/cluster/resources").await.data();
    let arr = res.as_array().unwrap();
    let vms: Vec<&serde_json::Value> = arr
        .iter()
        .filter(|e| e["type"] == "qemu" || e["type"] == "lxc")
        .collect();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0]["id"], "qemu/101");
    assert_eq!(vms[0]["node"], "pve1");
    let nodes: Vec<&serde_json::Value> = arr.iter().filter(|e| e["type"] == "node").collect();
    assert_eq!(nodes.len(), 2, "nodes are listed for everyone");
    assert!(
        nodes[0].get("cpu").is_none(),
        "no node stats without Sys.Audit"
    );
    assert!(
        arr.iter().all(|e| e["type"] != "storage"),
        "AllocateSpace alone does not list storages"
    );
    let aud = h.get(AUDITOR, "/cluster/resources?type=node").await.data();
    assert!(aud[0].get("cpu").is_some());
    assert_eq!(h.get(T101, "/version").await.data()["release"], "9.1");
}

#[tokio::test]
async fn migration_moves_the_guest_and_the_old_node_stops_answering() {
    let h = H::start().await;
    let upid = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")],
        )
        .await
        .data();
    let upid = upid.as_str().unwrap().to_string();
    h.sim.world().migrate(101, "pve2").unwrap();
    let res = h.get(T101, "/cluster/resources?type=vm").await.data();
    assert_eq!(res[0]["node"], "pve2");
    let r = h.get(T101, "/nodes/pve1/qemu/101/status/current").await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist"
    );
    assert_eq!(
        h.post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main")]
        )
        .await
        .data(),
        "OK"
    );
    // The task stays on the node that ran it.
    assert_eq!(h.task_status(T101, &upid).await["node"], "pve1");
    assert_eq!(
        h.get(T101, "/nodes/pve2/qemu/101/status/current")
            .await
            .data()["status"],
        "running"
    );
}

#[tokio::test]
async fn unknown_and_offline_nodes() {
    let h = H::start().await;
    let r = h.get(WIDE, "/nodes/pve9/qemu/101/status/current").await;
    assert_eq!(r.status, 500);
    assert!(
        r.reason.starts_with("hostname lookup 'pve9' failed"),
        "{}",
        r.reason
    );
    h.sim.world().nodes[1].online = false;
    let r = h.get(T103, "/nodes/pve2/lxc/103/status/current").await;
    assert_eq!(r.status, 595);
}

#[tokio::test]
async fn control_api_is_not_reachable_with_a_pve_token() {
    let h = H::start().await;
    let a = auth(T101);
    let r = h
        .raw(
            "GET",
            "/_sim/requests",
            &[("Authorization", &a), ("X-Sim-Control", "test-control-key")],
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = h.raw("GET", "/_sim/requests", &[], None).await;
    assert_eq!(r.status, 403);
    let _ = h.get(T101, "/version").await;
    let r = h
        .raw(
            "GET",
            "/_sim/requests",
            &[("X-Sim-Control", "test-control-key")],
            None,
        )
        .await;
    let log = r.data();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["path"], "/version");
    assert_eq!(last["authid"], "felhom101@pve!agent");
    assert_eq!(last["status"], 200);
}
