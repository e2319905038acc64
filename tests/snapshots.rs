//! Own snapshots and own-backup retention against the PVE simulator (in-process, TLS, clock
//! frozen; every wait of the code under test advances the simulated clock instead of sleeping).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use felhom_agent::pve::retry::Sleeper;
use felhom_agent::pve::tls::parse_fingerprint;
use felhom_agent::pve::types::GuestType;
use felhom_agent::pve::{ClientSettings, PveClient};
use felhom_agent::retention::{Decision, Item, Policy, plan};
use felhom_agent::snapshots::{
    self, BackupRetention, CreateOutcome, DeleteResult, Guest, RETRY_TAG, SnapshotSettings, Waits,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use pve_sim::scenario::{BackupSpec, GuestKind, SnapshotSpec};
use pve_sim::{Scenario, Sim};

const BASIC: &str = include_str!("pve-sim/scenarios/basic.toml");
const T101: (&str, &str) = (
    "felhom101@pve!agent",
    "11111111-2222-3333-4444-555555555101",
);
const T103: (&str, &str) = (
    "felhom103@pve!agent",
    "11111111-2222-3333-4444-555555555103",
);
const MARK: &str = "[felhom-agent]";

/// Advances the simulated clock by every wait.
struct SimSleeper(Arc<Sim>);

impl Sleeper for SimSleeper {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.0.advance(d.as_secs_f64());
        Box::pin(async {})
    }
}

struct Env {
    sim: Arc<Sim>,
    sleeper: SimSleeper,
}

impl Env {
    async fn start(sc: &Scenario) -> Env {
        let sim = Arc::new(
            Sim::start(sc, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
        sim.world().clock.set_speed(0.0);
        Env {
            sleeper: SimSleeper(sim.clone()),
            sim,
        }
    }

    async fn basic() -> Env {
        Env::start(&scenario(BASIC)).await
    }

    fn client(&self, t: (&str, &str)) -> PveClient {
        PveClient::new(ClientSettings {
            base_url: self.sim.url(),
            token_id: t.0.into(),
            secret: t.1.into(),
            fingerprint: Some(parse_fingerprint(&self.sim.fingerprint()).unwrap()),
            ca_pem: None,
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_second(self.sim.world().clock.epoch()).unwrap()
    }

    /// Advances the clock to exactly `t` (epoch seconds).
    fn advance_to(&self, t: i64) {
        let now = self.sim.world().clock.now();
        assert!(t as f64 >= now, "clock already past {t}");
        self.sim.advance(t as f64 - now);
    }

    fn mutating_since(&self, seq: usize) -> Vec<String> {
        self.sim.requests()[seq..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn snapshot_names(&self, vmid: u32) -> Vec<String> {
        let w = self.sim.world();
        let mut v: Vec<String> = w.guests[&vmid]
            .snapshots
            .iter()
            .map(|s| s.name.clone())
            .collect();
        v.sort();
        v
    }
}

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text).unwrap()
}

fn qemu101() -> Guest {
    Guest {
        node: "pve1".into(),
        vmid: 101,
        kind: GuestType::Qemu,
    }
}

fn lxc103() -> Guest {
    Guest {
        node: "pve2".into(),
        vmid: 103,
        kind: GuestType::Lxc,
    }
}

fn test_waits() -> Waits {
    Waits {
        lock_total: Duration::from_secs(60),
        lock_first: Duration::from_secs(5),
        lock_max: Duration::from_secs(20),
        task_timeout: Duration::from_secs(120),
        poll_first: Duration::from_millis(500),
        poll_max: Duration::from_secs(2),
    }
}

fn settings(policy: Policy, tz: &str) -> SnapshotSettings {
    let mut s =
        SnapshotSettings::new("felhom", None, false, policy, TimeZone::get(tz).unwrap()).unwrap();
    s.waits = test_waits();
    s
}

fn keep_last(n: u32) -> Policy {
    Policy {
        keep_last: n,
        ..Policy::default()
    }
}

fn created_name(o: &CreateOutcome) -> String {
    match o {
        CreateOutcome::Created {
            name, exitstatus, ..
        } => {
            assert_eq!(exitstatus, "OK");
            name.clone()
        }
        other => panic!("not created: {other:?}"),
    }
}

#[tokio::test]
async fn qemu_create_list_prune_with_dry_run_sending_no_mutation() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(2), "Europe/Budapest");
    let mut names = Vec::new();
    for _ in 0..4 {
        let t = env.now();
        let o = snapshots::create(&c, &g, &s, t, &env.sleeper)
            .await
            .unwrap();
        names.push(created_name(&o));
        assert_eq!(names.last().unwrap(), &s.prefix.name_at(t));
        env.sim.advance(3600.0);
    }
    assert_eq!(names[0], "felhom-20261118t110640z");
    {
        let w = env.sim.world();
        let snap = &w.guests[&101].snapshots[0];
        assert_eq!(snap.description, "[felhom-agent] rolling snapshot");
        assert_eq!(snap.snaptime, 1_795_000_000);
    }

    let l = snapshots::list(&c, &g, &s).await.unwrap();
    let plan: Vec<(&str, Decision, &str)> = l
        .snapshots
        .iter()
        .map(|x| (x.name.as_str(), x.decision, x.reason.as_str()))
        .collect();
    assert_eq!(
        plan,
        [
            (names[0].as_str(), Decision::Remove, "no rule keeps it"),
            (names[1].as_str(), Decision::Remove, "no rule keeps it"),
            (names[2].as_str(), Decision::Keep, "keep-last #2"),
            (names[3].as_str(), Decision::Keep, "keep-last #1"),
        ]
    );

    let seq = env.sim.requests().len();
    let dry = snapshots::prune(&c, &g, &s, true, &env.sleeper)
        .await
        .unwrap();
    assert!(dry.actions.is_empty());
    assert_eq!(env.mutating_since(seq), Vec::<String>::new());
    assert_eq!(env.snapshot_names(101).len(), 4);

    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.deleted(), [names[0].as_str(), names[1].as_str()]);
    assert_eq!(r.skipped, None);
    assert_eq!(
        env.snapshot_names(101),
        [names[2].clone(), names[3].clone()]
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["actions"][0]["result"]["result"], "deleted");
    assert_eq!(json["guest"]["type"], "qemu");
}

#[tokio::test]
async fn qemu_vmstate_is_sent_only_when_enabled() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let mut s = settings(keep_last(2), "UTC");
    s.vmstate = true;
    let o = snapshots::create(&c, &qemu101(), &s, env.now(), &env.sleeper)
        .await
        .unwrap();
    created_name(&o);
    let post = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.params.get("vmstate").map(String::as_str), Some("1"));
    assert!(env.sim.world().guests[&101].snapshots[0].vmstate);
}

