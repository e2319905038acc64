//! The health HTTP/1 server: `/livez`, `/healthz`, `/status`, `/metrics`.
//!
//! Bounds and behaviour (each connection runs on its own tokio task):
//! * request headers must arrive within [`ServerOptions::header_read_timeout`] (5 s) — this also
//!   bounds how long an idle keep-alive connection is kept — and fit in
//!   [`ServerOptions::max_header_bytes`] (8 KiB, else `431` and close);
//! * no request body is accepted: any body (`Content-Length > 0` or chunked) gets `413` and the
//!   connection is closed without reading it;
//! * at most [`ServerOptions::max_connections`] (64) connections are open at once. The server
//!   never stops accepting: a connection arriving at the limit evicts (closes) the oldest open
//!   connection that has not completed a request yet, else the oldest one. So slow-loris
//!   clients trickling header bytes cannot keep `/livez` waiting in the listen backlog: a new
//!   probe is accepted at once and answered long before it is the oldest. Every connection is
//!   also bounded by the header timeout and by [`ServerOptions::max_connection_age`] (60 s, then
//!   a graceful close);
//! * with a bearer token configured, every path but `/livez` requires
//!   `Authorization: Bearer <token>` (compared in constant time over SHA-256 digests) → `401`;
//! * unknown paths → `404`; methods other than GET/HEAD → `405`;
//! * shutdown: when the `watch` value becomes `true` (or its sender is dropped) the listener is
//!   closed, open connections finish their current response and close, and whatever is left
//!   after [`ServerOptions::shutdown_grace`] is aborted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinSet};

use super::metrics::{
    OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, render_openmetrics, to_prometheus_text,
};
use super::rules::{HealthRules, has_pending_work, health_reasons, is_live};
use super::{Health, HealthView};
use crate::config::{ConfigError, HealthConfig, Secret, read_secret_file};

/// How the server is set up. [`ServerOptions::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub bearer_token: Option<Secret>,
    pub rules: HealthRules,
    /// `/livez` answers 503 when the scheduler loop has not ticked for longer than this.
    pub livez_max_staleness: Duration,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connection_age: Duration,
    pub shutdown_grace: Duration,
}

