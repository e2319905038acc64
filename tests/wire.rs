//! End-to-end tests of the commands that wire the self-check, own snapshots and own-backup
//! retention into the agent: `self-check`, `setup-commands`, `snapshots …`, `backups …`, the
//! prune after a successful `backup-now`, and the daemon's scheduled self-check and snapshots.
//! The real `felhom-agent` binary runs against pve-sim over real TLS; the simulator's request
//! log proves what was (not) sent.

use std::path::PathBuf;
use std::process::Command;

use jiff::Timestamp;
use pve_sim::scenario::{BackupSpec, GuestKind, SnapshotSpec};
use pve_sim::{Scenario, Sim};

#[path = "wire/daemon.rs"]
mod daemon;

const BASIC: &str = include_str!("pve-sim/scenarios/basic.toml");
const BIN: &str = env!("CARGO_BIN_EXE_felhom-agent");
const MARK: &str = "[felhom-agent]";

/// The correctly scoped token of guest 101.
pub const T101: (&str, &str) = (
    "felhom101@pve!agent",
    "11111111-2222-3333-4444-555555555101",
);
/// A non-privsep token whose user has PVEVMAdmin on `/vms` (over-wide).
pub const WIDE: (&str, &str) = ("wide@pve!tok", "wide-secret-0000");

pub struct Env {
    pub sim: Sim,
    pub dir: PathBuf,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Env {
    /// `speed`: simulated seconds per real second.
    pub async fn start(mut sc: Scenario, speed: f64) -> Env {
        sc.settings.clock_speed = speed;
        let sim = Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "felhom-wire-test-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("sys/class/net/eth0")).unwrap();
        std::fs::write(
            dir.join("sys/class/net/eth0/address"),
            "bc:24:11:aa:bb:01\n",
        )
        .unwrap();
        Env { sim, dir }
    }

    pub async fn basic(speed: f64) -> Env {
        Env::start(Scenario::parse(BASIC).unwrap(), speed).await
    }

    /// Writes the token secret and a config for `token`; `guest`, `backup` and `extra` are
    /// lines for `[guest]`, `[backup]` and after the other sections.
    pub fn configure(&self, token: (&str, &str), guest: &str, backup: &str, extra: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.dir.join("token"), format!("{}\n", token.1)).unwrap();
        std::fs::set_permissions(
            self.dir.join("token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let text = format!(
            "[pve]\nurl = \"{url}\"\ntoken-id = \"{tok}\"\n\
             token-secret-file = \"{dir}/token\"\nfingerprint = \"{fp}\"\ntimeout = \"5s\"\n\n\
             [guest]\n{guest}\n\n\
             [backup]\nstorage = \"pbs-main\"\nmode = \"snapshot\"\ntask-timeout = \"2m\"\n\
             splay = \"0s\"\ntimezone = \"Europe/Budapest\"\n{backup}\n\n\
             [state]\ndir = \"{dir}/state\"\n\n\
             [health]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            url = self.sim.url(),
            tok = token.0,
            dir = self.dir.display(),
            fp = self.sim.fingerprint(),
        );
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args);
        c.env("FELHOM_AGENT_SYSFS_ROOT", self.dir.join("sys"))
            .env("FELHOM_LOG", "info")
            .env_remove("FELHOM_AGENT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM");
        c
    }

