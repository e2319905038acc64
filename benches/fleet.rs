//! Fleet simulation (issue 8, item 5): N agents sharing one schedule against one simulated node
//! with its single global vzdump lock — how the splay spreads the vzdump starts, the lock waits,
//! the API load at the node and how many backups finish inside the window. Splay off vs on.
//!
//! Method (details in `benches/README.md`, "Fleet"): pve-sim runs in-process over real TLS with
//! its clock frozen; a generated scenario has one node and N qemu guests (vmids 1000…), each with
//! its own privilege-separated token and ACLs and its own vzdump duration (seeded, uniform in a
//! range). N in-process agent instances run on the *simulated* clock: each plans with the real
//! `schedule::plan` + `splay_offset` for its own VMID (sleeping like the daemon, at most 300 s
//! at a time), then runs the real PVE-facing pieces of a backup with its own token —
//! `identity::discover`, `identity::current_node`, `POST /nodes/{node}/vzdump`, and the real
//! follower (`backup::follow::follow`) with a clock that is the simulated one. A discrete-event
//! driver advances the simulated clock, once every agent is parked in a sleep, to the earliest of
//! the agents' wake-ups and the simulator's own next task step (`World::next_due`).
//!
//! Run: `cargo bench --bench fleet` — options as arguments after `--` or environment variables:
//! `--agents N` / `FLEET_AGENTS` (500), `--splays 0s,15m,1h,4h` / `FLEET_SPLAYS`,
//! `--durations 20-120,5-40` / `FLEET_DURATIONS` (seconds, uniform per guest), `--window 6h` /
//! `FLEET_WINDOW`, `--seed N` / `FLEET_SEED` (1), `--first-run` / `FLEET_FIRST_RUN=1` (followers
//! without the previous run's duration). Prints tables; not a pass/fail test.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use felhom_agent::backup::follow::{Clock, FollowOpts, FollowStats, Followed, Shutdown, follow};
use felhom_agent::backup::logscan::{GuestType, LogScan, Mode};
use felhom_agent::identity::{self, LocalFacts};
use felhom_agent::pve::tls::parse_fingerprint;
use felhom_agent::pve::types::TaskStart;
use felhom_agent::pve::{ClientSettings, PveClient};
use felhom_agent::schedule::{CronSchedule, Plan, plan, sleep_for, splay_offset};
use jiff::Timestamp;
use pve_sim::{Scenario, Sim};
use tokio::sync::{Notify, oneshot};

/// The configuration defaults the fleet runs with.
const SCHEDULE: &str = "0 2 * * *";
const CATCH_UP: Duration = Duration::from_secs(12 * 3600);
const TASK_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// 2026-11-19T01:55:00Z: five minutes before the fire at 02:00 UTC.
const START: i64 = 1_795_053_300;
/// vzdump's default `lockwait` (180 minutes).
const LOCKWAIT: f64 = 180.0 * 60.0;
const FIRST_VMID: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// The discrete-event driver: a simulated "now" every agent reads, and the parked sleepers.

struct Wake {
    at: f64,
    seq: u64,
    tx: oneshot::Sender<()>,
}
impl PartialEq for Wake {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Wake {
    /// Reversed: the earliest wake-up is the heap's maximum.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

struct Driver {
    now: AtomicU64,
    sleepers: Mutex<BinaryHeap<Wake>>,
    /// Agents not parked in a sleep (running, or waiting for an HTTP answer).
    active: AtomicUsize,
    idle: Notify,
    seq: AtomicU64,
}

impl Driver {
    fn now(&self) -> f64 {
        f64::from_bits(self.now.load(Ordering::SeqCst))
    }

    fn park(&self, at: f64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.sleepers.lock().unwrap().push(Wake { at, seq, tx });
        self.done_one();
        rx
    }

    /// An agent stopped running (parked or finished).
    fn done_one(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_one();
        }
    }

