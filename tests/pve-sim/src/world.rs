//! The simulated cluster: nodes, guests, storages, access control, tasks, the request and event
//! logs, and the task engine that advances scripted tasks with the simulated clock.
//!
//! Invariants: a task's side effects happen in script order, only while it is not held, and only
//! when its script time has been reached on the simulated clock; one vzdump per node holds the
//! node's global lock at a time (FIFO waiters); tasks are never removed, so UPIDs stay readable.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::clock::Clock;
use crate::prune::PruneOptions;
use crate::rbac::Rbac;
use crate::scenario::{
    GuestKind, Scenario, Settings, SnapshotTiming, StorageKind, VzdumpBehaviour,
};
use crate::upid::Upid;

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub online: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub name: String,
    pub description: String,
    pub snaptime: i64,
    pub parent: Option<String>,
    pub snapstate: Option<String>,
    pub vmstate: bool,
    /// The disk-level snapshot is already gone (an interrupted delete): a normal delete fails,
    /// `force=1` removes the config entry.
    pub disk_gone: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    pub vmid: u32,
    pub kind: GuestKind,
    pub node: String,
    pub name: String,
    pub status: String,
    pub config: BTreeMap<String, String>,
    pub lock: Option<String>,
    pub template: bool,
    pub ha_managed: bool,
    pub snapshots: Vec<Snapshot>,
    /// The snapshot `current` descends from.
    pub parent: Option<String>,
    pub backup: Option<VzdumpBehaviour>,
    pub digest: u64,
}

impl Guest {
    pub fn running(&self) -> bool {
        self.status == "running"
    }
    pub fn conf_path(&self, node: &str) -> String {
        conf_path(self.kind, node, self.vmid)
    }
    /// The agent is enabled when the `agent` option's first (or `enabled=`) value is 1.
    pub fn agent_enabled(&self) -> bool {
        let Some(a) = self.config.get("agent") else {
            return false;
        };
        a.split(',').any(|p| p == "1" || p == "enabled=1")
    }
}

pub fn conf_path(kind: GuestKind, node: &str, vmid: u32) -> String {
    format!("nodes/{node}/{}/{vmid}.conf", kind.config_dir())
}

#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub volid: String,
    pub vmid: u32,
    pub kind: GuestKind,
    pub ctime: i64,
    pub size: u64,
    pub protected: bool,
    pub notes: Option<String>,
    pub format: String,
    pub std_name: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub id: String,
    pub kind: StorageKind,
    pub content: Vec<String>,
    pub nodes: Option<Vec<String>>,
    pub shared: bool,
    pub total: u64,
    pub used: u64,
    pub active: bool,
    pub prune: Option<PruneOptions>,
    pub max_protected: Option<u64>,
    pub volumes: Vec<Volume>,
}

