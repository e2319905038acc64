//! The prune of this guest's own backups that follows a successful backup (`[backup.retention]`).
//!
//! Invariants: runs only after a backup that ended `ok` or `warnings` and only when
//! `[backup.retention]` is set; goes through [`crate::snapshots::backups_prune`] (PVE's
//! `prunebackups` with this guest's `vmid` and `type`, never vzdump's `prune-backups`); a prune
//! that fails is reported in the summary (`prune_error`) and the log, and never turns the
//! successful backup into a failed one.

use crate::backup::run::{Agent, Summary};
use crate::pve::retry::TokioSleeper;
use crate::pve::types::{GuestType, TaskOutcome};
use crate::snapshots::{self, Guest, Waits};
use crate::state::GuestKind;

/// What the prune after a backup did: the volumes removed, or why it failed.
pub type PruneResult = Result<Vec<String>, String>;

/// The guest the backup was of: VMID and node from the summary, the type from the identity the
/// run recorded (else discovered again).
async fn backed_up_guest(agent: &Agent, summary: &Summary) -> Result<Guest, String> {
    let (Some(vmid), Some(node)) = (summary.vmid, summary.node.clone()) else {
        return Err("the backup summary names no guest".into());
    };
    let recorded = agent
        .dir
        .load_state()
        .ok()
        .and_then(|l| l.state.identity)
        .filter(|i| i.vmid == vmid)
        .map(|i| match i.kind {
            GuestKind::Qemu => GuestType::Qemu,
            GuestKind::Lxc => GuestType::Lxc,
        });
    let kind = match recorded {
        Some(k) => k,
        None => {
            super::resolve_identity(&agent.client, &agent.cfg, &agent.local)
                .await?
                .kind
        }
    };
    Ok(Guest { node, vmid, kind })
}

/// Prunes after a successful backup and records the outcome in `summary` (`pruned`,
/// `prune_error`). Returns what happened, `None` when no prune was due.
pub async fn after_backup(agent: &Agent, summary: &mut Summary) -> Option<PruneResult> {
    if !matches!(summary.result.as_str(), "ok" | "warnings") {
        return None;
    }
    let retention = super::backup_retention(&agent.cfg)?;
    let result = async {
        let guest = backed_up_guest(agent, summary).await?;
        let report = snapshots::backups_prune(
            &agent.client,
            &guest,
            &retention,
            false,
            &Waits::default(),
            &TokioSleeper,
        )
        .await
        .map_err(|e| e.to_string())?;
        match &report.task_result {
            Some(t) if !TaskOutcome::from_exitstatus(t).is_success() => Err(format!(
                "prune task {} ended with '{t}'; removed {} volume(s)",
                report.upid.as_deref().unwrap_or("?"),
                report.removed.len()
            )),
            _ => Ok(report.removed),
        }
    }
    .await;
    match &result {
        Ok(removed) => {
            tracing::info!(
                removed = removed.len(),
                policy = %retention.policy.to_property_string(),
                "pruned this guest's backups on {}: {}",
                retention.storage,
                if removed.is_empty() { "nothing to remove".to_string() } else { removed.join(", ") }
            );
            summary.pruned = Some(removed.len());
        }
        Err(e) => {
            tracing::warn!(
                "pruning this guest's backups on {} failed (the backup itself succeeded): {e}",
                retention.storage
            );
            summary.prune_error = Some(e.clone());
        }
    }
    Some(result)
}