    /// Runs the simulation until every agent has finished.
    async fn run(&self, sim: &Sim) {
        loop {
            while self.active.load(Ordering::SeqCst) != 0 {
                self.idle.notified().await;
            }
            let now = self.now();
            let next_agent = self.sleepers.lock().unwrap().peek().map(|w| w.at);
            let next_sim = sim.world().next_due();
            let Some(mut t) = [next_agent, next_sim]
                .into_iter()
                .flatten()
                .reduce(f64::min)
            else {
                return; // nobody sleeps, no task runs: done
            };
            if next_agent.is_none_or(|a| a > now + 1e-9) {
                // Only the simulator has something due: make sure the clock really moves.
                t = t.max(now + 1e-3);
            }
            if t > now {
                sim.advance(t - now);
            }
            let now = sim.world().clock.now();
            self.now.store(now.to_bits(), Ordering::SeqCst);
            let mut due = Vec::new();
            {
                let mut heap = self.sleepers.lock().unwrap();
                while heap.peek().is_some_and(|w| w.at <= now + 1e-9) {
                    due.push(heap.pop().unwrap());
                }
            }
            self.active.fetch_add(due.len(), Ordering::SeqCst);
            for w in due {
                let _ = w.tx.send(());
            }
        }
    }
}

struct AgentClock(Arc<Driver>);

impl Clock for AgentClock {
    fn now(&self) -> f64 {
        self.0.now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let rx = self.0.park(self.0.now() + d.as_secs_f64());
        Box::pin(async move {
            let _ = rx.await;
        })
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

// ---------------------------------------------------------------------------------------------
// The fleet: scenario, agents.

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Guest `vmid`'s vzdump duration: uniform in `[lo, hi]` from the seed, to 0.1 s.
fn duration_of(vmid: u32, (lo, hi): (f64, f64), seed: u64) -> f64 {
    let u = (splitmix(seed.wrapping_mul(1_000_003) ^ u64::from(vmid)) >> 11) as f64
        / (1u64 << 53) as f64;
    ((lo + u * (hi - lo)) * 10.0).round() / 10.0
}

fn uuid(vmid: u32) -> String {
    format!("5b0f8d3e-3c57-4a8e-9d7b-{vmid:012}")
}

fn mac(vmid: u32) -> String {
    format!("BC:24:11:00:{:02X}:{:02X}", vmid >> 8, vmid & 0xFF)
}

fn secret(vmid: u32) -> String {
    format!("11111111-2222-3333-4444-{vmid:012}")
}

/// One node, one PBS storage, `n` qemu guests each with its own privsep token scoped like the
/// agent's documented setup (FelhomAgent on `/vms/<vmid>` and `/storage/pbs-main`).
fn scenario(n: u32, durations: (f64, f64), seed: u64) -> String {
    let mut s = format!(
        "[settings]\nauth-failure-delay-ms = 0\nstart-time = {START}\nclock-speed = 0.0\n\
         timezone = \"UTC\"\ncontrol-key = \"fleet\"\n\n[[nodes]]\nname = \"pve1\"\n\n\
         [[storages]]\nid = \"pbs-main\"\ntype = \"pbs\"\ncontent = [\"backup\"]\n\n\
         [[access.roles]]\nroleid = \"FelhomAgent\"\n\
         privs = [\"VM.Audit\", \"VM.Backup\", \"VM.Snapshot\", \"Datastore.AllocateSpace\"]\n\n"
    );
    for vmid in FIRST_VMID..FIRST_VMID + n {
        let d = duration_of(vmid, durations, seed);
        s.push_str(&format!(
            "[[guests]]\nvmid = {vmid}\ntype = \"qemu\"\nnode = \"pve1\"\nname = \"vm{vmid}\"\n\
             config = {{ smbios1 = \"uuid={}\", net0 = \"virtio={},bridge=vmbr0\" }}\n\
             backup = {{ duration = {d:.1}, consistency-point = 2.0 }}\n\n\
             [[access.users]]\nuserid = \"felhom{vmid}@pve\"\n\
             [[access.tokens]]\ntokenid = \"felhom{vmid}@pve!agent\"\nsecret = \"{}\"\n",
            uuid(vmid),
            mac(vmid),
            secret(vmid)
        ));
        for path in [format!("/vms/{vmid}"), "/storage/pbs-main".to_string()] {
            for (ugid, kind) in [
                (format!("felhom{vmid}@pve"), "user"),
                (format!("felhom{vmid}@pve!agent"), "token"),
            ] {
                s.push_str(&format!(
                    "[[access.acl]]\npath = \"{path}\"\nroleid = \"FelhomAgent\"\n\
                     ugid = \"{ugid}\"\ntype = \"{kind}\"\n"
                ));
            }
        }
        s.push('\n');
    }
    s
}

struct Done(Arc<Driver>);
impl Drop for Done {
    fn drop(&mut self) {
        self.0.done_one();
    }
}

struct AgentOutcome {
    vmid: u32,
    exitstatus: Option<String>,
}

fn ts(secs: f64) -> Timestamp {
    let whole = secs.floor();
    Timestamp::new(whole as i64, ((secs - whole) * 1e9) as i32).unwrap()
}

#[allow(clippy::too_many_arguments)]
async fn agent(
    vmid: u32,
    client: PveClient,
    drv: Arc<Driver>,
    schedule: Arc<CronSchedule>,
    splay: Duration,
    last: Timestamp,
    history: Option<Duration>,
) -> AgentOutcome {
    // Counts this agent out of the running ones however it ends (a panic included), so the
    // driver never waits for it forever.
    let _done = Done(drv.clone());
    let clock = AgentClock(drv.clone());
    let offset = splay_offset(vmid, splay);
    // The daemon's decision loop: plan, sleep (capped), plan again until the run is due.
    loop {
        let now = ts(clock.now());
        match plan(&schedule, Some(last), now, CATCH_UP, offset) {
            Plan::RunNow { .. } => break,
            Plan::WaitUntil { until, .. } => {
                clock
                    .sleep(sleep_for(
                        now,
                        until,
                        felhom_agent::daemon::runner::SLEEP_CAP,
                    ))
                    .await
            }
            other => panic!("guest {vmid}: unexpected plan {other:?}"),
        }
    }
    let local = LocalFacts {
        product_uuid: Some(uuid(vmid)),
        macs: vec![mac(vmid)],
    };
    let id = identity::discover(&client, Some(vmid), &local)
        .await
        .unwrap_or_else(|e| panic!("guest {vmid}: identity: {e}"));
    let node = identity::current_node(&client, id.vmid)
        .await
        .unwrap_or_else(|e| panic!("guest {vmid}: node: {e}"));
    let form = [
        ("vmid", vmid.to_string()),
        ("storage", "pbs-main".to_string()),
        ("mode", "snapshot".to_string()),
        ("compress", "zstd".to_string()),
    ];
    let upid = match client
        .post_form::<TaskStart>(["nodes", node.as_str(), "vzdump"], &form)
        .await
    {
        Ok(TaskStart::Started(u)) => u,
        other => panic!("guest {vmid}: vzdump: {other:?}"),
    };
    let opts = FollowOpts {
        guest: GuestType::Qemu,
        mode: Mode::Snapshot,
        release_at_cp: false,
        task_timeout: TASK_TIMEOUT,
        expected: history,
        detach_after_release: false,
    };
    let mut scan = LogScan::new(GuestType::Qemu, Mode::Snapshot);
    let mut stats = FollowStats::default();
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
    let exitstatus = match r {
        Followed::Stopped { status } => status.exitstatus,
        other => Some(format!("follower: {other:?}")),
    };
    AgentOutcome { vmid, exitstatus }
}

// ---------------------------------------------------------------------------------------------
// One configuration, measured.

struct Row {
    splay: String,
    starts_peak: usize,
    even: f64,
    acquired_peak: usize,
    lock_waits: usize,
    longest_wait: f64,
    req_peak: usize,
    req_mean: f64,
    requests: usize,
    in_window: usize,
    finished_late: usize,
    lock_timeouts: usize,
    last_end_h: f64,
    wall: f64,
    agent_ok: usize,
}

fn per_minute(times: impl Iterator<Item = f64>, origin: f64) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for t in times {
        *m.entry(((t - origin) / 60.0).floor() as i64).or_insert(0) += 1;
    }
    m
}

async fn run_one(
    n: u32,
    splay: (String, Duration),
    durations: (f64, f64),
    window: Duration,
    seed: u64,
    first_run: bool,
) -> Row {
    let wall = Instant::now();
    let sc = Scenario::parse(&scenario(n, durations, seed)).expect("generated scenario");
    let sim = Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let fp = parse_fingerprint(&sim.fingerprint()).unwrap();
    let schedule = Arc::new(CronSchedule::parse(SCHEDULE, jiff::tz::TimeZone::UTC).unwrap());
    let now = sim.world().clock.now();
    let fire = schedule.next_after(ts(now)).unwrap();
    // The persisted last run: yesterday's fire (a fleet in steady state, not a fresh install).
    let last = fire
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap();
    let drv = Arc::new(Driver {
        now: AtomicU64::new(now.to_bits()),
        sleepers: Mutex::new(BinaryHeap::new()),
        active: AtomicUsize::new(n as usize),
        idle: Notify::new(),
        seq: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for vmid in FIRST_VMID..FIRST_VMID + n {
        let client = PveClient::new(ClientSettings {
            base_url: sim.url(),
            token_id: format!("felhom{vmid}@pve!agent"),
            secret: secret(vmid),
            fingerprint: Some(fp),
            ca_pem: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
        })
        .unwrap();
        // With history: the previous run took this guest's duration plus the 2 s the simulated
        // log adds around it (what the daemon records after a first run).
        let history =
            (!first_run).then(|| Duration::from_secs_f64(duration_of(vmid, durations, seed) + 2.0));
        handles.push(tokio::spawn(agent(
            vmid,
            client,
            drv.clone(),
            schedule.clone(),
            splay.1,
            last,
            history,
        )));
    }
    drv.run(&sim).await;
    let mut agent_ok = 0;
    for h in handles {
        let o = h.await.expect("agent task");
        match o.exitstatus.as_deref() {
            Some("OK") => agent_ok += 1,
            Some("unexpected status") | None => {}
            Some(other) => eprintln!("guest {}: {other}", o.vmid),
        }
    }
    let origin = fire.as_second() as f64;
    let end = origin + window.as_secs_f64();
    let w = sim.world();
    let posts = per_minute(
        w.requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/vzdump"))
            .map(|r| r.time),
        origin,
    );
    let reqs = per_minute(w.requests.iter().map(|r| r.time), origin);
    let acquired = per_minute(
        w.events
            .iter()
            .filter(|e| e.kind == "vzdump-lock-acquired")
            .map(|e| e.time),
        origin,
    );
    let mut longest_wait: f64 = 0.0;
    for e in w.events.iter().filter(|e| e.kind == "vzdump-lock-acquired") {
        longest_wait = longest_wait.max(e.detail.parse().unwrap_or(0.0));
    }
    let dumps: Vec<_> = w
        .tasks
        .iter()
        .filter(|t| t.parsed.wtype == "vzdump")
        .collect();
    let lock_waits = dumps
        .iter()
        .filter(|t| {
            t.log
                .iter()
                .any(|l| l == "INFO: trying to get global lock - waiting...")
        })
        .count();
    let lock_timeouts = dumps
        .iter()
        .filter(|t| {
            t.log
                .iter()
                .any(|l| l.starts_with("ERROR: can't acquire lock"))
        })
        .count();
    if lock_timeouts > 0 {
        longest_wait = longest_wait.max(LOCKWAIT);
    }
    let ok = |t: &&&pve_sim::world::Task| t.exitstatus.as_deref() == Some("OK");
    let in_window = dumps
        .iter()
        .filter(ok)
        .filter(|t| t.endtime.is_some_and(|e| e as f64 <= end))
        .count();
    let finished_late = dumps.iter().filter(ok).count() - in_window;
    let last_end = dumps.iter().filter_map(|t| t.endtime).max().unwrap_or(0) as f64;
    let first_min = reqs.keys().next().copied().unwrap_or(0);
    let last_min = reqs.keys().last().copied().unwrap_or(0);
    let requests = w.requests.len();
    let splay_min = splay.1.as_secs_f64() / 60.0;
    Row {
        splay: splay.0,
        starts_peak: posts.values().copied().max().unwrap_or(0),
        even: n as f64 / splay_min.max(1.0),
        acquired_peak: acquired.values().copied().max().unwrap_or(0),
        lock_waits,
        longest_wait,
        req_peak: reqs.values().copied().max().unwrap_or(0),
        req_mean: requests as f64 / (last_min - first_min + 1) as f64,
        requests,
        in_window,
        finished_late,
        lock_timeouts,
        last_end_h: (last_end - origin) / 3600.0,
        wall: wall.elapsed().as_secs_f64(),
        agent_ok,
    }
}

// ---------------------------------------------------------------------------------------------
// Options and output.

fn parse_duration(s: &str) -> Duration {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("bad duration {s:?}"));
    Duration::from_secs(
        n * match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("bad duration unit in {s:?} (s, m or h)"),
        },
    )
}

struct Opts {
    agents: u32,
    splays: Vec<(String, Duration)>,
    durations: Vec<(f64, f64)>,
    window: Duration,
    seed: u64,
    first_run: bool,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str, env: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
            .unwrap_or_else(|| default.to_string())
    };
    let first_run = args.iter().any(|a| a == "--first-run")
        || std::env::var("FLEET_FIRST_RUN").is_ok_and(|v| v == "1");
    Opts {
        agents: get("--agents", "FLEET_AGENTS", "500")
            .parse()
            .expect("agents"),
        splays: get("--splays", "FLEET_SPLAYS", "0s,15m,1h,4h")
            .split(',')
            .map(|s| (s.trim().to_string(), parse_duration(s)))
            .collect(),
        durations: get("--durations", "FLEET_DURATIONS", "20-120,5-40")
            .split(',')
            .map(|r| {
                let (a, b) = r.split_once('-').expect("durations as LO-HI seconds");
                (a.trim().parse().unwrap(), b.trim().parse().unwrap())
            })
            .collect(),
        window: parse_duration(&get("--window", "FLEET_WINDOW", "6h")),
        seed: get("--seed", "FLEET_SEED", "1").parse().expect("seed"),
        first_run,
    }
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for &durations in &o.durations {
            let total: f64 = (FIRST_VMID..FIRST_VMID + o.agents)
                .map(|v| duration_of(v, durations, o.seed))
                .sum();
            println!(
                "Fleet: {} agents, schedule \"{SCHEDULE}\" (UTC), one node, vzdump {}–{} s per guest \
                 (seed {}; sum {:.2} h of serial lock time), window {} h, lockwait 180 min, follower {}",
                o.agents,
                durations.0,
                durations.1,
                o.seed,
                total / 3600.0,
                o.window.as_secs_f64() / 3600.0,
                if o.first_run { "first run" } else { "with history" }
            );
            println!(
                "{:<6} {:>7} {:>7} {:>6} {:>8} {:>6} {:>9} {:>7} {:>7} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7}",
                "splay",
                "starts",
                "even",
                "ratio",
                "locked",
                "waits",
                "max wait",
                "req/m",
                "req/m",
                "requests",
                "in win",
                "late",
                "timeout",
                "last h",
                "wall s"
            );
            println!(
                "{:<6} {:>7} {:>7} {:>6} {:>8} {:>6} {:>9} {:>7} {:>7} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7}",
                "", "max/min", "/min", "", "max/min", "", "min", "max", "mean", "", "", "", "", "", ""
            );
            for splay in &o.splays {
                let r = run_one(
                    o.agents,
                    splay.clone(),
                    durations,
                    o.window,
                    o.seed,
                    o.first_run,
                )
                .await;
                println!(
                    "{:<6} {:>7} {:>7.2} {:>6.2} {:>8} {:>6} {:>9.1} {:>7} {:>7.1} {:>8} {:>7} {:>6} {:>7} {:>7.2} {:>7.1}",
                    r.splay,
                    r.starts_peak,
                    r.even,
                    r.starts_peak as f64 / r.even,
                    r.acquired_peak,
                    r.lock_waits,
                    r.longest_wait / 60.0,
                    r.req_peak,
                    r.req_mean,
                    r.requests,
                    r.in_window,
                    r.finished_late,
                    r.lock_timeouts,
                    r.last_end_h,
                    r.wall
                );
                assert_eq!(
                    r.agent_ok,
                    r.in_window + r.finished_late,
                    "agents saw OK exactly for the tasks that ended OK"
                );
            }
            println!();
        }
    });
}
