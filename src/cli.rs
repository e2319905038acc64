//! The command line: raw arguments → validated commands (clap derive), the agent built from the
//! config, and the exit-code contract: 0 ok, 1 failed, 2 config/usage, 3 busy (or skipped
//! because the guest stayed locked), 4 self-check violation.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};

use crate::backup::follow::Shutdown;
use crate::backup::run::{Agent, RunRequest};
use crate::config::{self, BackupMode, Config};
use crate::identity::LocalFacts;
use crate::pve::{ClientSettings, PveClient};
use crate::state::StateDir;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "felhom-agent",
    version,
    about = "Makes this Proxmox VE guest back itself up with a least-privilege API token"
)]
pub struct Cli {
    /// Config file (default /etc/felhom-agent/config.toml; env FELHOM_AGENT_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Back this guest up now (the scheduled job, once).
    BackupNow {
        /// Override [backup] mode.
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Return once the task runs and the quiesce is released; the next start records it.
        #[arg(long)]
        no_wait: bool,
        /// One JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Identity, recent runs and pending or owed work.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Validate the config (exit 0, or 2 naming the problem).
    CheckConfig,
    /// Discover and prove this guest's identity through the API.
    Discover {
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: scheduled backups, health endpoint, systemd notifications.
    Run,
    /// Print the next scheduled fire times (local time and UTC) and this guest's splay.
    NextRuns {
        /// How many fire times.
        #[arg(short = 'n', value_name = "N", default_value_t = 5)]
        n: usize,
    },
    /// Prove the token reaches this guest and its backup storage and nothing else (exit 0
    /// pass, 4 violation, 1 could not run).
    SelfCheck {
        #[arg(long)]
        json: bool,
    },
    /// Print the pveum commands that provision this agent's token with least privilege.
    SetupCommands {
        #[arg(long)]
        json: bool,
    },
    /// This guest's rolling snapshots: list, create one, prune by [snapshots.retention].
    Snapshots {
        #[command(subcommand)]
        op: SnapshotsCmd,
    },
    /// This guest's backups on the backup storage: list, prune by [backup.retention].
    Backups {
        #[command(subcommand)]
        op: BackupsCmd,
    },
    /// Man pages and shell completions from this definition (packaging).
    #[command(hide = true)]
    Generate(crate::generate::GenerateArgs),
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum SnapshotsCmd {
    /// Every snapshot with ownership and the retention plan (read-only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take one snapshot now.
    Create {
        #[arg(long)]
        json: bool,
    },
    /// Delete our snapshots the retention plan removes.
    Prune {
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum BackupsCmd {
    /// This guest's backups with PVE's prune plan and why (read-only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove this guest's backups [backup.retention] does not keep (PVE prunebackups).
    Prune {
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Snapshot,
    Stop,
    Suspend,
}

impl From<ModeArg> for BackupMode {
    fn from(m: ModeArg) -> BackupMode {
        match m {
            ModeArg::Snapshot => BackupMode::Snapshot,
            ModeArg::Stop => BackupMode::Stop,
            ModeArg::Suspend => BackupMode::Suspend,
        }
    }
}

/// SIGINT/SIGTERM as a shutdown request the backup run can observe.
#[derive(Default)]
pub struct Signals {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Signals {
    pub fn install() -> Arc<Signals> {
        let s = Arc::new(Signals::default());
        let s2 = s.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("signal received: finishing safely (post hooks, pending task recorded)");
            s2.trigger();
        });
        s
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

impl Shutdown for Signals {
    fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let n = self.notify.notified();
                if self.requested() {
                    return;
                }
                n.await;
            }
        })
    }
}

pub fn load_config(cli: &Cli) -> Result<Config, String> {
    let path = config::resolve_path(cli.config.as_deref());
    let cfg = config::load(&path).map_err(|e| e.to_string())?;
    check_mounts(&cfg)?;
    Ok(cfg)
}

/// The load-time checks that need the real mounts (`quiesce.fsfreeze` never holds `/` or the
/// state directory's filesystem).
pub fn check_mounts(cfg: &Config) -> Result<(), String> {
    crate::quiesce::fsfreeze_sys::check_config(cfg, &cfg.state.resolve_dir(&env))
        .map_err(|e| e.to_string())
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Builds the agent: secret, TLS-verified client, state dir.
pub fn build_agent(cfg: Config) -> Result<Agent, String> {
    let cred_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let secret = config::load_secret(&cfg.pve, cred_dir.as_deref()).map_err(|e| e.to_string())?;
    let ca_pem = match &cfg.pve.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("pve.ca-file {}: {e}", p.display()))?),
        None => None,
    };
    let client = PveClient::new(ClientSettings {
        base_url: cfg.pve.url.clone(),
        token_id: cfg.pve.token_id.clone(),
        secret: secret.expose().to_string(),
        fingerprint: cfg.pve.fingerprint,
        ca_pem,
        timeout: cfg.pve.timeout,
        connect_timeout: cfg.pve.timeout.min(std::time::Duration::from_secs(10)),
    })
    .map_err(|e| e.to_string())?;
    let dir_path = cfg.state.resolve_dir(&env);
    let dir = StateDir::open(&dir_path).map_err(|e| e.to_string())?;
    Ok(Agent {
        cfg,
        client,
        dir,
        local: LocalFacts::gather(),
    })
}

pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FELHOM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if journald {
        b.without_time().with_ansi(false).init();
    } else {
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

pub async fn run(cli: Cli) -> i32 {
    if let Cmd::Generate(g) = &cli.cmd {
        return crate::generate::run(g);
    }
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("felhom-agent: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Cmd::CheckConfig = cli.cmd {
        println!("config ok");
        return EXIT_OK;
    }
    if let Cmd::NextRuns { n } = cli.cmd {
        return crate::daemon::next_runs(&cfg, n);
    }
    if let Cmd::SetupCommands { json } = cli.cmd {
        return crate::jobs::commands::setup_commands(cfg, json).await;
    }
    let config_path = config::resolve_path(cli.config.as_deref());
    let status_json = matches!(cli.cmd, Cmd::Status { json: true });
    let agent = match build_agent(cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("felhom-agent: {e}");
            return EXIT_CONFIG;
        }
    };
    let signals = Signals::install();
    match cli.cmd {
        Cmd::BackupNow {
            mode,
            no_wait,
            json,
        } => {
            let req = RunRequest {
                mode: mode.map(Into::into),
                wait: !no_wait,
                what: "backup-now",
            };
            let s = crate::backup::run::backup_now(&agent, &req, signals.as_ref()).await;
            if json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                println!("{}", s.line());
                for r in &s.repaired {
                    println!("  repaired: {r}");
                }
            }
            s.exit_code()
        }
        Cmd::Status { .. } => crate::status::print(&agent, signals.as_ref(), status_json).await,
        Cmd::Discover { json } => {
            match crate::identity::discover(&agent.client, agent.cfg.guest.vmid, &agent.local).await
            {
                Ok(id) => {
                    if json {
                        println!("{}", serde_json::to_string(&id).unwrap_or_default());
                    } else {
                        println!(
                            "guest {} ({}) {} on node {}: {}",
                            id.vmid,
                            id.kind,
                            id.name.as_deref().unwrap_or("-"),
                            id.node,
                            id.proof
                        );
                    }
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("felhom-agent: discover: {e}");
                    EXIT_FAILED
                }
            }
        }
        Cmd::Run => crate::daemon::run(agent, config_path, signals).await,
        Cmd::SelfCheck { json } => crate::jobs::commands::self_check(&agent, json).await,
        Cmd::Snapshots { op } => {
            use crate::jobs::commands::{SnapshotsOp, snapshots};
            let (op, json) = match op {
                SnapshotsCmd::List { json } => (SnapshotsOp::List, json),
                SnapshotsCmd::Create { json } => (SnapshotsOp::Create, json),
                SnapshotsCmd::Prune { dry_run, json } => (SnapshotsOp::Prune { dry_run }, json),
            };
            snapshots(&agent, op, json).await
        }
        Cmd::Backups { op } => {
            use crate::jobs::commands::{BackupsOp, backups};
            let (op, json) = match op {
                BackupsCmd::List { json } => (BackupsOp::List, json),
                BackupsCmd::Prune { dry_run, json } => (BackupsOp::Prune { dry_run }, json),
            };
            backups(&agent, op, json).await
        }
        Cmd::CheckConfig | Cmd::NextRuns { .. } | Cmd::SetupCommands { .. } | Cmd::Generate(_) => {
            EXIT_OK
        }
    }
}
