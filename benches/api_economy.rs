//! API economy of following one backup (issue: ≤ 60 requests and ≤ 1 s median detection delay
//! for a 10-minute vzdump; a fixed 1 s poller needs ~600 requests).
//!
//! Method: pve-sim in-process over real TLS with its clock frozen; the agent's real follow loop
//! (`backup::follow::follow`) runs with a clock that *is* the simulator's clock — waiting advances
//! simulated time — so a 2-hour backup takes seconds and the delay is exact in simulated time.
//! Every request is a real HTTPS request counted by the simulator. Detection delay = simulated
//! time when the follower returned `Stopped` − simulated time the task ended.
//!
//! Run: `cargo bench --bench api_economy` (prints a table; not a pass/fail test).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use felhom_agent::backup::follow::{Clock, FollowOpts, FollowStats, Followed, Shutdown, follow};
use felhom_agent::backup::logscan::{GuestType, LogScan, Mode};
use felhom_agent::pve::tls::parse_fingerprint;
use felhom_agent::pve::types::TaskStart;
use felhom_agent::pve::{ClientSettings, PveClient, Upid};
use pve_sim::{Scenario, Sim};

const BASIC: &str = include_str!("../tests/pve-sim/scenarios/basic.toml");

struct SimClock(Arc<Sim>);

impl Clock for SimClock {
    fn now(&self) -> f64 {
        self.0.world().clock.now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.0.advance(d.as_secs_f64());
        Box::pin(tokio::task::yield_now())
    }
}

struct Never;
impl Shutdown for Never {
    fn requested(&self) -> bool {
        false
    }
    fn wait(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

async fn setup(duration: f64, cp: f64) -> (Arc<Sim>, PveClient) {
    let text = BASIC
        .replace("duration = 20.0", &format!("duration = {duration}"))
        .replace(
            "consistency-point = 2.0",
            &format!("consistency-point = {cp}"),
        );
    let sc = Scenario::parse(&text).unwrap();
    let sim = Arc::new(
        Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
    );
    sim.world().clock.set_speed(0.0);
    let client = PveClient::new(ClientSettings {
        base_url: sim.url(),
        token_id: "felhom101@pve!agent".into(),
        secret: "11111111-2222-3333-4444-555555555101".into(),
        fingerprint: Some(parse_fingerprint(&sim.fingerprint()).unwrap()),
        ca_pem: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    (sim, client)
}

async fn start(client: &PveClient) -> Upid {
    let form = [
        ("vmid", "101".to_string()),
        ("storage", "pbs-main".to_string()),
        ("mode", "snapshot".to_string()),
    ];
    match client
        .post_form::<TaskStart>(["nodes", "pve1", "vzdump"], &form)
        .await
        .unwrap()
    {
        TaskStart::Started(u) => u,
        TaskStart::NoTask(s) => panic!("no task: {s}"),
    }
}

fn task_end(sim: &Sim, upid: &str) -> f64 {
    sim.events()
        .iter()
        .find(|e| e.kind == "task-finished" && e.upid.as_deref() == Some(upid))
        .map(|e| e.time)
        .expect("task finished")
}

/// felhom-agent's follower. `history`: the previous run's duration (the daemon's normal case).
async fn agent(duration: f64, history: Option<f64>, phase: f64) -> (usize, f64) {
    let (sim, client) = setup(duration, 5.0).await;
    let upid = start(&client).await;
    sim.advance(phase);
    let before = sim.requests().len();
    let opts = FollowOpts {
        guest: GuestType::Qemu,
        mode: Mode::Snapshot,
        release_at_cp: true,
        task_timeout: Duration::from_secs(6 * 3600),
        expected: history.map(Duration::from_secs_f64),
        detach_after_release: false,
    };
    let mut scan = LogScan::new(GuestType::Qemu, Mode::Snapshot);
    let mut stats = FollowStats::default();
    let clock = SimClock(sim.clone());
    let r = follow(
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
    assert!(matches!(r, Followed::Stopped { .. }), "{r:?}");
    let seen = sim.world().clock.now();
    (
        sim.requests().len() - before,
        seen - task_end(&sim, &upid.to_string()),
    )
}

/// A fixed-interval status poller (what a naive client does).
async fn fixed(duration: f64, interval: f64, phase: f64) -> (usize, f64) {
    let (sim, client) = setup(duration, 5.0).await;
    let upid = start(&client).await;
    sim.advance(phase);
    let before = sim.requests().len();
    loop {
        let st = client.task_status(&upid).await.unwrap();
        if st.status == felhom_agent::pve::types::TaskState::Stopped {
            break;
        }
        sim.advance(interval);
    }
    let seen = sim.world().clock.now();
    (
        sim.requests().len() - before,
        seen - task_end(&sim, &upid.to_string()),
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("API economy of following one qemu snapshot backup (consistency point at 5 s)");
        println!("median over 5 start phases (0.1 … 0.9 s) of the follower against the task end");
        println!(
            "{:<10} {:<30} {:>9} {:>9} {:>11} {:>11}",
            "duration", "follower", "requests", "req/min", "delay p50", "delay max"
        );
        let phases = [0.1, 0.3, 0.5, 0.7, 0.9];
        for (label, d) in [("1 min", 60.0), ("10 min", 600.0), ("2 h", 7200.0)] {
            for name in [
                "felhom-agent (first run)",
                "felhom-agent (history known)",
                "fixed 1 s status poll",
            ] {
                let mut req = Vec::new();
                let mut delay = Vec::new();
                for p in phases {
                    let (r, dl) = match name {
                        "felhom-agent (first run)" => agent(d, None, p).await,
                        "felhom-agent (history known)" => agent(d, Some(d + 3.0), p).await,
                        _ => fixed(d, 1.0, p).await,
                    };
                    req.push(r);
                    delay.push(dl);
                }
                req.sort();
                delay.sort_by(f64::total_cmp);
                let r = req[req.len() / 2];
                println!(
                    "{label:<10} {name:<30} {r:>9} {:>9.2} {:>11.2} {:>11.2}",
                    r as f64 / (d / 60.0),
                    delay[delay.len() / 2],
                    delay[delay.len() - 1]
                );
            }
        }
    });
}
