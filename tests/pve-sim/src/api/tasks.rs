//! Task endpoints (§2): status and log of one UPID, the node's task list, and stopping a task.
//! Owners (the exact token, or the user owning it) may read their tasks; anyone else needs
//! `Sys.Audit` on `/nodes/{node}` (stopping: `Sys.Modify`). A task is known only on the node that
//! ran it.

use serde_json::{Value, json};

use super::{ApiErr, Ctx, HResult, Reply};
use crate::upid::Upid;
use crate::world::{Task, World};

/// `$check_task_user`: the exact token, or the user owning it.
fn owns(c: &Ctx, task_user: &str) -> bool {
    if task_user == c.auth.full() {
        return true;
    }
    let owner = task_user.split('!').next().unwrap_or(task_user);
    c.auth.token.is_none() && owner == c.auth.user
}

fn find<'a>(w: &'a World, c: &Ctx) -> Result<(Upid, Option<&'a Task>), ApiErr> {
    let raw = c.uri.get("upid").cloned().unwrap_or_default();
    let upid =
        Upid::decode(&raw).ok_or_else(|| ApiErr::param("upid", "unable to parse worker upid"))?;
    let task = w.task(&upid.encode()).filter(|t| t.parsed.node == c.node());
    Ok((upid, task))
}

fn split_user(full: &str) -> (String, Option<String>) {
    match full.split_once('!') {
        Some((u, t)) => (u.to_string(), Some(t.to_string())),
        None => (full.to_string(), None),
    }
}

pub fn status(w: &mut World, c: &Ctx) -> HResult {
    let (upid, task) = find(w, c)?;
    let task = task.ok_or_else(|| ApiErr::param("upid", "no such task"))?;
    if !owns(c, &upid.user) && !c.has(w, &format!("/nodes/{}", c.node()), &["Sys.Audit"], false) {
        return Err(ApiErr::forbidden(
            &format!("/nodes/{}", c.node()),
            &["Sys.Audit"],
        ));
    }
    let (user, tokenid) = split_user(&upid.user);
    let mut e = json!({
        "upid": task.upid, "node": upid.node, "pid": upid.pid, "pstart": upid.pstart,
        "starttime": upid.starttime, "type": upid.wtype, "id": upid.id, "user": user,
        "status": if task.running() { "running" } else { "stopped" },
    });
    if let Some(t) = tokenid {
        e["tokenid"] = json!(t);
    }
    if let Some(x) = &task.exitstatus {
        e["exitstatus"] = json!(x);
    }
    Reply::data(e)
}

pub fn log(w: &mut World, c: &Ctx) -> HResult {
    let (upid, task) = find(w, c)?;
    if !owns(c, &upid.user) && !c.has(w, &format!("/nodes/{}", c.node()), &["Sys.Audit"], false) {
        return Err(ApiErr::forbidden(
            &format!("/nodes/{}", c.node()),
            &["Sys.Audit"],
        ));
    }
    let Some(task) = task else {
        let hex = upid.encode();
        let dir = &format!("{:08X}", upid.starttime)[7..8];
        return Ok(Reply {
            data: json!([{"n": 1, "t": format!("unable to open file - /var/log/pve/tasks/{dir}/{hex}: No such file or directory")}]),
            total: Some(1),
        });
    };
    let start = c.int("start").unwrap_or(0).max(0) as usize;
    let limit = c.int("limit").unwrap_or(50).max(0) as usize;
    let lines: Vec<&String> = task.log.iter().collect();
    if lines.is_empty() {
        return Ok(Reply {
            data: json!([{"n": 1, "t": "no content"}]),
            total: Some(1),
        });
    }
    let end = if limit == 0 {
        lines.len()
    } else {
        (start + limit).min(lines.len())
    };
    let data: Vec<Value> = (start.min(lines.len())..end)
        .map(|i| json!({"n": i + 1, "t": lines[i]}))
        .collect();
    Ok(Reply {
        data: Value::Array(data),
        total: Some(lines.len() as u64),
    })
}

