//! The built-in privileges and roles of PVE 9, as literal tables.
//!
//! Source: pve-access-control `src/PVE/AccessControl.pm` (`$privgroups`, `create_roles`), with the
//! PVE 9 changes of the July 2025 series "replace ambiguously named VM.Monitor privilege"
//! (Fiona Ebner, pve-devel 2025-07-17: "add VM.GuestAgent privileges", "privileges: drop
//! VM.Monitor"), checked against the expected strings of `src/test/perm-test1.pl` (PVEVMAdmin on
//! `/vms/300`, Administrator on `/vms/400`) and the role list of pve-docs `pveum.adoc`.
//!
//! How PVE derives the roles (`create_roles`): each privilege category has `root`, `admin`, `user`
//! and `audit` lists. `PVE<Cat>Admin` = admin+user+audit; `PVE<Cat>User` = user+audit (only if the
//! category has user privileges); `PVEAdmin` = every admin+user+audit privilege except
//! `Mapping.Modify`; `PVEAuditor` = every audit privilege; `PVETemplateUser` = VM.Clone+VM.Audit;
//! `Administrator` = every valid privilege (root ones and `Permissions.Modify` included);
//! `NoAccess` = nothing. `root` privileges (`Sys.PowerMgmt`, `Sys.Modify`, `Sys.Incoming`,
//! `Sys.AccessNetwork`, `Realm.Allocate`) and `Permissions.Modify` are only in `Administrator`.
//!
//! Invariant: every privilege named in [`BUILTIN_ROLES`] is in [`ALL_PRIVILEGES`], which is sorted.

/// Every valid privilege of PVE 9 (pve-access-control `$valid_privs`), sorted.
pub const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// The 23 VM privileges (PVE 9: admin + user + audit of the `VM` category).
const VM_ALL: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Every built-in role and its privileges (`Administrator` is [`ALL_PRIVILEGES`]).
///
/// Expanded by hand from the derivation rule in the module docs; the tests cross-check it.
pub const BUILTIN_ROLES: &[(&str, &[&str])] = &[
    ("Administrator", ALL_PRIVILEGES),
    ("NoAccess", &[]),
    ("PVEAdmin", PVE_ADMIN),
    (
        "PVEAuditor",
        &[
            "Datastore.Audit",
            "Mapping.Audit",
            "Pool.Audit",
            "SDN.Audit",
            "Sys.Audit",
            "VM.Audit",
            "VM.GuestAgent.Audit",
        ],
    ),
    (
        "PVEDatastoreAdmin",
        &[
            "Datastore.Allocate",
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
            "Datastore.Audit",
        ],
    ),
    (
        "PVEDatastoreUser",
        &["Datastore.AllocateSpace", "Datastore.Audit"],
    ),
    (
        "PVEMappingAdmin",
        &["Mapping.Audit", "Mapping.Modify", "Mapping.Use"],
    ),
    ("PVEMappingUser", &["Mapping.Audit", "Mapping.Use"]),
    ("PVEPoolAdmin", &["Pool.Allocate", "Pool.Audit"]),
    ("PVEPoolUser", &["Pool.Audit"]),
    ("PVESDNAdmin", &["SDN.Allocate", "SDN.Audit", "SDN.Use"]),
    ("PVESDNUser", &["SDN.Audit", "SDN.Use"]),
    ("PVESysAdmin", &["Sys.Audit", "Sys.Console", "Sys.Syslog"]),
    ("PVETemplateUser", &["VM.Audit", "VM.Clone"]),
    (
        "PVEUserAdmin",
        &["Group.Allocate", "Realm.AllocateUser", "User.Modify"],
    ),
    ("PVEVMAdmin", VM_ALL),
    (
        "PVEVMUser",
        &[
            "VM.Audit",
            "VM.Backup",
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.GuestAgent.Audit",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ],
    ),
];

/// `PVEAdmin`: every admin/user/audit privilege of every category except `Mapping.Modify`, i.e.
/// everything but `Permissions.Modify`, the `root` privileges and `Mapping.Modify`.
const PVE_ADMIN: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Use",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Whether `priv_name` is a valid PVE 9 privilege.
pub fn is_valid_privilege(priv_name: &str) -> bool {
    ALL_PRIVILEGES.binary_search(&priv_name).is_ok()
}

/// Whether `roleid` names a built-in (special) role.
pub fn is_builtin_role(roleid: &str) -> bool {
    BUILTIN_ROLES.iter().any(|(r, _)| *r == roleid)
}
