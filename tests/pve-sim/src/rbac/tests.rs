//! Unit tests of the permission model against the semantics read from pve-access-control.

use super::*;

const NOW: i64 = 1_750_000_000;

fn spec(toml_src: &str) -> RbacSpec {
    toml::from_str(toml_src).expect("spec parses")
}

fn rbac(toml_src: &str) -> Rbac {
    Rbac::from_spec(&spec(toml_src)).expect("spec valid")
}

fn err(toml_src: &str) -> String {
    Rbac::from_spec(&spec(toml_src)).expect_err("spec must be rejected")
}

fn names(m: &BTreeMap<String, bool>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

fn token(user: &str, name: &str) -> AuthId {
    AuthId {
        user: user.into(),
        token: Some(name.into()),
    }
}

fn hdr(v: &str) -> Option<&str> {
    Some(v)
}

// ---------------------------------------------------------------- built-in roles

#[test]
fn builtin_table_matches_pve_perm_test1() {
    let r = Rbac::from_spec(&RbacSpec::default()).unwrap();
    // pve-access-control src/test/perm-test1.pl, PVEVMAdmin on /vms/300
    let vm_admin = "VM.Allocate,VM.Audit,VM.Backup,VM.Clone,VM.Config.CDROM,VM.Config.CPU,\
        VM.Config.Cloudinit,VM.Config.Disk,VM.Config.HWType,VM.Config.Memory,VM.Config.Network,\
        VM.Config.Options,VM.Console,VM.GuestAgent.Audit,VM.GuestAgent.FileRead,\
        VM.GuestAgent.FileSystemMgmt,VM.GuestAgent.FileWrite,VM.GuestAgent.Unrestricted,\
        VM.Migrate,VM.PowerMgmt,VM.Replicate,VM.Snapshot,VM.Snapshot.Rollback";
    let got: Vec<&str> = r
        .role_privs("PVEVMAdmin")
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(got.join(","), vm_admin);
    // Administrator on /vms/400: every privilege.
    let admin: Vec<&str> = r
        .role_privs("Administrator")
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(admin, Rbac::all_privileges());
    assert_eq!(Rbac::all_privileges().len(), 47);
    assert!(
        Rbac::all_privileges().windows(2).all(|w| w[0] < w[1]),
        "sorted"
    );
    assert!(r.role_privs("NoAccess").unwrap().is_empty());
    assert_eq!(r.role_privs("Nope"), None);
}

#[test]
fn builtin_roles_follow_the_privgroup_rules() {
    let r = Rbac::from_spec(&RbacSpec::default()).unwrap();
    let role = |n: &str| r.role_privs(n).unwrap().clone();
    let root_only = [
        "Sys.PowerMgmt",
        "Sys.Modify",
        "Sys.Incoming",
        "Sys.AccessNetwork",
        "Realm.Allocate",
    ];
    let admin = role("PVEAdmin");
    for p in root_only
        .iter()
        .chain(&["Permissions.Modify", "Mapping.Modify"])
    {
        assert!(!admin.contains(*p), "PVEAdmin must not have {p}");
    }
    assert_eq!(admin.len(), 47 - root_only.len() - 2);
    for (name, privs) in builtin::BUILTIN_ROLES {
        assert!(
            privs.iter().all(|p| builtin::is_valid_privilege(p)),
            "{name}"
        );
        if name.starts_with("PVE") && *name != "PVEMappingAdmin" {
            assert!(
                privs.iter().all(|p| admin.contains(*p)),
                "{name} within PVEAdmin"
            );
        }
    }
    assert_eq!(builtin::BUILTIN_ROLES.len(), 17);
    let auditor: Vec<String> = role("PVEAuditor").into_iter().collect();
    assert!(auditor.iter().all(|p| p.ends_with(".Audit")));
    assert!(role("PVEVMUser").is_subset(&role("PVEVMAdmin")));
    assert!(role("PVEDatastoreUser").is_subset(&role("PVEDatastoreAdmin")));
}

// ---------------------------------------------------------------- ACL walk

const FAMILY: &str = r#"
groups = [{ groupid = "ops" }]
users = [
  { userid = "max@pve", groups = ["ops"] },
  { userid = "sue@pve", groups = ["ops"] },
]
roles = [{ roleid = "Custom", privs = ["VM.Audit", "VM.PowerMgmt"] }]
"#;

fn with_acl(base: &str, acl: &[(&str, &str, &str, &str, bool)]) -> Rbac {
    let mut r = rbac(base);
    for &(path, roleid, ugid, ty, propagate) in acl {
        let r#type = match ty {
            "user" => AclType::User,
            "group" => AclType::Group,
            _ => AclType::Token,
        };
        r.add_acl(AclSpec {
            path: path.into(),
            roleid: roleid.into(),
            ugid: ugid.into(),
            r#type,
            propagate,
        })
        .unwrap();
    }
    r
}

