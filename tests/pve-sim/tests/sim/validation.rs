//! Behaviour 5: parameter validation from the schema, bodies on GET/DELETE, unknown paths.

use crate::harness::*;

#[tokio::test]
async fn unknown_and_mistyped_parameters_are_400_with_errors_map() {
    let h = H::start().await;
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main"), ("bogus", "1")],
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    let j = r.json();
    assert_eq!(
        j["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert_eq!(j["message"], "Parameter verification failed.\n");
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101"),
                ("storage", "pbs-main"),
                ("protected", "true"),
            ],
        )
        .await;
    assert_eq!(
        r.json()["errors"]["protected"],
        "type check ('boolean') failed - got 'true'"
    );
    let r = h
        .post(
            T101,
            "/nodes/pve1/vzdump",
            &[("vmid", "101"), ("storage", "pbs-main"), ("mode", "fast")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["errors"]["mode"]
            .as_str()
            .unwrap()
            .contains("enumeration"),
        "{}",
        r.json()
    );
    let r = h.post(T101, "/nodes/pve1/qemu/101/snapshot", &[]).await;
    assert_eq!(
        r.json()["errors"]["snapname"],
        "property is missing and it is not optional"
    );
    // No request that failed validation started a task.
    assert!(h.sim.world().tasks.is_empty());
}

#[tokio::test]
async fn body_on_get_or_delete_is_501_and_unknown_paths_are_501() {
    let h = H::start().await;
    let a = auth(T101);
    let r = h
        .raw(
            "GET",
            "/api2/json/version",
            &[
                ("Authorization", &a),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(b"x=1"),
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Unexpected content for method 'GET'")
    );
    let r = h
        .raw(
            "DELETE",
            "/api2/json/nodes/pve1/qemu/101/snapshot/x",
            &[("Authorization", &a)],
            Some(b"force=1"),
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Unexpected content for method 'DELETE'")
    );
    let r = h.get(T101, "/x").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (501, "Method 'GET /x' not implemented")
    );
}

#[tokio::test]
async fn json_bodies_accept_real_booleans() {
    let h = H::start().await;
    let a = auth(T101);
    let body = br#"{"vmid":"101","storage":"pbs-main","protected":true,"mode":"snapshot"}"#;
    let r = h
        .raw(
            "POST",
            "/api2/json/nodes/pve1/vzdump",
            &[("Authorization", &a), ("Content-Type", "application/json")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.data().as_str().unwrap().starts_with("UPID:pve1:"));
}
