//! Fault-injection suite (issue 9): the real `felhom-agent` binary against pve-sim with the
//! network broken in real namespaces (blackhole, TCP resets, link down via iptables and `ip`),
//! the simulator's own faults (5xx bursts, slow answers, resets, a locked guest, a revoked token,
//! a renewed certificate), signals in every phase and a broken or full state directory. Each case
//! asserts what a user sees — exit code, message, state file, hook markers, the simulator's
//! request log — and that the token secret appears in no output.
//!
//! Cases needing namespaces print `SKIPPED (reason)` when not root or without iptables;
//! `FELHOM_REQUIRE_NETNS=1` (set by scripts/test) turns that into a failure.

#[path = "faults/api.rs"]
mod api;
#[path = "faults/daemon.rs"]
mod daemon;
#[path = "faults/env.rs"]
mod env;
#[path = "faults/net.rs"]
mod net;
#[path = "faults/network.rs"]
mod network;
#[path = "faults/signals.rs"]
mod signals;
#[path = "faults/statefile.rs"]
mod statefile;
