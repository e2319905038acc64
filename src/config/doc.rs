//! Builds a [`Config`] from TOML text by walking toml's spanned document tree.
//! Typed access to one table is [`Section`] (in `section`).
//!
//! Invariants: keys are checked against [`KEYS`] before any value is read, so the first error
//! reported is the first unknown key in document order; value errors point at the value, missing
//! keys at their section header (or 1:1 when the section is absent), unknown keys at the key.
//!
//! The sections of the agent's periodic jobs (`[backup.retention]`, `[snapshots]`,
//! `[self-check]`) are built in [`jobs`].

mod jobs;
mod section;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::values::{check_storage_id, check_token_id, check_vmid, parse_fingerprint, parse_url};
use super::{
    BackupConfig, BackupMode, Command, Compress, Config, ConfigError, DEFAULT_BACKUP_SCHEDULE,
    DEFAULT_MAX_FREEZE, FreezePath, GuestConfig, HealthConfig, Hook, KEYS, MAX_MAX_FREEZE, OnError,
    PveConfig, QuiesceConfig, Release, StateConfig,
};
use section::Section;

type Span = Range<usize>;
type Val<'i> = Spanned<DeValue<'i>>;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

pub fn build(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, path };
    let root = DeTable::parse(text).map_err(|e| ctx.syntax(&e))?;
    let root = Section::open(&ctx, String::new(), "", 0..0, root.get_ref())?;
    let section = |name: &str| -> Result<Section<'_, '_>, ConfigError> {
        Ok(root
            .table(name)?
            .unwrap_or_else(|| Section::empty(&ctx, name.to_owned())))
    };
    let guest = build_guest(&section("guest")?)?;
    Ok(Config {
        pve: build_pve(&section("pve")?)?,
        backup: build_backup(&section("backup")?)?,
        quiesce: build_quiesce(&section("quiesce")?)?,
        snapshots: jobs::build_snapshots(&section("snapshots")?)?,
        self_check: jobs::build_self_check(&section("self-check")?, guest.vmid)?,
        guest,
        state: StateConfig {
            dir: section("state")?.abs_path("dir")?,
        },
        health: build_health(&section("health")?)?,
    })
}

fn build_pve(s: &Section<'_, '_>) -> Result<PveConfig, ConfigError> {
    let url = s.parsed("url", parse_url)?;
    let url = s.required(
        "url",
        url,
        "the PVE API base, e.g. url = \"https://pve1.example:8006\"",
    )?;
    let token_id = s.parsed("token-id", |v| check_token_id(v).map(|()| v.to_owned()))?;
    let token_id = s.required(
        "token-id",
        token_id,
        "the API token id, e.g. token-id = \"felhom-ctl@pve!ctl\"",
    )?;
    let token_secret_file = s.abs_path("token-secret-file")?;
    let fingerprint = s.parsed("fingerprint", parse_fingerprint)?;
    let ca_file = s.abs_path("ca-file")?;
    if fingerprint.is_none() && ca_file.is_none() {
        return Err(s.missing(
            "fingerprint",
            "TLS needs pve.fingerprint (SHA-256 of the node's certificate, see `pvenode cert \
             info`) or pve.ca-file (e.g. a copy of /etc/pve/pve-root-ca.pem), or both; there is \
             no insecure mode",
        ));
    }
    Ok(PveConfig {
        url,
        token_id,
        token_secret_file,
        fingerprint,
        ca_file,
        timeout: s.duration("timeout", Duration::from_secs(30), true)?,
    })
}

fn build_guest(s: &Section<'_, '_>) -> Result<GuestConfig, ConfigError> {
    let vmid = match s.integer("vmid")? {
        None => None,
        Some((n, span)) => Some(check_vmid(n).map_err(|m| s.err_at("vmid", span, m))?),
    };
    Ok(GuestConfig { vmid })
}

