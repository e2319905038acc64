//! `status`: what the agent knows about itself — identity, recent runs, pending or owed work —
//! after reconciling a pending task without waiting for it. No secrets: the state has no place
//! for them.

use serde_json::json;

use crate::backup::follow::Shutdown;
use crate::backup::run::{Agent, rfc3339};

pub async fn print(agent: &Agent, shutdown: &dyn Shutdown, as_json: bool) -> i32 {
    let notes = match crate::backup::run::reconcile(agent, shutdown).await {
        Ok(n) => n,
        Err(e) => vec![format!("could not reconcile the pending task: {e}")],
    };
    let state = match agent.dir.load_state() {
        Ok(l) => l.state,
        Err(e) => {
            eprintln!("felhom-agent: {e}");
            return crate::cli::EXIT_FAILED;
        }
    };
    let journal = agent.dir.journal().load().ok().flatten();
    let owed: Vec<String> = journal
        .as_ref()
        .map(|j| j.posts_owed.clone())
        .unwrap_or_default();
    let thaw_owed: Vec<String> = agent.dir.journal().load_thaw_owed().unwrap_or_default();
    if as_json {
        let v = json!({
            "identity": state.identity,
            "last_success": state.last_success.map(rfc3339),
            "consecutive_failures": state.consecutive_failures,
            "pending": state.pending,
            "posts_owed": owed,
            "thaw_owed": thaw_owed,
            "last_fsfreeze": state.last_fsfreeze,
            "runs": state.runs.iter().rev().take(10).collect::<Vec<_>>(),
            "notes": notes,
        });
        println!("{v}");
        return crate::cli::EXIT_OK;
    }
    match &state.identity {
        Some(i) => println!(
            "guest {} ({:?}) {} on node {}",
            i.vmid,
            i.kind,
            i.name.as_deref().unwrap_or("-"),
            i.node
        ),
        None => println!("guest: not discovered yet (run `felhom-agent discover`)"),
    }
    println!(
        "last success: {}",
        state
            .last_success
            .map(rfc3339)
            .unwrap_or_else(|| "never".into())
    );
    println!("consecutive failures: {}", state.consecutive_failures);
    if let Some(p) = &state.pending {
        println!(
            "pending task: {} on {} ({}, started {})",
            p.upid,
            p.node,
            p.reason,
            rfc3339(p.started)
        );
    }
    if !owed.is_empty() {
        println!("post hooks owed: {}", owed.join(", "));
    }
    if !thaw_owed.is_empty() {
        println!(
            "filesystems left frozen (thawed by the next run): {}",
            thaw_owed.join(", ")
        );
    }
    if let Some(f) = &state.last_fsfreeze {
        match &f.skipped {
            Some(why) => println!("last fsfreeze ({}): skipped: {why}", f.job),
            None => println!(
                "last fsfreeze ({}): froze [{}], already frozen by others [{}], {:.1}s{}",
                f.job,
                f.frozen.join(", "),
                f.already_frozen.join(", "),
                f.frozen_seconds.unwrap_or(0.0),
                if f.cut_short {
                    ", cut short by max-freeze"
                } else {
                    ""
                }
            ),
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!("recent runs:");
    for r in state.runs.iter().rev().take(10) {
        println!(
            "  {}  {:<8} {:<8} {}{}",
            rfc3339(r.started),
            format!("{:?}", r.result).to_lowercase(),
            r.mode,
            r.upid.as_deref().unwrap_or("-"),
            r.error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        );
    }
    crate::cli::EXIT_OK
}
