//! Storage endpoints (§5, §7): status, content listing filtered through `check_volume_access`,
//! volume info/notes/protection and delete (a task, with `delay`), and prunebackups (GET dry run,
//! DELETE as a task) with PVE's prune algorithm from `crate::prune`.
//!
//! Invariant: a caller without `Datastore.Allocate` only ever sees or changes backups of guests
//! it holds `VM.Backup` on (plus `Datastore.AllocateSpace` on the storage).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{ApiErr, Ctx, HResult, Reply};
use crate::prune::{Mark, PruneItem, PruneOptions};
use crate::scenario::StorageKind;
use crate::world::{StepFn, StepResult, Storage, Volume, World};

fn storage<'a>(w: &'a World, c: &Ctx) -> Result<&'a Storage, ApiErr> {
    let sid = c.uri.get("storage").cloned().unwrap_or_default();
    w.storages
        .get(&sid)
        .filter(|s| s.on_node(c.node()))
        .ok_or_else(|| ApiErr::param("storage", "No such storage."))
}

/// `PVE::Storage::check_volume_access` for backup volumes.
fn can_access(w: &World, c: &Ctx, sid: &str, owner: u32) -> bool {
    if c.auth.is_root() && c.auth.token.is_none() {
        return true;
    }
    let sp = format!("/storage/{sid}");
    c.has(w, &sp, &["Datastore.Allocate"], false)
        || (c.has(w, &sp, &["Datastore.AllocateSpace"], false)
            && c.has(w, &format!("/vms/{owner}"), &["VM.Backup"], false))
}

fn kind_str(s: &Storage) -> &'static str {
    match s.kind {
        StorageKind::Dir => "dir",
        StorageKind::Pbs => "pbs",
    }
}

fn status_entry(s: &Storage) -> Value {
    let (total, used) = if s.active { (s.total, s.used) } else { (0, 0) };
    json!({"storage": s.id, "type": kind_str(s), "content": s.content.join(","), "enabled": 1,
        "active": s.active as u8, "shared": s.shared as u8, "total": total, "used": used,
        "avail": total.saturating_sub(used),
        "used_fraction": if total > 0 { used as f64 / total as f64 } else { 0.0 }})
}

pub fn list(w: &mut World, c: &Ctx) -> HResult {
    let out: Vec<Value> = w
        .storages
        .values()
        .filter(|s| s.on_node(c.node()))
        .filter(|s| c.str("storage").is_none_or(|x| x == s.id))
        .filter(|s| {
            c.str("content")
                .is_none_or(|ct| s.content.iter().any(|x| x == ct))
        })
        .filter(|s| {
            c.has(
                w,
                &format!("/storage/{}", s.id),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
                true,
            )
        })
        .map(status_entry)
        .collect();
    Reply::data(Value::Array(out))
}

pub fn status(w: &mut World, c: &Ctx) -> HResult {
    let s = storage(w, c)?;
    let mut e = status_entry(s);
    if let Some(o) = e.as_object_mut() {
        o.remove("storage");
        o.remove("used_fraction");
    }
    Reply::data(e)
}

fn content_entry(v: &Volume) -> Value {
    let mut e = json!({"volid": v.volid, "content": "backup", "format": v.format,
        "subtype": v.kind.as_str(), "vmid": v.vmid, "ctime": v.ctime, "size": v.size});
    if let Some(n) = &v.notes {
        e["notes"] = json!(n.lines().next().unwrap_or(""));
    }
    if v.protected {
        e["protected"] = json!(1);
    }
    e
}

pub fn content(w: &mut World, c: &Ctx) -> HResult {
    let s = storage(w, c)?;
    if c.str("content").is_some_and(|ct| ct != "backup") {
        return Reply::data(json!([]));
    }
    let vmid = c.int("vmid");
    let out: Vec<Value> = s
        .volumes
        .iter()
        .filter(|v| vmid.is_none_or(|id| v.vmid as i64 == id))
        .filter(|v| can_access(w, c, &s.id, v.vmid))
        .map(content_entry)
        .collect();
    Reply::data(Value::Array(out))
}

