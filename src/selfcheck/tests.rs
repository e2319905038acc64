use std::collections::BTreeMap;

use super::evaluate::*;
use super::privileges::*;
use super::render_text;
use super::report::*;
use super::setup::*;
use crate::pve::ApiError;
use crate::pve::types::{ClusterResource, Permissions};

fn subject(snapshots: bool) -> Subject {
    Subject {
        vmid: 101,
        storage: "pbs-main".into(),
        token_id: "felhom101@pve!agent".into(),
        features: Features { snapshots },
    }
}

fn perms(entries: &[(&str, &[&str])]) -> Permissions {
    Permissions(
        entries
            .iter()
            .map(|(p, privs)| {
                (
                    p.to_string(),
                    privs.iter().map(|x| (x.to_string(), true)).collect(),
                )
            })
            .collect(),
    )
}

fn forbidden(path: &str) -> ApiError {
    let message = format!("Permission check failed ({path}, VM.Audit)");
    ApiError::Forbidden {
        call: "GET x".into(),
        path: Some(path.into()),
        privilege: Some("VM.Audit".into()),
        message,
    }
}

fn res(id: &str, rtype: &str, vmid: Option<u32>, node: &str) -> ClusterResource {
    ClusterResource {
        id: id.into(),
        rtype: rtype.into(),
        vmid,
        node: Some(node.into()),
        status: None,
        name: None,
        lock: None,
        template: None,
        storage: None,
    }
}

#[test]
fn foreign_vmids_add_neighbours_100_and_the_impossible_one() {
    assert_eq!(
        foreign_vmids(101, &[105, 101, 100]),
        [100, 102, 105, 999_999_999]
    );
    assert_eq!(foreign_vmids(100, &[]), [101, 999_999_999]);
    assert_eq!(foreign_vmids(999_999_999, &[50]), [100, 999_999_998]);
}

#[test]
fn probe_nodes_start_with_the_own_node() {
    let r = vec![
        res("node/pve3", "node", None, "pve3"),
        res("qemu/101", "qemu", Some(101), "pve2"),
        res("node/pve2", "node", None, "pve2"),
        res("node/pve1", "node", None, "pve1"),
    ];
    assert_eq!(probe_nodes("pve2", &r), ["pve2", "pve1", "pve3"]);
}

#[test]
fn dangerous_matches_exact_names_and_families() {
    let d = |p| dangerous(p).map(|d| d.pattern);
    assert_eq!(d("Datastore.Allocate"), Some("Datastore.Allocate"));
    assert_eq!(d("Datastore.AllocateSpace"), None);
    assert_eq!(d("VM.Config.Disk"), Some("VM.Config.*"));
    assert_eq!(d("Realm.AllocateUser"), Some("Realm.*"));
    assert_eq!(d("SDN.Use"), Some("SDN.*"));
    assert_eq!(d("Mapping.Audit"), Some("Mapping.*"));
    assert_eq!(d("Sys.Console"), Some("Sys.Console"));
    assert_eq!(d("Sys.Audit"), None);
    assert_eq!(d("VM.Audit"), None);
    assert_eq!(d("VM.PowerMgmt"), None);
}

#[test]
fn no_needed_privilege_is_dangerous() {
    for p in PRIVILEGES {
        assert_eq!(dangerous(p.privilege), None, "{}", p.privilege);
    }
}

#[test]
fn role_follows_the_features() {
    let off = Features { snapshots: false };
    let on = Features { snapshots: true };
    assert_eq!(
        role_privileges(off),
        ["VM.Audit", "VM.Backup", "Datastore.AllocateSpace"]
    );
    assert_eq!(
        role_privileges(on),
        [
            "VM.Audit",
            "VM.Backup",
            "Datastore.AllocateSpace",
            "VM.Snapshot"
        ]
    );
    assert_eq!(role_name(off), "FelhomAgent");
    assert_eq!(role_name(on), "FelhomAgentSnapshot");
    assert!(!role_privileges(on).contains(&"VM.PowerMgmt"));
}

