//! The per-guest splay: a delay in `[0, splay)` derived from the VMID alone, so guests sharing
//! a schedule spread their backups over the window while each guest keeps the same offset across
//! restarts and agent versions.
//!
//! The offset is the fractional part of `vmid / φ` (Knuth's multiplicative "Fibonacci" hashing:
//! `vmid × ⌊2⁶⁴/φ⌋ mod 2⁶⁴`), mapped onto whole seconds of the window by multiply-shift. PVE hands
//! out VMIDs in sequence (`/cluster/nextid`), and for any run of consecutive VMIDs the three-gap
//! theorem (Sós 1958) makes these points split the window into gaps of at most three lengths, the
//! longest under 2.62× the mean: the guests of a node start nearly evenly spread, where a hash
//! that looks random (SplitMix64 before 0.1) bunched them like dice — `benches/fleet.rs` measured
//! 19 vzdump starts in one minute of a 1-hour splay for 500 guests, 2.3× the even spread, and
//! 11 in one minute for 50 guests in 15 minutes (3.3×); see `docs/performance.md`. VMIDs
//! spaced by a Fibonacci number (13, 21, …, 144) land close together; arbitrary VMIDs spread like
//! random ones.
//!
//! The function is fixed on purpose: changing it moves every guest's backup time. Never use
//! std's `RandomState`/`DefaultHasher`, which are seeded per process.

use std::time::Duration;

/// ⌊2⁶⁴/φ⌋ (odd): the golden-ratio fraction in 64 bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splay delay for guest `vmid`: whole seconds in `[0, splay)`; zero when `splay` is under
/// one second.
pub fn splay_offset(vmid: u32, splay: Duration) -> Duration {
    let window = u128::from(splay.as_secs());
    // frac(vmid / φ) as a 64-bit binary fraction.
    let frac = u64::from(vmid).wrapping_mul(GOLDEN);
    let secs = (u128::from(frac) * window) >> 64;
    // secs < window <= u64::MAX, so the cast is lossless.
    Duration::from_secs(secs as u64)
}
