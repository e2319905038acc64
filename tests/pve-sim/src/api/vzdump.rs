//! `POST /nodes/{node}/vzdump` (§3): the synchronous privilege and parameter checks of a
//! non-root caller, the bare `"OK"` when no requested guest is local, and the worker: one global
//! lock per node with `lockwait`, `VM.Backup` checked inside the task, the guest lock, and per
//! mode and guest type the real log lines in order, with the guest shut down and started again in
//! stop mode (events a test can hook) and the backup volume appearing on the storage.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{ApiErr, Ctx, HResult, Reply};
use crate::prune::{Mark, PruneItem, PruneOptions};
use crate::scenario::{GuestKind, StorageKind, VzdumpBehaviour};
use crate::world::{StepFn, StepResult, World, make_volume};

const ROOT_ONLY: &[&str] = &["tmpdir", "dumpdir", "script", "job-id"];

struct Job {
    node: String,
    storage: String,
    mode: String,
    remove: bool,
    protected: bool,
    notes_template: Option<String>,
    prune_override: Option<PruneOptions>,
    can_allocate: bool,
}

#[derive(Default)]
struct JobState {
    failed: u32,
    warnings: u32,
}

pub fn local_time(w: &World, t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| {
            ts.to_zoned(w.tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `PVE::Tools::render_duration`-style: `45s`, `1m 5s`, `2h 3m 4s`.
fn render_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

pub fn vzdump(w: &mut World, c: &Ctx) -> HResult {
    let node = c.node().to_string();
    let root = c.auth.is_root() && c.auth.token.is_none();
    if !root {
        let mut errs = std::collections::BTreeMap::new();
        for p in ROOT_ONLY {
            if c.params.contains_key(*p) {
                errs.insert(p.to_string(), "Only root may set this option.".to_string());
            }
        }
        if !errs.is_empty() {
            return Err(ApiErr::params(errs));
        }
        for p in ["bwlimit", "ionice", "performance"] {
            if c.params.contains_key(p) && !c.has(w, "/", &["Sys.Modify"], false) {
                return Err(ApiErr::forbidden("/", &["Sys.Modify"]));
            }
        }
    }
    if c.params.contains_key("stdout") {
        return Err(ApiErr::param(
            "stdout",
            "option is only allowed on the command line interface",
        ));
    }
    if let Some(n) = c.str("node")
        && n != node
    {
        return Err(ApiErr::param(
            "node",
            "option is only allowed on the command line interface",
        ));
    }
    // verify_vzdump_parameters
    let has_vmid = c.params.contains_key("vmid");
    for other in ["all", "exclude", "pool"] {
        let set = match other {
            "all" => c.bool("all").unwrap_or(false),
            _ => c.params.contains_key(other),
        };
        if has_vmid && set {
            return Err(ApiErr::param(other, "option conflicts with option 'vmid'"));
        }
    }
    let all = c.bool("all").unwrap_or(false);
    let stop_all = c.bool("stop").unwrap_or(false);
    if !has_vmid && !all && !stop_all && !c.params.contains_key("pool") {
        return Err(ApiErr::param("vmid", "property is missing"));
    }
    // Storage privileges: on the literal storage `local` when `storage` is omitted.
    let storage = c.str("storage").unwrap_or("local").to_string();
    if !root {
        if stop_all && !c.has(w, &format!("/nodes/{node}"), &["Sys.Modify"], false) {
            return Err(ApiErr::forbidden(
                &format!("/nodes/{node}"),
                &["Sys.Modify"],
            ));
        }
        if (c.params.contains_key("prune-backups") || c.params.contains_key("maxfiles"))
            && !c.has(
                w,
                &format!("/storage/{storage}"),
                &["Datastore.Allocate"],
                false,
            )
        {
            return Err(ApiErr::forbidden(
                &format!("/storage/{storage}"),
                &["Datastore.Allocate"],
            ));
        }
        if let Some(fl) = c.str("fleecing")
            && let Some(fs) = fl.split(',').find_map(|kv| kv.strip_prefix("storage="))
            && !c.has(
                w,
                &format!("/storage/{fs}"),
                &["Datastore.AllocateSpace"],
                false,
            )
        {
            return Err(ApiErr::forbidden(
                &format!("/storage/{fs}"),
                &["Datastore.AllocateSpace"],
            ));
        }
        if !c.has(
            w,
            &format!("/storage/{storage}"),
            &["Datastore.AllocateSpace"],
            false,
        ) {
            return Err(ApiErr::forbidden(
                &format!("/storage/{storage}"),
                &["Datastore.AllocateSpace"],
            ));
        }
    }
    // Which guests: requested VMIDs on this node, plus VMIDs that exist nowhere (they fail
    // visibly in the task); guests on other nodes are skipped silently.
    let requested: Vec<u32> = if all {
        w.guests
            .values()
            .filter(|g| g.node == node)
            .map(|g| g.vmid)
            .collect()
    } else {
        c.str("vmid")
            .map(|s| {
                s.split([',', ' ', ';'])
                    .filter_map(|x| x.trim().parse().ok())
                    .collect()
            })
            .or_else(|| c.int("vmid").map(|v| vec![v as u32]))
            .unwrap_or_default()
    };
    let local: Vec<u32> = requested
        .iter()
        .copied()
        .filter(|v| w.guests.get(v).is_none_or(|g| g.node == node))
        .collect();
    if local.is_empty() {
        return Reply::data(json!("OK"));
    }
    let st = w
        .storages
        .get(&storage)
        .filter(|s| s.on_node(&node))
        .cloned();
    let prune_override = match c.str("prune-backups") {
        Some(p) => Some(PruneOptions::parse(p).map_err(|e| ApiErr::param("prune-backups", e))?),
        None => None,
    };
    let job = Arc::new(Job {
        node: node.clone(),
        storage: storage.clone(),
        mode: c.str("mode").unwrap_or("snapshot").to_string(),
        remove: c.bool("remove").unwrap_or(true),
        protected: c.bool("protected").unwrap_or(false),
        notes_template: c.str("notes-template").map(str::to_string),
        prune_override,
        can_allocate: root
            || c.has(
                w,
                &format!("/storage/{storage}"),
                &["Datastore.Allocate"],
                false,
            ),
    });
    let cmdline = command_line(c);
    let user = c.auth.clone();
    let state = Arc::new(Mutex::new(JobState::default()));
    let mut script: Vec<(f64, StepFn)> = Vec::new();
    {
        let local = local.clone();
        let user = user.clone();
        let st_missing = st.is_none();
        let storage = storage.clone();
        script.push((
            0.0,
            Box::new(move |w: &mut World, upid: &str| {
                w.log(
                    upid,
                    format!("INFO: starting new backup job: vzdump {cmdline}"),
                );
                if st_missing {
                    return StepResult::Finish(format!(
                        "could not activate storage '{storage}': storage '{storage}' does not exist"
                    ));
                }
                for v in &local {
                    if w.guests.contains_key(v)
                        && !w
                            .rbac
                            .check(&user, &format!("/vms/{v}"), &["VM.Backup"], false)
                    {
                        return StepResult::Finish(format!(
                            "Permission check failed (/vms/{v}, VM.Backup)"
                        ));
                    }
                }
                StepResult::Continue
            }),
        ));
    }
    let mut base = 0.0;
    for vmid in &local {
        let beh = w
            .guests
            .get(vmid)
            .and_then(|g| g.backup.clone())
            .unwrap_or_else(|| w.vzdump_default.clone());
        let len = guest_script(
            &mut script,
            base,
            *vmid,
            job.clone(),
            state.clone(),
            &beh,
            w,
        );
        base += len;
    }
    let fin = state.clone();
    script.push((
        base,
        Box::new(move |w: &mut World, upid: &str| {
            let s = fin.lock().expect("job state");
            if s.failed > 0 {
                w.log(upid, "INFO: Backup job finished with errors");
                return StepResult::Finish("job errors".into());
            }
            w.log(upid, "INFO: Backup job finished successfully");
            StepResult::Finish(if s.warnings > 0 {
                format!("WARNINGS: {}", s.warnings)
            } else {
                "OK".into()
            })
        }),
    ));
    let id = if local.len() == 1 {
        local[0].to_string()
    } else {
        String::new()
    };
    let lockwait = c.int("lockwait").unwrap_or(180) as f64 * 60.0;
    let single = (local.len() == 1).then(|| local[0]);
    let upid = w.spawn_task_with_lock(
        &node,
        "vzdump",
        &id,
        &user.full(),
        single,
        Some(lockwait),
        script,
    );
    Reply::data(json!(upid))
}

fn command_line(c: &Ctx) -> String {
    let mut s = c
        .str("vmid")
        .map(str::to_string)
        .or_else(|| c.int("vmid").map(|v| v.to_string()))
        .unwrap_or_default();
    for (k, v) in &c.params {
        if k == "vmid" || k == "node" {
            continue;
        }
        s.push_str(&format!(" --{k} {}", super::value_string(v)));
    }
    s.trim().to_string()
}

/// Appends the steps for one guest starting at `base`; returns the segment's length.
fn guest_script(
    script: &mut Vec<(f64, StepFn)>,
    base: f64,
    vmid: u32,
    job: Arc<Job>,
    state: Arc<Mutex<JobState>>,
    beh: &VzdumpBehaviour,
    w: &World,
) -> f64 {
    let Some(g) = w.guests.get(&vmid) else {
        let st = state.clone();
        script.push((
            base,
            Box::new(move |w: &mut World, upid: &str| {
                let now = local_time(w, w.clock.epoch());
                w.log(
                    upid,
                    format!("ERROR: Backup of VM {vmid} failed - unable to find VM '{vmid}'"),
                );
                w.log(upid, format!("INFO: Failed at {now}"));
                st.lock().expect("job state").failed += 1;
                StepResult::Continue
            }),
        ));
        return 0.0;
    };
    let kind = g.kind;
    let cp = beh.consistency_point.clamp(0.0, beh.duration);
    let dur = beh.duration.max(cp);
    let sd = beh.shutdown.max(0.0);
    let outcome = beh.outcome.clone();
    let size = beh.size;
    let running = g.running();
    let mode = if running {
        job.mode.clone()
    } else {
        "stop".to_string()
    };
    let stop_running = mode == "stop" && running;
    // Where the archive step starts and the consistency point falls, per mode and type.
    // A stop-mode shutdown starts a moment after the worker does (header lines, `qm shutdown`).
    let shut_at = 1.0;
    let (arch_at, cp_at) = match (kind, mode.as_str()) {
        (_, "stop") if stop_running => (shut_at + sd, shut_at + sd),
        (GuestKind::Lxc, "suspend") => (cp, cp),
        _ => (0.0, cp),
    };
    let end = dur.max(arch_at);
    let failed_here = Arc::new(Mutex::new(false));

    // t = 0: header, checks, lock.
    {
        let job = job.clone();
        let state = state.clone();
        let mode = mode.clone();
        let failed_here = failed_here.clone();
        script.push((base, Box::new(move |w: &mut World, upid: &str| {
            let start = w.clock.epoch();
            let g = w.guests.get(&vmid).expect("checked at build").clone();
            w.log(upid, format!("INFO: Starting Backup of VM {vmid} ({})", kind.as_str()));
            w.log(upid, format!("INFO: Backup started at {}", local_time(w, start)));
            w.log(upid, format!("INFO: status = {}", g.status));
            let fail = |w: &mut World, msg: String| {
                w.log(upid, format!("ERROR: Backup of VM {vmid} failed - {msg}"));
                let now = local_time(w, w.clock.epoch());
                w.log(upid, format!("INFO: Failed at {now}"));
                state.lock().expect("job state").failed += 1;
                *failed_here.lock().expect("flag") = true;
            };
            if mode == "stop" && g.running() && g.ha_managed {
                fail(w, "Cannot execute a backup with stop mode on a HA managed and enabled Service. Use snapshot mode or disable the Service.".into());
                return StepResult::Continue;
            }
            if let Some(l) = &g.lock {
                fail(w, format!("{} is locked ({l})", kind.lock_word()));
                return StepResult::Continue;
            }
            if let Some(msg) = limit_error(w, &job, vmid, kind) {
                fail(w, msg);
                return StepResult::Continue;
            }
            w.guests.get_mut(&vmid).expect("exists").lock = Some("backup".into());
            let name_line = match kind {
                GuestKind::Qemu => format!("INFO: VM Name: {}", g.name),
                GuestKind::Lxc => format!("INFO: CT Name: {}", g.name),
            };
            let disk_line = match kind {
                GuestKind::Qemu => format!("INFO: include disk 'scsi0' 'local-lvm:vm-{vmid}-disk-0' 32G"),
                GuestKind::Lxc => "INFO: including mount point rootfs ('/') in backup".to_string(),
            };
            if mode == "snapshot" {
                w.log(upid, name_line.clone());
                w.log(upid, disk_line.clone());
            }
            w.log(upid, format!("INFO: backup mode: {mode}"));
            w.log(upid, "INFO: ionice priority: 7");
            if mode != "snapshot" {
                w.log(upid, name_line);
                w.log(upid, disk_line);
            }
            let archive = archive_line(w, &job, kind, vmid, start);
            match (kind, mode.as_str()) {
                (_, "stop") if g.running() => {}
                (GuestKind::Qemu, "suspend") => {
                    w.log(upid, "INFO: suspending guest");
                    w.guests.get_mut(&vmid).expect("exists").lock = Some("backup".into());
                    w.log(upid, archive);
                }
                (GuestKind::Lxc, "suspend") => {
                    w.log(upid, format!("INFO: starting first sync /proc/4242/root/ to /var/tmp/vzdumptmp4242_{vmid}/"));
                }
                (GuestKind::Lxc, "snapshot") => {
                    w.log(upid, "INFO: create storage snapshot 'vzdump'");
                    let now = w.clock.epoch();
                    let g = w.guests.get_mut(&vmid).expect("exists");
                    g.lock = Some("snapshot".into());
                    g.snapshots.retain(|s| s.name != "vzdump");
                    g.snapshots.push(crate::world::Snapshot {
                        name: "vzdump".into(), description: "vzdump backup snapshot".into(), snaptime: now,
                        parent: g.parent.clone(), snapstate: Some("prepare".into()), vmstate: false, disk_gone: false,
                    });
                    w.event("guest-frozen", Some(vmid), Some(upid), "lxc snapshot");
                }
                (GuestKind::Qemu, _) => w.log(upid, archive),
                (GuestKind::Lxc, _) => w.log(upid, archive),
            }
            StepResult::Continue
        })));
    }
    let skip = {
        let f = failed_here.clone();
        move || *f.lock().expect("flag")
    };
    // Stop mode: the shutdown begins at `shut_at`; the guest is down `sd` later.
    if stop_running {
        let skip0 = skip.clone();
        script.push((
            base + shut_at,
            Box::new(move |w: &mut World, upid: &str| {
                if !skip0() {
                    w.log(upid, "INFO: stopping virtual guest");
                    w.event("guest-shutdown", Some(vmid), Some(upid), "vzdump stop mode");
                }
                StepResult::Continue
            }),
        ));
        let skip = skip.clone();
        let job = job.clone();
        script.push((
            base + shut_at + sd,
            Box::new(move |w: &mut World, upid: &str| {
                if skip() {
                    return StepResult::Continue;
                }
                let g = w.guests.get_mut(&vmid).expect("exists");
                g.status = "stopped".into();
                w.event("guest-stopped", Some(vmid), Some(upid), "vzdump stop mode");
                let start = w.task(upid).map(|t| t.parsed.starttime).unwrap_or(0);
                let archive = archive_line(w, &job, kind, vmid, start);
                w.log(upid, archive);
                if kind == GuestKind::Qemu {
                    w.log(upid, "INFO: starting kvm to execute backup task");
                    w.guests.get_mut(&vmid).expect("exists").status = "running".into();
                    w.event(
                        "guest-started",
                        Some(vmid),
                        Some(upid),
                        "kvm started for backup",
                    );
                    w.log(
                        upid,
                        format!("INFO: started backup task '{}'", uuid_for(upid)),
                    );
                    w.log(
                        upid,
                        format!(
                            "INFO: resuming VM again after {} seconds",
                            sd.round() as u64
                        ),
                    );
                }
                StepResult::Continue
            }),
        ));
    }
    // Consistency point.
    if !stop_running {
        let skip = skip.clone();
        let job = job.clone();
        let mode = mode.clone();
        let freeze_at = (cp_at - (cp_at / 2.0).min(0.5)).max(0.0);
        if kind == GuestKind::Qemu && mode == "snapshot" {
            let skip2 = skip.clone();
            script.push((
                base + freeze_at,
                Box::new(move |w: &mut World, upid: &str| {
                    if !skip2() && w.guests.get(&vmid).is_some_and(|g| g.agent_enabled()) {
                        w.log(upid, "INFO: issuing guest-agent 'fs-freeze' command");
                        w.event("fs-freeze", Some(vmid), Some(upid), "");
                    }
                    StepResult::Continue
                }),
            ));
        }
        script.push((base + cp_at, Box::new(move |w: &mut World, upid: &str| {
            if skip() {
                return StepResult::Continue;
            }
            let start = w.task(upid).map(|t| t.parsed.starttime).unwrap_or(0);
            match (kind, mode.as_str()) {
                (GuestKind::Qemu, "snapshot") => {
                    if w.guests.get(&vmid).is_some_and(|g| g.agent_enabled()) {
                        w.log(upid, "INFO: issuing guest-agent 'fs-thaw' command");
                        w.event("fs-thaw", Some(vmid), Some(upid), "");
                    }
                    w.log(upid, format!("INFO: started backup task '{}'", uuid_for(upid)));
                }
                (GuestKind::Qemu, "suspend") => {
                    w.log(upid, format!("INFO: started backup task '{}'", uuid_for(upid)));
                    w.log(upid, format!("INFO: resuming VM again after {} seconds", cp.round() as u64));
                }
                (GuestKind::Qemu, _) => {
                    // Not running: kvm is started paused just for the backup.
                    w.log(upid, "INFO: starting kvm to execute backup task");
                    w.log(upid, format!("INFO: started backup task '{}'", uuid_for(upid)));
                }
                (GuestKind::Lxc, "snapshot") => {
                    let g = w.guests.get_mut(&vmid).expect("exists");
                    g.lock = Some("backup".into());
                    if let Some(s) = g.snapshots.iter_mut().find(|s| s.name == "vzdump") {
                        s.snapstate = None;
                    }
                    w.event("guest-thawed", Some(vmid), Some(upid), "lxc snapshot done");
                    let a = archive_line(w, &job, kind, vmid, start);
                    w.log(upid, a);
                }
                (GuestKind::Lxc, "suspend") => {
                    w.log(upid, format!("INFO: first sync finished - transferred 1.00G in {}s", cp.round() as u64));
                    w.log(upid, "INFO: suspending guest");
                    w.log(upid, format!("INFO: starting final sync /proc/4242/root/ to /var/tmp/vzdumptmp4242_{vmid}/"));
                    w.log(upid, "INFO: resuming guest");
                    w.log(upid, "INFO: guest is online again after 1 seconds");
                    let a = archive_line(w, &job, kind, vmid, start);
                    w.log(upid, a);
                }
                (GuestKind::Lxc, _) => {
                    let a = archive_line(w, &job, kind, vmid, start);
                    w.log(upid, a);
                }
            }
            StepResult::Continue
        })));
    }
    // Progress lines (qemu) every 10 % of the archive step.
    if kind == GuestKind::Qemu && end > cp_at {
        for pct in (10..100).step_by(10) {
            let skip = skip.clone();
            let at = cp_at + (end - cp_at) * pct as f64 / 100.0;
            script.push((base + at, Box::new(move |w: &mut World, upid: &str| {
                if !skip() {
                    let gib = size as f64 / (1u64 << 30) as f64;
                    w.log(upid, format!(
                        "INFO: {pct:>3}% ({:.1} GiB of {gib:.1} GiB) in {}, read: 100.0 MiB/s, write: 95.0 MiB/s",
                        gib * pct as f64 / 100.0, render_duration(at - cp_at)
                    ));
                }
                StepResult::Continue
            })));
        }
    }
    // End of this guest.
    {
        let job = job.clone();
        let state = state.clone();
        script.push((
            base + end,
            Box::new(move |w: &mut World, upid: &str| {
                if skip() {
                    return StepResult::Continue;
                }
                let start = w.task(upid).map(|t| t.parsed.starttime).unwrap_or(0);
                if let Some(text) = outcome.strip_prefix("job-error:") {
                    w.log(upid, format!("ERROR: Backup job failed - {text}"));
                    cleanup_guest(w, upid, vmid);
                    return StepResult::Finish(text.to_string());
                }
                if outcome == "unexpected" {
                    // The worker dies: no TASK line; the guest lock stays behind.
                    return StepResult::Finish("unexpected status".into());
                }
                if kind == GuestKind::Lxc && mode == "snapshot" {
                    w.log(upid, "INFO: cleanup temporary 'vzdump' snapshot");
                }
                if let Some(text) = outcome.strip_prefix("error:") {
                    cleanup_guest(w, upid, vmid);
                    w.log(upid, format!("ERROR: Backup of VM {vmid} failed - {text}"));
                    let now = local_time(w, w.clock.epoch());
                    w.log(upid, format!("INFO: Failed at {now}"));
                    state.lock().expect("job state").failed += 1;
                    return StepResult::Continue;
                }
                let warns: u32 = outcome
                    .strip_prefix("warnings:")
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                for i in 0..warns {
                    w.log(
                        upid,
                        format!("WARN: simulated warning {} of {warns}", i + 1),
                    );
                }
                state.lock().expect("job state").warnings += warns;
                let Some(st) = w.storages.get(&job.storage).cloned() else {
                    return StepResult::Continue;
                };
                match st.kind {
                    StorageKind::Pbs => w.log(
                        upid,
                        format!(
                            "INFO: transferred {:.2} GiB in {} seconds",
                            size as f64 / (1u64 << 30) as f64,
                            (end).round() as u64
                        ),
                    ),
                    StorageKind::Dir => w.log(
                        upid,
                        format!("INFO: archive file size: {:.2}GB", size as f64 / 1e9),
                    ),
                }
                let mut vol = make_volume(&st, kind, vmid, start, size, &w.tz, None);
                if let Some(t) = &job.notes_template {
                    w.log(upid, "INFO: adding notes to backup");
                    let g = w.guests.get(&vmid).expect("exists");
                    vol.notes = Some(
                        t.replace("{{guestname}}", &g.name)
                            .replace("{{vmid}}", &vmid.to_string())
                            .replace("{{node}}", &job.node)
                            .replace("{{cluster}}", "pve-sim"),
                    );
                }
                if job.protected {
                    w.log(upid, "INFO: marking backup as protected");
                    vol.protected = true;
                }
                if let Some(s) = w.storages.get_mut(&job.storage) {
                    s.used += size;
                    s.volumes.push(vol);
                }
                w.event("backup-volume", Some(vmid), Some(upid), job.storage.clone());
                if job.remove {
                    prune_after(w, upid, &job, vmid, kind);
                }
                cleanup_guest(w, upid, vmid);
                let now = w.clock.epoch();
                w.log(
                    upid,
                    format!(
                        "INFO: Finished Backup of VM {vmid} ({})",
                        hms((now - start) as f64)
                    ),
                );
                w.log(
                    upid,
                    format!("INFO: Backup finished at {}", local_time(w, now)),
                );
                StepResult::Continue
            }),
        ));
    }
    end
}

fn archive_line(w: &World, job: &Job, kind: GuestKind, vmid: u32, start: i64) -> String {
    let Some(st) = w.storages.get(&job.storage) else {
        return String::new();
    };
    match st.kind {
        StorageKind::Pbs => {
            let v = crate::prune::pbs_volname(kind.to_prune(), vmid, start);
            let rel = v.strip_prefix("backup/").unwrap_or(&v).to_string();
            format!("INFO: creating Proxmox Backup Server archive '{rel}'")
        }
        StorageKind::Dir => {
            let v = crate::prune::dir_volname(kind.to_prune(), vmid, start, &w.tz, "zstd");
            let file = v.rsplit('/').next().unwrap_or(&v).to_string();
            format!(
                "INFO: creating vzdump archive '/mnt/pve/{}/dump/{file}'",
                st.id
            )
        }
    }
}

fn uuid_for(upid: &str) -> String {
    let h = upid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let h2 = h.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        h & 0xffff,
        (h2 >> 52) & 0xfff,
        (h2 >> 40) & 0xfff,
        h2 & 0xffff_ffff_ffff
    )
}

/// The `remove=0` max-backup limit and the protected-backup limit (§3).
fn limit_error(w: &World, job: &Job, vmid: u32, kind: GuestKind) -> Option<String> {
    let st = w.storages.get(&job.storage)?;
    let mine = |p: bool| {
        st.volumes
            .iter()
            .filter(|v| v.vmid == vmid && v.kind == kind && v.protected == p)
            .count() as u64
    };
    if job.protected {
        let limit = if job.can_allocate {
            None
        } else {
            Some(st.max_protected.unwrap_or(5))
        };
        if let Some(l) = limit
            && mine(true) >= l
        {
            return Some(format!(
                "The number of protected backups per guest is limited to {l} on storage '{}'",
                st.id
            ));
        }
    }
    if !job.remove {
        let opts = job.prune_override.clone().or_else(|| st.prune.clone());
        if let Some(max) = opts.and_then(|o| o.max_count())
            && mine(false) >= max
        {
            return Some(format!(
                "There is a max backup limit of {max} enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backups."
            ));
        }
    }
    None
}

fn prune_after(w: &mut World, upid: &str, job: &Job, vmid: u32, kind: GuestKind) {
    let Some(st) = w.storages.get(&job.storage) else {
        return;
    };
    let Some(opts) = job.prune_override.clone().or_else(|| st.prune.clone()) else {
        return;
    };
    if opts.keeps_all() {
        return;
    }
    let st = st.clone();
    w.log(
        upid,
        format!(
            "INFO: prune older backups with retention: {}",
            opts.to_log_string()
        ),
    );
    let group: Vec<&crate::world::Volume> = st
        .volumes
        .iter()
        .filter(|v| v.vmid == vmid && v.kind == kind)
        .collect();
    let items: Vec<PruneItem> = group
        .iter()
        .map(|v| PruneItem {
            volid: v.volid.clone(),
            ctime: v.ctime,
            protected: v.protected,
            std_name: v.std_name,
        })
        .collect();
    let marks = crate::prune::mark_group(&items, &opts, &w.tz);
    let remove: Vec<String> = items
        .iter()
        .zip(marks)
        .filter(|(_, m)| *m == Mark::Remove)
        .map(|(i, _)| i.volid.clone())
        .collect();
    let st = w.storages.get_mut(&job.storage).expect("exists");
    st.volumes.retain(|v| !remove.contains(&v.volid));
    w.log(
        upid,
        format!(
            "INFO: pruned {} backup(s) not covered by keep-retention policy",
            remove.len()
        ),
    );
}

fn cleanup_guest(w: &mut World, upid: &str, vmid: u32) {
    let Some(g) = w.guests.get_mut(&vmid) else {
        return;
    };
    if matches!(g.lock.as_deref(), Some("backup") | Some("snapshot")) {
        g.lock = None;
    }
    let had_snap = g.snapshots.iter().any(|s| s.name == "vzdump");
    g.snapshots.retain(|s| s.name != "vzdump");
    if had_snap {
        g.digest += 1;
    }
    if g.status == "stopped"
        && w.events.iter().any(|e| {
            e.kind == "guest-stopped" && e.upid.as_deref() == Some(upid) && e.vmid == Some(vmid)
        })
    {
        let kind = g.kind;
        g.status = "running".into();
        if kind == GuestKind::Lxc {
            w.log(upid, "INFO: restarting vm");
            w.log(upid, "INFO: guest is online again after 2 seconds");
        }
        w.event(
            "guest-started",
            Some(vmid),
            Some(upid),
            "after stop-mode backup",
        );
    }
}

/// A stopped vzdump cleans up after itself (lock, temporary snapshot, guest restart).
pub fn cleanup_after_abort(w: &mut World, upid: &str) {
    if let Some(vmid) = w.task(upid).and_then(|t| t.vmid) {
        cleanup_guest(w, upid, vmid);
    }
}

pub fn defaults(w: &mut World, c: &Ctx) -> HResult {
    let storage = c.str("storage").unwrap_or("local").to_string();
    if !c.has(
        w,
        &format!("/storage/{storage}"),
        &["Datastore.Audit", "Datastore.AllocateSpace"],
        true,
    ) {
        return Err(ApiErr::forbidden(
            &format!("/storage/{storage}"),
            &["Datastore.Audit", "Datastore.AllocateSpace"],
        ));
    }
    let prune = w
        .storages
        .get(&storage)
        .and_then(|s| s.prune.clone())
        .unwrap_or(PruneOptions {
            keep_all: Some(true),
            ..Default::default()
        });
    let mut p = serde_json::Map::new();
    for kv in prune
        .to_property_string()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        if let Some((k, v)) = kv.split_once('=') {
            p.insert(k.to_string(), Value::from(v.parse::<u64>().unwrap_or(1)));
        }
    }
    Reply::data(
        json!({"storage": storage, "mode": "snapshot", "lockwait": 180, "stopwait": 10,
        "remove": 1, "compress": "0", "prune-backups": Value::Object(p)}),
    )
}
