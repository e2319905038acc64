//! Pure evaluation of API answers into self-check rows: which VMIDs and nodes to probe, what a
//! probe answer means, what `/access/permissions` and `/cluster/resources` reveal. No I/O.
//!
//! Invariants: a foreign probe passes only on a 403 naming exactly `/vms/<that vmid>`; a 2xx or
//! the 500 "Configuration file … does not exist" (the permission check passed) is a violation;
//! an answer that proves nothing (transport, TLS, 401) makes the row inconclusive, never a pass.

use std::collections::BTreeSet;

use super::privileges::{self, Features};
use super::report::{Check, IMPOSSIBLE_VMID, Row, TlsMode};
use crate::pve::ApiError;
use crate::pve::types::{ClusterResource, Permissions};

/// The smallest and largest valid VMIDs (`pve-vmid`).
const VMID_RANGE: std::ops::RangeInclusive<u32> = 100..=IMPOSSIBLE_VMID;

/// Who is checked, for fix messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub vmid: u32,
    pub storage: String,
    pub token_id: String,
    pub features: Features,
}

impl Subject {
    /// `user@realm` of the token.
    pub fn user(&self) -> &str {
        self.token_id
            .rsplit_once('!')
            .map_or(self.token_id.as_str(), |(u, _)| u)
    }

    /// The token name after `!`.
    pub fn token_name(&self) -> &str {
        self.token_id.rsplit_once('!').map_or("", |(_, n)| n)
    }

    fn own_path(&self) -> String {
        format!("/vms/{}", self.vmid)
    }

    fn storage_path(&self) -> String {
        format!("/storage/{}", self.storage)
    }

    /// The exact command that grants the agent role on `path` to the token and its user.
    pub fn grant_command(&self, path: &str) -> String {
        format!(
            "pveum acl modify {path} --users {} --tokens '{}' --roles {}",
            self.user(),
            self.token_id,
            privileges::role_name(self.features)
        )
    }

    /// How to re-scope an over-wide token. The same text for every row, so the table prints
    /// it once.
    pub fn rescope_advice(&self) -> String {
        format!(
            "re-scope the token to {own} and {store}: find the ACLs granting more (`pveum acl list`: on the path, on a parent such as /vms or / with propagate, or on a pool), remove them for the token and its user (`pveum acl delete <path> --users {user} --tokens '{tok}' --roles <role>`), keep the token privilege-separated (`pveum user token modify {user} {name} --privsep 1`; a non-privsep token has all of its user's rights), and grant only the agent role (`felhom-agent setup-commands`)",
            user = self.user(),
            tok = self.token_id,
            name = self.token_name(),
            own = self.own_path(),
            store = self.storage_path(),
        )
    }
}

/// The VMIDs probed as foreign: the configured ones plus own−1, own+1, 100 and
/// [`IMPOSSIBLE_VMID`]; only valid VMIDs, never the own one; ascending, unique.
pub fn foreign_vmids(own: u32, configured: &[u32]) -> Vec<u32> {
    let derived = [
        own.checked_sub(1),
        own.checked_add(1),
        Some(100),
        Some(IMPOSSIBLE_VMID),
    ];
    let set: BTreeSet<u32> = configured
        .iter()
        .copied()
        .chain(derived.into_iter().flatten())
        .filter(|v| VMID_RANGE.contains(v) && *v != own)
        .collect();
    set.into_iter().collect()
}

/// The nodes to probe on: the own node first, then every other node entry of
/// `/cluster/resources`, sorted.
pub fn probe_nodes(own_node: &str, resources: &[ClusterResource]) -> Vec<String> {
    let others: BTreeSet<&str> = resources
        .iter()
        .filter(|r| r.rtype == "node")
        .filter_map(|r| r.node.as_deref())
        .filter(|n| *n != own_node)
        .collect();
    std::iter::once(own_node.to_string())
        .chain(others.into_iter().map(str::to_string))
        .collect()
}

/// Errors that say nothing about permissions: the row is inconclusive.
pub fn is_inconclusive(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Unauthorized { .. }
            | ApiError::Transport { .. }
            | ApiError::Tls { .. }
            | ApiError::Config { .. }
    )
}

/// Errors that stop the whole check before any row can be judged.
pub fn is_fatal(e: &ApiError) -> bool {
    is_inconclusive(e)
}

/// Short status + message of an answer, for the `observed` column.
pub fn describe<T>(r: &Result<T, ApiError>) -> String {
    match r {
        Ok(_) => "200 OK".to_string(),
        Err(e) => describe_error(e),
    }
}

