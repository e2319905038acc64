//! Failures an operator must be able to act on: task failure, bare "OK", 401, 403, wrong guest,
//! transient storms and idle closes while polling, lock busy.

use pve_sim::{FaultKind, FaultSpec};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_failure_unwinds_hooks_and_explains() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| {
        s.replace(
            "shutdown = 3.0",
            "shutdown = 3.0\noutcome = \"error:storage pbs-main is full\"",
        )
    })
    .await;
    env.write_config(&env.config_text("felhom101@pve!agent", &(env.hook("a") + &env.hook("b"))));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["result"], "failed");
    assert_eq!(j["exitstatus"], "job errors");
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains("ERROR: Backup of VM 101 failed - storage pbs-main is full"),
        "{err}"
    );
    let m = env.marker();
    assert_eq!(m[..2], ["a-pre 101 snapshot", "b-pre 101 snapshot"]);
    assert!(
        m[2].starts_with("b-post") && m[3].starts_with("a-post"),
        "posts in reverse order: {m:?}"
    );
    let st = env.state();
    assert_eq!(st["runs"][0]["result"], "failed");
    assert_eq!(st["consecutive_failures"], 1);
    assert!(
        st["runs"][0]["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("is full"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pre_hook_aborts_before_vzdump() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let m = env.dir.join("marker");
    let extra = format!(
        "{}\n[[quiesce.hooks]]\nname = \"bad\"\npre = [\"/bin/sh\", \"-c\", \"echo nope; exit 7\"]\npost = [\"/bin/sh\", \"-c\", \"echo bad-post >> {}\"]\n",
        env.hook("a"),
        m.display()
    );
    env.write_config(&env.config_text("felhom101@pve!agent", &extra));
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("pre hook \"bad\" failed (exit status 7)"),
        "{}",
        r.stdout
    );
    assert_eq!(env.marker().len(), 2);
    assert!(
        env.marker()[1].starts_with("a-post"),
        "the succeeded hook is unwound: {:?}",
        env.marker()
    );
    assert!(
        env.posts("/nodes/{node}/vzdump").is_empty(),
        "no vzdump after an aborted quiesce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_ok_is_recognised_and_never_taken_as_success() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.write_config(&env.config_text("felhom101@pve!agent", &env.hook("app")));
    env.sim.add_fault(FaultSpec {
        method: Some("POST".into()),
        path: Some("/nodes/{node}/vzdump".into()),
        kind: FaultKind::Respond {
            code: 200,
            body: serde_json::json!({"data": "OK"}),
        },
        count: None,
    });
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("started no task") && err.contains("guest 101"),
        "{err}"
    );
    assert!(
        env.marker().iter().any(|l| l.starts_with("app-post")),
        "hooks released"
    );
    assert_eq!(env.state()["runs"][0]["result"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_is_401_with_advice() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    write_secret(
        &env.dir.join("token"),
        "00000000-0000-0000-0000-000000000000",
    );
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("authentication failed (401)")
            && r.stdout.contains("GET /cluster/resources"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("00000000-0000-0000-0000-000000000000"),
        "not even a wrong secret is printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mis_scoped_storage_is_403_naming_call_vmid_and_privilege() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.write_config(
        &env.config_text("felhom101@pve!agent", "")
            .replace("storage = \"pbs-main\"", "storage = \"local\""),
    );
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("guest 101") && err.contains("POST /nodes/pve1/vzdump"),
        "{err}"
    );
    assert!(
        err.contains("Permission check failed (/storage/local, Datastore.AllocateSpace)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_guest_is_refused_before_any_mutation() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    std::fs::write(
        env.dir.join("sys/class/dmi/id/product_uuid"),
        "00000000-1111-2222-3333-444444444444\n",
    )
    .unwrap();
    let r = env.run(&["backup-now"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("00000000-1111-2222-3333-444444444444")
            && r.stdout.contains("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51"),
        "{}",
        r.stdout
    );
    assert!(
        env.sim.requests().iter().all(|r| r.method == "GET"),
        "nothing mutating was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_storms_and_idle_closes_during_polling_are_survived() {
    let env = Env::start(Guest::Qemu101, 10.0, |s| {
        s.replace("[settings]", "[settings]\nkeepalive-idle-ms = 100")
    })
    .await;
    for (code, msg) in [(503, "Service Unavailable"), (596, "Broken pipe")] {
        env.sim.add_fault(FaultSpec {
            method: Some("GET".into()),
            path: Some("/nodes/pve1/tasks/*".into()),
            kind: FaultKind::Status {
                code,
                message: msg.into(),
            },
            count: Some(3),
        });
    }
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["result"], "ok");
    let faulted = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert_eq!(faulted, 6, "all injected faults were hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_while_one_runs_is_busy_exit_3() {
    let env = Env::start(Guest::Qemu101, 1.0, |s| {
        s.replace("duration = 20.0", "duration = 600.0")
    })
    .await;
    let mut first = env.spawn(&["backup-now"]);
    env.sim
        .wait_event(std::time::Duration::from_secs(20), |e| {
            e.kind == "task-started"
        })
        .await
        .expect("first started");
    // Give the first run a moment to record the UPID in its lock.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "busy");
    let err = j["error"].as_str().unwrap();
    assert!(
        err.contains("backup-now") && err.contains("UPID:pve1:"),
        "names the running job and its UPID: {err}"
    );
    first.kill().unwrap();
    let _ = first.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_timeout_releases_records_and_keeps_the_upid_pending() {
    let env = Env::start(Guest::Qemu101, 1.0, |s| {
        s.replace("duration = 20.0", "duration = 3600.0")
    })
    .await;
    let text = env
        .config_text("felhom101@pve!agent", &env.hook("app"))
        .replace("task-timeout = \"2m\"", "task-timeout = \"3s\"");
    env.write_config(&text);
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    let upid = j["upid"].as_str().unwrap().to_string();
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains(&format!("timed out waiting for {upid}")),
        "{j}"
    );
    assert!(
        env.marker().iter().any(|l| l.starts_with("app-post")),
        "owed post hooks ran"
    );
    let st = env.state();
    assert_eq!(st["pending"]["upid"], upid.as_str());
    assert_eq!(st["pending"]["reason"], "timed out");
    assert_eq!(st["runs"][0]["result"], "failed");
    // Later the task ends; the next start records how it really ended.
    env.sim.advance(4000.0);
    let r = env.run(&["status", "--json"]).await;
    let j = r.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["upid"], upid.as_str());
    assert_eq!(j["runs"][0]["result"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_polling_releases_and_persists_the_pending_task() {
    let env = Env::start(Guest::Qemu101, 1.0, |s| {
        s.replace("duration = 20.0", "duration = 3600.0")
    })
    .await;
    env.write_config(
        &env.config_text("felhom101@pve!agent", &env.hook("app"))
            .replace("[state]", "[quiesce]\nrelease = \"task-end\"\n\n[state]"),
    );
    let child = env.spawn(&["backup-now", "--json"]);
    env.sim
        .wait_event(std::time::Duration::from_secs(20), |e| e.kind == "fs-thaw")
        .await
        .expect("running");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !env.marker().iter().any(|l| l.starts_with("app-post")),
        "task-end release: still quiesced"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "exits promptly"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        env.marker().iter().any(|l| l.starts_with("app-post")),
        "post hooks ran before exiting"
    );
    let st = env.state();
    assert_eq!(st["pending"]["reason"], "agent stopped");
    assert!(
        env.sim.world().tasks.iter().any(|t| t.running()),
        "the task goes on without us"
    );
}
