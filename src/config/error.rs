//! `ConfigError`: every way loading the configuration or the token secret can fail.
//!
//! Invariants: every error about the configuration document names the file, the dotted key and a
//! 1-based `line:column`; no variant ever carries the content of a secret file.

use std::io;
use std::path::PathBuf;

/// Errors from [`super::load`], [`super::parse`] and [`super::load_secret`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (the configuration, a secret file) could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The document is not valid TOML (or not UTF-8). `key` is a best-effort dotted key of the
    /// line the error is on, or `(document)`.
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// Valid TOML, but a key is unknown, missing, of the wrong type or has an invalid value.
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The secret file can be read by group or other (`mode & 0o077 != 0`).
    #[error(
        "token secret file {path} is readable by group/other (mode {mode:04o}); run: chmod 600 {path}",
        path = path.display()
    )]
    InsecureSecret { path: PathBuf, mode: u32 },
    /// The secret file is empty, not UTF-8, or contains whitespace/control characters. The
    /// message describes the problem without quoting the content.
    #[error("token secret file {}: {message}", path.display())]
    BadSecret { path: PathBuf, message: String },
    /// `pve.token-secret-file` is unset and no systemd credential is available.
    #[error(
        "no PVE token secret: pve.token-secret-file is not set and {reason}; set pve.token-secret-file \
         or pass the secret as systemd credential {cred} (LoadCredential={cred}:/path/to/secret)",
        cred = super::PVE_TOKEN_CREDENTIAL
    )]
    NoSecret { reason: String },
}
