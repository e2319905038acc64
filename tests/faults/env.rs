//! The fixture of the fault cases: pve-sim (in-process, its listener bound inside the server
//! namespace when the case needs a real network), a temp dir with config, token, state dir and a
//! fake sysfs, and the real `felhom-agent` binary (inside the client namespace when there is
//! one). Every output the agent produces — stdout, stderr, every file under the state dir, the
//! health endpoint's bodies — is collected and [`Env::assert_no_secret`] checks them all for the
//! token secret; every case calls it at its end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pve_sim::{Scenario, Sim};

use crate::net::{NetPair, SRV_IP, skip_or_fail};

pub const BASIC: &str = include_str!("../pve-sim/scenarios/basic.toml");
pub const SECRET: &str = "11111111-2222-3333-4444-555555555101";
pub const VZDUMP: &str = "/nodes/{node}/vzdump";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

pub struct Env {
    pub sim: Sim,
    pub dir: PathBuf,
    /// Every output seen: (where, text).
    outputs: Mutex<Vec<(String, String)>>,
    // Declared last: the namespaces go after the simulator stopped.
    pub net: Option<NetPair>,
}

impl Env {
    /// A case that needs a real network: `None` (after a loud skip line) when namespaces are not
    /// available here.
    pub async fn with_net(speed: f64, patch: impl Fn(String) -> String) -> Option<Env> {
        match NetPair::create() {
            Ok(net) => Some(Env::start(Some(net), speed, patch).await),
            Err(reason) => {
                skip_or_fail(&reason);
                None
            }
        }
    }

    /// A case on loopback with the simulator's own faults.
    pub async fn local(speed: f64, patch: impl Fn(String) -> String) -> Env {
        Env::start(None, speed, patch).await
    }

