//! The wiring between the configuration and the feature modules: the self-check, the `pveum`
//! runbook, own snapshots and own-backup retention, as the CLI commands ([`commands`]) and the
//! prune that follows a successful backup ([`prune`]) use them.
//!
//! Owns: turning a validated [`Config`] plus the discovered identity into the inputs of
//! [`crate::selfcheck`] and [`crate::snapshots`] ([`selfcheck_input`], [`setup_input`],
//! [`snapshot_settings`], [`backup_retention`], [`guest`]), and the text rendering of listings
//! and prune reports ([`render`]).
//!
//! Invariants: the features a self-check expects and the features `setup-commands` provisions
//! come from the same [`features`] (snapshots are on exactly when `snapshots.schedule` is set);
//! retention periods are bucketed in `backup.timezone` (else the system's), the zone the
//! schedule uses too; nothing here sends a request by itself except [`resolve_identity`].

pub mod commands;
pub mod prune;
pub mod render;
pub mod snapshot_create;

use jiff::tz::TimeZone;

use crate::config::{Config, PveConfig};
use crate::identity::{self, Identity, LocalFacts};
use crate::pve::PveClient;
use crate::pve::tls::format_fingerprint;
use crate::selfcheck::{Features, SelfCheckInput, SetupInput, TlsMode};
use crate::snapshots::{BackupRetention, Guest, NameError, SnapshotSettings};

/// The enabled features: backup always, snapshots when `snapshots.schedule` is set.
pub fn features(cfg: &Config) -> Features {
    Features {
        snapshots: cfg.snapshots.schedule.is_some(),
    }
}

/// How the API certificate is verified, from `[pve] ca-file` / `fingerprint`.
pub fn tls_mode(pve: &PveConfig) -> TlsMode {
    TlsMode {
        ca_file: pve.ca_file.as_ref().map(|p| p.display().to_string()),
        fingerprint: pve.fingerprint.as_ref().map(format_fingerprint),
    }
}

/// The self-check's input for the discovered guest.
pub fn selfcheck_input(cfg: &Config, id: &Identity) -> SelfCheckInput {
    SelfCheckInput {
        vmid: id.vmid,
        node: id.node.clone(),
        guest_type: id.kind,
        backup_storage: cfg.backup.storage.clone(),
        features: features(cfg),
        foreign_vmids: cfg.self_check.foreign_vmids.clone(),
        tls: tls_mode(&cfg.pve),
    }
}

/// The `setup-commands` input for guest `vmid`.
pub fn setup_input(cfg: &Config, vmid: u32) -> SetupInput {
    SetupInput {
        vmid,
        backup_storage: cfg.backup.storage.clone(),
        features: features(cfg),
        token_id: Some(cfg.pve.token_id.clone()),
        secret_file: cfg
            .pve
            .token_secret_file
            .as_ref()
            .map(|p| p.display().to_string()),
    }
}

/// The time zone retention periods are bucketed in: `backup.timezone`, else the system's.
pub fn retention_tz(cfg: &Config) -> TimeZone {
    cfg.backup.timezone.clone().unwrap_or_else(TimeZone::system)
}

/// `[snapshots]` as the snapshot module's settings (validated again; the config already
/// guarantees prefix and marker are accepted).
pub fn snapshot_settings(cfg: &Config) -> Result<SnapshotSettings, NameError> {
    let s = &cfg.snapshots;
    SnapshotSettings::new(
        &s.prefix,
        Some(&s.description),
        s.vmstate,
        s.retention,
        retention_tz(cfg),
    )
}

/// `[backup.retention]` on the backup storage; `None` when the table is absent.
pub fn backup_retention(cfg: &Config) -> Option<BackupRetention> {
    cfg.backup.retention.map(|policy| BackupRetention {
        storage: cfg.backup.storage.clone(),
        policy,
        tz: retention_tz(cfg),
    })
}

/// The same storage with a keep-everything policy: lists backups without planning removals.
pub fn backup_listing_retention(cfg: &Config) -> BackupRetention {
    backup_retention(cfg).unwrap_or_else(|| BackupRetention {
        storage: cfg.backup.storage.clone(),
        policy: Default::default(),
        tz: retention_tz(cfg),
    })
}

/// The guest the snapshot and retention calls act on.
pub fn guest(id: &Identity) -> Guest {
    Guest {
        node: id.node.clone(),
        vmid: id.vmid,
        kind: id.kind,
    }
}

/// Discovers and proves this guest's identity; the error is one line for the operator.
pub async fn resolve_identity(
    client: &PveClient,
    cfg: &Config,
    local: &LocalFacts,
) -> Result<Identity, String> {
    identity::discover(client, cfg.guest.vmid, local)
        .await
        .map_err(|e| format!("identity: {e}"))
}
