//! The HTTP client for `/api2/json` with an API token.
//!
//! Owns transport behaviour (reference §7, §9):
//! * HTTPS only, HTTP/1.1 only, TLS trust from [`super::tls`] (CA chain, else pinned leaf);
//! * idle pooled connections are dropped after 3 s, below pveproxy's 5 s keep-alive timeout;
//! * `Authorization: PVEAPIToken=<id>=<secret>` on every request, marked sensitive; the secret
//!   never appears in `Debug` output or in any [`ApiError`];
//! * path segments are percent-encoded; GET/DELETE parameters go in the query string, never a
//!   body; POST/PUT send `application/x-www-form-urlencoded`;
//! * only GETs are retried (capped exponential backoff + jitter, plus one immediate retry after
//!   "connection closed before message completed"); POST/PUT/DELETE are never retried;
//! * response bodies are capped (default 16 MiB, [`DEFAULT_MAX_BODY`]): a larger declared
//!   Content-Length is refused before reading, a chunked body is dropped at the cap;
//! * every HTTP attempt is counted as ok or error.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, classify_response};
use super::lenient;
use super::retry::{Jitter, RetryPolicy, Sleeper, TokioSleeper};
use super::tls::{PresentedFingerprint, client_config, format_fingerprint};
use super::types::{TaskLog, TaskLogLine, TaskStatus, Version};
use super::upid::Upid;

/// Default response body limit.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// How long an idle pooled connection is kept (pveproxy closes after 5 s).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the client needs; built by the caller from the agent config.
#[derive(Clone)]
pub struct ClientSettings {
    /// `https://host:port`, no path.
    pub base_url: String,
    /// Full token id `user@realm!tokenname`.
    pub token_id: String,
    /// Token secret (UUID). Never printed.
    pub secret: String,
    /// Pinned SHA-256 of the node's leaf certificate.
    pub fingerprint: Option<[u8; 32]>,
    /// PEM CA bundle to validate the chain against.
    pub ca_pem: Option<Vec<u8>>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("base_url", &self.base_url)
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .field(
                "fingerprint",
                &self.fingerprint.as_ref().map(format_fingerprint),
            )
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// An API path relative to `/api2/json`, kept as unencoded segments.
///
/// Build it from segments (`["nodes", node, "storage", sid, "content", volid]`) whenever a
/// segment may contain `/` (volume ids); a `&str` is split on `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath(Vec<String>);

/// Everything except RFC 3986 unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl ApiPath {
    /// From explicit segments.
    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ApiPath(segments.into_iter().map(Into::into).collect())
    }

    /// `/seg/seg` percent-encoded, for the URL.
    pub fn encoded(&self) -> String {
        self.0
            .iter()
            .map(|s| format!("/{}", utf8_percent_encode(s, SEGMENT)))
            .collect()
    }

    /// `/seg/seg` as written, for messages.
    pub fn display(&self) -> String {
        self.0.iter().map(|s| format!("/{s}")).collect()
    }
}

impl From<&str> for ApiPath {
    fn from(s: &str) -> Self {
        ApiPath::new(s.split('/').filter(|p| !p.is_empty()))
    }
}

impl From<&String> for ApiPath {
    fn from(s: &String) -> Self {
        ApiPath::from(s.as_str())
    }
}

impl<const N: usize> From<[&str; N]> for ApiPath {
    fn from(s: [&str; N]) -> Self {
        ApiPath::new(s)
    }
}

impl From<&[&str]> for ApiPath {
    fn from(s: &[&str]) -> Self {
        ApiPath::new(s.iter().copied())
    }
}

/// Request counters for metrics (one count per HTTP attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestCounts {
    pub ok: u64,
    pub error: u64,
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    error: AtomicU64,
}

/// The `{"data": …, "total": …}` envelope.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    data: T,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    total: Option<u64>,
}

/// A failed attempt plus whether the server closed the connection before answering.
struct Failure {
    error: ApiError,
    closed_early: bool,
}

/// Typed PVE API client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct PveClient {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    token_id: String,
    presented: PresentedFingerprint,
    timeout: Duration,
    retry: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
    jitter: Jitter,
    counters: Counters,
    max_body: usize,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base)
            .field("token_id", &self.token_id)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn config_err(message: impl Into<String>) -> ApiError {
    ApiError::Config {
        message: message.into(),
    }
}

impl PveClient {
    /// Validate the settings and build the client. Fails on a non-https URL, a malformed token
    /// id, an unusable secret, or missing/invalid TLS trust.
    pub fn new(settings: ClientSettings) -> Result<PveClient, ApiError> {
        let url = reqwest::Url::parse(settings.base_url.trim())
            .map_err(|e| config_err(format!("[pve] url '{}': {e}", settings.base_url)))?;
        if url.scheme() != "https" {
            return Err(config_err(format!(
                "[pve] url '{}' must use https",
                settings.base_url
            )));
        }
        if url.host_str().is_none()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(config_err(format!(
                "[pve] url '{}' must be https://host[:port] without path, query or credentials",
                settings.base_url
            )));
        }
        let base = format!("{}/api2/json", url.as_str().trim_end_matches('/'));