#[test]
fn probe_passes_only_on_a_403_naming_that_vmid() {
    let s = subject(true);
    let call = || "GET /nodes/pve1/qemu/102/status/current".to_string();
    let ok = probe_row(&s, call(), 102, &Err::<(), _>(forbidden("/vms/102")));
    assert!(ok.pass);
    assert_eq!(
        ok.observed,
        "403 Permission check failed (/vms/102, VM.Audit)"
    );
    assert_eq!(ok.expected, "403 naming /vms/102");

    let other = probe_row(&s, call(), 102, &Err::<(), _>(forbidden("/vms")));
    assert!(!other.pass && !other.inconclusive);

    let readable = probe_row(&s, call(), 102, &Ok(()));
    assert!(!readable.pass && !readable.inconclusive);
    assert_eq!(readable.observed, "200 OK");
    assert!(
        readable
            .fix
            .as_deref()
            .unwrap()
            .starts_with("re-scope the token to /vms/101 and /storage/pbs-main: ")
    );

    let missing = ApiError::NotFound {
        call: call(),
        message: "Configuration file 'nodes/pve1/qemu-server/102.conf' does not exist".into(),
    };
    let passed_check = probe_row(&s, call(), 102, &Err::<(), _>(missing));
    assert!(!passed_check.pass && !passed_check.inconclusive);
    assert_eq!(
        passed_check.observed,
        "500 Configuration file 'nodes/pve1/qemu-server/102.conf' does not exist (so the permission check passed)"
    );

    let down = ApiError::Transport {
        call: call(),
        message: "connection refused".into(),
        retryable: true,
    };
    let unknown = probe_row(&s, call(), 102, &Err::<(), _>(down));
    assert!(!unknown.pass && unknown.inconclusive);
}

#[test]
fn missing_privilege_names_the_exact_grant() {
    let s = subject(true);
    assert_eq!(needed_paths(&s), ["/vms/101", "/storage/pbs-main"]);
    let effective = vec![
        (
            "/vms/101".to_string(),
            Ok(perms(&[("/vms/101", &["VM.Audit", "VM.Snapshot"])])),
        ),
        (
            "/storage/pbs-main".to_string(),
            Ok(perms(&[(
                "/storage/pbs-main",
                &["Datastore.AllocateSpace"],
            )])),
        ),
    ];
    let rows = privilege_rows(&s, &effective);
    assert_eq!(rows[1].call, "GET /access/permissions?path=/vms/101");
    let summary: Vec<(String, bool)> = rows.iter().map(|r| (r.privilege.clone(), r.pass)).collect();
    assert_eq!(
        summary,
        [
            ("VM.Audit on /vms/101".to_string(), true),
            ("VM.Backup on /vms/101".to_string(), false),
            (
                "Datastore.AllocateSpace on /storage/pbs-main".to_string(),
                true
            ),
            ("VM.Snapshot on /vms/101".to_string(), true),
        ]
    );
    assert_eq!(
        rows[1].fix.as_deref(),
        Some(
            "pveum acl modify /vms/101 --users felhom101@pve --tokens 'felhom101@pve!agent' --roles FelhomAgentSnapshot (role FelhomAgentSnapshot from `felhom-agent setup-commands` has VM.Backup; a privilege-separated token needs the ACL for both the token and its user)"
        )
    );
}

#[test]
fn scoped_permissions_give_one_passing_scope_row() {
    let p = perms(&[
        ("/vms/101", &["VM.Audit", "VM.Backup", "VM.Snapshot"]),
        ("/storage/pbs-main", &["Datastore.AllocateSpace"]),
    ]);
    let rows = scope_rows(&subject(true), &Ok(p));
    assert_eq!(rows.len(), 1);
    assert!(rows[0].pass);
    assert_eq!(
        rows[0].observed,
        "/storage/pbs-main: Datastore.AllocateSpace; /vms/101: VM.Audit, VM.Backup, VM.Snapshot"
    );
}

#[test]
fn sys_console_on_root_is_out_of_scope_and_dangerous() {
    let p = perms(&[
        ("/", &["Sys.Console"]),
        ("/vms/101", &["VM.Audit", "VM.Backup"]),
        ("/storage/pbs-main", &["Datastore.AllocateSpace"]),
    ]);
    let rows = scope_rows(&subject(false), &Ok(p));
    let got: Vec<(&str, &str, bool)> = rows
        .iter()
        .map(|r| (r.privilege.as_str(), r.observed.as_str(), r.pass))
        .collect();
    assert_eq!(
        got,
        [
            ("Sys.Console", "1 privilege(s) on /", false),
            (
                "Sys.Console",
                "on /: Sys.Console (a root shell on the PVE node (termproxy/vncshell))",
                false
            ),
        ]
    );
    assert!(rows[0].fix.as_deref().unwrap().contains(
        "keep the token privilege-separated (`pveum user token modify felhom101@pve agent --privsep 1`;"
    ));
}

