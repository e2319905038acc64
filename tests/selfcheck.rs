//! The self-check against the simulator, in-process: each scenario is a real RBAC setup
//! (`tests/pve-sim/scenarios/rbac-cluster.toml` + one `rbac-*.toml`), and the round trip applies
//! `setup-commands` to the simulator's RBAC model.

#[path = "selfcheck/pveum.rs"]
mod pveum;

use std::time::Duration;

use felhom_agent::pve::tls::parse_fingerprint;
use felhom_agent::pve::types::GuestType;
use felhom_agent::pve::{ClientSettings, PveClient};
use felhom_agent::selfcheck::{
    Check, Features, Row, SelfCheckInput, SelfCheckReport, SetupInput, TlsMode, Verdict,
    render_text, run, setup_commands,
};
use pve_sim::{Scenario, Sim};

const CLUSTER: &str = include_str!("pve-sim/scenarios/rbac-cluster.toml");
const SCOPED: &str = include_str!("pve-sim/scenarios/rbac-scoped.toml");
const VMADMIN: &str = include_str!("pve-sim/scenarios/rbac-vmadmin-vms.toml");
const SYS_CONSOLE: &str = include_str!("pve-sim/scenarios/rbac-sys-console.toml");
const NONPRIVSEP_ADMIN: &str = include_str!("pve-sim/scenarios/rbac-nonprivsep-admin.toml");
const MISSING_BACKUP: &str = include_str!("pve-sim/scenarios/rbac-missing-backup.toml");
const POOL: &str = include_str!("pve-sim/scenarios/rbac-pool-visibility.toml");

const TOKEN: &str = "felhom101@pve!agent";
const SECRET: &str = "rbac-secret-101";

async fn start(access: &str) -> Sim {
    let sc = Scenario::parse(&format!("{CLUSTER}\n{access}\n")).expect("scenario parses");
    Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("sim starts")
}

fn client(sim: &Sim, token_id: &str, secret: &str) -> PveClient {
    PveClient::new(ClientSettings {
        base_url: sim.url(),
        token_id: token_id.into(),
        secret: secret.into(),
        fingerprint: Some(parse_fingerprint(&sim.fingerprint()).unwrap()),
        ca_pem: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn input(sim: &Sim, snapshots: bool) -> SelfCheckInput {
    SelfCheckInput {
        vmid: 101,
        node: "pve1".into(),
        guest_type: GuestType::Qemu,
        backup_storage: "pbs-main".into(),
        features: Features { snapshots },
        foreign_vmids: vec![103],
        tls: TlsMode {
            ca_file: None,
            fingerprint: Some(sim.fingerprint()),
        },
    }
}

async fn check(access: &str, token: &str) -> (Sim, SelfCheckReport) {
    let sim = start(access).await;
    let c = client(&sim, token, SECRET);
    let report = run(&c, input(&sim, true)).await;
    assert_only_reads(&sim);
    (sim, report)
}

/// The request log proves the self-check never sent a mutating request, and for foreign VMIDs
/// only the two read-only probes.
fn assert_only_reads(sim: &Sim) {
    let log = sim.requests();
    assert!(!log.is_empty());
    for r in &log {
        assert_eq!(
            r.method, "GET",
            "mutating request sent: {} {}",
            r.method, r.path
        );
        let own = r.path.contains("/101/");
        if r.path.contains("/qemu/") || r.path.contains("/lxc/") {
            assert!(
                own || r.path.ends_with("/status/current") || r.path.ends_with("/snapshot"),
                "unexpected foreign call {}",
                r.path
            );
        }
    }
}

fn rows(r: &SelfCheckReport, check: Check) -> Vec<&Row> {
    r.rows.iter().filter(|x| x.check == check).collect()
}

fn all_pass(r: &SelfCheckReport, check: Check) -> bool {
    rows(r, check).iter().all(|x| x.pass)
}

fn probe<'a>(r: &'a SelfCheckReport, call: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|x| x.call == call)
        .unwrap_or_else(|| panic!("no row for {call}"))
}

#[tokio::test]
async fn correctly_scoped_privsep_token_passes_every_row() {
    let (_sim, r) = check(SCOPED, TOKEN).await;
    let failing: Vec<&Row> = r.failures().collect();
    assert!(failing.is_empty(), "{}", render_text(&r));
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.exit_code, 0);
    // 1 TLS + 3 own reads + 4 privileges + 4 VMIDs (100, 102, 103, 999999999) × 2 nodes × 2 types
    // × 2 probes + 1 scope + 1 visibility.
    assert_eq!(r.rows.len(), 1 + 3 + 4 + 4 * 2 * 2 * 2 + 1 + 1);
    let p = probe(&r, "GET /nodes/pve2/lxc/999999999/snapshot");
    assert_eq!(
        p.observed,
        "403 Permission check failed (/vms/999999999, VM.Audit)"
    );
    let vis = rows(&r, Check::Visibility);
    assert_eq!(vis[0].observed, "qemu/101");
    let scope = rows(&r, Check::Scope);
    assert_eq!(
        scope[0].observed,
        "/storage/pbs-main: Datastore.AllocateSpace, VM.Audit, VM.Backup, VM.Snapshot; /vms/101: Datastore.AllocateSpace, VM.Audit, VM.Backup, VM.Snapshot"
    );
    let tls = rows(&r, Check::Tls);
    assert_eq!(
        tls[0].observed,
        format!("pinned SHA-256 fingerprint {}", _sim.fingerprint())
    );
    let text = render_text(&r);
    assert!(text.ends_with(&format!(
        "verdict: PASS, all {} rows hold (exit 0)\n",
        r.rows.len()
    )));
}

