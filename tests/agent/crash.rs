//! Crashes: the agent killed with its guest in stop mode and reattaching after restart; killed
//! during quiesce and running the owed post hooks on the next start.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_mode_kill_at_shutdown_then_restart_reattaches() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let mut child = env.spawn(&["backup-now", "--mode", "stop", "--json"]);
    let ev = env
        .sim
        .wait_event(Duration::from_secs(20), |e| e.kind == "guest-shutdown")
        .await
        .expect("shutdown event");
    child.kill().unwrap(); // the guest shuts down: the agent dies with it
    let _ = child.wait();
    let upid = ev.upid.unwrap();
    // The journal remembers the task (its UPID, or at least that vzdump was requested).
    let journal = std::fs::read_to_string(env.dir.join("state/journal.json")).unwrap();
    assert!(
        journal.contains(&upid)
            || journal.contains("vzdump_requested")
            || journal.contains("VzdumpRequested"),
        "{journal}"
    );
    // After boot: backup-now reattaches, waits, records — and starts no second backup.
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "ok");
    assert_eq!(j["upid"], upid.as_str());
    assert_eq!(j["mode"], "stop");
    assert!(
        j["repaired"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("reattached")),
        "{j}"
    );
    assert_eq!(
        env.posts("/nodes/{node}/vzdump").len(),
        1,
        "no second vzdump"
    );
    let st = env.state();
    assert!(st["pending"].is_null());
    assert_eq!(
        st["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["upid"] == upid.as_str() && r["result"] == "ok")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reconciles_a_finished_pending_task_without_waiting() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let mut child = env.spawn(&["backup-now", "--json"]);
    let ev = env
        .sim
        .wait_event(Duration::from_secs(20), |e| e.kind == "fs-thaw")
        .await
        .expect("running");
    child.kill().unwrap();
    let _ = child.wait();
    env.sim.advance(60.0); // the task ends while no agent runs
    let r = env.run(&["status", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["upid"], ev.upid.unwrap().as_str());
    assert_eq!(j["runs"][0]["result"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_quiesce_runs_owed_posts_on_next_start() {
    let env = Env::start(Guest::Qemu101, 20.0, |s| s).await;
    let flag = env.dir.join("hang");
    std::fs::write(&flag, "").unwrap();
    let m = env.dir.join("marker");
    let extra = format!(
        "{}\n[[quiesce.hooks]]\nname = \"slow\"\npre = [\"/bin/sh\", \"-c\", \"echo slow-pre >> {m}; if [ -e {f} ]; then sleep 30; fi\"]\npost = [\"/bin/sh\", \"-c\", \"echo slow-post >> {m}\"]\ntimeout = \"60s\"\n",
        env.hook("a"),
        m = m.display(),
        f = flag.display()
    );
    env.write_config(&env.config_text("felhom101@pve!agent", &extra));
    let mut child = env.spawn(&["backup-now"]);
    for _ in 0..400 {
        if env.marker().iter().any(|l| l == "slow-pre") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(env.marker().iter().any(|l| l == "slow-pre"));
    // SIGKILL the agent's whole process group? No: only the agent, as a crash would.
    child.kill().unwrap();
    let _ = child.wait();
    std::fs::remove_file(&flag).unwrap();
    assert!(env.posts("/nodes/{node}/vzdump").is_empty());
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert!(
        j["repaired"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("ran post hooks owed by an interrupted run: a")),
        "{j}"
    );
    let marker = env.marker();
    let first_post = marker
        .iter()
        .position(|l| l.starts_with("a-post"))
        .expect("a-post ran");
    let second_pre = marker.iter().rposition(|l| l.starts_with("a-pre")).unwrap();
    assert!(
        first_post < second_pre,
        "owed post ran before the new run's quiesce: {marker:?}"
    );
    assert!(
        !marker[..second_pre].iter().any(|l| l == "slow-post"),
        "slow's pre never finished: its post is not owed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_post_and_upid_finds_the_task_in_the_task_list() {
    // The simulator's clock must agree with the guest's for the task-list time window.
    let env = Env::start(Guest::Qemu101, 20.0, |s| {
        s.replace("start-time = 1795000000", "# now")
    })
    .await;
    let now = jiff::Timestamp::now().as_second();
    // What a process killed right after POST vzdump leaves: the request journaled, no UPID.
    let dir = felhom_agent::state::StateDir::open(env.dir.join("state")).unwrap();
    let mut j = dir.journal();
    j.begin("crashed-run", now).unwrap();
    j.record(felhom_agent::state::JournalStep::VzdumpRequested {
        at: now,
        node: "pve1".into(),
    })
    .unwrap();
    // …and the vzdump it did start on PVE.
    let client = felhom_agent::pve::PveClient::new(felhom_agent::pve::ClientSettings {
        base_url: env.sim.url(),
        token_id: "felhom101@pve!agent".into(),
        secret: SECRET101.into(),
        fingerprint: Some(
            felhom_agent::pve::tls::parse_fingerprint(&env.sim.fingerprint()).unwrap(),
        ),
        ca_pem: None,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let form = [
        ("vmid", "101".to_string()),
        ("storage", "pbs-main".to_string()),
    ];
    let started: felhom_agent::pve::types::TaskStart = client
        .post_form(["nodes", "pve1", "vzdump"], &form)
        .await
        .unwrap();
    let felhom_agent::pve::types::TaskStart::Started(upid) = started else {
        panic!("no task")
    };
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["upid"], upid.to_string().as_str(), "{j}");
    assert!(
        j["repaired"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("found the vzdump task started before a crash")),
        "{j}"
    );
    assert_eq!(
        env.posts("/nodes/{node}/vzdump").len(),
        1,
        "no second vzdump"
    );
    let lists: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.template.as_deref() == Some("/nodes/{node}/tasks"))
        .collect();
    assert_eq!(
        lists[0].params.get("typefilter").map(String::as_str),
        Some("vzdump")
    );
    assert_eq!(lists[0].params.get("vmid").map(String::as_str), Some("101"));
}
