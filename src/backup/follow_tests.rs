//! Unit tests of `follow` against the scripted TLS test server and a simulated clock: the
//! bounded tolerance of HTTP >= 500 answers while reading the task log/status.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::pve::test_server::{Reply, ok_json, self_signed, settings, start};
use crate::pve::tls::cert_fingerprint;

const UPID: &str = "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:";

/// A clock that advances by exactly what is slept and records every wait.
#[derive(Default)]
struct SimClock {
    now: Mutex<f64>,
    waits: Mutex<Vec<Duration>>,
}

impl Clock for SimClock {
    fn now(&self) -> f64 {
        *self.now.lock().unwrap()
    }
    fn sleep(
        &self,
        d: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        *self.now.lock().unwrap() += d.as_secs_f64();
        self.waits.lock().unwrap().push(d);
        Box::pin(async {})
    }
}

struct Never;

impl Shutdown for Never {
    fn requested(&self) -> bool {
        false
    }
    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

fn e500() -> Reply {
    Reply::Http(
        "500 Internal Server Error",
        r#"{"data":null,"message":"unable to read task log"}"#.into(),
    )
}

fn running_log() -> Reply {
    ok_json(r#"{"data":[{"n":1,"t":"INFO: starting new backup job: vzdump 101"}],"total":1}"#)
}

fn done_log(from: u32) -> Reply {
    ok_json(&format!(
        r#"{{"data":[{{"n":{from},"t":"INFO: Backup job finished successfully"}},{{"n":{},"t":"TASK OK"}}],"total":{}}}"#,
        from + 1,
        from + 1
    ))
}

fn stopped() -> Reply {
    ok_json(&format!(
        r#"{{"data":{{"status":"stopped","exitstatus":"OK","upid":"{UPID}","node":"pve1","type":"vzdump","id":"101","user":"backup@pve","tokenid":"guestd","starttime":1735707601,"pid":123456,"pstart":8765432}}}}"#
    ))
}

struct Outcome {
    followed: Followed,
    requests: usize,
    waits: Vec<Duration>,
}

async fn run(replies: Vec<Reply>) -> Outcome {
    let certs = self_signed();
    let srv = start(&certs, replies, e500()).await;
    let client = PveClient::new(settings(
        srv.port,
        Some(cert_fingerprint(&certs.leaf_der)),
        None,
    ))
    .unwrap();
    let clock = SimClock::default();
    let upid: Upid = UPID.parse().unwrap();
    let opts = FollowOpts {
        guest: GuestType::Qemu,
        mode: Mode::Snapshot,
        release_at_cp: false,
        task_timeout: Duration::from_secs(3600),
        expected: None,
        detach_after_release: false,
    };
    let mut scan = LogScan::new(GuestType::Qemu, Mode::Snapshot);
    let mut stats = FollowStats::default();
    let followed = follow(
        &client,
        &clock,
        &upid,
        &opts,
        &mut scan,
        &Never,
        async || {},
        &mut stats,
    )
    .await;
    let requests = srv.seen.lock().unwrap().requests.len();
    Outcome {
        followed,
        requests,
        waits: clock.waits.into_inner().unwrap(),
    }
}

#[tokio::test]
async fn three_consecutive_500s_are_survived_with_at_least_a_second_between_tries() {
    let o = run(vec![
        running_log(),
        e500(),
        e500(),
        e500(),
        done_log(2),
        stopped(),
    ])
    .await;
    match &o.followed {
        Followed::Stopped { status } => assert_eq!(status.exitstatus.as_deref(), Some("OK")),
        other => panic!("{other:?}"),
    }
    assert_eq!(o.requests, 6);
    // One wait after the running log, one after each 500 (each >= 1 s).
    assert_eq!(o.waits.len(), 4, "{:?}", o.waits);
    assert!(
        o.waits[1..].iter().all(|w| *w >= SERVER_ERROR_WAIT),
        "{:?}",
        o.waits
    );
}

#[tokio::test]
async fn the_fifth_consecutive_500_loses_track() {
    let o = run(vec![running_log()]).await; // every later answer is a 500
    match &o.followed {
        Followed::Lost(ApiError::Server {
            call,
            status,
            message,
        }) => {
            assert!(call.starts_with("GET /nodes/pve1/tasks/"), "{call}");
            assert_eq!(*status, 500);
            assert_eq!(message, "unable to read task log");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(o.requests, 1 + MAX_SERVER_ERRORS as usize);
    assert_eq!(o.waits.len(), 1 + MAX_SERVER_ERRORS as usize - 1);
}

#[tokio::test]
async fn a_successful_read_resets_the_streak() {
    let mut replies = vec![running_log()];
    replies.extend(std::iter::repeat_with(e500).take(4));
    replies.push(ok_json(r#"{"data":[],"total":1}"#));
    replies.extend(std::iter::repeat_with(e500).take(4));
    replies.extend([done_log(2), stopped()]);
    let o = run(replies).await;
    assert!(
        matches!(o.followed, Followed::Stopped { .. }),
        "{:?}",
        o.followed
    );
    assert_eq!(o.requests, 12);
}

#[tokio::test]
async fn a_403_still_loses_track_at_once() {
    let o = run(vec![
        running_log(),
        Reply::Http(
            "403 Permission check failed",
            r#"{"data":null,"message":"Permission check failed (/vms/101, VM.Audit)"}"#.into(),
        ),
    ])
    .await;
    assert!(
        matches!(o.followed, Followed::Lost(ApiError::Forbidden { .. })),
        "{:?}",
        o.followed
    );
    assert_eq!(o.requests, 2);
}
