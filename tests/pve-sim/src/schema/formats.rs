//! The PVE format registry (`PVE::JSONSchema::check_format` and the `register_format` calls of
//! pve-common, pve-storage, pve-access-control and pve-guest-common), including `-list` / `-opt`
//! suffixes and property strings (`parse_property_string`).
//!
//! Formats used by the parameters of the operations in `routes::ROUTES` (enumerated from the
//! PVE 9 schema; a test asserts every one of them is implemented here):
//! `pve-node`, `pve-vmid`, `pve-configid`, `pve-storage-id`, `pve-vmid-list`,
//! `pve-task-status-type-list`, `pve-storage-content`, `pve-storage-content-list`,
//! `email-or-username-list`, and the property strings `prune-backups`, `backup-fleecing`,
//! `backup-performance`. Also implemented: `pve-userid`, `pve-volume-id`, `email`, `urlencoded`,
//! `pve-bridge-id`, `pve-iface`, `mac-addr`, `dns-name`, `pve-tag`, `string`.
//!
//! Invariants: an error is exactly the text PVE's `die` produces, including its trailing
//! newline (the caller prefixes `invalid format - `). A format name this registry does not know
//! is accepted unchecked (documented gap: PVE would know it), never rejected.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use regex_automata::meta::Regex;

use super::param::{Format, PropSchema, compile_perl, parse_props};
use super::validate::{Errors, check_object_strings};

enum Registered {
    Code(fn(&str) -> Result<(), String>),
    Hash(Arc<BTreeMap<String, PropSchema>>, Option<Validator>),
}

type Validator = fn(&BTreeMap<String, String>) -> Result<(), String>;

/// True if `name` (without `-list`/`-opt`) is implemented by this registry.
pub fn is_known(name: &str) -> bool {
    let (base, _) = split_format_name(name);
    name == "regex" || lookup(base).is_some()
}

/// `check_format`: Ok, or Err(the `die` text incl. trailing newline).
pub fn check_format(format: &Format, value: &str, path: &str) -> Result<(), String> {
    let name = match format {
        Format::Inline(map) => return parse_property_string(map, None, value, path),
        Format::Named(n) => n.as_str(),
    };
    if name == "regex" {
        return Ok(());
    }
    let (base, kind) = split_format_name(name);
    let Some(registered) = lookup(base) else {
        return Ok(());
    };
    match (kind, registered) {
        (Some(kind), Registered::Hash(..)) => {
            Err(format!("'-{kind}' format must have code ref, not hash\n"))
        }
        (Some("list"), Registered::Code(code)) => split_list(value).into_iter().try_for_each(code),
        (Some(_), Registered::Code(code)) => {
            // -opt: empty (false) values are allowed
            if value.is_empty() || value == "0" {
                Ok(())
            } else {
                code(value)
            }
        }
        (None, Registered::Code(code)) => code(value),
        (None, Registered::Hash(map, validator)) => {
            parse_property_string(&map, validator, value, path)
        }
    }
}

/// `$format =~ m/^(.*?)(?:-(list|opt))?$/`
fn split_format_name(name: &str) -> (&str, Option<&str>) {
    for kind in ["list", "opt"] {
        if let Some(base) = name.strip_suffix(kind).and_then(|b| b.strip_suffix('-')) {
            return (base, Some(kind));
        }
    }
    (name, None)
}