impl ServerOptions {
    pub fn new(listen: SocketAddr, rules: HealthRules, livez_max_staleness: Duration) -> Self {
        ServerOptions {
            listen,
            bearer_token: None,
            rules,
            livez_max_staleness,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 8 * 1024,
            max_connection_age: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// Options from `[health]`; reads the bearer token file if one is configured.
    pub fn from_config(
        cfg: &HealthConfig,
        livez_max_staleness: Duration,
    ) -> Result<Self, ConfigError> {
        let mut opts = ServerOptions::new(cfg.listen, cfg.into(), livez_max_staleness);
        opts.bearer_token = cfg
            .bearer_token_file
            .as_deref()
            .map(read_secret_file)
            .transpose()?;
        Ok(opts)
    }
}

/// Errors of [`HealthServer::bind`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for the health endpoint (health.listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    health: Health,
    token_digest: Option<[u8; 32]>,
    rules: HealthRules,
    livez_max_staleness: Duration,
}

/// A bound, not yet serving, health server.
pub struct HealthServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    opts: ServerOptions,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    /// Binds `opts.listen` (port 0 picks a free port; see [`HealthServer::local_addr`]).
    pub async fn bind(opts: ServerOptions, health: Health) -> Result<HealthServer, ServeError> {
        let bind_err = |source| ServeError::Bind {
            addr: opts.listen,
            source,
        };
        let listener = TcpListener::bind(opts.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            health,
            token_digest: opts
                .bearer_token
                .as_ref()
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            rules: opts.rules,
            livez_max_staleness: opts.livez_max_staleness,
        });
        Ok(HealthServer {
            listener,
            local_addr,
            shared,
            opts,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` becomes `true` or its sender is dropped.
    ///
    /// When the last connection of a burst closes (at most every 10 s), freed heap is handed
    /// back to the OS: glibc otherwise keeps ~15 KiB per concurrent connection after a scrape
    /// storm (measured: +988 KiB RSS after 64 connections, +364 KiB with the trim).
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let HealthServer {
            listener,
            shared,
            opts,
            ..
        } = self;
        let mut conns = JoinSet::new();
        let mut open = OpenConnections::default();
        let mut last_trim = Instant::now();
        // A trim put off by the rate limit: runs at this instant if no connection is open then.
        let mut trim_due: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(done) = conns.join_next_with_id(), if !conns.is_empty() => {
                    open.finished(match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    });
                    if conns.is_empty() {
                        if last_trim.elapsed() >= TRIM_INTERVAL {
                            last_trim = Instant::now();
                            trim_due = None;
                            release_freed_memory();
                        } else {
                            trim_due = Some(last_trim + TRIM_INTERVAL);
                        }
                    }
                    continue;
                }
                _ = sleep_until_due(trim_due) => {
                    trim_due = None;
                    if conns.is_empty() {
                        last_trim = Instant::now();
                        release_freed_memory();
                    }
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    open.make_room(opts.max_connections.max(1));
                    let served = Arc::new(AtomicBool::new(false));
                    let abort = conns.spawn(serve_connection(
                        stream,
                        served.clone(),
                        shared.clone(),
                        opts.clone(),
                        shutdown.clone(),
                    ));
                    open.push(abort, served);
                }
                Err(err) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!("health endpoint: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(opts.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
}

/// The open connections in accept order, for evicting one at the connection limit.
#[derive(Default)]
struct OpenConnections(VecDeque<(AbortHandle, Arc<AtomicBool>)>);

impl OpenConnections {
    fn push(&mut self, abort: AbortHandle, served: Arc<AtomicBool>) {
        self.0.push_back((abort, served));
    }

    fn finished(&mut self, id: Id) {
        self.0.retain(|(a, _)| a.id() != id);
    }

    /// At `limit` open connections, closes the oldest that has not completed a request (a
    /// slow or idle client), else the oldest.
    fn make_room(&mut self, limit: usize) {
        while self.0.len() >= limit {
            let victim = self
                .0
                .iter()
                .position(|(_, served)| !served.load(Ordering::Relaxed))
                .unwrap_or(0);
            if let Some((abort, _)) = self.0.remove(victim) {
                abort.abort();
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    served: Arc<AtomicBool>,
    shared: Arc<Shared>,
    opts: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_header_size(opts.max_header_bytes)
        .max_buf_size((opts.max_header_bytes + 8 * 1024).max(16 * 1024))
        .keep_alive(true);
    let service = service_fn(move |req| {
        let shared = shared.clone();
        served.store(true, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(handle(&shared, &req)) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let age = tokio::time::sleep(opts.max_connection_age);
    let mut age = std::pin::pin!(age);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = shutdown.wait_for(|stop| *stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = age.as_mut(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

type Resp = Response<Full<Bytes>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Livez,
    Healthz,
    Status,
    Metrics,
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Resp {
    if req.body().size_hint().exact() != Some(0) {
        let mut resp = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted\n",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let route = match req.uri().path() {
        "/livez" => Route::Livez,
        "/healthz" => Route::Healthz,
        "/status" => Route::Status,
        "/metrics" => Route::Metrics,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if route != Route::Livez && !authorized(shared, req) {
        let mut resp = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"felhom-agent\""),
        );
        return resp;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match route {
        Route::Livez => {
            let live = shared
                .health
                .read(|v| is_live(v, Instant::now(), shared.livez_max_staleness));
            if live {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "scheduler loop heartbeat is stale\n",
                )
            }
        }
        Route::Healthz => {
            let view = shared.health.snapshot();
            let reasons = health_reasons(&view, epoch_now(), &shared.rules);
            if reasons.is_empty() {
                text(StatusCode::OK, "ok\n")
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "unhealthy", "reasons": reasons}),
                )
            }
        }
        Route::Status => {
            let view = shared.health.snapshot();
            let reasons = health_reasons(&view, epoch_now(), &shared.rules);
            let live = is_live(&view, Instant::now(), shared.livez_max_staleness);
            json(StatusCode::OK, &StatusDoc::new(&view, live, reasons))
        }
        Route::Metrics => {
            let view = shared.health.snapshot();
            let healthy = health_reasons(&view, epoch_now(), &shared.rules).is_empty();
            let om = render_openmetrics(&view, healthy, has_pending_work(&view));
            let wants_openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            if wants_openmetrics {
                with_type(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, om.into())
            } else {
                with_type(
                    StatusCode::OK,
                    TEXT_CONTENT_TYPE,
                    to_prometheus_text(&om).into(),
                )
            }
        }
    }
}

/// `/status`: the view plus the verdicts.
#[derive(Serialize)]
struct StatusDoc<'a> {
    #[serde(flatten)]
    view: &'a HealthView,
    live: bool,
    health: HealthVerdict,
}

#[derive(Serialize)]
struct HealthVerdict {
    status: &'static str,
    reasons: Vec<String>,
}

impl<'a> StatusDoc<'a> {
    fn new(view: &'a HealthView, live: bool, reasons: Vec<String>) -> Self {
        let status = if reasons.is_empty() {
            "healthy"
        } else {
            "unhealthy"
        };
        StatusDoc {
            view,
            live,
            health: HealthVerdict { status, reasons },
        }
    }
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(expected) = &shared.token_digest else {
        return true;
    };
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    constant_time_eq(&got, expected)
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Resp {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(status, "application/json", body.into())
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot serialise\n"),
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// At most one `malloc_trim` per this interval (a scraper that reconnects for every scrape must
/// not pay for one each time); a trim put off by it runs when the interval ends, so the memory
/// of a burst is returned even when the next burst comes sooner.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Resolves at `due`; never when there is nothing due (no timer at all while idle).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Returns freed heap pages to the kernel (glibc keeps them by default).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