#[test]
fn user_entry_beats_group_entry_at_the_same_level() {
    let r = with_acl(
        FAMILY,
        &[
            ("/vms", "PVEVMAdmin", "ops", "group", true),
            ("/vms", "PVEAuditor", "max@pve", "user", true),
        ],
    );
    let max = AuthId::user("max@pve");
    assert_eq!(
        names(&r.privileges(&max, "/vms/100")),
        [
            "Datastore.Audit",
            "Mapping.Audit",
            "Pool.Audit",
            "SDN.Audit",
            "Sys.Audit",
            "VM.Audit",
            "VM.GuestAgent.Audit"
        ]
    );
    // sue has no user entry: the group role applies.
    assert!(r.check(
        &AuthId::user("sue@pve"),
        "/vms/100",
        &["VM.Allocate"],
        false
    ));
    assert!(!r.check(&max, "/vms/100", &["VM.Allocate"], false));
}

#[test]
fn non_propagating_user_entry_falls_through_to_groups_below_it() {
    // roles(): a user entry that yields nothing at a non-final level does not shadow groups.
    let r = with_acl(
        FAMILY,
        &[
            ("/vms", "PVEAuditor", "max@pve", "user", false),
            ("/vms", "Custom", "ops", "group", true),
        ],
    );
    let max = AuthId::user("max@pve");
    assert_eq!(
        names(&r.privileges(&max, "/vms/100")),
        ["VM.Audit", "VM.PowerMgmt"]
    );
    assert!(
        r.check(&max, "/vms", &["Sys.Audit"], false),
        "user entry applies at its own path"
    );
    assert!(
        !r.check(&max, "/vms", &["VM.PowerMgmt"], false),
        "and shadows the group there"
    );
}

#[test]
fn deeper_path_replaces_inherited_roles() {
    let r = with_acl(
        FAMILY,
        &[
            ("/", "PVEVMAdmin", "max@pve", "user", true),
            ("/vms/101", "Custom", "max@pve", "user", true),
        ],
    );
    let max = AuthId::user("max@pve");
    assert!(r.check(&max, "/vms/102", &["VM.Allocate"], false));
    assert_eq!(
        names(&r.privileges(&max, "/vms/101")),
        ["VM.Audit", "VM.PowerMgmt"]
    );
}

#[test]
fn propagate_zero_applies_only_at_its_exact_path() {
    let r = with_acl(FAMILY, &[("/vms", "Custom", "max@pve", "user", false)]);
    let max = AuthId::user("max@pve");
    let at = r.privileges(&max, "/vms");
    assert_eq!(
        at,
        BTreeMap::from([("VM.Audit".into(), false), ("VM.PowerMgmt".into(), false)])
    );
    assert!(r.privileges(&max, "/vms/101").is_empty());
    // With propagation the flag is reported as 1.
    let r = with_acl(FAMILY, &[("/vms", "Custom", "max@pve", "user", true)]);
    assert_eq!(r.privileges(&max, "/vms/101").get("VM.Audit"), Some(&true));
}

