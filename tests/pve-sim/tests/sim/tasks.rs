//! Behaviour 6: UPIDs, task status/log and the task list (§1, §2).

use crate::harness::*;

async fn start_backup(h: &H) -> String {
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101"),
                ("storage", "pbs-main"),
                ("mode", "snapshot"),
            ],
        )
        .await;
    r.data().as_str().unwrap().to_string()
}

#[tokio::test]
async fn upid_has_the_real_shape_with_the_token_as_user() {
    let h = H::start().await;
    let upid = start_backup(&h).await;
    let parts: Vec<&str> = upid.split(':').collect();
    assert_eq!(parts.len(), 9);
    assert_eq!(
        (parts[0], parts[1], parts[5], parts[6], parts[7], parts[8]),
        ("UPID", "pve1", "vzdump", "101", "felhom101@pve!agent", "")
    );
    for p in &parts[2..5] {
        assert!(
            p.len() >= 8
                && p.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
            "{p}"
        );
    }
    assert_eq!(i64::from_str_radix(parts[4], 16).unwrap(), 1_795_000_000);
}

#[tokio::test]
async fn status_fields_running_then_stopped() {
    let h = H::start().await;
    let upid = start_backup(&h).await;
    let st = h.task_status(T101, &upid).await;
    assert_eq!(st["status"], "running");
    assert!(
        st.get("exitstatus").is_none(),
        "no exitstatus while running: {st}"
    );
    assert_eq!(st["user"], "felhom101@pve");
    assert_eq!(st["tokenid"], "agent");
    assert_eq!(st["type"], "vzdump");
    let st = h.run_to_end(T101, &upid).await;
    assert_eq!(st["exitstatus"], "OK");
}

#[tokio::test]
async fn only_owner_or_sys_audit_reads_a_task() {
    let h = H::start().await;
    let upid = start_backup(&h).await;
    let path = format!("/nodes/pve1/tasks/{}/status", enc(&upid));
    let r = h.get(T103, &path).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    );
    assert_eq!(h.get(AUDITOR, &path).await.data()["upid"], upid.as_str());
    // Asking the wrong node: the task is unknown there.
    let r = h
        .get(T101, &format!("/nodes/pve2/tasks/{}/status", enc(&upid)))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"]["upid"], "no such task");
    let r = h.get(T101, "/nodes/pve1/tasks/UPID%3Anope/status").await;
    assert_eq!(r.json()["errors"]["upid"], "unable to parse worker upid");
}

#[tokio::test]
async fn log_paging_and_total() {
    let h = H::start().await;
    let upid = start_backup(&h).await;
    h.run_to_end(T101, &upid).await;
    let all = h.task_log(T101, &upid).await;
    assert_eq!(all.last().unwrap(), "TASK OK");
    let r = h
        .get(
            T101,
            &format!("/nodes/pve1/tasks/{}/log?start=2&limit=3", enc(&upid)),
        )
        .await;
    let j = r.json();
    assert_eq!(j["total"], all.len());
    let lines = j["data"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["n"], 3, "n is 1-based");
    assert_eq!(lines[0]["t"], all[2].as_str());
}

#[tokio::test]
async fn task_list_filters_and_splits_archived_token_tasks() {
    let h = H::start().await;
    let upid = start_backup(&h).await;
    let active = h.get(T101, "/nodes/pve1/tasks?source=active").await.data();
    assert_eq!(active[0]["upid"], upid.as_str());
    assert_eq!(
        active[0]["user"], "felhom101@pve!agent",
        "active entries keep the full token id"
    );
    assert!(
        h.get(T101, "/nodes/pve1/tasks")
            .await
            .data()
            .as_array()
            .unwrap()
            .is_empty(),
        "archive excludes running"
    );
    h.run_to_end(T101, &upid).await;
    let arch = h
        .get(
            T101,
            "/nodes/pve1/tasks?typefilter=vzdump&vmid=101&source=all",
        )
        .await;
    let j = arch.json();
    assert_eq!(j["total"], 1);
    assert_eq!(j["data"][0]["user"], "felhom101@pve");
    assert_eq!(j["data"][0]["tokenid"], "agent");
    assert_eq!(j["data"][0]["status"], "OK");
    // Another token sees none of it.
    assert!(
        h.get(T103, "/nodes/pve1/tasks?source=all")
            .await
            .data()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