#[test]
fn dangerous_privilege_on_the_own_guest_is_flagged_too() {
    let p = perms(&[(
        "/vms/101",
        &["VM.Audit", "VM.Backup", "VM.Console", "VM.Config.Disk"],
    )]);
    let rows = scope_rows(&subject(false), &Ok(p));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].privilege, "VM.Config.Disk, VM.Console");
    assert!(!rows[0].pass);
}

#[test]
fn visibility_needs_exactly_the_own_guest() {
    let s = subject(false);
    let own = vec![
        res("qemu/101", "qemu", Some(101), "pve1"),
        res("node/pve1", "node", None, "pve1"),
    ];
    let r = visibility_row(&s, &Ok(own.clone()));
    assert!(r.pass);
    assert_eq!(r.observed, "qemu/101");

    let mut more = own;
    more.push(res("lxc/105", "lxc", Some(105), "pve2"));
    let r = visibility_row(&s, &Ok(more));
    assert!(!r.pass);
    assert_eq!(r.observed, "qemu/101, lxc/105");
    assert!(r.fix.as_deref().unwrap().starts_with(
        "the token has VM.Audit on lxc/105 (an ACL on /vms, / or a pool /pool/<p> they belong to)"
    ));

    let none = visibility_row(&s, &Ok(vec![]));
    assert!(!none.pass);
    assert_eq!(
        none.fix.as_deref(),
        Some(
            "pveum acl modify /vms/101 --users felhom101@pve --tokens 'felhom101@pve!agent' --roles FelhomAgent"
        )
    );
}

#[test]
fn tls_row_reports_the_mode() {
    let pinned = TlsMode {
        ca_file: None,
        fingerprint: Some("AA:BB".into()),
    };
    let r = tls_row(&pinned, None);
    assert!(r.pass);
    assert_eq!(r.observed, "pinned SHA-256 fingerprint AA:BB");
    let both = TlsMode {
        ca_file: Some("/etc/felhom-agent/ca.pem".into()),
        fingerprint: Some("AA:BB".into()),
    };
    assert_eq!(
        tls_row(&both, None).observed,
        "CA /etc/felhom-agent/ca.pem, else pinned SHA-256 fingerprint AA:BB"
    );
    let r = tls_row(&TlsMode::default(), None);
    assert!(!r.pass && !r.inconclusive);
    let e = ApiError::Tls {
        call: "GET /cluster/resources".into(),
        presented: None,
        message: "fingerprint mismatch".into(),
    };
    let r = tls_row(&pinned, Some(&e));
    assert!(!r.pass && r.inconclusive);
}

fn row(check: Check, pass: bool, inconclusive: bool) -> Row {
    Row {
        check,
        call: "GET /x".into(),
        privilege: "-".into(),
        expected: "e".into(),
        observed: "o".into(),
        pass,
        inconclusive,
        fix: None,
    }
}

#[test]
fn verdict_and_exit_codes() {
    let ok = [row(Check::Tls, true, false)];
    assert_eq!(Verdict::from_rows(&ok, None), Verdict::Pass);
    assert_eq!(Verdict::Pass.exit_code(), 0);
    let unknown = [row(Check::Tls, true, false), row(Check::Scope, false, true)];
    assert_eq!(Verdict::from_rows(&unknown, None), Verdict::CouldNotRun);
    assert_eq!(Verdict::CouldNotRun.exit_code(), 1);
    assert_eq!(Verdict::from_rows(&ok, Some("401")), Verdict::CouldNotRun);
    let bad = [
        row(Check::Scope, false, true),
        row(Check::Visibility, false, false),
    ];
    assert_eq!(Verdict::from_rows(&bad, None), Verdict::Violation);
    assert_eq!(Verdict::Violation.exit_code(), 4);
}

