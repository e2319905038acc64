//! Builds a [`Config`] from TOML text by walking toml's spanned document tree.
//!
//! Invariants: keys are checked against [`KEYS`] before any value is read, so the first error
//! reported is the first unknown key in document order; value errors point at the value, missing
//! keys at their section header (or 1:1 when the section is absent), unknown keys at the key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::values::{
    check_storage_id, check_token_id, parse_duration, parse_fingerprint, parse_schedule, parse_url,
};
use super::{
    BackupConfig, BackupMode, Command, Compress, Config, ConfigError, GuestConfig, HealthConfig,
    Hook, KEYS, OnError, PveConfig, QuiesceConfig, Release, StateConfig,
};

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
    Ok(Config {
        pve: build_pve(&section("pve")?)?,
        guest: build_guest(&section("guest")?)?,
        backup: build_backup(&section("backup")?)?,
        quiesce: build_quiesce(&section("quiesce")?)?,
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
        Some((n, span)) => Some(
            u32::try_from(n)
                .ok()
                .filter(|n| (100..=999_999_999).contains(n))
                .ok_or_else(|| {
                    s.err_at(
                        "vmid",
                        span,
                        format!("VMID {n} is out of range: expected 100 to 999999999"),
                    )
                })?,
        ),
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
    let schedule = match s.string("schedule")? {
        None => Some(parse_schedule("0 2 * * *").map_err(|m| s.err_at("schedule", 0..0, m))?),
        Some(("", _)) => None,
        Some((v, span)) => Some(parse_schedule(v).map_err(|m| s.err_at("schedule", span, m))?),
    };
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
        schedule,
        timezone,
        splay: s.duration("splay", Duration::from_secs(15 * 60), false)?,
        catch_up: s.duration("catch-up", Duration::from_secs(12 * 3600), false)?,
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
    })
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

/// One table of the document with its keys already checked against the schema.
struct Section<'a, 'i> {
    ctx: &'a Ctx<'a>,
    /// Dotted display name ("" for the root, "quiesce.hooks[0]" for an array entry).
    name: String,
    /// Where "missing key" errors point.
    span: Span,
    entries: Vec<(&'a str, Span, &'a Val<'i>)>,
}

impl<'a, 'i> Section<'a, 'i> {
    fn open(
        ctx: &'a Ctx<'a>,
        name: String,
        schema: &str,
        span: Span,
        table: &'a DeTable<'i>,
    ) -> Result<Self, ConfigError> {
        let mut entries: Vec<(&'a str, Span, &'a Val<'i>)> = table
            .iter()
            .map(|(k, v)| (k.get_ref().as_ref(), k.span(), v))
            .collect();
        entries.sort_by_key(|(_, span, _)| span.start);
        let allowed = children(schema);
        let section = Self {
            ctx,
            name,
            span,
            entries,
        };
        if let Some((key, span, value)) =
            section.entries.iter().find(|(k, ..)| !allowed.contains(k))
        {
            let what = if schema.is_empty() && matches!(value.get_ref(), DeValue::Table(_)) {
                "section"
            } else {
                "key"
            };
            let hint = allowed
                .iter()
                .map(|a| (distance(key, a), a))
                .filter(|(d, a)| *d <= 2.max(a.len() / 3))
                .min()
                .map_or(String::new(), |(_, a)| format!(" (did you mean {a:?}?)"));
            return Err(section.err_at(
                key,
                span.clone(),
                format!(
                    "unknown {what} {key:?}{hint}; valid {what}s here: {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(section)
    }

    fn empty(ctx: &'a Ctx<'a>, name: String) -> Self {
        Self {
            ctx,
            name,
            span: 0..0,
            entries: Vec::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn err_at(&self, key: &str, span: Span, message: impl Into<String>) -> ConfigError {
        self.ctx.invalid(self.key(key), span, message)
    }

    fn missing(&self, key: &str, message: &str) -> ConfigError {
        self.err_at(key, self.span.clone(), message)
    }

    fn required<T>(&self, key: &str, value: Option<T>, what: &str) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.missing(key, &format!("missing required key: {what}")))
    }

    fn get(&self, key: &str) -> Option<&'a Val<'i>> {
        self.entries
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|(_, _, v)| *v)
    }

    fn wrong_type(&self, key: &str, v: &Val<'_>, expected: &str) -> ConfigError {
        self.err_at(
            key,
            v.span(),
            format!("expected {expected}, found {}", v.get_ref().type_str()),
        )
    }

    fn table(&self, key: &str) -> Result<Option<Section<'a, 'i>>, ConfigError> {
        let Some((_, key_span, v)) = self.entries.iter().find(|(k, ..)| *k == key) else {
            return Ok(None);
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                let schema = self.key(key);
                Section::open(self.ctx, schema.clone(), &schema, key_span.clone(), t).map(Some)
            }
            _ => Err(self.wrong_type(key, v, &format!("a table ([{}])", self.key(key)))),
        }
    }

    fn array_of_tables(&self, key: &str) -> Result<Vec<Section<'a, 'i>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let expected = format!("an array of tables ([[{}]])", self.key(key));
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong_type(key, v, &expected));
        };
        let schema = self.key(key);
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.get_ref() {
                DeValue::Table(t) => {
                    Section::open(self.ctx, format!("{schema}[{i}]"), &schema, item.span(), t)
                }
                _ => Err(self.wrong_type(&format!("{key}[{i}]"), item, "a table")),
            })
            .collect()
    }

    fn string(&self, key: &str) -> Result<Option<(&'a str, Span)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Ok(Some((s.as_ref(), v.span()))),
                _ => Err(self.wrong_type(key, v, "a string")),
            },
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => Ok(Some(*b)),
                _ => Err(self.wrong_type(key, v, "true or false")),
            },
        }
    }

    fn integer(&self, key: &str) -> Result<Option<(i64, Span)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                    .map(|n| Some((n, v.span())))
                    .map_err(|_| self.err_at(key, v.span(), "integer out of range")),
                _ => Err(self.wrong_type(key, v, "an integer")),
            },
        }
    }

    fn string_array(&self, key: &str) -> Result<Option<(Vec<String>, Span)>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an array of strings"));
        };
        let strings = items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                _ => Err(self.wrong_type(key, item, "a string")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some((strings, v.span())))
    }

    /// A string value run through `f`; `f`'s message is reported at the value.
    fn parsed<T>(
        &self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some((s, span)) => f(s).map(Some).map_err(|m| self.err_at(key, span, m)),
        }
    }

    fn choice<T: Copy>(
        &self,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let value = self.parsed(key, |v| {
            choices
                .iter()
                .find(|(n, _)| *n == v)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    format!(
                        "unknown variant {v:?}, expected one of {}",
                        names.join(", ")
                    )
                })
        })?;
        Ok(value.unwrap_or(default))
    }

    fn duration(
        &self,
        key: &str,
        default: Duration,
        positive: bool,
    ) -> Result<Duration, ConfigError> {
        let d = self.parsed(key, |v| {
            let d = parse_duration(v)?;
            if positive && d.is_zero() {
                return Err(format!("duration {v:?} must be greater than zero"));
            }
            Ok(d)
        })?;
        Ok(d.unwrap_or(default))
    }

    fn abs_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        self.parsed(key, |v| {
            if v.starts_with('/') {
                Ok(PathBuf::from(v))
            } else {
                Err(format!("path {v:?} must be absolute (start with /)"))
            }
        })
    }
}
