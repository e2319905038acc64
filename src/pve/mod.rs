//! Typed client for the Proxmox VE REST API (`/api2/json`) used with a least-privilege token.
//!
//! * [`upid`]: task ids (parse/format exactly like `PVE::UPID`).
//! * [`tls`]: TLS trust: CA chain, else pinned leaf SHA-256; never insecure.
//! * [`error`]: [`ApiError`] and the pure classification of error responses.
//! * [`types`], [`guest_config`]: response types, lenient where PVE is.
//! * [`client`]: [`PveClient`], the HTTP transport (retries for GETs only, body cap, metrics).

pub mod client;
pub mod error;
pub mod guest_config;
pub mod lenient;
pub mod retry;
#[cfg(test)]
pub(crate) mod test_server;
pub mod tls;
pub mod types;
pub mod upid;

pub use client::{ApiPath, ClientSettings, PveClient, RequestCounts};
pub use error::ApiError;
pub use retry::RetryPolicy;
pub use upid::Upid;
