//! API economy side by side with peer tools (issue 8, item 2): for one qemu snapshot vzdump of
//! 1 min, 10 min and 2 h, the requests made while waiting for it and the detection delay after
//! it stops — felhom-agent's follower, a fixed 1 s status poller, proxmoxer's
//! `Tasks.blocking_status` and proxcli's `task wait`, all against the same simulator in one run.
//!
//! Method: one pve-sim per duration, in-process over real TLS, clock frozen. Every tool waits on
//! the simulator's clock: the Rust followers through a `Clock` whose sleep advances it; the
//! Python tools through `benches/peers/wait.py`, which replaces only `time.sleep` with a call to
//! the control API that advances the clock by the slept amount. Requests take no simulated time
//! for any tool. Requests counted = the simulator's request log entries authenticated as the
//! guest's token during the wait (the POST that started the vzdump excluded). Delay = simulated
//! time when the tool returned − simulated time the task ended. Five start phases (0.1 … 0.9 s).
//!
//! Run: `benches/peers.sh` (installs proxmoxer and proxcli into `.cache/venv` first), or
//! `cargo bench --bench peers` with `FELHOM_PYTHON` set to a Python that has both.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use felhom_agent::backup::follow::{Clock, FollowOpts, FollowStats, Followed, Shutdown, follow};
use felhom_agent::backup::logscan::{GuestType, LogScan, Mode};
use felhom_agent::pve::tls::parse_fingerprint;
use felhom_agent::pve::types::{TaskStart, TaskState};
use felhom_agent::pve::{ClientSettings, PveClient, Upid};
use pve_sim::{Scenario, Sim};

const BASIC: &str = include_str!("../tests/pve-sim/scenarios/basic.toml");
const TOKEN: &str = "felhom101@pve!agent";

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

struct Bed {
    sim: Arc<Sim>,
    client: PveClient,
    ca: PathBuf,
    python: PathBuf,
    home: PathBuf,
}

