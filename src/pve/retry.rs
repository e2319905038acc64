//! Retry policy for idempotent API reads: capped exponential backoff with jitter.
//!
//! Owns [`RetryPolicy`] (pure delay computation) and the injectable [`Sleeper`] so tests never
//! wait. Only GETs are retried by the client; POST/PUT/DELETE never are.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often and how long to back off between attempts of a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no backoff retries). The one immediate retry
    /// after "connection closed before message completed" is not counted.
    pub max_attempts: u32,
    /// Delay before the second attempt (before jitter).
    pub base_delay: Duration,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Delay after failed attempt number `attempt` (1-based): `base · 2^(attempt-1)` capped at
    /// `max_delay`, then jittered into `[d/2, d]` using `rand`.
    pub fn delay(&self, attempt: u32, rand: u64) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        let exp = self
            .base_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay);
        let ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        Duration::from_millis(half + rand % (ms - half + 1))
    }
}

/// Something that waits; injectable so tests can record delays instead of sleeping.
pub trait Sleeper: Send + Sync {
    /// Wait for `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real sleeper (tokio timer).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A small xorshift generator for jitter (not for anything security related).
#[derive(Debug)]
pub struct Jitter(AtomicU64);

impl Jitter {
    /// Seeded from the process's random hash keys.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let seed = RandomState::new().hash_one(0x5eed_u64) | 1;
        Jitter(AtomicU64::new(seed))
    }

    /// Next pseudo-random value.
    pub fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        // rand = 0 gives the lower bound d/2, rand = d/2 the upper bound d.
        assert_eq!(p.delay(1, 0), Duration::from_millis(50));
        assert_eq!(p.delay(1, 50), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 200), Duration::from_millis(400));
        assert_eq!(p.delay(4, 400), Duration::from_millis(800));
        assert_eq!(p.delay(5, 500), Duration::from_millis(1000));
        assert_eq!(p.delay(60, 0), Duration::from_millis(500));
        let j = Jitter::new();
        for attempt in 1..8 {
            let d = p.delay(attempt, j.next());
            assert!(d <= p.max_delay, "{d:?}");
        }
    }

    #[test]
    fn jitter_varies() {
        let j = Jitter::new();
        let a = j.next();
        let b = j.next();
        assert_ne!(a, b);
    }
}
