//! Parameter validation as `PVE::JSONSchema::validate` / `check_object` / `check_prop` /
//! `check_type` do it, plus the legacy normalisation `RESTHandler::handle` applies first.
//!
//! Invariants: the order of checks per value is PVE's (type, format, pattern, maxLength,
//! minLength, maximum, minimum, enum; the first failure ends the value's checks); messages are
//! PVE's text byte for byte. Values are judged the way Perl sees them: JSON numbers are
//! stringified (`101.0` is `'101'`), JSON booleans pass only `boolean`, arrays and objects are
//! `ARRAY` / `HASH` refs.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::Operation;
use super::formats::check_format;
use super::param::{Format, PropSchema, perl_num, perl_str, truthy};

/// Errors per parameter path, as in the `errors` object of a 400 response.
pub type Errors = BTreeMap<String, String>;

/// `add_error`: a second message for the same path is joined with a literal backslash-n
/// (PVE uses a single-quoted `'\n'` there).
fn add_error(errors: &mut Errors, path: &str, msg: String) {
    let path = if path.is_empty() { "_root" } else { path };
    match errors.get_mut(path) {
        Some(old) => {
            old.push_str("\\n");
            old.push_str(&msg);
        }
        None => {
            errors.insert(path.to_string(), msg);
        }
    }
}

/// Validate merged request params (query + body) against `op`'s parameter schema.
///
/// `from_form` tells whether values came from a query string / form body (always strings) or
/// from a JSON body; PVE applies the same rules to both, so it only documents the caller's
/// intent: `'1'`/`'0'` are the only string booleans either way, and JSON `true`/`false` pass.
/// Returns the params converted to typed JSON values (integers and numbers as numbers,
/// booleans as bools, other scalars as strings; JSON `null` dropped) or the errors map for
/// `400 Parameter verification failed.`
pub fn validate(
    op: &Operation,
    params: &BTreeMap<String, Value>,
    from_form: bool,
) -> Result<BTreeMap<String, Value>, Errors> {
    let _ = from_form;
    let schema = &op.params;
    let params = normalize_legacy(params, &schema.properties);
    let mut errors = Errors::new();
    check_object(
        "",
        &schema.properties,
        &params,
        schema.additional_properties,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(params
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let typed = match schema.properties.get(k) {
                Some(p) => convert(v, p),
                None => v.clone(),
            };
            (k.clone(), typed)
        })
        .collect())
}

/// `$normalize_legacy_param_formats`: arrays for `-list` strings are joined with `,`, scalars
/// for `array` properties are wrapped (only for Perl-true values).
fn normalize_legacy(
    params: &BTreeMap<String, Value>,
    props: &BTreeMap<String, PropSchema>,
) -> BTreeMap<String, Value> {
    let mut out = params.clone();
    for (key, prop) in props {
        let Some(value) = out.get_mut(key) else {
            continue;
        };
        if !truthy(Some(value)) {
            continue;
        }
        let list_format = matches!(&prop.format, Some(Format::Named(f)) if f.ends_with("-list"));
        match value {
            Value::Array(a) if prop.ty.as_deref() == Some("string") && list_format => {
                *value = Value::String(a.iter().map(perl_str).collect::<Vec<_>>().join(","));
            }
            Value::Array(_) | Value::Object(_) => {}
            _ if prop.ty.as_deref() == Some("array") => *value = Value::Array(vec![value.clone()]),
            _ => {}
        }
    }
    out
}

/// `check_object` over a map of JSON values.
fn check_object(
    path: &str,
    schema: &BTreeMap<String, PropSchema>,
    value: &BTreeMap<String, Value>,
    additional_properties: bool,
    errors: &mut Errors,
) {
    for (k, prop) in schema {
        check_prop(value.get(k), prop, &join(path, k), errors);
    }
    for k in value.keys() {
        let newpath = join(path, k);
        if let Some(prop) = schema.get(k) {
            if let Some(req) = &prop.requires
                && value.get(req).is_none_or(Value::is_null)
            {
                add_error(
                    errors,
                    &join(path, req),
                    format!("missing property - '{newpath}' requires this property"),
                );
            }
            continue;
        }
        if !additional_properties {
            add_error(
                errors,
                &newpath,
                "property is not defined in schema and the schema does not allow additional properties"
                    .into(),
            );
        }
    }
}

