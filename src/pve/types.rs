//! Typed responses of the PVE API calls felhom-agent makes.
//!
//! Every struct ignores unknown fields and reads PVE's loose types leniently (0/1 booleans,
//! numbers as strings; see [`super::lenient`]). Field meanings follow the reference
//! (§2 tasks, §4 snapshots, §5 storage content and prune, §6 permissions, §7 status/resources).
//! Pure data and classification, no I/O. The guest config lives in [`super::guest_config`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::lenient;
use super::upid::Upid;

/// Guest kind; also the path segment (`qemu`, `lxc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    /// The API path segment / resource type.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }
}

impl fmt::Display for GuestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub repoid: String,
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterResource {
    /// `qemu/101`, `node/pve1`, `storage/pve1/local`, …
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `sdn`, `pool`, …
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
    /// For guests: the node the guest is on **now**.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub template: Option<bool>,
    /// Storage entries: the storage id.
    #[serde(default)]
    pub storage: Option<String>,
}

impl ClusterResource {
    /// `Some` for guest entries (`qemu` / `lxc`).
    pub fn guest_type(&self) -> Option<GuestType> {
        match self.rtype.as_str() {
            "qemu" => Some(GuestType::Qemu),
            "lxc" => Some(GuestType::Lxc),
            _ => None,
        }
    }
}

/// `GET /access/permissions`: path → privilege → propagate flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(pub BTreeMap<String, BTreeMap<String, bool>>);

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = BTreeMap::<String, BTreeMap<String, serde_json::Value>>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (path, privs) in raw {
            let mut m = BTreeMap::new();
            for (p, v) in privs {
                let b = lenient::value_to_bool(&v).ok_or_else(|| {
                    D::Error::custom(format!("permission {path} {p}: expected 0/1, got {v}"))
                })?;
                m.insert(p, b);
            }
            out.insert(path, m);
        }
        Ok(Permissions(out))
    }
}

impl Permissions {
    /// Whether `privilege` is listed for exactly `path` (the API already resolved inheritance).
    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.0.get(path).is_some_and(|m| m.contains_key(privilege))
    }

    /// VMIDs that appear as `/vms/<vmid>` keys, ascending.
    pub fn vmids(&self) -> Vec<u32> {
        self.0
            .keys()
            .filter_map(|k| k.strip_prefix("/vms/")?.parse().ok())
            .collect()
    }
}

/// HA state inside a guest status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HaStatus {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub managed: bool,
    #[serde(default)]
    pub state: Option<String>,
}

/// `GET /nodes/{node}/{qemu|lxc}/{vmid}/status/current`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GuestStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// qemu only: QMP state (`running`, `paused`, `prelaunch`, …).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    /// qemu only: agent enabled in the config.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub agent: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ha: Option<HaStatus>,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub template: Option<bool>,
}

impl GuestStatus {
    /// True if running and (for qemu) not paused/suspended.
    pub fn is_running(&self) -> bool {
        self.status == "running" && self.qmpstatus.as_deref().is_none_or(|q| q == "running")
    }
}

/// Task run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Stopped,
}

/// How a stopped task ended (`PVE::Tools::upid_status_is_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// `OK`.
    Ok,
    /// `WARNINGS: n`.
    Warnings(u32),
    /// Anything else: the error text (`job errors`, `unexpected status`, …).
    Failed(String),
}

impl TaskOutcome {
    /// Classify an exitstatus string.
    pub fn from_exitstatus(s: &str) -> TaskOutcome {
        if s == "OK" {
            return TaskOutcome::Ok;
        }
        if let Some(n) = s.strip_prefix("WARNINGS: ")
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = n.parse()
        {
            return TaskOutcome::Warnings(n);
        }
        TaskOutcome::Failed(s.to_string())
    }