fn describe_error(e: &ApiError) -> String {
    match e {
        ApiError::Forbidden { message, .. } => format!("403 {message}"),
        ApiError::NotFound { message, .. } => format!("500 {message}"),
        ApiError::Param { message, .. } => format!("400 {message}"),
        ApiError::Server {
            status, message, ..
        } => format!("{status} {message}"),
        ApiError::Unauthorized { .. } => "401 authentication failed".to_string(),
        ApiError::Decode { message, .. } => format!("2xx with an unreadable body: {message}"),
        ApiError::Transport { message, .. } => format!("no answer: {message}"),
        ApiError::Tls { message, .. } => format!("TLS failure: {message}"),
        ApiError::Config { message } => format!("client not usable: {message}"),
    }
}

/// Check 1: a read-only call on the own guest must succeed.
pub fn own_read_row<T>(subject: &Subject, call: String, r: &Result<T, ApiError>) -> Row {
    let own = subject.own_path();
    let row = Row::new(
        Check::OwnGuest,
        call,
        format!("VM.Audit on {own}"),
        "200",
        describe(r),
        r.is_ok(),
    );
    match r {
        Ok(_) => row,
        Err(e) if is_inconclusive(e) => row.inconclusive(),
        Err(ApiError::Forbidden { .. }) => row.with_fix(subject.grant_command(&own)),
        Err(e) => row.with_fix(e.to_string()),
    }
}

