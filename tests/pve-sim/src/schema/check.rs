//! Permission-check expressions (`permissions => { check => [...] }`) and their evaluation as
//! `PVE::RPCEnvironment::exec_api2_perm_check` does it, producing PVE's 403 messages.
//!
//! Invariants: evaluation follows the Perl control flow exactly, including its quirks:
//! * `and` runs its sub-checks *fatally*, so the first failing `perm` reports its own
//!   `(path, priv)` message, even when the `and` sits inside an `or`;
//! * `or` runs its sub-checks non-fatally and fails with the plain `Permission check failed`;
//! * a non-`any` `perm` reports the first missing privilege, an `any` one all privileges
//!   joined with `|`;
//! * `{var}` placeholders missing from the request become `-`; a path that does not normalise
//!   is checked as an undefined path (never granted, message with an empty path).
//!
//! `userid-group` and `userid-param` need the caller's identity and the user database, which
//! the `has` callback does not carry: they are denied with the plain message. None of the
//! simulator's routes uses them.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed `check` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckExpr {
    /// `["perm", path, [privs], "any", 1]`
    Perm {
        path: String,
        privs: Vec<String>,
        any: bool,
    },
    /// `["perm", path, [privs], "require_param", name]`: fails unless `name` is given.
    PermRequireParam {
        param: String,
        check: Box<CheckExpr>,
    },
    And(Vec<CheckExpr>),
    Or(Vec<CheckExpr>),
    /// `["userid-group", [privs], "groups_param", "create"|"update"]`
    UseridGroup {
        privs: Vec<String>,
        groups_param: Option<String>,
    },
    /// `["userid-param", "self" | "Realm.AllocateUser"]`
    UseridParam {
        subtest: String,
    },
    /// `["perm-modify", "{path}"]`
    PermModify {
        path: String,
    },
}

const PLAIN: &str = "Permission check failed";

impl CheckExpr {
    /// Parses one `check` array of the API dump.
    pub fn from_json(v: &Value) -> Result<CheckExpr, String> {
        let a = v
            .as_array()
            .ok_or_else(|| format!("check is not an array: {v}"))?;
        let test = a
            .first()
            .and_then(Value::as_str)
            .ok_or("no permission test specified")?;
        let strs = |v: Option<&Value>| -> Result<Vec<String>, String> {
            v.and_then(Value::as_array)
                .ok_or_else(|| format!("missing privilege list in {test} check"))?
                .iter()
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .ok_or("privilege is not a string".into())
                })
                .collect()
        };
        let options = |from: usize| -> BTreeMap<String, Value> {
            a[from.min(a.len())..]
                .chunks(2)
                .filter_map(|c| Some((c[0].as_str()?.to_string(), c.get(1)?.clone())))
                .collect()
        };
        match test {
            "and" | "or" => {
                let subs = a[1..]
                    .iter()
                    .map(CheckExpr::from_json)
                    .collect::<Result<_, _>>()?;
                Ok(if test == "and" {
                    CheckExpr::And(subs)
                } else {
                    CheckExpr::Or(subs)
                })
            }
            "perm" => {
                let path = a
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or("missing parameters")?;
                let opts = options(3);
                let perm = CheckExpr::Perm {
                    path: path.to_string(),
                    privs: strs(a.get(2))?,
                    any: super::param::truthy(opts.get("any")),
                };
                Ok(match opts.get("require_param").and_then(Value::as_str) {
                    Some(p) if !p.is_empty() => CheckExpr::PermRequireParam {
                        param: p.to_string(),
                        check: Box::new(perm),
                    },
                    _ => perm,
                })
            }
            "userid-group" => Ok(CheckExpr::UseridGroup {
                privs: strs(a.get(1))?,
                groups_param: options(2)
                    .get("groups_param")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }),
            "userid-param" => Ok(CheckExpr::UseridParam {
                subtest: a
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or("missing parameters")?
                    .to_string(),
            }),
            "perm-modify" => Ok(CheckExpr::PermModify {
                path: a
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or("missing parameters")?
                    .to_string(),
            }),
            other => Err(format!("unknown permission test '{other}'")),
        }
    }

    /// `vars`: uri params + request params used to fill `{vmid}` etc. `has(path, privs, any)`
    /// answers from RBAC. Ok(()) or Err(message) where message is exactly what PVE puts in the
    /// 403 (without the trailing newline), e.g. `Permission check failed (/vms/102, VM.Audit)`.
    pub fn eval(
        &self,
        vars: &BTreeMap<String, String>,
        has: &dyn Fn(&str, &[&str], bool) -> bool,
    ) -> Result<(), String> {
        self.exec(vars, has, false).map(|_| ())
    }

    /// `exec_api2_perm_check`: Ok(true) granted, Ok(false) denied under `noerr`, Err = raised.
    fn exec(
        &self,
        vars: &BTreeMap<String, String>,
        has: &dyn Fn(&str, &[&str], bool) -> bool,
        noerr: bool,
    ) -> Result<bool, String> {
        match self {
            CheckExpr::And(subs) => {
                for sub in subs {
                    sub.exec(vars, has, false)?;
                }
                Ok(true)
            }
            CheckExpr::Or(subs) => {
                for sub in subs {
                    if sub.exec(vars, has, true)? {
                        return Ok(true);
                    }
                }
                deny(noerr, PLAIN.into())
            }
            CheckExpr::PermRequireParam { param, check } => {
                if !vars.contains_key(param) {
                    return deny(noerr, PLAIN.into());
                }
                check.exec(vars, has, noerr)
            }
            CheckExpr::Perm { path, privs, any } => {
                let path = normalize_path(&template_replace(path, vars));
                check_full(path.as_deref(), privs, *any, has, noerr)
            }
            CheckExpr::PermModify { path } => {
                let Some(path) = normalize_path(&template_replace(path, vars)) else {
                    return Ok(false);
                };
                let mut privs = vec!["Permissions.Modify".to_string()];
                let extra = [
                    ("/storage/", "Datastore.Allocate"),
                    ("/vms/", "VM.Allocate"),
                    ("/pool/", "Pool.Allocate"),
                ];
                if let Some((_, p)) = extra
                    .iter()
                    .find(|(prefix, _)| path.len() > prefix.len() && path.starts_with(prefix))
                {
                    privs.push(p.to_string());
                }
                check_full(Some(&path), &privs, true, has, noerr)
            }
            CheckExpr::UseridGroup { .. } | CheckExpr::UseridParam { .. } => {
                deny(noerr, PLAIN.into())
            }
        }
    }
}

