//! The parameter schema model: what one `parameters` object of the PVE API dump says about each
//! property (type, format, limits, pattern, enum, `requires`, property-string sub-schemas).
//!
//! Invariants: a [`PropSchema`] is immutable once parsed; every `pattern` is compiled when the
//! schema is parsed, so a pattern the simulator cannot compile is a load error, never a silent
//! pass at request time. Limits keep the text PVE would print (`minimum => '0'` prints `0`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use regex_automata::meta::Regex;
use serde_json::Value;

/// The `parameters` object of one operation.
#[derive(Debug, Clone, Default)]
pub struct ParamSchema {
    /// `additionalProperties`: whether names not in `properties` are accepted.
    pub additional_properties: bool,
    pub properties: BTreeMap<String, PropSchema>,
}

/// One property (or property-string key) definition.
#[derive(Debug, Clone, Default)]
pub struct PropSchema {
    /// `type`: string, integer, number, boolean, array, object, null, any (None: unchecked).
    pub ty: Option<String>,
    pub format: Option<Format>,
    pub optional: bool,
    pub enumeration: Option<Vec<String>>,
    pub minimum: Option<Limit>,
    pub maximum: Option<Limit>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<Pattern>,
    /// `requires`: another property that must be present when this one is.
    pub requires: Option<String>,
    /// `items` of an array property.
    pub items: Option<Box<PropSchema>>,
    /// `properties` / `additionalProperties` of an object-typed property.
    pub properties: Option<BTreeMap<String, PropSchema>>,
    pub additional_properties: bool,
    /// Property strings: the key used for a value given without `key=`.
    pub default_key: bool,
    /// Property strings: this key is an alias of another key.
    pub alias: Option<String>,
    pub key_alias: Option<String>,
    pub default: Option<Value>,
}

/// A `format`: either a registered name (`pve-vmid`, `pve-vmid-list`, `prune-backups`, ...) or
/// an inline property-string definition.
#[derive(Debug, Clone)]
pub enum Format {
    Named(String),
    Inline(Arc<BTreeMap<String, PropSchema>>),
}

/// A numeric limit with the text PVE prints in its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub value: f64,
    pub text: String,
}

/// A schema `pattern`, compiled with Perl's `m/^$pattern$/` semantics (see [`Pattern::matches`]).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    regex: Arc<Regex>,
}

impl Pattern {
    /// Compiles a Perl pattern from the API dump. The pattern is interpolated unbracketed
    /// between `^` and `$`, exactly as `JSONSchema::check_prop` does, so a top-level
    /// alternation binds the anchors to its first and last branch only.
    pub fn new(source: &str) -> Result<Pattern, String> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let regex = match cache.get(source) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(compile_perl(&format!("^{source}$"))?);
                cache.insert(source.to_string(), r.clone());
                r
            }
        };
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Perl's `$` also matches before one trailing newline.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
            || value
                .strip_suffix('\n')
                .is_some_and(|v| self.regex.is_match(v))
    }
}

/// Compiles a Perl regex into a Rust one, translating the Perl-only syntax found in the PVE
/// schema: `(?^:` / `(?^i:` flag resets, `(?>` atomic groups (treated as plain groups),
/// `\0` and `{,n}`.
pub(crate) fn compile_perl(perl: &str) -> Result<Regex, String> {
    let mut out = String::with_capacity(perl.len() + 8);
    let chars: Vec<char> = perl.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            if n == '0' && !chars.get(i + 2).is_some_and(|d| d.is_ascii_digit()) {
                out.push_str("\\x00");
            } else {
                out.push(c);
                out.push(n);
            }
            i += 2;
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push(c);
                // a ']' right after '[' or '[^' is literal
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            '(' if chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'^') => {
                out.push_str("(?");
                i += 3;
                continue;
            }
            '(' if chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'>') => {
                out.push_str("(?:");
                i += 3;
                continue;
            }
            '{' if chars.get(i + 1) == Some(&',') => out.push_str("{0"),
            _ => out.push(c),
        }
        i += 1;
    }
    // `(?:` after a flag reset with no flags is what `(?^:` became; `(?` + `:` is valid Rust.
    // No NFA size limit: when another crate in the build enables regex-automata's `dfa-build`
    // (tracing-subscriber's env-filter does, in felhom-agent's tests), the meta engine also
    // compiles a reverse NFA, and Unicode classes like `[\w\d\s]{0,256}` exceed the default
    // limit there ("error building NFA").
    Regex::builder()
        .configure(Regex::config().nfa_size_limit(None))
        .build(&out)
        .map_err(|e| format!("cannot compile pattern '{perl}': {e}"))
}

impl ParamSchema {
    pub fn from_json(v: &Value) -> Result<ParamSchema, String> {
        let additional_properties = truthy(v.get("additionalProperties"));
        let properties = match v.get("properties") {
            Some(Value::Object(m)) => parse_props(m)?,
            _ => BTreeMap::new(),
        };
        Ok(ParamSchema {
            additional_properties,
            properties,
        })
    }
}

