//! The health endpoint: what the agent shows a hub and an operator about itself.
//!
//! Owns: [`HealthView`] (plain data the daemon keeps current through a shared [`Health`]
//! handle), the verdict [`health_reasons`] (pure), the Prometheus rendering ([`metrics`]) and a
//! small hardened HTTP/1 server ([`server`]) with `/livez`, `/healthz`, `/status` and
//! `/metrics`.
//!
//! Invariants: readers never hold the view's lock while doing I/O or formatting — they take a
//! clone ([`Health::snapshot`]) or read a field ([`Health::read`]) and release it; the view has
//! no place for a secret, so `/status` can serve it verbatim; the server runs on its own tokio
//! tasks, so a slow client cannot stall the scheduler.

pub mod inventory;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

pub use inventory::{Inventory, JobCounters, LastPrune, Newest, SnapshotRun, SnapshotRunCounts};
pub use rules::{HealthRules, fmt_secs, has_pending_work, health_reasons, is_live};
pub use server::{HealthServer, ServeError, ServerOptions};
pub use view::{
    Counters, CurrentJob, HealthView, Heartbeat, Phase, PveRequestCounts, RunCounts,
    SelfCheckSummary, describe_journal,
};

/// Shared handle on the view: cheap to clone, one per task that reads or writes it.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<RwLock<HealthView>>,
}

impl Health {
    pub fn new(view: HealthView) -> Health {
        Health {
            inner: Arc::new(RwLock::new(view)),
        }
    }

    /// Changes the view under the write lock. Keep `f` short and free of I/O.
    pub fn update<R>(&self, f: impl FnOnce(&mut HealthView) -> R) -> R {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Reads from the view under the read lock. Keep `f` short and free of I/O.
    pub fn read<R>(&self, f: impl FnOnce(&HealthView) -> R) -> R {
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// A consistent copy of the whole view.
    pub fn snapshot(&self) -> HealthView {
        self.read(HealthView::clone)
    }
}