/// `{volume}` may be a full volid (`store:backup/…`) or relative to `{storage}`.
fn find_volume(w: &World, c: &Ctx) -> Result<(String, Volume), ApiErr> {
    let s = storage(w, c)?;
    let raw = c.uri.get("volume").cloned().unwrap_or_default();
    let volid = if raw.contains(':') {
        raw.clone()
    } else {
        format!("{}:{raw}", s.id)
    };
    let (sid, volname) = volid.split_once(':').unwrap_or(("", ""));
    if sid != s.id {
        return Err(ApiErr::internal(format!(
            "storage ID mismatch ({sid} != {})",
            s.id
        )));
    }
    let owner = crate::prune::parse_volname(volname, &w.tz).map(|i| i.vmid);
    let vol = s.volumes.iter().find(|v| v.volid == volid).cloned();
    match (owner, vol) {
        (Some(o), _) if !can_access(w, c, sid, o) => Err(ApiErr::forbidden(
            &format!("/storage/{sid}"),
            &["Datastore.Allocate"],
        )),
        (None, _)
            if !c.has(
                w,
                &format!("/storage/{sid}"),
                &["Datastore.Allocate"],
                false,
            ) =>
        {
            Err(ApiErr::forbidden(
                &format!("/storage/{sid}"),
                &["Datastore.Allocate"],
            ))
        }
        (_, Some(v)) => Ok((sid.to_string(), v)),
        (_, None) => Err(ApiErr::internal(format!("volume '{volid}' does not exist"))),
    }
}

pub fn volume_info(w: &mut World, c: &Ctx) -> HResult {
    let (_, v) = find_volume(w, c)?;
    let mut e = json!({"path": format!("/mnt/{}", v.volid.replace(':', "/")), "size": v.size, "used": v.size, "format": v.format});
    if let Some(n) = &v.notes {
        e["notes"] = json!(n);
    }
    e["protected"] = json!(v.protected as u8);
    Reply::data(e)
}

pub fn volume_update(w: &mut World, c: &Ctx) -> HResult {
    let (sid, v) = find_volume(w, c)?;
    let notes = c.str("notes").map(str::to_string);
    let protected = c.bool("protected");
    let st = w.storages.get_mut(&sid).expect("found");
    let vol = st
        .volumes
        .iter_mut()
        .find(|x| x.volid == v.volid)
        .expect("found");
    if let Some(n) = notes {
        vol.notes = if n.is_empty() { None } else { Some(n) };
    }
    if let Some(p) = protected {
        vol.protected = p;
    }
    Reply::data(Value::Null)
}

pub fn volume_delete(w: &mut World, c: &Ctx) -> HResult {
    let (sid, v) = find_volume(w, c)?;
    let volid = v.volid.clone();
    let step: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let Some(st) = w.storages.get_mut(&sid) else {
            return StepResult::Finish("storage vanished".into());
        };
        let Some(pos) = st.volumes.iter().position(|x| x.volid == volid) else {
            return StepResult::Finish(format!("volume '{volid}' does not exist"));
        };
        if st.volumes[pos].protected {
            return StepResult::Finish(format!(
                "cannot remove protected volume '{volid}' on '{sid}'"
            ));
        }
        let removed = st.volumes.remove(pos);
        st.used = st.used.saturating_sub(removed.size);
        w.log(upid, format!("Removed volume '{volid}'"));
        StepResult::Finish("OK".into())
    });
    let sid = c.uri.get("storage").cloned().unwrap_or_default();
    let id = format!("{}@{sid}", v.vmid);
    let upid = w.spawn_task(
        c.node(),
        "imgdel",
        &id,
        &c.auth.full(),
        Some(v.vmid),
        vec![(0.0, step)],
    );
    if c.int("delay").is_some() {
        let t = w.task(&upid).expect("just spawned");
        match t.exitstatus.as_deref() {
            Some("OK") => return Reply::data(Value::Null),
            Some(x) if x.starts_with("WARNINGS") => return Reply::data(Value::Null),
            Some(x) => return Err(ApiErr::internal(x.to_string())),
            None => {}
        }
    }
    Reply::data(json!(upid))
}

