//! Snapshots of qemu and lxc guests (§4): list (unsorted real entries + trailing `current`),
//! create/delete/rollback as tasks with the real worker types, reserved names as synchronous 500s,
//! and the lock interplay (`snapshot`, `snapshot-delete`) with errors as task exit status.
//!
//! An interrupted delete leaves `snapstate=delete`, the `snapshot-delete` lock and the disk
//! snapshot gone: a normal delete then fails, `force=1` turns the disk error into a warning.

use serde_json::{Value, json};

use super::guests::{kind_of, on_node};
use super::{ApiErr, Ctx, HResult, Reply};
use crate::scenario::GuestKind;
use crate::world::{Snapshot, StepFn, StepResult, World};

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub fn list(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let g = on_node(w, c, kind_of(t))?;
    let mut snaps: Vec<&Snapshot> = g.snapshots.iter().collect();
    // Perl hash order: stable here, but not sorted by name or time.
    snaps.sort_by_key(|s| hash(&s.name));
    let mut out: Vec<Value> = snaps
        .iter()
        .map(|s| {
            let mut e =
                json!({"name": s.name, "description": s.description, "snaptime": s.snaptime});
            if let Some(p) = &s.parent {
                e["parent"] = json!(p);
            }
            if let Some(st) = &s.snapstate {
                e["snapstate"] = json!(st);
            }
            if g.kind == GuestKind::Qemu {
                e["vmstate"] = json!(s.vmstate as u8);
            }
            e
        })
        .collect();
    let mut cur = json!({"name": "current", "description": "You are here!",
        "digest": format!("{:040x}", g.digest), "running": g.running() as u8});
    if let Some(p) = &g.parent {
        cur["parent"] = json!(p);
    }
    out.push(cur);
    Reply::data(Value::Array(out))
}

fn wtype(kind: GuestKind, what: &str) -> String {
    match kind {
        GuestKind::Qemu => format!("qm{what}"),
        GuestKind::Lxc => format!("vz{what}"),
    }
}

fn locked(w: &World, vmid: u32) -> Option<String> {
    let g = w.guests.get(&vmid)?;
    g.lock
        .as_ref()
        .map(|l| format!("{} is locked ({l})", g.kind.lock_word()))
}

pub fn create(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let kind = kind_of(t);
    let g = on_node(w, c, kind)?;
    let vmid = g.vmid;
    let name = c.str("snapname").unwrap_or("").to_string();
    let reserved = match kind {
        GuestKind::Qemu => name == "current" || name.eq_ignore_ascii_case("pending"),
        GuestKind::Lxc => name == "current" || name == "vzdump",
    };
    if reserved {
        return Err(ApiErr::internal(format!(
            "unable to use snapshot name '{name}' (reserved name)"
        )));
    }
    let description = c.str("description").unwrap_or("").to_string();
    let vmstate = c.bool("vmstate").unwrap_or(false);
    let dur = w.snapshot_timing.create;
    let n1 = name.clone();
    let start: StepFn = Box::new(move |w: &mut World, upid: &str| {
        if let Some(e) = locked(w, vmid) {
            return StepResult::Finish(e);
        }
        let now = w.clock.epoch();
        let Some(g) = w.guests.get_mut(&vmid) else {
            return StepResult::Finish(format!("unable to find configuration file for VM {vmid}"));
        };
        if g.template {
            return StepResult::Finish("you can't take a snapshot if it's a template".into());
        }
        if g.snapshots.iter().any(|s| s.name == n1) {
            return StepResult::Finish(format!("snapshot name '{n1}' already used"));
        }
        g.lock = Some("snapshot".into());
        g.snapshots.push(Snapshot {
            name: n1.clone(),
            description: description.clone(),
            snaptime: now,
            parent: g.parent.clone(),
            snapstate: Some("prepare".into()),
            vmstate,
            disk_gone: false,
        });
        let freeze = g.kind == GuestKind::Qemu && g.running() && g.agent_enabled() && !vmstate;
        let kind = g.kind;
        if freeze {
            w.log(upid, "issuing guest-agent 'fs-freeze' command");
        }
        match kind {
            GuestKind::Qemu => w.log(
                upid,
                format!("snapshotting 'drive-scsi0' (local-lvm:vm-{vmid}-disk-0)"),
            ),
            GuestKind::Lxc => w.log(upid, format!("create storage snapshot '{n1}'")),
        }
        if freeze {
            w.log(upid, "issuing guest-agent 'fs-thaw' command");
        }
        StepResult::Continue
    });
    let n2 = name.clone();
    let end: StepFn = Box::new(move |w: &mut World, _upid: &str| {
        if let Some(g) = w.guests.get_mut(&vmid) {
            if let Some(s) = g.snapshots.iter_mut().find(|s| s.name == n2) {
                s.snapstate = None;
            }
            g.parent = Some(n2.clone());
            g.lock = None;
            g.digest += 1;
        }
        StepResult::Finish("OK".into())
    });
    let upid = w.spawn_task(
        c.node(),
        &wtype(kind, "snapshot"),
        &vmid.to_string(),
        &c.auth.full(),
        Some(vmid),
        vec![(0.0, start), (dur, end)],
    );
    Reply::data(json!(upid))
}

