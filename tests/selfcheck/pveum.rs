//! A tiny interpreter for the `pveum` commands `setup-commands` emits, over an RBAC model that
//! it renders as a pve-sim `[access]` scenario. Strict: an unknown subcommand, option or shell
//! construct is an error, so the runbook cannot drift from what is modelled here.
//!
//! Semantics follow pveum / the PVE API: `role add`, `user add`, `user token add` fail when the
//! object exists; `… modify` fails when it does not; `role modify --privs` replaces the set;
//! `user token add` defaults to `--privsep 1`; `acl modify` adds (or updates) entries and needs
//! existing roles, users and tokens. `a 2>/dev/null || b` runs `b` only if `a` failed.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model {
    roles: BTreeMap<String, Vec<String>>,
    users: BTreeMap<String, String>,
    /// token id → privsep
    tokens: BTreeMap<String, bool>,
    /// (path, type, ugid, role) → propagate
    acl: BTreeMap<(String, &'static str, String, String), bool>,
}

/// Shell words of one simple command: `'…'` and `"…"` quoting, `2>/dev/null` dropped; any other
/// shell syntax is refused.
fn words(cmd: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated quote in {cmd}")),
                    }
                }
            }
            ';' | '&' | '|' | '$' | '`' | '<' | '>' | '\\' => {
                return Err(format!("unsupported shell syntax '{c}' in {cmd}"));
            }
            x => {
                in_word = true;
                cur.push(x);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `--key value` pairs; every key must be in `allowed`.
fn options(args: &[String], allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected an option, got '{k}'"))?;
        if !allowed.contains(&key) {
            return Err(format!("unknown option --{key}"));
        }
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        m.insert(key.to_string(), v.clone());
    }
    Ok(m)
}

