//! Behaviour 11: injected faults and pveproxy's connection behaviour (§7, §9).

use std::time::Duration;

use pve_sim::{FaultKind, FaultSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test]
async fn status_faults_per_route_with_count() {
    let h = H::start().await;
    h.sim.add_fault(FaultSpec {
        method: Some("GET".into()),
        path: Some("/nodes/{node}/qemu/{vmid}/status/current".into()),
        kind: FaultKind::Status {
            code: 596,
            message: "Broken pipe".into(),
        },
        count: Some(2),
    });
    for _ in 0..2 {
        let r = h.get(T101, "/nodes/pve1/qemu/101/status/current").await;
        assert_eq!((r.status, r.reason.as_str()), (596, "Broken pipe"));
    }
    assert_eq!(
        h.get(T101, "/nodes/pve1/qemu/101/status/current")
            .await
            .status,
        200,
        "count exhausted"
    );
    h.sim.add_fault(FaultSpec {
        method: None,
        path: None,
        kind: FaultKind::Status {
            code: 503,
            message: "Service Unavailable".into(),
        },
        count: Some(1),
    });
    assert_eq!(h.get(T101, "/version").await.status, 503);
    let faulted = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert_eq!(
        faulted, 3,
        "faulted requests are visible in the request log"
    );
}

#[tokio::test]
async fn reset_and_hang() {
    let h = H::start().await;
    h.sim.add_fault(FaultSpec {
        method: None,
        path: Some("/version".into()),
        kind: FaultKind::Reset,
        count: Some(1),
    });
    let mut s = h.connect().await;
    let a = auth(T101);
    s.write_all(
        format!("GET /api2/json/version HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf).await;
    assert!(r.is_err() || buf.is_empty(), "reset: no response bytes");
    h.sim.add_fault(FaultSpec {
        method: None,
        path: Some("/version".into()),
        kind: FaultKind::Hang,
        count: Some(1),
    });
    let t = tokio::time::timeout(Duration::from_millis(300), h.get(T101, "/version")).await;
    assert!(t.is_err(), "a hanging response never completes");
    assert_eq!(h.get(T101, "/version").await.status, 200);
}

async fn read_one(s: &mut (impl AsyncReadExt + Unpin)) -> Resp {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return parse_response(&buf);
            }
        }
    }
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed_and_errors_close() {
    let text = BASIC.replace("[settings]", "[settings]\nkeepalive-idle-ms = 150");
    let h = H::start_with(&text, "").await;
    let a = auth(T101);
    let mut s = h.connect().await;
    let req = format!("GET /api2/json/version HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_one(&mut s).await.status, 200);
    // Still open right away: a second request on the same connection works.
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_one(&mut s).await.status, 200);
    // Idle past the server's keep-alive timeout: the server closes (EOF).
    let mut tmp = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp))
        .await
        .expect("server closes an idle connection");
    assert_eq!(n.unwrap_or(0), 0);
    // An error response closes its connection too.
    let mut s = h.connect().await;
    s.write_all(b"GET /api2/json/nodes/pve1/qemu/102/status/current HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken=felhom101@pve!agent=11111111-2222-3333-4444-555555555101\r\n\r\n").await.unwrap();
    let r = read_one(&mut s).await;
    assert_eq!(r.status, 403);
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut tmp))
        .await
        .expect("closed after error");
    assert_eq!(n.unwrap_or(0), 0);
}

#[tokio::test]
async fn keepalive_max_requests_per_connection() {
    let text = BASIC.replace("[settings]", "[settings]\nkeepalive-max-requests = 3");
    let h = H::start_with(&text, "").await;
    let a = auth(T101);
    let mut s = h.connect().await;
    let req = format!("GET /api2/json/version HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\n\r\n");
    for i in 1..=3 {
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(
            r.header("connection"),
            Some(if i == 3 { "close" } else { "Keep-Alive" })
        );
    }
}
