//! The I/O half of the self-check: the read-only API calls, in order, fed to [`super::evaluate`].
//!
//! Invariant: only `GET`s are ever sent (the client's `get`), never a mutating request, and in
//! particular nothing for a foreign VMID but `status/current` and the snapshot list.

use serde_json::Value;

use super::evaluate::{
    Subject, foreign_vmids, is_fatal, needed_paths, own_read_row, privilege_rows, probe_nodes,
    probe_row, scope_rows, tls_row, visibility_row,
};
use super::report::{SelfCheckInput, SelfCheckReport};
use crate::pve::PveClient;
use crate::pve::types::{ClusterResource, GuestType, Permissions};

/// The read-only endpoints probed for foreign VMIDs (both check `VM.Audit` on `/vms/{vmid}`
/// before anything else).
const PROBES: [&str; 2] = ["status/current", "snapshot"];

/// Runs checks 1–5 against the API and returns the report. Never fails: a PVE that cannot be
/// reached (transport, TLS, 401) gives verdict `could-not-run` with the reason in `error`.
pub async fn run(client: &PveClient, input: SelfCheckInput) -> SelfCheckReport {
    let subject = Subject {
        vmid: input.vmid,
        storage: input.backup_storage.clone(),
        token_id: client.token_id().to_string(),
        features: input.features,
    };
    let mut rows = Vec::new();

    let resources: Result<Vec<ClusterResource>, _> = client.get("/cluster/resources", &[]).await;
    if let Err(e) = &resources
        && is_fatal(e)
    {
        rows.push(tls_row(&input.tls, Some(e)));
        return SelfCheckReport::new(
            subject.token_id,
            input.vmid,
            input.node,
            rows,
            Some(e.to_string()),
        );
    }
    rows.push(tls_row(&input.tls, None));

    // Follow the guest if it moved since the caller last looked.
    let own = resources.as_ref().ok().and_then(|r| {
        r.iter()
            .find(|g| g.guest_type().is_some() && g.vmid == Some(input.vmid))
    });
    let node = own
        .and_then(|g| g.node.clone())
        .unwrap_or_else(|| input.node.clone());
    let kind = own
        .and_then(ClusterResource::guest_type)
        .unwrap_or(input.guest_type);
    let vmid = input.vmid.to_string();

    for ep in ["status/current", "config", "snapshot"] {
        let path = format!("/nodes/{node}/{}/{vmid}/{ep}", kind.as_str());
        let r = client.get::<Value>(path.as_str(), &[]).await;
        rows.push(own_read_row(&subject, format!("GET {path}"), &r));
    }

    let mut effective = Vec::new();
    for path in needed_paths(&subject) {
        let r: Result<Permissions, _> = client
            .get("/access/permissions", &[("path", path.clone())])
            .await;
        effective.push((path, r));
    }
    rows.extend(privilege_rows(&subject, &effective));
    let perms: Result<Permissions, _> = client.get("/access/permissions", &[]).await;

    let nodes = probe_nodes(&node, resources.as_deref().unwrap_or(&[]));
    for foreign in foreign_vmids(input.vmid, &input.foreign_vmids) {
        for n in &nodes {
            for k in [GuestType::Qemu, GuestType::Lxc] {
                for ep in PROBES {
                    let path = format!("/nodes/{n}/{}/{foreign}/{ep}", k.as_str());
                    let r = client.get::<Value>(path.as_str(), &[]).await;
                    rows.push(probe_row(&subject, format!("GET {path}"), foreign, &r));
                }
            }
        }
    }

    rows.extend(scope_rows(&subject, &perms));
    rows.push(visibility_row(&subject, &resources));

    SelfCheckReport::new(subject.token_id, input.vmid, node, rows, None)
}
