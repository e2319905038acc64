//! Guest reads on a node: list, `status/current` and `config` (§7). A guest that is not on the
//! requested node (or is of the other type) does not exist there: 500 "Configuration file … does
//! not exist", exactly what a caller sees on the old node after a migration.

use serde_json::{Value, json};

use super::{ApiErr, Ctx, HResult, Reply};
use crate::scenario::GuestKind;
use crate::world::{Guest, World};

pub fn kind_of(template: &str) -> GuestKind {
    if template.contains("/lxc") {
        GuestKind::Lxc
    } else {
        GuestKind::Qemu
    }
}

/// The guest `{vmid}` of `kind` on `{node}`, or PVE's error for a missing config file.
pub fn on_node<'a>(w: &'a World, c: &Ctx, kind: GuestKind) -> Result<&'a Guest, ApiErr> {
    let vmid = c.vmid();
    match w.guests.get(&vmid) {
        Some(g) if g.node == c.node() && g.kind == kind => Ok(g),
        _ => Err(ApiErr::config_missing(kind, c.node(), vmid)),
    }
}

pub fn list(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let kind = kind_of(t);
    let out: Vec<Value> = w
        .guests
        .values()
        .filter(|g| g.kind == kind && g.node == c.node())
        .filter(|g| c.has(w, &format!("/vms/{}", g.vmid), &["VM.Audit"], false))
        .map(|g| {
            let mut e = json!({"vmid": g.vmid, "name": g.name, "status": g.status,
                "uptime": if g.running() { 3600 } else { 0 }, "cpus": 2, "maxmem": 4_294_967_296u64});
            if kind == GuestKind::Lxc {
                e["type"] = json!("lxc");
            }
            if let Some(l) = &g.lock {
                e["lock"] = json!(l);
            }
            e
        })
        .collect();
    Reply::data(Value::Array(out))
}

pub fn status(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let g = on_node(w, c, kind_of(t))?;
    let running = g.running();
    let mut e = json!({
        "vmid": g.vmid, "status": g.status, "name": g.name,
        "uptime": if running { 3600 } else { 0 }, "cpus": 2, "cpu": if running { 0.02 } else { 0.0 },
        "mem": if running { 1_073_741_824u64 } else { 0 }, "maxmem": 4_294_967_296u64,
        "maxdisk": 34_359_738_368u64, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        "ha": if g.ha_managed { json!({"managed": 1, "state": "started"}) } else { json!({"managed": 0}) },
    });
    match g.kind {
        GuestKind::Qemu => {
            let qmp = if g.lock.as_deref() == Some("suspended") {
                "suspended"
            } else {
                g.status.as_str()
            };
            e["qmpstatus"] = json!(qmp);
            if g.agent_enabled() {
                e["agent"] = json!(1);
            }
            if running {
                e["pid"] = json!(4242);
                e["running-machine"] = json!("pc-i440fx-9.2+pve1");
                e["running-qemu"] = json!("9.2.0");
            }
        }
        GuestKind::Lxc => {
            e["type"] = json!("lxc");
            e["swap"] = json!(0);
            e["maxswap"] = json!(536_870_912u64);
        }
    }
    if let Some(l) = &g.lock {
        e["lock"] = json!(l);
    }
    if g.template {
        e["template"] = json!(1);
    }
    Reply::data(e)
}

pub fn config(w: &mut World, c: &Ctx, t: &str) -> HResult {
    let g = on_node(w, c, kind_of(t))?;
    let mut m = serde_json::Map::new();
    for (k, v) in &g.config {
        let val = v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.clone()));
        m.insert(k.clone(), val);
    }
    if let Some(l) = &g.lock {
        m.insert("lock".into(), json!(l));
    }
    if let Some(p) = &g.parent {
        m.insert("parent".into(), json!(p));
    }
    if g.template {
        m.insert("template".into(), json!(1));
    }
    m.insert(
        "digest".into(),
        json!(format!(
            "{:040x}",
            g.digest.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )),
    );
    Reply::data(Value::Object(m))
}
