//! The felhom-agent configuration: locating, parsing and validating the TOML file, and loading
//! the PVE token secret.
//!
//! Owns: the public key contract (kebab-case keys listed in [`KEYS`], documented in
//! `config.example.toml`), defaults, and every validation rule. Invariants:
//! * unknown keys and sections are rejected; every document error names the file, the dotted
//!   key and a 1-based `line:column` (see [`ConfigError`]);
//! * the returned [`Config`] holds plain validated types (no spans, no raw strings where a
//!   typed value exists);
//! * TLS fails closed: `pve.url` must be https and at least one of `pve.fingerprint` /
//!   `pve.ca-file` is required;
//! * the token secret lives only in [`Secret`], which never prints or serialises its content.
//! * a `[backup.retention]` / `[snapshots.retention]` table that is present has at least one
//!   keep-* above 0 (keeping everything is written by leaving the table out, so `keep-last = 0`
//!   is never mistaken for "keep none"); `snapshots.prefix` and `snapshots.description` are
//!   always accepted by [`crate::snapshots::SnapshotSettings::new`].
//!
//! [`parse`] is pure; [`load`], [`load_secret`] and [`read_secret_file`] do file I/O.

mod doc;
mod error;
mod secret;
mod values;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use secret::{Secret, load_secret, read_secret_file};

/// `[backup.retention]` / `[snapshots.retention]`: keep-* counts, each ≥ 0 (0 = option unused).
/// The same type the retention planner takes ([`crate::retention::Policy`]).
pub use crate::retention::Policy as RetentionPolicy;

/// Where the configuration is read from when neither `--config` nor the environment says.
pub const DEFAULT_PATH: &str = "/etc/felhom-agent/config.toml";
/// Environment variable overriding [`DEFAULT_PATH`] (the CLI `--config` beats it).
pub const CONFIG_ENV: &str = "FELHOM_AGENT_CONFIG";
/// State directory used when neither `state.dir` nor `$STATE_DIRECTORY` is set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/felhom-agent";
/// Name of the systemd credential holding the token secret when `pve.token-secret-file` is unset.
pub const PVE_TOKEN_CREDENTIAL: &str = "pve-token";
/// `backup.schedule` when the key is absent.
pub const DEFAULT_BACKUP_SCHEDULE: &str = "0 2 * * *";
/// `self-check.schedule` when the key is absent: every 6 hours.
pub const DEFAULT_SELF_CHECK_SCHEDULE: &str = "0 */6 * * *";
/// `snapshots.prefix` when the key is absent.
pub const DEFAULT_SNAPSHOT_PREFIX: &str = "felhom";
/// `snapshots.description` when the key is absent (the snapshot module's ownership marker).
pub const DEFAULT_SNAPSHOT_MARKER: &str = crate::snapshots::DEFAULT_MARKER;
/// Longest `snapshots.description` marker, in characters.
pub const MAX_SNAPSHOT_MARKER_LEN: usize = 128;

/// Every configuration key as a dotted path, in documentation order. Array-of-table members are
/// listed without an index (`quiesce.hooks.pre`). This list drives unknown-key rejection.
pub const KEYS: &[&str] = &[
    "pve.url",
    "pve.token-id",
    "pve.token-secret-file",
    "pve.fingerprint",
    "pve.ca-file",
    "pve.timeout",
    "guest.vmid",
    "backup.storage",
    "backup.mode",
    "backup.compress",
    "backup.notes-template",
    "backup.protected",
    "backup.task-timeout",
    "backup.lockwait",
    "backup.schedule",
    "backup.timezone",
    "backup.splay",
    "backup.catch-up",
    "backup.retention.keep-last",
    "backup.retention.keep-hourly",
    "backup.retention.keep-daily",
    "backup.retention.keep-weekly",
    "backup.retention.keep-monthly",
    "backup.retention.keep-yearly",
    "quiesce.release",
    "quiesce.in-stop-mode",
    "quiesce.fsfreeze",
    "quiesce.max-freeze",
    "quiesce.fsfreeze-force",
    "quiesce.hooks.name",
    "quiesce.hooks.pre",
    "quiesce.hooks.post",
    "quiesce.hooks.timeout",
    "quiesce.hooks.on-error",
    "quiesce.hooks.shell",
    "snapshots.schedule",
    "snapshots.prefix",
    "snapshots.vmstate",
    "snapshots.description",
    "snapshots.quiesce",
    "snapshots.retention.keep-last",
    "snapshots.retention.keep-hourly",
    "snapshots.retention.keep-daily",
    "snapshots.retention.keep-weekly",
    "snapshots.retention.keep-monthly",
    "snapshots.retention.keep-yearly",
    "self-check.schedule",
    "self-check.foreign-vmids",
    "self-check.on-violation",
    "state.dir",
    "health.listen",
    "health.bearer-token-file",
    "health.max-backup-age",
    "health.max-consecutive-failures",
];

/// Every documented dotted key (see [`KEYS`]), for docs coverage tests.
pub fn documented_keys() -> Vec<&'static str> {
    KEYS.to_vec()
}

