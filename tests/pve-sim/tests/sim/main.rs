//! The simulator's fidelity tests: one binary, a module per numbered behaviour of the
//! simulator issue (see tests/pve-sim/README.md for the map).

mod harness;

mod auth;
mod binary;
mod cluster;
mod faults;
mod perms;
mod snapshots;
mod storage;
mod tasks;
mod validation;
mod vzdump;