/// The distinct ACL paths the enabled features need privileges on, in [`privileges::PRIVILEGES`]
/// order.
pub fn needed_paths(subject: &Subject) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for need in privileges::required(subject.features) {
        let path = need.scope.path(subject.vmid, &subject.storage);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// The call that reads the effective privileges on `path` (PVE resolves inheritance, pools and
/// the privsep intersection itself).
pub fn permissions_call(path: &str) -> String {
    format!("GET /access/permissions?path={path}")
}

/// Check 1: every privilege the enabled features need. `effective` holds the answer of
/// `GET /access/permissions?path=<path>` for each of [`needed_paths`].
pub fn privilege_rows(
    subject: &Subject,
    effective: &[(String, Result<Permissions, ApiError>)],
) -> Vec<Row> {
    privileges::required(subject.features)
        .into_iter()
        .map(|need| {
            let path = need.scope.path(subject.vmid, &subject.storage);
            let call = permissions_call(&path);
            let privilege = format!("{} on {path}", need.privilege);
            let expected = format!("present (needed for {})", need.feature.as_str());
            let answer = effective.iter().find(|(p, _)| *p == path).map(|(_, r)| r);
            match answer {
                Some(Ok(p)) if p.has(&path, need.privilege) => {
                    Row::new(Check::OwnGuest, call, privilege, expected, "present", true)
                }
                Some(Ok(_)) | None => Row::new(
                    Check::OwnGuest,
                    call,
                    privilege,
                    expected,
                    "missing",
                    false,
                )
                .with_fix(format!(
                    "{} (role {} from `felhom-agent setup-commands` has {}; a privilege-separated token needs the ACL for both the token and its user)",
                    subject.grant_command(&path),
                    privileges::role_name(subject.features),
                    need.privilege
                )),
                Some(Err(e)) => {
                    let row = Row::new(
                        Check::OwnGuest,
                        call,
                        privilege,
                        expected,
                        describe_error(e),
                        false,
                    );
                    if is_inconclusive(e) {
                        row.inconclusive()
                    } else {
                        row.with_fix(e.to_string())
                    }
                }
            }
        })
        .collect()
}

/// Check 2: one read-only probe of a foreign VMID.
pub fn probe_row<T>(subject: &Subject, call: String, vmid: u32, r: &Result<T, ApiError>) -> Row {
    let path = format!("/vms/{vmid}");
    let row = |observed: String, pass: bool| {
        Row::new(
            Check::ForeignRefused,
            call.clone(),
            format!("VM.Audit on {path}"),
            format!("403 naming {path}"),
            observed,
            pass,
        )
    };
    match r {
        Err(ApiError::Forbidden {
            path: Some(p),
            ..
        }) if *p == path => row(describe(r), true),
        Err(e) if is_inconclusive(e) => row(describe(r), false).inconclusive(),
        Err(ApiError::NotFound { message, .. }) if message.starts_with("Configuration file") => {
            row(
                format!("{} (so the permission check passed)", describe(r)),
                false,
            )
            .with_fix(subject.rescope_advice())
        }
        Ok(_) | Err(ApiError::Decode { .. }) => {
            row(describe(r), false).with_fix(subject.rescope_advice())
        }
        Err(_) => row(describe(r), false).with_fix(format!(
            "PVE checks VM.Audit on {path} before anything else and must refuse with a 403 naming it; this answer does not prove the token is refused. Compare the token's ACLs with docs/permissions.md"
        )),
    }
}

/// Check 3: privileges outside `/vms/<own>` and `/storage/<backup storage>`, and dangerous
/// privileges anywhere.
pub fn scope_rows(subject: &Subject, perms: &Result<Permissions, ApiError>) -> Vec<Row> {
    const CALL: &str = "GET /access/permissions";
    let perms = match perms {
        Ok(p) => p,
        Err(e) => {
            let row = Row::new(
                Check::Scope,
                CALL,
                "all",
                "readable",
                describe_error(e),
                false,
            );
            return vec![if is_inconclusive(e) {
                row.inconclusive()
            } else {
                row.with_fix(e.to_string())
            }];
        }
    };
    let allowed = [subject.own_path(), subject.storage_path()];
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for (path, privs) in &perms.0 {
        if privs.is_empty() {
            continue;
        }
        let names: Vec<&str> = privs.keys().map(String::as_str).collect();
        summary.push(format!("{path}: {}", names.join(", ")));
        if !allowed.contains(path) {
            rows.push(
                Row::new(
                    Check::Scope,
                    CALL,
                    names.join(", "),
                    format!("no privileges on {path}"),
                    format!("{} privilege(s) on {path}", names.len()),
                    false,
                )
                .with_fix(subject.rescope_advice()),
            );
        }
        let danger: Vec<(&str, &str)> = names
            .iter()
            .filter_map(|n| privileges::dangerous(n).map(|d| (*n, d.why)))
            .collect();
        if !danger.is_empty() {
            let observed: Vec<String> = danger
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            rows.push(
                Row::new(
                    Check::Scope,
                    CALL,
                    danger
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                    "no dangerous privilege on any path",
                    format!("on {path}: {}", observed.join("; ")),
                    false,
                )
                .with_fix(subject.rescope_advice()),
            );
        }
    }
    if rows.is_empty() {
        rows.push(Row::new(
            Check::Scope,
            CALL,
            "all",
            format!(
                "privileges only on {} and {}; no dangerous privilege",
                allowed[0], allowed[1]
            ),
            if summary.is_empty() {
                "no privileges".to_string()
            } else {
                summary.join("; ")
            },
            true,
        ));
    }
    rows
}

/// Check 4: `/cluster/resources` lists the own guest and no other.
pub fn visibility_row(
    subject: &Subject,
    resources: &Result<Vec<ClusterResource>, ApiError>,
) -> Row {
    const CALL: &str = "GET /cluster/resources";
    let expected = format!("only guest {}", subject.vmid);
    let res = match resources {
        Ok(r) => r,
        Err(e) => {
            let row = Row::new(
                Check::Visibility,
                CALL,
                "VM.Audit (filters the list)",
                expected,
                describe_error(e),
                false,
            );
            return if is_inconclusive(e) {
                row.inconclusive()
            } else {
                row.with_fix(e.to_string())
            };
        }
    };
    let guests: Vec<&ClusterResource> = res
        .iter()
        .filter(|r| r.guest_type().is_some() && r.vmid.is_some())
        .collect();
    let own_seen = guests.iter().any(|g| g.vmid == Some(subject.vmid));
    let others: Vec<String> = guests
        .iter()
        .filter(|g| g.vmid != Some(subject.vmid))
        .map(|g| g.id.clone())
        .collect();
    let observed = if guests.is_empty() {
        "no guest".to_string()
    } else {
        guests
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = Row::new(
        Check::Visibility,
        CALL,
        "VM.Audit (filters the list)",
        expected,
        observed,
        own_seen && others.is_empty(),
    );
    if !others.is_empty() {
        row.with_fix(format!(
            "the token has VM.Audit on {} (an ACL on /vms, / or a pool /pool/<p> they belong to): {}",
            others.join(", "),
            subject.rescope_advice()
        ))
    } else if !own_seen {
        row.with_fix(subject.grant_command(&subject.own_path()))
    } else {
        row
    }
}

/// Check 5: how the certificate was verified. `error` is the fatal error of the first call, if
/// any.
pub fn tls_row(tls: &TlsMode, error: Option<&ApiError>) -> Row {
    let expected = "certificate verified by a CA or a pinned fingerprint";
    let call = "TLS handshake";
    match (tls.describe(), error) {
        (None, _) => Row::new(
            Check::Tls,
            call,
            "-",
            expected,
            "neither [pve] ca-file nor [pve] fingerprint is set",
            false,
        )
        .with_fix("set [pve] fingerprint (pvenode cert info) or [pve] ca-file"),
        (Some(_), Some(e @ ApiError::Tls { .. })) => {
            Row::new(Check::Tls, call, "-", expected, describe_error(e), false)
                .inconclusive()
                .with_fix(e.to_string())
        }
        (Some(_), Some(e @ (ApiError::Transport { .. } | ApiError::Config { .. }))) => Row::new(
            Check::Tls,
            call,
            "-",
            expected,
            format!("not reached: {}", describe_error(e)),
            false,
        )
        .inconclusive(),
        (Some(mode), _) => Row::new(Check::Tls, call, "-", expected, mode, true),
    }
}
