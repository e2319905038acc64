//! The Debian package on a real systemd: builds the .deb with `packaging/build-deb.sh` (or takes
//! `FELHOM_DEB`), boots a minimal Debian 12 rootfs (debootstrap, cached under `.cache/`) as an
//! ephemeral systemd-nspawn container with systemd as PID 1, installs the package with dpkg
//! inside, points it at a pve-sim on the host side, and checks the service end to end: enabled
//! but not started on install, `active (running)` through READY=1 with its `STATUS=` line, a
//! catch-up backup that reaches the simulator, `/healthz`, a clean stop, and `dpkg --purge`.
//!
//! Network: the container has a private network namespace joined to the host by a veth pair
//! (host 10.213.N.1; the container's end, 10.213.N.2, carries guest 101's MAC, so the identity
//! proof by MAC works). pve-sim listens on the host end; the agent's health port stays private to the
//! container (no clash with anything on the host), reached with `nsenter -n`.
//!
//! Skips with a loud message (never fails) when not root or when debootstrap, systemd-nspawn or
//! cargo-deb are missing; `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use pve_sim::{Scenario, Sim};

const BASIC: &str = include_str!("pve-sim/scenarios/basic.toml");
const SECRET101: &str = "11111111-2222-3333-4444-555555555101";
const MAC101: &str = "bc:24:11:aa:bb:01";
const ROOTFS_PACKAGES: &str = "systemd,systemd-sysv,dbus,iproute2,ca-certificates,procps,tzdata";
/// Bump when ROOTFS_PACKAGES changes, so a cached rootfs is not reused.
const ROOTFS_NAME: &str = "package-rootfs-v1";

fn skip(why: &str) {
    eprintln!("\n!!!!! SKIPPED tests/package.rs: {why}\n!!!!! the package was NOT tested\n");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(cmd: &mut Command) -> String {
    let (ok, text) = sh(cmd);
    assert!(ok, "{cmd:?} failed:\n{text}");
    text
}

fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The .deb: `FELHOM_DEB`, else built by packaging/build-deb.sh in a target dir of its own (the
/// outer cargo holds the lock of the test's target dir).
fn deb() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FELHOM_DEB") {
        return Ok(PathBuf::from(p));
    }
    if !have("cargo-deb") {
        return Err("cargo-deb is not installed (cargo install cargo-deb --locked)".into());
    }
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_dir().join("target"));
    let out = must(
        Command::new(root_dir().join("packaging/build-deb.sh"))
            .env("CARGO_TARGET_DIR", base.join("package-test"))
            .stderr(Stdio::inherit()),
    );
    Ok(PathBuf::from(out.lines().last().unwrap_or_default().trim()))
}