fn deny(noerr: bool, msg: String) -> Result<bool, String> {
    if noerr { Ok(false) } else { Err(msg) }
}

/// `check_full` → `check` / `check_any`. An undefined path has no privileges at all.
fn check_full(
    path: Option<&str>,
    privs: &[String],
    any: bool,
    has: &dyn Fn(&str, &[&str], bool) -> bool,
    noerr: bool,
) -> Result<bool, String> {
    let shown = path.unwrap_or("");
    if any {
        let refs: Vec<&str> = privs.iter().map(String::as_str).collect();
        if path.is_some_and(|p| has(p, &refs, true)) {
            return Ok(true);
        }
        return deny(noerr, format!("{PLAIN} ({shown}, {})", privs.join("|")));
    }
    for p in privs {
        if !path.is_some_and(|path| has(path, &[p.as_str()], false)) {
            return deny(noerr, format!("{PLAIN} ({shown}, {p})"));
        }
    }
    Ok(true)
}

/// `PVE::Tools::template_replace`: `{name}` → value, or `-` when missing or Perl-false.
pub fn template_replace(tmpl: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(tmpl.len());
    let mut rest = tmpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if close > 0 => {
                let value = vars.get(&after[..close]).map(String::as_str);
                match value {
                    Some(v) if !v.is_empty() && v != "0" => out.push_str(v),
                    _ => out.push('-'),
                }
                rest = &after[close + 1..];
            }
            _ => {
                // an unmatched '{' is dropped by the Perl loop, like the text after it up to
                // the next '{'-free run is kept
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `PVE::AccessControl::normalize_path`
pub fn normalize_path(path: &str) -> Option<String> {
    if path.is_empty() || path == "0" {
        return None;
    }
    let mut p = String::with_capacity(path.len() + 1);
    for c in path.chars() {
        if !(c == '/' && p.ends_with('/')) {
            p.push(c);
        }
    }
    if p.ends_with('/') {
        p.pop();
    }
    if p.is_empty() {
        p.push('/');
    }
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    p.chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        .then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// RBAC stub: a set of (path, priv) grants.
    fn grants(
        list: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str, &[&str], bool) -> bool {
        move |path, privs, any| {
            let held = |p: &&str| list.iter().any(|(gp, gv)| *gp == path && gv == p);
            if any {
                privs.iter().any(held)
            } else {
                privs.iter().all(held)
            }
        }
    }

    #[test]
    fn perm_message_names_path_and_first_missing_priv() {
        let c = CheckExpr::from_json(&json!(["perm", "/vms/{vmid}", ["VM.Audit", "VM.Monitor"]]))
            .unwrap();
        let has = grants(&[("/vms/101", "VM.Audit")]);
        assert_eq!(
            c.eval(&vars(&[("vmid", "102")]), &has),
            Err("Permission check failed (/vms/102, VM.Audit)".into())
        );
        assert_eq!(
            c.eval(&vars(&[("vmid", "101")]), &has),
            Err("Permission check failed (/vms/101, VM.Monitor)".into())
        );
    }

    #[test]
    fn any_joins_privs_with_pipe() {
        let c = CheckExpr::from_json(&json!([
            "perm",
            "/storage/{storage}",
            ["Datastore.Audit", "Datastore.AllocateSpace"],
            "any",
            1
        ]))
        .unwrap();
        let has = grants(&[("/storage/pbs", "Datastore.AllocateSpace")]);
        assert_eq!(c.eval(&vars(&[("storage", "pbs")]), &has), Ok(()));
        assert_eq!(
            c.eval(&vars(&[("storage", "x")]), &has),
            Err(
                "Permission check failed (/storage/x, Datastore.Audit|Datastore.AllocateSpace)"
                    .into()
            )
        );
    }

    #[test]
    fn or_is_plain_and_and_reports_the_failing_perm() {
        let or = CheckExpr::from_json(&json!([
            "or",
            ["perm", "/vms/{vmid}", ["VM.Audit"]],
            ["perm", "/", ["Sys.Audit"]]
        ]))
        .unwrap();
        let has = grants(&[]);
        assert_eq!(
            or.eval(&vars(&[("vmid", "1")]), &has),
            Err("Permission check failed".into())
        );
        let and = CheckExpr::from_json(&json!([
            "and",
            ["perm", "/vms/{vmid}", ["VM.Clone"]],
            ["perm", "/vms/{newid}", ["VM.Allocate"]]
        ]))
        .unwrap();
        let has = grants(&[("/vms/100", "VM.Clone")]);
        assert_eq!(
            and.eval(&vars(&[("vmid", "100"), ("newid", "200")]), &has),
            Err("Permission check failed (/vms/200, VM.Allocate)".into())
        );
        // an `and` inside an `or` still raises its own message (Perl runs it without noerr)
        let nested = CheckExpr::Or(vec![
            and.clone(),
            CheckExpr::Perm {
                path: "/".into(),
                privs: vec!["Sys.Audit".into()],
                any: false,
            },
        ]);
        assert_eq!(
            nested.eval(&vars(&[("vmid", "100"), ("newid", "200")]), &has),
            Err("Permission check failed (/vms/200, VM.Allocate)".into())
        );
    }

    #[test]
    fn require_param_and_missing_vars() {
        let c = CheckExpr::from_json(&json!([
            "perm",
            "/pool/{pool}",
            ["VM.Allocate"],
            "require_param",
            "pool"
        ]))
        .unwrap();
        assert!(matches!(c, CheckExpr::PermRequireParam { .. }));
        let has = grants(&[("/pool/p1", "VM.Allocate")]);
        assert_eq!(
            c.eval(&vars(&[]), &has),
            Err("Permission check failed".into())
        );
        assert_eq!(c.eval(&vars(&[("pool", "p1")]), &has), Ok(()));
        let c = CheckExpr::from_json(&json!(["perm", "/vms/{vmid}", ["VM.Audit"]])).unwrap();
        assert_eq!(
            c.eval(&vars(&[]), &has),
            Err("Permission check failed (/vms/-, VM.Audit)".into())
        );
        // not normalisable: undefined path, never granted
        let always = |_: &str, _: &[&str], _: bool| true;
        assert_eq!(
            c.eval(&vars(&[("vmid", "a:b")]), &always),
            Err("Permission check failed (, VM.Audit)".into())
        );
    }

    #[test]
    fn path_helpers() {
        assert_eq!(
            template_replace("/vms/{vmid}", &vars(&[("vmid", "0")])),
            "/vms/-"
        );
        assert_eq!(template_replace("{path}", &vars(&[("path", "/a")])), "/a");
        assert_eq!(normalize_path("//vms//101/").as_deref(), Some("/vms/101"));
        assert_eq!(normalize_path("vms").as_deref(), Some("/vms"));
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/vms/a b"), None);
    }

    #[test]
    fn perm_modify_and_userid_checks() {
        let c = CheckExpr::from_json(&json!(["perm-modify", "{path}"])).unwrap();
        let has = grants(&[("/vms/100", "VM.Allocate")]);
        assert_eq!(c.eval(&vars(&[("path", "/vms/100")]), &has), Ok(()));
        assert_eq!(
            c.eval(&vars(&[("path", "/vms/101")]), &has),
            Err("Permission check failed (/vms/101, Permissions.Modify|VM.Allocate)".into())
        );
        let u = CheckExpr::from_json(&json!(["userid-param", "self"])).unwrap();
        assert_eq!(
            u,
            CheckExpr::UseridParam {
                subtest: "self".into()
            }
        );
        assert_eq!(
            u.eval(&vars(&[]), &has),
            Err("Permission check failed".into())
        );
        let g = CheckExpr::from_json(&json!([
            "userid-group",
            ["User.Modify"],
            "groups_param",
            "create"
        ]))
        .unwrap();
        assert_eq!(
            g,
            CheckExpr::UseridGroup {
                privs: vec!["User.Modify".into()],
                groups_param: Some("create".into())
            }
        );
    }
}
