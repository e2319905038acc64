//! Faults the API itself produces, injected with pve-sim's fault controls on loopback: bursts of
//! 502/503/595 at start and while polling, a short streak of 500s while polling (survived) and a
//! persistent 500 (lost), answers slower than the client timeout, hanging answers, connection
//! resets, a locked guest, the token revoked mid-run and the certificate renewed (pin mismatch)
//! mid-run. (503/596 bursts with idle keep-alive closes
//! are in tests/agent/failures.rs.)

use std::time::Duration;

use pve_sim::{FaultKind, FaultSpec};

use crate::env::*;

const TASKS: &str = "/nodes/pve1/tasks/*";

fn fault(method: &str, path: &str, kind: FaultKind, count: u32) -> FaultSpec {
    FaultSpec {
        method: Some(method.into()),
        path: Some(path.into()),
        kind,
        count: Some(count),
    }
}

fn status(code: u16, message: &str) -> FaultKind {
    FaultKind::Status {
        code,
        message: message.into(),
    }
}

fn hits(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_502_503_595_at_start_and_while_polling_are_retried() {
    let env = Env::local(20.0, |s| s).await;
    env.configure(&env.hook("app", 0.0, 0.0));
    env.sim.add_fault(fault(
        "GET",
        "/cluster/resources",
        status(503, "Service Unavailable"),
        2,
    ));
    env.sim.add_fault(fault(
        "GET",
        TASKS,
        status(
            595,
            "Errors during connection establishment, proxy handshake: Connection refused",
        ),
        3,
    ));
    env.sim
        .add_fault(fault("GET", TASKS, status(502, "Bad Gateway"), 2));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["result"], "ok");
    assert_eq!(hits(&env), 7, "every injected fault was hit");
    assert_eq!(env.vzdump_posts(), 1);
    assert!(r.stderr.contains("HTTP 595"), "{}", r.stderr);
    assert_eq!(env.state()["runs"][0]["result"], "ok");
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consecutive_500s_while_polling_are_survived() {
    let env = Env::local(20.0, |s| s.replace("duration = 20.0", "duration = 600.0")).await;
    env.configure(&env.hook("app", 0.0, 0.0));
    let child = env.spawn(&["backup-now", "--json"]);
    env.wait_task_started().await;
    env.sim.add_fault(fault(
        "GET",
        TASKS,
        status(500, "unable to read task log"),
        3,
    ));
    // All three 500s are answered while the task still runs; then it ends.
    let t0 = std::time::Instant::now();
    while hits(&env) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(30), "500s not hit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.sim.advance(700.0);
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["result"], "ok");
    assert_eq!(hits(&env), 3, "every injected 500 was hit");
    assert!(
        r.stderr.contains("failed with a server error; will retry"),
        "{}",
        r.stderr
    );
    assert_eq!(env.state()["runs"][0]["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}

/// A persistent 500 (here 50 in a row): the 5th consecutive one ends following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_while_polling_loses_track_but_keeps_the_task_for_the_next_start() {
    let env = Env::local(20.0, |s| s.replace("duration = 20.0", "duration = 600.0")).await;
    env.configure(&env.hook("app", 0.0, 0.0));
    let child = env.spawn(&["backup-now", "--json"]);
    let upid = env.wait_task_started().await;
    env.sim.add_fault(fault(
        "GET",
        TASKS,
        status(500, "unable to read task log"),
        50,
    ));
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.starts_with(&format!("lost track of {upid}: GET /nodes/pve1/tasks/"))
            && err.contains("500"),
        "{err}"
    );
    assert_eq!(hits(&env), 5, "the 5th consecutive 500 ends following");
    assert!(env.marker().contains(&"app-post".to_string()), "released");
    let st = env.state();
    assert_eq!(st["pending"]["upid"], upid.as_str());
    assert_eq!(st["pending"]["reason"], "lost");
    // Nothing is lost: once PVE answers again, the next start records how the task ended.
    env.sim.clear_faults();
    env.sim.advance(700.0);
    let s = env.run(&["status", "--json"]).await;
    let j = s.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["upid"], upid.as_str());
    assert_eq!(j["runs"][0]["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_client_timeout_and_hangs_are_retried() {
    let env = Env::local(20.0, |s| s).await;
    env.sim
        .add_fault(fault("GET", TASKS, FaultKind::Latency { ms: 3000 }, 1));
    env.sim.add_fault(fault("GET", TASKS, FaultKind::Hang, 1));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["result"], "ok");
    assert!(
        r.stderr.contains("no complete answer within 2s (timeout)"),
        "{}",
        r.stderr
    );
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_by_the_server_are_retried() {
    let env = Env::local(20.0, |s| s).await;
    env.sim
        .add_fault(fault("GET", "/cluster/resources", FaultKind::Reset, 1));
    env.sim.add_fault(fault("GET", TASKS, FaultKind::Reset, 3));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    assert_eq!(env.state()["runs"][0]["result"], "ok");
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_guest_fails_with_pves_message_and_releases() {
    let env = Env::local(20.0, |s| s).await;
    env.configure(&env.hook("app", 0.0, 0.0));
    env.sim.world().guests.get_mut(&101).unwrap().lock = Some("snapshot".into());
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("ERROR: Backup of VM 101 failed - VM is locked (snapshot)"),
        "{err}"
    );
    assert_eq!(
        env.marker(),
        ["app-pre", "app-pre-done", "app-post", "app-post-done"]
    );
    let st = env.state();
    assert_eq!(st["runs"][0]["result"], "failed");
    assert!(st["pending"].is_null());
    env.assert_no_secret().await;
}

/// Holds the task, applies `change` mid-run, releases it: the agent cannot follow any more.
async fn lose_mid_run(env: &Env, change: impl FnOnce()) -> (Run, String) {
    env.configure(&env.hook("app", 0.0, 0.0));
    let child = env.spawn(&["backup-now", "--json"]);
    let upid = env.wait_task_started().await;
    env.hold(&upid, true);
    change();
    env.hold(&upid, false);
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let st = env.state();
    assert_eq!(st["pending"]["upid"], upid.as_str(), "{st}");
    assert_eq!(st["pending"]["reason"], "lost");
    assert_eq!(st["runs"][0]["result"], "failed");
    assert_eq!(
        env.marker().iter().filter(|l| *l == "app-post").count(),
        1,
        "released once: {:?}",
        env.marker()
    );
    (r, upid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revoked_mid_run_is_a_401_and_the_task_stays_pending() {
    let env = Env::local(20.0, |s| s).await;
    let (r, upid) = lose_mid_run(&env, || {
        env.sim
            .world()
            .rbac
            .set_token_secret("felhom101@pve!agent", None)
            .unwrap();
    })
    .await;
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.starts_with(&format!("lost track of {upid}: "))
            && err.contains("authentication failed (401)"),
        "{err}"
    );
    // A new token (same secret for the test) and the next start records the result.
    env.sim
        .world()
        .rbac
        .set_token_secret("felhom101@pve!agent", Some(SECRET.to_string()))
        .unwrap();
    env.sim.advance(60.0);
    let j = env.run(&["status", "--json"]).await.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["upid"], upid.as_str());
    assert_eq!(j["runs"][0]["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_renewed_mid_run_fails_closed_naming_the_new_fingerprint() {
    // Idle keep-alive connections close after 100 ms, so the next poll handshakes again.
    let env = Env::local(20.0, |s| {
        s.replace("[settings]", "[settings]\nkeepalive-idle-ms = 100")
    })
    .await;
    let old = env.sim.fingerprint();
    let mut new_fp = String::new();
    let (r, upid) = lose_mid_run(&env, || new_fp = env.sim.rotate_cert().unwrap()).await;
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.starts_with(&format!("lost track of {upid}: ")) && err.contains(&new_fp),
        "{err}"
    );
    // No request carried the token over the unpinned certificate: every one after the
    // rotation failed in the handshake, so the simulator saw none of them.
    // The operator pins the new certificate; the next start records the result.
    let text = std::fs::read_to_string(env.dir.join("config.toml")).unwrap();
    std::fs::write(env.dir.join("config.toml"), text.replace(&old, &new_fp)).unwrap();
    env.sim.advance(60.0);
    let j = env.run(&["status", "--json"]).await.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}
