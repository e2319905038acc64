//! The CLI commands `self-check`, `setup-commands`, `snapshots list|create|prune` and
//! `backups list|prune`: identity, the feature call, the table or one JSON line, the exit code.
//!
//! Exit codes: 0 done; 1 failed (PVE unreachable, an API error, a failed task); 2 config
//! (`backups prune` without `[backup.retention]`, `setup-commands` without a VMID); 3 skipped
//! because the guest stayed locked (like "busy"); `self-check` 4 on a violation.
//! Invariant: `--dry-run` and the `list` commands send only GET requests.

use serde::Serialize;

use super::render;
use crate::backup::run::Agent;
use crate::cli::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::config::Config;
use crate::identity::Identity;
use crate::pve::retry::TokioSleeper;
use crate::pve::types::{GuestType, TaskOutcome};
use crate::selfcheck::{self, EXIT_COULD_NOT_RUN};
use crate::snapshots::{self, CreateOutcome, DeleteResult};
use crate::state::GuestKind;

/// Exit code when the guest stayed locked and nothing was done (as for a busy run).
pub const EXIT_SKIPPED: i32 = 3;

/// `snapshots …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotsOp {
    List,
    Create,
    Prune { dry_run: bool },
}

/// `backups …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupsOp {
    List,
    Prune { dry_run: bool },
}

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Fails with a message on stderr (and a JSON error object when asked).
fn fail(json: bool, what: &str, msg: &str, code: i32) -> i32 {
    if json {
        print_json(&serde_json::json!({"error": format!("{what}: {msg}"), "exit_code": code}));
    }
    eprintln!("felhom-agent: {what}: {msg}");
    code
}

/// The identity for the self-check: discovered and proven; when discovery fails but
/// `[guest] vmid` is set and the state remembers that guest, its cached node and type (the
/// self-check then shows what the token can no longer see).
async fn selfcheck_identity(agent: &Agent) -> Result<Identity, String> {
    let err = match super::resolve_identity(&agent.client, &agent.cfg, &agent.local).await {
        Ok(id) => return Ok(id),
        Err(e) => e,
    };
    let cached = agent
        .dir
        .load_state()
        .ok()
        .and_then(|l| l.state.identity)
        .filter(|i| agent.cfg.guest.vmid == Some(i.vmid));
    match cached {
        Some(i) => {
            eprintln!(
                "felhom-agent: {err}; checking guest {} on node {} as last recorded",
                i.vmid, i.node
            );
            Ok(Identity {
                vmid: i.vmid,
                node: i.node,
                kind: match i.kind {
                    GuestKind::Qemu => GuestType::Qemu,
                    GuestKind::Lxc => GuestType::Lxc,
                },
                name: i.name,
                proof: "recorded earlier".into(),
            })
        }
        None if agent.cfg.guest.vmid.is_none() => Err(format!(
            "{err} (set [guest] vmid in the config so the self-check knows which guest is its own)"
        )),
        None => Err(err),
    }
}

/// `self-check [--json]`: exit 0 pass, 4 violation, 1 could not run.
pub async fn self_check(agent: &Agent, json: bool) -> i32 {
    let id = match selfcheck_identity(agent).await {
        Ok(id) => id,
        Err(e) => {
            if json {
                print_json(&serde_json::json!({
                    "verdict": "could-not-run",
                    "exit_code": EXIT_COULD_NOT_RUN,
                    "error": e,
                }));
            }
            eprintln!("felhom-agent: self-check could not run: {e}");
            return EXIT_COULD_NOT_RUN;
        }
    };
    let report = selfcheck::run(&agent.client, super::selfcheck_input(&agent.cfg, &id)).await;
    if json {
        print_json(&report);
    } else {
        print!("{}", selfcheck::render_text(&report));
    }
    report.exit_code
}

/// `setup-commands [--json]`: the runbook for `[guest] vmid`, else for the discovered guest.
/// Needs no token when the VMID is configured (the runbook creates the token).
pub async fn setup_commands(cfg: Config, json: bool) -> i32 {
    let vmid = match cfg.guest.vmid {
        Some(v) => v,
        None => {
            let found = match crate::cli::build_agent(cfg.clone()) {
                Ok(agent) => super::resolve_identity(&agent.client, &cfg, &agent.local)
                    .await
                    .map(|id| id.vmid),
                Err(e) => Err(e),
            };
            match found {
                Ok(v) => v,
                Err(e) => {
                    return fail(
                        json,
                        "setup-commands",
                        &format!(
                            "[guest] vmid is not set and discovering it failed ({e}); set vmid in the [guest] section of the config"
                        ),
                        EXIT_CONFIG,
                    );
                }
            }
        }
    };
    let input = super::setup_input(&cfg, vmid);
    if json {
        print_json(&selfcheck::setup_plan(&input));
    } else {
        for line in selfcheck::setup_commands(&input) {
            println!("{line}");
        }
    }
    EXIT_OK
}