    async fn start(net: Option<NetPair>, speed: f64, patch: impl Fn(String) -> String) -> Env {
        let text = patch(BASIC.replace("clock-speed = 1.0", &format!("clock-speed = {speed}")));
        let sc = Scenario::parse(&text).expect("scenario");
        let sim = match &net {
            Some(n) => {
                let handle = tokio::runtime::Handle::current();
                let addr = format!("{SRV_IP}:8006").parse().unwrap();
                n.within(true, move || handle.block_on(Sim::start(&sc, addr)))
            }
            None => Sim::start(&sc, "127.0.0.1:0".parse().unwrap()).await,
        }
        .expect("sim");
        let dir = std::env::temp_dir().join(format!(
            "felhom-faults-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("sys/class/net/eth0")).unwrap();
        std::fs::write(
            dir.join("sys/class/net/eth0/address"),
            "bc:24:11:aa:bb:01\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("sys/class/dmi/id")).unwrap();
        std::fs::write(
            dir.join("sys/class/dmi/id/product_uuid"),
            "5B0F8D3E-3C57-4A8E-9D7B-0C1C2A3E4F51\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(dir.join("token"), format!("{SECRET}\n")).unwrap();
            std::fs::set_permissions(dir.join("token"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        let env = Env {
            sim,
            dir,
            outputs: Mutex::new(Vec::new()),
            net,
        };
        env.configure("");
        env
    }

    pub fn net(&self) -> &NetPair {
        self.net.as_ref().expect("a network case")
    }

    /// Writes the config: short timeouts (2 s per request, so a blackholed GET and its retries
    /// give up within ~12 s), `extra` appended after `[state]`.
    pub fn configure(&self, extra: &str) {
        let text = format!(
            r#"[pve]
url = "{url}"
token-id = "felhom101@pve!agent"
token-secret-file = "{dir}/token"
fingerprint = "{fp}"
timeout = "2s"

[backup]
storage = "pbs-main"
mode = "snapshot"
task-timeout = "2m"

[state]
dir = "{dir}/state"
{extra}
"#,
            url = self.sim.url(),
            dir = self.dir.display(),
            fp = self.sim.fingerprint(),
        );
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    /// A hook appending `<name>-<phase>` to the marker file; `pre_sleep`/`post_sleep` seconds
    /// after writing the line (so a signal can land while it runs).
    pub fn hook(&self, name: &str, pre_sleep: f64, post_sleep: f64) -> String {
        let m = self.dir.join("marker");
        format!(
            r#"
[[quiesce.hooks]]
name = "{name}"
pre = ["/bin/sh", "-c", "echo {name}-$FELHOM_PHASE >> {m}; sleep {pre_sleep}; echo {name}-pre-done >> {m}"]
post = ["/bin/sh", "-c", "echo {name}-$FELHOM_PHASE >> {m}; sleep {post_sleep}; echo {name}-post-done >> {m}"]
timeout = "30s"
"#,
            m = m.display()
        )
    }

    pub fn marker(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("marker"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the marker file holds `line`.
    pub async fn wait_marker(&self, line: &str) {
        let t0 = Instant::now();
        while !self.marker().iter().any(|l| l == line) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "marker {line:?} never appeared: {:?}",
                self.marker()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_felhom-agent"));
        c.arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args)
            .env("FELHOM_AGENT_SYSFS_ROOT", self.dir.join("sys"))
            .env("FELHOM_LOG", "debug")
            .env_remove("FELHOM_AGENT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        if let Some(n) = &self.net {
            n.enter_cli(&mut c);
        }
        c
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().expect("spawn agent")
    }

    /// Waits for a spawned agent (at most 60 s) and records its outputs.
    pub async fn finish(&self, child: Child, what: &str) -> Run {
        let t0 = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
        )
        .await
        .expect("agent did not exit within 60 s")
        .unwrap();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: t0.elapsed(),
        };
        self.record(&format!("{what} stdout"), &r.stdout);
        self.record(&format!("{what} stderr"), &r.stderr);
        r
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        let t0 = Instant::now();
        let child = self.spawn(args);
        let mut r = self.finish(child, &args.join(" ")).await;
        r.took = t0.elapsed();
        r
    }

    /// Adds an output to the secret check (e.g. a health endpoint body).
    pub fn record(&self, what: &str, text: &str) {
        self.outputs
            .lock()
            .unwrap()
            .push((what.to_string(), text.to_string()));
    }

    /// The token secret appears in no output recorded so far and in no file under the state
    /// dir (including kept-aside copies); also `status --json` is asked and checked.
    pub async fn assert_no_secret(&self) {
        let st = self.command(&["status", "--json"]).output().unwrap();
        self.record("status --json stdout", &String::from_utf8_lossy(&st.stdout));
        self.record("status --json stderr", &String::from_utf8_lossy(&st.stderr));
        let mut seen = Vec::new();
        collect_files(&self.dir.join("state"), &mut seen);
        for p in seen {
            let body = std::fs::read(&p).unwrap_or_default();
            self.record(&p.display().to_string(), &String::from_utf8_lossy(&body));
        }
        let outputs = self.outputs.lock().unwrap();
        assert!(outputs.len() >= 3, "outputs were collected");
        for (what, text) in outputs.iter() {
            assert!(
                !text.contains(SECRET),
                "the token secret leaked into {what}"
            );
        }
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state/state.json")).unwrap())
            .unwrap()
    }

    pub fn vzdump_posts(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.template.as_deref() == Some(VZDUMP))
            .count()
    }

    /// Waits for the agent's vzdump task to be running (the UPID is in the state file).
    pub async fn wait_task_started(&self) -> String {
        let ev = self
            .sim
            .wait_event(Duration::from_secs(20), |e| {
                e.kind == "task-started" && e.detail == "vzdump"
            })
            .await
            .expect("vzdump started");
        let t0 = Instant::now();
        while !std::fs::read_to_string(self.dir.join("state/state.json"))
            .is_ok_and(|s| s.contains("\"reason\": \"running\""))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "pending never saved"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ev.upid.unwrap()
    }

    /// Holds (or releases) the running vzdump task on the simulator.
    pub fn hold(&self, upid: &str, held: bool) {
        self.sim.world().task_mut(upid).unwrap().held = held;
    }

    /// Requests the agent sent since request number `since`.
    pub fn requests_since(&self, since: usize) -> Vec<pve_sim::RequestRecord> {
        self.sim.requests().into_iter().skip(since).collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}
