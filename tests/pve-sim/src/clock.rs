//! The simulated clock: wall time that runs at a configurable speed and can be advanced.
//!
//! Invariant: `now()` never goes backwards. Virtual time = start + real elapsed × speed + advanced.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Clock {
    real_base: Instant,
    virtual_base: f64,
    speed: f64,
    advanced: f64,
}

impl Clock {
    /// `start`: the epoch the clock shows now; `speed`: simulated seconds per real second.
    pub fn new(start: f64, speed: f64) -> Clock {
        Clock {
            real_base: Instant::now(),
            virtual_base: start,
            speed: speed.max(0.0),
            advanced: 0.0,
        }
    }

    /// Seconds since the epoch, fractional.
    pub fn now(&self) -> f64 {
        self.virtual_base + self.real_base.elapsed().as_secs_f64() * self.speed + self.advanced
    }

    /// Whole seconds since the epoch (what PVE puts in UPIDs and task lists).
    pub fn epoch(&self) -> i64 {
        self.now().floor() as i64
    }

    /// Jumps the clock forward; tasks progress by the same amount on the next tick.
    pub fn advance(&mut self, secs: f64) {
        if secs > 0.0 {
            self.advanced += secs;
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Changes the speed from now on without a jump.
    pub fn set_speed(&mut self, speed: f64) {
        let now = self.now();
        self.real_base = Instant::now();
        self.virtual_base = now - self.advanced;
        self.speed = speed.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_forward_and_speed_zero_freezes() {
        let mut c = Clock::new(1_000.0, 0.0);
        assert_eq!(c.epoch(), 1000);
        c.advance(59.5);
        assert_eq!(c.now(), 1059.5);
        c.advance(-10.0);
        assert_eq!(c.now(), 1059.5, "negative advances are ignored");
        c.set_speed(0.0);
        assert_eq!(c.now(), 1059.5);
    }
}