    /// True for `Ok` and `Warnings`.
    pub fn is_success(&self) -> bool {
        !matches!(self, TaskOutcome::Failed(_))
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskStatus {
    pub status: TaskState,
    /// Only when stopped.
    #[serde(default)]
    pub exitstatus: Option<String>,
    pub upid: String,
    pub node: String,
    #[serde(rename = "type")]
    pub wtype: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: String,
    /// `user@realm`; for token tasks the token is in `tokenid`.
    pub user: String,
    #[serde(default)]
    pub tokenid: Option<String>,
    #[serde(deserialize_with = "lenient::i64")]
    pub starttime: i64,
    #[serde(deserialize_with = "lenient::u32")]
    pub pid: u32,
    #[serde(deserialize_with = "lenient::u64")]
    pub pstart: u64,
}

impl TaskStatus {
    /// `None` while running; the classified exitstatus once stopped. A stopped task without an
    /// exitstatus is a failure.
    pub fn outcome(&self) -> Option<TaskOutcome> {
        match self.status {
            TaskState::Running => None,
            TaskState::Stopped => Some(match &self.exitstatus {
                Some(s) => TaskOutcome::from_exitstatus(s),
                None => TaskOutcome::Failed("stopped without exitstatus".into()),
            }),
        }
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log` (`n` is 1-based).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskLogLine {
    #[serde(deserialize_with = "lenient::u64")]
    pub n: u64,
    #[serde(default)]
    pub t: String,
}

/// A page of a task log with the file's total line count (envelope `total`; absent means 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLog {
    pub lines: Vec<TaskLogLine>,
    pub total: u64,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TaskListEntry {
    pub upid: String,
    pub node: String,
    #[serde(rename = "type")]
    pub wtype: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: String,
    pub user: String,
    #[serde(default)]
    pub tokenid: Option<String>,
    #[serde(deserialize_with = "lenient::i64")]
    pub starttime: i64,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub endtime: Option<i64>,
    /// The exitstatus for finished tasks; absent (or `RUNNING`-like) for active ones.
    #[serde(default)]
    pub status: Option<String>,
}

impl TaskListEntry {
    /// The parsed UPID, if well formed.
    pub fn parsed_upid(&self) -> Option<Upid> {
        self.upid.parse().ok()
    }
}

/// What a task-starting call returned: a UPID, or a plain string (vzdump's `"OK"` when no
/// local guest was included, e.g. after a migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStart {
    Started(Upid),
    NoTask(String),
}

impl<'de> Deserialize<'de> for TaskStart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(match s.parse::<Upid>() {
            Ok(u) => TaskStart::Started(u),
            Err(_) => TaskStart::NoTask(s),
        })
    }
}

/// One entry of `GET …/{qemu|lxc}/{vmid}/snapshot`; the last one is the `current` pseudo-entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub snaptime: Option<i64>,
    #[serde(default)]
    pub parent: Option<String>,
    /// `prepare` / `delete` while an operation is in progress.
    #[serde(default)]
    pub snapstate: Option<String>,
    /// qemu only.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub vmstate: Option<bool>,
    /// Only on `current`.
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub running: Option<bool>,
}

impl Snapshot {
    /// The "You are here!" pseudo-entry.
    pub fn is_current(&self) -> bool {
        self.name == "current"
    }
}

/// `GET /nodes/{node}/storage/{storage}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StorageStatus {
    #[serde(rename = "type", default)]
    pub stype: String,
    /// Comma list, e.g. `backup,iso`.
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub shared: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub avail: Option<u64>,
}

impl StorageStatus {
    /// Whether the content list includes `kind` (e.g. `backup`).
    pub fn has_content(&self, kind: &str) -> bool {
        self.content.split(',').any(|c| c.trim() == kind)
    }
}

/// One item of `GET /nodes/{node}/storage/{storage}/content?content=backup`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BackupVolume {
    pub volid: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub ctime: i64,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub size: u64,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
    /// `vma.zst`, `tar.zst`, `pbs-vm`, `pbs-ct`, …
    #[serde(default)]
    pub format: String,
    /// `qemu` / `lxc` / `unknown`.
    #[serde(default)]
    pub subtype: Option<String>,
    /// First line of the notes.
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub protected: Option<bool>,
}

impl BackupVolume {
    /// Protected flag, absent meaning false.
    pub fn is_protected(&self) -> bool {
        self.protected.unwrap_or(false)
    }
}

/// Prune dry-run mark.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneMark {
    Keep,
    Remove,
    Protected,
    Renamed,
    #[serde(other)]
    Other,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/prunebackups`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PruneEntry {
    pub volid: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub ctime: i64,
    pub mark: PruneMark,
    /// `qemu` | `lxc` | `openvz` | `unknown`.
    #[serde(rename = "type", default)]
    pub btype: String,
    #[serde(default, deserialize_with = "lenient::opt_u32")]
    pub vmid: Option<u32>,
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
