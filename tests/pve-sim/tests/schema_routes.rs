//! Fidelity proofs for the schema-driven simulator: every served route exists in the official
//! PVE 9 and PVE 8 schemas, lookups of concrete paths, permission expressions and their 403
//! messages, and parameter validation messages exactly as PVE words them.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;
use pve_sim::routes::ROUTES;
use pve_sim::schema::{self, CheckExpr, Operation, Permissions, Schema, formats, pve9};
use serde_json::{Value, json};

fn pve8() -> Schema {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/pve8-apidata.json"
    ))
    .unwrap();
    Schema::from_json(&text).unwrap()
}

/// What the server does with the raw path: percent-decode each segment.
fn decoded(raw: &str) -> String {
    raw.split('/')
        .map(|s| percent_decode_str(s).decode_utf8().unwrap().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn op(method: &str, template: &str) -> &'static Operation {
    pve9()
        .operations()
        .find(|o| o.method == method && o.template == template)
        .unwrap_or_else(|| panic!("{method} {template} not in schema"))
}

/// The fidelity gate: the list of served routes must be a subset of real PVE's operations.
fn missing_routes<'a>(schema: &Schema, routes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    routes
        .iter()
        .filter(|(m, t)| !schema.has_operation(m, t))
        .copied()
        .collect()
}

#[test]
fn every_served_route_exists_in_pve9_and_pve8() {
    assert_eq!(missing_routes(pve9(), ROUTES), []);
    assert_eq!(missing_routes(&pve8(), ROUTES), []);
    assert_eq!(pve9().operations().count(), 649);
    assert_eq!(pve8().operations().count(), 605);
}

#[test]
fn a_route_real_pve_lacks_is_rejected() {
    let mut with_fake = ROUTES.to_vec();
    with_fake.push(("POST", "/nodes/{node}/qemu/{vmid}/backup"));
    with_fake.push(("PATCH", "/version"));
    assert_eq!(
        missing_routes(pve9(), &with_fake),
        [
            ("POST", "/nodes/{node}/qemu/{vmid}/backup"),
            ("PATCH", "/version")
        ]
    );
    assert!(
        pve9()
            .lookup("POST", "/nodes/pve/qemu/101/backup")
            .is_none()
    );
    assert!(pve9().lookup("GET", "/x").is_none());
}

#[test]
fn every_format_of_served_routes_is_implemented() {
    for (m, t) in ROUTES {
        for (name, prop) in &op(m, t).params.properties {
            if let Some(schema::Format::Named(f)) = &prop.format {
                assert!(formats::is_known(f), "{m} {t} {name}: format {f}");
            }
        }
    }
}

#[test]
fn lookup_of_concrete_paths() {
    let s = pve9();
    let r = s
        .lookup("GET", "/nodes/pve1/qemu/101/status/current")
        .unwrap();
    assert_eq!(r.op.template, "/nodes/{node}/qemu/{vmid}/status/current");
    assert_eq!(
        r.uri_params,
        BTreeMap::from([
            ("node".to_string(), "pve1".to_string()),
            ("vmid".to_string(), "101".to_string()),
        ])
    );

    let r = s
        .lookup("DELETE", "/nodes/pve1/lxc/105/snapshot/felhom-2024")
        .unwrap();
    assert_eq!(
        r.op.template,
        "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}"
    );
    assert_eq!(r.uri_params["snapname"], "felhom-2024");

    // a volume id with ':' and an encoded '/' is one {volume}
    let raw = "/nodes/pve1/storage/pbs/content/pbs%3Abackup%2Fvm%2F101%2F2024-05-01T10%3A00%3A00Z";
    let r = s.lookup("DELETE", &decoded(raw)).unwrap();
    assert_eq!(
        r.op.template,
        "/nodes/{node}/storage/{storage}/content/{volume}"
    );
    assert_eq!(
        r.uri_params["volume"],
        "pbs:backup/vm/101/2024-05-01T10:00:00Z"
    );
    assert_eq!(r.uri_params["storage"], "pbs");
    // also unencoded, as pve-storage mounts content with fragmentDelimiter ''
    let r = s
        .lookup(
            "GET",
            "/nodes/pve1/storage/local/content/local:backup/vzdump-qemu-101.vma.zst",
        )
        .unwrap();
    assert_eq!(
        r.uri_params["volume"],
        "local:backup/vzdump-qemu-101.vma.zst"
    );

    // UPIDs contain ':' and '!'
    let upid = "UPID:pve1:0000A1B2:0001C3D4:66AABBCC:vzdump:101:backup@pve!felhom:";
    let raw = format!(
        "/nodes/pve1/tasks/{}/status",
        upid.replace(':', "%3A").replace('!', "%21")
    );
    let r = s.lookup("GET", &decoded(&raw)).unwrap();
    assert_eq!(r.op.template, "/nodes/{node}/tasks/{upid}/status");
    assert_eq!(r.uri_params["upid"], upid);
    let r = s
        .lookup("DELETE", &format!("/nodes/pve1/tasks/{upid}"))
        .unwrap();
    assert_eq!(r.op.template, "/nodes/{node}/tasks/{upid}");
    assert!(
        s.lookup("PUT", &format!("/nodes/pve1/tasks/{upid}"))
            .is_none()
    );
}

