//! The HTTPS server: TLS with the generated certificate, HTTP/1.1 keep-alive with pveproxy's
//! connection behaviour (§9: idle close after 5 s, at most 100 requests per connection, close
//! after every error response), injected connection faults, and dispatch to the API and the
//! `/_sim` control API.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::Shared;
use crate::api::{self, ApiRequest, ApiResponse};
use crate::faults::FaultKind;

/// pveproxy refuses POST bodies above 512 KiB (§7).
pub const MAX_BODY: usize = 512 * 1024;

pub(crate) struct ConnState {
    in_flight: AtomicU32,
    served: AtomicU32,
    last_activity: Mutex<Instant>,
    kill: Notify,
    fd: RawFd,
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut acceptor =
        tokio_rustls::TlsAcceptor::from(crate::tls::server_config(shared.certs.clone()));
    let mut serving = shared.certs.fingerprint();
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
            },
            _ = shared.shutdown.notified() => return,
        };
        let _ = tcp.set_nodelay(true);
        // A renewed certificate means a restarted pveproxy: its TLS session cache is gone, so
        // no client can resume a session made with the old certificate.
        if shared.certs.fingerprint() != serving {
            serving = shared.certs.fingerprint();
            acceptor =
                tokio_rustls::TlsAcceptor::from(crate::tls::server_config(shared.certs.clone()));
        }
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let fd = tcp.as_raw_fd();
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let (idle_ms, max_req) = {
                let w = shared.world.lock().expect("world lock");
                (
                    w.settings.keepalive_idle_ms,
                    w.settings.keepalive_max_requests,
                )
            };
            let conn = Arc::new(ConnState {
                in_flight: AtomicU32::new(0),
                served: AtomicU32::new(0),
                last_activity: Mutex::new(Instant::now()),
                kill: Notify::new(),
                fd,
            });
            let io = IdleIo {
                inner: tls,
                conn: conn.clone(),
                idle: Duration::from_millis(idle_ms),
                timer: None,
            };
            let svc_conn = conn.clone();
            let svc_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                let conn = svc_conn.clone();
                async move { Ok::<_, Infallible>(handle(shared, conn, req, max_req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.keep_alive(true).title_case_headers(false);
            let serving = builder.serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = serving => {}
                _ = conn.kill.notified() => {
                    // RST instead of FIN: SO_LINGER 0 before the socket is dropped.
                    // SAFETY: the connection (and so the socket) is still alive in this scope.
                    let sock = unsafe { BorrowedFd::borrow_raw(conn.fd) };
                    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
                }
                _ = shared.shutdown.notified() => {}
            }
        });
    }
}

struct InFlight(Arc<ConnState>);
impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_activity.lock().expect("activity lock") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
    max_req: u32,
) -> Response<Full<Bytes>> {
    conn.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(conn.clone());
    let served = conn.served.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let chunked = parts
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return plain(413, "Request Entity Too Large", true);
        }
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if path.starts_with("/_sim/") || path == "/_sim" {
        let (status, body) = crate::control::handle(
            &shared,
            parts.method.as_str(),
            &path,
            &query,
            &body,
            header("x-sim-control").as_deref(),
            header("authorization").as_deref(),
        );
        return json_response(status, None, body, false);
    }
    let areq = ApiRequest {
        method: parts.method.as_str().to_string(),
        raw_path: path,
        query,
        body,
        content_type: header("content-type"),
        authorization: header("authorization"),
        chunked,
    };
    // Faults first: they stand for the network and the proxy in front of the API.
    let fault = {
        let mut w = shared.world.lock().expect("world lock");
        api::take_fault(&mut w, &areq)
    };
    let mut close_after = false;
    match fault {
        Some(FaultKind::Latency { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultKind::Status { code, message }) => {
            let body = serde_json::json!({"data": null, "message": format!("{message}\n")});
            return json_response(code, Some(&message), body.to_string().into_bytes(), true);
        }
        Some(FaultKind::Reset) => {
            conn.kill.notify_one();
            std::future::pending::<()>().await;
        }
        Some(FaultKind::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Some(FaultKind::Close) => close_after = true,
        Some(FaultKind::Respond { code, body }) => {
            return json_response(code, None, body.to_string().into_bytes(), code >= 400);
        }
        None => {}
    }
    let resp: ApiResponse = {
        let mut w = shared.world.lock().expect("world lock");
        w.tick();
        let r = api::handle(&mut w, &areq);
        drop(w);
        shared.events.notify_waiters();
        r
    };
    if resp.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(resp.delay_ms)).await;
    }
    let close = close_after || resp.status >= 400 || served >= max_req;
    json_response(resp.status, resp.reason.as_deref(), resp.body, close)
}

fn plain(status: u16, reason: &str, close: bool) -> Response<Full<Bytes>> {
    json_response(status, Some(reason), Vec::new(), close)
}

pub(crate) fn json_response(
    status: u16,
    reason: Option<&str>,
    body: Vec<u8>,
    close: bool,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(
        http::header::SERVER,
        http::HeaderValue::from_static("pve-api-daemon/3.0"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=0"),
    );
    if close {
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    } else {
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Keep-Alive"),
        );
    }
    if let Some(r) = reason {
        // The reason phrase is the message's first line (§6); hyper writes it verbatim.
        let first = r.lines().next().unwrap_or("").to_string();
        if let Ok(rp) = hyper::ext::ReasonPhrase::try_from(first) {
            resp.extensions_mut().insert(rp);
        }
    }
    resp
}

/// The TLS stream with pveproxy's idle close: when no request is in flight and nothing has been
/// read or written for `idle`, reads return EOF and hyper closes the connection.
struct IdleIo<S> {
    inner: S,
    conn: Arc<ConnState>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    *self.conn.last_activity.lock().expect("activity lock") = Instant::now();
                    self.timer = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.conn.in_flight.load(Ordering::SeqCst) > 0 {
                    self.timer = None;
                    return Poll::Pending;
                }
                let last = *self.conn.last_activity.lock().expect("activity lock");
                let deadline = last + self.idle;
                if Instant::now() >= deadline {
                    return Poll::Ready(Ok(()));
                }
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            *self.conn.last_activity.lock().expect("activity lock") = Instant::now();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
