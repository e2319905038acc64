//! pve-sim: a faithful simulator of the Proxmox VE REST API, the test bed of felhom-agent.
//!
//! The specification is `shared/reference/pve-api.md`; the official schema (`pve9-apidata.json`,
//! vendored under `schema/`) drives route lookup, permission checks and parameter validation.
//! Use it in-process (`Sim::start`) or as a binary (`pve-sim --listen … --scenario FILE`).

pub mod api;
pub mod clock;
pub mod control;
pub mod faults;
pub mod prune;
pub mod rbac;
pub mod routes;
pub mod scenario;
pub mod schema;
mod server;
pub mod tls;
pub mod upid;
pub mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

pub use faults::{FaultKind, FaultSpec};
pub use scenario::Scenario;
pub use world::{RequestRecord, SimEvent, World};

pub(crate) struct Shared {
    pub(crate) world: Mutex<World>,
    pub(crate) certs: Arc<tls::CertStore>,
    pub(crate) shutdown: Notify,
    pub(crate) events: Notify,
    pub(crate) control_key: String,
}

/// A running simulator. Dropping it stops the server.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish()
    }
}

fn random_key() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sim {
    /// Starts serving `scenario` on `listen` (port 0 picks a free port). Needs a tokio runtime.
    pub async fn start(scenario: &Scenario, listen: SocketAddr) -> Result<Sim, String> {
        let mut world = World::from_scenario(scenario)?;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(world.nodes.iter().map(|n| n.name.clone()));
        let certs = Arc::new(tls::CertStore::generate(names)?);
        world.fingerprint = certs.fingerprint();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let control_key = scenario
            .settings
            .control_key
            .clone()
            .unwrap_or_else(random_key);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            certs,
            shutdown: Notify::new(),
            events: Notify::new(),
            control_key,
        });
        tokio::spawn(server::serve(listener, shared.clone()));
        // A light ticker so tasks progress (and events fire) even when nobody asks.
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                let Some(s) = weak.upgrade() else { return };
                let before = {
                    let mut w = s.world.lock().expect("world lock");
                    let n = w.events.len();
                    w.tick();
                    n != w.events.len()
                };
                if before {
                    s.events.notify_waiters();
                }
            }
        });
        Ok(Sim { shared, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (no `/api2/json`).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// SHA-256 of the served certificate, `AA:BB:…` as `pvenode cert info` prints it.
    pub fn fingerprint(&self) -> String {
        self.shared.certs.fingerprint()
    }

    pub fn ca_pem(&self) -> String {
        self.shared.certs.ca_pem().to_string()
    }

    pub fn leaf_pem(&self) -> String {
        self.shared.certs.leaf_pem()
    }

    pub fn control_key(&self) -> &str {
        &self.shared.control_key
    }

    /// Issues a new leaf certificate (a renewal); returns the new fingerprint.
    pub fn rotate_cert(&self) -> Result<String, String> {
        let fp = self.shared.certs.rotate()?;
        self.world().fingerprint = fp.clone();
        Ok(fp)
    }

    /// Direct access to the simulated cluster (ticked to now).
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.shared.world.lock().expect("world lock");
        w.tick();
        w
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.world().requests.clone()
    }

    pub fn events(&self) -> Vec<SimEvent> {
        self.world().events.clone()
    }

    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        let mut w = self.world();
        w.fault_seq += 1;
        let id = w.fault_seq;
        w.faults.push(faults::Fault { id, spec, hits: 0 });
        id
    }

    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    pub fn advance(&self, secs: f64) {
        let mut w = self.world();
        w.clock.advance(secs);
        w.tick();
        drop(w);
        self.shared.events.notify_waiters();
    }

    /// Waits until an event matching `pred` exists (checking ones already logged), or `timeout`.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&SimEvent) -> bool,
    ) -> Option<SimEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.events.notified();
            if let Some(e) = self.world().events.iter().find(|e| pred(e)).cloned() {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.world().events.iter().find(|e| pred(e)).cloned();
            }
        }
    }

    pub fn shutdown(&self) {
        self.shared.shutdown.notify_waiters();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}