#[test]
fn no_access_cancels_other_roles() {
    let r = with_acl(
        FAMILY,
        &[
            ("/vms", "PVEVMAdmin", "max@pve", "user", true),
            ("/vms/200", "NoAccess", "max@pve", "user", true),
            ("/vms/200", "Custom", "max@pve", "user", true),
        ],
    );
    let max = AuthId::user("max@pve");
    assert!(r.privileges(&max, "/vms/200").is_empty());
    assert!(r.check(&max, "/vms/201", &["VM.Audit"], false));
}

#[test]
fn paths_are_normalized_and_bad_paths_grant_nothing() {
    let r = with_acl(FAMILY, &[("/vms/", "Custom", "max@pve", "user", true)]);
    let max = AuthId::user("max@pve");
    assert!(r.check(&max, "//vms//101/", &["VM.Audit"], false));
    assert!(!r.check(&max, "/vms/1 01", &["VM.Audit"], false));
    assert!(!r.check(&max, "", &["VM.Audit"], false));
}

// ---------------------------------------------------------------- tokens

const TOKENS: &str = r#"
users = [{ userid = "alice@pve" }]
tokens = [
  { tokenid = "alice@pve!sep", secret = "s1" },
  { tokenid = "alice@pve!full", secret = "s2", privsep = false },
]
"#;

#[test]
fn privsep_token_is_intersected_with_its_user_per_path() {
    let r = with_acl(
        TOKENS,
        &[
            ("/vms", "PVEVMUser", "alice@pve", "user", false),
            ("/vms", "PVEAuditor", "alice@pve!sep", "token", true),
            (
                "/storage",
                "PVEDatastoreUser",
                "alice@pve!sep",
                "token",
                true,
            ),
        ],
    );
    let sep = token("alice@pve", "sep");
    // /vms: user VMUser (propagate 0) ∩ token Auditor (propagate 1) → AND = 0.
    assert_eq!(
        r.privileges(&sep, "/vms"),
        BTreeMap::from([
            ("VM.Audit".into(), false),
            ("VM.GuestAgent.Audit".into(), false)
        ])
    );
    // Below /vms the user has nothing, so neither has the token.
    assert!(r.privileges(&sep, "/vms/100").is_empty());
    // The token's own ACL never grants what the user lacks.
    assert!(r.privileges(&sep, "/storage/local").is_empty());
}

#[test]
fn non_privsep_token_has_exactly_the_user_privileges() {
    let r = with_acl(
        TOKENS,
        &[
            ("/vms", "PVEVMUser", "alice@pve", "user", true),
            ("/", "PVEAuditor", "alice@pve!full", "token", true),
        ],
    );
    let user = AuthId::user("alice@pve");
    let full = token("alice@pve", "full");
    for path in ["/", "/vms", "/vms/100", "/storage/x"] {
        assert_eq!(
            r.privileges(&full, path),
            r.privileges(&user, path),
            "{path}"
        );
    }
    assert!(
        r.privileges(&full, "/").is_empty(),
        "token ACL ignored without privsep"
    );
}

#[test]
fn token_entries_replace_inherited_token_roles_and_ignore_user_entries() {
    let r = with_acl(
        TOKENS,
        &[
            ("/", "PVEVMAdmin", "alice@pve", "user", true),
            ("/vms", "PVEVMAdmin", "alice@pve!sep", "token", true),
            ("/vms/100", "PVEVMUser", "alice@pve!sep", "token", true),
            ("/vms/100", "PVEAuditor", "alice@pve", "user", true),
        ],
    );
    let sep = token("alice@pve", "sep");
    // token: VMUser at /vms/100 (own entry); user: Auditor there → intersection.
    assert_eq!(
        names(&r.privileges(&sep, "/vms/100")),
        ["VM.Audit", "VM.GuestAgent.Audit"]
    );
    assert!(r.check(&sep, "/vms/101", &["VM.Allocate"], false));
    assert!(
        !r.check(&sep, "/nodes/pve", &["VM.Allocate"], false),
        "user role at / is not the token's"
    );
}