pub fn delete(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let kind = kind_of(t);
    let vmid = on_node(w, c, kind)?.vmid;
    let name = c.uri.get("snapname").cloned().unwrap_or_default();
    let force = c.bool("force").unwrap_or(false);
    let dur = w.snapshot_timing.delete;
    let n1 = name.clone();
    let start: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let Some(g) = w.guests.get(&vmid) else {
            return StepResult::Finish(format!("unable to find configuration file for VM {vmid}"));
        };
        if !g.snapshots.iter().any(|s| s.name == n1) {
            return StepResult::Finish(format!("snapshot '{n1}' does not exist"));
        }
        if let Some(e) = locked(w, vmid) {
            return StepResult::Finish(e);
        }
        let g = w.guests.get_mut(&vmid).expect("checked");
        if g.template {
            return StepResult::Finish("you can't delete a snapshot if vm is a template".into());
        }
        g.lock = Some("snapshot-delete".into());
        let s = g
            .snapshots
            .iter_mut()
            .find(|s| s.name == n1)
            .expect("checked");
        s.snapstate = Some("delete".into());
        let _ = upid;
        StepResult::Continue
    });
    let n2 = name.clone();
    let disks: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let Some(g) = w.guests.get_mut(&vmid) else {
            return StepResult::Continue;
        };
        let Some(s) = g.snapshots.iter_mut().find(|s| s.name == n2) else {
            return StepResult::Continue;
        };
        if s.disk_gone {
            let err =
                format!("volume snapshot '{n2}' of 'local-lvm:vm-{vmid}-disk-0' does not exist");
            if !force {
                // die: snapstate=delete and the snapshot-delete lock stay behind.
                return StepResult::Finish(err);
            }
            w.log(upid, format!("WARN: {err}"));
        } else {
            s.disk_gone = true;
        }
        StepResult::Continue
    });
    let n3 = name.clone();
    let end: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let warned = w
            .task(upid)
            .map(|t| t.log.iter().filter(|l| l.starts_with("WARN:")).count())
            .unwrap_or(0);
        if let Some(g) = w.guests.get_mut(&vmid) {
            let parent = g
                .snapshots
                .iter()
                .find(|s| s.name == n3)
                .and_then(|s| s.parent.clone());
            g.snapshots.retain(|s| s.name != n3);
            for s in g.snapshots.iter_mut() {
                if s.parent.as_deref() == Some(n3.as_str()) {
                    s.parent = parent.clone();
                }
            }
            if g.parent.as_deref() == Some(n3.as_str()) {
                g.parent = parent;
            }
            g.lock = None;
            g.digest += 1;
        }
        StepResult::Finish(if warned > 0 {
            format!("WARNINGS: {warned}")
        } else {
            "OK".into()
        })
    });
    let upid = w.spawn_task(
        c.node(),
        &wtype(kind, "delsnapshot"),
        &vmid.to_string(),
        &c.auth.full(),
        Some(vmid),
        vec![(0.0, start), (dur / 2.0, disks), (dur, end)],
    );
    Reply::data(json!(upid))
}

pub fn get_config(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let g = on_node(w, c, kind_of(t))?;
    let name = c.uri.get("snapname").cloned().unwrap_or_default();
    let s = g
        .snapshots
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiErr::internal(format!("snapshot '{name}' does not exist")))?;
    let mut m: serde_json::Map<String, Value> = g
        .config
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    m.insert("description".into(), json!(s.description));
    m.insert("snaptime".into(), json!(s.snaptime));
    if let Some(p) = &s.parent {
        m.insert("parent".into(), json!(p));
    }
    if let Some(st) = &s.snapstate {
        m.insert("snapstate".into(), json!(st));
    }
    Reply::data(Value::Object(m))
}

pub fn set_config(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let kind = kind_of(t);
    let vmid = on_node(w, c, kind)?.vmid;
    let name = c.uri.get("snapname").cloned().unwrap_or_default();
    if let Some(e) = locked(w, vmid) {
        return Err(ApiErr::internal(e));
    }
    let g = w.guests.get_mut(&vmid).expect("checked");
    let s = g
        .snapshots
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiErr::internal(format!("snapshot '{name}' does not exist")))?;
    if let Some(d) = c.str("description") {
        s.description = d.to_string();
    }
    g.digest += 1;
    Reply::data(Value::Null)
}

pub fn rollback(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let kind = kind_of(t);
    let vmid = on_node(w, c, kind)?.vmid;
    let name = c.uri.get("snapname").cloned().unwrap_or_default();
    let start_after = c.bool("start").unwrap_or(false);
    let dur = w.snapshot_timing.rollback;
    let n1 = name.clone();
    let start: StepFn = Box::new(move |w: &mut World, upid: &str| {
        if let Some(e) = locked(w, vmid) {
            return StepResult::Finish(e);
        }
        let g = w.guests.get_mut(&vmid).expect("guest exists");
        let Some(s) = g.snapshots.iter().find(|s| s.name == n1) else {
            return StepResult::Finish(format!("snapshot '{n1}' does not exist"));
        };
        if let Some(st) = &s.snapstate {
            return StepResult::Finish(format!(
                "unable to rollback to incomplete snapshot (snapstate = {st})"
            ));
        }
        g.lock = Some("rollback".into());
        let was_running = g.running();
        g.status = "stopped".into();
        if was_running {
            w.event(
                "guest-shutdown",
                Some(vmid),
                Some(upid),
                "rollback stops the guest",
            );
        }
        StepResult::Continue
    });
    let n2 = name.clone();
    let end: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let g = w.guests.get_mut(&vmid).expect("guest exists");
        g.lock = None;
        g.parent = Some(n2.clone());
        g.digest += 1;
        let vmstate = g.snapshots.iter().any(|s| s.name == n2 && s.vmstate);
        if start_after || vmstate {
            g.status = "running".into();
            w.event("guest-started", Some(vmid), Some(upid), "after rollback");
        }
        StepResult::Finish("OK".into())
    });
    let upid = w.spawn_task(
        c.node(),
        &wtype(kind, "rollback"),
        &vmid.to_string(),
        &c.auth.full(),
        Some(vmid),
        vec![(0.0, start), (dur, end)],
    );
    Reply::data(json!(upid))
}
