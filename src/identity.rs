//! Who am I: the guest's VMID, current node and type, discovered from what the scoped token can
//! see, and proof that this machine really is that guest (a token for the wrong guest must never
//! back up someone else).
//!
//! Discovery: `/cluster/resources?type=vm` lists only guests the token has `VM.Audit` on; a
//! correctly scoped token sees exactly one. `[guest] vmid` selects among several and is checked.
//! Proof: qemu → SMBIOS UUID (`/sys/class/dmi/id/product_uuid`, root-only) against `smbios1`,
//! else MAC addresses (`/sys/class/net/*/address`) against `netN`; lxc → MACs against `hwaddr`.

use std::path::{Path, PathBuf};

use crate::pve::guest_config::GuestConfig;
use crate::pve::types::{ClusterResource, GuestType, Permissions};
use crate::pve::{ApiError, PveClient};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub vmid: u32,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub name: Option<String>,
    /// How the guest was proven to be this machine.
    pub proof: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Scope(String),
    #[error("{0}")]
    Mismatch(String),
}

/// What this machine says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalFacts {
    /// Lower-case SMBIOS system UUID, when readable (root only).
    pub product_uuid: Option<String>,
    /// Upper-case MAC addresses of the local interfaces (loopback excluded).
    pub macs: Vec<String>,
}

impl LocalFacts {
    /// Reads `<sysfs>/class/dmi/id/product_uuid` and `<sysfs>/class/net/*/address`. The root is
    /// `/sys` unless `FELHOM_AGENT_SYSFS_ROOT` points elsewhere (tests give a fake tree).
    pub fn gather() -> LocalFacts {
        let root = std::env::var_os("FELHOM_AGENT_SYSFS_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys"));
        LocalFacts::gather_from(&root)
    }

    pub fn gather_from(sys: &Path) -> LocalFacts {
        let product_uuid = std::fs::read_to_string(sys.join("class/dmi/id/product_uuid"))
            .ok()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty());
        let mut macs = Vec::new();
        if let Ok(rd) = std::fs::read_dir(sys.join("class/net")) {
            for e in rd.flatten() {
                if e.file_name() == "lo" {
                    continue;
                }
                if let Ok(m) = std::fs::read_to_string(e.path().join("address")) {
                    let m = m.trim().to_ascii_uppercase();
                    if !m.is_empty() && m != "00:00:00:00:00:00" {
                        macs.push(m);
                    }
                }
            }
        }
        macs.sort();
        macs.dedup();
        LocalFacts { product_uuid, macs }
    }
}

/// Picks the guest from what the token sees. Pure.
pub fn pick_guest(
    visible: &[ClusterResource],
    perms: Option<&Permissions>,
    configured: Option<u32>,
) -> Result<ClusterResource, String> {
    let guests: Vec<&ClusterResource> = visible
        .iter()
        .filter(|r| r.guest_type().is_some() && r.vmid.is_some())
        .collect();
    if let Some(v) = configured {
        return guests.iter().find(|g| g.vmid == Some(v)).map(|g| (*g).clone()).ok_or_else(|| {
            format!(
                "[guest] vmid = {v}, but the token cannot see guest {v} in /cluster/resources: grant VM.Audit on /vms/{v} to the token (and its user), or fix [guest] vmid"
            )
        });
    }
    match guests.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let hint = perms
                .map(|p| p.vmids())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    format!(
                        " (its ACLs name /vms/{:?} but VM.Audit is missing there)",
                        v
                    )
                })
                .unwrap_or_default();
            Err(format!(
                "the token sees no guest in /cluster/resources{hint}: grant the agent role (with VM.Audit) on /vms/<this guest's vmid>, or set [guest] vmid"
            ))
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .filter_map(|g| g.vmid)
                .map(|v| v.to_string())
                .collect();
            Err(format!(
                "the token sees {} guests ({}): it is scoped wider than this guest; set [guest] vmid and re-scope the token (see `felhom-agent setup-commands`)",
                many.len(),
                ids.join(", ")
            ))
        }
    }
}

