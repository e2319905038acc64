//! The `prune-backups` property string: parsing with PVE's exact error texts, normalization
//! (`validate_prune_backups`), printing, and the vzdump `remove=0` backup limit.
//!
//! Error texts are Perl's `$@` verbatim, trailing newline included. In a 400 response of the API
//! the parameter error reads `"invalid format - " + err` (`JSONSchema::check_prop`).

use std::collections::BTreeMap;

/// Retention options, as PVE's `prune-backups` format (pve-storage `$prune_backups_format`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PruneOptions {
    pub keep_all: Option<bool>,
    pub keep_last: Option<u64>,
    pub keep_hourly: Option<u64>,
    pub keep_daily: Option<u64>,
    pub keep_weekly: Option<u64>,
    pub keep_monthly: Option<u64>,
    pub keep_yearly: Option<u64>,
}

/// The integer keys of the format, in alphabetical order (the order `print_property_string`
/// and vzdump's retention log line use).
const INT_KEYS: [&str; 6] = [
    "keep-daily",
    "keep-hourly",
    "keep-last",
    "keep-monthly",
    "keep-weekly",
    "keep-yearly",
];

impl PruneOptions {
    /// Parses a property string such as `keep-last=3,keep-daily=7` the way the API validates the
    /// `prune-backups` parameter (`parse_property_string('prune-backups', $v, 'prune-backups')`).
    /// Schema errors therefore name the key as `prune-backups.keep-last`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::parse_with_path(s, Some("prune-backups"))
    }

    /// As [`parse`](Self::parse) with an explicit JSON-schema path. `None` is what
    /// `PVE::Storage::prune_backups` uses for the storage's configured value (keys unprefixed).
    ///
    /// Order of checks (first failure wins, parts left to right): empty/blank parts are skipped;
    /// `duplicate key …`, `invalid key …`, `value without key …`, `missing key …`; then all schema
    /// errors at once as `format error\n<path>: <msg>\n…` (Perl lists them in hash order; here
    /// they are sorted by path); finally `keep-all cannot be set together with other options.`
    pub fn parse_with_path(s: &str, path: Option<&str>) -> Result<Self, String> {
        let mut raw: BTreeMap<&'static str, String> = BTreeMap::new();
        for part in s.split(',') {
            if part.chars().all(char::is_whitespace) {
                continue;
            }
            match split_key_value(part) {
                Some((k, v)) => {
                    // Perl checks for a duplicate first, but an unknown key dies on its first
                    // occurrence, so it can never be a duplicate.
                    let Some(key) = known_key(k) else {
                        return Err(format!(
                            "invalid key in comma-separated list property: {k}\n"
                        ));
                    };
                    if raw.contains_key(key) {
                        return Err(format!(
                            "duplicate key in comma-separated list property: {key}\n"
                        ));
                    }
                    let v = if key == "keep-all" {
                        parse_boolean(v).map_or_else(|| v.to_string(), |b| u8::from(b).to_string())
                    } else {
                        v.to_string()
                    };
                    raw.insert(key, v);
                }
                None if !part.contains('=') => {
                    return Err(
                        "value without key, but schema does not define a default key\n".into(),
                    );
                }
                None => return Err("missing key in comma-separated list property\n".into()),
            }
        }

        // check_object: one error per key, collected, then raised together.
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut ints: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut keep_all = None;
        for (&key, v) in &raw {
            let err_path = match path {
                Some(p) if !p.is_empty() => format!("{p}.{key}"),
                _ => key.to_string(),
            };
            if key == "keep-all" {
                match v.as_str() {
                    "1" => keep_all = Some(true),
                    "0" => keep_all = Some(false),
                    _ => {
                        errors.insert(
                            err_path,
                            format!("type check ('boolean') failed - got '{v}'"),
                        );
                    }
                }
            } else {
                match perl_integer(v) {
                    None => {
                        errors.insert(
                            err_path,
                            format!("type check ('integer') failed - got '{v}'"),
                        );
                    }
                    Some(n) if n < 0 => {
                        errors.insert(err_path, "value must have a minimum value of 0".into());
                    }
                    Some(n) => {
                        ints.insert(key, u64::try_from(n).unwrap_or(u64::MAX));
                    }
                }
            }
        }
        if !errors.is_empty() {
            let mut msg = String::from("format error\n");
            for (p, e) in &errors {
                msg.push_str(&format!("{p}: {e}\n"));
            }
            return Err(msg);
        }

        // validate_prune_backups
        let any_positive = ints.values().any(|&n| n > 0);
        if !any_positive {
            return Ok(Self::keep_all_only());
        }
        if keep_all == Some(true) {
            return Err("keep-all cannot be set together with other options.\n".into());
        }
        let get = |k: &str| ints.get(k).copied();
        Ok(Self {
            keep_all: None,
            keep_last: get("keep-last"),
            keep_hourly: get("keep-hourly"),
            keep_daily: get("keep-daily"),
            keep_weekly: get("keep-weekly"),
            keep_monthly: get("keep-monthly"),
            keep_yearly: get("keep-yearly"),
        })
    }

    /// `keep-all=1` and nothing else.
    pub fn keep_all_only() -> Self {
        Self {
            keep_all: Some(true),
            ..Self::default()
        }
    }

    /// True if this keeps every backup: `keep-all=1`, or no keep-* option is positive
    /// (`prune_mark_backup_group`'s `@positive_opts` test).
    pub fn keeps_all(&self) -> bool {
        self.keep_all == Some(true) || self.int_values().all(|(_, v)| v.unwrap_or(0) == 0)
    }

    /// The value PVE works with after its format validator: `keep-all=1` alone if
    /// [`keeps_all`](Self::keeps_all), else the integer options with `keep-all` dropped.
    /// (PVE rejects `keep-all=1` next to a positive option; this model lets `keep-all` win.)
    pub fn normalized(&self) -> Self {
        if self.keeps_all() {
            Self::keep_all_only()
        } else {
            Self {
                keep_all: None,
                ..self.clone()
            }
        }
    }

    /// The normalized value as PVE prints it: keys sorted, e.g. `keep-daily=7,keep-last=3`, or
    /// `keep-all=1`.
    pub fn to_property_string(&self) -> String {
        self.normalized().pairs().join(",")
    }

    /// vzdump's retention log text, e.g. `keep-daily=7, keep-last=3` (the line reads
    /// `INFO: prune older backups with retention: <this>`).
    pub fn to_log_string(&self) -> String {
        self.normalized().pairs().join(", ")
    }

    /// The sum of the keep-* values: with vzdump `remove=0` a backup is refused once this many
    /// non-protected backups exist. `None` when everything is kept (no limit).
    pub fn max_count(&self) -> Option<u64> {
        if self.keeps_all() {
            return None;
        }
        Some(
            self.int_values()
                .map(|(_, v)| v.unwrap_or(0))
                .fold(0u64, u64::saturating_add),
        )
    }

    fn int_values(&self) -> impl Iterator<Item = (&'static str, Option<u64>)> {
        [
            ("keep-daily", self.keep_daily),
            ("keep-hourly", self.keep_hourly),
            ("keep-last", self.keep_last),
            ("keep-monthly", self.keep_monthly),
            ("keep-weekly", self.keep_weekly),
            ("keep-yearly", self.keep_yearly),
        ]
        .into_iter()
    }

    /// `key=value` pairs in sorted key order; `keep-all` (if set) sorts first.
    fn pairs(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = self.keep_all {
            out.push(format!("keep-all={}", u8::from(b)));
        }
        for (k, v) in self.int_values() {
            if let Some(v) = v {
                out.push(format!("{k}={v}"));
            }
        }
        out
    }
}