pub(crate) fn parse_props(
    m: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, PropSchema>, String> {
    m.iter()
        .map(|(k, v)| {
            PropSchema::from_json(v)
                .map(|p| (k.clone(), p))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}

impl PropSchema {
    pub fn from_json(v: &Value) -> Result<PropSchema, String> {
        let Value::Object(m) = v else {
            return Err("property schema is not an object".into());
        };
        let format = match m.get("format") {
            Some(Value::String(s)) => Some(Format::Named(s.clone())),
            Some(Value::Object(o)) => Some(Format::Inline(Arc::new(parse_props(o)?))),
            _ => None,
        };
        let enumeration = match m.get("enum") {
            Some(Value::Array(a)) => Some(a.iter().map(perl_str).collect()),
            _ => None,
        };
        let pattern = match m.get("pattern") {
            Some(Value::String(s)) => Some(Pattern::new(s)?),
            _ => None,
        };
        let properties = match m.get("properties") {
            Some(Value::Object(o)) => Some(parse_props(o)?),
            _ => None,
        };
        let items = match m.get("items") {
            Some(i @ Value::Object(_)) => Some(Box::new(PropSchema::from_json(i)?)),
            _ => None,
        };
        Ok(PropSchema {
            ty: m.get("type").and_then(Value::as_str).map(str::to_string),
            format,
            optional: truthy(m.get("optional")),
            enumeration,
            minimum: m.get("minimum").and_then(limit),
            maximum: m.get("maximum").and_then(limit),
            min_length: m.get("minLength").and_then(as_u64),
            max_length: m.get("maxLength").and_then(as_u64),
            pattern,
            requires: m
                .get("requires")
                .and_then(Value::as_str)
                .map(str::to_string),
            items,
            properties,
            additional_properties: truthy(m.get("additionalProperties")),
            default_key: truthy(m.get("default_key")),
            alias: m.get("alias").and_then(Value::as_str).map(str::to_string),
            key_alias: m
                .get("keyAlias")
                .and_then(Value::as_str)
                .map(str::to_string),
            default: m.get("default").cloned(),
        })
    }
}

fn limit(v: &Value) -> Option<Limit> {
    let text = perl_str(v);
    let value = text.trim().parse::<f64>().ok()?;
    Some(Limit { value, text })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Perl truthiness of an optional JSON value (`undef`, `0`, `""`, `"0"` are false).
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty() && s != "0",
        Some(_) => true,
    }
}

/// How Perl stringifies a scalar decoded from JSON (numbers without a trailing `.0`).
pub(crate) fn perl_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                perl_num(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        Value::Null => String::new(),
        Value::Array(_) | Value::Object(_) => v.to_string(),
    }
}

/// Perl's `%.15g`-like number formatting for the values the schema and JSON bodies carry.
pub(crate) fn perl_num(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_pattern_translation() {
        let p = Pattern::new(
            r"(?^:^(?^:[^\s:/]+)\@(?^:[A-Za-z][A-Za-z0-9\.\-_]+)(?:!(?^:[A-Za-z][A-Za-z0-9\.\-_]+))?$)",
        )
        .unwrap();
        assert!(p.matches("backup@pve!felhom"));
        assert!(p.matches("root@pam"));
        assert!(!p.matches("root"));
        assert!(!p.matches("a b@pve"));
        let p = Pattern::new(r"(?^i:[a-z0-9_][a-z0-9_\-\+\.]*)").unwrap();
        assert!(p.matches("Tag.1"));
        let p = Pattern::new(r"[A-Za-z0-9\-_\s]{,8}").unwrap();
        assert!(p.matches("abc"));
        assert!(!p.matches("abcdefghi"));
        let p = Pattern::new(
            r"(?^:(?:\w+=[^\x00-\x08\x10-\x1F\x7F]*)(?:\0\w+=[^\x00-\x08\x10-\x1F\x7F]*)*)",
        )
        .unwrap();
        assert!(p.matches("A=1\0B=2"));
    }

    #[test]
    fn anchors_bind_to_outer_branches_like_perl() {
        // m/^/dev/parport\d+|/dev/usb/lp\d+$/ : "starts with parport" OR "ends with lp"
        let p = Pattern::new(r"/dev/parport\d+|/dev/usb/lp\d+").unwrap();
        assert!(p.matches("/dev/parport0 trailing"));
        assert!(p.matches("leading /dev/usb/lp1"));
        assert!(!p.matches("x/dev/parport0x"));
    }

    #[test]
    fn dollar_matches_before_trailing_newline() {
        let p = Pattern::new(r"\S+").unwrap();
        assert!(p.matches("abc\n"));
        assert!(!p.matches("abc\n\n"));
        assert!(!p.matches("a c"));
    }

    #[test]
    fn perl_number_strings() {
        assert_eq!(perl_str(&serde_json::json!(101.0)), "101");
        assert_eq!(perl_str(&serde_json::json!(1.5)), "1.5");
        assert_eq!(perl_str(&serde_json::json!("0")), "0");
        assert_eq!(perl_str(&serde_json::json!(true)), "1");
    }
}