fn build_backup(s: &Section<'_, '_>) -> Result<BackupConfig, ConfigError> {
    let storage = s.parsed("storage", |v| check_storage_id(v).map(|()| v.to_owned()))?;
    let storage = s.required(
        "storage",
        storage,
        "the PVE storage to back up to, e.g. storage = \"pbs-main\"",
    )?;
    let mode = s.choice(
        "mode",
        &[
            ("snapshot", BackupMode::Snapshot),
            ("stop", BackupMode::Stop),
            ("suspend", BackupMode::Suspend),
        ],
        BackupMode::Snapshot,
    )?;
    let compress_choices = [
        ("0", Compress::Off),
        ("1", Compress::On),
        ("gzip", Compress::Gzip),
        ("lzo", Compress::Lzo),
        ("zstd", Compress::Zstd),
    ];
    // vzdump's "0"/"1" are strings in the API; also accept a TOML integer 0 or 1.
    let compress = match s.get("compress") {
        Some(v) if matches!(v.get_ref(), DeValue::Integer(_)) => match s.integer("compress")? {
            Some((0, _)) => Compress::Off,
            Some((1, _)) => Compress::On,
            _ => {
                return Err(s.err_at(
                    "compress",
                    v.span(),
                    "unknown variant, expected one of 0, 1, gzip, lzo, zstd",
                ));
            }
        },
        _ => s.choice("compress", &compress_choices, Compress::Zstd)?,
    };
    let notes_template = s.parsed("notes-template", |v| {
        if v.contains(['\n', '\r']) {
            Err(
                "must be a single line; write \\\\n (an escaped \\n) for a line break in the notes"
                    .into(),
            )
        } else if v.chars().count() > 1024 {
            Err("is longer than 1024 characters (vzdump's limit)".into())
        } else {
            Ok(v.to_owned())
        }
    })?;
    let schedule = s.schedule("schedule", DEFAULT_BACKUP_SCHEDULE)?;
    let timezone = s.parsed("timezone", |v| {
        jiff::tz::TimeZone::get(v).map_err(|e| {
            format!(
                "unknown time zone {v:?} ({e}): expected an IANA name such as \
                 \"Europe/Budapest\" or \"UTC\"; leave the key out to use the system's"
            )
        })
    })?;
    Ok(BackupConfig {
        storage,
        mode,
        compress,
        notes_template: notes_template.filter(|t| !t.is_empty()),
        protected: s.bool("protected")?.unwrap_or(false),
        task_timeout: s.duration("task-timeout", Duration::from_secs(6 * 3600), true)?,
        lockwait_minutes: s.parsed("lockwait", |v| {
            let d = super::values::parse_duration(v)?;
            if d.as_secs() % 60 != 0 {
                return Err(format!(
                    "duration {v:?} is not a whole number of minutes (vzdump's lockwait unit), e.g. \"30m\""
                ));
            }
            Ok(d.as_secs() / 60)
        })?,
        schedule,
        timezone,
        splay: s.duration("splay", Duration::from_secs(15 * 60), false)?,
        catch_up: s.duration("catch-up", Duration::from_secs(12 * 3600), false)?,
        retention: jobs::build_retention(s, "backups")?,
    })
}

fn build_quiesce(s: &Section<'_, '_>) -> Result<QuiesceConfig, ConfigError> {
    let release = s.choice(
        "release",
        &[
            ("consistency-point", Release::ConsistencyPoint),
            ("task-end", Release::TaskEnd),
        ],
        Release::ConsistencyPoint,
    )?;
    let in_stop_mode = s.bool("in-stop-mode")?.unwrap_or(false);
    let fsfreeze = build_fsfreeze(s)?;
    let max_freeze = s.duration("max-freeze", DEFAULT_MAX_FREEZE, true)?;
    if max_freeze > MAX_MAX_FREEZE {
        let span = s.get("max-freeze").map_or(0..0, |v| v.span());
        return Err(s.err_at(
            "max-freeze",
            span,
            format!(
                "{}s is too long: at most {}s (600s = 10m); writers to a frozen filesystem hang \
                 until the thaw",
                max_freeze.as_secs(),
                MAX_MAX_FREEZE.as_secs()
            ),
        ));
    }
    let fsfreeze_force = s.bool("fsfreeze-force")?.unwrap_or(false);
    let mut hooks: Vec<Hook> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for h in &s.array_of_tables("hooks")? {
        let hook = build_hook(h)?;
        if let Some(line) = seen.get(&hook.name) {
            let span = h.get("name").map_or(0..0, |v| v.span());
            return Err(h.err_at(
                "name",
                span,
                format!(
                    "duplicate hook name {:?} (first used on line {line})",
                    hook.name
                ),
            ));
        }
        let line = line_col(s.ctx.text, h.get("name").map_or(0, |v| v.span().start)).0;
        seen.insert(hook.name.clone(), line);
        hooks.push(hook);
    }
    Ok(QuiesceConfig {
        hooks,
        release,
        in_stop_mode,
        fsfreeze,
        max_freeze,
        fsfreeze_force,
    })
}

/// `quiesce.fsfreeze`: unique absolute paths, each remembering where it was written (the
/// mount checks happen at agent start, see [`crate::quiesce::fsfreeze_sys::check_config`]).
fn build_fsfreeze(s: &Section<'_, '_>) -> Result<Vec<FreezePath>, ConfigError> {
    let mut out: Vec<FreezePath> = Vec::new();
    for (v, span) in s.string_items("fsfreeze")?.unwrap_or_default() {
        if !v.starts_with('/') {
            return Err(s.err_at(
                "fsfreeze",
                span,
                format!("path {v:?} must be absolute (start with /)"),
            ));
        }
        let path = crate::quiesce::freeze::normalise(std::path::Path::new(&v));
        if let Some(first) = out.iter().find(|f| f.path == path) {
            return Err(s.err_at(
                "fsfreeze",
                span,
                format!(
                    "{} is listed twice (first on line {})",
                    path.display(),
                    first.line
                ),
            ));
        }
        let (line, column) = line_col(s.ctx.text, span.start);
        out.push(FreezePath {
            path,
            file: s.ctx.path.to_path_buf(),
            line,
            column,
        });
    }
    Ok(out)
}

