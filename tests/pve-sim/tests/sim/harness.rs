//! A small harness: start the simulator on the basic scenario (clock frozen), and talk to it
//! with a raw HTTPS/1.1 client so tests see exactly what a client would: status line with its
//! reason phrase, headers, body bytes, and connection closes.

use std::sync::Arc;

use pve_sim::{Scenario, Sim};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BASIC: &str = include_str!("../../scenarios/basic.toml");
pub const T101: (&str, &str) = (
    "felhom101@pve!agent",
    "11111111-2222-3333-4444-555555555101",
);
pub const T103: (&str, &str) = (
    "felhom103@pve!agent",
    "11111111-2222-3333-4444-555555555103",
);
pub const WIDE: (&str, &str) = ("wide@pve!tok", "wide-secret-0000");
pub const AUDITOR: (&str, &str) = ("auditor@pve!tok", "auditor-secret-0000");

pub struct H {
    pub sim: Sim,
    tls: tokio_rustls::TlsConnector,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn data(&self) -> Value {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {} {} {}",
            self.status,
            self.reason,
            String::from_utf8_lossy(&self.body)
        );
        self.json()["data"].clone()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn auth(t: (&str, &str)) -> String {
    format!("PVEAPIToken={}={}", t.0, t.1)
}

impl H {
    pub async fn start() -> H {
        H::start_with(BASIC, "").await
    }

    /// `extra` TOML is appended to the basic scenario (more tokens, ACLs, settings are patched
    /// with `patch`).
    pub async fn start_with(base: &str, extra: &str) -> H {
        let text = format!("{base}\n{extra}\n");
        let sc = Scenario::parse(&text).expect("scenario parses");
        H::from_scenario(&sc).await
    }

    pub async fn from_scenario(sc: &Scenario) -> H {
        let sim = Sim::start(sc, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("sim starts");
        sim.world().clock.set_speed(0.0);
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile_certs(&sim.ca_pem()) {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        H {
            sim,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        }
    }

    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.sim.addr())
            .await
            .unwrap();
        self.tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut s = self.connect().await;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        if let Some(b) = body {
            s.write_all(b).await.unwrap();
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        parse_response(&buf)
    }

    pub async fn get(&self, t: (&str, &str), path: &str) -> Resp {
        let a = auth(t);
        self.raw(
            "GET",
            &format!("/api2/json{path}"),
            &[("Authorization", &a)],
            None,
        )
        .await
    }

    pub async fn delete(&self, t: (&str, &str), path: &str) -> Resp {
        let a = auth(t);
        self.raw(
            "DELETE",
            &format!("/api2/json{path}"),
            &[("Authorization", &a)],
            None,
        )
        .await
    }

    pub async fn post(&self, t: (&str, &str), path: &str, form: &[(&str, &str)]) -> Resp {
        self.send_form("POST", t, path, form).await
    }

    pub async fn send_form(
        &self,
        method: &str,
        t: (&str, &str),
        path: &str,
        form: &[(&str, &str)],
    ) -> Resp {
        let a = auth(t);
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.raw(
            method,
            &format!("/api2/json{path}"),
            &[
                ("Authorization", &a),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(body.as_bytes()),
        )
        .await
    }

    /// Advances the simulated clock (tasks progress by the same amount).
    pub fn advance(&self, secs: f64) {
        self.sim.advance(secs);
    }

    pub async fn task_status(&self, t: (&str, &str), upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap().to_string();
        self.get(t, &format!("/nodes/{node}/tasks/{}/status", enc(upid)))
            .await
            .data()
    }

    pub async fn task_log(&self, t: (&str, &str), upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let d = self
            .get(t, &format!("/nodes/{node}/tasks/{}/log?limit=0", enc(upid)))
            .await
            .data();
        d.as_array()
            .unwrap()
            .iter()
            .map(|l| l["t"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs the clock forward until the task stops (bounded), returns its status.
    pub async fn run_to_end(&self, t: (&str, &str), upid: &str) -> Value {
        for _ in 0..2000 {
            let st = self.task_status(t, upid).await;
            if st["status"] == "stopped" {
                return st;
            }
            self.advance(1.0);
        }
        panic!("task {upid} did not stop");
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

pub fn parse_response(buf: &[u8]) -> Resp {
    let text = buf;
    let end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&text[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    parts.next();
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = text[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        reason,
        headers,
        body,
    }
}