/// `PVE::Tools::split_list`: NUL-separated if it contains NUL (Perl `split` keeps inner empty
/// fields and drops trailing ones), else split on runs of `,`, `;` and whitespace.
pub fn split_list(value: &str) -> Vec<&str> {
    if value.contains('\0') {
        let mut parts: Vec<&str> = value.split('\0').collect();
        while parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        return parts;
    }
    value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

fn lookup(name: &str) -> Option<Registered> {
    let code: fn(&str) -> Result<(), String> = match name {
        "string" => |_| Ok(()),
        "pve-node" => pve_node,
        "pve-vmid" => pve_vmid,
        "pve-configid" => pve_configid,
        "pve-storage-id" => pve_storage_id,
        "pve-task-status-type" => pve_task_status_type,
        "pve-storage-content" => pve_storage_content,
        "email" => email,
        "email-or-username" => email_or_username,
        "pve-userid" => pve_userid,
        "pve-volume-id" => pve_volume_id,
        "urlencoded" => urlencoded,
        "pve-bridge-id" => pve_bridge_id,
        "pve-iface" => pve_iface,
        "mac-addr" => mac_addr,
        "dns-name" => dns_name,
        "pve-tag" => pve_tag,
        "prune-backups" => {
            return Some(Registered::Hash(
                hash_format(&PRUNE, PRUNE_BACKUPS),
                Some(validate_prune_backups),
            ));
        }
        "backup-fleecing" => {
            return Some(Registered::Hash(
                hash_format(&FLEECING, BACKUP_FLEECING),
                None,
            ));
        }
        "backup-performance" => {
            return Some(Registered::Hash(
                hash_format(&PERFORMANCE, BACKUP_PERFORMANCE),
                None,
            ));
        }
        _ => return None,
    };
    Some(Registered::Code(code))
}

// Property-string formats, as the PVE 9 API dump describes them in `returns` schemas
// (pve-storage `$prune_backups_format`, pve-guest-common `backup-fleecing` / `backup-performance`).
const PRUNE_BACKUPS: &str = r#"{
 "keep-all": {"optional": 1, "type": "boolean"},
 "keep-daily": {"minimum": "0", "optional": 1, "type": "integer"},
 "keep-hourly": {"minimum": "0", "optional": 1, "type": "integer"},
 "keep-last": {"minimum": "0", "optional": 1, "type": "integer"},
 "keep-monthly": {"minimum": "0", "optional": 1, "type": "integer"},
 "keep-weekly": {"minimum": "0", "optional": 1, "type": "integer"},
 "keep-yearly": {"minimum": "0", "optional": 1, "type": "integer"}}"#;
const BACKUP_FLEECING: &str = r#"{
 "enabled": {"default": 0, "default_key": 1, "optional": 1, "type": "boolean"},
 "storage": {"format": "pve-storage-id", "optional": 1, "type": "string"}}"#;
const BACKUP_PERFORMANCE: &str = r#"{
 "max-workers": {"default": 16, "maximum": 256, "minimum": 1, "optional": 1, "type": "integer"},
 "pbs-entries-max": {"default": 1048576, "minimum": 1, "optional": 1, "type": "integer"}}"#;

static PRUNE: OnceLock<Arc<BTreeMap<String, PropSchema>>> = OnceLock::new();
static FLEECING: OnceLock<Arc<BTreeMap<String, PropSchema>>> = OnceLock::new();
static PERFORMANCE: OnceLock<Arc<BTreeMap<String, PropSchema>>> = OnceLock::new();

fn hash_format(
    cell: &'static OnceLock<Arc<BTreeMap<String, PropSchema>>>,
    json: &str,
) -> Arc<BTreeMap<String, PropSchema>> {
    cell.get_or_init(|| {
        let v: serde_json::Value = serde_json::from_str(json).expect("embedded format is JSON");
        let map = v.as_object().expect("embedded format is an object");
        Arc::new(parse_props(map).expect("embedded format parses"))
    })
    .clone()
}

/// pve-storage `validate_prune_backups`.
fn validate_prune_backups(res: &BTreeMap<String, String>) -> Result<(), String> {
    let keep_all = res
        .get("keep-all")
        .is_some_and(|v| !v.is_empty() && v != "0");
    let any_positive = res
        .iter()
        .filter(|(k, _)| k.as_str() != "keep-all")
        .any(|(_, v)| v.trim().parse::<f64>().is_ok_and(|n| n > 0.0));
    if any_positive && keep_all {
        return Err("keep-all cannot be set together with other options.\n".into());
    }
    Ok(())
}