#[tokio::test]
async fn lxc_create_list_prune_never_touches_vzdump_or_user_snapshots() {
    let mut sc = scenario(BASIC);
    let g103 = sc.guests.iter_mut().find(|g| g.vmid == 103).unwrap();
    g103.snapshots.push(SnapshotSpec {
        name: "vzdump".into(),
        description: "vzdump backup snapshot".into(),
        snaptime: Some(1_794_000_000),
        parent: None,
        snapstate: None,
        vmstate: false,
    });
    g103.snapshots.push(SnapshotSpec {
        name: "before-upgrade".into(),
        description: format!("{MARK} copied marker, foreign name"),
        snaptime: Some(1_794_000_100),
        parent: None,
        snapstate: None,
        vmstate: false,
    });
    let env = Env::start(&sc).await;
    let c = env.client(T103);
    let g = lxc103();
    let s = settings(keep_last(1), "Europe/Budapest");
    let mut names = Vec::new();
    for _ in 0..3 {
        let o = snapshots::create(&c, &g, &s, env.now(), &env.sleeper)
            .await
            .unwrap();
        names.push(created_name(&o));
        env.sim.advance(600.0);
    }
    let post = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.path, "/nodes/pve2/lxc/103/snapshot");
    assert_eq!(post.params.get("vmstate"), None);

    let l = snapshots::list(&c, &g, &s).await.unwrap();
    let owned: Vec<(&str, bool)> = l
        .snapshots
        .iter()
        .map(|x| (x.name.as_str(), x.owned))
        .collect();
    assert_eq!(
        owned,
        [
            ("vzdump", false),
            ("before-upgrade", false),
            (names[0].as_str(), true),
            (names[1].as_str(), true),
            (names[2].as_str(), true),
        ]
    );
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.deleted(), [names[0].as_str(), names[1].as_str()]);
    let mut want = vec![
        "before-upgrade".to_string(),
        names[2].clone(),
        "vzdump".to_string(),
    ];
    want.sort();
    assert_eq!(env.snapshot_names(103), want);
    assert!(
        env.sim
            .requests()
            .iter()
            .all(|r| r.method != "DELETE" || r.path.contains("/felhom-")),
        "only our snapshots were deleted"
    );
}

