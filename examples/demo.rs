//! The demo (README's first command): the daemon backs up a simulated guest on its schedule.
//!
//! 1. Starts pve-sim: two nodes, guest 101 (qemu, guest agent on) with a scoped privsep token,
//!    a PBS storage. Simulated time runs 10× faster.
//! 2. Writes a config pinned to the simulator's certificate fingerprint, with one quiesce hook
//!    released at the consistency point, and a schedule whose last run was "missed while the
//!    guest was off" an hour ago — so the daemon's catch-up fires within seconds of start.
//! 3. Runs `felhom-agent run` (the daemon, in-process): identity proof, quiesce, vzdump,
//!    adaptive task following, release at the consistency point, result recorded.
//! 4. Prints `/status` and `/metrics` from the health endpoint, then stops the daemon cleanly
//!    (as SIGTERM would) and shows what reached the PVE API.

use std::time::{Duration, Instant};

use felhom_agent::identity::LocalFacts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    felhom_agent::cli::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    std::process::exit(rt.block_on(demo()));
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("health endpoint");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(buf)
}

async fn demo() -> i32 {
    let text = include_str!("../tests/pve-sim/scenarios/basic.toml")
        .replace("clock-speed = 1.0", "clock-speed = 10.0")
        .replace("start-time = 1795000000", "# start-time: now");
    let sc = pve_sim::Scenario::parse(&text).expect("scenario");
    let sim = pve_sim::Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator");
    println!(
        "== pve-sim on {} (certificate {})",
        sim.url(),
        sim.fingerprint()
    );

    let dir = std::env::temp_dir().join(format!("felhom-agent-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "11111111-2222-3333-4444-555555555101\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"[pve]
url = "{url}"
token-id = "felhom101@pve!agent"
token-secret-file = "{dir}/token"
fingerprint = "{fp}"

[backup]
storage = "pbs-main"
mode = "snapshot"
notes-template = "{{{{guestname}}}} via felhom-agent"
schedule = "*/30 * * * *"
splay = "0s"

[[quiesce.hooks]]
name = "app"
pre = ["/bin/sh", "-c", "echo flushing the app of guest $FELHOM_VMID"]
post = ["/bin/sh", "-c", "echo app resumes, task $FELHOM_UPID"]
timeout = "30s"

[quiesce]
release = "consistency-point"

[state]
dir = "{dir}/state"

[health]
listen = "127.0.0.1:{port}"
"#,
        url = sim.url(),
        dir = dir.display(),
        fp = sim.fingerprint()
    );
    std::fs::write(dir.join("config.toml"), &config).unwrap();
    println!("== config {}:\n{config}", dir.join("config.toml").display());
    // The last scheduled run was missed while the guest was off: the daemon catches it up.
    let last = jiff::Timestamp::now().as_second() - 3600;
    std::fs::write(
        dir.join("state/state.json"),
        format!(r#"{{"version":1,"last_scheduled":{last}}}"#),
    )
    .unwrap();

    let cfg = felhom_agent::config::load(&dir.join("config.toml")).expect("config");
    let mut agent = felhom_agent::cli::build_agent(cfg).expect("agent");
    // This machine is not VM 101: present the SMBIOS UUID the guest would see.
    agent.local = LocalFacts {
        product_uuid: Some("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51".into()),
        macs: vec![],
    };
    let signals = felhom_agent::cli::Signals::install();
    println!("== felhom-agent run");
    let daemon = felhom_agent::daemon::run(agent, dir.join("config.toml"), signals.clone());
    let state_path = dir.join("state/state.json");
    let driver = async {
        let t0 = Instant::now();
        loop {
            let st: serde_json::Value = std::fs::read_to_string(&state_path)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            if st["runs"].as_array().is_some_and(|r| !r.is_empty()) && st["pending"].is_null() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(90) {
                eprintln!("demo: no backup recorded within 90 s");
                signals.trigger();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("\n== GET /status\n{}", http_get(port, "/status").await);
        println!("\n== GET /healthz\n{}", http_get(port, "/healthz").await);
        let metrics = http_get(port, "/metrics").await;
        println!("\n== GET /metrics (felhom_ samples)");
        for l in metrics.lines().filter(|l| l.starts_with("felhom_")) {
            println!("{l}");
        }
        println!("\n== stopping the daemon (as SIGTERM would)");
        signals.trigger();
    };
    // The daemon runs on this task (like the binary's single-threaded runtime); the driver
    // watches it from alongside.
    let (code, ()) = tokio::join!(daemon, driver);
    println!("daemon exited with {code}");
    println!("\n== what reached the PVE API, as the scoped token:");
    for r in sim.requests() {
        println!("   {:<6} {:<88} {}", r.method, r.path, r.status);
    }
    let _ = std::fs::remove_dir_all(&dir);
    code
}
