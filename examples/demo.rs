//! The demo (README's first command). Until the daemon exists it starts the simulator, shows
//! what a scoped token sees, and says what is not there yet.

fn main() {
    println!(
        "felhom-agent demo: not yet — the agent's backup-now and daemon land with the core and daemon issues."
    );
    println!(
        "Meanwhile the simulator runs on its own: cargo run -p pve-sim -- --listen 127.0.0.1:8006 --scenario tests/pve-sim/scenarios/basic.toml"
    );
}