#[test]
fn root_is_all_powerful_and_root_tokens_are_not_intersected() {
    let r = rbac(
        r#"
tokens = [
  { tokenid = "root@pam!sep", secret = "r1" },
  { tokenid = "root@pam!full", secret = "r2", privsep = false },
]
acl = [{ path = "/vms/100", roleid = "PVEAuditor", ugid = "root@pam!sep", type = "token", propagate = false }]
"#,
    );
    let root = AuthId::user("root@pam");
    assert!(root.is_root());
    let all = r.privileges(&root, "/anything/at/all");
    assert_eq!(all.len(), 47);
    assert!(all.values().all(|&p| p));
    assert!(r.check(
        &root,
        "/vms/999",
        &["Sys.Modify", "Permissions.Modify"],
        false
    ));
    let full = token("root@pam", "full");
    assert!(!full.is_root());
    assert_eq!(r.privileges(&full, "/vms/1"), all);
    let sep = token("root@pam", "sep");
    assert_eq!(
        r.privileges(&sep, "/vms/100")
            .into_iter()
            .collect::<Vec<_>>(),
        r.role_privs("PVEAuditor")
            .unwrap()
            .iter()
            .map(|p| (p.clone(), false))
            .collect::<Vec<_>>()
    );
    assert!(r.privileges(&sep, "/vms/101").is_empty());
}

#[test]
fn unknown_token_has_no_privileges() {
    let r = with_acl(TOKENS, &[("/", "Administrator", "alice@pve", "user", true)]);
    assert!(r.privileges(&token("alice@pve", "ghost"), "/").is_empty());
    assert!(r.exists(&token("alice@pve", "sep")));
    assert!(!r.exists(&token("alice@pve", "ghost")));
}

// ---------------------------------------------------------------- pools

#[test]
fn pool_acl_applies_to_members_without_propagation() {
    let r = rbac(
        r#"
users = [{ userid = "bob@pve" }]
pools = [{ poolid = "web", vms = [300, 301], storage = ["nfs1"] }]
acl = [
  { path = "/pool/web", roleid = "PVEVMUser", ugid = "bob@pve", type = "user" },
  { path = "/pool/web", roleid = "PVEDatastoreUser", ugid = "bob@pve", type = "user" },
  { path = "/vms/301", roleid = "PVEAuditor", ugid = "bob@pve", type = "user" },
]
"#,
    );
    let bob = AuthId::user("bob@pve");
    let vm300 = r.privileges(&bob, "/vms/300");
    assert!(vm300.contains_key("VM.PowerMgmt") && vm300.contains_key("Datastore.AllocateSpace"));
    assert!(
        vm300.values().all(|&p| !p),
        "pool-derived privileges never propagate"
    );
    assert!(r.check(&bob, "/storage/nfs1", &["Datastore.AllocateSpace"], false));
    assert!(
        !r.check(&bob, "/vms/302", &["VM.Audit"], false),
        "not a member"
    );
    assert!(!r.check(&bob, "/vms", &["VM.Audit"], false));
    // Regular ACL roles keep their propagate flag; pool roles are added alongside.
    let vm301 = r.privileges(&bob, "/vms/301");
    assert_eq!(vm301.get("VM.Audit"), Some(&true));
    assert_eq!(vm301.get("VM.PowerMgmt"), Some(&false));
    assert_eq!(r.pool_of_vm(301), Some("web"));
    assert_eq!(
        r.pool_members()["web"].storage,
        BTreeSet::from(["nfs1".to_string()])
    );
}

#[test]
fn pool_no_access_trumps_regular_roles_but_not_the_reverse() {
    let base = r#"
users = [{ userid = "bob@pve" }]
pools = [{ poolid = "p", vms = [400] }]
"#;
    let r = with_acl(
        base,
        &[
            ("/vms", "PVEVMUser", "bob@pve", "user", true),
            ("/pool/p", "NoAccess", "bob@pve", "user", true),
        ],
    );
    assert!(
        r.privileges(&AuthId::user("bob@pve"), "/vms/400")
            .is_empty()
    );
    let r = with_acl(
        base,
        &[
            ("/vms/400", "NoAccess", "bob@pve", "user", true),
            ("/pool/p", "PVEVMUser", "bob@pve", "user", true),
        ],
    );
    assert!(
        r.privileges(&AuthId::user("bob@pve"), "/vms/400")
            .is_empty()
    );
}