/// Proves the guest config belongs to this machine. Pure.
pub fn verify(
    kind: GuestType,
    vmid: u32,
    config: &GuestConfig,
    local: &LocalFacts,
) -> Result<String, String> {
    if kind == GuestType::Qemu
        && let (Some(want), Some(have)) = (config.smbios_uuid(), local.product_uuid.as_deref())
    {
        let want = want.to_ascii_lowercase();
        return if want == have {
            Ok(format!("SMBIOS UUID {have} matches smbios1 of VM {vmid}"))
        } else {
            Err(format!(
                "this machine is not VM {vmid}: its SMBIOS UUID is {have}, but VM {vmid}'s smbios1 uuid is {want}; the token or [guest] vmid belongs to another guest"
            ))
        };
    }
    let theirs: Vec<String> = config.net_interfaces().into_iter().map(|n| n.mac).collect();
    if theirs.is_empty() {
        return Err(format!(
            "cannot prove this machine is guest {vmid}: its config has no network interface MAC{} to compare",
            if kind == GuestType::Qemu {
                " and the SMBIOS UUID is not readable here (root only)"
            } else {
                ""
            }
        ));
    }
    if let Some(m) = theirs.iter().find(|m| local.macs.contains(m)) {
        return Ok(format!("MAC {m} matches guest {vmid}'s network config"));
    }
    Err(format!(
        "this machine is not guest {vmid}: its MAC addresses are [{}], guest {vmid}'s are [{}]; the token or [guest] vmid belongs to another guest",
        local.macs.join(", "),
        theirs.join(", ")
    ))
}

/// Discovers and proves the identity against the API.
pub async fn discover(
    client: &PveClient,
    configured: Option<u32>,
    local: &LocalFacts,
) -> Result<Identity, IdentityError> {
    let visible: Vec<ClusterResource> = client
        .get("/cluster/resources", &[("type", "vm".to_string())])
        .await?;
    let perms = if visible.iter().any(|r| r.guest_type().is_some()) {
        None
    } else {
        client
            .get::<Permissions>("/access/permissions", &[])
            .await
            .ok()
    };
    let g = pick_guest(&visible, perms.as_ref(), configured).map_err(IdentityError::Scope)?;
    let vmid = g.vmid.expect("picked guests have a vmid");
    let kind = g.guest_type().expect("picked guests have a type");
    let node = g.node.clone().ok_or_else(|| {
        IdentityError::Scope(format!("/cluster/resources names no node for guest {vmid}"))
    })?;
    let vm = vmid.to_string();
    let config: GuestConfig = client
        .get(
            ["nodes", node.as_str(), kind.as_str(), vm.as_str(), "config"],
            &[],
        )
        .await?;
    let proof = verify(kind, vmid, &config, local).map_err(IdentityError::Mismatch)?;
    Ok(Identity {
        vmid,
        node,
        kind,
        name: g.name.clone(),
        proof,
    })
}

