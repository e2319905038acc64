//! Reading a vzdump task log as it grows: where the consistency point is (the moment the
//! application may run again), progress for predicting the end, and the lines that explain a
//! failure. Pure: lines in, facts out.
//!
//! Consistency points (reference §3), matched on substrings because wording drifts between
//! qemu-server versions:
//! - qemu (snapshot, suspend, stop): `started backup task` — the QMP backup job exists, writes
//!   after it are copy-before-write; in snapshot mode it comes right after `fs-thaw`.
//! - lxc snapshot: the first `creating … archive` line after `create storage snapshot 'vzdump'`
//!   (the snapshot exists and the container runs again).
//! - lxc suspend: `resuming guest` (the final sync is done).
//! - lxc stop: none before the task ends (the container stays down for the archive step).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    Qemu,
    Lxc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Snapshot,
    Suspend,
    Stop,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Snapshot => "snapshot",
            Mode::Suspend => "suspend",
            Mode::Stop => "stop",
        }
    }
}

/// Incremental scanner over the task log.
#[derive(Debug, Clone)]
pub struct LogScan {
    guest: GuestType,
    mode: Mode,
    lines: Vec<String>,
    lxc_snapshot_made: bool,
    consistency_point: Option<usize>,
    /// Effective mode as vzdump logged it (`backup mode: stop` when the guest was not running).
    logged_mode: Option<String>,
    progress: Option<Progress>,
    warnings: u32,
}

/// One qemu progress line: percent done and the job's own elapsed time (`in 1m 5s`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub pct: u32,
    pub elapsed: Option<f64>,
}

impl LogScan {
    pub fn new(guest: GuestType, mode: Mode) -> LogScan {
        LogScan {
            guest,
            mode,
            lines: Vec::new(),
            lxc_snapshot_made: false,
            consistency_point: None,
            logged_mode: None,
            progress: None,
            warnings: 0,
        }
    }

    /// Number of lines seen so far (the `start` of the next incremental log read).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Feeds new lines; returns true when this call reached the consistency point.
    pub fn push(&mut self, line: &str) -> bool {
        let idx = self.lines.len();
        self.lines.push(line.to_string());
        if let Some(m) = line.strip_prefix("INFO: backup mode: ") {
            self.logged_mode = Some(m.trim().to_string());
        }
        if line.starts_with("WARN: ") {
            self.warnings += 1;
        }
        if let Some(p) = parse_progress(line) {
            self.progress = Some(p);
        }
        if self.consistency_point.is_some() {
            return false;
        }
        let reached = match (self.guest, self.mode) {
            (GuestType::Qemu, _) => line.contains("started backup task"),
            (GuestType::Lxc, Mode::Snapshot) => {
                if line.contains("create storage snapshot 'vzdump'") {
                    self.lxc_snapshot_made = true;
                    false
                } else {
                    self.lxc_snapshot_made && is_archive_line(line)
                }
            }
            (GuestType::Lxc, Mode::Suspend) => line.contains("resuming guest"),
            (GuestType::Lxc, Mode::Stop) => false,
        };
        if reached {
            self.consistency_point = Some(idx);
        }
        reached
    }

    pub fn consistency_point(&self) -> Option<usize> {
        self.consistency_point
    }

    /// Latest progress (qemu archives log `NN% (…) in 1m 5s` lines).
    pub fn progress(&self) -> Option<Progress> {
        self.progress
    }

    pub fn logged_mode(&self) -> Option<&str> {
        self.logged_mode.as_deref()
    }

    pub fn warnings(&self) -> u32 {
        self.warnings
    }

    /// The lines that explain a failure: every `ERROR:` line, else the last few lines.
    pub fn error_tail(&self, max: usize) -> Vec<String> {
        let errs: Vec<String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with("ERROR:") || l.starts_with("TASK ERROR:"))
            .cloned()
            .collect();
        let pick = if errs.is_empty() {
            self.lines.clone()
        } else {
            errs
        };
        let skip = pick.len().saturating_sub(max);
        pick.into_iter().skip(skip).collect()
    }
}

fn is_archive_line(line: &str) -> bool {
    line.contains("creating vzdump archive")
        || line.contains("creating Proxmox Backup Server archive")
        || line.contains("creating archive")
}

/// `INFO:  42% (13.4 GiB of 32.0 GiB) in 1m 5s, read: …` → 42 % after 65 s.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let rest = line.strip_prefix("INFO:")?.trim_start();
    let (num, after) = rest.split_once('%')?;
    if !after.starts_with(" (") {
        return None;
    }
    let pct: u32 = num.trim().parse().ok()?;
    if pct > 100 {
        return None;
    }
    let elapsed = after
        .split_once(") in ")
        .map(|(_, d)| d.split(',').next().unwrap_or(""))
        .and_then(parse_duration);
    Some(Progress { pct, elapsed })
}