// ---------------------------------------------------------------- the felhom setup

const FELHOM: &str = r#"
users = [{ userid = "felhom@pve" }]
tokens = [{ tokenid = "felhom@pve!agent", secret = "0b8c2f4e-1d2a-4c6b-9e7f-3a5d8c1b2e4f" }]
roles = [{ roleid = "FelhomAgent", privs = ["VM.Audit", "VM.Backup", "VM.Snapshot", "Datastore.AllocateSpace", "Datastore.Audit"] }]
acl = [
  { path = "/vms/101", roleid = "FelhomAgent", ugid = "felhom@pve", type = "user" },
  { path = "/storage/pbs-main", roleid = "FelhomAgent", ugid = "felhom@pve", type = "user" },
  { path = "/vms/101", roleid = "FelhomAgent", ugid = "felhom@pve!agent", type = "token" },
  { path = "/storage/pbs-main", roleid = "FelhomAgent", ugid = "felhom@pve!agent", type = "token" },
]
"#;

#[test]
fn felhom_scoped_token_sees_only_its_vm_and_storage() {
    let r = rbac(FELHOM);
    let tok = r
        .authenticate(
            hdr("PVEAPIToken=felhom@pve!agent=0b8c2f4e-1d2a-4c6b-9e7f-3a5d8c1b2e4f"),
            NOW,
        )
        .unwrap();
    assert_eq!(tok, token("felhom@pve", "agent"));
    assert_eq!(tok.full(), "felhom@pve!agent");
    let expected = [
        "Datastore.AllocateSpace",
        "Datastore.Audit",
        "VM.Audit",
        "VM.Backup",
        "VM.Snapshot",
    ];
    for who in [&tok, &AuthId::user("felhom@pve")] {
        let tree = r.permissions_tree(who);
        assert_eq!(
            tree.keys().collect::<Vec<_>>(),
            ["/storage/pbs-main", "/vms/101"]
        );
        assert_eq!(names(&tree["/vms/101"]), expected);
        assert!(tree["/vms/101"].values().all(|&p| p));
        assert!(r.check(who, "/vms/101", &["VM.Audit", "VM.Backup"], false));
        assert!(!r.check(who, "/vms/102", &["VM.Audit"], false));
        assert!(!r.check(who, "/vms/101", &["VM.Allocate"], false));
        assert!(r.check(
            who,
            "/storage/pbs-main",
            &["Datastore.Allocate", "Datastore.AllocateSpace"],
            true
        ));
        assert!(!r.check(
            who,
            "/storage/local",
            &["Datastore.Audit", "Datastore.AllocateSpace"],
            true
        ));
    }
}

#[test]
fn felhom_user_with_vm_admin_on_vms_passes_elsewhere_but_its_privsep_token_does_not() {
    let mut r = rbac(FELHOM);
    r.add_acl(AclSpec {
        path: "/vms".into(),
        roleid: "PVEVMAdmin".into(),
        ugid: "felhom@pve".into(),
        r#type: AclType::User,
        propagate: true,
    })
    .unwrap();
    let user = AuthId::user("felhom@pve");
    let tok = token("felhom@pve", "agent");
    assert!(r.check(&user, "/vms/102", &["VM.Audit"], false));
    assert!(
        !r.check(&user, "/vms/101", &["VM.Allocate"], false),
        "/vms/101 entry replaces /vms"
    );
    assert!(
        !r.check(&tok, "/vms/102", &["VM.Audit"], false),
        "privsep: token ACL lacks /vms"
    );
    // Giving the token the same ACL makes it pass too.
    r.add_acl(AclSpec {
        path: "/vms".into(),
        roleid: "PVEVMAdmin".into(),
        ugid: "felhom@pve!agent".into(),
        r#type: AclType::Token,
        propagate: true,
    })
    .unwrap();
    assert!(r.check(&tok, "/vms/102", &["VM.Audit"], false));
    let tree = r.permissions_tree(&tok);
    assert_eq!(
        tree.keys().collect::<Vec<_>>(),
        ["/storage/pbs-main", "/vms", "/vms/101"]
    );
}