#[tokio::test]
async fn vmadmin_on_vms_fails_the_foreign_probes() {
    let (_sim, r) = check(VMADMIN, TOKEN).await;
    assert_eq!(r.verdict, Verdict::Violation);
    assert_eq!(r.exit_code, 4);
    // 102 lives on pve1: readable.
    let p = probe(&r, "GET /nodes/pve1/qemu/102/status/current");
    assert!(!p.pass);
    assert_eq!(p.observed, "200 OK");
    // 102 is not on pve2: the permission check passed, then the config was missing.
    let p = probe(&r, "GET /nodes/pve2/qemu/102/status/current");
    assert!(!p.pass);
    assert_eq!(
        p.observed,
        "500 Configuration file 'nodes/pve2/qemu-server/102.conf' does not exist (so the permission check passed)"
    );
    assert!(p.fix.as_deref().unwrap().contains("--privsep 1"));
    assert!(rows(&r, Check::ForeignRefused).iter().all(|x| !x.pass));
    assert!(!all_pass(&r, Check::Scope));
    assert!(
        rows(&r, Check::Scope)
            .iter()
            .any(|x| x.observed.starts_with("on /vms: ") && x.privilege.contains("VM.Console"))
    );
    let vis = rows(&r, Check::Visibility);
    assert_eq!(
        vis[0].observed,
        "qemu/100, qemu/101, qemu/102, lxc/103, lxc/105"
    );
    assert!(!vis[0].pass);
    // The own guest still works.
    assert!(all_pass(&r, Check::OwnGuest));
}

