//! The per-guest splay: a delay in `[0, splay)` derived from the VMID alone, so guests sharing
//! a schedule spread their backups over the window while each guest keeps the same offset across
//! restarts and agent versions.
//!
//! The hash is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", 2014) of the VMID, mapped onto whole seconds of the window by multiply-shift.
//! Both are fixed here on purpose: changing them moves every guest's backup time. Never use
//! std's `RandomState`/`DefaultHasher`, which are seeded per process.

use std::time::Duration;

/// SplitMix64's output function applied to `seed` (the first output of a generator seeded with
/// `seed`).
pub(crate) fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The splay delay for guest `vmid`: whole seconds in `[0, splay)`; zero when `splay` is under
/// one second.
pub fn splay_offset(vmid: u32, splay: Duration) -> Duration {
    let window = u128::from(splay.as_secs());
    let secs = (u128::from(splitmix64(u64::from(vmid))) * window) >> 64;
    // secs < window <= u64::MAX, so the cast is lossless.
    Duration::from_secs(secs as u64)
}
