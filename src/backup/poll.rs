//! When to ask PVE about a running vzdump task, and what to ask. Pure: times in, waits out.
//!
//! The task log is read incrementally (`start=N`); its final `TASK …` line tells that the task
//! stopped, so most polls are one small log request. The task status is asked when the log says
//! the task ended, now and then as a safety net (a killed worker writes no `TASK` line, §2), and
//! on every poll once the predicted end has passed.
//!
//! Schedule: fast while the consistency point is owed (hooks waiting to be released), then the
//! wait is half of the predicted remaining time (from qemu progress lines, else the last run's
//! duration), dense (0.5 s) around the predicted end, and capped exponential back-off when
//! nothing predicts the end. A 10-minute backup costs ~35 requests with sub-second detection
//! (a fixed 1 s poller needs 600 for the same delay); see `tests` below and `benches/`.
//!
//! Queued on the node's vzdump lock (`INFO: trying to get global lock - waiting...`) nothing
//! predicts anything: the plan backs off (capped at 15 s while hooks are owed, so the release
//! follows the lock hand-over closely, else at the normal cap) and asks no status but the
//! safety net; `INFO: got global lock` restarts every prediction from that moment. Without
//! this a queued task outlives its predicted end and is polled densely for the whole wait
//! (the fleet benchmark measured ~670 requests per queued backup instead of ~16).

/// Seconds on the caller's monotonic clock.
pub type Secs = f64;

#[derive(Debug, Clone)]
pub struct PollPlan {
    start: Secs,
    need_cp: bool,
    cp_at: Option<Secs>,
    first_progress: Option<(Secs, u32)>,
    last_progress: Option<(Secs, u32)>,
    /// Progress in the job's own time: (job elapsed, pct), and the tightest offset
    /// `observed − job elapsed` seen (an observation is never earlier than the line).
    job_progress: Option<(Secs, u32)>,
    job_offset: Option<Secs>,
    expected_total: Option<Secs>,
    polls_since_status: u32,
    /// Since when the task has been queued on the node's vzdump lock (not yet acquired).
    lock_wait_since: Option<Secs>,
    /// Longest wait between polls.
    pub cap: Secs,
    /// Wait near the predicted end.
    pub dense: Secs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Next {
    pub wait: Secs,
    pub ask_status: bool,
}

impl PollPlan {
    /// `need_cp`: a consistency point is awaited (post hooks owed at it).
    /// `expected_total`: the previous comparable run's duration, if known.
    pub fn new(start: Secs, need_cp: bool, expected_total: Option<Secs>) -> PollPlan {
        PollPlan {
            start,
            need_cp,
            cp_at: None,
            first_progress: None,
            last_progress: None,
            job_progress: None,
            job_offset: None,
            expected_total: expected_total.filter(|t| *t > 0.0),
            polls_since_status: 0,
            lock_wait_since: None,
            cap: 60.0,
            dense: 0.5,
        }
    }

    /// The task log says the task waits for the node's vzdump lock (seen at `now`).
    pub fn observe_lock_wait(&mut self, now: Secs) {
        if self.cp_at.is_none() && self.lock_wait_since.is_none() {
            self.lock_wait_since = Some(now);
        }
    }

    /// The task got the node's vzdump lock at (about) `now`: the backup proper starts here, so
    /// every prediction (history, back-off) restarts from this moment.
    pub fn observe_lock_acquired(&mut self, now: Secs) {
        if self.lock_wait_since.take().is_some() {
            self.start = now;
        }
    }

    /// Whether the task is known to be queued on the node's vzdump lock.
    pub fn lock_waiting(&self) -> bool {
        self.lock_wait_since.is_some()
    }

    /// The consistency point (qemu: `started backup task`, which is job time 0) seen at `now`.
    pub fn observe_cp(&mut self, now: Secs) {
        if self.cp_at.is_none() {
            self.cp_at = Some(now);
            self.job_offset = Some(self.job_offset.map_or(now, |o: Secs| o.min(now)));
        }
    }

    /// A progress line seen at `now`; `job_elapsed` is the duration the line itself states.
    pub fn observe_progress(&mut self, now: Secs, pct: u32, job_elapsed: Option<Secs>) {
        if let Some(d) = job_elapsed.filter(|d| d.is_finite() && *d > 0.0 && pct > 0) {
            let off = now - d;
            self.job_offset = Some(self.job_offset.map_or(off, |o: Secs| o.min(off)));
            if self.job_progress.is_none_or(|(_, p)| pct > p) {
                self.job_progress = Some((d, pct));
            }
        }
        if self.first_progress.is_none() {
            self.first_progress = Some((now, pct));
        }
        if self.last_progress.is_none_or(|(_, p)| pct > p) {
            self.last_progress = Some((now, pct));
        }
    }

