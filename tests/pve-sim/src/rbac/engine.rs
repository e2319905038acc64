//! The permission engine: `AccessControl::roles` (the ACL walk), the pool part of
//! `RPCEnvironment::$compile_acl_path`, `permissions` with the privsep token intersection,
//! `check`/`check_any` and `get_effective_permissions`. Read-only over [`Rbac`]; see the parent
//! module docs for the exact rules.

use std::collections::{BTreeMap, BTreeSet};

use super::{AuthId, ROOT, Rbac, RoleFlags, Subject, builtin, ids};

impl Rbac {
    /// `AccessControl::roles`: role → propagate flag effective on `path` (normalized) for
    /// `subject`, pools not considered.
    fn roles_on(&self, subject: Subject<'_>, path: &str) -> RoleFlags {
        let segs = ids::segments(path);
        let mut roles = RoleFlags::new();
        let mut prefix = String::new();
        for level in 0..=segs.len() {
            let final_level = level == segs.len();
            let at = if level == 0 {
                "/".to_string()
            } else {
                prefix.push('/');
                prefix.push_str(segs[level - 1]);
                prefix.clone()
            };
            let Some(node) = self.acl.get(&at) else {
                continue;
            };
            let applicable = |flags: &RoleFlags, out: &mut RoleFlags| {
                for (role, &propagate) in flags {
                    if final_level || propagate {
                        let e = out.entry(role.clone()).or_insert(false);
                        *e = *e || propagate;
                    }
                }
            };
            let mut new = RoleFlags::new();
            match subject {
                Subject::Token(tokenid) => {
                    if let Some(flags) = node.tokens.get(tokenid) {
                        applicable(flags, &mut new);
                    }
                }
                Subject::User(userid) => {
                    if let Some(flags) = node.users.get(userid) {
                        applicable(flags, &mut new);
                    }
                    if new.is_empty() {
                        for (group, flags) in &node.groups {
                            if self.groups.get(group).is_some_and(|m| m.contains(userid)) {
                                applicable(flags, &mut new);
                            }
                        }
                    }
                }
            }
            if !new.is_empty() {
                roles = new;
            }
        }
        match roles.get("NoAccess") {
            Some(&flag) => RoleFlags::from([("NoAccess".to_string(), flag)]),
            None => roles,
        }
    }

    /// Roles a subject gets on a pool member path from the ACLs of the pools containing it.
    fn pool_roles_on(&self, subject: Subject<'_>, path: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let segs = ids::segments(path);
        for (poolid, pool) in &self.pools {
            let member = match segs.as_slice() {
                ["vms", id] => id
                    .parse::<u32>()
                    .is_ok_and(|v| pool.vms.contains(&v) && v.to_string() == *id),
                ["storage", sid] => pool.storage.contains(*sid),
                _ => false,
            };
            if member {
                out.extend(
                    self.roles_on(subject, &format!("/pool/{poolid}"))
                        .into_keys(),
                );
            }
        }
        out
    }

    /// `$compile_acl_path` without the token intersection: privilege → propagate flag.
    fn compile(&self, subject: Subject<'_>, path: &str) -> BTreeMap<String, bool> {
        let mut roles = self.roles_on(subject, path);
        let pool_roles = self.pool_roles_on(subject, path);
        if !pool_roles.is_empty() && !roles.contains_key("NoAccess") {
            if pool_roles.contains("NoAccess") {
                roles = RoleFlags::from([("NoAccess".to_string(), false)]);
            } else {
                for role in pool_roles {
                    roles.entry(role).or_insert(false);
                }
            }
        }
        let mut privs = BTreeMap::new();
        for (role, &propagate) in &roles {
            for p in self.roles.get(role).into_iter().flatten() {
                let e = privs.entry(p.clone()).or_insert(false);
                *e = *e || propagate;
            }
        }
        privs
    }

    /// `RPCEnvironment::permissions`: the effective privileges on exactly `path`, each with its
    /// propagate flag. An unnormalizable path or an unknown token has no privileges.
    pub fn privileges(&self, authid: &AuthId, path: &str) -> BTreeMap<String, bool> {
        if authid.is_root() {
            return builtin::ALL_PRIVILEGES
                .iter()
                .map(|p| (p.to_string(), true))
                .collect();
        }
        let Some(path) = ids::normalize_path(path) else {
            return BTreeMap::new();
        };
        let Some(token) = &authid.token else {
            return self.compile(Subject::User(&authid.user), &path);
        };
        let Some(info) = self.tokens.get(&(authid.user.clone(), token.clone())) else {
            return BTreeMap::new();
        };
        let user_privs = self.privileges(&AuthId::user(&authid.user), &path);
        if !info.privsep {
            return user_privs;
        }
        let token_privs = self.compile(Subject::Token(&authid.full()), &path);
        if authid.user == ROOT {
            return token_privs;
        }
        token_privs
            .into_iter()
            .filter_map(|(p, tp)| user_privs.get(&p).map(|&up| (p, up && tp)))
            .collect()
    }

    /// `check` (all of `privs`) or `check_any` (any of `privs`) on `path`. An unknown privilege
    /// name never passes (PVE dies with "invalid privilege").
    pub fn check(&self, authid: &AuthId, path: &str, privs: &[&str], any: bool) -> bool {
        let perms = self.privileges(authid, path);
        let has = |p: &&str| builtin::is_valid_privilege(p) && perms.contains_key(*p);
        if any {
            privs.iter().any(has)
        } else {
            privs.iter().all(has)
        }
    }

    /// `get_effective_permissions`: what `GET /access/permissions` returns without `path`.
    pub fn permissions_tree(&self, authid: &AuthId) -> BTreeMap<String, BTreeMap<String, bool>> {
        let mut paths: BTreeSet<String> = [
            "/",
            "/access",
            "/access/groups",
            "/nodes",
            "/pool",
            "/sdn",
            "/storage",
            "/vms",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // iterate_acl_tree visits every node, including the intermediate ones an ACL created.
        for path in self.acl.keys() {
            let mut prefix = String::new();
            for seg in ids::segments(path) {
                prefix.push('/');
                prefix.push_str(seg);
                paths.insert(prefix.clone());
            }
        }
        for pool in self.pools.values() {
            paths.extend(pool.vms.iter().map(|v| format!("/vms/{v}")));
            paths.extend(pool.storage.iter().map(|s| format!("/storage/{s}")));
        }
        paths
            .into_iter()
            .filter_map(|p| {
                let privs = self.privileges(authid, &p);
                (!privs.is_empty()).then_some((p, privs))
            })
            .collect()
    }
}
