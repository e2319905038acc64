//! Faults of the network itself, in real namespaces: the API unreachable at start (blackhole),
//! and a blackhole, TCP resets or the link down while the agent polls a running task, then the
//! network restored. The agent must fail in bounded time with a message naming the call, or
//! ride the outage out and record the result — never starting a second vzdump.

use std::time::Duration;

use crate::env::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_unreachable_at_start_fails_within_the_connect_budget_and_keeps_the_last_good_run() {
    let Some(env) = Env::with_net(20.0, |s| s).await else {
        return;
    };
    let ok = env.run(&["backup-now", "--json"]).await;
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    let good_upid = ok.json()["upid"].as_str().unwrap().to_string();
    env.net().blackhole();
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    // 4 attempts of a 2 s connect timeout plus back-off (≤ 3.5 s): well under 16 s.
    assert!(r.took < Duration::from_secs(16), "took {:?}", r.took);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("GET /cluster/resources") && err.contains("check [pve] url and the network")
            || err.contains("GET /cluster/resources") && err.contains("timeout"),
        "{err}"
    );
    assert!(
        err.contains("https://10.77.0.1:8006"),
        "names the server: {err}"
    );
    assert_eq!(env.vzdump_posts(), 1, "nothing new reached PVE");
    let st = env.state();
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{st}");
    assert!(
        runs.iter()
            .any(|r| r["upid"] == good_upid.as_str() && r["result"] == "ok"),
        "the good run is kept: {st}"
    );
    assert!(st["last_success"].is_i64(), "{st}");
    assert!(st["pending"].is_null());
    env.net().restore();
    env.assert_no_secret().await;
}

/// Starts a backup, holds its task, applies `fault` for `outage`, lifts it with `restore`,
/// releases the task and checks the run completes with exactly one vzdump.
async fn outage_mid_poll(env: &Env, fault: impl Fn(), restore: impl Fn(), outage: Duration) -> Run {
    env.configure(&env.hook("app", 0.0, 0.0));
    let child = env.spawn(&["backup-now", "--json"]);
    let upid = env.wait_task_started().await;
    env.hold(&upid, true);
    fault();
    // A request already on the wire when the fault went in may still land; none after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = env.sim.requests().len();
    tokio::time::sleep(outage).await;
    assert_eq!(
        env.sim.requests().len(),
        before,
        "no request got through during the outage"
    );
    restore();
    env.hold(&upid, false);
    env.sim.advance(60.0);
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "ok", "{j}");
    assert_eq!(j["upid"], upid.as_str());
    assert_eq!(env.vzdump_posts(), 1, "exactly one vzdump POST");
    assert!(
        env.requests_since(before)
            .iter()
            .any(|r| r.template.as_deref() == Some("/nodes/{node}/tasks/{upid}/status")),
        "polling resumed after the outage"
    );
    let st = env.state();
    assert_eq!(st["runs"][0]["result"], "ok", "{st}");
    assert_eq!(st["runs"][0]["upid"], upid.as_str());
    assert!(st["pending"].is_null(), "{st}");
    let m = env.marker();
    assert_eq!(
        m.iter().filter(|l| *l == "app-post").count(),
        1,
        "post ran exactly once: {m:?}"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_mid_poll_then_restored_completes_with_one_vzdump() {
    let Some(env) = Env::with_net(20.0, |s| s).await else {
        return;
    };
    let net = env.net();
    let r = outage_mid_poll(
        &env,
        || net.blackhole(),
        || net.restore(),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        r.stderr.contains("retrying GET") && r.stderr.contains("(timeout)"),
        "the outage is logged: {}",
        r.stderr
    );
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_resets_mid_poll_then_restored_completes_with_one_vzdump() {
    let Some(env) = Env::with_net(20.0, |s| s).await else {
        return;
    };
    let net = env.net();
    let r = outage_mid_poll(
        &env,
        || net.reset(),
        || net.restore(),
        Duration::from_secs(4),
    )
    .await;
    assert!(
        r.stderr.contains("retrying GET")
            && (r.stderr.contains("Connection refused") || r.stderr.contains("Connection reset")),
        "the resets are logged: {}",
        r.stderr
    );
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_down_mid_poll_then_up_completes_with_one_vzdump() {
    let Some(env) = Env::with_net(20.0, |s| s).await else {
        return;
    };
    let net = env.net();
    let r = outage_mid_poll(
        &env,
        || net.link(false),
        || net.link(true),
        Duration::from_secs(4),
    )
    .await;
    assert!(
        r.stderr.contains("retrying GET")
            && (r.stderr.contains("Network is unreachable") || r.stderr.contains("(timeout)")),
        "{}",
        r.stderr
    );
    env.assert_no_secret().await;
}