/// `check_object` for a parsed property string (all values are strings).
pub(crate) fn check_object_strings(
    path: &str,
    schema: &BTreeMap<String, PropSchema>,
    value: &BTreeMap<String, String>,
    errors: &mut Errors,
) {
    let value: BTreeMap<String, Value> = value
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    check_object(path, schema, &value, false, errors);
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `check_prop`
fn check_prop(value: Option<&Value>, schema: &PropSchema, path: &str, errors: &mut Errors) {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        if schema.ty.as_deref() == Some("null") {
            return;
        }
        if !schema.optional && schema.alias.is_none() {
            add_error(
                errors,
                path,
                "property is missing and it is not optional".into(),
            );
        }
        return;
    };
    if let Err(msg) = check_type(schema.ty.as_deref(), value) {
        add_error(errors, path, msg);
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                for (i, el) in items.iter().enumerate() {
                    check_prop(Some(el), item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(obj) => {
            if schema.properties.is_some() || schema.additional_properties {
                let empty = BTreeMap::new();
                let props = schema.properties.as_ref().unwrap_or(&empty);
                let map: BTreeMap<String, Value> =
                    obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                check_object(path, props, &map, schema.additional_properties, errors);
            }
        }
        Value::Bool(_) => {}
        _ => check_scalar(&perl_str(value), schema, path, errors),
    }
}

fn check_scalar(value: &str, schema: &PropSchema, path: &str, errors: &mut Errors) {
    if let Some(format) = &schema.format
        && let Err(e) = check_format(format, value, path)
    {
        add_error(errors, path, format!("invalid format - {e}"));
        return;
    }
    if let Some(pattern) = &schema.pattern
        && !pattern.matches(value)
    {
        add_error(
            errors,
            path,
            "value does not match the regex pattern".into(),
        );
        return;
    }
    let len = value.chars().count() as u64;
    if let Some(max) = schema.max_length
        && len > max
    {
        add_error(
            errors,
            path,
            format!("value may only be {max} characters long"),
        );
        return;
    }
    if let Some(min) = schema.min_length
        && len < min
    {
        add_error(
            errors,
            path,
            format!("value must be at least {min} characters long"),
        );
        return;
    }
    if is_number(value) {
        let n = value.trim().parse::<f64>().unwrap_or(f64::NAN);
        if let Some(max) = &schema.maximum
            && n > max.value
        {
            add_error(
                errors,
                path,
                format!("value must have a maximum value of {}", max.text),
            );
            return;
        }
        if let Some(min) = &schema.minimum
            && n < min.value
        {
            add_error(
                errors,
                path,
                format!("value must have a minimum value of {}", min.text),
            );
            return;
        }
    }
    if let Some(values) = &schema.enumeration
        && !values.iter().any(|e| e == value)
    {
        add_error(
            errors,
            path,
            format!(
                "value '{value}' does not have a value in the enumeration '{}'",
                values.join(", ")
            ),
        );
    }
}

/// `check_type` for one (defined) value.
fn check_type(ty: Option<&str>, value: &Value) -> Result<(), String> {
    let Some(ty) = ty else { return Ok(()) };
    match ty {
        "any" => Ok(()),
        "null" => Err("type check ('null') failed - value is not null".into()),
        "array" if !value.is_array() => Err("type check ('array') failed".into()),
        "object" if !value.is_object() => Err("type check ('object') failed".into()),
        "array" | "object" => Ok(()),
        _ => match value {
            Value::Array(_) => Err(format!("type check ('{ty}') failed - got ARRAY")),
            Value::Object(_) => Err(format!("type check ('{ty}') failed - got HASH")),
            Value::Bool(_) if ty == "boolean" => Ok(()),
            Value::Bool(_) => Err(format!(
                "type check ('{ty}') failed - got JSON::PP::Boolean"
            )),
            _ => {
                let s = perl_str(value);
                let ok = match ty {
                    "boolean" => s == "1" || s == "0",
                    "integer" => is_integer(&s),
                    "number" => is_number(&s),
                    _ => true,
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("type check ('{ty}') failed - got '{s}'"))
                }
            }
        },
    }
}

/// `is_integer`: `m/^[+-]?\d+$/` (`$` also before a final newline).
fn is_integer(s: &str) -> bool {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// `is_number`: `m/^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$/`
fn is_number(s: &str) -> bool {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => (digits(a) && (b.is_empty() || digits(b))) || (a.is_empty() && digits(b)),
        None => digits(mantissa),
    };
    let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exp_ok
}

/// Typed value for a validated parameter.
fn convert(v: &Value, schema: &PropSchema) -> Value {
    match (schema.ty.as_deref(), v) {
        (Some("boolean"), Value::Bool(_)) => v.clone(),
        (Some("boolean"), _) => Value::Bool(perl_str(v) == "1"),
        (Some("integer"), Value::String(s)) => {
            let t = s.trim_end_matches('\n').trim_start_matches('+');
            t.parse::<i64>().map(Value::from).unwrap_or_else(|_| {
                t.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map_or_else(|| v.clone(), Value::Number)
            })
        }
        (Some("number"), Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| v.clone(), Value::Number),
        (Some("string"), Value::Number(n)) => {
            Value::String(n.as_f64().map_or_else(|| n.to_string(), perl_num))
        }
        (Some("object"), Value::Object(o)) => Value::Object(Map::clone(o)),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_number_predicates() {
        for s in ["1", "+1", "-12", "7\n"] {
            assert!(is_integer(s), "{s}");
        }
        for s in ["", "1.0", "abc", "1 ", "--1"] {
            assert!(!is_integer(s), "{s}");
        }
        for s in ["1", "1.", ".5", "1.5e3", "-2E-2"] {
            assert!(is_number(s), "{s}");
        }
        for s in [".", "e3", "1e", "abc", "1.2.3"] {
            assert!(!is_number(s), "{s}");
        }
    }

    #[test]
    fn type_checks_like_perl() {
        assert_eq!(check_type(Some("boolean"), &Value::from("1")), Ok(()));
        assert_eq!(check_type(Some("boolean"), &Value::from(true)), Ok(()));
        assert_eq!(check_type(Some("boolean"), &Value::from(0)), Ok(()));
        assert_eq!(
            check_type(Some("boolean"), &Value::from("true")),
            Err("type check ('boolean') failed - got 'true'".into())
        );
        assert_eq!(
            check_type(Some("integer"), &Value::from(true)),
            Err("type check ('integer') failed - got JSON::PP::Boolean".into())
        );
        assert_eq!(
            check_type(Some("string"), &serde_json::json!(["a"])),
            Err("type check ('string') failed - got ARRAY".into())
        );
        assert_eq!(
            check_type(Some("integer"), &serde_json::json!(101.0)),
            Ok(())
        );
        assert_eq!(
            check_type(Some("integer"), &serde_json::json!(1.5)),
            Err("type check ('integer') failed - got '1.5'".into())
        );
    }

    #[test]
    fn repeated_errors_join_with_literal_backslash_n() {
        let mut e = Errors::new();
        add_error(&mut e, "a", "one".into());
        add_error(&mut e, "a", "two".into());
        add_error(&mut e, "", "root".into());
        assert_eq!(e["a"], "one\\ntwo");
        assert_eq!(e["_root"], "root");
    }
}