impl Storage {
    pub fn on_node(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|n| n.iter().any(|x| x == node))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub time: f64,
    pub method: String,
    pub path: String,
    pub template: Option<String>,
    pub params: BTreeMap<String, String>,
    pub authid: Option<String>,
    pub status: u16,
    /// Set when an injected fault answered instead of the API.
    pub fault: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimEvent {
    pub seq: u64,
    pub time: f64,
    pub kind: String,
    pub vmid: Option<u32>,
    pub upid: Option<String>,
    pub detail: String,
}

/// What a script step tells the engine.
pub enum StepResult {
    Continue,
    /// Ends the task; `exitstatus` as PVE reports it (`OK`, `WARNINGS: n`, error text, or
    /// `unexpected status` which writes no TASK line).
    Finish(String),
}

pub type StepFn = Box<dyn FnOnce(&mut World, &str) -> StepResult + Send>;

pub struct Task {
    pub upid: String,
    pub parsed: Upid,
    pub log: Vec<String>,
    pub exitstatus: Option<String>,
    pub endtime: Option<i64>,
    pub held: bool,
    /// Script time: simulated seconds since the script started (after any global lock wait).
    pub elapsed: f64,
    /// vzdump waiting for the node's global lock: give up after this many seconds of waiting.
    pub lock_wait: Option<f64>,
    waiting_logged: bool,
    pub vmid: Option<u32>,
    script: VecDeque<(f64, StepFn)>,
}

impl Task {
    pub fn running(&self) -> bool {
        self.exitstatus.is_none()
    }
}

pub struct World {
    pub settings: Settings,
    pub tz: jiff::tz::TimeZone,
    pub clock: Clock,
    pub nodes: Vec<Node>,
    pub guests: BTreeMap<u32, Guest>,
    pub storages: BTreeMap<String, Storage>,
    pub rbac: Rbac,
    pub vzdump_default: VzdumpBehaviour,
    pub snapshot_timing: SnapshotTiming,
    pub tasks: Vec<Task>,
    task_index: HashMap<String, usize>,
    /// node → UPID holding `/var/run/vzdump.lock`.
    pub vzdump_lock: HashMap<String, String>,
    /// node → indices of the vzdump tasks waiting for its lock, in arrival order (FIFO).
    lock_queue: HashMap<String, VecDeque<usize>>,
    /// node → simulated instant its vzdump lock was last released (for an exact hand-over when
    /// one tick covers both the release and the next waiter's start).
    lock_freed_at: HashMap<String, f64>,
    pub requests: Vec<RequestRecord>,
    pub events: Vec<SimEvent>,
    pub faults: Vec<crate::faults::Fault>,
    last_tick: f64,
    next_pid: u32,
    next_pstart: u64,
    pub fault_seq: u64,
    /// SHA-256 fingerprint of the served certificate (for `/nodes` and certificate info).
    pub fingerprint: String,
    /// While a script step runs: how late it runs against its scheduled time, so events carry
    /// the simulated instant they were due at, not the tick that noticed them.
    step_lag: f64,
}

impl World {
    pub fn from_scenario(sc: &Scenario) -> Result<World, String> {
        let tz = jiff::tz::TimeZone::get(&sc.settings.timezone)
            .map_err(|e| format!("settings.timezone {:?}: {e}", sc.settings.timezone))?;
        let start = sc.settings.start_time.map(|t| t as f64).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        if sc.nodes.is_empty() {
            return Err("scenario: at least one node is required".into());
        }
        let nodes: Vec<Node> = sc
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                online: n.online,
            })
            .collect();
        let known_node = |n: &str| nodes.iter().any(|x| x.name == n);
        let mut guests = BTreeMap::new();
        for g in &sc.guests {
            if !known_node(&g.node) {
                return Err(format!("guest {}: unknown node {:?}", g.vmid, g.node));
            }
            if !(100..=999_999_999).contains(&g.vmid) {
                return Err(format!("guest {}: vmid must be 100..999999999", g.vmid));
            }
            if guests.contains_key(&g.vmid) {
                return Err(format!("guest {}: duplicate vmid", g.vmid));
            }
            if g.status != "running" && g.status != "stopped" {
                return Err(format!(
                    "guest {}: status must be running or stopped",
                    g.vmid
                ));
            }
            let name = g.name.clone().unwrap_or_else(|| match g.kind {
                GuestKind::Qemu => format!("VM{}", g.vmid),
                GuestKind::Lxc => format!("CT{}", g.vmid),
            });
            let mut config = g.config.clone();
            let name_key = if g.kind == GuestKind::Qemu {
                "name"
            } else {
                "hostname"
            };
            config
                .entry(name_key.into())
                .or_insert_with(|| name.clone());
            let snapshots: Vec<Snapshot> = g
                .snapshots
                .iter()
                .map(|s| Snapshot {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    snaptime: s.snaptime.unwrap_or(0),
                    parent: s.parent.clone(),
                    snapstate: s.snapstate.clone(),
                    vmstate: s.vmstate,
                    disk_gone: false,
                })
                .collect();
            let parent = snapshots
                .iter()
                .max_by_key(|s| s.snaptime)
                .map(|s| s.name.clone());
            guests.insert(
                g.vmid,
                Guest {
                    vmid: g.vmid,
                    kind: g.kind,
                    node: g.node.clone(),
                    name,
                    status: g.status.clone(),
                    config,
                    lock: g.lock.clone(),
                    template: g.template,
                    ha_managed: g.ha_managed,
                    snapshots,
                    parent,
                    backup: g.backup.clone(),
                    digest: 1,
                },
            );
        }
        let mut storages = BTreeMap::new();
        for s in &sc.storages {
            let prune = match &s.prune_backups {
                Some(p) => Some(
                    PruneOptions::parse(p)
                        .map_err(|e| format!("storage {}: prune-backups: {e}", s.id))?,
                ),
                None => None,
            };
            let mut st = Storage {
                id: s.id.clone(),
                kind: s.kind,
                content: s.content.clone(),
                nodes: s.nodes.clone(),
                shared: s.shared.unwrap_or(s.kind == StorageKind::Pbs),
                total: s.total,
                used: s.used,
                active: s.active,
                prune,
                max_protected: s.max_protected_backups,
                volumes: Vec::new(),
            };
            for b in &s.backups {
                let vol = make_volume(
                    &st,
                    b.kind,
                    b.vmid,
                    b.ctime,
                    b.size,
                    &tz,
                    b.volname.as_deref(),
                );
                let mut vol = vol;
                vol.protected = b.protected;
                vol.notes = b.notes.clone();
                st.volumes.push(vol);
            }
            storages.insert(s.id.clone(), st);
        }
        let rbac = Rbac::from_spec(&sc.access).map_err(|e| format!("scenario access: {e}"))?;
        Ok(World {
            settings: sc.settings.clone(),
            tz,
            clock: Clock::new(start, sc.settings.clock_speed),
            nodes,
            guests,
            storages,
            rbac,
            vzdump_default: sc.vzdump.clone(),
            snapshot_timing: sc.snapshot_timing.clone(),
            tasks: Vec::new(),
            task_index: HashMap::new(),
            vzdump_lock: HashMap::new(),
            lock_queue: HashMap::new(),
            lock_freed_at: HashMap::new(),
            requests: Vec::new(),
            events: Vec::new(),
            faults: Vec::new(),
            last_tick: start,
            next_pid: 0x1E240,
            next_pstart: 0x0085_BFF8,
            fault_seq: 0,
            fingerprint: String::new(),
            step_lag: 0.0,
        })
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn event(
        &mut self,
        kind: &str,
        vmid: Option<u32>,
        upid: Option<&str>,
        detail: impl Into<String>,
    ) {
        let seq = self.events.len() as u64 + 1;
        self.events.push(SimEvent {
            seq,
            time: self.clock.now() - self.step_lag,
            kind: kind.into(),
            vmid,
            upid: upid.map(str::to_string),
            detail: detail.into(),
        });
    }

