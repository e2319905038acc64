//! SIGTERM in every phase of a run (identity lookup before vzdump, pre hooks, polling is in
//! tests/agent/failures.rs, post hooks) and SIGKILL during post hooks. The agent stops promptly,
//! never starts anything new after SIGTERM, runs the post hooks it owes (marker files prove it),
//! says what happened, and the next start repairs what is left. (SIGKILL before vzdump, after
//! the POST before the UPID is journaled, and while polling are in tests/agent/crash.rs.)

use std::time::{Duration, Instant};

use pve_sim::{FaultKind, FaultSpec};

use crate::env::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_looking_up_the_guest_starts_nothing() {
    let env = Env::local(20.0, |s| s).await;
    env.configure(&env.hook("app", 0.0, 0.0));
    env.sim.add_fault(FaultSpec {
        method: Some("GET".into()),
        path: Some("/cluster/resources".into()),
        kind: FaultKind::Hang,
        count: None,
    });
    let child = env.spawn(&["backup-now", "--json"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&child, libc::SIGTERM);
    let t0 = Instant::now();
    let r = env.finish(child, "backup-now").await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "prompt: {:?}",
        t0.elapsed()
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("interrupted") && err.contains("nothing was started"),
        "{err}"
    );
    assert!(env.marker().is_empty(), "no hook ran: {:?}", env.marker());
    assert_eq!(env.vzdump_posts(), 0);
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_pre_hooks_unwinds_them_and_starts_no_vzdump() {
    let env = Env::local(20.0, |s| s).await;
    env.configure(&(env.hook("a", 1.0, 0.0) + &env.hook("b", 0.0, 0.0)));
    let child = env.spawn(&["backup-now", "--json"]);
    env.wait_marker("a-pre").await;
    signal(&child, libc::SIGTERM);
    let r = env.finish(child, "backup-now").await;
    assert!(r.took < Duration::from_secs(5), "{:?}", r.took);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("interrupted before vzdump was requested; nothing was started"),
        "{err}"
    );
    // a's pre finished (hooks are never killed by a signal to the agent), b's never started,
    // and a's post ran.
    assert_eq!(
        env.marker(),
        ["a-pre", "a-pre-done", "a-post", "a-post-done"]
    );
    assert_eq!(env.vzdump_posts(), 0);
    let st = env.state();
    assert_eq!(st["runs"][0]["result"], "failed");
    assert!(st["pending"].is_null());
    assert!(!env.dir.join("state/journal.json").exists(), "nothing owed");
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_post_hooks_lets_them_finish_and_the_restart_reattaches() {
    let env = Env::local(20.0, |s| s.replace("duration = 20.0", "duration = 600.0")).await;
    env.configure(&env.hook("app", 0.0, 1.0));
    let child = env.spawn(&["backup-now", "--json"]);
    env.wait_marker("app-post").await;
    signal(&child, libc::SIGTERM);
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.took < Duration::from_secs(5), "{:?}", r.took);
    let j = r.json();
    let upid = j["upid"].as_str().unwrap().to_string();
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains(&format!("interrupted; {upid} keeps running on pve1")),
        "{j}"
    );
    assert_eq!(
        env.marker(),
        ["app-pre", "app-pre-done", "app-post", "app-post-done"]
    );
    let st = env.state();
    assert_eq!(st["pending"]["upid"], upid.as_str());
    assert_eq!(st["pending"]["reason"], "agent stopped");
    env.sim.advance(700.0);
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["upid"], upid.as_str());
    assert_eq!(j["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1, "no second vzdump");
    assert_eq!(env.marker().len(), 4, "the post is not run twice");
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_post_hooks_then_restart_reruns_the_owed_post_and_reattaches() {
    let env = Env::local(20.0, |s| s.replace("duration = 20.0", "duration = 600.0")).await;
    env.configure(&env.hook("app", 0.0, 0.5));
    let mut child = env.spawn(&["backup-now", "--json"]);
    env.wait_marker("app-post").await;
    child.kill().unwrap();
    let _ = env.finish(child, "killed backup-now").await;
    let upid = env.state()["pending"]["upid"].as_str().unwrap().to_string();
    env.wait_marker("app-post-done").await; // the orphaned hook finishes on its own
    env.sim.advance(700.0);
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["upid"], upid.as_str(), "{j}");
    assert_eq!(j["result"], "ok");
    let repaired: Vec<&str> = j["repaired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        repaired
            .iter()
            .any(|n| n.contains("ran post hooks owed by an interrupted run: app")),
        "{repaired:?}"
    );
    // The post whose completion was not journaled runs again (at least once, never zero).
    assert_eq!(
        env.marker(),
        [
            "app-pre",
            "app-pre-done",
            "app-post",
            "app-post-done",
            "app-post",
            "app-post-done"
        ]
    );
    assert_eq!(env.vzdump_posts(), 1, "no second vzdump");
    let st = env.state();
    assert!(st["pending"].is_null());
    assert_eq!(st["runs"][0]["upid"], upid.as_str());
    assert!(!env.dir.join("state/journal.json").exists());
    env.assert_no_secret().await;
}
