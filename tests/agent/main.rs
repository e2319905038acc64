//! End-to-end tests of `felhom-agent` against pve-sim over real TLS (one binary, a small
//! harness). Each asserts what a user sees: exit code, message, what reached the PVE API, what
//! the state file holds — and, in every run, that the token secret appears nowhere.

mod harness;

mod backup;
mod crash;
mod failures;
mod fsfreeze;
mod setup;
