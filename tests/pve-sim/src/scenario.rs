//! The scenario file: the cluster a simulation starts from (TOML or JSON, kebab-case keys,
//! unknown keys rejected so a typo cannot silently make the simulator more lenient).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rbac::RbacSpec;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    #[serde(default)]
    pub settings: Settings,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub guests: Vec<GuestSpec>,
    #[serde(default)]
    pub storages: Vec<StorageSpec>,
    #[serde(default)]
    pub access: RbacSpec,
    /// Defaults for every vzdump; a guest's `backup` table overrides them.
    #[serde(default)]
    pub vzdump: VzdumpBehaviour,
    #[serde(default)]
    pub snapshot_timing: SnapshotTiming,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Delay before a 401 answer (real PVE: 3000 ms). Tests set 0.
    #[serde(default = "d_auth_delay")]
    pub auth_failure_delay_ms: u64,
    /// pveproxy closes idle keep-alive connections after 5 s (§9).
    #[serde(default = "d_idle")]
    pub keepalive_idle_ms: u64,
    /// pveproxy serves at most 100 requests per connection.
    #[serde(default = "d_keepalive_max")]
    pub keepalive_max_requests: u32,
    /// Simulated seconds per real second.
    #[serde(default = "d_speed")]
    pub clock_speed: f64,
    /// Epoch the simulated clock starts at (default: now).
    #[serde(default)]
    pub start_time: Option<i64>,
    /// Local time zone of the nodes (dir-storage backup names and prune buckets).
    #[serde(default = "d_tz")]
    pub timezone: String,
    /// PVE version reported by /version.
    #[serde(default = "d_version")]
    pub version: String,
    /// Key for the `/_sim` control API (default: generated at start and printed).
    #[serde(default)]
    pub control_key: Option<String>,
    /// Whether error bodies carry `message` (libpve-http-server-perl ≥ 5.2.0, §6).
    #[serde(default = "d_true")]
    pub error_message_in_body: bool,
}

fn d_auth_delay() -> u64 {
    3000
}
fn d_idle() -> u64 {
    5000
}
fn d_keepalive_max() -> u32 {
    100
}
fn d_speed() -> f64 {
    1.0
}
fn d_tz() -> String {
    "UTC".into()
}
fn d_version() -> String {
    "9.1.1".into()
}
fn d_true() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            auth_failure_delay_ms: d_auth_delay(),
            keepalive_idle_ms: d_idle(),
            keepalive_max_requests: d_keepalive_max(),
            clock_speed: d_speed(),
            start_time: None,
            timezone: d_tz(),
            version: d_version(),
            control_key: None,
            error_message_in_body: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSpec {
    pub name: String,
    #[serde(default = "d_true")]
    pub online: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
    /// `VM is locked (…)` / `CT is locked (…)`.
    pub fn lock_word(self) -> &'static str {
        match self {
            GuestKind::Qemu => "VM",
            GuestKind::Lxc => "CT",
        }
    }
    pub fn config_dir(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu-server",
            GuestKind::Lxc => "lxc",
        }
    }
    pub fn to_prune(self) -> crate::prune::GuestType {
        match self {
            GuestKind::Qemu => crate::prune::GuestType::Qemu,
            GuestKind::Lxc => crate::prune::GuestType::Lxc,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GuestSpec {
    pub vmid: u32,
    #[serde(rename = "type")]
    pub kind: GuestKind,
    pub node: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "d_running")]
    pub status: String,
    /// Config keys as PVE stores them (`smbios1`, `net0`, `agent`, `hostname`, …).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub template: bool,
    /// HA-managed and enabled (stop-mode backups are refused).
    #[serde(default)]
    pub ha_managed: bool,
    #[serde(default)]
    pub snapshots: Vec<SnapshotSpec>,
    /// Overrides of the scenario's vzdump behaviour for this guest.
    #[serde(default)]
    pub backup: Option<VzdumpBehaviour>,
}

fn d_running() -> String {
    "running".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SnapshotSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub snaptime: Option<i64>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub snapstate: Option<String>,
    #[serde(default)]
    pub vmstate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Dir,
    Pbs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: StorageKind,
    #[serde(default = "d_content")]
    pub content: Vec<String>,
    /// Nodes the storage is enabled on (default: all).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    #[serde(default)]
    pub shared: Option<bool>,
    #[serde(default = "d_total")]
    pub total: u64,
    #[serde(default)]
    pub used: u64,
    #[serde(default = "d_true")]
    pub active: bool,
    /// The storage's `prune-backups` property string.
    #[serde(default)]
    pub prune_backups: Option<String>,
    #[serde(default)]
    pub max_protected_backups: Option<u64>,
    #[serde(default)]
    pub backups: Vec<BackupSpec>,
}

fn d_content() -> Vec<String> {
    vec!["backup".into()]
}
fn d_total() -> u64 {
    1 << 40
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupSpec {
    pub vmid: u32,
    #[serde(rename = "type")]
    pub kind: GuestKind,
    pub ctime: i64,
    #[serde(default = "d_size")]
    pub size: u64,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub notes: Option<String>,
    /// A non-standard volume name (e.g. a renamed archive) relative to the storage.
    #[serde(default)]
    pub volname: Option<String>,
}

fn d_size() -> u64 {
    1 << 30
}

/// How a vzdump of a guest plays out, in simulated seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VzdumpBehaviour {
    /// Total run time of the archive step.
    #[serde(default = "d_duration")]
    pub duration: f64,
    /// When the consistency point is reached (qemu: `started backup task`; lxc: snapshot made).
    #[serde(default = "d_cp")]
    pub consistency_point: f64,
    /// How long a clean shutdown takes in stop mode.
    #[serde(default = "d_shutdown")]
    pub shutdown: f64,
    /// `ok`, `warnings:N`, `error:<text>` (per-guest failure → `job errors`),
    /// `job-error:<text>` (the whole job dies with that text), or `unexpected` (no TASK line).
    #[serde(default = "d_outcome")]
    pub outcome: String,
    /// Archive size in bytes.
    #[serde(default = "d_size")]
    pub size: u64,
}

fn d_duration() -> f64 {
    60.0
}
fn d_cp() -> f64 {
    2.0
}
fn d_shutdown() -> f64 {
    3.0
}
fn d_outcome() -> String {
    "ok".into()
}

impl Default for VzdumpBehaviour {
    fn default() -> Self {
        VzdumpBehaviour {
            duration: d_duration(),
            consistency_point: d_cp(),
            shutdown: d_shutdown(),
            outcome: d_outcome(),
            size: d_size(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SnapshotTiming {
    #[serde(default = "d_snap")]
    pub create: f64,
    #[serde(default = "d_snapdel")]
    pub delete: f64,
    #[serde(default = "d_rollback")]
    pub rollback: f64,
}

fn d_snap() -> f64 {
    2.0
}
fn d_snapdel() -> f64 {
    1.0
}
fn d_rollback() -> f64 {
    3.0
}

impl Default for SnapshotTiming {
    fn default() -> Self {
        SnapshotTiming {
            create: d_snap(),
            delete: d_snapdel(),
            rollback: d_rollback(),
        }
    }
}

impl Scenario {
    /// Parses TOML, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("scenario (JSON): {e}"))
        } else {
            toml::from_str(text).map_err(|e| format!("scenario (TOML): {e}"))
        }
    }

    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