/// `snapshots list|create|prune [--dry-run] [--json]`.
pub async fn snapshots(agent: &Agent, op: SnapshotsOp, json: bool) -> i32 {
    let settings = match super::snapshot_settings(&agent.cfg) {
        Ok(s) => s,
        Err(e) => return fail(json, "snapshots", &e.to_string(), EXIT_CONFIG),
    };
    let id = match super::resolve_identity(&agent.client, &agent.cfg, &agent.local).await {
        Ok(id) => id,
        Err(e) => return fail(json, "snapshots", &e, EXIT_FAILED),
    };
    let guest = super::guest(&id);
    let tz = &settings.tz;
    let client = &agent.client;
    match op {
        SnapshotsOp::List => match snapshots::list(client, &guest, &settings).await {
            Ok(l) => {
                if json {
                    print_json(&l);
                } else {
                    print!("{}", render::snapshot_listing(&l, tz));
                }
                EXIT_OK
            }
            Err(e) => fail(json, "snapshots list", &e.to_string(), EXIT_FAILED),
        },
        SnapshotsOp::Create => {
            match super::snapshot_create::create_snapshot(agent, &id, &guest, &settings).await {
                Ok(o) => {
                    if json {
                        print_json(&o);
                    } else {
                        print!("{}", render::create_outcome(&o));
                    }
                    match o {
                        CreateOutcome::Created { .. } => EXIT_OK,
                        CreateOutcome::Skipped(_) => EXIT_SKIPPED,
                        CreateOutcome::Failed { .. } => EXIT_FAILED,
                    }
                }
                Err(e) => fail(json, "snapshots create", &e.to_string(), EXIT_FAILED),
            }
        }
        SnapshotsOp::Prune { dry_run } => {
            match snapshots::prune(client, &guest, &settings, dry_run, &TokioSleeper).await {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        print!("{}", render::snapshot_prune(&r, tz));
                    }
                    if r.actions
                        .iter()
                        .any(|a| matches!(a.result, DeleteResult::Failed { .. }))
                    {
                        EXIT_FAILED
                    } else if r.skipped.is_some() {
                        EXIT_SKIPPED
                    } else {
                        EXIT_OK
                    }
                }
                Err(e) => fail(json, "snapshots prune", &e.to_string(), EXIT_FAILED),
            }
        }
    }
}

/// `backups list|prune [--dry-run] [--json]`. `prune` needs `[backup.retention]`; `list`
/// without it shows every backup as kept.
pub async fn backups(agent: &Agent, op: BackupsOp, json: bool) -> i32 {
    let retention = match op {
        BackupsOp::List => super::backup_listing_retention(&agent.cfg),
        BackupsOp::Prune { .. } => match super::backup_retention(&agent.cfg) {
            Some(r) => r,
            None => {
                return fail(
                    json,
                    "backups prune",
                    "no retention policy: add a [backup.retention] table with keep-* options to the config",
                    EXIT_CONFIG,
                );
            }
        },
    };
    let id = match super::resolve_identity(&agent.client, &agent.cfg, &agent.local).await {
        Ok(id) => id,
        Err(e) => return fail(json, "backups", &e, EXIT_FAILED),
    };
    let guest = super::guest(&id);
    let tz = &retention.tz;
    let client = &agent.client;
    match op {
        BackupsOp::List => match snapshots::backups_list(client, &guest, &retention).await {
            Ok(l) => {
                if json {
                    print_json(&l);
                } else {
                    print!("{}", render::backup_listing(&l, tz));
                }
                EXIT_OK
            }
            Err(e) => fail(json, "backups list", &e.to_string(), EXIT_FAILED),
        },
        BackupsOp::Prune { dry_run } => {
            let waits = snapshots::Waits::default();
            match snapshots::backups_prune(
                client,
                &guest,
                &retention,
                dry_run,
                &waits,
                &TokioSleeper,
            )
            .await
            {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        print!("{}", render::backup_prune(&r, tz));
                    }
                    match &r.task_result {
                        Some(t) if !TaskOutcome::from_exitstatus(t).is_success() => EXIT_FAILED,
                        _ => EXIT_OK,
                    }
                }
                Err(e) => fail(json, "backups prune", &e.to_string(), EXIT_FAILED),
            }
        }
    }
}
