//! `pve-sim --listen 127.0.0.1:8006 --scenario FILE`: the simulator as a process, for the demo,
//! benchmarks and tests written in other languages. Prints one JSON line with the URL, the
//! certificate fingerprint and the control key, and can write the CA/leaf PEM for CA-file mode.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "pve-sim", about = "A faithful Proxmox VE API simulator")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: std::net::SocketAddr,
    /// Scenario file (TOML or JSON).
    #[arg(long)]
    scenario: PathBuf,
    /// Write `ca.pem` and `leaf.pem` into this directory.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Write the startup JSON line to this file as well.
    #[arg(long)]
    info_file: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let scenario = match pve_sim::Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pve-sim: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = match pve_sim::Sim::start(&scenario, args.listen).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pve-sim: {e}");
                std::process::exit(1);
            }
        };
        if let Some(dir) = &args.cert_dir {
            let write = |name: &str, text: String| {
                std::fs::write(dir.join(name), text).unwrap_or_else(|e| {
                    eprintln!("pve-sim: cannot write {}: {e}", dir.join(name).display());
                    std::process::exit(1);
                })
            };
            write("ca.pem", sim.ca_pem());
            write("leaf.pem", sim.leaf_pem());
        }
        let info = serde_json::json!({
            "url": sim.url(), "fingerprint": sim.fingerprint(), "control_key": sim.control_key(),
        });
        println!("{info}");
        if let Some(p) = &args.info_file {
            let _ = std::fs::write(p, format!("{info}\n"));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        sim.shutdown();
    });
}