#[test]
fn report_sorts_rows_counts_violations_and_serialises() {
    let mut failing = row(Check::ForeignRefused, false, false);
    failing.fix = Some("re-scope".into());
    let rep = SelfCheckReport::new(
        "felhom101@pve!agent".into(),
        101,
        "pve1".into(),
        vec![row(Check::Tls, true, false), failing],
        None,
    );
    assert_eq!(rep.rows[0].check, Check::ForeignRefused);
    let v = rep.violations_by_check();
    let expected: BTreeMap<&str, usize> = [
        ("foreign-refused", 1),
        ("own-guest", 0),
        ("scope", 0),
        ("tls", 0),
        ("visibility", 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(v, expected);
    let json = serde_json::to_string(&rep).unwrap();
    assert_eq!(
        json,
        r#"{"verdict":"violation","exit_code":4,"token_id":"felhom101@pve!agent","vmid":101,"node":"pve1","rows":[{"check":"foreign-refused","call":"GET /x","privilege":"-","expected":"e","observed":"o","pass":false,"fix":"re-scope"},{"check":"tls","call":"GET /x","privilege":"-","expected":"e","observed":"o","pass":true}]}"#
    );
}

#[test]
fn text_table() {
    let mut failing = Row::new(
        Check::ForeignRefused,
        "GET /nodes/pve1/qemu/102/status/current",
        "VM.Audit on /vms/102",
        "403 naming /vms/102",
        "200 OK",
        false,
    );
    failing.fix = Some("re-scope the token".into());
    let rep = SelfCheckReport::new(
        "felhom101@pve!agent".into(),
        101,
        "pve1".into(),
        vec![
            Row::new(Check::Tls, "TLS handshake", "-", "verified", "pinned", true),
            failing,
            Row::new(
                Check::Scope,
                "GET /access/permissions",
                "x".repeat(70),
                "none",
                "none",
                true,
            ),
        ],
        None,
    );
    let cut = format!("{}…", "x".repeat(59));
    let expected = format!(
        "self-check of guest 101 on pve1 with token felhom101@pve!agent
CHECK              CALL                                     PRIVILEGE{pad}  EXPECTED             OBSERVED  RESULT
2 foreign-refused  GET /nodes/pve1/qemu/102/status/current  VM.Audit on /vms/102{pad2}  403 naming /vms/102  200 OK    FAIL
    fix: re-scope the token
3 scope            GET /access/permissions                  {cut}  none                 none      PASS
5 tls              TLS handshake                            -{pad3}  verified             pinned    PASS
verdict: VIOLATION, 1 of 3 rows failed (exit 4)
",
        pad = " ".repeat(60 - 9),
        pad2 = " ".repeat(60 - 20),
        pad3 = " ".repeat(60 - 1),
    );
    assert_eq!(render_text(&rep), expected);
}

#[test]
fn could_not_run_text_names_the_error() {
    let rep = SelfCheckReport::new(
        "t@pve!a".into(),
        101,
        "pve1".into(),
        vec![],
        Some("GET /cluster/resources: authentication failed (401)".into()),
    );
    assert_eq!(rep.exit_code, 1);
    assert!(render_text(&rep).ends_with(
        "verdict: COULD NOT RUN: GET /cluster/resources: authentication failed (401) (exit 1)\n"
    ));
}

#[test]
fn setup_commands_exact() {
    let input = SetupInput {
        vmid: 101,
        backup_storage: "pbs-main".into(),
        features: Features { snapshots: true },
        token_id: None,
        secret_file: Some("/etc/felhom-agent/token".into()),
    };
    let got = setup_commands(&input).join("\n");
    let expected = r#"# on any node of the PVE cluster, as root: provision felhom-101@pve!agent for guest 101
# role FelhomAgentSnapshot with exactly the privileges the enabled features need (re-running resets it to this set)
pveum role add FelhomAgentSnapshot --privs "VM.Audit,VM.Backup,Datastore.AllocateSpace,VM.Snapshot" 2>/dev/null || pveum role modify FelhomAgentSnapshot --privs "VM.Audit,VM.Backup,Datastore.AllocateSpace,VM.Snapshot"
# an API-only user (no password: it cannot log in to the GUI)
pveum user add felhom-101@pve --comment "felhom-agent of guest 101" 2>/dev/null || pveum user modify felhom-101@pve --comment "felhom-agent of guest 101"
# a privilege-separated token; pveum prints its secret ("value") ONCE: copy it now. If the token existed, its secret stays valid and is not shown again (to rotate: pveum user token remove felhom-101@pve agent, then re-run)
pveum user token add felhom-101@pve agent --privsep 1 --comment "felhom-agent of guest 101" || pveum user token modify felhom-101@pve agent --privsep 1
# FelhomAgentSnapshot on /vms/101 for the user (a privsep token never exceeds its user)
pveum acl modify /vms/101 --users felhom-101@pve --roles FelhomAgentSnapshot
# FelhomAgentSnapshot on /vms/101 for the token
pveum acl modify /vms/101 --tokens 'felhom-101@pve!agent' --roles FelhomAgentSnapshot
# FelhomAgentSnapshot on /storage/pbs-main for the user (a privsep token never exceeds its user)
pveum acl modify /storage/pbs-main --users felhom-101@pve --roles FelhomAgentSnapshot
# FelhomAgentSnapshot on /storage/pbs-main for the token
pveum acl modify /storage/pbs-main --tokens 'felhom-101@pve!agent' --roles FelhomAgentSnapshot
# check: the token's effective permissions are exactly /vms/101 and /storage/pbs-main
pveum user token permissions felhom-101@pve agent

# then inside guest 101, as root:
# directory for the secret
install -d -m 755 /etc/felhom-agent
# an empty secret file only root can read (mode 600)
install -m 600 /dev/null /etc/felhom-agent/token
# paste the secret, press Enter, then Ctrl-D (keeps it out of the shell history)
cat > /etc/felhom-agent/token
# prove the token reaches guest 101 and /storage/pbs-main and nothing else
felhom-agent self-check"#;
    assert_eq!(got, expected);
}

#[test]
fn setup_uses_the_configured_token_and_credential_hint() {
    let input = SetupInput {
        vmid: 230,
        backup_storage: "nas".into(),
        features: Features { snapshots: false },
        token_id: Some("backup230@pve!felhom".into()),
        secret_file: None,
    };
    let plan = setup_plan(&input);
    assert_eq!(plan.role, "FelhomAgent");
    assert_eq!(plan.user, "backup230@pve");
    assert_eq!(plan.acl_paths, ["/vms/230", "/storage/nas"]);
    assert_eq!(plan.secret_file, "/etc/felhom-agent/token");
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["steps"][0]["command"],
        "pveum role add FelhomAgent --privs \"VM.Audit,VM.Backup,Datastore.AllocateSpace\" 2>/dev/null || pveum role modify FelhomAgent --privs \"VM.Audit,VM.Backup,Datastore.AllocateSpace\""
    );
    assert_eq!(json["steps"][0]["on"], "pve-node");
    assert_eq!(
        json["steps"][4]["command"],
        "pveum acl modify /vms/230 --tokens 'backup230@pve!felhom' --roles FelhomAgent"
    );
    let paste = plan
        .steps
        .iter()
        .find(|s| s.command == "cat > /etc/felhom-agent/token")
        .unwrap();
    assert!(
        paste
            .comment
            .ends_with("(LoadCredential=pve-token:/etc/felhom-agent/token)")
    );
}

#[test]
fn docs_tables_come_from_the_code() {
    let doc = include_str!("../../docs/permissions.md");
    assert!(
        doc.contains(&markdown_table()),
        "docs/permissions.md must contain privileges::markdown_table() verbatim:\n{}",
        markdown_table()
    );
    assert!(
        doc.contains(&dangerous_markdown_table()),
        "docs/permissions.md must contain privileges::dangerous_markdown_table() verbatim:\n{}",
        dangerous_markdown_table()
    );
}

#[test]
fn a_shared_fix_is_printed_once_and_violations_are_listed() {
    let failing = |call: &str| {
        Row::new(
            Check::ForeignRefused,
            call,
            "VM.Audit on /vms/102",
            "403 naming /vms/102",
            "200 OK",
            false,
        )
        .with_fix("re-scope")
    };
    let rep = SelfCheckReport::new(
        "t@pve!a".into(),
        101,
        "pve1".into(),
        vec![
            failing("GET /nodes/pve1/qemu/102/status/current"),
            failing("GET /nodes/pve1/qemu/102/snapshot"),
        ],
        None,
    );
    assert_eq!(render_text(&rep).matches("    fix: re-scope\n").count(), 1);
    assert_eq!(
        rep.violation_messages(),
        [
            "[foreign-refused] GET /nodes/pve1/qemu/102/status/current: VM.Audit on /vms/102: expected 403 naming /vms/102, observed 200 OK",
            "[foreign-refused] GET /nodes/pve1/qemu/102/snapshot: VM.Audit on /vms/102: expected 403 naming /vms/102, observed 200 OK",
        ]
    );
}
