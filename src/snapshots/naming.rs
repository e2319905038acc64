//! Names and ownership of the agent's own snapshots. Pure.
//!
//! A name is `<prefix>-<UTC timestamp>` with the timestamp as `YYYYMMDDtHHMMSSz` (lower case),
//! e.g. `felhom-20261123t150000z`. PVE's `pve-configid` rule is `^[a-z][a-z0-9_-]+$` (case
//! insensitive) with at most 40 characters, and `current`, `pending` (qemu) and `vzdump` (lxc)
//! are reserved (reference §4). [`Prefix::new`] refuses any prefix that could make a name break
//! those rules, so every name [`Prefix::name_at`] builds is valid.
//!
//! Ownership needs both: the name parses as `<prefix>-<timestamp>` **and** the description
//! carries the marker. A user's snapshot named like ours without the marker is not ours.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// Default description marker.
pub const DEFAULT_MARKER: &str = "[felhom-agent]";
/// PVE's maximum snapshot name length.
pub const MAX_NAME_LEN: usize = 40;
/// Length of `-YYYYMMDDtHHMMSSz`.
const SUFFIX_LEN: usize = 17;
/// Longest prefix that still fits.
pub const MAX_PREFIX_LEN: usize = MAX_NAME_LEN - SUFFIX_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("[snapshots] prefix must not be empty")]
    Empty,
    #[error(
        "[snapshots] prefix '{0}' is too long: at most {MAX_PREFIX_LEN} characters, so that '<prefix>-YYYYMMDDtHHMMSSz' fits PVE's 40-character snapshot names"
    )]
    TooLong(String),
    #[error(
        "[snapshots] prefix '{0}' is not usable in PVE snapshot names: it must start with a letter and contain only letters, digits, '-' and '_'"
    )]
    Charset(String),
    #[error(
        "[snapshots] description marker must be non-empty, a single line and at most 200 characters"
    )]
    Marker,
}

/// A validated snapshot name prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Prefix(String);

impl Prefix {
    pub fn new(s: &str) -> Result<Prefix, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_PREFIX_LEN {
            return Err(NameError::TooLong(s.to_string()));
        }
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NameError::Charset(s.to_string()));
        }
        Ok(Prefix(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The snapshot name for `at` (UTC, whole seconds).
    pub fn name_at(&self, at: Timestamp) -> String {
        let dt = at.to_zoned(TimeZone::UTC).datetime();
        format!("{}-{}", self.0, dt.strftime("%Y%m%dt%H%M%Sz"))
    }

    /// The timestamp encoded in `name` if it is exactly `<prefix>-YYYYMMDDtHHMMSSz`
    /// (`t`/`z` in either case, as PVE names are case-insensitive).
    pub fn parse(&self, name: &str) -> Option<Timestamp> {
        let rest = name.strip_prefix(&self.0)?.strip_prefix('-')?;
        if rest.len() != SUFFIX_LEN - 1 || !rest.is_ascii() {
            return None;
        }
        let (date, time) = (&rest[..8], &rest[9..15]);
        let sep_ok = rest[8..9].eq_ignore_ascii_case("t") && rest[15..].eq_ignore_ascii_case("z");
        if !sep_ok || !date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let dt = DateTime::strptime("%Y%m%d%H%M%S", format!("{date}{time}")).ok()?;
        dt.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
    }
}

/// Validates a description marker.
pub fn check_marker(marker: &str) -> Result<(), NameError> {
    if marker.trim().is_empty() || marker.contains(['\n', '\r']) || marker.len() > 200 {
        return Err(NameError::Marker);
    }
    Ok(())
}

/// Whether a PVE snapshot name is valid (`pve-configid`, ≤ 40) and not reserved for any guest
/// type.
pub fn is_valid_snapshot_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name != "current"
        && name != "vzdump"
        && !name.eq_ignore_ascii_case("pending")
}

/// Ownership of one snapshot: `Ok(())` if ours, else why not.
pub fn ownership(
    prefix: &Prefix,
    marker: &str,
    name: &str,
    description: &str,
) -> Result<(), String> {
    if name == "current" {
        return Err("not ours: PVE's current state".into());
    }
    if name == "vzdump" {
        return Err("not ours: vzdump's temporary backup snapshot".into());
    }
    if prefix.parse(name).is_none() {
        return Err(format!(
            "not ours: name is not {}-YYYYMMDDtHHMMSSz",
            prefix.as_str()
        ));
    }
    if !description.contains(marker) {
        return Err(format!("not ours: description lacks the marker {marker}"));
    }
    Ok(())
}