#[tokio::test]
async fn user_snapshot_with_our_prefix_but_no_marker_survives() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(1), "UTC");
    // The user's own, named like ours and older than everything.
    let user: String = c
        .post_form(
            "/nodes/pve1/qemu/101/snapshot",
            &[
                ("snapname", "felhom-20261101t000000z".to_string()),
                ("description", "my manual snapshot".to_string()),
            ],
        )
        .await
        .unwrap();
    assert!(user.starts_with("UPID:pve1:"));
    env.sim.advance(5.0);
    for _ in 0..3 {
        created_name(
            &snapshots::create(&c, &g, &s, env.now(), &env.sleeper)
                .await
                .unwrap(),
        );
        env.sim.advance(60.0);
    }
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.deleted().len(), 2);
    let user_info = r
        .snapshots
        .iter()
        .find(|x| x.name == "felhom-20261101t000000z")
        .unwrap();
    assert!(!user_info.owned);
    assert_eq!(
        user_info.reason,
        "not ours: description lacks the marker [felhom-agent]"
    );
    let names = env.snapshot_names(101);
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "felhom-20261101t000000z");
}

#[tokio::test]
async fn backup_holding_the_lock_skips_the_snapshot_run() {
    let env = Env::start(&scenario(
        &BASIC.replace("duration = 20.0", "duration = 3600.0"),
    ))
    .await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(3), "UTC");
    let _: String = c
        .post_form(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101".to_string()),
                ("storage", "pbs-main".to_string()),
            ],
        )
        .await
        .unwrap();
    env.sim.advance(1.0);
    assert_eq!(env.sim.world().guests[&101].lock.as_deref(), Some("backup"));
    let seq = env.sim.requests().len();
    let o = snapshots::create(&c, &g, &s, env.now(), &env.sleeper)
        .await
        .unwrap();
    let CreateOutcome::Skipped(sk) = o else {
        panic!("expected skipped, got {o:?}");
    };
    assert_eq!(sk.reason, "locked (backup)");
    assert_eq!(sk.unlock_command, "qm unlock 101");
    assert_eq!(sk.waited_secs, 60.0);
    assert_eq!(
        sk.hint,
        "the guest stayed locked (backup) for 60s; if no backup is running on node pve1, the lock is stale: clear it with `qm unlock 101`"
    );
    assert_eq!(env.mutating_since(seq), Vec::<String>::new());
    let json = serde_json::to_value(CreateOutcome::Skipped(sk)).unwrap();
    assert_eq!(json["result"], "skipped");
    assert_eq!(json["reason"], "locked (backup)");

    // Prune is skipped the same way, and deletes nothing.
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.skipped.unwrap().reason, "locked (backup)");
    assert!(r.actions.is_empty());
}

#[tokio::test]
async fn a_short_backup_lock_is_waited_out() {
    let env = Env::basic().await; // vzdump takes 20 s
    let c = env.client(T101);
    let _: String = c
        .post_form(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101".to_string()),
                ("storage", "pbs-main".to_string()),
            ],
        )
        .await
        .unwrap();
    env.sim.advance(1.0);
    let s = settings(keep_last(3), "UTC");
    let start = env.now();
    let o = snapshots::create(&c, &qemu101(), &s, start, &env.sleeper)
        .await
        .unwrap();
    let CreateOutcome::Created { name, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(name, s.prefix.name_at(start));
    let w = env.sim.world();
    let snap = &w.guests[&101].snapshots[0];
    assert!(
        snap.snaptime >= start.as_second() + 19,
        "taken after the backup"
    );
}

/// Starts a delete outside the agent (an earlier run) and kills it after `after` seconds.
async fn interrupted_delete(env: &Env, c: &PveClient, name: &str, after: f64) {
    let upid: String = c
        .delete(
            format!("/nodes/pve1/qemu/101/snapshot/{name}").as_str(),
            &[],
        )
        .await
        .unwrap();
    env.sim.advance(after);
    assert!(env.sim.world().kill_task(&upid));
    let w = env.sim.world();
    let g = &w.guests[&101];
    assert_eq!(g.lock.as_deref(), Some("snapshot-delete"));
    let s = g.snapshots.iter().find(|s| s.name == name).unwrap();
    assert_eq!(s.snapstate.as_deref(), Some("delete"));
}

