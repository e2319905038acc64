//! Behaviours 2 and 3: the permission model and schema-driven checks before existence (§6).

use crate::harness::*;

#[tokio::test]
async fn scoped_token_gets_403_for_foreign_vmids_existing_or_not() {
    let h = H::start().await;
    assert_eq!(
        h.get(T101, "/nodes/pve1/qemu/101/status/current")
            .await
            .data()["status"],
        "running"
    );
    for (node, vmid) in [
        ("pve1", 102),
        ("pve2", 103),
        ("pve1", 999_999),
        ("nonode", 102),
    ] {
        for kind in ["qemu", "lxc"] {
            let r = h
                .get(T101, &format!("/nodes/{node}/{kind}/{vmid}/status/current"))
                .await;
            let msg = format!("Permission check failed (/vms/{vmid}, VM.Audit)");
            assert_eq!(
                (r.status, r.reason.as_str()),
                (403, msg.as_str()),
                "{node} {kind} {vmid}"
            );
            assert_eq!(
                r.json(),
                serde_json::json!({"data": null, "message": format!("{msg}\n")})
            );
            assert_eq!(
                r.header("connection"),
                Some("close"),
                "errors close the connection"
            );
        }
        let r = h
            .get(T101, &format!("/nodes/{node}/qemu/{vmid}/snapshot"))
            .await;
        assert_eq!(r.status, 403);
    }
}

#[tokio::test]
async fn propagated_role_passes_the_check_then_hits_missing_config() {
    let h = H::start().await;
    assert_eq!(
        h.get(WIDE, "/nodes/pve1/qemu/102/status/current")
            .await
            .data()["name"],
        "db01"
    );
    let r = h.get(WIDE, "/nodes/pve1/qemu/999999/status/current").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/999999.conf' does not exist"
    );
    // Wrong node for an existing guest: the same 500, as after a migration.
    let r = h.get(WIDE, "/nodes/pve2/qemu/101/config").await;
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve2/qemu-server/101.conf' does not exist"
    );
}

#[tokio::test]
async fn access_permissions_shows_exactly_the_scoped_paths() {
    let h = H::start().await;
    let d = h.get(T101, "/access/permissions").await.data();
    let paths: Vec<&String> = d.as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/storage/pbs-main", "/vms/101"], "{d}");
    assert_eq!(d["/vms/101"]["VM.Backup"], 1);
    assert!(d["/vms/101"].get("VM.Allocate").is_none());
    // A token cannot ask about its owner without Sys.Audit on /access.
    let r = h
        .get(T101, "/access/permissions?userid=felhom101%40pve")
        .await;
    assert_eq!(r.reason, "Permission check failed (/access, Sys.Audit)");
    // Effective rights of a non-privsep token are its user's: /vms propagated.
    let w = h
        .get(WIDE, "/access/permissions?path=%2Fvms%2F102")
        .await
        .data();
    assert_eq!(w["/vms/102"]["VM.Allocate"], 1);
}

#[tokio::test]
async fn privsep_token_is_intersected_with_its_user() {
    // The token has FelhomAgent on /vms/102 but its user does not: nothing on 102.
    let extra = r#"
[[access.acl]]
path = "/vms/102"
roleid = "FelhomAgent"
ugid = "felhom101@pve!agent"
type = "token"
"#;
    let h = H::start_with(BASIC, extra).await;
    let r = h.get(T101, "/nodes/pve1/qemu/102/status/current").await;
    assert_eq!(r.reason, "Permission check failed (/vms/102, VM.Audit)");
}

#[tokio::test]
async fn pool_membership_grants_through_pool_acl() {
    let extra = r#"
[[access.pools]]
poolid = "tenant"
vms = [104]
[[access.acl]]
path = "/pool/tenant"
roleid = "PVEAuditor"
ugid = "felhom103@pve"
type = "user"
[[access.acl]]
path = "/pool/tenant"
roleid = "PVEAuditor"
ugid = "felhom103@pve!agent"
type = "token"
"#;
    let h = H::start_with(BASIC, extra).await;
    let res = h.get(T103, "/cluster/resources?type=vm").await.data();
    let mut ids: Vec<u64> = res
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["vmid"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [103, 104], "a pool ACL makes the pool member visible");
}
