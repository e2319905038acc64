//! Signals of the daemon beyond the SIGINT/SIGTERM shutdown request (`cli::Signals`, which the
//! backup run observes through the `Shutdown` trait): SIGHUP, "reload the configuration".
//!
//! Invariant: the handler is installed before `READY=1`, so a SIGHUP sent by `systemctl reload`
//! right after start-up never takes the default action (terminating the process).

use std::future::pending;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGHUP deliveries; several deliveries between two `recv` calls coalesce into one.
pub struct Hangup {
    sig: Option<Signal>,
}

impl Hangup {
    pub fn install() -> Hangup {
        match signal(SignalKind::hangup()) {
            Ok(sig) => Hangup { sig: Some(sig) },
            Err(e) => {
                tracing::warn!("cannot handle SIGHUP (config reload disabled): {e}");
                Hangup { sig: None }
            }
        }
    }

    /// Resolves at the next SIGHUP (never, when the handler could not be installed).
    pub async fn recv(&mut self) {
        match &mut self.sig {
            Some(s) => {
                if s.recv().await.is_none() {
                    pending::<()>().await;
                }
            }
            None => pending::<()>().await,
        }
    }
}
