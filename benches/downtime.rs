//! Application downtime (issue 8, item 3): how long the guest's application stays quiesced with
//! `release = "consistency-point"` versus `release = "task-end"`, for a 10-minute vzdump whose
//! consistency point comes 5 s in — qemu snapshot mode (guest 101) and LXC snapshot mode
//! (guest 103).
//!
//! Method: the real `felhom-agent backup-now --json` binary runs as a process against pve-sim
//! (in-process, real TLS) at clock speed 1, so simulated time is wall time and the agent's own
//! follower, timers and hook runner behave exactly as in production. The one quiesce hook stamps
//! `date +%s.%N` as the last thing its `pre` does and as the first thing its `post` does; the
//! window = post start − pre end (what the application sees). The agent's own figure
//! (`quiesce_window_seconds`: first pre start → last post end) is printed beside it. The four
//! runs go concurrently, each with its own simulator, so the whole bench takes one backup's
//! duration (10 min by default).
//!
//! Run: `cargo bench --bench downtime` (`-- --duration SECONDS` for a shorter look; the
//! figures are stated for 600).

use std::path::{Path, PathBuf};
use std::process::Command;

use pve_sim::{Scenario, Sim};

const BASIC: &str = include_str!("../tests/pve-sim/scenarios/basic.toml");

#[derive(Clone, Copy)]
enum Guest {
    Qemu101,
    Lxc103,
}

impl Guest {
    fn short(self) -> &'static str {
        match self {
            Guest::Qemu101 => "qemu101",
            Guest::Lxc103 => "lxc103",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Guest::Qemu101 => "qemu 101 (snapshot)",
            Guest::Lxc103 => "lxc 103 (snapshot)",
        }
    }
}

struct Outcome {
    window: f64,
    agent_window: f64,
    result: String,
}

fn fake_sysfs(root: &Path, mac: &str, uuid: Option<&str>) {
    std::fs::create_dir_all(root.join("class/net/eth0")).unwrap();
    std::fs::write(root.join("class/net/eth0/address"), format!("{mac}\n")).unwrap();
    if let Some(u) = uuid {
        std::fs::create_dir_all(root.join("class/dmi/id")).unwrap();
        std::fs::write(root.join("class/dmi/id/product_uuid"), format!("{u}\n")).unwrap();
    }
}

fn read_stamp(p: &Path, agent_output: &str) -> f64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}\nagent:\n{agent_output}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

async fn run(guest: Guest, release: &str, duration: f64, root: &Path) -> Outcome {
    let text = BASIC
        .replace("duration = 20.0", &format!("duration = {duration}"))
        .replace("consistency-point = 2.0", "consistency-point = 5.0");
    let sim = Sim::start(
        &Scenario::parse(&text).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(sim.world().clock.speed(), 1.0);
    let dir: PathBuf = root.join(format!("{}-{release}", guest.short()));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let (secret, tokenid, mac, uuid) = match guest {
        Guest::Qemu101 => (
            "11111111-2222-3333-4444-555555555101",
            "felhom101@pve!agent",
            "bc:24:11:aa:bb:01",
            Some("5B0F8D3E-3C57-4A8E-9D7B-0C1C2A3E4F51"),
        ),
        Guest::Lxc103 => (
            "11111111-2222-3333-4444-555555555103",
            "felhom103@pve!agent",
            "bc:24:11:cc:dd:03",
            None,
        ),
    };
    fake_sysfs(&dir.join("sys"), mac, uuid);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("token"), format!("{secret}\n")).unwrap();
        std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let d = dir.display();
    let config = format!(
        r#"[pve]
url = "{url}"
token-id = "{tokenid}"
token-secret-file = "{d}/token"
fingerprint = "{fp}"

[backup]
storage = "pbs-main"
mode = "snapshot"
task-timeout = "6h"

[state]
dir = "{d}/state"

[quiesce]
release = "{release}"

[[quiesce.hooks]]
name = "app"
pre = ["/bin/sh", "-c", "date +%s.%N > {d}/pre-end"]
post = ["/bin/sh", "-c", "date +%s.%N > {d}/post-start"]
timeout = "10s"
"#,
        url = sim.url(),
        fp = sim.fingerprint(),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_felhom-agent"));
    c.arg("--config")
        .arg(dir.join("config.toml"))
        .args(["backup-now", "--json"])
        .env("FELHOM_AGENT_SYSFS_ROOT", dir.join("sys"))
        .env("FELHOM_LOG", "warn")
        .env_remove("FELHOM_AGENT_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY");
    let out = tokio::task::spawn_blocking(move || c.output().expect("run felhom-agent"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let j: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let window = read_stamp(&dir.join("post-start"), &all) - read_stamp(&dir.join("pre-end"), &all);
    drop(sim);
    Outcome {
        window,
        agent_window: j["quiesce_window_seconds"].as_f64().unwrap_or(f64::NAN),
        result: j["result"].as_str().unwrap_or("?").to_string(),
    }
}

fn main() {
    let mut duration = 600.0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--duration") {
        duration = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .expect("--duration SECONDS");
    }
    let root = std::env::temp_dir().join(format!("felhom-downtime-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let results = rt.block_on(async {
        let r = &root;
        tokio::join!(
            run(Guest::Qemu101, "consistency-point", duration, r),
            run(Guest::Qemu101, "task-end", duration, r),
            run(Guest::Lxc103, "consistency-point", duration, r),
            run(Guest::Lxc103, "task-end", duration, r),
        )
    });
    let wall = started.elapsed();
    println!(
        "Quiesce window of one vzdump of {duration} s with its consistency point at 5 s (pve-sim clock speed 1)"
    );
    println!(
        "window = post hook start − pre hook end (application's view); agent = quiesce_window_seconds (pre start → post end)\n"
    );
    println!(
        "{:<20} {:<18} {:>9} {:>9} {:>8} {:>9}",
        "guest", "release", "window s", "agent s", "result", "ratio"
    );
    for (guest, (cp, te)) in [
        (Guest::Qemu101, (&results.0, &results.1)),
        (Guest::Lxc103, (&results.2, &results.3)),
    ] {
        for (release, o) in [("task-end", te), ("consistency-point", cp)] {
            let ratio = if release == "task-end" {
                "1".to_string()
            } else {
                format!("{:.4}", o.window / te.window)
            };
            println!(
                "{:<20} {:<18} {:>9.3} {:>9.3} {:>8} {:>9}",
                guest.label(),
                release,
                o.window,
                o.agent_window,
                o.result,
                ratio
            );
        }
    }
    println!(
        "\n(ratio = window with consistency-point ÷ window with task-end; wall time {:.0} s)",
        wall.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}
