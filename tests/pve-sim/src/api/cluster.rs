//! Cluster-wide reads: `/version`, `/nodes`, `/cluster/resources` (filtered per privilege, §6),
//! `/access/permissions` (§6) and the node certificate info (§7).

use serde_json::{Value, json};

use super::{ApiErr, Ctx, HResult, Reply};
use crate::world::World;

pub fn version(w: &mut World, _c: &Ctx) -> HResult {
    let v = &w.settings.version;
    let release = v.split('.').take(2).collect::<Vec<_>>().join(".");
    Reply::data(json!({ "version": v, "release": release, "repoid": "5e2a1f3c" }))
}

fn node_entry(w: &World, c: &Ctx, name: &str, online: bool) -> Value {
    let mut e = json!({
        "id": format!("node/{name}"), "node": name, "type": "node",
        "status": if online { "online" } else { "offline" }, "level": "",
    });
    if c.has(w, &format!("/nodes/{name}"), &["Sys.Audit"], false) && online {
        e["cpu"] = json!(0.031);
        e["maxcpu"] = json!(16);
        e["mem"] = json!(12_884_901_888u64);
        e["maxmem"] = json!(68_719_476_736u64);
        e["uptime"] = json!(864_000);
    }
    e
}

pub fn nodes(w: &mut World, c: &Ctx) -> HResult {
    let fp = w.fingerprint.clone();
    let list: Vec<Value> = w
        .nodes
        .iter()
        .map(|n| {
            let mut e = node_entry(w, c, &n.name, n.online);
            e["ssl_fingerprint"] = json!(fp);
            e
        })
        .collect();
    Reply::data(Value::Array(list))
}

pub fn resources(w: &mut World, c: &Ctx) -> HResult {
    let ty = c.str("type");
    let mut out = Vec::new();
    if ty.is_none() || ty == Some("vm") {
        for g in w.guests.values() {
            if !c.has(w, &format!("/vms/{}", g.vmid), &["VM.Audit"], false) {
                continue;
            }
            let mut e = json!({
                "id": format!("{}/{}", g.kind.as_str(), g.vmid), "type": g.kind.as_str(),
                "vmid": g.vmid, "node": g.node, "status": g.status, "name": g.name,
                "template": g.template as u8, "maxmem": 4_294_967_296u64, "maxdisk": 34_359_738_368u64,
                "maxcpu": 2, "cpu": if g.running() { 0.02 } else { 0.0 },
                "mem": if g.running() { 1_073_741_824u64 } else { 0 }, "disk": 0,
                "uptime": if g.running() { 3600 } else { 0 }, "netin": 0, "netout": 0,
                "diskread": 0, "diskwrite": 0,
            });
            if let Some(l) = &g.lock {
                e["lock"] = json!(l);
            }
            if g.ha_managed {
                e["hastate"] = json!("started");
            }
            out.push(e);
        }
    }
    if ty.is_none() || ty == Some("node") {
        for n in &w.nodes {
            out.push(node_entry(w, c, &n.name, n.online));
        }
    }
    if ty.is_none() || ty == Some("storage") {
        for s in w.storages.values() {
            if !c.has(
                w,
                &format!("/storage/{}", s.id),
                &["Datastore.Audit"],
                false,
            ) {
                continue;
            }
            for n in w.nodes.iter().filter(|n| s.on_node(&n.name)) {
                out.push(json!({
                    "id": format!("storage/{}/{}", n.name, s.id), "storage": s.id, "node": n.name,
                    "type": "storage", "status": "available",
                    "plugintype": match s.kind { crate::scenario::StorageKind::Dir => "dir", crate::scenario::StorageKind::Pbs => "pbs" },
                    "content": s.content.join(","), "shared": s.shared as u8,
                    "disk": s.used, "maxdisk": s.total,
                }));
            }
        }
    }
    Reply::data(Value::Array(out))
}

pub fn permissions(w: &mut World, c: &Ctx) -> HResult {
    let me = c.auth.full();
    let target = c
        .str("userid")
        .map(str::to_string)
        .unwrap_or_else(|| me.clone());
    let own_token = c.auth.token.is_none() && target.starts_with(&format!("{}!", c.auth.user));
    if target != me && !own_token && !c.has(w, "/access", &["Sys.Audit"], false) {
        return Err(ApiErr::forbidden("/access", &["Sys.Audit"]));
    }
    let who =
        super::parse_authid(&target).ok_or_else(|| ApiErr::param("userid", "invalid format"))?;
    let to_json = |m: &std::collections::BTreeMap<String, bool>| {
        let o: serde_json::Map<String, Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), json!(*v as u8)))
            .collect();
        Value::Object(o)
    };
    let out: serde_json::Map<String, Value> = match c.str("path") {
        Some(p) => std::iter::once((p.to_string(), to_json(&w.rbac.privileges(&who, p)))).collect(),
        None => w
            .rbac
            .permissions_tree(&who)
            .iter()
            .map(|(p, m)| (p.clone(), to_json(m)))
            .collect(),
    };
    Reply::data(Value::Object(out))
}

pub fn certificates(w: &mut World, c: &Ctx) -> HResult {
    let node = c.node();
    let now = w.clock.epoch();
    Reply::data(json!([{
        "filename": "pve-ssl.pem",
        "fingerprint": w.fingerprint,
        "issuer": "/CN=Proxmox Virtual Environment/OU=pve-sim/O=PVE Cluster Manager CA",
        "subject": format!("/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN={node}"),
        "san": [node, "localhost", "127.0.0.1"],
        "notbefore": now - 86_400, "notafter": now + 2 * 365 * 86_400,
        "public-key-type": "ecdsa", "public-key-bits": 256,
    }]))
}
