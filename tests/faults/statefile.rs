//! A broken state directory: `state.json` truncated or corrupted (kept aside, the previous
//! generation used, or — both unusable — a refusal naming the file and what to do), and the disk
//! filling up mid-run (a tiny loop-mounted ext4 as the state dir): the result is never lost
//! silently — the agent exits non-zero naming the file and the error, the previous good
//! `state.json` stays intact, and once space is back the next start records the task.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::*;
use crate::net::skip_or_fail;

fn state_path(env: &Env) -> PathBuf {
    env.dir.join("state/state.json")
}

fn bad_copies(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(env.dir.join("state"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.json.bad-")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_state_is_kept_aside_and_the_previous_generation_is_used() {
    let env = Env::local(20.0, |s| s).await;
    for _ in 0..2 {
        assert_eq!(env.run(&["backup-now"]).await.code, 0);
    }
    let full = std::fs::read(state_path(&env)).unwrap();
    std::fs::write(state_path(&env), &full[..full.len() / 2]).unwrap();
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let bad = bad_copies(&env);
    assert_eq!(bad.len(), 1, "the unusable file is kept aside");
    assert_eq!(std::fs::read(&bad[0]).unwrap(), &full[..full.len() / 2]);
    let warn = format!(
        "state file {} is unusable (invalid JSON: EOF while parsing",
        state_path(&env).display()
    );
    assert!(r.stderr.contains(&warn), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("kept a copy at {}", bad[0].display()))
            && r.stderr.contains("continuing with the previous generation"),
        "{}",
        r.stderr
    );
    // The previous generation held the first run and the second's task as pending: this start
    // reattaches to that task and records it instead of starting another backup. Nothing is lost.
    let j = r.json();
    let second_upid = j["upid"].as_str().unwrap().to_string();
    assert!(
        j["repaired"].to_string().contains("reattached"),
        "the pending task of the lost generation is picked up: {j}"
    );
    assert_eq!(env.vzdump_posts(), 2, "no third vzdump");
    let st = env.state();
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{st}");
    assert!(runs.iter().all(|r| r["result"] == "ok"), "{st}");
    assert_eq!(runs[1]["upid"], second_upid.as_str());
    assert!(st["pending"].is_null());
    env.assert_no_secret().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_and_previous_generation_refuse_to_run_and_say_what_to_do() {
    let env = Env::local(20.0, |s| s).await;
    assert_eq!(env.run(&["backup-now"]).await.code, 0);
    let prev = env.dir.join("state/state.json.prev");
    std::fs::write(state_path(&env), b"{\"version\": 1, \"runs\": 7}\n").unwrap();
    std::fs::write(&prev, b"").unwrap();
    let r = env.run(&["backup-now", "--json"]).await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json()["error"].as_str().unwrap().to_string();
    let bad = bad_copies(&env);
    assert_eq!(bad.len(), 1);
    assert!(
        err.starts_with(&format!(
            "cannot read the state: state file {} is unusable (invalid content: ",
            state_path(&env).display()
        )) && err.contains(&format!(
            "and so is its previous generation {}",
            prev.display()
        )) && err.contains(&format!("a copy was kept at {}", bad[0].display()))
            && err.contains(&format!(
                "move {} aside to start with an empty state",
                state_path(&env).display()
            )),
        "{err}"
    );
    // Left as it was; nothing was started.
    assert_eq!(
        std::fs::read(state_path(&env)).unwrap(),
        b"{\"version\": 1, \"runs\": 7}\n"
    );
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}

/// A loop-mounted filesystem, unmounted on drop.
struct LoopMount(PathBuf);

impl LoopMount {
    fn new(image: &Path, at: &Path) -> Result<LoopMount, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: mounting a loop filesystem needs CAP_SYS_ADMIN".into());
        }
        let run = |args: &[&str]| -> Result<(), String> {
            let o = Command::new(args[0])
                .args(&args[1..])
                .output()
                .map_err(|e| format!("{}: {e}", args[0]))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        let img = image.to_str().unwrap();
        run(&["truncate", "-s", "4M", img])?;
        run(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-N",
            "64",
            img,
        ])?;
        run(&["mount", "-o", "loop", img, at.to_str().unwrap()])?;
        Ok(LoopMount(at.to_path_buf()))
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&block).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // Small writes fill the last partial blocks too.
    while f.write_all(&[0u8; 512]).and_then(|()| f.sync_all()).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_mid_run_keeps_the_previous_state_and_exits_non_zero() {
    let env = Env::local(20.0, |s| s.replace("duration = 20.0", "duration = 600.0")).await;
    let state_dir = env.dir.join("state");
    let _mount = match LoopMount::new(&env.dir.join("state.img"), &state_dir) {
        Ok(m) => m,
        Err(reason) => {
            skip_or_fail(&reason);
            return;
        }
    };
    let child = env.spawn(&["backup-now", "--json"]);
    let upid = env.wait_task_started().await;
    env.hold(&upid, true);
    let good = std::fs::read(state_path(&env)).unwrap();
    fill(&state_dir.join("fill"));
    env.hold(&upid, false);
    env.sim.advance(700.0);
    let r = env.finish(child, "backup-now").await;
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["result"], "ok", "the backup itself succeeded: {j}");
    let err = j["state_error"].as_str().unwrap().to_string();
    assert!(
        err.contains("No space left on device")
            && err.contains(&format!("{}/", state_dir.display()))
            && err.contains("the previous good state is kept"),
        "{err}"
    );
    assert!(
        r.stderr.contains("could not save the state file"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(state_path(&env)).unwrap(),
        good,
        "the previous good state.json is intact"
    );
    // Space is back: the next start records the task's result from the pending entry.
    std::fs::remove_file(state_dir.join("fill")).unwrap();
    let j = env.run(&["status", "--json"]).await.json();
    assert!(j["pending"].is_null(), "{j}");
    assert_eq!(j["runs"][0]["upid"], upid.as_str());
    assert_eq!(j["runs"][0]["result"], "ok");
    assert_eq!(env.vzdump_posts(), 1);
    env.assert_no_secret().await;
}
