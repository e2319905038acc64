//! Pure parsers for single configuration values (durations, fingerprints, token ids, URLs, cron
//! schedules, PVE identifiers, snapshot prefixes and markers).
//!
//! Each returns the validated value or a message saying what is valid. Messages never repeat a
//! value that may contain a secret (a token id with `=` in it is not echoed).

use std::time::Duration;

use super::{MAX_SNAPSHOT_MARKER_LEN, Schedule};
use crate::snapshots::naming::MAX_PREFIX_LEN;

/// A guest VMID: 100 to 999999999 (PVE's `pve-vmid`).
pub fn check_vmid(n: i64) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| (100..=999_999_999).contains(n))
        .ok_or_else(|| format!("VMID {n} is out of range: expected 100 to 999999999"))
}

/// `snapshots.prefix`: an ASCII letter, then letters, digits, `-` or `_`, at most
/// [`MAX_PREFIX_LEN`] characters, so `<prefix>-YYYYMMDDtHHMMSSz` is a valid PVE snapshot name
/// (`pve-configid`, at most 40 characters).
pub fn check_snapshot_prefix(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(
            "must not be empty: snapshots are named <prefix>-YYYYMMDDtHHMMSSz, e.g. \
             prefix = \"felhom\""
                .into(),
        );
    }
    let len = s.chars().count();
    if len > MAX_PREFIX_LEN {
        return Err(format!(
            "prefix {s:?} is {len} characters long: at most {MAX_PREFIX_LEN}, so that \
             <prefix>-YYYYMMDDtHHMMSSz fits PVE's 40-character snapshot names"
        ));
    }
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
        return Err(format!(
            "prefix {s:?} must start with a letter and contain only letters, digits, '-' and \
             '_' (PVE snapshot names)"
        ));
    }
    Ok(())
}

/// `snapshots.description`: the ownership marker. Non-empty (not only whitespace), one line, no
/// control characters, at most [`MAX_SNAPSHOT_MARKER_LEN`] characters.
pub fn check_snapshot_marker(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty: it is how the agent recognises its own snapshots".into());
    }
    if s.contains(['\n', '\r']) {
        return Err("must be a single line".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if s.chars().count() > MAX_SNAPSHOT_MARKER_LEN {
        return Err(format!(
            "is longer than {MAX_SNAPSHOT_MARKER_LEN} characters"
        ));
    }
    Ok(())
}

/// Parses a humane duration: one or more `<integer><unit>` groups, units `d`, `h`, `m`, `s`, each
/// at most once and largest first ("30s", "2m", "6h", "1h30m", "1d"). `"0s"` is accepted; callers
/// that need a positive value check it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let bad = |why: &str| {
        format!(
            "invalid duration {s:?} ({why}): expected a number followed by a unit d, h, m or s, \
             largest unit first, e.g. \"30s\", \"2m\", \"6h\", \"1h30m\", \"1d\""
        )
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut next_unit = 0; // index into UNITS of the smallest unit still allowed to come
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        let Some(unit) = rest[digits..].chars().next() else {
            return Err(bad("missing unit after the last number"));
        };
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(bad(&format!("unknown unit {unit:?}")));
        };
        if pos < next_unit {
            return Err(bad("units must appear once each, largest first"));
        }
        next_unit = pos + 1;
        total = number
            .checked_mul(UNITS[pos].1)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| bad("too large"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Parses a SHA-256 certificate fingerprint: 32 colon-separated hex byte pairs (`AA:BB:…`, the
/// form PVE shows) or 64 plain hex digits, any letter case.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let bad = |why: String| {
        format!(
            "invalid SHA-256 fingerprint ({why}): expected 32 colon-separated hex bytes \
             (AA:BB:…:FF, as shown by `pvenode cert info`) or 64 hex digits"
        )
    };
    let hex: String = if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 32 {
            return Err(bad(format!("found {} colon-separated groups", parts.len())));
        }
        if let Some(p) = parts.iter().find(|p| p.len() != 2) {
            return Err(bad(format!("group {p:?} is not two hex digits")));
        }
        parts.concat()
    } else {
        if s.len() != 64 {
            return Err(bad(format!("found {} characters", s.chars().count())));
        }
        s.to_owned()
    };
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = &hex
            .get(2 * i..2 * i + 2)
            .ok_or_else(|| bad("not hex".into()))?;
        *byte = u8::from_str_radix(pair, 16)
            .ok()
            .filter(|_| pair.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad(format!("{pair:?} is not hex")))?;
    }
    Ok(out)
}

