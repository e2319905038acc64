//! The PVE token secret (and other bearer secrets read from files).
//!
//! Invariants: a [`Secret`] never prints its content (`Debug`/`Display` show `[redacted]`) and is
//! not `Serialize`; secret files must not be accessible by group/other; no error ever contains
//! the file's content.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{ConfigError, PVE_TOKEN_CREDENTIAL, PveConfig};

/// A secret string. The only way to see it is [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for building the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Loads the PVE token secret: from `pve.token-secret-file` when set, else from the systemd
/// credential `$CREDENTIALS_DIRECTORY/pve-token` (`credentials_dir` is that directory, if any).
pub fn load_secret(cfg: &PveConfig, credentials_dir: Option<&Path>) -> Result<Secret, ConfigError> {
    match (&cfg.token_secret_file, credentials_dir) {
        (Some(path), _) => read_secret_file(path),
        (None, Some(dir)) => {
            let path = dir.join(PVE_TOKEN_CREDENTIAL);
            if !path.exists() {
                return Err(ConfigError::NoSecret {
                    reason: format!("the credentials directory has no {}", path.display()),
                });
            }
            read_secret_file(&path)
        }
        (None, None) => Err(ConfigError::NoSecret {
            reason: "no systemd credentials directory is set ($CREDENTIALS_DIRECTORY)".into(),
        }),
    }
}

/// Reads a secret file: refuses group/other-accessible modes, strips one trailing `\n` or
/// `\r\n`, refuses empty content, non-UTF-8 and whitespace or control characters.
pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecureSecret {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let bad = |message: &str| ConfigError::BadSecret {
        path: path.to_path_buf(),
        message: message.into(),
    };
    let Ok(mut text) = String::from_utf8(bytes) else {
        return Err(bad("is not valid UTF-8"));
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(bad("is empty"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "contains whitespace or control characters (only one trailing newline is allowed)",
        ));
    }
    Ok(Secret(text))
}
