//! Errors of the PVE API client, shaped so callers can branch on them.
//!
//! Owns [`ApiError`] and the pure classification of an HTTP error response
//! ([`classify_response`]) by status, reason phrase and JSON body (reference §6, §7):
//! * 401 → `Unauthorized`; 403 → `Forbidden` with `(path, privilege)` parsed from
//!   "Permission check failed (/vms/102, VM.Audit)"; 400 → `Param` with the `errors` map;
//! * 500 "Configuration file '…' does not exist" / unknown node → `NotFound`;
//! * 502/503/504 and the proxy pseudo-codes 595–599 → retryable `Transport`;
//! * any other status → `Server`.
//!
//! The body `message` is preferred to the reason phrase (older PVE sends only the latter).
//! Invariant: no variant ever holds request headers, so the token secret cannot leak here.

use std::collections::BTreeMap;

/// An error from one API call. `call` is e.g. `GET /nodes/pve1/qemu/101/status/current`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401: the token was not accepted.
    #[error(
        "{call}: authentication failed (401): the API token was rejected (wrong token id or secret, token expired, or user/token disabled); check [pve] token_id and secret"
    )]
    Unauthorized { call: String },
    /// 403: a privilege is missing.
    #[error("{call}: {message} (403); {}", forbidden_hint(.path.as_deref(), .privilege.as_deref()))]
    Forbidden {
        call: String,
        path: Option<String>,
        privilege: Option<String>,
        message: String,
    },
    /// 400: PVE rejected parameters.
    #[error(
        "{call}: {message} (400): {}; check the configured values (node, storage, vmid) or report a felhom-agent bug",
        join_errors(.errors)
    )]
    Param {
        call: String,
        errors: BTreeMap<String, String>,
        message: String,
    },
    /// The guest or node is not where we asked (wrong node after a migration, deleted guest,
    /// unknown node name).
    #[error(
        "{call}: {message}; the guest or node is not here (migrated or removed?): re-resolve the node via /cluster/resources and check [pve] vmid"
    )]
    NotFound { call: String, message: String },
    /// Any other error status from PVE.
    #[error("{call}: PVE returned {status} {message}")]
    Server {
        call: String,
        status: u16,
        message: String,
    },
    /// The request did not complete: connect failure, reset, timeout, proxy 5xx.
    #[error("{call}: {message}{}", if *.retryable { " (transient; retried for reads)" } else { "" })]
    Transport {
        call: String,
        message: String,
        retryable: bool,
    },
    /// The TLS handshake failed; `presented` is the server certificate fingerprint if known.
    #[error("{call}: TLS handshake failed: {message}")]
    Tls {
        call: String,
        presented: Option<String>,
        message: String,
    },
    /// The response could not be read as the expected JSON.
    #[error(
        "{call}: unexpected response: {message}; is this a supported PVE version? otherwise report a felhom-agent bug"
    )]
    Decode { call: String, message: String },
    /// The client settings are unusable (bad URL, no TLS trust, bad CA file, bad token id).
    #[error("invalid PVE client settings: {message}")]
    Config { message: String },
}

fn forbidden_hint(path: Option<&str>, privilege: Option<&str>) -> String {
    match (path, privilege) {
        (Some(p), Some(v)) => format!(
            "the API token lacks {v} on {p}; grant a role with it to the token (pveum acl modify {p} --tokens <token-id> --roles <role>)"
        ),
        _ => "the API token lacks a required privilege; compare its ACLs (pveum acl list) with the documented role".to_string(),
    }
}

fn join_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return "no parameter details given".to_string();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// Whether repeating the same (idempotent) request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Transport {
                retryable: true,
                ..
            }
        )
    }

    /// The call this error belongs to (empty for `Config`).
    pub fn call(&self) -> &str {
        match self {
            ApiError::Unauthorized { call }
            | ApiError::Forbidden { call, .. }
            | ApiError::Param { call, .. }
            | ApiError::NotFound { call, .. }
            | ApiError::Server { call, .. }
            | ApiError::Transport { call, .. }
            | ApiError::Tls { call, .. }
            | ApiError::Decode { call, .. } => call,
            ApiError::Config { .. } => "",
        }
    }
}