/// The cached debootstrap rootfs (built once per checkout; the container runs on a copy).
fn rootfs() -> PathBuf {
    let cache = root_dir().join(".cache");
    let dir = cache.join(ROOTFS_NAME);
    if dir.join("usr/lib/systemd/systemd").exists() {
        return dir;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join(format!("{ROOTFS_NAME}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    let t = Instant::now();
    must(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={ROOTFS_PACKAGES}")])
            .args([
                "bookworm",
                tmp.to_str().unwrap(),
                "http://deb.debian.org/debian",
            ])
            .stdout(Stdio::null()),
    );
    std::fs::rename(&tmp, &dir).unwrap();
    eprintln!("debootstrap: {:.0?}", t.elapsed());
    dir
}

/// A veth pair in the host namespace; the peer is moved into the container's private namespace
/// (`--private-network`) after boot, so the container's /sys shows only its own devices.
/// (`--network-interface=` refuses here: "not initialized yet", there is no udev on the host.)
struct Net {
    host_if: String,
    peer: String,
    host_ip: String,
    peer_cidr: String,
}

impl Net {
    fn create() -> Net {
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let net = Net {
            host_if: format!("fhp{}h", pid % 100_000),
            peer: format!("fhp{}c", pid % 100_000),
            host_ip: format!("10.213.{n}.1"),
            peer_cidr: format!("10.213.{n}.2/30"),
        };
        let _ = sh(Command::new("ip").args(["link", "del", &net.host_if]));
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.peer,
        ]);
        ip(&["link", "set", &net.peer, "address", MAC101]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_ip),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh(Command::new("ip").args(["link", "del", &self.host_if]));
    }
}

/// The booted container: nspawn's child and the container's PID 1.
struct Container {
    nspawn: Child,
    init: u32,
    log: PathBuf,
}

impl Container {
    fn boot(rootfs: &Path, net: &Net, log: PathBuf) -> Container {
        let logf = std::fs::File::create(&log).unwrap();
        let nspawn = Command::new("setsid")
            .arg("systemd-nspawn")
            .args(["-D", rootfs.to_str().unwrap(), "--volatile=overlay", "-b"])
            .args(["--register=no", "--keep-unit", "--system-call-filter=bpf"])
            .arg("--private-network")
            .args(["--console=read-only", "--machine=felhom-pkg"])
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        let mut c = Container {
            nspawn,
            init: 0,
            log,
        };
        let t = Instant::now();
        while c.init == 0 {
            let (ok, out) =
                sh(Command::new("pgrep").args(["-P", &c.nspawn.id().to_string(), "-x", "systemd"]));
            if ok {
                c.init = out.trim().parse().unwrap();
            } else {
                assert!(
                    c.nspawn.try_wait().unwrap().is_none(),
                    "nspawn exited: {}",
                    c.boot_log()
                );
                assert!(t.elapsed() < Duration::from_secs(60), "{}", c.boot_log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        while !c.path("/run/dbus/system_bus_socket").exists() {
            assert!(t.elapsed() < Duration::from_secs(60), "{}", c.boot_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, state) = c.run(&["systemctl", "is-system-running", "--wait"]);
        ip(&["link", "set", &net.peer, "netns", &c.init.to_string()]);
        c.must(&["ip", "addr", "add", &net.peer_cidr, "dev", &net.peer]);
        c.must(&["ip", "link", "set", &net.peer, "up"]);
        eprintln!("container booted in {:.1?}: {}", t.elapsed(), state.trim());
        c
    }

    fn boot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path inside the container, seen from the host.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.init))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-a"]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        sh(&mut self.cmd(args))
    }

    fn must(&self, args: &[&str]) -> String {
        must(&mut self.cmd(args))
    }

    /// `systemctl show -p PROP --value felhom-agent`.
    fn prop(&self, prop: &str) -> String {
        self.must(&["systemctl", "show", "-p", prop, "--value", "felhom-agent"])
            .trim()
            .to_string()
    }

    /// An HTTP GET from inside the container's network namespace (host curl).
    fn get(&self, path: &str) -> (String, String) {
        let out = must(
            Command::new("nsenter")
                .args(["-t", &self.init.to_string(), "-n"])
                .args(["curl", "-sS", "-m", "5", "-w", "\n%{http_code}"])
                .arg(format!("http://127.0.0.1:9742{path}")),
        );
        let (body, code) = out.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    }

    fn journal(&self) -> String {
        self.run(&[
            "journalctl",
            "-u",
            "felhom-agent",
            "--no-pager",
            "-o",
            "cat",
        ])
        .1
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.init != 0 {
            let _ = self.run(&["systemctl", "poweroff"]);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if self.nspawn.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    ctx: impl Fn() -> String,
) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < timeout,
            "timed out waiting for {what}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daily UTC schedule twelve hours away and its latest fire time (as in tests/daemon.rs).
fn daily() -> (String, Timestamp) {
    use felhom_agent::schedule::CronSchedule;
    let now = Timestamp::now();
    let hour = (now.to_zoned(TimeZone::UTC).hour() + 12) % 24;
    let expr = format!("0 {hour} * * *");
    let next = CronSchedule::parse(&expr, TimeZone::UTC)
        .unwrap()
        .next_after(now)
        .unwrap();
    (expr, next - jiff::SignedDuration::from_hours(24))
}

#[test]
fn deb_installs_runs_backs_up_stops_and_purges_on_real_systemd() {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not running as root (needs debootstrap, systemd-nspawn, network namespaces)");
    }
    for tool in [
        "debootstrap",
        "systemd-nspawn",
        "nsenter",
        "ip",
        "curl",
        "setsid",
    ] {
        if !have(tool) {
            return skip(&format!(
                "{tool} is not installed (apt-get install debootstrap systemd-container iproute2 curl)"
            ));
        }
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return skip("no cgroup filesystem: systemd cannot boot in a container here");
    }
    let deb = match deb() {
        Ok(d) => d,
        Err(why) => return skip(&why),
    };
    assert!(deb.exists(), "{} missing", deb.display());
    // lintian: no errors (kept warnings and why: packaging/README.md).
    if have("lintian") {
        let (ok, text) = sh(Command::new("lintian")
            .args(["--fail-on", "error"])
            .arg(&deb));
        eprintln!("lintian:\n{text}");
        assert!(ok, "lintian reports errors:\n{text}");
        assert!(!text.lines().any(|l| l.starts_with("E: ")), "{text}");
    } else {
        skip("lintian is not installed: the package was not linted (apt-get install lintian)");
    }
    let rootfs = rootfs();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = Net::create();
    let text = BASIC.replace("clock-speed = 1.0", "clock-speed = 20.0");
    let sim = rt
        .block_on(Sim::start(
            &Scenario::parse(&text).unwrap(),
            format!("{}:0", net.host_ip).parse().unwrap(),
        ))
        .unwrap();
    let log = std::env::temp_dir().join(format!("felhom-pkg-boot-{}.log", std::process::id()));
    let ct = Container::boot(&rootfs, &net, log);

    // Install: enabled, not started, user and config permissions in place.
    std::fs::copy(&deb, ct.path("/var/tmp/felhom-agent.deb")).unwrap();
    let out = ct.must(&["dpkg", "-i", "/var/tmp/felhom-agent.deb"]);
    eprintln!("dpkg -i:\n{out}");
    assert_eq!(
        ct.must(&["systemctl", "is-enabled", "felhom-agent"]).trim(),
        "enabled"
    );
    assert_eq!(
        ct.prop("ActiveState"),
        "inactive",
        "started without a token"
    );
    assert!(
        ct.must(&["getent", "passwd", "felhom-agent"])
            .contains(":/var/lib/felhom-agent:")
    );
    assert_eq!(
        ct.must(&["stat", "-c", "%U:%G %a", "/etc/felhom-agent/config.toml"])
            .trim(),
        "root:felhom-agent 640"
    );
    let packaged = std::fs::read_to_string(ct.path("/etc/felhom-agent/config.toml")).unwrap();
    assert!(packaged.contains("\n#token-secret-file = "), "{packaged}");
    for f in [
        "/usr/bin/felhom-agent",
        "/usr/lib/systemd/system/felhom-agent.service",
        "/usr/lib/sysusers.d/felhom-agent.conf",
        "/usr/share/man/man1/felhom-agent.1.gz",
        "/usr/share/bash-completion/completions/felhom-agent",
        "/usr/share/zsh/vendor-completions/_felhom-agent",
        "/usr/share/fish/vendor_completions.d/felhom-agent.fish",
        "/usr/share/felhom-agent/prometheus/felhom-agent.rules.yml",
        "/usr/share/doc/felhom-agent/copyright",
    ] {
        assert!(ct.path(f).exists(), "{f} not installed");
    }

    // Token (root only, handed over with LoadCredential), config, and a state that owes a run.
    let token = ct.path("/etc/felhom-agent/token");
    std::fs::write(&token, format!("{SECRET101}\n")).unwrap();
    ct.must(&["chmod", "600", "/etc/felhom-agent/token"]);
    let (expr, latest) = daily();
    let config = format!(
        "[pve]\nurl = \"{url}\"\ntoken-id = \"felhom101@pve!agent\"\nfingerprint = \"{fp}\"\n\
         timeout = \"10s\"\n\n[guest]\nvmid = 101\n\n[backup]\nstorage = \"pbs-main\"\n\
         schedule = \"{expr}\"\ntimezone = \"UTC\"\nsplay = \"0s\"\ncatch-up = \"25h\"\n\
         task-timeout = \"2m\"\n\n[self-check]\nschedule = \"\"\n",
        url = sim.url(),
        fp = sim.fingerprint(),
    );
    std::fs::write(ct.path("/etc/felhom-agent/config.toml"), config).unwrap();
    std::fs::create_dir_all(ct.path("/var/lib/felhom-agent")).unwrap();
    let state = serde_json::json!({"version": 1, "last_scheduled": (latest - jiff::SignedDuration::from_hours(24)).as_second()});
    std::fs::write(
        ct.path("/var/lib/felhom-agent/state.json"),
        state.to_string(),
    )
    .unwrap();
    ct.must(&[
        "chown",
        "-R",
        "felhom-agent:felhom-agent",
        "/var/lib/felhom-agent",
    ]);

    // Start: systemctl start returns once READY=1 arrived (Type=notify).
    let (ok, out) = ct.run(&["systemctl", "start", "felhom-agent"]);
    assert!(ok, "start failed: {out}\n{}", ct.journal());
    assert_eq!(ct.prop("ActiveState"), "active", "{}", ct.journal());
    assert_eq!(ct.prop("SubState"), "running");
    assert_eq!(ct.prop("Type"), "notify");
    assert_eq!(ct.prop("User"), "felhom-agent");

    // The catch-up run reaches the simulator and completes.
    let vzdumps = || {
        sim.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.template.as_deref() == Some("/nodes/{node}/vzdump"))
            .count()
    };
    wait_until(
        "POST vzdump in the simulator's log",
        Duration::from_secs(60),
        || vzdumps() == 1,
        || ct.journal(),
    );
    wait_until(
        "felhom_backup_runs_total{result=\"ok\"} 1",
        Duration::from_secs(60),
        || {
            ct.get("/metrics")
                .1
                .contains("felhom_backup_runs_total{result=\"ok\"} 1")
        },
        || ct.journal(),
    );
    assert_eq!(vzdumps(), 1);
    let status = ct
        .run(&["systemctl", "status", "--no-pager", "felhom-agent"])
        .1;
    assert!(status.contains("Active: active (running)"), "{status}");
    let idle = format!(
        "Status: \"idle; next backup {}\"",
        felhom_agent::schedule::format_run(
            latest + jiff::SignedDuration::from_hours(24),
            &TimeZone::UTC
        )
    );
    wait_until(
        "the idle STATUS= line",
        Duration::from_secs(10),
        || {
            ct.run(&["systemctl", "status", "--no-pager", "felhom-agent"])
                .1
                .contains(&idle)
        },
        || {
            ct.run(&["systemctl", "status", "--no-pager", "felhom-agent"])
                .1
        },
    );
    let (code, body) = ct.get("/healthz");
    assert_eq!(code, "200", "{body}");
    let pid = ct.prop("MainPID");
    assert_ne!(pid, "0");

    // Stop: clean exit through SIGTERM, nothing left.
    ct.must(&["systemctl", "stop", "felhom-agent"]);
    assert_eq!(ct.prop("ActiveState"), "inactive");
    assert_eq!(ct.prop("Result"), "success", "{}", ct.journal());
    assert_eq!(ct.prop("ExecMainStatus"), "0", "{}", ct.journal());
    let journal = ct.journal();
    assert!(!journal.contains("Failed with result"), "{journal}");

    // Purge: files, state, token and enablement gone; no process left.
    ct.must(&["systemctl", "start", "felhom-agent"]);
    assert_eq!(ct.prop("ActiveState"), "active");
    let out = ct.must(&["dpkg", "--purge", "felhom-agent"]);
    eprintln!("dpkg --purge:\n{out}");
    let (running, ps) = ct.run(&["pgrep", "-x", "felhom-agent"]);
    assert!(!running, "a felhom-agent process survived the purge: {ps}");
    for f in [
        "/usr/bin/felhom-agent",
        "/usr/lib/systemd/system/felhom-agent.service",
        "/etc/systemd/system/multi-user.target.wants/felhom-agent.service",
        "/etc/felhom-agent",
        "/var/lib/felhom-agent",
        "/usr/share/doc/felhom-agent",
    ] {
        assert!(!ct.path(f).exists(), "{f} left after purge");
    }
    let (ok, _) = ct.run(&["dpkg", "-s", "felhom-agent"]);
    assert!(!ok, "dpkg still knows the package");
    drop(ct);
    sim.shutdown();
    drop(net);
    eprintln!("tests/package.rs: passed in {:.1?}", started.elapsed());
}

/// docs/configuration.md documents every key of the real config structs, as `` `section.key` ``.
#[test]
fn configuration_md_documents_every_config_key() {
    let doc = std::fs::read_to_string(root_dir().join("docs/configuration.md")).unwrap();
    let missing: Vec<&str> = felhom_agent::config::documented_keys()
        .into_iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented in docs/configuration.md: {missing:?}"
    );
}