#[test]
fn permissions_tree_includes_defaults_acl_ancestors_and_pool_members() {
    let r = rbac(
        r#"
users = [{ userid = "ann@pve" }]
pools = [{ poolid = "p", vms = [555], storage = ["bk"] }]
acl = [
  { path = "/", roleid = "PVEAuditor", ugid = "ann@pve", type = "user" },
  { path = "/sdn/zones/z1", roleid = "PVESDNUser", ugid = "ann@pve", type = "user" },
]
"#,
    );
    let tree = r.permissions_tree(&AuthId::user("ann@pve"));
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/",
            "/access",
            "/access/groups",
            "/nodes",
            "/pool",
            "/sdn",
            "/sdn/zones",
            "/sdn/zones/z1",
            "/storage",
            "/storage/bk",
            "/vms",
            "/vms/555"
        ]
    );
    assert!(r.permissions_tree(&AuthId::user("nobody@pve")).is_empty());
}

// ---------------------------------------------------------------- authentication

#[test]
fn authentication_failures_and_successes() {
    let r = rbac(
        r#"
users = [
  { userid = "ok@pve", expire = 1750000000 },
  { userid = "off@pve", enable = false },
  { userid = "old@pve", expire = 1700000000 },
]
tokens = [
  { tokenid = "ok@pve!good", secret = "sec" },
  { tokenid = "ok@pve!stale", secret = "sec", expire = 1749999999 },
  { tokenid = "ok@pve!edge", secret = "sec", expire = 1750000000 },
  { tokenid = "off@pve!t1", secret = "sec" },
  { tokenid = "old@pve!t1", secret = "sec" },
]
"#,
    );
    let auth = |h: Option<&str>| r.authenticate(h, NOW);
    assert_eq!(auth(None), Err(AuthError::NoTicket));
    assert_eq!(auth(hdr("Bearer abc")), Err(AuthError::NoTicket));
    assert_eq!(auth(hdr("PVEAPIToken=")), Err(AuthError::NoTicket));
    assert_eq!(
        auth(hdr("PVEAuthCookie=PVE:root@pam:1234::sig")),
        Err(AuthError::Failed)
    );
    assert_eq!(
        auth(hdr("PVEAPIToken=ok@pve!good=sec")),
        Ok(token("ok@pve", "good"))
    );
    assert_eq!(
        auth(hdr("PVEAPIToken ok@pve!good=sec")),
        Ok(token("ok@pve", "good")),
        "space form"
    );
    assert_eq!(
        auth(hdr("PVEAPIToken=ok%40pve%21good=sec")),
        Ok(token("ok@pve", "good")),
        "URL-encoded"
    );
    assert_eq!(
        auth(hdr("PVEAPIToken=ok@pve!good=sec; other=1")),
        Ok(token("ok@pve", "good"))
    );
    assert_eq!(
        auth(hdr("PVEAPIToken=ok@pve!edge=sec")),
        Ok(token("ok@pve", "edge")),
        "expire == now is valid"
    );
    for bad in [
        "PVEAPIToken=ok@pve!good=wrong",
        "PVEAPIToken=ok@pve!good=",
        "PVEAPIToken=ok@pve!good",
        "PVEAPIToken=ok@pve=sec",
        "PVEAPIToken=ok@pve!g=sec",
        "PVEAPIToken=ok@pve!ghost=sec",
        "PVEAPIToken=nobody@pve!good=sec",
        "PVEAPIToken=ok@pve!stale=sec",
        "PVEAPIToken=off@pve!t1=sec",
        "PVEAPIToken=old@pve!t1=sec",
        "PVEAPIToken=ok@pve!good=s%ffc",
        "PVEAPIToken=ok@pve!good=sec=",
    ] {
        assert_eq!(auth(hdr(bad)), Err(AuthError::Failed), "{bad}");
    }
    // The user's own expiry: ok@pve expires exactly now (still valid), one second later it fails.
    assert_eq!(
        r.authenticate(hdr("PVEAPIToken=ok@pve!good=sec"), NOW + 1),
        Err(AuthError::Failed)
    );
    assert_eq!(AuthError::NoTicket.to_string(), "No ticket");
    assert_eq!(AuthError::Failed.to_string(), "Authentication failed!");
}