/// Perl's `/^([^=]+)=(.+)$/`: a non-empty key without `=`, then a non-empty value that holds no
/// newline (`$` may match before one final newline, which is then not part of the value).
fn split_key_value(part: &str) -> Option<(&str, &str)> {
    let (k, v) = part.split_once('=')?;
    let v = v.strip_suffix('\n').unwrap_or(v);
    if k.is_empty() || v.is_empty() || v.contains('\n') {
        return None;
    }
    Some((k, v))
}

fn known_key(k: &str) -> Option<&'static str> {
    if k == "keep-all" {
        return Some("keep-all");
    }
    INT_KEYS.iter().copied().find(|known| *known == k)
}

/// `JSONSchema::parse_boolean`.
fn parse_boolean(v: &str) -> Option<bool> {
    let l = v.to_ascii_lowercase();
    match l.as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// `JSONSchema::is_integer` (`/^[+-]?\d+$/`) and its numeric value; huge values saturate.
fn perl_integer(v: &str) -> Option<i128> {
    let (neg, digits) = match v.as_bytes().first()? {
        b'+' => (false, &v[1..]),
        b'-' => (true, &v[1..]),
        _ => (false, v),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n.saturating_mul(10).saturating_add(i128::from(b - b'0'));
    }
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> PruneOptions {
        PruneOptions::parse(s).unwrap()
    }
    fn err(s: &str) -> String {
        PruneOptions::parse(s).unwrap_err()
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            ok("keep-last=3,keep-daily=7"),
            PruneOptions {
                keep_last: Some(3),
                keep_daily: Some(7),
                ..Default::default()
            }
        );
        assert_eq!(ok(""), PruneOptions::keep_all_only());
        assert_eq!(ok(" , ,"), PruneOptions::keep_all_only());
        assert_eq!(
            ok("keep-last=0,keep-daily=0"),
            PruneOptions::keep_all_only()
        );
        assert_eq!(ok("keep-all=1"), PruneOptions::keep_all_only());
        assert_eq!(ok("keep-all=YES"), PruneOptions::keep_all_only());
        assert_eq!(ok("keep-all=1,keep-last=0"), PruneOptions::keep_all_only());
        assert_eq!(ok("keep-all=0"), PruneOptions::keep_all_only());
        assert_eq!(
            ok("keep-all=off,keep-last=2,keep-weekly=0,"),
            PruneOptions {
                keep_last: Some(2),
                keep_weekly: Some(0),
                ..Default::default()
            }
        );
        assert_eq!(ok("keep-last=+3").keep_last, Some(3));
        assert_eq!(ok("keep-last=007").keep_last, Some(7));
        assert_eq!(ok("keep-last=-0"), PruneOptions::keep_all_only());
    }

    #[test]
    fn parse_errors_use_pve_texts() {
        assert_eq!(
            err("keep-all=1,keep-last=2"),
            "keep-all cannot be set together with other options.\n"
        );
        assert_eq!(
            err("keep-last=1,keep-last=2"),
            "duplicate key in comma-separated list property: keep-last\n"
        );
        assert_eq!(
            err("keep-foo=1"),
            "invalid key in comma-separated list property: keep-foo\n"
        );
        assert_eq!(
            err(" keep-last=1"),
            "invalid key in comma-separated list property:  keep-last\n"
        );
        assert_eq!(
            err("keep-last"),
            "value without key, but schema does not define a default key\n"
        );
        assert_eq!(
            err("keep-last="),
            "missing key in comma-separated list property\n"
        );
        assert_eq!(err("=3"), "missing key in comma-separated list property\n");
        assert_eq!(
            err("keep-last=abc"),
            "format error\nprune-backups.keep-last: type check ('integer') failed - got 'abc'\n"
        );
        assert_eq!(
            err("keep-last=3=4"),
            "format error\nprune-backups.keep-last: type check ('integer') failed - got '3=4'\n"
        );
        assert_eq!(
            err("keep-last=-1"),
            "format error\nprune-backups.keep-last: value must have a minimum value of 0\n"
        );
        assert_eq!(
            err("keep-all=maybe"),
            "format error\nprune-backups.keep-all: type check ('boolean') failed - got 'maybe'\n"
        );
        assert_eq!(
            err("keep-weekly=x,keep-daily=-2"),
            "format error\nprune-backups.keep-daily: value must have a minimum value of 0\n\
             prune-backups.keep-weekly: type check ('integer') failed - got 'x'\n"
        );
        // the first failing part wins, left to right
        assert_eq!(
            err("keep-last=x,bogus=1"),
            "invalid key in comma-separated list property: bogus\n"
        );
        assert_eq!(
            PruneOptions::parse_with_path("keep-last=x", None).unwrap_err(),
            "format error\nkeep-last: type check ('integer') failed - got 'x'\n"
        );
    }

    #[test]
    fn printing_and_limits() {
        let o = ok("keep-last=3,keep-daily=7");
        assert_eq!(o.to_property_string(), "keep-daily=7,keep-last=3");
        assert_eq!(o.to_log_string(), "keep-daily=7, keep-last=3");
        assert_eq!(o.max_count(), Some(10));
        assert!(!o.keeps_all());

        let d = PruneOptions::default();
        assert!(d.keeps_all());
        assert_eq!(d.max_count(), None);
        assert_eq!(d.to_property_string(), "keep-all=1");
        assert_eq!(d.to_log_string(), "keep-all=1");

        let zeros = PruneOptions {
            keep_last: Some(0),
            keep_yearly: Some(0),
            ..Default::default()
        };
        assert!(zeros.keeps_all());
        assert_eq!(zeros.max_count(), None);

        let with_zero = ok("keep-last=2,keep-yearly=0");
        assert_eq!(with_zero.to_property_string(), "keep-last=2,keep-yearly=0");
        assert_eq!(with_zero.max_count(), Some(2));
    }

    fn any_options() -> impl Strategy<Value = PruneOptions> {
        let n = || proptest::option::of(0u64..20);
        (
            proptest::option::of(any::<bool>()),
            (n(), n(), n(), n(), n(), n()),
        )
            .prop_map(|(keep_all, (l, h, d, w, m, y))| PruneOptions {
                keep_all,
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_yearly: y,
            })
    }

    proptest! {
        #[test]
        fn property_string_round_trips(o in any_options()) {
            let parsed = PruneOptions::parse(&o.to_property_string()).unwrap();
            prop_assert_eq!(&parsed, &o.normalized());
            prop_assert_eq!(parsed.keeps_all(), o.keeps_all());
            prop_assert_eq!(parsed.max_count(), o.max_count());
        }
    }
}
