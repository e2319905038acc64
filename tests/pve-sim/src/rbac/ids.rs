//! Syntax of PVE identifiers and ACL paths: user ids, token ids, group/role/pool/storage ids,
//! `normalize_path` and the ACL path whitelist `check_path`.
//!
//! Sources: pve-access-control `PVE/Auth/Plugin.pm` (`$realm_regex`, `$user_regex`,
//! `verify_username`), `PVE/AccessControl.pm` (`$token_full_regex`, `split_tokenid`,
//! `verify_groupname`, `verify_rolename`, `verify_poolname`, `normalize_path`, `check_path`),
//! and the storage id check of the `pool` line parser. Pure string functions, no allocation
//! beyond the returned values.

/// `$realm_regex`: `[A-Za-z][A-Za-z0-9.\-_]+` (so at least two characters). Token names use it too.
pub fn is_realm_like(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `verify_username`: 3..=64 characters, `<name>@<realm>` where name matches `[^\s:/]+`.
/// Returns `(name, realm)`.
pub fn split_userid(userid: &str) -> Option<(&str, &str)> {
    if userid.len() < 3 || userid.len() > 64 {
        return None;
    }
    let (name, realm) = userid.rsplit_once('@')?;
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '/');
    (name_ok && is_realm_like(realm)).then_some((name, realm))
}

/// `split_tokenid`: `USER@REALM!TOKENID` into `(userid, token name)`. The user part is matched
/// by the greedy user regex, so the split is at the last `!`. (Perl does not apply the 64
/// character limit of user ids here; `verify_token` only meets it when looking the user up.)
pub fn split_tokenid(tokenid: &str) -> Option<(&str, &str)> {
    let (user, token) = tokenid.rsplit_once('!')?;
    let (name, realm) = user.rsplit_once('@')?;
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == '/');
    (name_ok && is_realm_like(realm) && is_realm_like(token)).then_some((user, token))
}

/// `[A-Za-z0-9.\-_]+`: group ids (`verify_groupname`) and role ids (`verify_rolename`).
pub fn is_simple_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// `verify_poolname`: one to three `/`-separated levels of `[A-Za-z0-9.\-_]+`.
pub fn is_poolid(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    levels.len() <= 3 && levels.iter().all(|l| is_simple_id(l))
}

/// Storage id as accepted in a pool definition: `[a-z][a-z0-9\-_.]*[a-z0-9]`, case-insensitive.
pub fn is_storage_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `normalize_path`: squeeze repeated `/`, drop a trailing `/`, make it absolute; `None` for an
/// empty path or one with characters outside `[[:alnum:].\-_/]`.
pub fn normalize_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let norm = format!("/{}", segs.join("/"));
    norm.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        .then_some(norm)
}

/// The segments of a normalized path (`/` has none).
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn alnum(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn alnum_dot_dash_under(s: &str) -> bool {
    is_simple_id(s)
}

fn is_vmid_segment(s: &str) -> bool {
    s.len() >= 3
        && s.starts_with(|c: char| ('1'..='9').contains(&c))
        && s.chars().all(|c| c.is_ascii_digit())
}

fn is_vlan_segment(s: &str) -> bool {
    (1..=4).contains(&s.len())
        && s.starts_with(|c: char| ('1'..='9').contains(&c))
        && s.chars().all(|c| c.is_ascii_digit())
}

/// `check_path`: whether a normalized path may carry an ACL entry (`PUT /access/acl`).
pub fn check_path(path: &str) -> bool {
    let s = segments(path);
    match s.as_slice() {
        [] => true,
        ["access"] | ["access", "groups"] | ["access", "realm"] => true,
        ["access", "groups", g] | ["access", "realm", g] => alnum_dot_dash_under(g),
        ["nodes"] => true,
        ["nodes", n] => alnum_dot_dash_under(n),
        ["pool"] => true,
        ["pool", rest @ ..] => rest.len() <= 3 && rest.iter().all(|p| is_simple_id(p)),
        ["sdn"] | ["sdn", "controllers"] | ["sdn", "dns"] | ["sdn", "ipams"] | ["sdn", "zones"] => {
            true
        }
        ["sdn", "controllers", c] => {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        }
        ["sdn", "dns", d] | ["sdn", "ipams", d] => alnum(d),
        ["sdn", "zones", z] => alnum_dot_dash_under(z),
        ["sdn", "zones", z, v] => alnum_dot_dash_under(z) && alnum_dot_dash_under(v),
        ["sdn", "zones", z, v, vlan] => {
            alnum_dot_dash_under(z) && alnum_dot_dash_under(v) && is_vlan_segment(vlan)
        }
        ["storage"] => true,
        ["storage", st] => alnum_dot_dash_under(st),
        ["vms"] => true,
        ["vms", id] => is_vmid_segment(id),
        ["mapping"] => true,
        ["mapping", a] => alnum_dot_dash_under(a),
        ["mapping", a, b] => alnum_dot_dash_under(a) && alnum_dot_dash_under(b),
        _ => false,
    }
}
