//! Injected faults, per route or global: latency, error statuses (500/502/503/595/596 …),
//! connection resets, hanging responses, and closing the connection after the response.
//!
//! A fault matches a request by method and by a path pattern (a template such as
//! `/nodes/{node}/tasks/{upid}/status`, or a prefix of the concrete path ending in `*`); `count`
//! limits how many requests it hits (none = until removed).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FaultSpec {
    #[serde(default)]
    pub method: Option<String>,
    /// Template (exact) or concrete-path prefix ending in `*`; none = every API request.
    #[serde(default)]
    pub path: Option<String>,
    pub kind: FaultKind,
    #[serde(default)]
    pub count: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultKind {
    /// Delay, then serve normally.
    Latency { ms: u64 },
    /// Answer with this status and reason (e.g. 596 "Broken pipe"); the API is not reached.
    Status { code: u16, message: String },
    /// Reset the TCP connection (RST) instead of answering.
    Reset,
    /// Never answer (until the client gives up).
    Hang,
    /// Serve normally but close the connection right after (like an idle close racing).
    Close,
    /// Answer with this status and JSON body instead of the API (e.g. a bare `{"data":"OK"}`
    /// from vzdump to provoke the "no task started" path deterministically).
    Respond { code: u16, body: serde_json::Value },
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub id: u64,
    pub spec: FaultSpec,
    pub hits: u32,
}

impl Fault {
    pub fn matches(&self, method: &str, path: &str, template: Option<&str>) -> bool {
        if let Some(c) = self.spec.count
            && self.hits >= c
        {
            return false;
        }
        if let Some(m) = &self.spec.method
            && !m.eq_ignore_ascii_case(method)
        {
            return false;
        }
        match &self.spec.path {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => template == Some(p.as_str()) || path == p,
            },
        }
    }
}

/// Picks the first matching fault (in insertion order) and counts the hit.
pub fn take(
    faults: &mut [Fault],
    method: &str,
    path: &str,
    template: Option<&str>,
) -> Option<FaultKind> {
    let f = faults
        .iter_mut()
        .find(|f| f.matches(method, path, template))?;
    f.hits += 1;
    Some(f.spec.kind.clone())
}
