//! felhom-agent: makes a Proxmox VE guest back itself up with a least-privilege API token.
//!
//! Modules are cut by domain; pure logic (UPID parsing, schedule maths, retention planning,
//! permission analysis, log scanning, poll planning, config validation) is free of I/O.

pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod health;
pub mod identity;
pub mod jobs;
pub mod pve;
pub mod quiesce;
pub mod retention;
pub mod schedule;
pub mod selfcheck;
pub mod snapshots;
pub mod state;
pub mod status;