fn prune_options(s: &Storage, c: &Ctx) -> Result<PruneOptions, ApiErr> {
    match c.str("prune-backups") {
        Some(p) => PruneOptions::parse(p).map_err(|e| ApiErr::param("prune-backups", e)),
        None => s.prune.clone().ok_or_else(|| {
            ApiErr::internal(format!(
                "no prune-backups options configured for storage '{}'",
                s.id
            ))
        }),
    }
}

/// Marks every backup group on the storage (filtered by vmid/type) like `PVE::Storage::prune_backups`.
fn plan(
    w: &World,
    s: &Storage,
    opts: &PruneOptions,
    vmid: Option<i64>,
    ty: Option<&str>,
) -> Vec<(Volume, Mark)> {
    let mut groups: BTreeMap<(u32, &'static str), Vec<&Volume>> = BTreeMap::new();
    for v in &s.volumes {
        if vmid.is_some_and(|id| v.vmid as i64 != id) || ty.is_some_and(|t| t != v.kind.as_str()) {
            continue;
        }
        groups.entry((v.vmid, v.kind.as_str())).or_default().push(v);
    }
    let mut out = Vec::new();
    for vols in groups.values() {
        let items: Vec<PruneItem> = vols
            .iter()
            .map(|v| PruneItem {
                volid: v.volid.clone(),
                ctime: v.ctime,
                protected: v.protected,
                std_name: v.std_name,
            })
            .collect();
        let marks = crate::prune::mark_group(&items, opts, &w.tz);
        out.extend(vols.iter().map(|v| (*v).clone()).zip(marks));
    }
    out
}

pub fn prune_dry_run(w: &mut World, c: &Ctx) -> HResult {
    let s = storage(w, c)?;
    let opts = prune_options(s, c)?;
    let list: Vec<Value> = plan(w, s, &opts, c.int("vmid"), c.str("type"))
        .into_iter()
        .map(|(v, m)| json!({"volid": v.volid, "ctime": v.ctime, "mark": m, "type": v.kind.as_str(), "vmid": v.vmid}))
        .collect();
    Reply::data(Value::Array(list))
}

pub fn prune(w: &mut World, c: &Ctx) -> HResult {
    let sid = c.uri.get("storage").cloned().unwrap_or_default();
    let sp = format!("/storage/{sid}");
    let vmid = c.int("vmid");
    match vmid {
        Some(id) => {
            if !c.has(w, &sp, &["Datastore.AllocateSpace"], false) {
                return Err(ApiErr::forbidden(&sp, &["Datastore.AllocateSpace"]));
            }
            if !c.has(w, &format!("/vms/{id}"), &["VM.Backup"], false) {
                return Err(ApiErr::forbidden(&format!("/vms/{id}"), &["VM.Backup"]));
            }
        }
        None => {
            if !c.has(w, &sp, &["Datastore.Allocate"], false) {
                return Err(ApiErr::forbidden(&sp, &["Datastore.Allocate"]));
            }
        }
    }
    let s = storage(w, c)?.clone();
    let opts = prune_options(&s, c)?;
    let ty = c.str("type").map(str::to_string);
    let id = match vmid {
        Some(v) => format!("{v}@{sid}"),
        None => sid.clone(),
    };
    let step: StepFn = Box::new(move |w: &mut World, upid: &str| {
        let Some(st) = w.storages.get(&sid).cloned() else {
            return StepResult::Finish("storage vanished".into());
        };
        let marks = plan(w, &st, &opts, vmid, ty.as_deref());
        let mut removed = 0;
        for (v, m) in marks {
            if m == Mark::Remove {
                w.log(upid, format!("removing backup '{}'", v.volid));
                if let Some(st) = w.storages.get_mut(&sid) {
                    st.volumes.retain(|x| x.volid != v.volid);
                    st.used = st.used.saturating_sub(v.size);
                }
                removed += 1;
            }
        }
        w.log(upid, format!("pruned {removed} backup(s)"));
        StepResult::Finish("OK".into())
    });
    let upid = w.spawn_task(
        c.node(),
        "prunebackups",
        &id,
        &c.auth.full(),
        vmid.map(|v| v as u32),
        vec![(0.0, step)],
    );
    Reply::data(json!(upid))
}
