//! `setup-commands`: the operator's runbook to provision this guest's agent with least privilege.
//!
//! Produces exact, idempotent `pveum` commands for a PVE node (a role with exactly
//! [`privileges::role_privileges`], an API-only user, a privilege-separated token, ACLs on
//! `/vms/<vmid>` and `/storage/<storage>` for both the user and the token, since a privsep
//! token's rights are the intersection of both), then the commands that put the secret into the
//! guest with mode 600. Every re-run converges to the same state: `add … || modify …` for
//! objects that may exist, `acl modify` is idempotent by nature. Pure.

use serde::Serialize;

use super::privileges::{self, Features};

/// Default token name when the config has no token id.
pub const DEFAULT_TOKEN_NAME: &str = "agent";
/// Default secret file in the guest (the config example's `token-secret-file`).
pub const DEFAULT_SECRET_FILE: &str = "/etc/felhom-agent/token";

/// What the runbook is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupInput {
    pub vmid: u32,
    pub backup_storage: String,
    pub features: Features,
    /// `[pve] token-id` if configured; else `felhom-<vmid>@pve!agent`.
    pub token_id: Option<String>,
    /// `[pve] token-secret-file` if configured; `None` means the systemd credential `pve-token`,
    /// loaded from [`DEFAULT_SECRET_FILE`].
    pub secret_file: Option<String>,
}

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Host {
    /// Any node of the PVE cluster, as root.
    PveNode,
    /// Inside the guest, as root.
    Guest,
}

/// One command and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupStep {
    pub on: Host,
    pub comment: String,
    pub command: String,
}

/// The whole runbook (the `--json` form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupPlan {
    pub role: String,
    pub privileges: Vec<&'static str>,
    pub user: String,
    pub token_id: String,
    pub acl_paths: Vec<String>,
    pub secret_file: String,
    pub steps: Vec<SetupStep>,
}

fn step(on: Host, comment: impl Into<String>, command: impl Into<String>) -> SetupStep {
    SetupStep {
        on,
        comment: comment.into(),
        command: command.into(),
    }
}

/// The runbook as data.
pub fn setup_plan(input: &SetupInput) -> SetupPlan {
    let token_id = input
        .token_id
        .clone()
        .unwrap_or_else(|| format!("felhom-{}@pve!{DEFAULT_TOKEN_NAME}", input.vmid));
    let (user, name) = token_id
        .rsplit_once('!')
        .map(|(u, n)| (u.to_string(), n.to_string()))
        .unwrap_or_else(|| (token_id.clone(), DEFAULT_TOKEN_NAME.to_string()));
    let role = privileges::role_name(input.features);
    let privs = privileges::role_privileges(input.features);
    let privs_arg = privs.join(",");
    let vm_path = format!("/vms/{}", input.vmid);
    let store_path = format!("/storage/{}", input.backup_storage);
    let secret_file = input
        .secret_file
        .clone()
        .unwrap_or_else(|| DEFAULT_SECRET_FILE.to_string());
    let secret_dir = std::path::Path::new(&secret_file)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let vmid = input.vmid;

    let mut steps = vec![
        step(
            Host::PveNode,
            format!(
                "role {role} with exactly the privileges the enabled features need (re-running resets it to this set)"
            ),
            format!(
                "pveum role add {role} --privs \"{privs_arg}\" 2>/dev/null || pveum role modify {role} --privs \"{privs_arg}\""
            ),
        ),
        step(
            Host::PveNode,
            "an API-only user (no password: it cannot log in to the GUI)",
            format!(
                "pveum user add {user} --comment \"felhom-agent of guest {vmid}\" 2>/dev/null || pveum user modify {user} --comment \"felhom-agent of guest {vmid}\""
            ),
        ),
        step(
            Host::PveNode,
            format!(
                "a privilege-separated token; pveum prints its secret (\"value\") ONCE: copy it now. If the token existed, its secret stays valid and is not shown again (to rotate: pveum user token remove {user} {name}, then re-run)"
            ),
            format!(
                "pveum user token add {user} {name} --privsep 1 --comment \"felhom-agent of guest {vmid}\" || pveum user token modify {user} {name} --privsep 1"
            ),
        ),
    ];
    for path in [&vm_path, &store_path] {
        steps.push(step(
            Host::PveNode,
            format!("{role} on {path} for the user (a privsep token never exceeds its user)"),
            format!("pveum acl modify {path} --users {user} --roles {role}"),
        ));
        steps.push(step(
            Host::PveNode,
            format!("{role} on {path} for the token"),
            format!("pveum acl modify {path} --tokens '{token_id}' --roles {role}"),
        ));
    }
    steps.push(step(
        Host::PveNode,
        format!("check: the token's effective permissions are exactly {vm_path} and {store_path}"),
        format!("pveum user token permissions {user} {name}"),
    ));

    steps.push(step(
        Host::Guest,
        "directory for the secret",
        format!("install -d -m 755 {secret_dir}"),
    ));
    steps.push(step(
        Host::Guest,
        "an empty secret file only root can read (mode 600)",
        format!("install -m 600 /dev/null {secret_file}"),
    ));
    let credential = if input.secret_file.is_none() {
        format!(
            "; [pve] token-secret-file is not set, so the service must load this file as systemd credential pve-token (LoadCredential=pve-token:{secret_file})"
        )
    } else {
        String::new()
    };
    steps.push(step(
        Host::Guest,
        format!(
            "paste the secret, press Enter, then Ctrl-D (keeps it out of the shell history){credential}"
        ),
        format!("cat > {secret_file}"),
    ));
    steps.push(step(
        Host::Guest,
        format!("prove the token reaches guest {vmid} and {store_path} and nothing else"),
        "felhom-agent self-check",
    ));

    SetupPlan {
        role,
        privileges: privs,
        user,
        token_id,
        acl_paths: vec![vm_path, store_path],
        secret_file,
        steps,
    }
}

/// The runbook as shell lines: a `# comment` before every command, node steps first, then the
/// guest steps under their own heading.
pub fn setup_commands(input: &SetupInput) -> Vec<String> {
    let plan = setup_plan(input);
    let mut out = vec![format!(
        "# on any node of the PVE cluster, as root: provision {} for guest {}",
        plan.token_id, input.vmid
    )];
    let mut in_guest = false;
    for s in &plan.steps {
        if s.on == Host::Guest && !in_guest {
            in_guest = true;
            out.push(String::new());
            out.push(format!("# then inside guest {}, as root:", input.vmid));
        }
        out.push(format!("# {}", s.comment));
        out.push(s.command.clone());
    }
    out
}
