//! Test-only TLS/HTTP server for client tests: a tokio-rustls HTTP/1.1 server on 127.0.0.1
//! with rcgen certificates (self-signed, or signed by a test CA), scripted replies, and a record
//! of the plaintext request bytes it received.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::client::ClientSettings;
use super::retry::Sleeper;

pub(crate) const SECRET: &str = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";
pub(crate) const TOKEN: &str = "backup@pve!guestd";

/// What the server answers to the next request.
#[derive(Clone)]
pub(crate) enum Reply {
    /// Full response: status line after `HTTP/1.1 `, body.
    Http(&'static str, String),
    /// Read the request, then close cleanly (TLS close_notify) without answering.
    Close,
    /// Read the request, then drop the TCP connection (no close_notify).
    Drop,
    /// 200 with a JSON body of this many bytes (a never-ending string), written in 64 KiB
    /// pieces, chunked or with its Content-Length declared; the bytes actually written go to
    /// [`Seen::streamed`] and [`Seen::stream_ended`] is set when the writer stops.
    Stream { bytes: u64, chunked: bool },
}

pub(crate) fn ok_json(body: &str) -> Reply {
    Reply::Http("200 OK", body.to_string())
}

#[derive(Default)]
pub(crate) struct Seen {
    /// Plaintext request bytes, one entry per request.
    pub(crate) requests: Vec<String>,
    pub(crate) handshakes_ok: u32,
    pub(crate) handshakes_failed: u32,
    /// Body bytes written by [`Reply::Stream`] before it finished or the client went away.
    pub(crate) streamed: u64,
    pub(crate) stream_ended: bool,
}

pub(crate) struct Server {
    pub(crate) port: u16,
    pub(crate) seen: Arc<Mutex<Seen>>,
}

pub(crate) struct Certs {
    pub(crate) leaf_der: Vec<u8>,
    pub(crate) leaf_key_der: Vec<u8>,
    pub(crate) ca_pem: Option<String>,
}

pub(crate) fn self_signed() -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    Certs {
        leaf_der: ck.cert.der().to_vec(),
        leaf_key_der: ck.signing_key.serialize_der(),
        ca_pem: None,
    }
}

pub(crate) fn ca_signed() -> Certs {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Proxmox Virtual Environment");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Certs {
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
        ca_pem: Some(ca_cert.pem()),
    }
}

pub(crate) async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

pub(crate) async fn start(certs: &Certs, replies: Vec<Reply>, default: Reply) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(
            certs.leaf_der.clone(),
        )],
        rustls::pki_types::PrivateKeyDer::try_from(certs.leaf_key_der.clone()).unwrap(),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            let queue = queue.clone();
            let default = default.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(_) => {
                        seen.lock().unwrap().handshakes_failed += 1;
                        return;
                    }
                };
                seen.lock().unwrap().handshakes_ok += 1;
                while let Some(req) = read_request(&mut tls).await {
                    seen.lock().unwrap().requests.push(req);
                    let reply = queue.lock().unwrap().pop_front().unwrap_or(default.clone());
                    match reply {
                        Reply::Close => {
                            let _ = tls.shutdown().await;
                            return;
                        }
                        Reply::Drop => return,
                        Reply::Stream { bytes, chunked } => {
                            stream_body(&mut tls, bytes, chunked, &seen).await;
                            return;
                        }
                        Reply::Http(status, body) => {
                            let error = !status.starts_with('2');
                            let resp = format!(
                                "HTTP/1.1 {status}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
                                body.len(),
                                if error { "close" } else { "Keep-Alive" }
                            );
                            if tls.write_all(resp.as_bytes()).await.is_err() || error {
                                let _ = tls.shutdown().await;
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Server { port, seen }
}

async fn stream_body<S: AsyncWriteExt + Unpin>(
    s: &mut S,
    total: u64,
    chunked: bool,
    seen: &Mutex<Seen>,
) {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n{framing}\r\n\r\n"
    );
    let mut ok = s.write_all(head.as_bytes()).await.is_ok();
    let piece = {
        let mut p = br#"{"data":""#.to_vec();
        p.resize(64 * 1024, b'x');
        p
    };
    let mut sent = 0u64;
    while ok && sent < total {
        let n = piece.len().min((total - sent) as usize);
        let body = if sent == 0 {
            &piece[..n]
        } else {
            &[b'x'; 64 * 1024][..n]
        };
        ok = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(body);
            framed.extend_from_slice(b"\r\n");
            s.write_all(&framed).await.is_ok()
        } else {
            s.write_all(body).await.is_ok()
        };
        if ok {
            sent += n as u64;
            seen.lock().unwrap().streamed = sent;
        }
    }
    if ok && chunked {
        let _ = s.write_all(b"0\r\n\r\n").await;
    }
    let _ = s.shutdown().await;
    seen.lock().unwrap().stream_ended = true;
}

pub(crate) fn settings(
    port: u16,
    fingerprint: Option<[u8; 32]>,
    ca_pem: Option<&str>,
) -> ClientSettings {
    ClientSettings {
        base_url: format!("https://127.0.0.1:{port}"),
        token_id: TOKEN.into(),
        secret: SECRET.into(),
        fingerprint,
        ca_pem: ca_pem.map(|p| p.as_bytes().to_vec()),
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
    }
}

/// Records requested delays and returns at once.
#[derive(Default)]
pub(crate) struct RecordingSleeper(pub(crate) Mutex<Vec<Duration>>);

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.0.lock().unwrap().push(d);
        Box::pin(async {})
    }
}

pub(crate) const VERSION: &str = r#"{"data":{"version":"9.1.1","release":"9.1","repoid":"abc"}}"#;

pub(crate) fn assert_no_secret(s: &str) {
    assert!(!s.contains(SECRET), "secret leaked: {s}");
}