fn perm(path: &str, privs: &[&str], any: bool) -> Permissions {
    Permissions::Check(CheckExpr::Perm {
        path: path.into(),
        privs: privs.iter().map(|p| p.to_string()).collect(),
        any,
    })
}

#[test]
fn permission_expressions_parse_as_expected() {
    assert_eq!(
        op("GET", "/nodes/{node}/qemu/{vmid}/status/current").permissions,
        perm("/vms/{vmid}", &["VM.Audit"], false)
    );
    assert_eq!(
        op("POST", "/nodes/{node}/qemu/{vmid}/snapshot").permissions,
        perm("/vms/{vmid}", &["VM.Snapshot"], false)
    );
    assert_eq!(
        op(
            "POST",
            "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"
        )
        .permissions,
        perm(
            "/vms/{vmid}",
            &["VM.Snapshot", "VM.Snapshot.Rollback"],
            true
        )
    );
    assert_eq!(
        op("GET", "/nodes/{node}/qemu/{vmid}/snapshot").permissions,
        perm("/vms/{vmid}", &["VM.Audit"], false)
    );
    assert_eq!(
        op("GET", "/nodes/{node}/storage/{storage}/status").permissions,
        perm(
            "/storage/{storage}",
            &["Datastore.Audit", "Datastore.AllocateSpace"],
            true
        )
    );
    assert_eq!(
        op("GET", "/cluster/resources").permissions,
        Permissions::UserAll
    );
    assert_eq!(
        op("POST", "/nodes/{node}/vzdump").permissions,
        Permissions::UserAll
    );
    assert_eq!(
        op("POST", "/cluster/config").permissions,
        Permissions::RootOnly
    );
    assert!(!op("POST", "/access/ticket").allowtoken);
}

/// RBAC stub: (path, priv) grants.
fn grants(list: &'static [(&'static str, &'static str)]) -> impl Fn(&str, &[&str], bool) -> bool {
    move |path, privs, any| {
        let held = |p: &&str| list.iter().any(|(gp, gv)| *gp == path && gv == p);
        if any {
            privs.iter().any(held)
        } else {
            privs.iter().all(held)
        }
    }
}

