//! The `/_sim` control API: a path real PVE does not have, reachable only with the simulator's
//! control key (`X-Sim-Control`) and never with a PVE token. Tests script events through it and
//! read what happened: the request and event logs, the state, migrations, task hold/release/kill,
//! faults, the clock, guest locks and behaviour, nodes going offline, token revocation and
//! certificate rotation.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::faults::{Fault, FaultSpec};
use crate::scenario::VzdumpBehaviour;
use crate::world::World;

fn err(status: u16, msg: impl Into<String>) -> (u16, Vec<u8>) {
    (
        status,
        json!({"error": msg.into()}).to_string().into_bytes(),
    )
}

fn ok(v: Value) -> (u16, Vec<u8>) {
    (200, json!({"data": v}).to_string().into_bytes())
}

pub(crate) fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    key: Option<&str>,
    authorization: Option<&str>,
) -> (u16, Vec<u8>) {
    if authorization.is_some_and(|a| a.trim_start().starts_with("PVEAPIToken")) {
        return err(403, "the control API is not reachable with a PVE token");
    }
    if key != Some(shared.control_key.as_str()) {
        return err(403, "missing or wrong X-Sim-Control key");
    }
    let q: std::collections::BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let since: u64 = q.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return err(400, format!("body is not JSON: {e}")),
        }
    };
    let segs: Vec<&str> = path
        .trim_start_matches("/_sim")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if segs.as_slice() == ["tls", "rotate"] && method == "POST" {
        return match shared.certs.rotate() {
            Ok(fp) => {
                shared.world.lock().expect("world lock").fingerprint = fp.clone();
                ok(json!({"fingerprint": fp}))
            }
            Err(e) => err(500, e),
        };
    }
    let mut w = shared.world.lock().expect("world lock");
    w.tick();
    let r = route(&mut w, shared, method, &segs, since, body);
    drop(w);
    shared.events.notify_waiters();
    r
}

fn parse<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, (u16, Vec<u8>)> {
    serde_json::from_value(v).map_err(|e| err(400, format!("bad request body: {e}")))
}

fn route(
    w: &mut World,
    shared: &Shared,
    method: &str,
    segs: &[&str],
    since: u64,
    body: Value,
) -> (u16, Vec<u8>) {
    macro_rules! body {
        ($t:ty) => {
            match parse::<$t>(body) {
                Ok(v) => v,
                Err(e) => return e,
            }
        };
    }
    match (method, segs) {
        ("GET", ["info"]) => ok(json!({
            "fingerprint": shared.certs.fingerprint(), "ca_pem": shared.certs.ca_pem(),
            "leaf_pem": shared.certs.leaf_pem(), "now": w.clock.now(),
            "nodes": w.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        })),
        ("GET", ["requests"]) => ok(json!(
            w.requests
                .iter()
                .filter(|r| r.seq > since)
                .collect::<Vec<_>>()
        )),
        ("GET", ["events"]) => ok(json!(
            w.events
                .iter()
                .filter(|e| e.seq > since)
                .collect::<Vec<_>>()
        )),
        ("GET", ["state"]) => ok(state_json(w)),
        ("POST", ["migrate"]) => {
            #[derive(Deserialize)]
            struct M {
                vmid: u32,
                node: String,
            }
            let m = body!(M);
            match w.migrate(m.vmid, &m.node) {
                Ok(()) => ok(Value::Null),
                Err(e) => err(400, e),
            }
        }
        ("POST", ["tasks", action]) => {
            #[derive(Deserialize)]
            struct T {
                upid: String,
            }
            let t = body!(T);
            match *action {
                "hold" | "release" => match w.task_mut(&t.upid) {
                    Some(task) => {
                        task.held = *action == "hold";
                        ok(Value::Null)
                    }
                    None => err(404, "no such task"),
                },
                "kill" => {
                    if w.kill_task(&t.upid) {
                        ok(Value::Null)
                    } else {
                        err(404, "no such running task")
                    }
                }
                _ => err(404, "unknown task action"),
            }
        }
        ("POST", ["faults"]) => {
            let spec = body!(FaultSpec);
            w.fault_seq += 1;
            let id = w.fault_seq;
            w.faults.push(Fault { id, spec, hits: 0 });
            ok(json!({"id": id}))
        }
        ("GET", ["faults"]) => ok(json!(w.faults)),
        ("DELETE", ["faults"]) => {
            w.faults.clear();
            ok(Value::Null)
        }
        ("POST", ["clock"]) => {
            #[derive(Deserialize)]
            struct C {
                #[serde(default)]
                advance: Option<f64>,
                #[serde(default)]
                speed: Option<f64>,
            }
            let c = body!(C);
            if let Some(s) = c.speed {
                w.clock.set_speed(s);
            }
            if let Some(a) = c.advance {
                w.clock.advance(a);
                w.tick();
            }
            ok(json!({"now": w.clock.now()}))
        }
        ("GET", ["guests", vmid, "lock"]) => match w.guests.get(&vmid.parse().unwrap_or(0)) {
            Some(g) => ok(json!({"lock": g.lock})),
            None => err(404, "no such guest"),
        },
        ("PUT", ["guests", vmid, "lock"]) => {
            #[derive(Deserialize)]
            struct L {
                lock: Option<String>,
            }
            let l = body!(L);
            match w.guests.get_mut(&vmid.parse().unwrap_or(0)) {
                Some(g) => {
                    g.lock = l.lock;
                    ok(Value::Null)
                }
                None => err(404, "no such guest"),
            }
        }
        ("PUT", ["guests", vmid, "backup"]) => {
            let b = body!(VzdumpBehaviour);
            match w.guests.get_mut(&vmid.parse().unwrap_or(0)) {
                Some(g) => {
                    g.backup = Some(b);
                    ok(Value::Null)
                }
                None => err(404, "no such guest"),
            }
        }
        ("PUT", ["guests", vmid, "status"]) => {
            #[derive(Deserialize)]
            struct S {
                status: String,
            }
            let s = body!(S);
            match w.guests.get_mut(&vmid.parse().unwrap_or(0)) {
                Some(g) => {
                    g.status = s.status;
                    ok(Value::Null)
                }
                None => err(404, "no such guest"),
            }
        }
        ("PUT", ["nodes", node]) => {
            #[derive(Deserialize)]
            struct N {
                online: bool,
            }
            let n = body!(N);
            match w.nodes.iter_mut().find(|x| x.name == *node) {
                Some(x) => {
                    x.online = n.online;
                    ok(Value::Null)
                }
                None => err(404, "no such node"),
            }
        }
        ("POST", ["tokens", "revoke"]) => {
            #[derive(Deserialize)]
            struct T {
                tokenid: String,
            }
            let t = body!(T);
            match w.rbac.set_token_secret(&t.tokenid, None) {
                Ok(()) => ok(Value::Null),
                Err(e) => err(400, e),
            }
        }
        _ => err(
            404,
            format!("no control endpoint {method} /_sim/{}", segs.join("/")),
        ),
    }
}

pub fn state_json(w: &World) -> Value {
    json!({
        "now": w.clock.now(),
        "guests": w.guests.values().collect::<Vec<_>>(),
        "storages": w.storages.values().collect::<Vec<_>>(),
        "tasks": w.tasks.iter().map(|t| json!({
            "upid": t.upid, "running": t.running(), "exitstatus": t.exitstatus,
            "held": t.held, "log": t.log,
        })).collect::<Vec<_>>(),
        "vzdump_lock": w.vzdump_lock,
    })
}