#[tokio::test]
async fn sys_console_on_root_fails_the_scope_check() {
    let (_sim, r) = check(SYS_CONSOLE, TOKEN).await;
    assert_eq!(r.exit_code, 4);
    assert!(all_pass(&r, Check::OwnGuest));
    assert!(all_pass(&r, Check::ForeignRefused));
    assert!(all_pass(&r, Check::Visibility));
    let scope = rows(&r, Check::Scope);
    let root: Vec<&&Row> = scope
        .iter()
        .filter(|x| x.observed == "1 privilege(s) on /" || x.observed.starts_with("on /: "))
        .collect();
    assert_eq!(root.len(), 2, "{}", render_text(&r));
    assert_eq!(
        root[1].observed,
        "on /: Sys.Console (a root shell on the PVE node (termproxy/vncshell))"
    );
    assert!(root.iter().all(|x| !x.pass && x.privilege == "Sys.Console"));
    // Propagated to /nodes as well, where the console check really happens.
    assert!(
        scope
            .iter()
            .any(|x| x.observed.starts_with("on /nodes: Sys.Console"))
    );
}

#[tokio::test]
async fn non_privsep_token_of_an_admin_fails_everything_but_its_own_guest() {
    let (_sim, r) = check(NONPRIVSEP_ADMIN, TOKEN).await;
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(all_pass(&r, Check::OwnGuest));
    assert!(rows(&r, Check::ForeignRefused).iter().all(|x| !x.pass));
    assert!(rows(&r, Check::Scope).iter().all(|x| !x.pass));
    assert!(
        rows(&r, Check::Scope)
            .iter()
            .any(|x| x.observed.starts_with("on /: ") && x.privilege.contains("Permissions.Modify"))
    );
    assert!(!all_pass(&r, Check::Visibility));
    assert!(all_pass(&r, Check::Tls));
}

#[tokio::test]
async fn token_missing_vm_backup_fails_check_1_with_the_fix() {
    let (_sim, r) = check(MISSING_BACKUP, TOKEN).await;
    assert_eq!(r.exit_code, 4);
    let failing: Vec<&Row> = r.failures().collect();
    assert_eq!(failing.len(), 1, "{}", render_text(&r));
    let f = failing[0];
    assert_eq!(f.check, Check::OwnGuest);
    assert_eq!(f.call, "GET /access/permissions?path=/vms/101");
    assert_eq!(f.privilege, "VM.Backup on /vms/101");
    assert_eq!(f.observed, "missing");
    assert!(f.fix.as_deref().unwrap().starts_with(
        "pveum acl modify /vms/101 --users felhom101@pve --tokens 'felhom101@pve!agent' --roles FelhomAgentSnapshot"
    ));
    assert!(render_text(&r).contains(
        "    fix: pveum acl modify /vms/101 --users felhom101@pve --tokens 'felhom101@pve!agent' --roles FelhomAgentSnapshot"
    ));
}

#[tokio::test]
async fn a_guest_seen_through_a_pool_fails_visibility() {
    let (_sim, r) = check(POOL, TOKEN).await;
    assert_eq!(r.exit_code, 4);
    assert!(all_pass(&r, Check::OwnGuest));
    assert!(all_pass(&r, Check::ForeignRefused));
    let vis = rows(&r, Check::Visibility);
    assert!(!vis[0].pass);
    assert_eq!(vis[0].observed, "qemu/101, lxc/105");
    assert!(vis[0].fix.as_deref().unwrap().contains("pool"));
    let scope_paths: Vec<&str> = rows(&r, Check::Scope)
        .iter()
        .map(|x| x.observed.as_str())
        .collect();
    assert_eq!(
        scope_paths,
        [
            "1 privilege(s) on /pool/shared",
            "1 privilege(s) on /vms/105"
        ]
    );
}

