//! [`Section`]: one table of the document, its keys checked against [`KEYS`] when opened, with
//! typed accessors whose errors name the dotted key and point at the value (or, for a missing
//! key, at the section).

use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Ctx, Span, Val, children, distance};
use crate::config::values::{parse_duration, parse_schedule};
use crate::config::{ConfigError, Schedule};

/// One table of the document with its keys already checked against the schema.
pub(super) struct Section<'a, 'i> {
    pub(super) ctx: &'a Ctx<'a>,
    /// Dotted display name ("" for the root, "quiesce.hooks[0]" for an array entry).
    pub(super) name: String,
    /// Where "missing key" errors point.
    pub(super) span: Span,
    pub(super) entries: Vec<(&'a str, Span, &'a Val<'i>)>,
}

impl<'a, 'i> Section<'a, 'i> {
    pub(super) fn open(
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

    pub(super) fn empty(ctx: &'a Ctx<'a>, name: String) -> Self {
        Self {
            ctx,
            name,
            span: 0..0,
            entries: Vec::new(),
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    pub(super) fn err_at(&self, key: &str, span: Span, message: impl Into<String>) -> ConfigError {
        self.ctx.invalid(self.key(key), span, message)
    }

    pub(super) fn missing(&self, key: &str, message: &str) -> ConfigError {
        self.err_at(key, self.span.clone(), message)
    }

    pub(super) fn required<T>(
        &self,
        key: &str,
        value: Option<T>,
        what: &str,
    ) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.missing(key, &format!("missing required key: {what}")))
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Val<'i>> {
        self.entries
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|(_, _, v)| *v)
    }

    pub(super) fn wrong_type(&self, key: &str, v: &Val<'_>, expected: &str) -> ConfigError {
        self.err_at(
            key,
            v.span(),
            format!("expected {expected}, found {}", v.get_ref().type_str()),
        )
    }

    pub(super) fn table(&self, key: &str) -> Result<Option<Section<'a, 'i>>, ConfigError> {
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

    pub(super) fn array_of_tables(&self, key: &str) -> Result<Vec<Section<'a, 'i>>, ConfigError> {
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

    pub(super) fn string(&self, key: &str) -> Result<Option<(&'a str, Span)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Ok(Some((s.as_ref(), v.span()))),
                _ => Err(self.wrong_type(key, v, "a string")),
            },
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => Ok(Some(*b)),
                _ => Err(self.wrong_type(key, v, "true or false")),
            },
        }
    }

    pub(super) fn integer(&self, key: &str) -> Result<Option<(i64, Span)>, ConfigError> {
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

    /// An array of integers, each with its own span (for errors about one element).
    pub(super) fn integer_array(&self, key: &str) -> Result<Option<Vec<(i64, Span)>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an array of integers"));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                    .map(|n| (n, item.span()))
                    .map_err(|_| self.err_at(key, item.span(), "integer out of range")),
                _ => Err(self.wrong_type(key, item, "an integer")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A non-negative integer that fits a `u32`.
    pub(super) fn count(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.integer(key)? {
            None => Ok(None),
            Some((n, span)) => u32::try_from(n).map(Some).map_err(|_| {
                self.err_at(
                    key,
                    span,
                    format!(
                        "{n} is out of range: expected an integer from 0 to {}",
                        u32::MAX
                    ),
                )
            }),
        }
    }

    /// A cron schedule (see [`parse_schedule`]); `""` disables it (`None`), an absent key gives
    /// `default` (`""` = disabled by default).
    pub(super) fn schedule(
        &self,
        key: &str,
        default: &str,
    ) -> Result<Option<Schedule>, ConfigError> {
        let (text, span) = match self.string(key)? {
            None => (default, 0..0),
            Some((v, span)) => (v, span),
        };
        if text.is_empty() {
            return Ok(None);
        }
        parse_schedule(text)
            .map(Some)
            .map_err(|m| self.err_at(key, span, m))
    }

    pub(super) fn string_array(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<String>, Span)>, ConfigError> {
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

    /// An array of strings, each with its own span (for errors about one element).
    pub(super) fn string_items(
        &self,
        key: &str,
    ) -> Result<Option<Vec<(String, Span)>>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an array of strings"));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok((s.to_string(), item.span())),
                _ => Err(self.wrong_type(key, item, "a string")),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// A string value run through `f`; `f`'s message is reported at the value.
    pub(super) fn parsed<T>(
        &self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some((s, span)) => f(s).map(Some).map_err(|m| self.err_at(key, span, m)),
        }
    }

    pub(super) fn choice<T: Copy>(
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

    pub(super) fn duration(
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

    pub(super) fn abs_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        self.parsed(key, |v| {
            if v.starts_with('/') {
                Ok(PathBuf::from(v))
            } else {
                Err(format!("path {v:?} must be absolute (start with /)"))
            }
        })
    }
}
