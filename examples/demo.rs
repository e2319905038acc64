//! The demo (README's first command): the agent backs up a simulated guest end to end.
//!
//! Starts pve-sim (two nodes, guest 101 with a scoped privsep token, a PBS storage), writes a
//! config pinned to the simulator's certificate fingerprint with one quiesce hook, runs the same
//! job `felhom-agent backup-now` runs — identity proof, quiesce, vzdump, adaptive task following,
//! release at the consistency point, result — then shows the state and what reached the API.
//! Simulated time runs 10× faster so the 20-second backup takes about two seconds.

use std::time::Duration;

use felhom_agent::backup::follow::Shutdown;
use felhom_agent::backup::run::{RunRequest, backup_now};
use felhom_agent::identity::LocalFacts;

struct Never;
impl Shutdown for Never {
    fn requested(&self) -> bool {
        false
    }
    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}

fn main() {
    felhom_agent::cli::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(demo());
}

async fn demo() {
    let text = include_str!("../tests/pve-sim/scenarios/basic.toml")
        .replace("clock-speed = 1.0", "clock-speed = 10.0")
        .replace("start-time = 1795000000", "# start-time: now");
    let sc = pve_sim::Scenario::parse(&text).expect("scenario");
    let sim = pve_sim::Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator");
    println!(
        "== pve-sim listening on {} (certificate {})",
        sim.url(),
        sim.fingerprint()
    );

    let dir = std::env::temp_dir().join(format!("felhom-agent-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "11111111-2222-3333-4444-555555555101\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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

[[quiesce.hooks]]
name = "app"
pre = ["/bin/sh", "-c", "echo '   [hook] pre: flushing the app for guest '$FELHOM_VMID"]
post = ["/bin/sh", "-c", "echo '   [hook] post: app resumes ('$FELHOM_UPID')'"]
timeout = "30s"

[quiesce]
release = "consistency-point"

[state]
dir = "{dir}/state"
"#,
        url = sim.url(),
        dir = dir.display(),
        fp = sim.fingerprint()
    );
    std::fs::write(dir.join("config.toml"), &config).unwrap();
    println!(
        "== config ({}):\n{config}",
        dir.join("config.toml").display()
    );

    let cfg = felhom_agent::config::load(&dir.join("config.toml")).expect("config");
    let mut agent = felhom_agent::cli::build_agent(cfg).expect("agent");
    // This machine is not VM 101: present its SMBIOS UUID as the guest would see it.
    agent.local = LocalFacts {
        product_uuid: Some("5b0f8d3e-3c57-4a8e-9d7b-0c1c2a3e4f51".into()),
        macs: vec![],
    };

    println!("== backup-now");
    let t0 = std::time::Instant::now();
    let req = RunRequest {
        mode: None,
        wait: true,
        what: "backup-now",
    };
    let summary = backup_now(&agent, &req, &Never).await;
    println!(
        "\n== result ({:.1}s real, 20s simulated):\n{}",
        t0.elapsed().as_secs_f64(),
        summary.line()
    );
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());

    println!("\n== what reached the PVE API (method, path, status, as the scoped token):");
    for r in sim.requests() {
        println!("   {:<6} {:<70} {}", r.method, r.path, r.status);
    }
    let vols: Vec<String> = sim.world().storages["pbs-main"]
        .volumes
        .iter()
        .map(|v| format!("{} ({:?})", v.volid, v.notes))
        .collect();
    println!("\n== backups on pbs-main: {vols:?}");
    let state = std::fs::read_to_string(dir.join("state/state.json")).unwrap_or_default();
    println!(
        "\n== state file {}:\n{state}",
        dir.join("state/state.json").display()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
