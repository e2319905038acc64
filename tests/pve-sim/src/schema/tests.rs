//! Unit tests of schema parsing, the path tree and operation metadata.

use super::*;
use serde_json::json;

const MINI: &str = r#"[
 {"path": "/nodes", "text": "nodes", "leaf": 0, "info": {"GET": {"name": "index", "permissions": {"user": "all"}, "parameters": {"additionalProperties": 0}}},
  "children": [
   {"path": "/nodes/{node}", "text": "{node}", "leaf": 0,
    "children": [
     {"path": "/nodes/{node}/storage/{storage}/content/{volume}", "text": "{volume}", "leaf": 1,
      "info": {"DELETE": {"name": "delete", "allowtoken": 1, "protected": 1, "proxyto": "node",
               "permissions": {"check": ["perm", "/storage/{storage}", ["Datastore.Allocate"]]},
               "parameters": {"additionalProperties": 0, "properties": {"volume": {"type": "string"}}}}}},
     {"path": "/nodes/{node}/status", "text": "status", "leaf": 1,
      "info": {"POST": {"name": "set", "allowtoken": 0, "parameters": {}}}}
    ]}
  ]}
]"#;

#[test]
fn parses_operations_and_metadata() {
    let s = Schema::from_json(MINI).unwrap();
    assert_eq!(s.operations().count(), 3);
    let del = s
        .lookup(
            "DELETE",
            "/nodes/pve/storage/local/content/local:backup/vzdump-qemu-101.vma.zst",
        )
        .unwrap();
    assert_eq!(del.op.name, "delete");
    assert!(del.op.protected && del.op.allowtoken);
    assert_eq!(del.op.proxyto.as_deref(), Some("node"));
    assert_eq!(
        del.uri_params["volume"],
        "local:backup/vzdump-qemu-101.vma.zst"
    );
    assert_eq!(del.uri_params["storage"], "local");
    let set = s.lookup("POST", "/nodes/pve/status").unwrap();
    assert!(!set.op.allowtoken);
    assert_eq!(set.op.permissions, Permissions::RootOnly);
    assert!(s.lookup("GET", "/nodes/pve/status").is_none());
    assert!(s.has_operation("GET", "/nodes"));
    assert!(!s.has_operation("GET", "/nodes/{node}"));
}

#[test]
fn apidata_js_wrapper_is_accepted() {
    let wrapped = format!("const apiSchema = {MINI};\n");
    assert_eq!(Schema::from_json(&wrapped).unwrap().operations().count(), 3);
    assert!(Schema::from_json("{").is_err());
}

#[test]
fn segments_and_param_matching() {
    let s = pve9();
    // empty segments are skipped, like split('/+')
    let r = s
        .lookup("GET", "//nodes//pve/qemu/101/status/current/")
        .unwrap();
    assert_eq!(r.op.template, "/nodes/{node}/qemu/{vmid}/status/current");
    // a parameter is \S+: whitespace inside never matches
    assert!(s.lookup("GET", "/nodes/p ve/qemu").is_none());
    // m/^(\S+)$/ drops one trailing newline from the capture
    let r = s.lookup("GET", "/nodes/pve\n/qemu").unwrap();
    assert_eq!(r.uri_params["node"], "pve");
    assert!(s.lookup("GET", "/").is_none());
    assert!(s.lookup("GET", "").is_none());
}

#[test]
fn greedy_content_subtree_only() {
    let s = pve9();
    // content index stays reachable
    let r = s.lookup("GET", "/nodes/pve/storage/local/content").unwrap();
    assert_eq!(r.op.template, "/nodes/{node}/storage/{storage}/content");
    // a slash below other parameters is not swallowed
    assert!(
        s.lookup("GET", "/nodes/pve/tasks/UPID:a/b/status")
            .is_none()
    );
}

#[test]
fn user_all_wins_over_check_like_check_api2_permissions() {
    let op = pve9()
        .operations()
        .find(|o| o.method == "GET" && o.template == "/cluster/options")
        .unwrap();
    assert_eq!(op.permissions, Permissions::UserAll);
    let deny = |_: &str, _: &[&str], _: bool| false;
    assert_eq!(op.permissions.eval(false, &BTreeMap::new(), &deny), Ok(()));
    assert_eq!(
        Permissions::RootOnly.eval(false, &BTreeMap::new(), &deny),
        Err("Permission check failed (user != root@pam)".into())
    );
    assert_eq!(
        Permissions::RootOnly.eval(true, &BTreeMap::new(), &deny),
        Ok(())
    );
}

#[test]
fn clone_permissions_parse_with_require_param() {
    let op = pve9()
        .operations()
        .find(|o| o.method == "POST" && o.template == "/nodes/{node}/qemu/{vmid}/clone")
        .unwrap();
    let perm = |p: &str, privs: &[&str]| CheckExpr::Perm {
        path: p.into(),
        privs: privs.iter().map(|s| s.to_string()).collect(),
        any: false,
    };
    assert_eq!(
        op.permissions,
        Permissions::Check(CheckExpr::And(vec![
            perm("/vms/{vmid}", &["VM.Clone"]),
            CheckExpr::Or(vec![
                perm("/vms/{newid}", &["VM.Allocate"]),
                CheckExpr::PermRequireParam {
                    param: "pool".into(),
                    check: Box::new(perm("/pool/{pool}", &["VM.Allocate"])),
                },
            ]),
        ]))
    );
}

#[test]
fn property_schema_details() {
    let op = pve9()
        .operations()
        .find(|o| o.method == "POST" && o.template == "/nodes/{node}/vzdump")
        .unwrap();
    let p = &op.params.properties;
    assert!(!op.params.additional_properties);
    assert_eq!(p["notes-template"].requires.as_deref(), Some("storage"));
    assert_eq!(p["notes-template"].max_length, Some(1024));
    assert_eq!(
        p["ionice"].maximum,
        Some(Limit {
            value: 8.0,
            text: "8".into()
        })
    );
    assert!(matches!(&p["prune-backups"].format, Some(Format::Named(f)) if f == "prune-backups"));
    assert_eq!(p["job-id"].pattern.as_ref().unwrap().source, r"\S+");
    assert_eq!(p["mode"].default, Some(json!("snapshot")));
    assert!(p["exclude-path"].items.is_some());
}