/// `parse_property_string`: split `key=value` parts, then validate them as an object whose
/// error paths are `<path>.<key>`.
pub fn parse_property_string(
    format: &BTreeMap<String, PropSchema>,
    validator: Option<Validator>,
    data: &str,
    path: &str,
) -> Result<(), String> {
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    let mut default_key: Option<String> = None;
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = key_value(part) {
            if res.contains_key(k) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {k}\n"
                ));
            }
            let mut key = k.to_string();
            let mut schema = format.get(k);
            if let Some(alias) = schema.and_then(|s| s.alias.clone()) {
                if let Some(key_alias) = schema.and_then(|s| s.key_alias.clone()) {
                    if res.contains_key(&key_alias) {
                        return Err(format!("key alias '{key_alias}' is already defined\n"));
                    }
                    res.insert(key_alias, k.to_string());
                }
                schema = format.get(&alias);
                key = alias;
            }
            let Some(schema) = schema else {
                return Err(format!(
                    "invalid key in comma-separated list property: {key}\n"
                ));
            };
            let mut v = v.to_string();
            if schema.ty.as_deref() == Some("boolean")
                && let Some(b) = parse_boolean(&v)
            {
                v = b.to_string();
            }
            res.insert(key, v);
        } else if !part.contains('=') {
            if let Some(dk) = &default_key {
                return Err(format!(
                    "duplicate key in comma-separated list property: {dk}\n"
                ));
            }
            let Some((dk, _)) = format.iter().find(|(_, s)| s.default_key) else {
                return Err("value without key, but schema does not define a default key\n".into());
            };
            if res.get(dk).is_some_and(|v| !v.is_empty() && v != "0") {
                return Err(format!(
                    "duplicate key in comma-separated list property: {dk}\n"
                ));
            }
            default_key = Some(dk.clone());
            res.insert(dk.clone(), part.to_string());
        } else {
            return Err("missing key in comma-separated list property\n".into());
        }
    }
    let mut errors = Errors::new();
    check_object_strings(path, format, &res, &mut errors);
    if !errors.is_empty() {
        let mut msg = String::from("format error\n");
        for (k, e) in &errors {
            msg.push_str(&format!("{k}: {e}\n"));
        }
        return Err(msg);
    }
    validator.map_or(Ok(()), |f| f(&res))
}

/// `$part =~ /^([^=]+)=(.+)$/` (`.` stops at a newline; `$` may precede a final one).
fn key_value(part: &str) -> Option<(&str, &str)> {
    let (k, v) = part.split_once('=')?;
    let v = v.strip_suffix('\n').unwrap_or(v);
    if k.is_empty() || v.is_empty() || v.contains('\n') {
        return None;
    }
    Some((k, v))
}

/// `PVE::JSONSchema::parse_boolean`
fn parse_boolean(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(1),
        "0" | "off" | "no" | "false" => Some(0),
        _ => None,
    }
}

/// A whole-string Perl match `m/^...$/` (with `$` allowed before one trailing newline).
fn full(cell: &'static OnceLock<Regex>, pattern: &str, value: &str) -> bool {
    let re = cell.get_or_init(|| {
        compile_perl(&format!("^(?:{pattern})$")).expect("built-in format regex compiles")
    });
    re.is_match(value) || value.strip_suffix('\n').is_some_and(|v| re.is_match(v))
}

macro_rules! perl_match {
    ($pattern:expr, $value:expr) => {{
        static RE: OnceLock<Regex> = OnceLock::new();
        full(&RE, $pattern, $value)
    }};
}

fn pve_node(v: &str) -> Result<(), String> {
    if perl_match!(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", v) {
        return Ok(());
    }
    Err("value does not look like a valid node name\n".into())
}

fn pve_vmid(v: &str) -> Result<(), String> {
    if perl_match!(r"[1-9][0-9]{2,8}", v) {
        return Ok(());
    }
    Err("value does not look like a valid VM ID\n".into())
}

fn pve_configid(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-z][a-z0-9_-]+)", v) {
        return Ok(());
    }
    Err(format!("invalid configuration ID '{v}'\n"))
}

fn pve_storage_id(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])", v) {
        return Ok(());
    }
    Err(format!("storage ID '{v}' contains illegal characters\n"))
}

fn pve_task_status_type(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:ok|error|warning|unknown)", v) {
        return Ok(());
    }
    Err(format!("invalid status '{v}'\n"))
}

/// pve-storage `verify_content`: `import`, or a content type of the `dir` plugin.
fn pve_storage_content(v: &str) -> Result<(), String> {
    const DIR_CONTENT: [&str; 8] = [
        "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import",
    ];
    if DIR_CONTENT.contains(&v) {
        return Ok(());
    }
    Err(format!("invalid content type '{v}'\n"))
}

const EMAIL_USER_RE: &str = r"[\w\+\-\~]+(\.[\w\+\-\~]+)*";

fn email(v: &str) -> Result<(), String> {
    if perl_match!(
        &format!(r"{EMAIL_USER_RE}@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*"),
        v
    ) {
        return Ok(());
    }
    Err("value does not look like a valid email address\n".into())
}