fn unlock(env: &Env) {
    env.sim.world().guests.get_mut(&101).unwrap().lock = None;
}

#[tokio::test]
async fn delete_interrupted_before_the_disks_is_resumed_after_unlock() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(5), "UTC");
    let name = created_name(
        &snapshots::create(&c, &g, &s, env.now(), &env.sleeper)
            .await
            .unwrap(),
    );
    interrupted_delete(&env, &c, &name, 0.25).await;

    // Still locked: skipped with the exact command.
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    let sk = r.skipped.unwrap();
    assert_eq!(sk.reason, "locked (snapshot-delete)");
    assert_eq!(
        sk.hint,
        "stale lock 'snapshot-delete' left by an interrupted snapshot delete; an API token cannot clear it: run `qm unlock 101` on node pve1, the next run finishes the delete"
    );
    assert!(r.actions.is_empty());

    unlock(&env);
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.skipped, None);
    assert_eq!(r.actions.len(), 1);
    assert_eq!(r.actions[0].result, DeleteResult::Deleted { forced: false });
    assert_eq!(r.actions[0].attempts.len(), 1);
    assert!(env.snapshot_names(101).is_empty());
    assert_eq!(env.sim.world().guests[&101].lock, None);
}

#[tokio::test]
async fn delete_interrupted_after_the_disks_is_finished_with_force_only_after_a_normal_failure() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(5), "UTC");
    let name = created_name(
        &snapshots::create(&c, &g, &s, env.now(), &env.sleeper)
            .await
            .unwrap(),
    );
    interrupted_delete(&env, &c, &name, 0.5).await;
    unlock(&env);

    // Normal delete first: it fails on the missing disk snapshot and PVE leaves the lock again.
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.actions.len(), 1);
    let a = &r.actions[0];
    assert_eq!(a.attempts.len(), 1);
    assert!(!a.attempts[0].force);
    assert_eq!(
        a.result,
        DeleteResult::Failed {
            error: format!("volume snapshot '{name}' of 'local-lvm:vm-101-disk-0' does not exist")
        }
    );
    let sk = r.skipped.unwrap();
    assert_eq!(sk.reason, "locked (snapshot-delete)");
    assert_eq!(sk.unlock_command, "qm unlock 101");
    {
        let w = env.sim.world();
        let snap = &w.guests[&101].snapshots[0];
        assert!(snap.description.starts_with(MARK));
        assert!(snap.description.ends_with(RETRY_TAG));
    }
    assert!(
        env.sim
            .requests()
            .iter()
            .all(|r| !r.params.contains_key("force")),
        "no force before the normal delete failed"
    );

    unlock(&env);
    let r = snapshots::prune(&c, &g, &s, false, &env.sleeper)
        .await
        .unwrap();
    assert_eq!(r.skipped, None);
    let a = &r.actions[0];
    assert_eq!(a.result, DeleteResult::Deleted { forced: true });
    assert_eq!(a.attempts[0].result, "WARNINGS: 1");
    assert!(env.snapshot_names(101).is_empty());
    let deletes: Vec<Option<String>> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.params.get("force").cloned())
        .collect();
    assert_eq!(deletes, [None, None, Some("1".to_string())]);
}

fn protected_scenario() -> Scenario {
    let mut sc = scenario(BASIC);
    let pbs = sc.storages.iter_mut().find(|s| s.id == "pbs-main").unwrap();
    let day = 86_400;
    let base = 1_794_900_000; // 2026-11-17
    for (k, protected) in [
        (0, false),
        (1, true),
        (2, false),
        (3, false),
        (4, false),
        (5, true),
    ] {
        pbs.backups.push(BackupSpec {
            vmid: 101,
            kind: GuestKind::Qemu,
            ctime: base - (5 - k) * day,
            size: 1 << 30,
            protected,
            notes: None,
            volname: None,
        });
    }
    // Another guest's backup on the same storage: never part of our plan.
    pbs.backups.push(BackupSpec {
        vmid: 103,
        kind: GuestKind::Lxc,
        ctime: base - 9 * day,
        size: 1 << 30,
        protected: false,
        notes: None,
        volname: None,
    });
    sc
}

