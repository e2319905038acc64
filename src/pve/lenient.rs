//! Lenient serde helpers for PVE's loosely typed JSON (reference §7 "Envelope").
//!
//! Perl booleans arrive as `0`/`1`, `"0"`/`"1"`, real booleans or words (`yes`, `on`, …);
//! integers may arrive as numbers or numeric strings. These helpers accept all of those and
//! reject anything else with a clear message. Pure, no I/O.

use serde::Deserialize;
use serde::de::{Deserializer, Error};
use serde_json::Value;

/// Interpret a PVE boolean value.
pub fn value_to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => str_to_bool(s),
        _ => None,
    }
}

/// Interpret a PVE boolean written as text (`1`, `0`, `yes`, `no`, `on`, `off`, `true`, `false`).
pub fn str_to_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

fn value_to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn value_to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean (required).
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    value_to_bool(&v).ok_or_else(|| D::Error::custom(format!("expected a boolean, got {v}")))
}

/// An optional boolean; `null` is `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => value_to_bool(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a boolean, got {v}"))),
    }
}

/// A signed integer, number or numeric string.
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    value_to_i64(&v).ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}")))
}

/// An optional signed integer.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => value_to_i64(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}"))),
    }
}

/// An unsigned integer, number or numeric string.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    value_to_u64(&v)
        .ok_or_else(|| D::Error::custom(format!("expected an unsigned integer, got {v}")))
}

/// An optional unsigned integer.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => value_to_u64(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected an unsigned integer, got {v}"))),
    }
}

/// A `u32` (pid, vmid), number or numeric string.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u64(d)?;
    u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

/// An optional `u32`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match opt_u64(d)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{n} is out of range"))),
    }
}

/// A string that PVE may also send as a number (task `id`, for example).
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Null => Ok(String::new()),
        v => Err(D::Error::custom(format!("expected a string, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "bool")]
        b: bool,
        #[serde(default, deserialize_with = "opt_bool")]
        ob: Option<bool>,
        #[serde(deserialize_with = "u64")]
        n: u64,
        #[serde(default, deserialize_with = "opt_i64")]
        oi: Option<i64>,
        #[serde(deserialize_with = "string")]
        s: String,
    }

    #[test]
    fn accepts_pve_shapes() {
        let t: T = serde_json::from_str(r#"{"b":1,"ob":"0","n":"42","oi":-3,"s":101}"#).unwrap();
        assert_eq!(
            t,
            T {
                b: true,
                ob: Some(false),
                n: 42,
                oi: Some(-3),
                s: "101".into()
            }
        );
        let t: T = serde_json::from_str(r#"{"b":false,"n":7.0,"s":"x","extra":[1]}"#).unwrap();
        assert_eq!(t.ob, None);
        assert_eq!(t.oi, None);
        assert_eq!(t.n, 7);
        assert!(!t.b);
    }

    #[test]
    fn rejects_garbage() {
        let e = serde_json::from_str::<T>(r#"{"b":"maybe","n":1,"s":""}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("expected a boolean, got \"maybe\""),
            "{e}"
        );
        let e = serde_json::from_str::<T>(r#"{"b":1,"n":-1,"s":""}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("expected an unsigned integer, got -1"),
            "{e}"
        );
    }
}
