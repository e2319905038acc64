//! felhom-agent: makes a Proxmox VE guest back itself up with a least-privilege API token.
//!
//! Modules are cut by domain; pure logic (UPID parsing, config validation) is free of I/O.

pub mod backup;
pub mod config;
pub mod identity;
pub mod pve;
pub mod quiesce;
pub mod retention;
pub mod snapshots;
pub mod state;