#[tokio::test]
async fn protected_backups_survive_prune_and_do_not_count() {
    let env = Env::start(&protected_scenario()).await;
    let c = env.client(T101);
    let g = qemu101();
    let r = BackupRetention {
        storage: "pbs-main".into(),
        policy: keep_last(2),
        tz: TimeZone::get("Europe/Budapest").unwrap(),
    };
    let vols = |env: &Env| -> Vec<(u32, i64, bool)> {
        env.sim.world().storages["pbs-main"]
            .volumes
            .iter()
            .map(|v| (v.vmid, v.ctime, v.protected))
            .collect()
    };
    let before = vols(&env);

    let seq = env.sim.requests().len();
    let dry = snapshots::backups_prune(&c, &g, &r, true, &test_waits(), &env.sleeper)
        .await
        .unwrap();
    assert_eq!(env.mutating_since(seq), Vec::<String>::new());
    assert_eq!(vols(&env), before);
    assert!(
        dry.listing.disagreements.is_empty(),
        "{:?}",
        dry.listing.disagreements
    );
    let marks: Vec<(&str, &str)> = dry
        .listing
        .backups
        .iter()
        .map(|b| (b.mark.as_str(), b.reason.as_str()))
        .collect();
    // oldest first: k = 0..5; protected ones take no keep-last slot
    assert_eq!(
        marks,
        [
            ("remove", "no rule keeps it"),
            ("protected", "protected"),
            ("remove", "no rule keeps it"),
            ("keep", "keep-last #2"),
            ("keep", "keep-last #1"),
            ("protected", "protected"),
        ]
    );
    assert_eq!(
        dry.listing.prune_backups, "keep-last=2",
        "the property string sent to PVE"
    );

    let seq = env.sim.requests().len();
    let done = snapshots::backups_prune(&c, &g, &r, false, &test_waits(), &env.sleeper)
        .await
        .unwrap();
    assert_eq!(done.task_result.as_deref(), Some("OK"));
    assert_eq!(done.removed.len(), 2);
    let mutating = env.mutating_since(seq);
    assert_eq!(
        mutating,
        ["DELETE /nodes/pve1/storage/pbs-main/prunebackups"]
    );
    let del = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(del.params.get("vmid").map(String::as_str), Some("101"));
    assert_eq!(del.params.get("type").map(String::as_str), Some("qemu"));
    let base = 1_794_900_000;
    let day = 86_400;
    let after = vols(&env);
    assert_eq!(
        after,
        [
            (101, base - 4 * day, true),
            (101, base - 2 * day, false),
            (101, base - day, false),
            (101, base, true),
            (103, base - 9 * day, false),
        ]
    );
    assert!(
        env.sim
            .requests()
            .iter()
            .all(|r| !r.params.contains_key("prune-backups") || r.path.ends_with("/prunebackups")),
        "vzdump's own prune-backups is never used"
    );

    let l = snapshots::backups_list(&c, &g, &r).await.unwrap();
    assert_eq!(l.backups.len(), 4);
    assert!(l.backups.iter().all(|b| b.decision == Decision::Keep));
}

/// Hourly snapshots from `start` for `hours`, pruned after each; returns (name, time) of all
/// snapshots created.
async fn hourly_run(env: &Env, s: &SnapshotSettings, hours: i64) -> Vec<(String, i64)> {
    let c = env.client(T101);
    let g = qemu101();
    let start = env.sim.world().clock.epoch();
    let first = start - start.rem_euclid(3600) + 3600;
    let mut created = Vec::new();
    for h in 0..hours {
        let t = first + h * 3600;
        env.advance_to(t);
        let o = snapshots::create(&c, &g, s, env.now(), &env.sleeper)
            .await
            .unwrap();
        let name = created_name(&o);
        assert_eq!(name, s.prefix.name_at(Timestamp::from_second(t).unwrap()));
        created.push((name, t));
        let r = snapshots::prune(&c, &g, s, false, &env.sleeper)
            .await
            .unwrap();
        assert_eq!(r.skipped, None);
        assert!(
            r.actions
                .iter()
                .all(|a| a.result == DeleteResult::Deleted { forced: false }),
            "{:?}",
            r.actions
        );
    }
    created
}