#[tokio::test]
async fn configured_foreign_vmid_is_probed_on_every_node() {
    let sim = start(SCOPED).await;
    let c = client(&sim, TOKEN, SECRET);
    let mut inp = input(&sim, false);
    inp.foreign_vmids = vec![4242];
    let r = run(&c, inp).await;
    assert_eq!(r.exit_code, 0, "{}", render_text(&r));
    let calls: Vec<&str> = r
        .rows
        .iter()
        .filter(|x| x.call.contains("/4242/"))
        .map(|x| x.call.as_str())
        .collect();
    assert_eq!(
        calls,
        [
            "GET /nodes/pve1/qemu/4242/status/current",
            "GET /nodes/pve1/qemu/4242/snapshot",
            "GET /nodes/pve1/lxc/4242/status/current",
            "GET /nodes/pve1/lxc/4242/snapshot",
            "GET /nodes/pve2/qemu/4242/status/current",
            "GET /nodes/pve2/qemu/4242/snapshot",
            "GET /nodes/pve2/lxc/4242/status/current",
            "GET /nodes/pve2/lxc/4242/snapshot",
        ]
    );
    // Snapshots off: VM.Snapshot is not expected.
    assert!(
        !r.rows
            .iter()
            .any(|x| x.privilege.starts_with("VM.Snapshot"))
    );
    assert_only_reads(&sim);
}

#[tokio::test]
async fn rejected_token_means_could_not_run() {
    let sim = start(SCOPED).await;
    let c = client(&sim, TOKEN, "wrong-secret");
    let r = run(&c, input(&sim, true)).await;
    assert_eq!(r.verdict, Verdict::CouldNotRun);
    assert_eq!(r.exit_code, 1);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("authentication failed (401)")
    );
    assert_eq!(sim.requests().len(), 1, "nothing is probed after a 401");
}

#[tokio::test]
async fn wrong_pin_means_could_not_run() {
    let sim = start(SCOPED).await;
    let c = PveClient::new(ClientSettings {
        base_url: sim.url(),
        token_id: TOKEN.into(),
        secret: SECRET.into(),
        fingerprint: Some([7u8; 32]),
        ca_pem: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let r = run(&c, input(&sim, true)).await;
    assert_eq!(r.exit_code, 1);
    let tls = rows(&r, Check::Tls);
    assert!(!tls[0].pass && tls[0].inconclusive);
    assert!(tls[0].observed.starts_with("TLS failure: "));
}

/// `setup-commands` applied to the simulator's RBAC model (twice: it is idempotent) yields a
/// token that passes every row.
#[tokio::test]
async fn setup_commands_round_trip() {
    for snapshots in [true, false] {
        let setup = SetupInput {
            vmid: 101,
            backup_storage: "pbs-main".into(),
            features: Features { snapshots },
            token_id: None,
            secret_file: None,
        };
        let script = setup_commands(&setup);
        let mut model = pveum::Model::default();
        assert_eq!(model.run_script(&script).unwrap(), 8);
        let once = model.clone();
        model.run_script(&script).expect("a second run succeeds");
        assert_eq!(model, once, "a second run changes nothing");

        let access = model.to_access_toml("roundtrip-secret");
        let sim = start(&access).await;
        let c = client(&sim, "felhom-101@pve!agent", "roundtrip-secret");
        let r = run(&c, input(&sim, snapshots)).await;
        assert_eq!(r.verdict, Verdict::Pass, "{access}\n{}", render_text(&r));
        assert_only_reads(&sim);
    }
}

/// Without the user's ACLs a privsep token has nothing: the runbook's user grants are needed.
#[tokio::test]
async fn round_trip_without_user_acls_fails() {
    let setup = SetupInput {
        vmid: 101,
        backup_storage: "pbs-main".into(),
        features: Features { snapshots: true },
        token_id: None,
        secret_file: None,
    };
    let script: Vec<String> = setup_commands(&setup)
        .into_iter()
        .filter(|l| !l.contains("acl modify") || l.contains("--tokens"))
        .collect();
    let mut model = pveum::Model::default();
    model.run_script(&script).unwrap();
    let sim = start(&model.to_access_toml("roundtrip-secret")).await;
    let c = client(&sim, "felhom-101@pve!agent", "roundtrip-secret");
    let r = run(&c, input(&sim, true)).await;
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(!all_pass(&r, Check::OwnGuest));
    assert!(all_pass(&r, Check::ForeignRefused));
}
