//! A strict little parser for the exposition formats, to check what `/metrics` serves.

use std::collections::BTreeMap;

/// Parsed exposition: family types and samples keyed by `name{labels}` (labels sorted, as
/// `k="v"` joined by `,`; no braces when there are none).
#[derive(Debug, Default)]
pub struct Expo {
    pub types: BTreeMap<String, String>,
    pub samples: BTreeMap<String, f64>,
}

impl Expo {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }
}

/// Parses OpenMetrics (`openmetrics = true`: `# EOF` required last, `# UNIT` allowed, counter
/// samples end in `_total`, info samples in `_info`) or text 0.0.4 (sample names equal the
/// family name). Panics with a message naming the line on any violation.
pub fn parse(text: &str, openmetrics: bool) -> Expo {
    let mut expo = Expo::default();
    let mut family: Option<(String, String)> = None;
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert!(openmetrics, "# EOF in text format");
            assert_eq!(i, lines.len() - 1, "# EOF must be the last line");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("bad line {line:?}"));
            let arg = parts.next().unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kw {
                "HELP" => {}
                "TYPE" => {
                    let allowed: &[&str] = if openmetrics {
                        &[
                            "counter",
                            "gauge",
                            "info",
                            "histogram",
                            "summary",
                            "unknown",
                        ]
                    } else {
                        &["counter", "gauge", "histogram", "summary", "untyped"]
                    };
                    assert!(allowed.contains(&arg), "bad type in {line:?}");
                    assert!(
                        expo.types.insert(name.into(), arg.into()).is_none(),
                        "second TYPE for {name}"
                    );
                    family = Some((name.into(), arg.into()));
                }
                "UNIT" => {
                    assert!(openmetrics, "# UNIT in text format");
                    assert!(
                        name.ends_with(&format!("_{arg}")),
                        "unit not a suffix: {line:?}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line {i}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                (n, parse_labels(inner, line))
            }
            None => (series, Vec::new()),
        };
        let (fam, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before TYPE: {line:?}"));
        let expected = match (openmetrics, kind.as_str()) {
            (true, "counter") => format!("{fam}_total"),
            (true, "info") => format!("{fam}_info"),
            _ => fam.clone(),
        };
        assert_eq!(name, expected, "sample outside its family: {line:?}");
        let mut labels = labels;
        labels.sort();
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            let joined: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", joined.join(","))
        };
        assert!(
            expo.samples.insert(key, value).is_none(),
            "duplicate {line:?}"
        );
    }
    if openmetrics {
        assert_eq!(
            lines.last(),
            Some(&"# EOF"),
            "OpenMetrics must end with # EOF"
        );
    }
    expo
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(inner: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(valid_name(key), "bad label name in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        out.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}