fn expected_kept(created: &[(String, i64)], s: &SnapshotSettings) -> Vec<String> {
    let items: Vec<Item> = created
        .iter()
        .map(|(n, t)| Item {
            id: n.clone(),
            timestamp: *t,
            protected: false,
            owned: true,
        })
        .collect();
    let mut v: Vec<String> = plan(&items, &s.policy, &s.tz)
        .into_iter()
        .filter(|p| p.decision == Decision::Keep)
        .map(|p| p.id)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn hourly_snapshots_over_a_month_end_with_exactly_the_expected_set() {
    let env = Env::basic().await;
    let s = settings(
        Policy {
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            ..Policy::default()
        },
        "Europe/Budapest",
    );
    let created = hourly_run(&env, &s, 30 * 24).await;
    let kept = env.snapshot_names(101);
    assert_eq!(kept, expected_kept(&created, &s));
    // Independently of the planner: first hour is 2026-11-18 12:00Z, last 2026-12-18 11:00Z.
    // 24 hourly (2026-12-17 12:00Z .. 2026-12-18 11:00Z); daily: the last snapshot of each of
    // the 7 Budapest days before (22:00Z = 23:00 CET), 12-10 .. 12-16 (12-17 is covered);
    // weekly: the Sunday 22:00Z of the ISO weeks before (W51 and W50 are covered).
    let mut want: Vec<String> = Vec::new();
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    for h in 0..24 {
        let t = at("2026-12-17T12:00:00Z").as_second() + h * 3600;
        want.push(s.prefix.name_at(Timestamp::from_second(t).unwrap()));
    }
    for d in 10..=16 {
        want.push(s.prefix.name_at(at(&format!("2026-12-{d}T22:00:00Z"))));
    }
    for d in ["2026-12-06", "2026-11-29", "2026-11-22"] {
        want.push(s.prefix.name_at(at(&format!("{d}T22:00:00Z"))));
    }
    // A 4th week back (W46) has no snapshot (the run began on Wednesday 11-18, in W47): a
    // period without an item does not count, so only 3 weeklies exist.
    want.sort();
    assert_eq!(want.len(), 24 + 7 + 3);
    assert_eq!(kept, want);
}

#[tokio::test]
async fn a_dst_week_keeps_one_snapshot_of_the_repeated_hour() {
    // 2026-10-21 11:00Z .. 10-25 12:00Z: Budapest falls back on 2026-10-25 03:00 CEST -> 02:00 CET.
    let env = Env::start(&scenario(
        &BASIC.replace("start-time = 1795000000", "start-time = 1792579200"),
    ))
    .await;
    assert_eq!(env.now().to_string(), "2026-10-21T10:40:00Z");
    let s = settings(
        Policy {
            keep_hourly: 24,
            keep_daily: 7,
            ..Policy::default()
        },
        "Europe/Budapest",
    );
    // Stop right after 2026-10-25 12:00Z (13:00 CET): the last 24 local hours span 25 real ones.
    let hours = ("2026-10-25T12:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_second()
        - "2026-10-21T11:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_second())
        / 3600
        + 1;
    let created = hourly_run(&env, &s, hours).await;
    let kept = env.snapshot_names(101);
    assert_eq!(kept, expected_kept(&created, &s));
    // 00:00Z is 02:00 CEST and 01:00Z is 02:00 CET: one hourly period, the newer one stays.
    assert!(kept.contains(&"felhom-20261025t010000z".to_string()));
    assert!(!kept.contains(&"felhom-20261025t000000z".to_string()));
    // 24 hourly periods back from 13:00 CET reach 2026-10-24 14:00 CEST = 12:00Z: 25 real hours.
    assert!(kept.contains(&"felhom-20261024t120000z".to_string()));
    assert!(!kept.contains(&"felhom-20261024t110000z".to_string()));
    // daily: Budapest days 10-21 .. 10-23 end at 21:00Z (23:00 CEST).
    for d in ["20261023t210000z", "20261022t210000z", "20261021t210000z"] {
        assert!(kept.contains(&format!("felhom-{d}")), "{d}");
    }
    assert_eq!(kept.len(), 24 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_snapshots_in_the_same_second_get_distinct_names() {
    let env = Env::basic().await;
    let c = env.client(T101);
    let g = qemu101();
    let s = settings(keep_last(5), "UTC");
    let t = env.now();
    let a = created_name(
        &snapshots::create(&c, &g, &s, t, &env.sleeper)
            .await
            .unwrap(),
    );
    let b = created_name(
        &snapshots::create(&c, &g, &s, t, &env.sleeper)
            .await
            .unwrap(),
    );
    assert_eq!(a, "felhom-20261118t110640z");
    assert_eq!(
        b, "felhom-20261118t110641z",
        "the next free second, not 'already used'"
    );
}
