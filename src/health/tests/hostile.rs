//! The health server under hostile clients: a slow-loris crowd far above the connection
//! limit, oversized headers and request lines, and bodies on GET. `/livez` must keep answering
//! within [`LIVEZ_BOUND`] (a liveness guarantee, not a benchmark); oversized requests get a
//! 4xx or a close, never a hang.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::server::{PROMPT, get, options, parse_reply, start};

const LIVEZ_BOUND: Duration = Duration::from_secs(2);

/// A slow-loris client: opens a request and sends one more header byte every `tick` until
/// `until`; reconnects when the server has closed it. Returns how many connections it opened.
async fn trickle(addr: SocketAddr, tick: Duration, until: Instant) -> u32 {
    let mut opened = 0;
    while Instant::now() < until {
        let Ok(mut c) = TcpStream::connect(addr).await else {
            tokio::time::sleep(tick).await;
            continue;
        };
        opened += 1;
        let mut ok = c
            .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .is_ok();
        while ok && Instant::now() < until {
            tokio::time::sleep(tick).await;
            ok = c.write_all(b"a").await.is_ok();
        }
        if !ok {
            tokio::time::sleep(tick).await;
        }
    }
    opened
}

async fn livez_within_bound(addr: SocketAddr) -> Duration {
    let began = Instant::now();
    let r = tokio::time::timeout(LIVEZ_BOUND, get(addr, "/livez", ""))
        .await
        .expect("/livez answered within the bound under attack");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_crowd_above_the_limit_does_not_starve_livez() {
    let s = start(options()).await; // 64 connections, 5 s header timeout
    let until = Instant::now() + Duration::from_millis(4500);
    let mut crowd = JoinSet::new();
    for _ in 0..200 {
        crowd.spawn(trickle(s.addr, Duration::from_secs(1), until));
    }
    // Let the crowd connect and start trickling, then probe several times during the attack.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        livez_within_bound(s.addr).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut opened = 0;
    while let Some(n) = crowd.join_next().await {
        opened += n.unwrap();
    }
    // The crowd really was above the limit: it opened at least its 200 connections.
    assert!(opened >= 200, "{opened}");
    livez_within_bound(s.addr).await;
}

/// Sends `head` (and `body`) and returns what the server answered before closing; the write
/// may fail when the server closes first, which is a refusal too.
async fn refused(addr: SocketAddr, head: &[u8], body: &[u8]) -> Vec<u8> {
    tokio::time::timeout(PROMPT, async {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(head).await;
        let _ = c.write_all(body).await;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("the server ended an oversized request in time, not hanging")
}

fn status_of(raw: &[u8]) -> Option<u16> {
    (!raw.is_empty()).then(|| parse_reply(raw).status)
}

#[tokio::test]
async fn one_mebibyte_header_gets_431_or_a_close() {
    let s = start(options()).await;
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let got = status_of(&refused(s.addr, head.as_bytes(), b"").await);
    assert!(matches!(got, None | Some(431)), "{got:?}");
    livez_within_bound(s.addr).await;
}

#[tokio::test]
async fn huge_request_line_gets_a_4xx_or_a_close() {
    let s = start(options()).await;
    let head = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(1 << 20));
    let got = status_of(&refused(s.addr, head.as_bytes(), b"").await);
    assert!(matches!(got, None | Some(400 | 414 | 431)), "{got:?}");
    livez_within_bound(s.addr).await;
}

#[tokio::test]
async fn many_small_headers_are_bounded_too() {
    let s = start(options()).await;
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-A: b\r\n".repeat(20_000)
    );
    let got = status_of(&refused(s.addr, head.as_bytes(), b"").await);
    assert!(matches!(got, None | Some(431)), "{got:?}");
    livez_within_bound(s.addr).await;
}

#[tokio::test]
async fn body_on_get_gets_413_or_a_close() {
    let s = start(options()).await;
    let body = vec![b'z'; 8 << 20];
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let raw = refused(s.addr, head.as_bytes(), &body).await;
    // The 413 is normally read; a reset racing the unread body may lose it.
    assert!(matches!(status_of(&raw), None | Some(413)), "{raw:?}");
    livez_within_bound(s.addr).await;
}
