//! The `pve-sim` binary and the `/_sim` control API over HTTP (for demos, benchmarks and tests
//! in other languages).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn request(
    tls: &tokio_rustls::TlsConnector,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut s = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let b = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    parse_response(&buf)
}

#[tokio::test]
async fn binary_serves_a_json_scenario_with_ca_file_and_control_api() {
    let dir = std::env::temp_dir().join(format!("pve-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The same scenario as JSON (scenario files may be TOML or JSON).
    let sc: toml::Value = toml::from_str(BASIC).unwrap();
    std::fs::write(dir.join("basic.json"), serde_json::to_string(&sc).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(dir.join("basic.json"))
        .arg("--cert-dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = Proc(child);
    let info: Value = serde_json::from_str(&line).unwrap();
    let addr = info["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    let fp = info["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 95, "AA:BB:… form: {fp}");
    assert!(
        fp.chars()
            .all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );
    // CA-file mode with the written ca.pem.
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let a = auth(T101);
    let r = request(
        &tls,
        &addr,
        "GET",
        "/api2/json/version",
        &[("Authorization", &a)],
        None,
    )
    .await;
    assert_eq!(r.data()["version"], "9.1.1");
    let key = [
        ("X-Sim-Control", "test-control-key"),
        ("Content-Type", "application/json"),
    ];
    // Start a backup, hold it, advance the clock: a held task does not progress.
    let upid = request(
        &tls,
        &addr,
        "POST",
        "/api2/json/nodes/pve1/vzdump",
        &[
            ("Authorization", &a),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some("vmid=101&storage=pbs-main"),
    )
    .await
    .data();
    let upid = upid.as_str().unwrap().to_string();
    let hold = json!({"upid": upid}).to_string();
    assert_eq!(
        request(&tls, &addr, "POST", "/_sim/tasks/hold", &key, Some(&hold))
            .await
            .status,
        200
    );
    assert_eq!(
        request(
            &tls,
            &addr,
            "POST",
            "/_sim/clock",
            &key,
            Some(r#"{"advance": 100}"#)
        )
        .await
        .status,
        200
    );
    let state = request(&tls, &addr, "GET", "/_sim/state", &key, None)
        .await
        .data();
    assert_eq!(state["tasks"][0]["running"], true, "held");
    request(
        &tls,
        &addr,
        "POST",
        "/_sim/tasks/release",
        &key,
        Some(&hold),
    )
    .await;
    request(
        &tls,
        &addr,
        "POST",
        "/_sim/clock",
        &key,
        Some(r#"{"advance": 100}"#),
    )
    .await;
    let state = request(&tls, &addr, "GET", "/_sim/state", &key, None)
        .await
        .data();
    assert_eq!(state["tasks"][0]["exitstatus"], "OK");
    // Faults, migration, lock and the logs.
    let f = json!({"path": "/version", "kind": {"type": "status", "code": 503, "message": "Service Unavailable"}, "count": 1}).to_string();
    request(&tls, &addr, "POST", "/_sim/faults", &key, Some(&f)).await;
    assert_eq!(
        request(
            &tls,
            &addr,
            "GET",
            "/api2/json/version",
            &[("Authorization", &a)],
            None
        )
        .await
        .status,
        503
    );
    request(
        &tls,
        &addr,
        "POST",
        "/_sim/migrate",
        &key,
        Some(r#"{"vmid": 101, "node": "pve2"}"#),
    )
    .await;
    let res = request(
        &tls,
        &addr,
        "GET",
        "/api2/json/cluster/resources?type=vm",
        &[("Authorization", &a)],
        None,
    )
    .await
    .data();
    assert_eq!(res[0]["node"], "pve2");
    request(
        &tls,
        &addr,
        "PUT",
        "/_sim/guests/101/lock",
        &key,
        Some(r#"{"lock": "backup"}"#),
    )
    .await;
    assert_eq!(
        request(&tls, &addr, "GET", "/_sim/guests/101/lock", &key, None)
            .await
            .data()["lock"],
        "backup"
    );
    let events = request(&tls, &addr, "GET", "/_sim/events", &key, None)
        .await
        .data();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "migrated")
    );
    let reqs = request(&tls, &addr, "GET", "/_sim/requests?since=2", &key, None)
        .await
        .data();
    assert!(
        reqs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["seq"].as_u64().unwrap() > 2)
    );
    let rot = request(&tls, &addr, "POST", "/_sim/tls/rotate", &key, None)
        .await
        .data();
    assert_ne!(
        rot["fingerprint"].as_str().unwrap(),
        fp,
        "a renewed certificate has a new fingerprint"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
