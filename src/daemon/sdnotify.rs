//! The systemd notification protocol (`sd_notify(3)`), without libsystemd: one datagram of
//! `KEY=value` lines sent to the `AF_UNIX` socket named by `$NOTIFY_SOCKET` — a filesystem path,
//! or an abstract socket when the name starts with `@`. Also the watchdog settings
//! (`$WATCHDOG_USEC`, `$WATCHDOG_PID`).
//!
//! Invariants: without `$NOTIFY_SOCKET` every send is a no-op (the daemon runs the same under a
//! terminal); a failed send is logged once per message kind at debug level and never fatal;
//! messages are single datagrams, never split.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; `None` target when the service manager did not ask for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

/// Parses `$NOTIFY_SOCKET`: `@name` is the abstract socket `name`, an absolute path is a path.
/// Anything else (empty, relative) is refused, as libsystemd does.
pub fn parse_notify_socket(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return SocketAddr::from_abstract_name(name.as_bytes());
    }
    if value.starts_with('/') {
        return SocketAddr::from_pathname(value);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("NOTIFY_SOCKET={value:?} is neither an absolute path nor an @abstract name"),
    ))
}

/// The watchdog interval systemd expects pings within: `$WATCHDOG_USEC`, honoured only when
/// `$WATCHDOG_PID` is unset or names this process. `None` when absent, zero or malformed.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(p) = pid
        && p.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a malformed value is logged and notifications are disabled.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::disabled();
        };
        let value = value.to_string_lossy();
        match parse_notify_socket(&value).and_then(|addr| Ok((UnixDatagram::unbound()?, addr))) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                tracing::warn!("systemd notifications disabled: {e}");
                Notifier::disabled()
            }
        }
    }

    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `msg` (newline-separated `KEY=value` assignments) as one datagram.
    pub fn send(&self, msg: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            tracing::debug!(
                "sd_notify {:?} failed: {e}",
                msg.split('=').next().unwrap_or("")
            );
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Asks for `extra` more time to stop (relative to now; re-sent while waiting).
    pub fn extend_timeout(&self, extra: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()));
    }

    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names() {
        use std::os::linux::net::SocketAddrExt;
        let a = parse_notify_socket("@felhom/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"felhom/notify"[..]));
        assert!(a.as_pathname().is_none());
        let p = parse_notify_socket("/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let e = parse_notify_socket("relative/sock").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NOTIFY_SOCKET=\"relative/sock\" is neither an absolute path nor an @abstract name"
        );
        assert!(parse_notify_socket("").is_err());
    }

    #[test]
    fn watchdog_settings() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn sends_one_datagram_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("felhom-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), addr)),
        };
        n.ready("idle");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=idle");
        Notifier::disabled().ready("nowhere"); // a no-op, not a panic
    }
}