#[test]
fn permission_messages_use_the_request_values() {
    let s = pve9();
    let has = grants(&[
        ("/vms/101", "VM.Audit"),
        ("/storage/pbs", "Datastore.AllocateSpace"),
    ]);
    let r = s
        .lookup("GET", "/nodes/pve1/qemu/102/status/current")
        .unwrap();
    assert_eq!(
        r.op.permissions.eval(false, &r.uri_params, &has),
        Err("Permission check failed (/vms/102, VM.Audit)".into())
    );
    let r = s
        .lookup("GET", "/nodes/pve1/qemu/101/status/current")
        .unwrap();
    assert_eq!(r.op.permissions.eval(false, &r.uri_params, &has), Ok(()));
    let r = s.lookup("GET", "/nodes/pve1/storage/x/status").unwrap();
    assert_eq!(
        r.op.permissions.eval(false, &r.uri_params, &has),
        Err("Permission check failed (/storage/x, Datastore.Audit|Datastore.AllocateSpace)".into())
    );
    let r = s.lookup("GET", "/nodes/pve1/storage/pbs/status").unwrap();
    assert_eq!(r.op.permissions.eval(false, &r.uri_params, &has), Ok(()));
    let r = s.lookup("GET", "/cluster/resources").unwrap();
    assert_eq!(r.op.permissions.eval(false, &r.uri_params, &has), Ok(()));
    // a combined check gives the plain message
    let r = s.lookup("GET", "/access/users/bob@pve/token").unwrap();
    assert_eq!(
        r.op.permissions.eval(false, &r.uri_params, &has),
        Err("Permission check failed".into())
    );
}

