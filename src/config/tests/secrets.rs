//! Tests of token-secret loading: modes, trimming, redaction, systemd credential fallback.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{min, ok};
use crate::config::*;

/// A unique directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "felhom-config-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pve_with_secret_file(path: Option<PathBuf>) -> PveConfig {
    let mut c = ok(&min("")).pve;
    c.token_secret_file = path;
    c
}

const SECRET: &str = "5f0e9d2c-1b3a-4c7d-8e6f-a1b2c3d4e5f6";

#[test]
fn secret_is_read_trimmed_and_redacted() {
    let dir = TempDir::new("secret-ok");
    let p = dir.file("token", &format!("{SECRET}\n"), 0o600);
    let s = load_secret(&pve_with_secret_file(Some(p)), None).unwrap();
    assert_eq!(s.expose(), SECRET);
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");

    let p = dir.file("crlf", &format!("{SECRET}\r\n"), 0o400);
    assert_eq!(read_secret_file(&p).unwrap().expose(), SECRET);
}

#[test]
fn insecure_secret_file_is_refused() {
    let dir = TempDir::new("secret-mode");
    for mode in [0o644, 0o640, 0o604, 0o610, 0o601] {
        let p = dir.file("token", SECRET, mode);
        let e = load_secret(&pve_with_secret_file(Some(p.clone())), None).unwrap_err();
        assert!(
            matches!(&e, ConfigError::InsecureSecret { mode: m, .. } if *m == mode),
            "{e:?}"
        );
        let shown = p.display();
        assert_eq!(
            e.to_string(),
            format!(
                "token secret file {shown} is readable by group/other (mode {mode:04o}); run: chmod 600 {shown}"
            )
        );
        assert!(!format!("{e} {e:?}").contains(SECRET));
    }
    let p = dir.file("token", SECRET, 0o644);
    assert!(
        load_secret(&pve_with_secret_file(Some(p)), None)
            .unwrap_err()
            .to_string()
            .contains("(mode 0644)")
    );
}

#[test]
fn bad_secret_contents_are_refused_without_echo() {
    let dir = TempDir::new("secret-bad");
    let cases = [
        ("", "is empty"),
        ("\n", "is empty"),
        (
            &format!("{SECRET}\n\n") as &str,
            "contains whitespace or control characters (only one trailing newline is allowed)",
        ),
        (
            &format!(" {SECRET}"),
            "contains whitespace or control characters (only one trailing newline is allowed)",
        ),
        (
            &format!("{SECRET}\nsecond"),
            "contains whitespace or control characters (only one trailing newline is allowed)",
        ),
    ];
    for (content, why) in cases {
        let p = dir.file("token", content, 0o600);
        let e = read_secret_file(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("token secret file {}: {why}", p.display())
        );
        assert!(!format!("{e} {e:?}").contains(SECRET), "{e:?}");
    }
    let p = dir.0.join("bin");
    std::fs::write(&p, b"\xff\xfe").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        read_secret_file(&p).unwrap_err().to_string(),
        format!("token secret file {}: is not valid UTF-8", p.display())
    );
}

#[test]
fn secret_from_systemd_credential_when_key_absent() {
    let dir = TempDir::new("secret-cred");
    let cfg = pve_with_secret_file(None);
    let e = load_secret(&cfg, Some(&dir.0)).unwrap_err();
    assert!(matches!(e, ConfigError::NoSecret { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "no PVE token secret: pve.token-secret-file is not set and the credentials directory \
             has no {}/pve-token; set pve.token-secret-file or pass the secret as systemd \
             credential pve-token (LoadCredential=pve-token:/path/to/secret)",
            dir.0.display()
        )
    );
    dir.file("pve-token", SECRET, 0o400);
    assert_eq!(load_secret(&cfg, Some(&dir.0)).unwrap().expose(), SECRET);
    assert!(matches!(
        load_secret(&cfg, None),
        Err(ConfigError::NoSecret { .. })
    ));

    // The key wins over the credential.
    let other = dir.file("file", "from-file", 0o600);
    let cfg = pve_with_secret_file(Some(other));
    assert_eq!(
        load_secret(&cfg, Some(&dir.0)).unwrap().expose(),
        "from-file"
    );

    let missing = dir.0.join("missing");
    let e = load_secret(&pve_with_secret_file(Some(missing.clone())), None).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Io { path, .. } if *path == missing),
        "{e:?}"
    );
}

#[test]
fn config_debug_contains_no_secret_material() {
    let dir = TempDir::new("secret-debug");
    let p = dir.file("token", SECRET, 0o600);
    let cfg = pve_with_secret_file(Some(p));
    let secret = load_secret(&cfg, None).unwrap();
    let dump = format!("{cfg:?} {secret:?} {secret}");
    assert!(!dump.contains(SECRET), "{dump}");
}