/// The configuration file path: `cli` (from `--config`) beats `$FELHOM_AGENT_CONFIG` (looked up
/// through `env`; empty counts as unset) beats [`DEFAULT_PATH`].
pub fn resolve_path_with(cli: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match env(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// [`resolve_path_with`] using the process environment.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_with(cli, &|k| std::env::var(k).ok())
}

/// Reads and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(bytes, path)
}

/// [`load`] after the read: the file's bytes (not necessarily UTF-8) to a validated config;
/// `path` is only used in error messages.
pub fn parse_bytes(bytes: Vec<u8>, path: &Path) -> Result<Config, ConfigError> {
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            // The valid prefix is UTF-8 by construction.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let (line, column) = doc::line_col(prefix, prefix.len());
            Err(ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key: "(document)".into(),
                message: "the file is not valid UTF-8".into(),
            })
        }
    }
}

/// Parses and validates configuration text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    doc::build(text, path)
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub pve: PveConfig,
    pub guest: GuestConfig,
    pub backup: BackupConfig,
    pub quiesce: QuiesceConfig,
    pub snapshots: SnapshotsConfig,
    pub self_check: SelfCheckConfig,
    pub state: StateConfig,
    pub health: HealthConfig,
}

/// `[pve]`: how to reach and authenticate to the PVE API.
#[derive(Debug, Clone, PartialEq)]
pub struct PveConfig {
    /// Normalised `https://host[:port]`, without a trailing slash or `/api2/json`.
    pub url: String,
    /// `USER@REALM!TOKENNAME`, shape-checked.
    pub token_id: String,
    /// Absolute path; `None` means the systemd credential [`PVE_TOKEN_CREDENTIAL`].
    pub token_secret_file: Option<PathBuf>,
    /// SHA-256 of the node's leaf certificate (DER).
    pub fingerprint: Option<[u8; 32]>,
    /// Absolute path of a PEM CA bundle (e.g. the cluster's `pve-root-ca.pem`).
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout; > 0. Default 30s.
    pub timeout: Duration,
}

impl PveConfig {
    /// `url` + `/api2/json`.
    pub fn api_base(&self) -> String {
        format!("{}/api2/json", self.url)
    }
    /// The `USER@REALM` part of the token id (how PVE reports a token's tasks in `user`).
    pub fn token_user(&self) -> &str {
        self.token_id.rsplit_once('!').map_or("", |(u, _)| u)
    }
    /// The `TOKENNAME` part of the token id.
    pub fn token_name(&self) -> &str {
        self.token_id.rsplit_once('!').map_or("", |(_, n)| n)
    }
}

/// `[guest]`: which guest this agent runs in; everything absent is discovered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuestConfig {
    /// 100..=999999999 when set.
    pub vmid: Option<u32>,
}

/// `[backup]`: the vzdump job and its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    /// PVE storage id (required).
    pub storage: String,
    pub mode: BackupMode,
    pub compress: Compress,
    /// Single line, at most 1024 characters; `None` (also for `""`) sends no notes-template.
    pub notes_template: Option<String>,
    pub protected: bool,
    /// How long to wait for the vzdump task; > 0. Default 6h.
    pub task_timeout: Duration,
    /// vzdump `lockwait` in whole minutes: how long the task may queue for the node's vzdump
    /// lock before failing. `None`: not sent (PVE's default, 180 minutes).
    pub lockwait_minutes: Option<u64>,
    /// `None` when disabled with `""`. Default `0 2 * * *`.
    pub schedule: Option<Schedule>,
    /// `None` means the system's time zone.
    pub timezone: Option<jiff::tz::TimeZone>,
    /// Delay of up to this much added to each scheduled run, fixed per guest (from the VMID).
    /// Default 15m; may be 0.
    pub splay: Duration,
    /// A run missed by at most this much is made up at start-up. Default 12h; 0 disables.
    pub catch_up: Duration,
    /// `[backup.retention]`: the agent prunes this guest's backups with it (through
    /// `prunebackups`, never vzdump's `prune-backups`) after each successful backup. `None` when
    /// the table is absent (nothing is pruned by the agent). Never [`RetentionPolicy::keeps_all`]:
    /// a table without any positive keep-* is rejected.
    pub retention: Option<RetentionPolicy>,
}

/// vzdump `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    Snapshot,
    Stop,
    Suspend,
}

impl BackupMode {
    /// The vzdump parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Stop => "stop",
            Self::Suspend => "suspend",
        }
    }
}

/// vzdump `compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// `0`: no compression.
    Off,
    /// `1`: vzdump's legacy "compress" value (lzo).
    On,
    Gzip,
    Lzo,
    Zstd,
}

impl Compress {
    /// The vzdump parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "0",
            Self::On => "1",
            Self::Gzip => "gzip",
            Self::Lzo => "lzo",
            Self::Zstd => "zstd",
        }
    }
}

/// A shape-checked cron schedule. Macros are expanded into the five fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    fields: Vec<String>,
}