fn email_or_username(v: &str) -> Result<(), String> {
    if email(v).is_ok() || perl_match!(EMAIL_USER_RE, v) {
        return Ok(());
    }
    Err("value does not look like a valid email address or user name\n".into())
}

/// pve-access-control `verify_username`.
fn pve_userid(v: &str) -> Result<(), String> {
    let len = v.chars().count();
    if len < 3 {
        return Err(format!("user name '{v}' is too short\n"));
    }
    if len > 64 {
        return Err(format!("user name '{v}' is too long ({len} > 64)\n"));
    }
    if perl_match!(r"[^\s:/]+@[A-Za-z][A-Za-z0-9\.\-_]+", v) {
        return Ok(());
    }
    Err(format!(
        "value '{v}' does not look like a valid user name\n"
    ))
}

/// pve-storage `parse_volume_id`.
fn pve_volume_id(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+", v) {
        return Ok(());
    }
    Err(format!("unable to parse volume ID '{v}'\n"))
}

fn urlencoded(v: &str) -> Result<(), String> {
    if perl_match!(r"[-%a-zA-Z0-9_.!~*'()]*", v) {
        return Ok(());
    }
    Err(format!("invalid urlencoded string: {v}\n"))
}

fn pve_bridge_id(v: &str) -> Result<(), String> {
    if perl_match!(r"[-_.\w\d]+", v) {
        return Ok(());
    }
    Err(format!("invalid bridge ID '{v}'\n"))
}

fn pve_iface(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-z][a-z0-9_]{1,20}([:\.]\d+)?)", v) {
        return Ok(());
    }
    Err(format!("invalid network interface name '{v}'\n"))
}

fn mac_addr(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})", v) {
        return Ok(());
    }
    Err("value does not look like a valid unicast MAC address\n".into())
}

fn dns_name(v: &str) -> Result<(), String> {
    if perl_match!(
        r"(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)",
        v
    ) {
        return Ok(());
    }
    Err("value does not look like a valid DNS name\n".into())
}