#[test]
fn token_value_is_split_at_the_last_equals_sign() {
    // A user name may contain '='; the secret never can, so the last '=' is the separator.
    let r = rbac(
        r#"
users = [{ userid = "a=b@pve" }]
tokens = [{ tokenid = "a=b@pve!tok", secret = "xyz" }]
"#,
    );
    assert_eq!(
        r.authenticate(hdr("PVEAPIToken=a=b@pve!tok=xyz"), NOW),
        Ok(token("a=b@pve", "tok"))
    );
    // "tok=xyz=more" → token id "a=b@pve!tok=xyz" (invalid) and secret "more".
    assert_eq!(
        r.authenticate(hdr("PVEAPIToken=a=b@pve!tok=xyz=more"), NOW),
        Err(AuthError::Failed)
    );
    let e = Rbac::from_spec(&spec(
        r#"
users = [{ userid = "a@pve" }]
tokens = [{ tokenid = "a@pve!tok", secret = "x=y" }]
"#,
    ))
    .unwrap_err();
    assert!(e.contains("a@pve!tok") && e.contains("'='"), "{e}");
}

#[test]
fn set_token_secret_rotates_creates_and_revokes() {
    let mut r = with_acl(
        TOKENS,
        &[("/vms", "PVEAuditor", "alice@pve!sep", "token", true)],
    );
    r.set_token_secret("alice@pve!sep", Some("new".into()))
        .unwrap();
    assert_eq!(
        r.authenticate(hdr("PVEAPIToken=alice@pve!sep=s1"), NOW),
        Err(AuthError::Failed)
    );
    assert!(
        r.authenticate(hdr("PVEAPIToken=alice@pve!sep=new"), NOW)
            .is_ok()
    );
    r.set_token_secret("alice@pve!sep", None).unwrap();
    assert_eq!(
        r.authenticate(hdr("PVEAPIToken=alice@pve!sep=new"), NOW),
        Err(AuthError::Failed)
    );
    // Re-creating it does not resurrect its ACL entries.
    r.set_token_secret("alice@pve!sep", Some("again".into()))
        .unwrap();
    assert!(
        r.authenticate(hdr("PVEAPIToken=alice@pve!sep=again"), NOW)
            .is_ok()
    );
    r.add_acl(AclSpec {
        path: "/vms".into(),
        roleid: "PVEAuditor".into(),
        ugid: "alice@pve".into(),
        r#type: AclType::User,
        propagate: true,
    })
    .unwrap();
    assert!(r.privileges(&token("alice@pve", "sep"), "/vms").is_empty());
    assert_eq!(
        r.set_token_secret("alice@pve!ghost", None),
        Err("no such token 'ghost' for user 'alice@pve'".into())
    );
    assert_eq!(
        r.set_token_secret("bob@pve!x1", Some("s".into())),
        Err("token 'bob@pve!x1': no such user ('bob@pve')".into())
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn from_spec_rejects_dangling_references_and_bad_ids() {
    let acl = |a: &str| {
        format!("users = [{{ userid = \"u@pve\" }}]\ngroups = [{{ groupid = \"g\" }}]\nacl = [{a}]")
    };
    assert_eq!(
        err(&acl(
            r#"{ path = "/vms", roleid = "Nope", ugid = "u@pve", type = "user" }"#
        )),
        "role 'Nope' does not exist"
    );
    assert_eq!(
        err(&acl(
            r#"{ path = "/vms", roleid = "PVEAuditor", ugid = "x@pve", type = "user" }"#
        )),
        "no such user ('x@pve')"
    );
    assert_eq!(
        err(&acl(
            r#"{ path = "/vms", roleid = "PVEAuditor", ugid = "h", type = "group" }"#
        )),
        "group 'h' does not exist"
    );
    assert_eq!(
        err(&acl(
            r#"{ path = "/vms", roleid = "PVEAuditor", ugid = "u@pve!t1", type = "token" }"#
        )),
        "no such token 't1' for user 'u@pve'"
    );
    assert_eq!(
        err(&acl(
            r#"{ path = "/bogus", roleid = "PVEAuditor", ugid = "u@pve", type = "user" }"#
        )),
        "invalid ACL path '/bogus'"
    );
    assert_eq!(
        err(&acl(
            r#"{ path = "/vms/99", roleid = "PVEAuditor", ugid = "u@pve", type = "user" }"#
        )),
        "invalid ACL path '/vms/99'"
    );
    assert_eq!(
        err(r#"tokens = [{ tokenid = "x@pve!t1", secret = "s" }]"#),
        "token 'x@pve!t1': no such user ('x@pve')"
    );
    assert_eq!(
        err(r#"users = [{ userid = "u@pve" }]
tokens = [{ tokenid = "u@pve", secret = "s" }]"#),
        "'u@pve' is not a valid token ID"
    );
    assert_eq!(
        err(r#"users = [{ userid = "nouser" }]"#),
        "value 'nouser' does not look like a valid user name"
    );
    assert_eq!(
        err(r#"users = [{ userid = "u@pve", groups = ["g"] }]"#),
        "user 'u@pve': group 'g' does not exist"
    );
    assert_eq!(
        err(r#"roles = [{ roleid = "R", privs = ["VM.Monitor"] }]"#),
        "role 'R': invalid privilege 'VM.Monitor'"
    );
    assert_eq!(
        err(r#"roles = [{ roleid = "PVEVMAdmin", privs = [] }]"#),
        "cannot define built-in or reserved role 'PVEVMAdmin'"
    );
    assert_eq!(
        err(r#"pools = [{ poolid = "a", vms = [100] }, { poolid = "b", vms = [100] }]"#),
        "pool 'b': VM 100 is already in pool 'a'"
    );
    let unknown = toml::from_str::<RbacSpec>("bogus = 1")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field `bogus`"), "{unknown}");
}

#[test]
fn ids_and_paths_follow_pve_syntax() {
    assert_eq!(AuthId::parse("a!b@pve!tok"), Some(token("a!b@pve", "tok")));
    assert_eq!(AuthId::parse("root@pam"), Some(AuthId::user("root@pam")));
    assert_eq!(
        AuthId::parse("root@pam!x"),
        None,
        "token names need two characters"
    );
    assert_eq!(AuthId::parse("root@p"), None, "realms need two characters");
    assert_eq!(AuthId::parse("a b@pve"), None);
    assert_eq!(normalize_path("vms//101/"), Some("/vms/101".into()));
    assert_eq!(normalize_path("/"), Some("/".into()));
    assert_eq!(normalize_path("/vms/1 01"), None);
    for ok in [
        "/",
        "/vms/100",
        "/storage/pbs-main",
        "/pool/a/b/c",
        "/sdn/zones/z/v/4094",
        "/mapping/pci/gpu",
        "/access/realm/pve",
    ] {
        assert!(check_path(ok), "{ok}");
    }
    for bad in [
        "/vms/099",
        "/pool/a/b/c/d",
        "/sdn/zones/z/v/0",
        "/nodes/a/b",
        "/foo",
    ] {
        assert!(!check_path(bad), "{bad}");
    }
}

#[test]
fn check_any_and_unknown_privileges() {
    let r = with_acl(FAMILY, &[("/vms", "Custom", "max@pve", "user", true)]);
    let max = AuthId::user("max@pve");
    assert!(r.check(&max, "/vms/1", &["VM.Allocate", "VM.Audit"], true));
    assert!(!r.check(&max, "/vms/1", &["VM.Allocate", "VM.Audit"], false));
    assert!(!r.check(&max, "/vms/1", &["VM.Monitor"], true));
    assert!(!r.check(&AuthId::user("root@pam"), "/", &["VM.Monitor"], false));
}
