//! Network namespaces for the fault cases: a server namespace (pve-sim listens on 10.77.0.1)
//! and a client namespace (the agent, 10.77.0.2), joined by a veth pair. Faults are iptables
//! rules and link state inside the client namespace only, so parallel tests never interfere.
//! Names are unique per process and test (pid + counter, ≤ 15 characters); [`Drop`] deletes
//! both namespaces (which destroys the veth pair and every rule with them).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const SRV_IP: &str = "10.77.0.1";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct NetPair {
    pub srv: String,
    pub cli: String,
    veth_cli: String,
    srv_ns: File,
    cli_ns: File,
}

/// Why fault injection cannot run here, if it cannot. A skip is printed loudly; with
/// `FELHOM_REQUIRE_NETNS=1` (scripts/test sets it) it is a failure instead.
pub fn skip_or_fail(reason: &str) {
    let line = format!("SKIPPED ({reason})");
    eprintln!("!!! {line}");
    if std::env::var("FELHOM_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{line}, but FELHOM_REQUIRE_NETNS=1 requires this test to run");
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetPair {
    /// Creates the namespaces and the veth pair; `Err` is the reason to skip.
    pub fn create() -> Result<NetPair, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!(
                    "{tool} is not installed (apt-get install -y iproute2 iptables)"
                ));
            }
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{}", std::process::id(), n);
        let srv = format!("fs{tag}");
        let cli = format!("fc{tag}");
        let (veth_srv, veth_cli) = (format!("vs{tag}"), format!("vc{tag}"));
        sh(&["ip", "netns", "add", &srv])?;
        if let Err(e) = sh(&["ip", "netns", "add", &cli]) {
            let _ = sh(&["ip", "netns", "delete", &srv]);
            return Err(e);
        }
        let open = |name: &str| {
            File::open(format!("/run/netns/{name}")).map_err(|e| format!("/run/netns/{name}: {e}"))
        };
        let setup = || -> Result<NetPair, String> {
            sh(&[
                "ip", "link", "add", &veth_srv, "type", "veth", "peer", "name", &veth_cli,
            ])?;
            sh(&["ip", "link", "set", &veth_srv, "netns", &srv])?;
            sh(&["ip", "link", "set", &veth_cli, "netns", &cli])?;
            sh(&[
                "ip",
                "-n",
                &srv,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                &veth_srv,
            ])?;
            sh(&[
                "ip",
                "-n",
                &cli,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &veth_cli,
            ])?;
            for (ns, dev) in [(&srv, &veth_srv), (&cli, &veth_cli)] {
                sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
                sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            }
            // iptables must work inside the namespace (nf_tables or legacy).
            sh(&["ip", "netns", "exec", &cli, "iptables", "-S"])?;
            Ok(NetPair {
                srv: srv.clone(),
                cli: cli.clone(),
                veth_cli: veth_cli.clone(),
                srv_ns: open(&srv)?,
                cli_ns: open(&cli)?,
            })
        };
        setup().inspect_err(|_| {
            let _ = sh(&["ip", "netns", "delete", &srv]);
            let _ = sh(&["ip", "netns", "delete", &cli]);
        })
    }

    fn iptables(&self, args: &[&str]) {
        let mut a = vec!["ip", "netns", "exec", &self.cli, "iptables"];
        a.extend_from_slice(args);
        sh(&a).unwrap();
    }

    /// Drops every packet the client sends to the server (connects and requests time out).
    pub fn blackhole(&self) {
        self.iptables(&["-A", "OUTPUT", "-d", SRV_IP, "-j", "DROP"]);
    }

    /// Answers every TCP packet the client sends to the server with a RST.
    pub fn reset(&self) {
        self.iptables(&[
            "-A",
            "OUTPUT",
            "-d",
            SRV_IP,
            "-p",
            "tcp",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]);
    }

    /// Removes every fault rule.
    pub fn restore(&self) {
        self.iptables(&["-F", "OUTPUT"]);
    }

    pub fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        sh(&["ip", "-n", &self.cli, "link", "set", &self.veth_cli, state]).unwrap();
    }

    /// Makes `cmd` run inside the client namespace.
    pub fn enter_cli(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.cli_ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd stays open until exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs `f` on a fresh thread inside the server (`srv = true`) or client namespace; sockets
    /// created there stay in that namespace whichever thread uses them later.
    pub fn within<T: Send + 'static>(
        &self,
        srv: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let fd = if srv { &self.srv_ns } else { &self.cli_ns };
        let fd = fd.try_clone().unwrap();
        std::thread::spawn(move || {
            // SAFETY: only this thread changes namespace.
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "delete", &self.cli]);
        let _ = sh(&["ip", "netns", "delete", &self.srv]);
    }
}