fn pve_tag(v: &str) -> Result<(), String> {
    if perl_match!(r"(?i:[a-z0-9_][a-z0-9_\-\+\.]*)", v) {
        return Ok(());
    }
    Err("invalid characters in tag\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(n: &str) -> Format {
        Format::Named(n.to_string())
    }

    #[test]
    fn split_list_like_pve_tools() {
        assert_eq!(
            split_list(" 101, 102;103  104"),
            ["101", "102", "103", "104"]
        );
        assert!(split_list("").is_empty());
        assert_eq!(split_list("a\0\0b\0"), ["a", "", "b"]);
    }

    #[test]
    fn vmid_list_checks_each_entry() {
        assert_eq!(
            check_format(&named("pve-vmid-list"), "101,102 103", "vmid"),
            Ok(())
        );
        assert_eq!(
            check_format(&named("pve-vmid-list"), "101,abc", "vmid"),
            Err("value does not look like a valid VM ID\n".into())
        );
        assert_eq!(check_format(&named("pve-vmid-list"), "", "vmid"), Ok(()));
    }

    #[test]
    fn configid_and_storage_id_messages() {
        assert_eq!(check_format(&named("pve-configid"), "pre_1-x", ""), Ok(()));
        assert_eq!(
            check_format(&named("pve-configid"), "1abc", ""),
            Err("invalid configuration ID '1abc'\n".into())
        );
        // CONFIGID_RE needs at least two characters
        assert_eq!(
            check_format(&named("pve-configid"), "a", ""),
            Err("invalid configuration ID 'a'\n".into())
        );
        assert_eq!(
            check_format(&named("pve-storage-id"), "bad_", ""),
            Err("storage ID 'bad_' contains illegal characters\n".into())
        );
    }

    #[test]
    fn hash_formats_reject_list_suffix() {
        assert_eq!(
            check_format(&named("prune-backups-list"), "keep-last=1", "p"),
            Err("'-list' format must have code ref, not hash\n".into())
        );
    }

    #[test]
    fn property_string_errors() {
        let f = named("prune-backups");
        assert_eq!(
            check_format(&f, "keep-last=3,keep-daily=7", "prune-backups"),
            Ok(())
        );
        assert_eq!(check_format(&f, "keep-all=1", "prune-backups"), Ok(()));
        assert_eq!(
            check_format(&f, "keep-all=yes,keep-last=0", "prune-backups"),
            Ok(())
        );
        assert_eq!(
            check_format(&f, "keep-last=abc", "prune-backups"),
            Err("format error\nprune-backups.keep-last: type check ('integer') failed - got 'abc'\n".into())
        );
        assert_eq!(
            check_format(&f, "keep-last=-1", "prune-backups"),
            Err(
                "format error\nprune-backups.keep-last: value must have a minimum value of 0\n"
                    .into()
            )
        );
        assert_eq!(
            check_format(&f, "keep-forever=1", "prune-backups"),
            Err("invalid key in comma-separated list property: keep-forever\n".into())
        );
        assert_eq!(
            check_format(&f, "keep-last=1,keep-last=2", "prune-backups"),
            Err("duplicate key in comma-separated list property: keep-last\n".into())
        );
        assert_eq!(
            check_format(&f, "3", "prune-backups"),
            Err("value without key, but schema does not define a default key\n".into())
        );
        assert_eq!(
            check_format(&f, "keep-last=", "prune-backups"),
            Err("missing key in comma-separated list property\n".into())
        );
        assert_eq!(
            check_format(&f, "keep-all=1,keep-last=2", "prune-backups"),
            Err("keep-all cannot be set together with other options.\n".into())
        );
        assert_eq!(
            check_format(&f, "keep-all=maybe", "prune-backups"),
            Err("format error\nprune-backups.keep-all: type check ('boolean') failed - got 'maybe'\n".into())
        );
    }

    #[test]
    fn fleecing_default_key_and_performance_limits() {
        let f = named("backup-fleecing");
        assert_eq!(check_format(&f, "1,storage=local-lvm", "fleecing"), Ok(()));
        assert_eq!(
            check_format(&f, "1,0", "fleecing"),
            Err("duplicate key in comma-separated list property: enabled\n".into())
        );
        assert_eq!(
            check_format(&f, "enabled=1,storage=9x", "fleecing"),
            Err("format error\nfleecing.storage: invalid format - storage ID '9x' contains illegal characters\n\n".into())
        );
        let p = named("backup-performance");
        assert_eq!(
            check_format(&p, "max-workers=300", "performance"),
            Err(
                "format error\nperformance.max-workers: value must have a maximum value of 256\n"
                    .into()
            )
        );
    }

    #[test]
    fn other_formats() {
        assert_eq!(
            check_format(&named("pve-task-status-type-list"), "ok,Error", "s"),
            Ok(())
        );
        assert_eq!(
            check_format(&named("pve-task-status-type-list"), "ok,bad", "s"),
            Err("invalid status 'bad'\n".into())
        );
        assert_eq!(
            check_format(&named("pve-storage-content-list"), "backup,iso", "c"),
            Ok(())
        );
        assert_eq!(
            check_format(&named("pve-storage-content"), "bogus", "c"),
            Err("invalid content type 'bogus'\n".into())
        );
        assert_eq!(
            check_format(&named("email-or-username-list"), "a@b.org,root", "m"),
            Ok(())
        );
        assert_eq!(
            check_format(&named("email-or-username-list"), "a b?", "m"),
            Err("value does not look like a valid email address or user name\n".into())
        );
        assert_eq!(
            check_format(&named("pve-userid"), "bob", "u"),
            Err("value 'bob' does not look like a valid user name\n".into())
        );
        assert_eq!(
            check_format(
                &named("pve-volume-id"),
                "local:backup/vzdump-qemu-101.vma.zst",
                "v"
            ),
            Ok(())
        );
        assert_eq!(
            check_format(&named("pve-volume-id"), "nocolon", "v"),
            Err("unable to parse volume ID 'nocolon'\n".into())
        );
        assert_eq!(check_format(&named("pve-node"), "pve-1", "n"), Ok(()));
        assert_eq!(
            check_format(&named("pve-node"), "pve_1", "n"),
            Err("value does not look like a valid node name\n".into())
        );
        // unknown formats are not checked here
        assert_eq!(
            check_format(&named("pve-fw-addr-spec"), "anything", "x"),
            Ok(())
        );
        assert!(!is_known("pve-fw-addr-spec"));
        assert!(is_known("pve-vmid-list"));
    }
}