/// Checks `USER@REALM!TOKENNAME` (pve-access-control: user `[^\s:/]+`, realm and token name
/// `[A-Za-z][A-Za-z0-9.\-_]+`).
pub fn check_token_id(s: &str) -> Result<(), String> {
    const SHAPE: &str = "expected USER@REALM!TOKENNAME, e.g. \"felhom-ctl@pve!ctl\"";
    if s.contains('=') {
        return Err(
            "must not contain '=': this looks like a whole token including its secret \
                    (value not shown); put only USER@REALM!TOKENNAME here and the secret into \
                    pve.token-secret-file"
                .into(),
        );
    }
    let Some((userid, name)) = s.rsplit_once('!') else {
        return Err(format!(
            "invalid API token id {s:?}: missing '!TOKENNAME'; {SHAPE}"
        ));
    };
    let Some((user, realm)) = userid.rsplit_once('@') else {
        return Err(format!(
            "invalid API token id {s:?}: missing '@REALM'; {SHAPE}"
        ));
    };
    if user.is_empty()
        || user
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '/')
    {
        return Err(format!(
            "invalid API token id {s:?}: user name must be non-empty without whitespace, ':' or \
             '/'; {SHAPE}"
        ));
    }
    for (what, v) in [("realm", realm), ("token name", name)] {
        if !is_pve_name(v) {
            return Err(format!(
                "invalid API token id {s:?}: {what} {v:?} must start with a letter followed by at \
                 least one letter, digit, '.', '-' or '_'; {SHAPE}"
            ));
        }
    }
    Ok(())
}

fn is_pve_name(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && v.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Validates the PVE API base URL and returns it normalised as `https://host[:port]`.
pub fn parse_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| {
        format!(
            "invalid URL {s:?} ({e}): expected the API base, e.g. \"https://pve1.example:8006\""
        )
    })?;
    if url.scheme() != "https" {
        return Err(format!(
            "URL {s:?} must use https:// (TLS is always verified; there is no insecure mode)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {s:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "URL must not contain credentials; use pve.token-id and pve.token-secret-file".into(),
        );
    }
    let path = url.path().trim_end_matches('/');
    if path == "/api2/json" {
        return Err(format!(
            "URL {s:?} must be the API base without /api2/json (it is appended), e.g. \"{}\"",
            url.origin().ascii_serialization()
        ));
    }
    if !path.is_empty() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "URL {s:?} must not have a path, query or fragment: expected e.g. \"https://pve1.example:8006\""
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// PVE storage id (`pve-storage-id`: `[a-z][a-z0-9\-_.]*[a-z0-9]`, case-insensitive).
pub fn check_storage_id(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid storage ID {s:?}: expected a letter, then letters, digits, '-', '_' or '.', \
             ending with a letter or digit (the ID shown under Datacenter → Storage)"
        ))
    }
}

/// Parses a 5-field cron expression or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`).
/// Only the shape is checked (field count, characters, numeric ranges, steps); `""` is handled by
/// the caller (it disables the schedule).
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let expand = match s.trim() {
        "@hourly" => Some("0 * * * *"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@monthly" => Some("0 0 1 * *"),
        other if other.starts_with('@') => {
            return Err(format!(
                "unknown schedule macro {other:?}: expected @hourly, @daily, @weekly or @monthly, \
                 a 5-field cron expression, or \"\" to disable"
            ));
        }
        _ => None,
    };
    let fields: Vec<&str> = expand.unwrap_or(s).split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "invalid schedule {s:?}: found {} fields, expected 5 (minute hour day-of-month month \
             day-of-week, e.g. \"0 2 * * *\"), @hourly/@daily/@weekly/@monthly, or \"\" to disable",
            fields.len()
        ));
    }
    const SPECS: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day-of-month", 1, 31, &[]),
        (
            "month",
            1,
            12,
            &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
        ),
        (
            "day-of-week",
            0,
            7,
            &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        ),
    ];
    for (field, (what, lo, hi, names)) in fields.iter().zip(SPECS) {
        check_cron_field(field, lo, hi, names).map_err(|why| {
            format!("invalid schedule {s:?}: {what} field {field:?}: {why} (allowed {lo}-{hi})")
        })?;
    }
    Ok(Schedule {
        text: s.trim().to_owned(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    })
}

fn check_cron_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(), String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            // Month names start at 1, weekday names at 0 (sun).
            return Ok(i as u32 + lo);
        }
        let n: u32 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        if n < lo || n > hi {
            return Err(format!("{n} is out of range"));
        }
        Ok(n)
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (item, None),
        };
        if let Some(st) = step {
            match st.parse::<u32>() {
                Ok(n) if n > 0 => {}
                _ => return Err(format!("step {st:?} must be a positive number")),
            }
        }
        if range == "*" {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("range {range:?} is backwards"));
                }
            }
            None if range.is_empty() => return Err("empty list item".into()),
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}