fn bool_opt(o: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool, String> {
    match o.get(key).map(String::as_str) {
        None => Ok(default),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(format!("--{key} must be 0 or 1, got {v}")),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split([',', ';', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Model {
    /// Runs every `pveum` line of a script (comments and other lines are skipped: they run in
    /// the guest, not on the node).
    pub fn run_script(&mut self, lines: &[String]) -> Result<usize, String> {
        let mut ran = 0;
        for line in lines.iter().map(|l| l.trim()) {
            if !line.starts_with("pveum ") {
                continue;
            }
            let mut last = Err("empty".to_string());
            for alt in line.split(" || ") {
                let alt = alt.trim().trim_end_matches("2>/dev/null").trim();
                last = words(alt).and_then(|w| self.exec(&w));
                if last.is_ok() {
                    break;
                }
            }
            last.map_err(|e| format!("{line}: {e}"))?;
            ran += 1;
        }
        Ok(ran)
    }

    fn exec(&mut self, w: &[String]) -> Result<(), String> {
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        let rest = |n: usize| -> Vec<String> { w[n..].iter().map(|s| s.to_string()).collect() };
        match w.as_slice() {
            ["pveum", "role", "add", role, ..] => {
                let o = options(&rest(4), &["privs"])?;
                if self.roles.contains_key(*role) {
                    return Err(format!("role '{role}' already exists"));
                }
                let privs = o.get("privs").map(|p| list(p)).unwrap_or_default();
                self.roles.insert(role.to_string(), privs);
                Ok(())
            }
            ["pveum", "role", "modify", role, ..] => {
                let o = options(&rest(4), &["privs"])?;
                let r = self
                    .roles
                    .get_mut(*role)
                    .ok_or_else(|| format!("role '{role}' does not exist"))?;
                if let Some(p) = o.get("privs") {
                    *r = list(p);
                }
                Ok(())
            }
            ["pveum", "user", "add", user, ..] => {
                let o = options(&rest(4), &["comment"])?;
                if self.users.contains_key(*user) {
                    return Err(format!("user '{user}' already exists"));
                }
                self.users.insert(
                    user.to_string(),
                    o.get("comment").cloned().unwrap_or_default(),
                );
                Ok(())
            }
            ["pveum", "user", "modify", user, ..] => {
                let o = options(&rest(4), &["comment"])?;
                let u = self
                    .users
                    .get_mut(*user)
                    .ok_or_else(|| format!("no such user ('{user}')"))?;
                if let Some(c) = o.get("comment") {
                    *u = c.clone();
                }
                Ok(())
            }
            ["pveum", "user", "token", "add", user, name, ..] => {
                let o = options(&rest(6), &["privsep", "comment"])?;
                if !self.users.contains_key(*user) {
                    return Err(format!("no such user ('{user}')"));
                }
                let id = format!("{user}!{name}");
                if self.tokens.contains_key(&id) {
                    return Err("Token already exists.".to_string());
                }
                self.tokens.insert(id, bool_opt(&o, "privsep", true)?);
                Ok(())
            }
            ["pveum", "user", "token", "modify", user, name, ..] => {
                let o = options(&rest(6), &["privsep", "comment"])?;
                let t = self
                    .tokens
                    .get_mut(&format!("{user}!{name}"))
                    .ok_or_else(|| format!("no such token '{name}' for user '{user}'"))?;
                *t = bool_opt(&o, "privsep", *t)?;
                Ok(())
            }
            ["pveum", "user", "token", "permissions", user, name] => self
                .tokens
                .contains_key(&format!("{user}!{name}"))
                .then_some(())
                .ok_or_else(|| format!("no such token '{name}' for user '{user}'")),
            ["pveum", "acl", "modify", path, ..] => {
                let o = options(&rest(4), &["users", "tokens", "roles", "propagate"])?;
                let roles = list(o.get("roles").ok_or("--roles is required")?);
                let propagate = bool_opt(&o, "propagate", true)?;
                let mut who: Vec<(&'static str, String)> = Vec::new();
                for u in o.get("users").map(|v| list(v)).unwrap_or_default() {
                    if !self.users.contains_key(&u) {
                        return Err(format!("user '{u}' does not exist"));
                    }
                    who.push(("user", u));
                }
                for t in o.get("tokens").map(|v| list(v)).unwrap_or_default() {
                    if !self.tokens.contains_key(&t) {
                        return Err(format!("token '{t}' does not exist"));
                    }
                    who.push(("token", t));
                }
                if who.is_empty() {
                    return Err("no users or tokens given".into());
                }
                for r in &roles {
                    if !self.roles.contains_key(r) {
                        return Err(format!("role '{r}' does not exist"));
                    }
                }
                for (ty, id) in who {
                    for r in &roles {
                        self.acl
                            .insert((path.to_string(), ty, id.clone(), r.clone()), propagate);
                    }
                }
                Ok(())
            }
            other => Err(format!("unsupported pveum command: {}", other.join(" "))),
        }
    }

    /// The model as pve-sim `[access]` TOML; every token gets `secret`.
    pub fn to_access_toml(&self, secret: &str) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut t = String::new();
        for (role, privs) in &self.roles {
            let privs: Vec<String> = privs.iter().map(|p| q(p)).collect();
            t.push_str(&format!(
                "[[access.roles]]\nroleid = {}\nprivs = [{}]\n",
                q(role),
                privs.join(", ")
            ));
        }
        for user in self.users.keys() {
            t.push_str(&format!("[[access.users]]\nuserid = {}\n", q(user)));
        }
        for (id, privsep) in &self.tokens {
            t.push_str(&format!(
                "[[access.tokens]]\ntokenid = {}\nsecret = {}\nprivsep = {privsep}\n",
                q(id),
                q(secret)
            ));
        }
        for ((path, ty, ugid, role), propagate) in &self.acl {
            t.push_str(&format!(
                "[[access.acl]]\npath = {}\nroleid = {}\nugid = {}\ntype = \"{ty}\"\npropagate = {propagate}\n",
                q(path),
                q(role),
                q(ugid)
            ));
        }
        t
    }
}