fn status_class(exit: &str) -> &'static str {
    if exit == "OK" {
        "ok"
    } else if exit.starts_with("WARNINGS: ") {
        "warning"
    } else if exit == "unexpected status" {
        "unknown"
    } else {
        "error"
    }
}

pub fn list(w: &mut World, c: &Ctx) -> HResult {
    let node = c.node().to_string();
    let audit = c.has(w, &format!("/nodes/{node}"), &["Sys.Audit"], false);
    let source = c.str("source").unwrap_or("archive");
    let start = c.int("start").unwrap_or(0).max(0) as usize;
    let limit = c.int("limit").unwrap_or(50).max(0) as usize;
    let typefilter = c.str("typefilter");
    let userfilter = c.str("userfilter");
    let vmid = c.int("vmid").map(|v| v.to_string());
    let errors = c.bool("errors").unwrap_or(false);
    let since = c.int("since");
    let until = c.int("until");
    let statusfilter: Option<Vec<String>> = c.str("statusfilter").map(|s| {
        s.split([',', ';', ' '])
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    });
    let mut items: Vec<&Task> = w
        .tasks
        .iter()
        .filter(|t| t.parsed.node == node)
        .filter(|t| match source {
            "active" => t.running(),
            "all" => true,
            _ => !t.running(),
        })
        .filter(|t| audit || owns(c, &t.parsed.user))
        .filter(|t| typefilter.is_none_or(|f| t.parsed.wtype.contains(f)))
        .filter(|t| userfilter.is_none_or(|f| t.parsed.user.contains(f)))
        .filter(|t| vmid.as_deref().is_none_or(|v| t.parsed.id == v))
        .filter(|t| since.is_none_or(|s| t.parsed.starttime >= s))
        .filter(|t| until.is_none_or(|u| t.parsed.starttime <= u))
        .filter(|t| {
            !errors
                || t.exitstatus
                    .as_deref()
                    .is_some_and(|x| status_class(x) == "error")
        })
        .filter(|t| {
            statusfilter.as_ref().is_none_or(|f| {
                let class = t
                    .exitstatus
                    .as_deref()
                    .map(status_class)
                    .unwrap_or("running");
                f.iter()
                    .any(|x| x == class || (x == "active" && t.running()))
            })
        })
        .collect();
    items.sort_by(|a, b| {
        b.parsed
            .starttime
            .cmp(&a.parsed.starttime)
            .then(b.parsed.pid.cmp(&a.parsed.pid))
    });
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(if limit == 0 { usize::MAX } else { limit })
        .map(|t| {
            let u = &t.parsed;
            let mut e = json!({"upid": t.upid, "node": u.node, "pid": u.pid, "pstart": u.pstart,
                "starttime": u.starttime, "type": u.wtype, "id": u.id, "user": u.user});
            if let Some(x) = &t.exitstatus {
                // Archived token tasks are split into user + tokenid; active ones are not (§2).
                let (user, tokenid) = split_user(&u.user);
                e["user"] = json!(user);
                if let Some(tk) = tokenid {
                    e["tokenid"] = json!(tk);
                }
                e["status"] = json!(x);
                e["endtime"] = json!(t.endtime.unwrap_or(u.starttime));
            }
            e
        })
        .collect();
    Ok(Reply {
        data: Value::Array(page),
        total: Some(total as u64),
    })
}

pub fn stop(w: &mut World, c: &Ctx) -> HResult {
    let (upid, task) = find(w, c)?;
    let task = task.ok_or_else(|| ApiErr::param("upid", "no such task"))?;
    if !owns(c, &upid.user) && !c.has(w, &format!("/nodes/{}", c.node()), &["Sys.Modify"], false) {
        return Err(ApiErr::forbidden(
            &format!("/nodes/{}", c.node()),
            &["Sys.Modify"],
        ));
    }
    let key = task.upid.clone();
    if task.running() {
        w.log(&key, "received interrupt");
        if upid.wtype == "vzdump" {
            super::vzdump::cleanup_after_abort(w, &key);
        }
        w.finish_task(&key, "interrupted by signal".into());
    }
    Reply::data(Value::Null)
}
