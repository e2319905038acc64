//! The one definition of which PVE privilege each agent feature needs, and of the privileges the
//! self-check treats as dangerous anywhere.
//!
//! [`PRIVILEGES`] drives three things that must never drift apart: the role `setup-commands`
//! creates ([`role_privileges`], [`role_name`]), the privileges check 1 of the self-check expects
//! ([`required`]), and the table in `docs/permissions.md` ([`markdown_table`], compared verbatim
//! by a test). Pure data, no I/O.

use serde::Serialize;

/// An agent feature that needs API privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Feature {
    /// vzdump backups of the own guest to the backup storage, listing and pruning own backups.
    /// Always enabled.
    Backup,
    /// Pre-backup snapshots (`[snapshots]` enabled).
    Snapshots,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Backup => "backup",
            Feature::Snapshots => "snapshots",
        }
    }
}

/// Which features the configuration enables (backup is always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Features {
    pub snapshots: bool,
}

impl Features {
    /// Whether `f` is enabled.
    pub fn has(self, f: Feature) -> bool {
        match f {
            Feature::Backup => true,
            Feature::Snapshots => self.snapshots,
        }
    }
}

/// The ACL path a privilege is needed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// `/vms/<own vmid>`.
    Guest,
    /// `/storage/<backup storage>`.
    BackupStorage,
}

impl Scope {
    /// The concrete ACL path.
    pub fn path(self, vmid: u32, storage: &str) -> String {
        match self {
            Scope::Guest => format!("/vms/{vmid}"),
            Scope::BackupStorage => format!("/storage/{storage}"),
        }
    }

    /// The path pattern for documentation.
    pub fn pattern(self) -> &'static str {
        match self {
            Scope::Guest => "/vms/<vmid>",
            Scope::BackupStorage => "/storage/<backup storage>",
        }
    }
}

/// One privilege a feature needs, where, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrivilegeNeed {
    pub feature: Feature,
    pub privilege: &'static str,
    pub scope: Scope,
    pub why: &'static str,
}

/// Every privilege the agent can need. `VM.PowerMgmt` belongs here only once a feature needs it;
/// none does today (vzdump `mode=stop` shuts the guest down inside the task with `VM.Backup`).
pub const PRIVILEGES: &[PrivilegeNeed] = &[
    PrivilegeNeed {
        feature: Feature::Backup,
        privilege: "VM.Audit",
        scope: Scope::Guest,
        why: "read the own guest: find it in /cluster/resources (its current node), status/current, config, snapshot list",
    },
    PrivilegeNeed {
        feature: Feature::Backup,
        privilege: "VM.Backup",
        scope: Scope::Guest,
        why: "vzdump checks it inside the backup task; with Datastore.AllocateSpace it lets the token list, prune and delete this guest's backups only",
    },
    PrivilegeNeed {
        feature: Feature::Backup,
        privilege: "Datastore.AllocateSpace",
        scope: Scope::BackupStorage,
        why: "vzdump checks it before starting (write the archive); needed to list, prune and delete own backups on that storage",
    },
    PrivilegeNeed {
        feature: Feature::Snapshots,
        privilege: "VM.Snapshot",
        scope: Scope::Guest,
        why: "create and delete the agent's own snapshots (no storage privilege is checked for snapshots)",
    },
];

/// The privileges the enabled features need, in [`PRIVILEGES`] order.
pub fn required(features: Features) -> Vec<&'static PrivilegeNeed> {
    PRIVILEGES
        .iter()
        .filter(|p| features.has(p.feature))
        .collect()
}

/// The privileges of the agent role: every required privilege once, in [`PRIVILEGES`] order.
pub fn role_privileges(features: Features) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in required(features) {
        if !out.contains(&p.privilege) {
            out.push(p.privilege);
        }
    }
    out
}

/// The role name: one per feature set, so guests with different features never rewrite each
/// other's role (`FelhomAgent` for backup only, `FelhomAgentSnapshot` with snapshots).
pub fn role_name(features: Features) -> String {
    let mut name = String::from("FelhomAgent");
    if features.snapshots {
        name.push_str("Snapshot");
    }
    name
}

/// A privilege (or privilege family, `Prefix.*`) that turns a guest compromise into a host or
/// cluster compromise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dangerous {
    pub pattern: &'static str,
    pub why: &'static str,
}

/// Flagged by the self-check on any path, including the agent's own.
pub const DANGEROUS: &[Dangerous] = &[
    Dangerous {
        pattern: "Sys.Console",
        why: "a root shell on the PVE node (termproxy/vncshell)",
    },
    Dangerous {
        pattern: "Sys.Modify",
        why: "change node network, time, DNS, certificates, APT and subscription settings",
    },
    Dangerous {
        pattern: "Sys.PowerMgmt",
        why: "reboot or shut down the node and every guest on it",
    },
    Dangerous {
        pattern: "Permissions.Modify",
        why: "grant itself or anyone any role (full takeover)",
    },
    Dangerous {
        pattern: "User.Modify",
        why: "create, change and delete users and their tokens, change group memberships",
    },
    Dangerous {
        pattern: "Realm.*",
        why: "add or change authentication realms, assign users to realms",
    },
    Dangerous {
        pattern: "VM.Allocate",
        why: "create guests and destroy them together with their disks",
    },
    Dangerous {
        pattern: "VM.Config.*",
        why: "reconfigure guests: disks, network, boot options, cloud-init users and SSH keys",
    },
    Dangerous {
        pattern: "VM.Console",
        why: "console (keyboard and screen) of guests, i.e. their login prompts and boot loaders",
    },
    Dangerous {
        pattern: "VM.Migrate",
        why: "move guests between nodes",
    },
    Dangerous {
        pattern: "VM.Monitor",
        why: "QEMU human monitor (PVE 8): raw control of the VM process",
    },
    Dangerous {
        pattern: "Datastore.Allocate",
        why: "create, change and delete storages and delete any volume, including other guests' backups",
    },
    Dangerous {
        pattern: "Pool.Allocate",
        why: "create and change pools, whose ACLs grant rights on every member guest and storage",
    },
    Dangerous {
        pattern: "SDN.*",
        why: "change the cluster's software-defined networks, or attach guests to other tenants' networks",
    },
    Dangerous {
        pattern: "Mapping.*",
        why: "use or define host PCI/USB/directory mappings: host hardware and host directories in guests",
    },
];

/// The [`DANGEROUS`] entry matching `privilege`, if any (`Prefix.*` matches `Prefix.` + anything).
pub fn dangerous(privilege: &str) -> Option<&'static Dangerous> {
    DANGEROUS
        .iter()
        .find(|d| match d.pattern.strip_suffix('*') {
            Some(prefix) => privilege.starts_with(prefix),
            None => privilege == d.pattern,
        })
}

/// The feature → privilege → path → why table of `docs/permissions.md`, generated from
/// [`PRIVILEGES`].
pub fn markdown_table() -> String {
    let mut out = String::from("| feature | privilege | on path | why |\n|---|---|---|---|\n");
    for p in PRIVILEGES {
        out.push_str(&format!(
            "| {} | `{}` | `{}` | {} |\n",
            p.feature.as_str(),
            p.privilege,
            p.scope.pattern(),
            p.why
        ));
    }
    out
}

/// The dangerous-privilege table of `docs/permissions.md`, generated from [`DANGEROUS`].
pub fn dangerous_markdown_table() -> String {
    let mut out = String::from("| privilege | why it is dangerous |\n|---|---|\n");
    for d in DANGEROUS {
        out.push_str(&format!("| `{}` | {} |\n", d.pattern, d.why));
    }
    out
}