/// The guest's current node (it may have migrated since the last call).
pub async fn current_node(client: &PveClient, vmid: u32) -> Result<String, IdentityError> {
    let visible: Vec<ClusterResource> = client
        .get("/cluster/resources", &[("type", "vm".to_string())])
        .await?;
    visible
        .iter()
        .find(|r| r.vmid == Some(vmid) && r.guest_type().is_some())
        .and_then(|r| r.node.clone())
        .ok_or_else(|| IdentityError::Scope(format!("guest {vmid} is no longer visible in /cluster/resources (deleted, or VM.Audit revoked)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(vmid: u32, t: &str, node: &str) -> ClusterResource {
        serde_json::from_value(serde_json::json!({"id": format!("{t}/{vmid}"), "type": t, "vmid": vmid, "node": node, "name": "x"})).unwrap()
    }

    fn cfg(v: serde_json::Value) -> GuestConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn picks_the_single_visible_guest_and_checks_a_configured_vmid() {
        let vis = vec![
            res(101, "qemu", "pve1"),
            serde_json::from_value(
                serde_json::json!({"id": "node/pve1", "type": "node", "node": "pve1"}),
            )
            .unwrap(),
        ];
        assert_eq!(pick_guest(&vis, None, None).unwrap().vmid, Some(101));
        assert_eq!(
            pick_guest(&vis, None, Some(101)).unwrap().node.as_deref(),
            Some("pve1")
        );
        let e = pick_guest(&vis, None, Some(102)).unwrap_err();
        assert!(
            e.contains("cannot see guest 102") && e.contains("VM.Audit on /vms/102"),
            "{e}"
        );
        let two = vec![res(101, "qemu", "pve1"), res(102, "qemu", "pve1")];
        let e = pick_guest(&two, None, None).unwrap_err();
        assert!(e.contains("sees 2 guests (101, 102)"), "{e}");
        assert!(
            pick_guest(&[], None, None)
                .unwrap_err()
                .contains("sees no guest")
        );
    }

    #[test]
    fn smbios_uuid_decides_for_qemu_and_names_both_values() {
        let c = cfg(
            serde_json::json!({"smbios1": "uuid=5B0F8D3E-3C57-4A8E-9D7B-0C1C2A3E4F51", "net0": "virtio=BC:24:11:AA:BB:01,bridge=vmbr0"}),
        );
        let me = LocalFacts {
            product_uuid: Some("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51".into()),
            macs: vec![],
        };
        assert!(
            verify(GuestType::Qemu, 101, &c, &me)
                .unwrap()
                .contains("SMBIOS UUID")
        );
        let other = LocalFacts {
            product_uuid: Some("00000000-0000-0000-0000-000000000001".into()),
            macs: vec!["BC:24:11:AA:BB:01".into()],
        };
        let e = verify(GuestType::Qemu, 101, &c, &other).unwrap_err();
        assert!(
            e.contains("00000000-0000-0000-0000-000000000001")
                && e.contains("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51"),
            "{e}"
        );
    }

    #[test]
    fn macs_decide_without_a_readable_uuid_and_for_lxc() {
        let q = cfg(
            serde_json::json!({"smbios1": "uuid=5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51", "net0": "virtio=BC:24:11:AA:BB:01,bridge=vmbr0"}),
        );
        let me = LocalFacts {
            product_uuid: None,
            macs: vec!["BC:24:11:AA:BB:01".into()],
        };
        assert!(verify(GuestType::Qemu, 101, &q, &me).is_ok());
        let l = cfg(
            serde_json::json!({"net0": "name=eth0,bridge=vmbr0,hwaddr=bc:24:11:cc:dd:03,ip=dhcp"}),
        );
        let me = LocalFacts {
            product_uuid: None,
            macs: vec!["BC:24:11:CC:DD:03".into()],
        };
        assert!(verify(GuestType::Lxc, 103, &l, &me).is_ok());
        let stranger = LocalFacts {
            product_uuid: None,
            macs: vec!["02:00:00:00:00:09".into()],
        };
        let e = verify(GuestType::Lxc, 103, &l, &stranger).unwrap_err();
        assert!(
            e.contains("02:00:00:00:00:09") && e.contains("BC:24:11:CC:DD:03"),
            "{e}"
        );
    }

    #[test]
    fn gathers_from_a_sysfs_tree() {
        let dir = std::env::temp_dir().join(format!("felhom-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("class/dmi/id")).unwrap();
        std::fs::create_dir_all(dir.join("class/net/eth0")).unwrap();
        std::fs::create_dir_all(dir.join("class/net/lo")).unwrap();
        std::fs::write(
            dir.join("class/dmi/id/product_uuid"),
            "5B0F8D3E-3C57-4A8E-9D7B-0C1C2A3E4F51\n",
        )
        .unwrap();
        std::fs::write(dir.join("class/net/eth0/address"), "bc:24:11:aa:bb:01\n").unwrap();
        std::fs::write(dir.join("class/net/lo/address"), "00:00:00:00:00:00\n").unwrap();
        let f = LocalFacts::gather_from(&dir);
        assert_eq!(
            f.product_uuid.as_deref(),
            Some("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51")
        );
        assert_eq!(f.macs, ["BC:24:11:AA:BB:01"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