async fn bed(duration: f64, python: &Path, dir: &Path) -> Bed {
    let text = BASIC
        .replace("duration = 20.0", &format!("duration = {duration}"))
        .replace("consistency-point = 2.0", "consistency-point = 5.0");
    let sim = Arc::new(
        Sim::start(
            &Scenario::parse(&text).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap(),
    );
    sim.world().clock.set_speed(0.0);
    let client = PveClient::new(ClientSettings {
        base_url: sim.url(),
        token_id: TOKEN.into(),
        secret: "11111111-2222-3333-4444-555555555101".into(),
        fingerprint: Some(parse_fingerprint(&sim.fingerprint()).unwrap()),
        ca_pem: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let ca = dir.join(format!("ca-{duration}.pem"));
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    Bed {
        sim,
        client,
        ca,
        python: python.to_path_buf(),
        home: dir.to_path_buf(),
    }
}

impl Bed {
    fn now(&self) -> f64 {
        self.sim.world().clock.now()
    }

    fn seq(&self) -> usize {
        self.sim.requests().len()
    }

    /// Requests by the guest's token since `from`, without the POST that started the backup.
    fn waited(&self, from: usize) -> usize {
        self.sim.requests()[from..]
            .iter()
            .filter(|r| r.authid.as_deref() == Some(TOKEN))
            .filter(|r| !(r.method == "POST" && r.path.ends_with("/vzdump")))
            .count()
    }

    fn task_end(&self, upid: &str) -> f64 {
        self.sim
            .events()
            .iter()
            .find(|e| e.kind == "task-finished" && e.upid.as_deref() == Some(upid))
            .map(|e| e.time)
            .expect("task finished")
    }

    async fn start(&self) -> Upid {
        let form = [
            ("vmid", "101".to_string()),
            ("storage", "pbs-main".to_string()),
            ("mode", "snapshot".to_string()),
        ];
        match self
            .client
            .post_form::<TaskStart>(["nodes", "pve1", "vzdump"], &form)
            .await
            .unwrap()
        {
            TaskStart::Started(u) => u,
            TaskStart::NoTask(s) => panic!("no task: {s}"),
        }
    }

    /// felhom-agent's follower; `history`: the previous run's duration.
    async fn agent(&self, history: Option<f64>, phase: f64) -> (usize, f64) {
        let from = self.seq();
        let upid = self.start().await;
        self.sim.advance(phase);
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
        let clock = SimClock(self.sim.clone());
        let r = follow(
            &self.client,
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
        let upid = upid.to_string();
        (self.waited(from), self.now() - self.task_end(&upid))
    }

    /// A fixed 1 s status poller.
    async fn fixed(&self, phase: f64) -> (usize, f64) {
        let from = self.seq();
        let upid = self.start().await;
        self.sim.advance(phase);
        while self.client.task_status(&upid).await.unwrap().status != TaskState::Stopped {
            self.sim.advance(1.0);
        }
        let upid = upid.to_string();
        (self.waited(from), self.now() - self.task_end(&upid))
    }

    /// A peer tool in `benches/peers/wait.py`, run as a process.
    async fn peer(&self, tool: &str, phase: f64) -> (usize, f64) {
        let from = self.seq();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/wait.py");
        let mut c = Command::new(&self.python);
        c.arg(script)
            .arg(tool)
            .arg(self.sim.url())
            .arg(&self.ca)
            .arg(self.sim.control_key())
            .arg(phase.to_string())
            // proxcli verifies TLS against the system store (httpx honours SSL_CERT_FILE); it
            // has no CA-file or fingerprint option. An empty HOME: no stray credentials file.
            .env("SSL_CERT_FILE", &self.ca)
            .env("HOME", &self.home)
            .env_remove("PROXMOX_PASSWORD");
        let out = tokio::task::spawn_blocking(move || c.output().expect("run python"))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{tool} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let upid = v["upid"].as_str().unwrap().to_string();
        (self.waited(from), self.now() - self.task_end(&upid))
    }
}

/// The Python to run the peers with, and the installed proxmoxer and proxcli versions.
fn python() -> (PathBuf, String, String) {
    let p = std::env::var("FELHOM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python")
        });
    let out = Command::new(&p)
        .args([
            "-c",
            "import proxmoxer, requests, proxmox.cli.main, importlib.metadata as m; print(m.version('proxmoxer'), m.version('proxcli'))",
        ])
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "no Python with proxmoxer and proxcli at {} — run benches/peers.sh (it installs them into .cache/venv), or set FELHOM_PYTHON",
            p.display()
        );
        std::process::exit(2);
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text.split_whitespace().map(str::to_string);
    (
        p,
        v.next().unwrap_or_default(),
        v.next().unwrap_or_default(),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    AgentFirst,
    AgentHistory,
    Fixed,
    Proxmoxer,
    Proxcli,
}

fn median_usize(v: &mut [usize]) -> usize {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let (python, v_proxmoxer, v_proxcli) = python();
    let tools = [
        (
            Tool::AgentFirst,
            "felhom-agent (first run)".to_string(),
            "incremental task log, adaptive",
        ),
        (
            Tool::AgentHistory,
            "felhom-agent (history known)".to_string(),
            "same + previous run's duration",
        ),
        (
            Tool::Fixed,
            "fixed 1 s poller".to_string(),
            "GET …/status every 1 s",
        ),
        (
            Tool::Proxmoxer,
            format!("proxmoxer {v_proxmoxer}"),
            "Tasks.blocking_status (1 s default)",
        ),
        (
            Tool::Proxcli,
            format!("proxcli {v_proxcli}"),
            "task wait (--poll 500 ms default)",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("felhom-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let durations: Vec<(&str, f64)> = match std::env::var("PEERS_DURATIONS").ok().as_deref() {
        Some("short") => vec![("1 min", 60.0), ("10 min", 600.0)],
        _ => vec![("1 min", 60.0), ("10 min", 600.0), ("2 h", 7200.0)],
    };
    let phases = [0.1, 0.3, 0.5, 0.7, 0.9];
    rt.block_on(async {
        println!(
            "Waiting for one qemu snapshot vzdump (consistency point at 5 s) against one pve-sim per duration"
        );
        println!(
            "requests: median over 5 start phases (0.1 … 0.9 s); delay: simulated s from task end to the tool returning"
        );
        println!(
            "ratios: tool ÷ felhom-agent (first run), requests and median delay\n"
        );
        println!(
            "{:<7} {:<29} {:<36} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "backup",
            "tool",
            "wait method",
            "requests",
            "req/min",
            "delay p50",
            "delay max",
            "req ratio",
            "delay rat"
        );
        for (label, d) in &durations {
            let bed = bed(*d, &python, &dir).await;
            let mut base: Option<(usize, f64)> = None;
            for (tool, name, method) in &tools {
                let mut req = Vec::new();
                let mut delay = Vec::new();
                for p in phases {
                    let (r, dl) = match tool {
                        Tool::AgentFirst => bed.agent(None, p).await,
                        Tool::AgentHistory => bed.agent(Some(d + 3.0), p).await,
                        Tool::Fixed => bed.fixed(p).await,
                        Tool::Proxmoxer => bed.peer("proxmoxer", p).await,
                        Tool::Proxcli => bed.peer("proxcli", p).await,
                    };
                    req.push(r);
                    delay.push(dl);
                }
                let r = median_usize(&mut req);
                delay.sort_by(f64::total_cmp);
                let (p50, max) = (delay[delay.len() / 2], delay[delay.len() - 1]);
                let (b_r, b_d) = *base.get_or_insert((r, p50));
                println!(
                    "{label:<7} {name:<29} {method:<36} {r:>8} {:>8.2} {p50:>9.2} {max:>9.2} {:>9.2} {:>9.2}",
                    r as f64 / (d / 60.0),
                    r as f64 / b_r as f64,
                    p50 / b_d,
                );
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