    pub fn task(&self, upid: &str) -> Option<&Task> {
        self.task_index.get(upid).map(|&i| &self.tasks[i])
    }

    pub fn task_mut(&mut self, upid: &str) -> Option<&mut Task> {
        self.task_index.get(upid).map(|&i| &mut self.tasks[i])
    }

    /// Appends a line to a task's log.
    pub fn log(&mut self, upid: &str, line: impl Into<String>) {
        if let Some(t) = self.task_mut(upid) {
            t.log.push(line.into());
        }
    }

    /// Starts a worker task (PVE's fork_worker) and returns its UPID.
    pub fn spawn_task(
        &mut self,
        node: &str,
        wtype: &str,
        id: &str,
        user: &str,
        vmid: Option<u32>,
        script: Vec<(f64, StepFn)>,
    ) -> String {
        self.spawn_task_with_lock(node, wtype, id, user, vmid, None, script)
    }

    /// Like `spawn_task`; with `lock_wait` the script starts only once the node's vzdump lock is
    /// free (FIFO), giving up after `lock_wait` seconds like vzdump's `lockwait`.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_task_with_lock(
        &mut self,
        node: &str,
        wtype: &str,
        id: &str,
        user: &str,
        vmid: Option<u32>,
        lock_wait: Option<f64>,
        script: Vec<(f64, StepFn)>,
    ) -> String {
        self.next_pid += 7;
        self.next_pstart += 113;
        let parsed = Upid {
            node: node.into(),
            pid: self.next_pid,
            pstart: self.next_pstart,
            starttime: self.clock.epoch(),
            wtype: wtype.into(),
            id: id.into(),
            user: user.into(),
        };
        let upid = parsed.encode();
        self.task_index.insert(upid.clone(), self.tasks.len());
        self.tasks.push(Task {
            upid: upid.clone(),
            parsed,
            log: Vec::new(),
            exitstatus: None,
            endtime: None,
            held: false,
            elapsed: 0.0,
            lock_wait,
            waiting_logged: false,
            vmid,
            script: script.into(),
        });
        if lock_wait.is_some() {
            self.lock_queue
                .entry(node.to_string())
                .or_default()
                .push_back(self.tasks.len() - 1);
        }
        self.event("task-started", vmid, Some(&upid), wtype);
        // Steps due at time 0 happen before the API call returns, like a worker that starts at once.
        self.run_due(self.tasks.len() - 1);
        upid
    }

    /// Ends a task: writes the TASK line (except for `unexpected status`), releases a held vzdump
    /// lock, records the event.
    pub fn finish_task(&mut self, upid: &str, exitstatus: String) {
        let now = (self.clock.now() - self.step_lag).floor() as i64;
        let Some(t) = self.task_mut(upid) else { return };
        if !t.running() {
            return;
        }
        if exitstatus == "OK" {
            t.log.push("TASK OK".into());
        } else if exitstatus.starts_with("WARNINGS: ") {
            t.log.push(format!("TASK {exitstatus}"));
        } else if exitstatus != "unexpected status" {
            t.log.push(format!("TASK ERROR: {exitstatus}"));
        }
        t.exitstatus = Some(exitstatus.clone());
        t.endtime = Some(now);
        t.script.clear();
        let was_waiting = t.lock_wait.take().is_some();
        let node = t.parsed.node.clone();
        let vmid = t.vmid;
        if was_waiting
            && let Some(&i) = self.task_index.get(upid)
            && let Some(q) = self.lock_queue.get_mut(&node)
        {
            q.retain(|&x| x != i);
        }
        if self.vzdump_lock.get(&node).map(String::as_str) == Some(upid) {
            self.vzdump_lock.remove(&node);
            self.lock_freed_at
                .insert(node.clone(), self.clock.now() - self.step_lag);
        }
        self.event("task-finished", vmid, Some(upid), exitstatus);
    }

    /// Kills a worker the way a node crash or `kill -9` would: no TASK line, side effects
    /// (locks, half-made snapshots) stay as they are.
    pub fn kill_task(&mut self, upid: &str) -> bool {
        match self.task(upid) {
            Some(t) if t.running() => {
                self.finish_task(upid, "unexpected status".into());
                true
            }
            _ => false,
        }
    }

    /// Advances every running, unheld task to the current simulated time.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        let dt = (now - self.last_tick).max(0.0);
        self.last_tick = now;
        let live = |t: &Task| t.running() && !t.held;
        for t in self.tasks.iter_mut().filter(|t| live(t)) {
            t.elapsed += dt;
        }
        // Tasks not waiting for a lock first, so a lock released inside this tick is handed over
        // before a waiter's `lockwait` is judged.
        for i in 0..self.tasks.len() {
            if live(&self.tasks[i]) && self.tasks[i].lock_wait.is_none() {
                self.run_due(i);
            }
        }
        self.hand_over_locks();
        for i in 0..self.tasks.len() {
            if live(&self.tasks[i]) && self.tasks[i].lock_wait.is_some() {
                self.run_due(i);
            }
        }
    }

    /// A lock released during this tick goes to the node's first waiter at once (a waiter that
    /// came before the holder in task order was already visited), so the hand-over does not
    /// wait for the next tick.
    fn hand_over_locks(&mut self) {
        loop {
            let heads: Vec<usize> = self
                .lock_queue
                .iter()
                .filter(|(node, _)| !self.vzdump_lock.contains_key(*node))
                .filter_map(|(_, q)| q.front().copied())
                .collect();
            let mut progressed = false;
            for i in heads {
                self.run_due(i);
                let node = &self.tasks[i].parsed.node;
                progressed |= self.lock_queue.get(node).and_then(|q| q.front()) != Some(&i);
            }
            if !progressed {
                return;
            }
        }
    }

    /// The simulated instant of the next thing the task engine will do on its own (a script
    /// step, a lock hand-over or a `lockwait` timeout), if any task is running and not held.
    /// A driver that advances the clock exactly to these instants sees every step on time.
    pub fn next_due(&self) -> Option<f64> {
        let base = self.last_tick;
        let mut best: Option<f64> = None;
        for t in self.tasks.iter().filter(|t| t.running() && !t.held) {
            let due = if let Some(limit) = t.lock_wait {
                let node = &t.parsed.node;
                let head = self.lock_queue.get(node).and_then(|q| q.front().copied());
                if !self.vzdump_lock.contains_key(node)
                    && head.is_some_and(|h| self.tasks[h].upid == t.upid)
                {
                    base
                } else {
                    base + (limit - t.elapsed).max(0.0)
                }
            } else if let Some((at, _)) = t.script.front() {
                base + (at - t.elapsed).max(0.0)
            } else {
                continue;
            };
            best = Some(best.map_or(due, |b: f64| b.min(due)));
        }
        best
    }

    fn run_due(&mut self, i: usize) {
        loop {
            let upid = self.tasks[i].upid.clone();
            if !self.tasks[i].running() || self.tasks[i].held {
                return;
            }
            if let Some(limit) = self.tasks[i].lock_wait {
                let node = self.tasks[i].parsed.node.clone();
                let free = !self.vzdump_lock.contains_key(&node);
                let first_waiter = self.lock_queue.get(&node).and_then(|q| q.front().copied());
                // Released earlier within this tick: the waiter got the lock back then, and has
                // run for the rest of the tick since.
                let credit = match self.lock_freed_at.get(&node) {
                    Some(&freed) if free => {
                        (self.clock.now() - freed).clamp(0.0, self.tasks[i].elapsed)
                    }
                    _ => 0.0,
                };
                let waited = self.tasks[i].elapsed - credit;
                let timed_out_first = limit > 0.0 && waited >= limit;
                if free && first_waiter == Some(i) && !timed_out_first {
                    if let Some(q) = self.lock_queue.get_mut(&node) {
                        q.pop_front();
                    }
                    self.vzdump_lock.insert(node, upid.clone());
                    let t = &mut self.tasks[i];
                    t.lock_wait = None;
                    t.elapsed = credit;
                    if t.waiting_logged {
                        t.log.push("INFO: got global lock".into());
                    }
                    self.step_lag = credit;
                    self.event(
                        "vzdump-lock-acquired",
                        self.tasks[i].vmid,
                        Some(&upid),
                        format!("{waited:.1}"),
                    );
                    self.step_lag = 0.0;
                } else if self.tasks[i].elapsed >= limit {
                    if limit > 0.0 && !self.tasks[i].waiting_logged {
                        self.tasks[i]
                            .log
                            .push("INFO: trying to get global lock - waiting...".into());
                    }
                    let msg = if limit <= 0.0 {
                        "ERROR: can't acquire lock '/var/run/vzdump.lock' (wait = 0)".to_string()
                    } else {
                        "ERROR: can't acquire lock '/var/run/vzdump.lock' - got timeout".to_string()
                    };
                    self.tasks[i].log.push(msg);
                    // The worker calls exit(-1) without a TASK line (§3, §2), at the instant
                    // the wait ran out.
                    self.step_lag = (self.tasks[i].elapsed - limit).max(0.0);
                    self.finish_task(&upid, "unexpected status".into());
                    self.step_lag = 0.0;
                    return;
                } else {
                    if !self.tasks[i].waiting_logged {
                        self.tasks[i].waiting_logged = true;
                        self.tasks[i]
                            .log
                            .push("INFO: trying to get global lock - waiting...".into());
                        self.event("vzdump-lock-wait", self.tasks[i].vmid, Some(&upid), "");
                    }
                    return;
                }
            }
            let t = &mut self.tasks[i];
            match t.script.front() {
                Some((at, _)) if *at <= t.elapsed + 1e-9 => {}
                _ => return,
            }
            let (at, step) = t.script.pop_front().expect("checked front");
            self.step_lag = (t.elapsed - at).max(0.0);
            let result = step(self, &upid);
            let lag = std::mem::take(&mut self.step_lag);
            match result {
                StepResult::Continue => {}
                StepResult::Finish(status) => {
                    self.step_lag = lag;
                    self.finish_task(&upid, status);
                    self.step_lag = 0.0;
                    return;
                }
            }
        }
    }
    pub fn record_request(&mut self, mut rec: RequestRecord) -> u64 {
        rec.seq = self.requests.len() as u64 + 1;
        rec.time = self.clock.now();
        let seq = rec.seq;
        self.requests.push(rec);
        seq
    }

    /// Moves a guest to another node (what `qm migrate` ends with).
    pub fn migrate(&mut self, vmid: u32, target: &str) -> Result<(), String> {
        if self.node(target).is_none() {
            return Err(format!("no such node '{target}'"));
        }
        let g = self
            .guests
            .get_mut(&vmid)
            .ok_or_else(|| format!("no such guest {vmid}"))?;
        let from = std::mem::replace(&mut g.node, target.to_string());
        g.digest += 1;
        self.event("migrated", Some(vmid), None, format!("{from} -> {target}"));
        Ok(())
    }
}

/// Builds the volume a backup of `vmid` at `ctime` gets on storage `st`.
pub fn make_volume(
    st: &Storage,
    kind: GuestKind,
    vmid: u32,
    ctime: i64,
    size: u64,
    tz: &jiff::tz::TimeZone,
    custom_volname: Option<&str>,
) -> Volume {
    let volname = match custom_volname {
        Some(v) => v.to_string(),
        None => match st.kind {
            StorageKind::Dir => crate::prune::dir_volname(kind.to_prune(), vmid, ctime, tz, "zstd"),
            StorageKind::Pbs => crate::prune::pbs_volname(kind.to_prune(), vmid, ctime),
        },
    };
    let info = crate::prune::parse_volname(&volname, tz);
    let format = info
        .as_ref()
        .map(|i| i.format.clone())
        .unwrap_or_else(|| "vma.zst".into());
    let std_name = custom_volname.is_none() && info.as_ref().is_some_and(|i| i.std_name);
    Volume {
        volid: format!("{}:{volname}", st.id),
        vmid,
        kind,
        ctime,
        size,
        protected: false,
        notes: None,
        format,
        std_name,
    }
}

#[cfg(test)]
#[path = "world_tests.rs"]
mod tests;
