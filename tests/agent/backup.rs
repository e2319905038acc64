//! Successful runs: qemu and lxc snapshot mode, warnings, consistency-point release, migration.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_snapshot_backup_end_to_end() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.write_config(&env.config_text("felhom101@pve!agent", &env.hook("app")));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "ok");
    assert_eq!(j["vmid"], 101);
    assert_eq!(j["node"], "pve1");
    assert_eq!(j["exitstatus"], "OK");
    assert!(j["upid"].as_str().unwrap().starts_with("UPID:pve1:"));
    assert!(j["quiesce_window_seconds"].as_f64().unwrap() > 0.0);
    for k in ["started", "finished"] {
        assert!(j[k].as_str().unwrap().ends_with('Z'), "{k} is RFC 3339 UTC");
    }
    // Exactly one vzdump, with exactly the parameters a narrow token may send.
    let posts = env.posts("/nodes/{node}/vzdump");
    assert_eq!(posts.len(), 1);
    let keys: Vec<&str> = posts[0].params.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["compress", "mode", "notes-template", "storage", "vmid"]
    );
    assert_eq!(posts[0].params["storage"], "pbs-main");
    assert_eq!(
        posts[0].params["notes-template"],
        "{{guestname}} via felhom-agent"
    );
    // Every request was accepted by the schema-validating simulator and none was mutating but
    // the vzdump; task reads go to the node in the UPID.
    let reqs = env.sim.requests();
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "{:#?}",
        reqs.iter().filter(|r| r.status != 200).collect::<Vec<_>>()
    );
    assert!(reqs.iter().filter(|r| r.method != "GET").count() == 1);
    assert!(
        reqs.iter()
            .any(|r| r.template.as_deref() == Some("/nodes/{node}/tasks/{upid}/log"))
    );
    // Hooks: pre, then post with the UPID.
    let m = env.marker();
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0], "app-pre 101 snapshot");
    assert!(
        m[1].starts_with("app-post 101 snapshot UPID:pve1:"),
        "{m:?}"
    );
    // The state file holds the run.
    let st = env.state();
    let run = &st["runs"][0];
    assert_eq!(run["result"], "ok");
    assert_eq!(run["exitstatus"], "OK");
    assert_eq!(run["upid"], j["upid"]);
    assert!(st["pending"].is_null());
    // The backup exists on the storage.
    assert_eq!(
        env.sim.world().storages["pbs-main"]
            .volumes
            .iter()
            .filter(|v| v.vmid == 101)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lxc_snapshot_backup_identified_by_mac() {
    let env = Env::start(Guest::Lxc103, 20.0, |s| s).await;
    env.write_config(&env.config_text("felhom103@pve!agent", &env.hook("db")));
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(
        (j["result"].as_str(), j["vmid"].as_u64(), j["node"].as_str()),
        (Some("ok"), Some(103), Some("pve2"))
    );
    assert_eq!(env.marker()[0], "db-pre 103 snapshot");
    // The CT's temporary vzdump snapshot is gone again.
    assert!(env.sim.world().guests[&103].snapshots.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_success_with_warnings() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| {
        s.replace("shutdown = 3.0", "shutdown = 3.0\noutcome = \"warnings:2\"")
    })
    .await;
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "warnings");
    assert_eq!(j["exitstatus"], "WARNINGS: 2");
    assert_eq!(j["warnings"], 2);
    assert_eq!(env.state()["runs"][0]["result"], "warnings");
    assert!(env.state()["last_success"].is_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_hooks_run_at_the_consistency_point_before_the_task_ends() {
    // Real-time speed: the archive runs 60 s after a 2 s consistency point; the test holds the
    // task right after fs-thaw and sees the post hook run while the task is still running.
    let env = Env::start(Guest::Qemu101, 1.0, |s| {
        s.replace("duration = 20.0", "duration = 60.0")
    })
    .await;
    env.write_config(&env.config_text("felhom101@pve!agent", &env.hook("app")));
    let child = env.spawn(&["backup-now", "--json"]);
    let ev = env
        .sim
        .wait_event(Duration::from_secs(20), |e| e.kind == "fs-thaw")
        .await
        .expect("fs-thaw");
    let upid = ev.upid.unwrap();
    env.sim.world().task_mut(&upid).unwrap().held = true;
    let mut released = false;
    for _ in 0..200 {
        if env.marker().iter().any(|l| l.starts_with("app-post")) {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        released,
        "post hook ran while the task is held (still running)"
    );
    assert!(env.sim.world().task(&upid).unwrap().running());
    // Let it finish quickly.
    {
        let mut w = env.sim.world();
        w.task_mut(&upid).unwrap().held = false;
        w.clock.advance(120.0);
        w.tick();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        j["quiesce_window_seconds"].as_f64().unwrap() < 30.0,
        "window ends at the consistency point: {j}"
    );
    assert_eq!(
        env.marker()
            .iter()
            .filter(|l| l.starts_with("app-post"))
            .count(),
        1,
        "post ran exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_guest_is_followed_and_tasks_are_read_on_their_node() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    env.sim.world().migrate(101, "pve2").unwrap();
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["node"], "pve2");
    assert_eq!(
        env.posts("/nodes/{node}/vzdump")[0].path,
        "/nodes/pve2/vzdump"
    );
    // Migration during the run: the task stays on pve2 and is followed there.
    let child = env.spawn(&["backup-now", "--json"]);
    let mut started = false;
    for _ in 0..400 {
        if env
            .sim
            .events()
            .iter()
            .filter(|e| e.kind == "task-started" && e.detail == "vzdump")
            .count()
            == 2
        {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started, "second vzdump started");
    env.sim.world().migrate(101, "pve1").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["upid"].as_str().unwrap().starts_with("UPID:pve2:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockwait_is_sent_to_vzdump_in_minutes() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let text = env.config_text("felhom101@pve!agent", "").replace(
        "task-timeout = \"2m\"\n",
        "task-timeout = \"2m\"\nlockwait = \"30m\"\n",
    );
    env.write_config(&text);
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let posts = env.posts("/nodes/{node}/vzdump");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].params["lockwait"], "30", "{:?}", posts[0].params);
    assert!(env.sim.requests().iter().all(|r| r.status == 200));
}