impl Schedule {
    /// The schedule as written (trimmed), e.g. `"@daily"` or `"0 2 * * *"`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// minute, hour, day-of-month, month, day-of-week.
    pub fn fields(&self) -> [&str; 5] {
        std::array::from_fn(|i| self.fields[i].as_str())
    }
}

/// `[quiesce]`: hooks run around the backup's consistency point.
#[derive(Debug, Clone, PartialEq)]
pub struct QuiesceConfig {
    pub hooks: Vec<Hook>,
    pub release: Release,
    /// Run hooks in stop mode too. Default false (the shutdown is the quiesce).
    pub in_stop_mode: bool,
    /// Mount points frozen (FIFREEZE) after the pre hooks and thawed before the posts. Absolute,
    /// normalised, unique; checked against the real mounts when the agent starts.
    pub fsfreeze: Vec<FreezePath>,
    /// The longest a filesystem stays frozen: a watchdog thaws after it. > 0, at most
    /// [`MAX_MAX_FREEZE`]. Default [`DEFAULT_MAX_FREEZE`].
    pub max_freeze: Duration,
    /// Freeze even when PVE freezes through the QEMU guest agent. Default false.
    pub fsfreeze_force: bool,
}

/// `quiesce.max-freeze` when the key is absent.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(30);
/// Largest accepted `quiesce.max-freeze`.
pub const MAX_MAX_FREEZE: Duration = Duration::from_secs(600);

/// One `quiesce.fsfreeze` entry and where it was written (for errors found at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezePath {
    pub path: PathBuf,
    /// The configuration file.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

/// When the `post` commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// As soon as the snapshot/consistency point is reached.
    ConsistencyPoint,
    /// When the vzdump task has ended.
    TaskEnd,
}

/// One `[[quiesce.hooks]]` entry. At least one of `pre` / `post` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Unique and non-empty.
    pub name: String,
    pub pre: Option<Command>,
    pub post: Option<Command>,
    /// > 0. Default 2m.
    pub timeout: Duration,
    pub on_error: OnError,
}

/// A hook command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Executed directly; non-empty, `argv[0]` non-empty.
    Argv(Vec<String>),
    /// Run via `/bin/sh -c <script>` (`shell = true`).
    Shell(String),
}

/// What a failing hook does to the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Abort,
    Continue,
}

/// `[snapshots]`: the agent's own rolling PVE snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotsConfig {
    /// `None` (the default, also for `""`) disables snapshots.
    pub schedule: Option<Schedule>,
    /// Snapshot names are `<prefix>-<timestamp>`: starts with an ASCII letter, then letters,
    /// digits, `-`, `_`; at most [`crate::snapshots::naming::MAX_PREFIX_LEN`] (23) characters.
    /// Default [`DEFAULT_SNAPSHOT_PREFIX`].
    pub prefix: String,
    /// qemu only: include the RAM state. Default false.
    pub vmstate: bool,
    /// Ownership marker written into each snapshot's description: non-empty (not only
    /// whitespace), one line, no control characters, at most [`MAX_SNAPSHOT_MARKER_LEN`]
    /// characters. Default [`DEFAULT_SNAPSHOT_MARKER`].
    pub description: String,
    /// Run the `[[quiesce.hooks]]` around snapshots too. Default false.
    pub quiesce: bool,
    /// `[snapshots.retention]`; all zero (the table absent) keeps every snapshot. A present table
    /// without any positive keep-* is rejected.
    pub retention: RetentionPolicy,
}

/// `[self-check]`: the periodic 403 self-check / least-privilege audit.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfCheckConfig {
    /// `None` when disabled with `""`. Default [`DEFAULT_SELF_CHECK_SCHEDULE`].
    pub schedule: Option<Schedule>,
    /// Extra VMIDs to probe as foreign: each 100..=999999999, unique, never `guest.vmid`.
    /// Default empty.
    pub foreign_vmids: Vec<u32>,
    pub on_violation: OnViolation,
}

/// What a failed self-check does to the agent's scheduled work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnViolation {
    /// Report it (log, status, health); scheduled work goes on. The default.
    Report,
    /// Also stop scheduled mutating work (backups, snapshots, pruning) until a check passes.
    Refuse,
}

impl OnViolation {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Refuse => "refuse",
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StateConfig {
    /// Absolute path when set.
    pub dir: Option<PathBuf>,
}

impl StateConfig {
    /// `state.dir`, else the first entry of `$STATE_DIRECTORY` (systemd `StateDirectory=`),
    /// else [`DEFAULT_STATE_DIR`].
    pub fn resolve_dir(&self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        if let Some(d) = &self.dir {
            return d.clone();
        }
        env("STATE_DIRECTORY")
            .and_then(|v| v.split(':').find(|p| !p.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

/// `[health]`: the local health endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Default 127.0.0.1:9742.
    pub listen: SocketAddr,
    /// Absolute path; read with [`read_secret_file`].
    pub bearer_token_file: Option<PathBuf>,
    /// Unhealthy when the last good backup is older. > 0. Default 26h.
    pub max_backup_age: Duration,
    /// Unhealthy after this many failed runs in a row. ≥ 1. Default 2.
    pub max_consecutive_failures: u32,
}
