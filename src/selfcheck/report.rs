//! The self-check's input and report types, the verdict and its exit-code mapping. Pure data.

use std::collections::BTreeMap;

use serde::Serialize;

use super::privileges::Features;
use crate::pve::types::GuestType;

/// Exit code: every row passed.
pub const EXIT_OK: i32 = 0;
/// Exit code: the check could not run (PVE unreachable, TLS failure, token rejected).
pub const EXIT_COULD_NOT_RUN: i32 = 1;
/// Exit code: at least one row failed.
pub const EXIT_VIOLATION: i32 = 4;

/// A VMID that no real guest uses (the largest valid VMID): a probe for it proves the 403 comes
/// before any existence check.
pub const IMPOSSIBLE_VMID: u32 = 999_999_999;

/// How the API certificate is verified (from `[pve] ca-file` / `fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TlsMode {
    /// Path of the configured CA bundle.
    pub ca_file: Option<String>,
    /// Pinned leaf fingerprint, `AA:BB:…`.
    pub fingerprint: Option<String>,
}

impl TlsMode {
    /// Human description, `None` when nothing verifies the certificate.
    pub fn describe(&self) -> Option<String> {
        match (&self.ca_file, &self.fingerprint) {
            (Some(ca), Some(fp)) => Some(format!("CA {ca}, else pinned SHA-256 fingerprint {fp}")),
            (Some(ca), None) => Some(format!("CA {ca}")),
            (None, Some(fp)) => Some(format!("pinned SHA-256 fingerprint {fp}")),
            (None, None) => None,
        }
    }
}

/// What the self-check needs to know, taken from the config and identity by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfCheckInput {
    pub vmid: u32,
    /// The node the guest was last seen on; the check follows `/cluster/resources` if it moved.
    pub node: String,
    pub guest_type: GuestType,
    pub backup_storage: String,
    pub features: Features,
    /// `[self-check] foreign-vmids`.
    pub foreign_vmids: Vec<u32>,
    pub tls: TlsMode,
}

/// The five checks of the issue, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// 1: read-only calls on the own guest work and every needed privilege is present.
    OwnGuest,
    /// 2: read-only probes on foreign VMIDs answer 403 naming that VMID.
    ForeignRefused,
    /// 3: no privilege outside the agent's paths, no dangerous privilege anywhere.
    Scope,
    /// 4: `/cluster/resources` shows no guest but the own one.
    Visibility,
    /// 5: the API is reached through a verified certificate.
    Tls,
}

impl Check {
    pub fn number(self) -> u8 {
        match self {
            Check::OwnGuest => 1,
            Check::ForeignRefused => 2,
            Check::Scope => 3,
            Check::Visibility => 4,
            Check::Tls => 5,
        }
    }

    /// The metric label / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::OwnGuest => "own-guest",
            Check::ForeignRefused => "foreign-refused",
            Check::Scope => "scope",
            Check::Visibility => "visibility",
            Check::Tls => "tls",
        }
    }
}

/// One line of the permission test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: Check,
    /// Method and path, e.g. `GET /nodes/pve1/qemu/102/status/current`.
    pub call: String,
    /// The privilege (and path) this row is about.
    pub privilege: String,
    pub expected: String,
    pub observed: String,
    pub pass: bool,
    /// The answer did not allow a verdict (transport error): counts as "could not run", not as
    /// a violation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
    /// What to run or change to fix a failing row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Row {
    pub(crate) fn new(
        check: Check,
        call: impl Into<String>,
        privilege: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
        pass: bool,
    ) -> Row {
        Row {
            check,
            call: call.into(),
            privilege: privilege.into(),
            expected: expected.into(),
            observed: observed.into(),
            pass,
            inconclusive: false,
            fix: None,
        }
    }

    pub(crate) fn with_fix(mut self, fix: impl Into<String>) -> Row {
        self.fix = Some(fix.into());
        self
    }

    pub(crate) fn inconclusive(mut self) -> Row {
        self.inconclusive = true;
        self
    }
}

/// The overall result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Violation,
    CouldNotRun,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => EXIT_OK,
            Verdict::Violation => EXIT_VIOLATION,
            Verdict::CouldNotRun => EXIT_COULD_NOT_RUN,
        }
    }

    /// Any definite failure is a violation; otherwise an inconclusive row or a fatal error means
    /// the check could not run.
    pub fn from_rows(rows: &[Row], error: Option<&str>) -> Verdict {
        if rows.iter().any(|r| !r.pass && !r.inconclusive) {
            Verdict::Violation
        } else if error.is_some() || rows.iter().any(|r| !r.pass) {
            Verdict::CouldNotRun
        } else {
            Verdict::Pass
        }
    }
}

/// The whole self-check result, serialisable as the `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfCheckReport {
    pub verdict: Verdict,
    pub exit_code: i32,
    pub token_id: String,
    pub vmid: u32,
    /// The node the own guest was found on.
    pub node: String,
    pub rows: Vec<Row>,
    /// Why the check could not run, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SelfCheckReport {
    /// Build from rows (sorted by check, stable) and an optional fatal error.
    pub fn new(
        token_id: String,
        vmid: u32,
        node: String,
        mut rows: Vec<Row>,
        error: Option<String>,
    ) -> SelfCheckReport {
        rows.sort_by_key(|r| r.check);
        let verdict = Verdict::from_rows(&rows, error.as_deref());
        SelfCheckReport {
            verdict,
            exit_code: verdict.exit_code(),
            token_id,
            vmid,
            node,
            rows,
            error,
        }
    }

    /// Failing rows.
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.pass)
    }

    /// Failing rows per check (all five checks present), for
    /// `felhom_selfcheck_violations{check}`.
    pub fn violations_by_check(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> = [
            Check::OwnGuest,
            Check::ForeignRefused,
            Check::Scope,
            Check::Visibility,
            Check::Tls,
        ]
        .into_iter()
        .map(|c| (c.as_str(), 0))
        .collect();
        for r in self.failures() {
            *m.entry(r.check.as_str()).or_default() += 1;
        }
        m
    }

    /// One line per failing row, for `/status` and `/healthz` (e.g. `[foreign-refused] GET
    /// /nodes/pve1/qemu/102/status/current: VM.Audit on /vms/102: expected 403 naming /vms/102,
    /// observed 200 OK`), plus the fatal error if the check could not run.
    pub fn violation_messages(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .failures()
            .map(|r| {
                format!(
                    "[{}] {}: {}: expected {}, observed {}",
                    r.check.as_str(),
                    r.call,
                    r.privilege,
                    r.expected,
                    r.observed
                )
            })
            .collect();
        if let Some(e) = &self.error {
            out.push(format!("self-check could not run: {e}"));
        }
        out
    }
}