/// Parse `Permission check failed (/vms/102, VM.Audit)` into `(path, privilege)`.
/// "any" checks keep the `|`-joined list; a bare `Permission check failed` gives `None`.
pub fn parse_permission_message(msg: &str) -> Option<(String, String)> {
    let rest = msg.trim().strip_prefix("Permission check failed (")?;
    let inner = rest.strip_suffix(')')?;
    let (path, privilege) = inner.split_once(", ")?;
    if !path.starts_with('/') || privilege.is_empty() {
        return None;
    }
    Some((path.to_string(), privilege.to_string()))
}

fn is_not_found_message(msg: &str) -> bool {
    (msg.starts_with("Configuration file '") && msg.ends_with("' does not exist"))
        || (msg.starts_with("hostname lookup '") && msg.contains("' failed"))
        || msg.starts_with("no such cluster node")
}

/// Classify a non-2xx response. `reason` is the HTTP reason phrase if the client could read it;
/// `body` the raw response body (possibly empty or not JSON).
pub fn classify_response(call: &str, status: u16, reason: Option<&str>, body: &[u8]) -> ApiError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let body_message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.trim_end().to_string())
        .filter(|m| !m.is_empty());
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let message = body_message
        .or_else(|| reason.map(str::to_string))
        .unwrap_or_else(|| format!("HTTP status {status}"));
    let call = call.to_string();
    match status {
        401 => ApiError::Unauthorized { call },
        403 => {
            let parsed = parse_permission_message(&message);
            ApiError::Forbidden {
                call,
                path: parsed.as_ref().map(|p| p.0.clone()),
                privilege: parsed.map(|p| p.1),
                message,
            }
        }
        400 => {
            let errors = json
                .as_ref()
                .and_then(|j| j.get("errors"))
                .and_then(|e| e.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                serde_json::Value::String(s) => s.trim_end().to_string(),
                                other => other.to_string(),
                            };
                            (k.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            ApiError::Param {
                call,
                errors,
                message,
            }
        }
        500 if is_not_found_message(&message) => ApiError::NotFound { call, message },
        502..=504 => ApiError::Transport {
            call,
            message: format!("HTTP {status} {message}"),
            retryable: true,
        },
        595..=599 => {
            let hint = if status == 596 {
                " (cluster proxy could not reach the node; re-resolve the node if this persists)"
            } else {
                " (cluster proxy error)"
            };
            ApiError::Transport {
                call,
                message: format!("HTTP {status} {message}{hint}"),
                retryable: true,
            }
        }
        _ => ApiError::Server {
            call,
            status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "GET /nodes/pve1/qemu/102/status/current";

    #[test]
    fn forbidden_from_body_message() {
        let body = br#"{"data":null,"message":"Permission check failed (/vms/102, VM.Audit)\n"}"#;
        let e = classify_response(
            CALL,
            403,
            Some("Permission check failed (/vms/102, VM.Audit)"),
            body,
        );
        assert_eq!(
            e,
            ApiError::Forbidden {
                call: CALL.into(),
                path: Some("/vms/102".into()),
                privilege: Some("VM.Audit".into()),
                message: "Permission check failed (/vms/102, VM.Audit)".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "GET /nodes/pve1/qemu/102/status/current: Permission check failed (/vms/102, VM.Audit) (403); the API token lacks VM.Audit on /vms/102; grant a role with it to the token (pveum acl modify /vms/102 --tokens <token-id> --roles <role>)"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn forbidden_from_reason_only_old_pve() {
        let e = classify_response(
            CALL,
            403,
            Some("Permission check failed (/storage/x, Datastore.Audit|Datastore.AllocateSpace)"),
            br#"{"data":null}"#,
        );
        match e {
            ApiError::Forbidden {
                path, privilege, ..
            } => {
                assert_eq!(path.as_deref(), Some("/storage/x"));
                assert_eq!(
                    privilege.as_deref(),
                    Some("Datastore.Audit|Datastore.AllocateSpace")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forbidden_combined_check_has_no_path() {
        let e = classify_response(CALL, 403, Some("Permission check failed"), b"");
        assert_eq!(
            e,
            ApiError::Forbidden {
                call: CALL.into(),
                path: None,
                privilege: None,
                message: "Permission check failed".into(),
            }
        );
        assert!(e.to_string().ends_with("the API token lacks a required privilege; compare its ACLs (pveum acl list) with the documented role"));
    }

    #[test]
    fn unauthorized_empty_body() {
        let e = classify_response(CALL, 401, Some("Authentication failed!"), b"");
        assert_eq!(e, ApiError::Unauthorized { call: CALL.into() });
        assert!(
            e.to_string().starts_with(
                "GET /nodes/pve1/qemu/102/status/current: authentication failed (401)"
            )
        );
    }

    #[test]
    fn param_errors_map() {
        let body = br#"{"data":null,"errors":{"storage":"No such storage.\n","vmid":"property is missing and it is not optional"},"message":"Parameter verification failed.\n"}"#;
        let e = classify_response("GET /nodes/pve1/storage/nas/status", 400, None, body);
        let mut errors = BTreeMap::new();
        errors.insert("storage".to_string(), "No such storage.".to_string());
        errors.insert(
            "vmid".to_string(),
            "property is missing and it is not optional".to_string(),
        );
        assert_eq!(
            e,
            ApiError::Param {
                call: "GET /nodes/pve1/storage/nas/status".into(),
                errors,
                message: "Parameter verification failed.".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "GET /nodes/pve1/storage/nas/status: Parameter verification failed. (400): storage: No such storage.; vmid: property is missing and it is not optional; check the configured values (node, storage, vmid) or report a felhom-agent bug"
        );
    }

    #[test]
    fn wrong_node_is_not_found() {
        let body = br#"{"data":null,"message":"Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist\n"}"#;
        let e = classify_response(
            CALL,
            500,
            Some("Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist"),
            body,
        );
        assert_eq!(
            e,
            ApiError::NotFound {
                call: CALL.into(),
                message: "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist"
                    .into()
            }
        );
        let e = classify_response(
            CALL,
            500,
            Some(
                "hostname lookup 'pve9' failed - failed to get address info for: pve9: Name or service not known",
            ),
            b"",
        );
        assert!(matches!(e, ApiError::NotFound { .. }));
    }

    #[test]
    fn other_500_is_server() {
        let e = classify_response(
            "POST /nodes/pve1/qemu/101/snapshot",
            500,
            Some("unable to use snapshot name 'current' (reserved name)"),
            br#"{"data":null,"message":"unable to use snapshot name 'current' (reserved name)\n"}"#,
        );
        assert_eq!(
            e,
            ApiError::Server {
                call: "POST /nodes/pve1/qemu/101/snapshot".into(),
                status: 500,
                message: "unable to use snapshot name 'current' (reserved name)".into()
            }
        );
        assert!(!e.is_retryable());
        let e = classify_response("GET /x", 501, Some("Method 'GET /x' not implemented"), b"");
        assert_eq!(
            e.to_string(),
            "GET /x: PVE returned 501 Method 'GET /x' not implemented"
        );
    }

    #[test]
    fn proxy_codes_are_retryable_transport() {
        for status in [502u16, 503, 504, 595, 596, 597, 598, 599] {
            let e = classify_response(CALL, status, Some("Broken pipe"), b"");
            assert!(e.is_retryable(), "{status}");
            assert!(matches!(e, ApiError::Transport { .. }));
        }
        let e = classify_response(CALL, 596, Some("Broken pipe"), b"");
        assert_eq!(
            e.to_string(),
            "GET /nodes/pve1/qemu/102/status/current: HTTP 596 Broken pipe (cluster proxy could not reach the node; re-resolve the node if this persists) (transient; retried for reads)"
        );
    }

    #[test]
    fn missing_reason_and_body() {
        let e = classify_response(CALL, 500, None, b"garbage");
        assert_eq!(
            e,
            ApiError::Server {
                call: CALL.into(),
                status: 500,
                message: "HTTP status 500".into()
            }
        );
    }

    #[test]
    fn permission_parser() {
        assert_eq!(
            parse_permission_message("Permission check failed (/nodes/pve1, Sys.Audit)\n"),
            Some(("/nodes/pve1".into(), "Sys.Audit".into()))
        );
        assert_eq!(parse_permission_message("Permission check failed"), None);
        assert_eq!(parse_permission_message("something else (/a, B)"), None);
    }
}
