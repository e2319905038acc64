//! A real third-party client (proxmoxer, from PyPI) drives the simulator with a scoped privsep
//! token. `scripts/test` installs proxmoxer into `.cache/venv`; when PyPI was unreachable it sets
//! `FELHOM_PROXMOXER_SKIP` to the reason and this test says so loudly instead of failing.
//! Without either, the test fails: it is never skipped silently.

use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmoxer_drives_the_simulator() {
    if let Ok(reason) = std::env::var("FELHOM_PROXMOXER_SKIP") {
        eprintln!("\n!!! SKIPPED proxmoxer_drives_the_simulator: {reason}\n");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("FELHOM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".cache/venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with proxmoxer at {} — run scripts/test (it creates the venv), or set FELHOM_PYTHON",
        python.display()
    );
    let text =
        include_str!("../scenarios/basic.toml").replace("clock-speed = 1.0", "clock-speed = 40.0");
    let sc = pve_sim::Scenario::parse(&text).unwrap();
    let sim = pve_sim::Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pve-sim-proxmoxer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let script = root.join("tests/pve-sim/proxmoxer/drive_sim.py");
    let port = sim.addr().port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg("localhost")
            .arg(port)
            .arg(&ca)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "proxmoxer found a difference from real PVE:\n{stdout}"
    );
    assert!(stdout.contains(" passed, 0 failed"));
    // What proxmoxer sent is in the request log, authenticated as the scoped token.
    let reqs = sim.requests();
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.path == "/nodes/pve1/vzdump" && r.status == 200)
    );
    assert!(
        reqs.iter()
            .filter(|r| r.status != 401)
            .all(|r| r.authid.as_deref() == Some("felhom101@pve!agent"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
