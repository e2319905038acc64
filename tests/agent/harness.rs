//! Harness for the agent's end-to-end tests: the simulator in-process over real TLS, a temp dir
//! with config, token file, state dir and a fake sysfs (so identity proof works), and the real
//! `felhom-agent` binary run as a process. Every captured output and every file the agent wrote is
//! checked for the token secret after each run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use pve_sim::{Scenario, Sim};

pub const BASIC: &str = include_str!("../pve-sim/scenarios/basic.toml");
pub const SECRET101: &str = "11111111-2222-3333-4444-555555555101";
pub const SECRET103: &str = "11111111-2222-3333-4444-555555555103";

pub struct Env {
    pub sim: Sim,
    pub dir: PathBuf,
    pub secret: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        let line = self.stdout.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Which guest the agent plays.
#[derive(Clone, Copy)]
pub enum Guest {
    Qemu101,
    Lxc103,
}

impl Env {
    /// `speed`: simulated seconds per real second; `patch` edits the scenario text.
    pub async fn start(guest: Guest, speed: f64, patch: impl Fn(String) -> String) -> Env {
        let text = patch(BASIC.replace("clock-speed = 1.0", &format!("clock-speed = {speed}")));
        let sc = Scenario::parse(&text).expect("scenario");
        let sim = Sim::start(&sc, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("sim");
        let dir = std::env::temp_dir().join(format!(
            "felhom-agent-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let (secret, tokenid, mac, uuid) = match guest {
            Guest::Qemu101 => (
                SECRET101,
                "felhom101@pve!agent",
                "bc:24:11:aa:bb:01",
                Some("5B0F8D3E-3C57-4A8E-9D7B-0C1C2A3E4F51"),
            ),
            Guest::Lxc103 => (SECRET103, "felhom103@pve!agent", "bc:24:11:cc:dd:03", None),
        };
        fake_sysfs(&dir.join("sys"), mac, uuid);
        write_secret(&dir.join("token"), secret);
        let env = Env {
            sim,
            dir,
            secret: secret.to_string(),
        };
        env.write_config(&env.config_text(tokenid, ""));
        env
    }

    pub fn config_text(&self, tokenid: &str, extra: &str) -> String {
        format!(
            r#"[pve]
url = "{url}"
token-id = "{tokenid}"
token-secret-file = "{dir}/token"
fingerprint = "{fp}"
timeout = "5s"

[backup]
storage = "pbs-main"
mode = "snapshot"
task-timeout = "2m"
notes-template = "{{{{guestname}}}} via felhom-agent"

[state]
dir = "{dir}/state"
{extra}
"#,
            url = self.sim.url(),
            dir = self.dir.display(),
            fp = self.sim.fingerprint(),
        )
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
    }

    /// A hook that appends `<name>-<phase> <vmid> <mode> <upid?>` to the marker file.
    pub fn hook(&self, name: &str) -> String {
        let m = self.dir.join("marker");
        format!(
            r#"
[[quiesce.hooks]]
name = "{name}"
pre = ["/bin/sh", "-c", "echo {name}-$FELHOM_PHASE $FELHOM_VMID $FELHOM_MODE >> {m}"]
post = ["/bin/sh", "-c", "echo {name}-$FELHOM_PHASE $FELHOM_VMID $FELHOM_MODE $FELHOM_UPID >> {m}"]
timeout = "10s"
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

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_felhom-agent"));
        c.arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args);
        c.env("FELHOM_AGENT_SYSFS_ROOT", self.dir.join("sys"));
        c.env("FELHOM_LOG", "debug");
        c.env_remove("FELHOM_AGENT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY");
        c
    }

    /// Runs the agent to completion off the async runtime (the simulator keeps serving).
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut c = self.command(args);
        let out: Output = tokio::task::spawn_blocking(move || c.output().expect("run agent"))
            .await
            .unwrap();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.assert_no_secret(&r);
        r
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().expect("spawn agent")
    }

    /// The secret appears nowhere the agent writes: stdout, stderr, state dir files.
    pub fn assert_no_secret(&self, r: &Run) {
        assert!(!r.stdout.contains(&self.secret), "secret in stdout");
        assert!(!r.stderr.contains(&self.secret), "secret in stderr");
        for e in std::fs::read_dir(self.dir.join("state")).unwrap().flatten() {
            let body = std::fs::read(e.path()).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&body).contains(&self.secret),
                "secret in {}",
                e.path().display()
            );
        }
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("state/state.json")).unwrap())
            .unwrap()
    }

    pub fn posts(&self, template: &str) -> Vec<pve_sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.template.as_deref() == Some(template))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fake_sysfs(root: &Path, mac: &str, uuid: Option<&str>) {
    std::fs::create_dir_all(root.join("class/net/eth0")).unwrap();
    std::fs::write(root.join("class/net/eth0/address"), format!("{mac}\n")).unwrap();
    if let Some(u) = uuid {
        std::fs::create_dir_all(root.join("class/dmi/id")).unwrap();
        std::fs::write(root.join("class/dmi/id/product_uuid"), format!("{u}\n")).unwrap();
    }
}

pub fn write_secret(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
