//! End-to-end tests of [`PveClient`] against the test server in [`crate::pve::test_server`].

use super::*;
use crate::pve::test_server::*;
use crate::pve::tls::{cert_fingerprint, format_fingerprint};
use crate::pve::types::TaskOutcome;

#[tokio::test]
async fn pinned_fingerprint_succeeds_and_sends_token_header() {
    let certs = self_signed();
    let srv = start(&certs, vec![], ok_json(VERSION)).await;
    let fp = cert_fingerprint(&certs.leaf_der);
    let c = PveClient::new(settings(srv.port, Some(fp), None)).unwrap();
    let v = c.version().await.unwrap();
    assert_eq!(v.version, "9.1.1");
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1);
    let req = &seen.requests[0];
    assert!(
        req.starts_with("GET /api2/json/version HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(
        req.to_ascii_lowercase().contains(
            &format!("authorization: pveapitoken={TOKEN}={SECRET}\r\n").to_ascii_lowercase()
        ),
        "{req}"
    );
    assert_eq!(c.request_counts(), RequestCounts { ok: 1, error: 0 });
}

#[tokio::test]
async fn wrong_pin_fails_before_any_http_byte() {
    let certs = self_signed();
    let srv = start(&certs, vec![], ok_json(VERSION)).await;
    let real = format_fingerprint(&cert_fingerprint(&certs.leaf_der));
    let wrong = [0x11u8; 32];
    let c = PveClient::new(settings(srv.port, Some(wrong), None))
        .unwrap()
        .with_sleeper(Arc::new(RecordingSleeper::default()));
    let e = c.version().await.unwrap_err();
    match &e {
        ApiError::Tls {
            call,
            presented,
            message,
        } => {
            assert_eq!(call, "GET /version");
            assert_eq!(presented.as_deref(), Some(real.as_str()));
            assert!(
                message.contains(&format!(
                    "server certificate fingerprint is {real}, expected {}; if the node certificate was renewed, update [pve] fingerprint",
                    format_fingerprint(&wrong)
                )),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert_no_secret(&e.to_string());
    assert_no_secret(&format!("{e:?}"));
    // The client rejected the certificate before sending its Finished message, so the server
    // can never have completed the handshake nor received plaintext.
    let seen = srv.seen.lock().unwrap();
    assert!(seen.requests.is_empty(), "server read request bytes");
    assert_eq!(seen.handshakes_ok, 0);
    assert_eq!(c.request_counts(), RequestCounts { ok: 0, error: 1 });
}

#[tokio::test]
async fn ca_signed_leaf_accepted_without_pin() {
    let certs = ca_signed();
    let srv = start(&certs, vec![], ok_json(VERSION)).await;
    let c = PveClient::new(settings(srv.port, None, certs.ca_pem.as_deref())).unwrap();
    assert_eq!(c.version().await.unwrap().release, "9.1");
}

#[tokio::test]
async fn ca_mismatch_without_pin_fails_closed() {
    let certs = ca_signed();
    let other_ca = ca_signed().ca_pem.unwrap();
    let srv = start(&certs, vec![], ok_json(VERSION)).await;
    let c = PveClient::new(settings(srv.port, None, Some(&other_ca))).unwrap();
    let e = c.version().await.unwrap_err();
    let real = format_fingerprint(&cert_fingerprint(&certs.leaf_der));
    match &e {
        ApiError::Tls {
            presented, message, ..
        } => {
            assert_eq!(presented.as_deref(), Some(real.as_str()));
            assert!(
                message.contains("server certificate is not trusted by the configured CA"),
                "{message}"
            );
            assert!(message.contains(&real), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(srv.seen.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn ca_mismatch_falls_back_to_pin() {
    let certs = ca_signed();
    let other_ca = ca_signed().ca_pem.unwrap();
    let srv = start(&certs, vec![], ok_json(VERSION)).await;
    let fp = cert_fingerprint(&certs.leaf_der);
    let c = PveClient::new(settings(srv.port, Some(fp), Some(&other_ca))).unwrap();
    assert_eq!(c.version().await.unwrap().version, "9.1.1");
}

#[tokio::test]
async fn forbidden_read_from_reason_phrase_of_old_pve() {
    let certs = self_signed();
    let srv = start(
        &certs,
        vec![Reply::Http(
            "403 Permission check failed (/vms/999, VM.Audit)",
            r#"{"data":null}"#.into(),
        )],
        ok_json(VERSION),
    )
    .await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap();
    let e = c
        .get::<serde_json::Value>("/nodes/pve1/qemu/999/status/current", &[])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ApiError::Forbidden {
            call: "GET /nodes/pve1/qemu/999/status/current".into(),
            path: Some("/vms/999".into()),
            privilege: Some("VM.Audit".into()),
            message: "Permission check failed (/vms/999, VM.Audit)".into(),
        }
    );
    // Not retried.
    assert_eq!(srv.seen.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn unauthorized_and_wrong_node() {
    let certs = self_signed();
    let srv = start(
        &certs,
        vec![
            Reply::Http("401 Authentication failed!", String::new()),
            Reply::Http(
                "500 Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist",
                r#"{"data":null,"message":"Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist\n"}"#.into(),
            ),
        ],
        ok_json(VERSION),
    )
    .await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap();
    let e = c.version().await.unwrap_err();
    assert_eq!(
        e,
        ApiError::Unauthorized {
            call: "GET /version".into()
        }
    );
    assert_no_secret(&e.to_string());
    let e = c
        .get::<serde_json::Value>(["nodes", "pve1", "qemu", "101", "config"], &[])
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn get_retries_once_immediately_after_early_close() {
    for first in [Reply::Close, Reply::Drop] {
        retry_once_after(first).await;
    }
}

async fn retry_once_after(first: Reply) {
    let certs = self_signed();
    let srv = start(&certs, vec![first], ok_json(VERSION)).await;
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_retry_policy(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    })
    .with_sleeper(sleeper.clone());
    assert_eq!(c.version().await.unwrap().version, "9.1.1");
    assert!(sleeper.0.lock().unwrap().is_empty());
    assert_eq!(c.request_counts(), RequestCounts { ok: 1, error: 1 });
    assert_eq!(srv.seen.lock().unwrap().requests.len(), 2);

    // Only one immediate retry: two early closes in a row with max_attempts 1 fail.
    let srv = start(&certs, vec![Reply::Close, Reply::Close], ok_json(VERSION)).await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_retry_policy(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    })
    .with_sleeper(sleeper.clone());
    let e = c.version().await.unwrap_err();
    match e {
        ApiError::Transport {
            message, retryable, ..
        } => {
            assert!(retryable);
            assert!(
                message.starts_with("connection closed before message completed"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.seen.lock().unwrap().requests.len(), 2);
}

#[tokio::test]
async fn get_backs_off_on_proxy_errors_then_gives_up() {
    let certs = self_signed();
    let srv = start(
        &certs,
        vec![
            Reply::Http("596 Broken pipe", String::new()),
            Reply::Http("503 Service Unavailable", String::new()),
        ],
        ok_json(VERSION),
    )
    .await;
    let sleeper = Arc::new(RecordingSleeper::default());
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(150),
    };
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_retry_policy(policy)
    .with_sleeper(sleeper.clone());
    assert_eq!(c.version().await.unwrap().version, "9.1.1");
    let delays = sleeper.0.lock().unwrap().clone();
    assert_eq!(delays.len(), 2);
    assert!((50..=100).contains(&delays[0].as_millis()), "{delays:?}");
    assert!((75..=150).contains(&delays[1].as_millis()), "{delays:?}");
    assert_eq!(c.request_counts(), RequestCounts { ok: 1, error: 2 });

    // Exhausted attempts: the last error is returned.
    let srv = start(
        &certs,
        vec![],
        Reply::Http("595 Connection refused", String::new()),
    )
    .await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_retry_policy(policy)
    .with_sleeper(Arc::new(RecordingSleeper::default()));
    let e = c.version().await.unwrap_err();
    assert!(e.is_retryable());
    assert_eq!(
        e.to_string(),
        "GET /version: HTTP 595 Connection refused (cluster proxy error) (transient; retried for reads)"
    );
    assert_eq!(srv.seen.lock().unwrap().requests.len(), 3);
}

#[tokio::test]
async fn post_put_delete_are_never_retried() {
    let certs = self_signed();
    let srv = start(
        &certs,
        vec![],
        Reply::Http("503 Service Unavailable", String::new()),
    )
    .await;
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_sleeper(sleeper.clone());
    let form = [("vmid", "101".to_string()), ("storage", "nas".to_string())];
    let e = c
        .post_form::<String>("/nodes/pve1/vzdump", &form)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "classification still says transient");
    c.put_form::<()>("/x", &form).await.unwrap_err();
    c.delete::<()>("/x", &[]).await.unwrap_err();
    assert_eq!(srv.seen.lock().unwrap().requests.len(), 3);
    assert!(sleeper.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn request_shapes_path_encoding_query_and_form() {
    let certs = self_signed();
    let upid = "UPID:pve1:0001E241:0085C03B:6774CC34:imgdel:101@nas:backup@pve!guestd:";
    let srv = start(
        &certs,
        vec![
            ok_json(&format!(r#"{{"data":"{upid}"}}"#)),
            ok_json(r#"{"data":"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:"}"#),
            ok_json(r#"{"data":[{"n":1,"t":"INFO: starting"},{"n":2,"t":"TASK OK"}],"total":2}"#),
            ok_json(r#"{"data":{"upid":"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:","node":"pve1","pid":123456,"pstart":8765432,"starttime":1735707601,"type":"vzdump","id":"101","user":"backup@pve","tokenid":"guestd","status":"stopped","exitstatus":"OK"}}"#),
        ],
        ok_json(VERSION),
    )
    .await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap();
    let volid = "nas:backup/vzdump-qemu-101-2025_01_01-05_00_01.vma.zst";
    let r: crate::pve::types::TaskStart = c
        .delete(
            ["nodes", "pve1", "storage", "nas", "content", volid],
            &[("delay", "5".to_string())],
        )
        .await
        .unwrap();
    assert!(matches!(r, crate::pve::types::TaskStart::Started(ref u) if u.to_string() == upid));
    let u: Upid = c
        .post_form(
            "/nodes/pve1/vzdump",
            &[
                ("vmid", "101".into()),
                ("notes-template", "a b&c".into()),
                ("remove", "0".into()),
            ],
        )
        .await
        .unwrap();
    let log = c.task_log(&u, 0, 0).await.unwrap();
    assert_eq!(log.total, 2);
    assert_eq!(log.lines[1].t, "TASK OK");
    let st = c.task_status(&u).await.unwrap();
    assert_eq!(st.outcome(), Some(TaskOutcome::Ok));

    let seen = srv.seen.lock().unwrap();
    let first_line = |i: usize| seen.requests[i].lines().next().unwrap().to_string();
    assert_eq!(
        first_line(0),
        "DELETE /api2/json/nodes/pve1/storage/nas/content/nas%3Abackup%2Fvzdump-qemu-101-2025_01_01-05_00_01.vma.zst?delay=5 HTTP/1.1"
    );
    assert!(
        !seen.requests[0]
            .to_ascii_lowercase()
            .contains("content-length")
    );
    assert_eq!(first_line(1), "POST /api2/json/nodes/pve1/vzdump HTTP/1.1");
    assert!(
        seen.requests[1].ends_with("\r\n\r\nvmid=101&notes-template=a+b%26c&remove=0"),
        "{}",
        seen.requests[1]
    );
    assert!(
        seen.requests[1]
            .to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded")
    );
    let enc_upid =
        "UPID%3Apve1%3A0001E240%3A0085BFF8%3A6774CBD1%3Avzdump%3A101%3Abackup%40pve%21guestd%3A";
    assert_eq!(
        first_line(2),
        format!("GET /api2/json/nodes/pve1/tasks/{enc_upid}/log?start=0&limit=0 HTTP/1.1")
    );
    assert_eq!(
        first_line(3),
        format!("GET /api2/json/nodes/pve1/tasks/{enc_upid}/status HTTP/1.1")
    );
}

#[tokio::test]
async fn body_cap_and_bad_json_are_decode_errors() {
    let certs = self_signed();
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(5000));
    let srv = start(
        &certs,
        vec![ok_json(&big), ok_json("not json")],
        ok_json(VERSION),
    )
    .await;
    let c = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap()
    .with_max_body(1024);
    let e = c.get::<String>("/big", &[]).await.unwrap_err();
    assert_eq!(
        e,
        ApiError::Decode {
            call: "GET /big".into(),
            message: "response too large: the limit is 1024 bytes, the body has 5011 bytes (Content-Length)".into()
        }
    );
    let e = c.get::<String>("/bad", &[]).await.unwrap_err();
    assert!(
        matches!(e, ApiError::Decode { ref call, .. } if call == "GET /bad"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

/// A hostile 100 MiB body: the client stops at the 16 MiB cap with an error naming the call;
/// the server could write only the cap plus socket buffers, far below the body size.
#[tokio::test]
async fn hundred_mib_bodies_stop_at_the_default_cap() {
    const BODY: u64 = 100 << 20;
    let certs = self_signed();
    for chunked in [true, false] {
        let srv = start(
            &certs,
            vec![Reply::Stream {
                bytes: BODY,
                chunked,
            }],
            ok_json(VERSION),
        )
        .await;
        let c = PveClient::new(settings(
            srv.port,
            Some(cert_fingerprint(&certs.leaf_der)),
            None,
        ))
        .unwrap();
        let e = c
            .get::<serde_json::Value>("/nodes/pve1/qemu/101/snapshot", &[])
            .await
            .unwrap_err();
        let size = if chunked {
            "more than that".to_string()
        } else {
            format!("{BODY} bytes (Content-Length)")
        };
        assert_eq!(
            e,
            ApiError::Decode {
                call: "GET /nodes/pve1/qemu/101/snapshot".into(),
                message: format!(
                    "response too large: the limit is {DEFAULT_MAX_BODY} bytes, the body has {size}"
                ),
            }
        );
        assert!(!e.is_retryable(), "a retry would download it again");
        drop(c);
        let streamed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (ended, streamed) = {
                    let seen = srv.seen.lock().unwrap();
                    (seen.stream_ended, seen.streamed)
                };
                if ended {
                    return streamed;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the server's writer saw the client go away");
        let cap = DEFAULT_MAX_BODY as u64;
        if chunked {
            assert!(streamed >= cap, "{streamed}");
        } else {
            assert!(
                streamed < cap,
                "refused by Content-Length, yet read {streamed} bytes"
            );
        }
        assert!(
            streamed < cap + (24 << 20),
            "chunked={chunked}: the server wrote {streamed} bytes of {BODY}"
        );
        assert_eq!(srv.seen.lock().unwrap().requests.len(), 1, "not retried");
    }
}

#[tokio::test]
async fn connect_refused_is_retryable_transport() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = PveClient::new(settings(port, Some([0; 32]), None))
        .unwrap()
        .with_retry_policy(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        })
        .with_sleeper(sleeper.clone());
    let e = c.version().await.unwrap_err();
    match &e {
        ApiError::Transport {
            call,
            message,
            retryable,
        } => {
            assert_eq!(call, "GET /version");
            assert!(*retryable);
            assert!(
                message.starts_with(&format!(
                    "cannot connect to https://127.0.0.1:{port}/api2/json"
                )),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sleeper.0.lock().unwrap().len(), 1);
    assert_eq!(c.request_counts(), RequestCounts { ok: 0, error: 2 });
}

#[test]
fn settings_validation_and_redaction() {
    let ok = settings(8006, Some([0xAB; 32]), None);
    let dbg = format!("{ok:?}");
    assert_no_secret(&dbg);
    assert!(dbg.contains("<redacted>"));
    let c = PveClient::new(ok.clone()).unwrap();
    assert_no_secret(&format!("{c:?}"));
    assert_eq!(c.token_id(), TOKEN);

    let cases: Vec<(ClientSettings, &str)> = vec![
        (
            ClientSettings {
                base_url: "http://127.0.0.1:8006".into(),
                ..ok.clone()
            },
            "invalid PVE client settings: [pve] url 'http://127.0.0.1:8006' must use https",
        ),
        (
            ClientSettings {
                base_url: "https://127.0.0.1:8006/api2/json".into(),
                ..ok.clone()
            },
            "invalid PVE client settings: [pve] url 'https://127.0.0.1:8006/api2/json' must be https://host[:port] without path, query or credentials",
        ),
        (
            ClientSettings {
                token_id: "backup@pve".into(),
                ..ok.clone()
            },
            "invalid PVE client settings: [pve] token_id 'backup@pve' must be a full token id like user@pve!name",
        ),
        (
            ClientSettings {
                secret: format!("{SECRET} x"),
                ..ok.clone()
            },
            "invalid PVE client settings: [pve] secret must be the non-empty token value (printable ASCII, no spaces)",
        ),
        (
            ClientSettings {
                fingerprint: None,
                ..ok.clone()
            },
            "invalid PVE client settings: no TLS trust configured: set [pve] fingerprint (from `pvenode cert info`) or a CA file",
        ),
    ];
    for (s, want) in cases {
        let e = PveClient::new(s).unwrap_err();
        assert_eq!(e.to_string(), want);
        assert_no_secret(&format!("{e:?}"));
    }
}

#[test]
fn api_path_encoding() {
    let p = ApiPath::from("/nodes/pve1/qemu/101/status/current");
    assert_eq!(p.encoded(), "/nodes/pve1/qemu/101/status/current");
    assert_eq!(p.display(), "/nodes/pve1/qemu/101/status/current");
    let p = ApiPath::from([
        "nodes",
        "pve1",
        "storage",
        "pbs",
        "content",
        "pbs:backup/vm/101/2025-01-01T05:00:01Z",
    ]);
    assert_eq!(
        p.encoded(),
        "/nodes/pve1/storage/pbs/content/pbs%3Abackup%2Fvm%2F101%2F2025-01-01T05%3A00%3A01Z"
    );
    assert_eq!(
        p.display(),
        "/nodes/pve1/storage/pbs/content/pbs:backup/vm/101/2025-01-01T05:00:01Z"
    );
}