fn build_hook(h: &Section<'_, '_>) -> Result<Hook, ConfigError> {
    let name = h.parsed("name", |v| {
        if v.trim().is_empty() {
            Err("must not be empty".into())
        } else if v.chars().any(char::is_control) {
            Err("must not contain control characters".into())
        } else {
            Ok(v.to_owned())
        }
    })?;
    let name = h.required("name", name, "a unique hook name, e.g. name = \"app\"")?;
    let shell = h.bool("shell")?.unwrap_or(false);
    let command = |key: &str| -> Result<Option<Command>, ConfigError> {
        let Some((argv, span)) = h.string_array(key)? else {
            return Ok(None);
        };
        let fail = |m: String| Err(h.err_at(key, span.clone(), m));
        if argv.is_empty() {
            return fail("must not be empty; leave the key out instead".into());
        }
        if shell {
            if argv.len() != 1 || argv[0].trim().is_empty() {
                return fail(format!(
                    "with shell = true, {key} must be a one-element array holding the script \
                     run by /bin/sh -c, e.g. [\"systemctl stop app && sync\"]"
                ));
            }
            return Ok(Some(Command::Shell(argv[0].clone())));
        }
        if argv[0].is_empty() {
            return fail("the program (first element) must not be empty".into());
        }
        Ok(Some(Command::Argv(argv)))
    };
    let pre = command("pre")?;
    let post = command("post")?;
    if pre.is_none() && post.is_none() {
        return Err(h.missing(
            "pre",
            "a hook needs pre or post (or both): the command as an argv array, e.g. \
             pre = [\"systemctl\", \"stop\", \"app.service\"]",
        ));
    }
    Ok(Hook {
        name,
        pre,
        post,
        timeout: h.duration("timeout", Duration::from_secs(120), true)?,
        on_error: h.choice(
            "on-error",
            &[("abort", OnError::Abort), ("continue", OnError::Continue)],
            OnError::Abort,
        )?,
    })
}

fn build_health(s: &Section<'_, '_>) -> Result<HealthConfig, ConfigError> {
    let listen = s.parsed("listen", |v| {
        v.parse::<SocketAddr>().map_err(|_| {
            format!(
                "invalid address {v:?}: expected IP:PORT, e.g. \"127.0.0.1:9742\" or \"[::1]:9742\""
            )
        })
    })?;
    let failures = match s.integer("max-consecutive-failures")? {
        None => 2,
        Some((n, span)) => u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            s.err_at(
                "max-consecutive-failures",
                span,
                format!("{n} is out of range: expected an integer of at least 1"),
            )
        })?,
    };
    Ok(HealthConfig {
        listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9742))),
        bearer_token_file: s.abs_path("bearer-token-file")?,
        max_backup_age: s.duration("max-backup-age", Duration::from_secs(26 * 3600), true)?,
        max_consecutive_failures: failures,
    })
}

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, key: String, span: Span, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key,
            line,
            column,
            message: message.into(),
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(self.text, offset);
        ConfigError::Parse {
            path: self.path.to_path_buf(),
            line,
            column,
            key: guess_key(self.text, line),
            message: e.message().trim().replace('\n', "; "),
        }
    }
}

/// Best-effort dotted key for a line of a document that failed to parse: the last table header
/// above it plus the bare key the line starts with.
fn guess_key(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let idx = line.saturating_sub(1).min(lines.len());
    let header = lines[..idx]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            l.trim_matches(|c| c == '[' || c == ']').trim().to_owned()
        })
        .unwrap_or_default();
    let this = lines.get(idx).map_or("", |l| l.trim());
    let key = this.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    match (header.is_empty(), key) {
        (true, Some(k)) => k.to_owned(),
        (false, Some(k)) => format!("{header}.{k}"),
        (false, None) => header,
        (true, None) => "(document)".into(),
    }
}

/// The keys allowed directly under `prefix` ("" = the root), in [`KEYS`] order.
fn children(prefix: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for key in KEYS {
        let rest = if prefix.is_empty() {
            Some(*key)
        } else {
            key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
        };
        if let Some(child) = rest.and_then(|r| r.split('.').next())
            && !out.contains(&child)
        {
            out.push(child);
        }
    }
    out
}

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