fn strs(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn errors(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn vzdump() -> &'static Operation {
    op("POST", "/nodes/{node}/vzdump")
}

#[test]
fn vzdump_valid_form_params_are_typed() {
    let out = schema::validate(
        vzdump(),
        &strs(&[
            ("node", "pve1"),
            ("vmid", "101"),
            ("storage", "pbs"),
            ("mode", "snapshot"),
            ("remove", "1"),
            ("protected", "0"),
            ("lockwait", "+5"),
            ("prune-backups", "keep-last=3,keep-daily=7"),
            ("fleecing", "1,storage=local-lvm"),
        ]),
        true,
    )
    .unwrap();
    assert_eq!(out["remove"], json!(true));
    assert_eq!(out["protected"], json!(false));
    assert_eq!(out["lockwait"], json!(5));
    assert_eq!(out["vmid"], json!("101"));
    assert_eq!(out["prune-backups"], json!("keep-last=3,keep-daily=7"));
}

#[test]
fn vzdump_json_body_may_use_real_booleans_and_numbers() {
    let params: BTreeMap<String, Value> = [
        ("node", json!("pve1")),
        ("vmid", json!(101)),
        ("remove", json!(true)),
        ("lockwait", json!(10)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let out = schema::validate(vzdump(), &params, false).unwrap();
    assert_eq!(out["remove"], json!(true));
    assert_eq!(out["vmid"], json!("101"));
    assert_eq!(out["lockwait"], json!(10));
}

#[test]
fn vzdump_error_messages() {
    let e = schema::validate(
        vzdump(),
        &strs(&[
            ("node", "pve1"),
            ("vmid", "101,abc"),
            ("storage", "9bad"),
            ("mode", "fast"),
            ("remove", "true"),
            ("lockwait", "abc"),
            ("bwlimit", "-1"),
            ("job-id", "a b"),
            ("prune-backups", "keep-last=3,keep-forever=1"),
            ("notes-template", "{{guestname}}"),
            ("bogus", "1"),
        ]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[
            (
                "vmid",
                "invalid format - value does not look like a valid VM ID\n"
            ),
            (
                "storage",
                "invalid format - storage ID '9bad' contains illegal characters\n"
            ),
            (
                "mode",
                "value 'fast' does not have a value in the enumeration 'snapshot, suspend, stop'",
            ),
            ("remove", "type check ('boolean') failed - got 'true'"),
            ("lockwait", "type check ('integer') failed - got 'abc'"),
            ("bwlimit", "value must have a minimum value of 0"),
            ("job-id", "value does not match the regex pattern"),
            (
                "prune-backups",
                "invalid format - invalid key in comma-separated list property: keep-forever\n",
            ),
            (
                "bogus",
                "property is not defined in schema and the schema does not allow additional properties",
            ),
        ])
    );
}

#[test]
fn vzdump_requires_and_property_string_type_errors() {
    let e = schema::validate(
        vzdump(),
        &strs(&[("notes-template", "x"), ("prune-backups", "keep-last=abc")]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[
            (
                "storage",
                "missing property - 'notes-template' requires this property"
            ),
            (
                "prune-backups",
                "invalid format - format error\nprune-backups.keep-last: type check ('integer') failed - got 'abc'\n",
            ),
        ])
    );
    let e = schema::validate(
        vzdump(),
        &strs(&[("prune-backups", "keep-all=1,keep-last=1")]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[(
            "prune-backups",
            "invalid format - keep-all cannot be set together with other options.\n"
        )])
    );
}

#[test]
fn snapshot_snapname_and_uri_params() {
    let create = op("POST", "/nodes/{node}/qemu/{vmid}/snapshot");
    let ok = schema::validate(
        create,
        &strs(&[
            ("node", "pve1"),
            ("vmid", "101"),
            ("snapname", "felhom_2024-05-01"),
            ("vmstate", "0"),
        ]),
        true,
    )
    .unwrap();
    assert_eq!(ok["vmid"], json!(101));
    assert_eq!(ok["vmstate"], json!(false));

    let e = schema::validate(
        create,
        &strs(&[
            ("node", "pve_1"),
            ("vmid", "99"),
            ("snapname", "2024-05-01"),
        ]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[
            (
                "node",
                "invalid format - value does not look like a valid node name\n"
            ),
            (
                "vmid",
                "invalid format - value does not look like a valid VM ID\n"
            ),
            (
                "snapname",
                "invalid format - invalid configuration ID '2024-05-01'\n"
            ),
        ])
    );

    let long = format!("s{}", "a".repeat(40));
    let e = schema::validate(
        create,
        &strs(&[
            ("node", "pve1"),
            ("vmid", "abc"),
            ("snapname", long.as_str()),
        ]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[
            ("vmid", "type check ('integer') failed - got 'abc'"),
            ("snapname", "value may only be 40 characters long"),
        ])
    );

    let e =
        schema::validate(create, &strs(&[("node", "pve1"), ("vmid", "101")]), true).unwrap_err();
    assert_eq!(
        e,
        errors(&[("snapname", "property is missing and it is not optional")])
    );
}

#[test]
fn uri_params_of_a_lookup_validate() {
    let r = pve9()
        .lookup("GET", "/nodes/pve1/qemu/1000000000/status/current")
        .unwrap();
    let params: BTreeMap<String, Value> = r
        .uri_params
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    assert_eq!(
        schema::validate(r.op, &params, true).unwrap_err(),
        errors(&[(
            "vmid",
            "invalid format - value does not look like a valid VM ID\n"
        )])
    );
}

#[test]
fn other_served_route_params() {
    let tasks = op("GET", "/nodes/{node}/tasks");
    let e = schema::validate(
        tasks,
        &strs(&[
            ("node", "pve1"),
            ("statusfilter", "ok,nope"),
            ("limit", "-1"),
            ("source", "x"),
        ]),
        true,
    )
    .unwrap_err();
    assert_eq!(
        e,
        errors(&[
            ("statusfilter", "invalid format - invalid status 'nope'\n"),
            ("limit", "value must have a minimum value of 0"),
            (
                "source",
                "value 'x' does not have a value in the enumeration 'archive, active, all'"
            ),
        ])
    );
    let perms = op("GET", "/access/permissions");
    assert!(schema::validate(perms, &strs(&[("userid", "backup@pve!felhom")]), true).is_ok());
    assert_eq!(
        schema::validate(perms, &strs(&[("userid", "backup")]), true).unwrap_err(),
        errors(&[("userid", "value does not match the regex pattern")])
    );
    let del = op("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}");
    assert_eq!(
        schema::validate(
            del,
            &strs(&[("node", "pve1"), ("volume", "x"), ("delay", "31")]),
            true
        )
        .unwrap_err(),
        errors(&[("delay", "value must have a maximum value of 30")])
    );
}
