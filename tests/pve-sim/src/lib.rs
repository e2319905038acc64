//! pve-sim: a faithful simulator of the Proxmox VE REST API, the test bed of felhom-agent.
//!
//! The specification is `shared/reference/pve-api.md`; the official schema (`pve9-apidata.json`)
//! drives route lookup, permission checks and parameter validation.

pub mod prune;
pub mod rbac;
pub mod routes;
pub mod schema;