        let tid = settings.token_id.trim();
        let valid_tid = tid
            .split_once('!')
            .is_some_and(|(user, name)| user.contains('@') && !name.is_empty())
            && !tid.contains(['=', ' ', ':']);
        if !valid_tid {
            return Err(config_err(format!(
                "[pve] token_id '{tid}' must be a full token id like user@pve!name"
            )));
        }
        let secret = settings.secret.trim();
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(config_err(
                "[pve] secret must be the non-empty token value (printable ASCII, no spaces)",
            ));
        }
        let mut auth = HeaderValue::from_str(&format!("PVEAPIToken={tid}={secret}"))
            .map_err(|_| config_err("[pve] secret is not usable in an HTTP header"))?;
        auth.set_sensitive(true);

        let presented = PresentedFingerprint::default();
        let tls = client_config(
            settings.fingerprint,
            settings.ca_pem.as_deref(),
            presented.clone(),
        )
        .map_err(|e| config_err(e.to_string()))?;

        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(2)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("felhom-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_err(format!("HTTP client: {e}")))?;

        Ok(PveClient {
            http,
            base,
            auth,
            token_id: tid.to_string(),
            presented,
            timeout: settings.timeout,
            retry: RetryPolicy::default(),
            sleeper: Arc::new(TokioSleeper),
            jitter: Jitter::new(),
            counters: Counters::default(),
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Replace the GET retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Replace the backoff sleeper (tests record instead of waiting).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Replace the response body limit.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The token id this client authenticates as.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// Counts of HTTP attempts so far.
    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            ok: self.counters.ok.load(Ordering::Relaxed),
            error: self.counters.error.load(Ordering::Relaxed),
        }
    }

    /// GET and unwrap `data`. Retries transient failures.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: impl Into<ApiPath>,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.get_with_total(path, query).await.map(|(d, _)| d)
    }

    /// GET and unwrap `data` plus the envelope's `total` (task lists, task logs).
    pub async fn get_with_total<T: DeserializeOwned>(
        &self,
        path: impl Into<ApiPath>,
        query: &[(&str, String)],
    ) -> Result<(T, Option<u64>), ApiError> {
        let path = path.into();
        let call = format!("GET {}", path.display());
        let mut attempt = 1;
        let mut immediate_retry_used = false;
        let body = loop {
            match self.send_once(Method::GET, &path, &call, query, None).await {
                Ok(body) => break body,
                Err(f) if !f.error.is_retryable() => return Err(f.error),
                Err(f) => {
                    if f.closed_early && !immediate_retry_used {
                        immediate_retry_used = true;
                        continue;
                    }
                    if attempt >= self.retry.max_attempts {
                        return Err(f.error);
                    }
                    let delay = self.retry.delay(attempt, self.jitter.next());
                    tracing::debug!(%call, attempt, ?delay, error = %f.error, "retrying GET");
                    self.sleeper.sleep(delay).await;
                    attempt += 1;
                }
            }
        };
        decode(&call, &body)
    }

    /// POST a form; never retried.
    pub async fn post_form<T: DeserializeOwned>(
        &self,
        path: impl Into<ApiPath>,
        form: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.once(Method::POST, path.into(), &[], Some(form)).await
    }

    /// PUT a form; never retried.
    pub async fn put_form<T: DeserializeOwned>(
        &self,
        path: impl Into<ApiPath>,
        form: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.once(Method::PUT, path.into(), &[], Some(form)).await
    }

    /// DELETE with parameters in the query string (never a body); never retried.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: impl Into<ApiPath>,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        self.once(Method::DELETE, path.into(), query, None).await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, ApiError> {
        self.get("/version", &[]).await
    }

    /// `GET /nodes/{upid.node}/tasks/{upid}/status` (always on the node named in the UPID).
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ApiError> {
        let u = upid.to_string();
        self.get(["nodes", &upid.node, "tasks", &u, "status"], &[])
            .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start=&limit=` (`limit` 0 = whole file).
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<TaskLog, ApiError> {
        let u = upid.to_string();
        let (lines, total) = self
            .get_with_total::<Vec<TaskLogLine>>(
                ["nodes", &upid.node, "tasks", &u, "log"],
                &[("start", start.to_string()), ("limit", limit.to_string())],
            )
            .await?;
        Ok(TaskLog {
            lines,
            total: total.unwrap_or(0),
        })
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: ApiPath,
        query: &[(&str, String)],
        form: Option<&[(&str, String)]>,
    ) -> Result<T, ApiError> {
        let call = format!("{method} {}", path.display());
        let body = self
            .send_once(method, &path, &call, query, form)
            .await
            .map_err(|f| f.error)?;
        decode(&call, &body).map(|(d, _)| d)
    }

    async fn send_once(
        &self,
        method: Method,
        path: &ApiPath,
        call: &str,
        query: &[(&str, String)],
        form: Option<&[(&str, String)]>,
    ) -> Result<Vec<u8>, Failure> {
        let result = self.send_inner(method, path, call, query, form).await;
        let counter = if result.is_ok() {
            &self.counters.ok
        } else {
            &self.counters.error
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &ApiPath,
        call: &str,
        query: &[(&str, String)],
        form: Option<&[(&str, String)]>,
    ) -> Result<Vec<u8>, Failure> {
        let url = format!("{}{}", self.base, path.encoded());
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.request_failure(call, &e))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        if let Some(len) = resp.content_length()
            && len > self.max_body as u64
        {
            return Err(self.too_large(call, Some(len)));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body {
                        return Err(self.too_large(call, None));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.request_failure(call, &e)),
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        let reason = reason.or_else(|| status.canonical_reason().map(str::to_string));
        Err(Failure {
            error: classify_response(call, status.as_u16(), reason.as_deref(), &body),
            closed_early: false,
        })
    }

    /// The body is over the cap: `declared` is its Content-Length, else it was read (and
    /// dropped) up to the cap. The connection is dropped, not drained.
    fn too_large(&self, call: &str, declared: Option<u64>) -> Failure {
        let size = match declared {
            Some(len) => format!("{len} bytes (Content-Length)"),
            None => "more than that".to_string(),
        };
        Failure {
            error: ApiError::Decode {
                call: call.to_string(),
                message: format!(
                    "response too large: the limit is {} bytes, the body has {size}",
                    self.max_body
                ),
            },
            closed_early: false,
        }
    }

    /// Map a reqwest error (no HTTP status) to an [`ApiError`].
    fn request_failure(&self, call: &str, e: &reqwest::Error) -> Failure {
        let call = call.to_string();
        let chain = error_chain(e);
        let rustls_msg = find_rustls_error(e);
        let rejection = self.presented.take();
        if rustls_msg.is_some() || rejection.is_some() {
            let presented = rejection
                .as_ref()
                .map(|r| format_fingerprint(&r.fingerprint));
            let message = match (rejection, rustls_msg) {
                (Some(r), _) => r.message,
                (None, Some(m)) => m,
                (None, None) => chain,
            };
            return Failure {
                error: ApiError::Tls {
                    call,
                    presented,
                    message,
                },
                closed_early: false,
            };
        }
        let closed_early = is_closed_early(e);
        let (message, retryable) = if e.is_builder() {
            (format!("cannot build request: {chain}"), false)
        } else if e.is_timeout() {
            (
                format!(
                    "no complete answer within {}s (timeout): {chain}",
                    self.timeout.as_secs_f32()
                ),
                true,
            )
        } else if e.is_connect() {
            (
                format!(
                    "cannot connect to {}: {chain}; check [pve] url and the network",
                    self.base
                ),
                true,
            )
        } else if closed_early {
            const CLOSED: &str = "connection closed before message completed";
            let m = if chain.contains(CLOSED) {
                CLOSED.to_string()
            } else {
                format!("{CLOSED}: {chain}")
            };
            (m, true)
        } else {
            (chain, true)
        };
        Failure {
            error: ApiError::Transport {
                call,
                message,
                retryable,
            },
            closed_early,
        }
    }
}

/// Decode a successful response body: the `{"data": …, "total": …}` envelope around `T`.
/// Any malformed, truncated, wrongly typed or too deeply nested body (serde_json stops at 128
/// levels) is an [`ApiError::Decode`] naming `call`; never a panic. Public for the fuzz targets.
pub fn decode<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<(T, Option<u64>), ApiError> {
    let env: Envelope<T> = serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        call: call.to_string(),
        message: e.to_string(),
    })?;
    Ok((env.data, env.total))
}

/// Every error in the chain. `io::Error::source()` skips its wrapped error, so io errors are
/// descended through `get_ref()` instead.
fn chain_of<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        out.push(err);
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => err.source(),
        };
        if out.len() > 32 {
            break;
        }
    }
    out
}

/// Display of an error and all its sources, de-duplicated, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for err in chain_of(e) {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The text of a rustls error somewhere in the chain.
fn find_rustls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    chain_of(e)
        .into_iter()
        .find_map(|err| err.downcast_ref::<rustls::Error>().map(|r| r.to_string()))
}

/// The server closed the connection before a complete response: hyper's "connection closed
/// before message completed", or a TLS EOF without close_notify.
fn is_closed_early(e: &(dyn std::error::Error + 'static)) -> bool {
    chain_of(e).into_iter().any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message())
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