    /// When the task is predicted to end, if anything predicts it.
    pub fn predicted_end(&self) -> Option<Secs> {
        if let (Some((d, p)), Some(off)) = (self.job_progress, self.job_offset) {
            return Some(off + d * 100.0 / p as f64);
        }
        if let (Some((t0, p0)), Some((t1, p1))) = (self.first_progress, self.last_progress) {
            if p1 > p0 && t1 > t0 {
                let rate = (p1 - p0) as f64 / (t1 - t0);
                return Some(t1 + (100 - p1.min(100)) as f64 / rate);
            }
            let base = self.cp_at.unwrap_or(self.start);
            if p1 > 0 && t1 > base {
                let rate = p1 as f64 / (t1 - base);
                return Some(t1 + (100 - p1.min(100)) as f64 / rate);
            }
        }
        self.expected_total.map(|d| self.start + d)
    }

    /// What to do after a poll at `now`: how long to wait and whether the next poll also asks
    /// the task status.
    pub fn next(&mut self, now: Secs) -> Next {
        let elapsed = (now - self.start).max(0.0);
        let awaiting_cp = self.need_cp && self.cp_at.is_none();
        let end = self.predicted_end();
        let wait = if let Some(since) = self.lock_wait_since {
            let cap = if awaiting_cp { 15.0 } else { self.cap };
            ((now - since) * 0.25).clamp(1.0, cap)
        } else if awaiting_cp {
            (elapsed * 0.5).clamp(0.25, 2.0)
        } else if let Some(e) = end {
            let remaining = e - now;
            if remaining > 4.0 * self.dense {
                (remaining * 0.5).clamp(self.dense, self.cap)
            } else if remaining > -10.0 {
                self.dense
            } else {
                // Past the prediction: back off again.
                ((-remaining) * 0.25).clamp(self.dense, self.cap.min(30.0))
            }
        } else {
            let since = now - self.cp_at.unwrap_or(self.start);
            (since * 0.5).clamp(1.0, 30.0)
        };
        self.polls_since_status += 1;
        let past_end = self.lock_wait_since.is_none() && end.is_some_and(|e| now + wait > e + 5.0);
        let ask_status = past_end || self.polls_since_status >= 8;
        if ask_status {
            self.polls_since_status = 0;
        }
        Next { wait, ask_status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated task: CP at `cp`, progress lines every 10 % of the archive, ends at `end`;
    /// returns (requests, detection delay).
    fn simulate(
        cp: f64,
        end: f64,
        progress: bool,
        progress_times: bool,
        history: Option<f64>,
    ) -> (u32, f64) {
        let mut plan = PollPlan::new(0.0, true, history);
        let mut now = 0.0;
        let mut requests = 0;
        let mut seen_pct = 0;
        let mut ask_status = false;
        loop {
            requests += 1; // the log read
            if ask_status {
                requests += 1;
            }
            if now >= end {
                if !ask_status {
                    requests += 1; // TASK line seen: one status read for the exit status
                }
                return (requests, now - end);
            }
            if now >= cp {
                plan.observe_cp(now);
                if progress {
                    let pct = (((now - cp) / (end - cp)) * 10.0).floor() as u32 * 10;
                    if pct > seen_pct && pct < 100 {
                        seen_pct = pct;
                        // The line states when it was written (job time since the CP).
                        let written = (end - cp) * pct as f64 / 100.0;
                        plan.observe_progress(now, pct, progress_times.then_some(written));
                    }
                }
            }
            let n = plan.next(now);
            ask_status = n.ask_status;
            now += n.wait;
        }
    }

    #[test]
    fn ten_minute_qemu_backup_is_cheap_and_detected_fast() {
        let (req, delay) = simulate(5.0, 600.0, true, true, None);
        assert!(req <= 60, "{req} requests");
        assert!(delay <= 1.0, "detected {delay:.2}s late");
    }

    #[test]
    fn progress_without_durations_still_bounds_the_cost() {
        let (req, delay) = simulate(5.0, 600.0, true, false, None);
        assert!(req <= 60, "{req} requests");
        assert!(delay <= 15.0, "detected {delay:.2}s late");
    }

    #[test]
    fn history_predicts_the_end_without_progress_lines() {
        let (req, delay) = simulate(3.0, 600.0, false, false, Some(598.0));
        assert!(req <= 60, "{req} requests");
        assert!(delay <= 1.0, "detected {delay:.2}s late");
    }

    #[test]
    fn without_any_prediction_waits_are_capped() {
        let (req, delay) = simulate(3.0, 7200.0, false, false, None);
        assert!(delay <= 30.0, "back-off is capped: {delay}");
        assert!(req < 300, "{req}");
    }

    /// A task queued `queued` seconds on the node's lock, then CP at +5 s and end at +600 s of
    /// its own time; the plan knows the last run took 600 s. Returns (requests, CP delay, end
    /// delay).
    fn simulate_queued(queued: f64, need_cp: bool) -> (u32, f64, f64) {
        let (cp, end) = (queued + 5.0, queued + 600.0);
        let mut plan = PollPlan::new(0.0, need_cp, Some(600.0));
        let (mut now, mut requests, mut ask_status) = (0.0, 0, false);
        let mut cp_delay = None;
        loop {
            requests += 1 + ask_status as u32;
            if now >= end {
                return (requests, cp_delay.unwrap_or(f64::NAN), now - end);
            }
            if now < queued {
                plan.observe_lock_wait(0.0); // the line is in the log from the start
            } else {
                plan.observe_lock_acquired(queued);
            }
            if now >= cp && cp_delay.is_none() {
                cp_delay = Some(now - cp);
                plan.observe_cp(now);
            }
            let n = plan.next(now);
            ask_status = n.ask_status;
            now += n.wait;
        }
    }

    #[test]
    fn a_task_queued_on_the_node_lock_is_polled_sparsely_and_predicted_from_the_hand_over() {
        // 30 minutes in the queue, hooks owed: the release follows the hand-over within the
        // 15 s cap (+ the CP's own polling), the end is still detected within a second.
        let (req, cp_delay, end_delay) = simulate_queued(1800.0, true);
        assert!(req <= 60 + 1800 / 15 + 10, "{req} requests");
        assert!(cp_delay <= 16.0, "released {cp_delay:.2}s after the CP");
        assert!(end_delay <= 1.0, "end detected {end_delay:.2}s late");
        // Nothing owed: the queue costs about one request a minute.
        let (req, _, end_delay) = simulate_queued(1800.0, false);
        assert!(req <= 60 + 1800 / 60 + 10, "{req} requests");
        assert!(end_delay <= 1.0, "end detected {end_delay:.2}s late");
    }

    #[test]
    fn without_the_lock_lines_a_queued_task_costs_far_more() {
        // The same queued task followed by a plan that never hears of the lock: the history's
        // predicted end passes during the queue and every poll is dense or asks the status.
        let mut plan = PollPlan::new(0.0, false, Some(600.0));
        let (mut now, mut requests) = (0.0, 0u32);
        while now < 1800.0 + 600.0 {
            let n = plan.next(now);
            requests += 1 + n.ask_status as u32;
            now += n.wait;
        }
        let (aware, _, _) = simulate_queued(1800.0, false);
        assert!(requests > 2 * aware, "unaware {requests} vs aware {aware}");
    }

    #[test]
    fn fast_while_the_consistency_point_is_owed() {
        let mut p = PollPlan::new(0.0, true, Some(600.0));
        assert_eq!(p.next(0.0).wait, 0.25);
        assert!(p.next(3.0).wait <= 2.0);
        p.observe_cp(3.0);
        assert!(
            p.next(3.0).wait > 2.0,
            "after the point the wait follows the prediction"
        );
    }

    #[test]
    fn status_is_asked_as_a_safety_net_and_past_the_prediction() {
        let mut p = PollPlan::new(0.0, false, Some(10.0));
        let asks: Vec<bool> = (0..20).map(|i| p.next(i as f64 * 0.5).ask_status).collect();
        assert!(asks.iter().any(|a| *a));
        let mut p = PollPlan::new(0.0, false, Some(10.0));
        assert!(
            p.next(30.0).ask_status,
            "past the predicted end every poll asks the status"
        );
    }

    /// Regression (hostile task log): an infinite job-elapsed time must not turn the wait
    /// into NaN, which `Duration::from_secs_f64` panics on.
    #[test]
    fn non_finite_progress_durations_are_ignored() {
        let mut p = PollPlan::new(0.0, false, None);
        p.observe_cp(1.0);
        p.observe_progress(2.0, 50, Some(f64::INFINITY));
        p.observe_progress(3.0, 60, Some(f64::NAN));
        let next = p.next(3.0);
        assert!(next.wait.is_finite(), "{next:?}");
        assert_eq!(p.predicted_end(), Some(3.0 + 40.0 / 10.0));
    }
}