    pub async fn run(&self, args: &[&str]) -> Out {
        let mut c = self.command(args);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `METHOD path` of every non-GET request from log position `seq` on.
    pub fn mutating_since(&self, seq: usize) -> Vec<String> {
        self.sim.requests()[seq..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn seq(&self) -> usize {
        self.sim.requests().len()
    }

    pub fn snapshot_names(&self, vmid: u32) -> Vec<String> {
        let w = self.sim.world();
        let mut v: Vec<String> = w.guests[&vmid]
            .snapshots
            .iter()
            .map(|s| s.name.clone())
            .collect();
        v.sort();
        v
    }

    /// `(vmid, ctime)` of every volume on pbs-main, sorted.
    pub fn backups(&self) -> Vec<(u32, i64)> {
        let w = self.sim.world();
        let mut v: Vec<(u32, i64)> = w.storages["pbs-main"]
            .volumes
            .iter()
            .map(|v| (v.vmid, v.ctime))
            .collect();
        v.sort();
        v
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const DAY: i64 = 86_400;
/// 2026-11-17, a day before the simulator's start time.
const BASE: i64 = 1_794_900_000;

/// basic.toml with four daily backups of guest 101 (the newest one protected) and one of 103.
pub fn with_backups() -> Scenario {
    let mut sc = Scenario::parse(BASIC).unwrap();
    let pbs = sc.storages.iter_mut().find(|s| s.id == "pbs-main").unwrap();
    for (k, protected) in [(0, false), (1, false), (2, false), (3, true)] {
        pbs.backups.push(BackupSpec {
            vmid: 101,
            kind: GuestKind::Qemu,
            ctime: BASE - (3 - k) * DAY,
            size: 1 << 30,
            protected,
            notes: None,
            volname: None,
        });
    }
    pbs.backups.push(BackupSpec {
        vmid: 103,
        kind: GuestKind::Lxc,
        ctime: BASE - 9 * DAY,
        size: 1 << 30,
        protected: false,
        notes: None,
        volname: None,
    });
    sc
}

/// basic.toml with three of our snapshots on guest 101 (a day apart), a user snapshot named
/// like ours but without the marker, and a user snapshot with another name.
fn with_snapshots() -> Scenario {
    let mut sc = Scenario::parse(BASIC).unwrap();
    let g = sc.guests.iter_mut().find(|g| g.vmid == 101).unwrap();
    let snap = |name: &str, description: String, snaptime: i64| SnapshotSpec {
        name: name.into(),
        description,
        snaptime: Some(snaptime),
        parent: None,
        snapstate: None,
        vmstate: false,
    };
    g.snapshots.push(snap(
        "felhom-20261114t110000z",
        format!("{MARK} rolling snapshot"),
        BASE - 3 * DAY,
    ));
    g.snapshots.push(snap(
        "felhom-20261115t110000z",
        "made by hand".into(),
        BASE - 2 * DAY + 60,
    ));
    g.snapshots.push(snap(
        "felhom-20261116t110000z",
        format!("{MARK} rolling snapshot"),
        BASE - DAY,
    ));
    g.snapshots.push(snap(
        "before-upgrade",
        "the user's own".into(),
        BASE - DAY + 60,
    ));
    g.snapshots.push(snap(
        "felhom-20261117t110000z",
        format!("{MARK} rolling snapshot"),
        BASE,
    ));
    sc
}

// ---------------------------------------------------------------------------------------------
// self-check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_check_passes_with_the_scoped_token_and_sends_only_gets() {
    let env = Env::basic(1.0).await;
    env.configure(T101, "", "", "");
    let out = env.run(&["self-check"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("self-check of guest 101 on pve1 with token felhom101@pve!agent\n"),
        "{}",
        out.stdout
    );
    let last = out.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("verdict: PASS, all ") && last.ends_with(" rows hold (exit 0)"),
        "{last}"
    );
    let json = env.run(&["self-check", "--json"]).await;
    assert_eq!(json.code, 0);
    let v = json.json();
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["vmid"], 101);
    let tls = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "tls")
        .unwrap();
    assert_eq!(
        tls["observed"],
        format!("pinned SHA-256 fingerprint {}", env.sim.fingerprint())
    );
    assert_eq!(env.mutating_since(0), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_check_flags_the_wide_token_with_exit_4() {
    let env = Env::basic(1.0).await;
    env.configure(WIDE, "vmid = 101", "", "");
    let out = env.run(&["self-check", "--json"]).await;
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["verdict"], "violation");
    let failed: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pass"] == false)
        .collect();
    assert!(
        failed.iter().any(|r| r["check"] == "foreign-refused"
            && r["call"] == "GET /nodes/pve1/qemu/102/status/current"),
        "{v}"
    );
    assert!(failed.iter().any(|r| r["check"] == "visibility"), "{v}");
    let text = env.run(&["self-check"]).await;
    assert_eq!(text.code, 4);
    assert!(
        text.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("verdict: VIOLATION, "),
        "{}",
        text.stdout
    );
    assert_eq!(env.mutating_since(0), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_check_that_cannot_reach_pve_exits_1_and_config_errors_exit_2() {
    let env = Env::basic(1.0).await;
    env.configure(T101, "vmid = 101", "", "");
    let cfg = std::fs::read_to_string(env.dir.join("config.toml")).unwrap();
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let moved = cfg.replace(&env.sim.url(), &format!("https://127.0.0.1:{port}"));
    std::fs::write(env.dir.join("config.toml"), moved).unwrap();
    let out = env.run(&["self-check", "--json"]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["verdict"], "could-not-run");
    assert!(
        out.stderr.contains("self-check could not run: identity: "),
        "{}",
        out.stderr
    );
    // A config error: the backup storage is missing.
    std::fs::write(
        env.dir.join("config.toml"),
        cfg.replace("storage = \"pbs-main\"\n", ""),
    )
    .unwrap();
    let out = env.run(&["self-check"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("backup.storage"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// setup-commands

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_commands_from_the_config_needs_no_api_and_follows_the_features() {
    let env = Env::basic(1.0).await;
    env.configure(T101, "vmid = 101", "", "");
    // No token is needed to print the runbook (it is what creates the token).
    std::fs::remove_file(env.dir.join("token")).unwrap();
    let out = env.run(&["setup-commands"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with(
            "# on any node of the PVE cluster, as root: provision felhom101@pve!agent for guest 101\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("pveum acl modify /vms/101 --tokens 'felhom101@pve!agent' --roles "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("pveum acl modify /storage/pbs-main --users felhom101@pve --roles "),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("VM.Snapshot"), "{}", out.stdout);
    let v = env.run(&["setup-commands", "--json"]).await.json();
    assert_eq!(
        v["acl_paths"],
        serde_json::json!(["/vms/101", "/storage/pbs-main"])
    );
    assert_eq!(v["token_id"], "felhom101@pve!agent");
    assert_eq!(v["secret_file"], format!("{}/token", env.dir.display()));
    assert!(
        !v["privileges"]
            .as_array()
            .unwrap()
            .contains(&"VM.Snapshot".into())
    );
    // Snapshots on (a schedule is set): the role gains VM.Snapshot.
    env.configure(
        T101,
        "vmid = 101",
        "",
        "[snapshots]\nschedule = \"0 * * * *\"\n",
    );
    let v = env.run(&["setup-commands", "--json"]).await.json();
    assert!(
        v["privileges"]
            .as_array()
            .unwrap()
            .contains(&"VM.Snapshot".into()),
        "{v}"
    );
    assert!(env.sim.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_commands_discovers_the_vmid_or_says_to_set_it() {
    let env = Env::basic(1.0).await;
    env.configure(T101, "", "", "");
    let out = env.run(&["setup-commands"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("pveum acl modify /vms/101 "),
        "{}",
        out.stdout
    );
    // The wide token sees every guest: discovery cannot pick one.
    env.configure(WIDE, "", "", "");
    let out = env.run(&["setup-commands"]).await;
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("set vmid in the [guest] section of the config"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// snapshots

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_list_create_and_prune_with_a_dry_run_that_changes_nothing() {
    let env = Env::start(with_snapshots(), 20.0).await;
    env.configure(
        T101,
        "",
        "",
        "[snapshots]\nschedule = \"0 * * * *\"\n[snapshots.retention]\nkeep-last = 2\n",
    );
    let out = env.run(&["snapshots", "list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    let plan: Vec<(String, String, bool)> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["decision"].as_str().unwrap().to_string(),
                s["owned"].as_bool().unwrap(),
            )
        })
        .collect();
    let p = |n: &str, d: &str, o: bool| (n.to_string(), d.to_string(), o);
    assert_eq!(
        plan,
        [
            p("felhom-20261114t110000z", "remove", true),
            p("felhom-20261115t110000z", "keep", false),
            p("felhom-20261116t110000z", "keep", true),
            p("before-upgrade", "keep", false),
            p("felhom-20261117t110000z", "keep", true),
        ]
    );
    let text = env.run(&["snapshots", "list"]).await;
    assert!(
        text.stdout
            .contains("5 snapshot(s), 3 ours, 1 to remove by the retention policy"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("not ours: description lacks the marker [felhom-agent]"),
        "{}",
        text.stdout
    );

    // Dry run: the plan, and not a single mutating request.
    let seq = env.seq();
    let dry = env
        .run(&["snapshots", "prune", "--dry-run", "--json"])
        .await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["actions"], serde_json::json!([]));
    assert_eq!(env.mutating_since(seq), Vec::<String>::new());
    let dry = env.run(&["snapshots", "prune", "--dry-run"]).await;
    assert!(
        dry.stdout
            .ends_with("dry run: 1 snapshot(s) would be removed; nothing was changed\n"),
        "{}",
        dry.stdout
    );
    assert_eq!(env.snapshot_names(101).len(), 5);

    // Create one: the newest three of ours are now candidates for keep-last = 2.
    let created = env.run(&["snapshots", "create", "--json"]).await;
    assert_eq!(created.code, 0, "{}\n{}", created.stdout, created.stderr);
    let c = created.json();
    assert_eq!(c["result"], "created");
    assert_eq!(c["exitstatus"], "OK");
    let name = c["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("felhom-"), "{name}");
    assert!(env.snapshot_names(101).contains(&name));

    // Prune for real: the two oldest of ours go; the user's snapshots stay.
    let pruned = env.run(&["snapshots", "prune"]).await;
    assert_eq!(pruned.code, 0, "{}\n{}", pruned.stdout, pruned.stderr);
    assert!(
        pruned.stdout.ends_with("2 of 2 snapshot(s) removed\n"),
        "{}",
        pruned.stdout
    );
    let mut want = vec![
        "before-upgrade".to_string(),
        "felhom-20261115t110000z".to_string(),
        "felhom-20261117t110000z".to_string(),
        name,
    ];
    want.sort();
    assert_eq!(env.snapshot_names(101), want);
}

// ---------------------------------------------------------------------------------------------
// backups

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_list_and_prune_with_retention_and_a_read_only_dry_run() {
    let env = Env::start(with_backups(), 20.0).await;
    env.configure(T101, "", "", "");
    // Without [backup.retention]: list shows everything kept, prune refuses (config, exit 2).
    let list = env.run(&["backups", "list", "--json"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let v = list.json();
    assert_eq!(v["prune_backups"], "keep-all=1");
    assert_eq!(v["backups"].as_array().unwrap().len(), 4);
    let out = env.run(&["backups", "prune", "--dry-run"]).await;
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "backups prune: no retention policy: add a [backup.retention] table with keep-* options to the config"
        ),
        "{}",
        out.stderr
    );

    env.configure(T101, "", "[backup.retention]\nkeep-last = 2", "");
    let seq = env.seq();
    let dry = env.run(&["backups", "prune", "--dry-run", "--json"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let d = dry.json();
    assert_eq!(d["dry_run"], true);
    let marks: Vec<(i64, String, String)> = d["listing"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["ctime"].as_i64().unwrap(),
                b["mark"].as_str().unwrap().to_string(),
                b["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            (BASE - 3 * DAY, "remove".into(), "no rule keeps it".into()),
            (BASE - 2 * DAY, "keep".into(), "keep-last #2".into()),
            (BASE - DAY, "keep".into(), "keep-last #1".into()),
            (BASE, "protected".into(), "protected".into()),
        ]
    );
    assert_eq!(env.mutating_since(seq), Vec::<String>::new());
    let text = env.run(&["backups", "prune", "--dry-run"]).await;
    assert!(
        text.stdout
            .ends_with("dry run: 1 backup(s) would be removed; nothing was changed\n"),
        "{}",
        text.stdout
    );
    assert_eq!(env.backups().len(), 5);

    let seq = env.seq();
    let done = env.run(&["backups", "prune"]).await;
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stdout.ends_with("1 of 1 backup(s) removed\n"),
        "{}",
        done.stdout
    );
    assert_eq!(
        env.mutating_since(seq),
        ["DELETE /nodes/pve1/storage/pbs-main/prunebackups"]
    );
    assert_eq!(
        env.backups(),
        [
            (101, BASE - 2 * DAY),
            (101, BASE - DAY),
            (101, BASE),
            (103, BASE - 9 * DAY)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// prune after a successful backup

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_backup_prunes_old_backups_by_the_retention_policy() {
    let env = Env::start(with_backups(), 20.0).await;
    env.configure(T101, "", "[backup.retention]\nkeep-last = 2", "");
    let out = env.run(&["backup-now", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = out.json();
    assert_eq!(s["result"], "ok", "{s}");
    assert_eq!(s["pruned"], 2, "{s}");
    assert!(s.get("prune_error").is_none(), "{s}");
    // The new backup and the newest older one are kept, the protected one survives and does
    // not count, the other guest's backup is never part of the plan.
    let left = env.backups();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(left.contains(&(101, BASE - DAY)));
    assert!(left.contains(&(101, BASE)));
    assert!(left.contains(&(103, BASE - 9 * DAY)));
    assert!(left.iter().any(|&(v, t)| v == 101 && t > BASE));
    let prunes: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0].path, "/nodes/pve1/storage/pbs-main/prunebackups");
    assert_eq!(prunes[0].params["vmid"], "101");
    assert_eq!(prunes[0].params["type"], "qemu");
    assert_eq!(prunes[0].params["prune-backups"], "keep-last=2");
    // vzdump itself never gets prune-backups.
    let vzdump = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/vzdump"))
        .unwrap();
    assert!(!vzdump.params.contains_key("prune-backups"));
    let line = env.run(&["backup-now"]).await;
    assert_eq!(line.code, 0);
    assert!(
        line.stdout.trim_end().ends_with("; pruned 1 old backup(s)"),
        "{}",
        line.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prune_is_reported_but_the_backup_still_succeeds() {
    use pve_sim::{FaultKind, FaultSpec};
    let env = Env::start(with_backups(), 20.0).await;
    env.configure(T101, "", "[backup.retention]\nkeep-last = 1", "");
    env.sim.add_fault(FaultSpec {
        method: Some("DELETE".into()),
        path: Some("/nodes/{node}/storage/{storage}/prunebackups".into()),
        kind: FaultKind::Status {
            code: 403,
            message: "Permission check failed (/storage/pbs-main, Datastore.AllocateSpace)".into(),
        },
        count: None,
    });
    let out = env.run(&["backup-now", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = out.json();
    assert_eq!(s["result"], "ok", "{s}");
    assert!(s.get("pruned").is_none(), "{s}");
    let err = s["prune_error"].as_str().unwrap();
    assert!(err.contains("Permission check failed"), "{err}");
    assert!(
        out.stderr.contains("failed (the backup itself succeeded)"),
        "{}",
        out.stderr
    );
    // Nothing was removed; the backup is recorded as a success.
    assert_eq!(env.backups().len(), 6);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir.join("state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["consecutive_failures"], 0);
    assert_eq!(state["runs"][0]["result"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_create_runs_the_quiesce_hooks_when_configured() {
    let env = Env::start(with_snapshots(), 20.0).await;
    let m = env.dir.join("marker");
    let hooks = format!(
        "[[quiesce.hooks]]\nname = \"app\"\npre = [\"/bin/sh\", \"-c\", \"echo pre-$FELHOM_MODE >> {m}\"]\npost = [\"/bin/sh\", \"-c\", \"echo post-$FELHOM_MODE >> {m}\"]\n",
        m = m.display()
    );
    env.configure(
        T101,
        "",
        "",
        &format!("[snapshots]\nschedule = \"0 * * * *\"\nquiesce = true\n[snapshots.retention]\nkeep-last = 9\n\n{hooks}"),
    );
    let out = env.run(&["snapshots", "create", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let marker = std::fs::read_to_string(&m).unwrap();
    assert_eq!(
        marker, "pre-pve-snapshot\npost-pve-snapshot\n",
        "pre before, post after, once each"
    );
    let reqs = env.sim.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/snapshot"))
    );
    // Nothing is owed afterwards: a later run has no posts to repair.
    let status = env.run(&["status", "--json"]).await;
    assert_eq!(status.json()["posts_owed"], serde_json::json!([]));
    // Without `quiesce = true` the hooks stay out of snapshots.
    std::fs::remove_file(&m).unwrap();
    env.configure(
        T101,
        "",
        "",
        &format!(
            "[snapshots]\nschedule = \"0 * * * *\"\n[snapshots.retention]\nkeep-last = 9\n\n{hooks}"
        ),
    );
    let out = env.run(&["snapshots", "create", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!m.exists(), "no hooks without snapshots.quiesce");
}