/// PVE's rendered durations: `45s`, `1m 5s`, `2h 3m 4s`, `1d 2h`; `None` unless finite.
pub fn parse_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for part in s.split_whitespace() {
        let (n, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit() && c != '.')?);
        let n: f64 = n.parse().ok()?;
        total += n * match unit {
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        any = true;
    }
    // Hundreds of digits parse to an infinite f64; that is no duration.
    (any && total.is_finite()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut LogScan, lines: &[&str]) -> Option<usize> {
        let mut at = None;
        for (i, l) in lines.iter().enumerate() {
            if s.push(l) {
                at = Some(i);
            }
        }
        at
    }

    #[test]
    fn qemu_snapshot_point_is_started_backup_task_after_thaw() {
        let mut s = LogScan::new(GuestType::Qemu, Mode::Snapshot);
        let at = feed(
            &mut s,
            &[
                "INFO: starting new backup job: vzdump 101 --mode snapshot --storage pbs",
                "INFO: backup mode: snapshot",
                "INFO: creating Proxmox Backup Server archive 'vm/101/2026-11-18T11:06:40Z'",
                "INFO: issuing guest-agent 'fs-freeze' command",
                "INFO: issuing guest-agent 'fs-thaw' command",
                "INFO: started backup task '0c3c…'",
                "INFO:  10% (3.2 GiB of 32.0 GiB) in 6s, read: 545.1 MiB/s, write: 0 B/s",
            ],
        );
        assert_eq!(at, Some(5));
        assert_eq!(
            s.progress(),
            Some(Progress {
                pct: 10,
                elapsed: Some(6.0)
            })
        );
        assert_eq!(s.logged_mode(), Some("snapshot"));
    }

    #[test]
    fn lxc_snapshot_point_is_the_archive_after_the_vzdump_snapshot() {
        let mut s = LogScan::new(GuestType::Lxc, Mode::Snapshot);
        let at = feed(
            &mut s,
            &[
                "INFO: creating vzdump archive '/mnt/x'", // before the snapshot: not it
                "INFO: create storage snapshot 'vzdump'",
                "INFO: resume vm",
                "INFO: guest is online again after 1 seconds",
                "INFO: creating Proxmox Backup Server archive 'ct/103/2026-11-18T11:06:40Z'",
            ],
        );
        assert_eq!(at, Some(4));
    }

    #[test]
    fn lxc_stop_has_no_early_point_and_suspend_resumes() {
        let mut s = LogScan::new(GuestType::Lxc, Mode::Stop);
        assert_eq!(
            feed(
                &mut s,
                &[
                    "INFO: stopping virtual guest",
                    "INFO: creating vzdump archive 'x'"
                ]
            ),
            None
        );
        let mut s = LogScan::new(GuestType::Lxc, Mode::Suspend);
        assert_eq!(
            feed(&mut s, &["INFO: suspending guest", "INFO: resuming guest"]),
            Some(1)
        );
    }

    #[test]
    fn error_tail_prefers_error_lines_and_counts_warnings() {
        let mut s = LogScan::new(GuestType::Qemu, Mode::Snapshot);
        feed(
            &mut s,
            &[
                "INFO: a",
                "WARN: w1",
                "ERROR: Backup of VM 101 failed - VM is locked (snapshot)",
                "INFO: Failed at 2026-11-18 12:00:00",
                "INFO: Backup job finished with errors",
                "TASK ERROR: job errors",
            ],
        );
        assert_eq!(
            s.error_tail(5),
            [
                "ERROR: Backup of VM 101 failed - VM is locked (snapshot)",
                "TASK ERROR: job errors"
            ]
        );
        assert_eq!(s.warnings(), 1);
    }

    #[test]
    fn progress_parsing() {
        assert_eq!(
            parse_progress("INFO:  42% (13.4 GiB of 32.0 GiB) in 1m 5s, read: x"),
            Some(Progress {
                pct: 42,
                elapsed: Some(65.0)
            })
        );
        assert_eq!(
            parse_progress("INFO: 100% (32.0 GiB of 32.0 GiB) in 1h 10m"),
            Some(Progress {
                pct: 100,
                elapsed: Some(4200.0)
            })
        );
        assert_eq!(
            parse_progress("INFO:  5% (1 GiB of 32.0 GiB)"),
            Some(Progress {
                pct: 5,
                elapsed: None
            })
        );
        assert_eq!(parse_progress("INFO: 42 percent"), None);
        assert_eq!(parse_progress("INFO: 420% (x)"), None);
    }

    /// Found by hand while writing the `tasklog` fuzz target: a duration of 400 digits parses
    /// to an infinite f64, which made the poll planner's wait NaN and
    /// `Duration::from_secs_f64` panic. Non-finite durations are now no duration.
    #[test]
    fn absurd_durations_are_not_infinite() {
        let huge = format!("{}s", "9".repeat(400));
        assert_eq!(parse_duration(&huge), None);
        let line = format!("INFO:  50% (1 GiB of 2 GiB) in {huge}, read: 1 MiB/s");
        assert_eq!(
            parse_progress(&line),
            Some(Progress {
                pct: 50,
                elapsed: None
            })
        );
        assert_eq!(parse_duration("1e3s"), None);
        assert_eq!(parse_duration("1.5m 0.5s"), Some(90.5));
    }
}
