//! The PVE permission model of the simulator: users, groups, API tokens, roles, ACLs and pools,
//! token authentication, and privilege computation. Pure: no I/O, no clock (callers pass `now`).
//!
//! Semantics follow pve-access-control (spec: `shared/reference/pve-api.md` §6, §7):
//! * `AccessControl::roles` walks the ACL tree from `/` to the path. At each level the first of
//!   token entries (for a token), user entries (for a user), group entries (groups the user is in)
//!   that yields a role replaces everything inherited. A role applies at a level only if that
//!   level is the final one or its propagate flag is set. A `NoAccess` result cancels all roles.
//! * `RPCEnvironment::$compile_acl_path` adds roles from pool ACLs (`/pool/<p>`, itself walked
//!   like any path) to member paths `/vms/<id>` and `/storage/<sid>` with propagate 0, never
//!   overriding a role set by a regular ACL, never trumping a regular `NoAccess`, and a pool
//!   `NoAccess` trumps the regular roles. A privilege's propagate flag is the OR over the roles
//!   that grant it.
//! * `RPCEnvironment::permissions`: `root@pam` has every privilege everywhere (propagate 1); a
//!   non-privsep token has exactly its user's privileges; a privsep token has its own ACL
//!   privileges intersected per path with its user's, propagate being the AND; tokens of
//!   `root@pam` are not intersected.
//! * `AccessControl::verify_token` failures (bad format, unknown/disabled/expired user, unknown
//!   or expired token, wrong secret) are all [`AuthError::Failed`]; no credentials at all is
//!   [`AuthError::NoTicket`].
//!
//! Invariants kept by [`Rbac::from_spec`] and the mutators: every ACL entry names an existing
//! role and an existing user, group or token; every token belongs to an existing user; every
//! group a user is in exists; a VM is in at most one pool; every ACL path passes `check_path`.

mod auth;
mod builtin;
mod engine;
mod ids;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

pub use ids::{check_path, normalize_path};

fn default_true() -> bool {
    true
}

/// The whole access configuration of a simulated cluster (what `user.cfg` + `token.cfg` hold).
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RbacSpec {
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// Custom roles; the built-in ones always exist and cannot be redefined.
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub acl: Vec<AclSpec>,
    #[serde(default)]
    pub pools: Vec<PoolSpec>,
}

/// A user (`user:` line of `user.cfg`).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UserSpec {
    /// `name@realm`.
    pub userid: String,
    #[serde(default = "default_true")]
    pub enable: bool,
    /// Expiry as a Unix epoch; 0 = never.
    #[serde(default)]
    pub expire: i64,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A group (`group:` line).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupSpec {
    pub groupid: String,
}

/// An API token (`token:` line plus its secret from `priv/token.cfg`). PVE tokens have no
/// enable flag: they are revoked by deleting them.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenSpec {
    /// Full id `user@realm!name`.
    pub tokenid: String,
    pub secret: String,
    /// Privilege separation; PVE creates tokens with `privsep=1` by default.
    #[serde(default = "default_true")]
    pub privsep: bool,
    /// Expiry as a Unix epoch; 0 = never.
    #[serde(default)]
    pub expire: i64,
}

/// A custom role (`role:` line).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoleSpec {
    pub roleid: String,
    pub privs: Vec<String>,
}

/// Who an ACL entry is for.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AclType {
    User,
    Group,
    Token,
}

/// One ACL entry (`acl:` line, one role for one user/group/token).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AclSpec {
    pub path: String,
    pub roleid: String,
    /// User id, group id or full token id, according to `type`.
    pub ugid: String,
    pub r#type: AclType,
    #[serde(default = "default_true")]
    pub propagate: bool,
}

/// A resource pool (`pool:` line).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoolSpec {
    pub poolid: String,
    #[serde(default)]
    pub vms: Vec<u32>,
    #[serde(default)]
    pub storage: Vec<String>,
}

/// The members of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub vms: BTreeSet<u32>,
    pub storage: BTreeSet<String>,
}

/// An authenticated identity: a user, or one of its API tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthId {
    /// `user@realm`.
    pub user: String,
    /// The token name (the part after `!`), if this is a token.
    pub token: Option<String>,
}

impl AuthId {
    /// A plain user.
    pub fn user(userid: &str) -> AuthId {
        AuthId {
            user: userid.to_string(),
            token: None,
        }
    }

    /// Parse `user@realm` or `user@realm!token` (syntax only).
    pub fn parse(s: &str) -> Option<AuthId> {
        if let Some((user, token)) = ids::split_tokenid(s) {
            return Some(AuthId {
                user: user.to_string(),
                token: Some(token.to_string()),
            });
        }
        ids::split_userid(s).map(|_| AuthId::user(s))
    }

    /// `user@realm!token` or `user@realm`, as PVE prints an auth id.
    pub fn full(&self) -> String {
        match &self.token {
            Some(t) => format!("{}!{}", self.user, t),
            None => self.user.clone(),
        }
    }

    /// Whether this is the superuser `root@pam` itself. A token of `root@pam` is not: PVE
    /// compares the full auth id with `'root@pam'` wherever it lets root skip checks.
    pub fn is_root(&self) -> bool {
        self.user == ROOT && self.token.is_none()
    }
}

/// Why a request could not be authenticated. Both are `401` with an empty body.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("No ticket")]
    NoTicket,
    #[error("Authentication failed!")]
    Failed,
}

const ROOT: &str = "root@pam";

#[derive(Clone, Debug)]
struct User {
    enable: bool,
    expire: i64,
}

#[derive(Clone, Debug)]
struct Token {
    secret: String,
    privsep: bool,
    expire: i64,
}

/// Role name → propagate flag, for one kind of ACL member at one path.
type RoleFlags = BTreeMap<String, bool>;

#[derive(Clone, Debug, Default)]
struct AclNode {
    users: BTreeMap<String, RoleFlags>,
    groups: BTreeMap<String, RoleFlags>,
    tokens: BTreeMap<String, RoleFlags>,
}

/// Whose roles `roles()` is resolving.
#[derive(Clone, Copy)]
enum Subject<'a> {
    User(&'a str),
    Token(&'a str),
}

/// The access configuration with its permission engine.
#[derive(Clone, Debug)]
pub struct Rbac {
    users: BTreeMap<String, User>,
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Keyed by `(userid, token name)`.
    tokens: BTreeMap<(String, String), Token>,
    roles: BTreeMap<String, BTreeSet<String>>,
    /// Keyed by normalized path.
    acl: BTreeMap<String, AclNode>,
    pools: BTreeMap<String, Pool>,
}

impl Rbac {
    /// Build and validate the configuration; the error names the offending item.
    pub fn from_spec(spec: &RbacSpec) -> Result<Rbac, String> {
        let mut roles: BTreeMap<String, BTreeSet<String>> = builtin::BUILTIN_ROLES
            .iter()
            .map(|(r, p)| (r.to_string(), p.iter().map(|s| s.to_string()).collect()))
            .collect();
        for r in &spec.roles {
            if !ids::is_simple_id(&r.roleid) {
                return Err(format!(
                    "role name '{}' contains invalid characters",
                    r.roleid
                ));
            }
            if builtin::is_builtin_role(&r.roleid) || r.roleid.starts_with("PVE") {
                return Err(format!(
                    "cannot define built-in or reserved role '{}'",
                    r.roleid
                ));
            }
            let mut privs = BTreeSet::new();
            for p in &r.privs {
                if !builtin::is_valid_privilege(p) {
                    return Err(format!("role '{}': invalid privilege '{p}'", r.roleid));
                }
                privs.insert(p.clone());
            }
            if roles.insert(r.roleid.clone(), privs).is_some() {
                return Err(format!("duplicate role '{}'", r.roleid));
            }
        }

        let mut groups = BTreeMap::new();
        for g in &spec.groups {
            if !ids::is_simple_id(&g.groupid) {
                return Err(format!(
                    "group name '{}' contains invalid characters",
                    g.groupid
                ));
            }
            if groups.insert(g.groupid.clone(), BTreeSet::new()).is_some() {
                return Err(format!("duplicate group '{}'", g.groupid));
            }
        }

        let mut users = BTreeMap::new();
        users.insert(
            ROOT.to_string(),
            User {
                enable: true,
                expire: 0,
            },
        );
        let mut declared = BTreeSet::new();
        for u in &spec.users {
            if ids::split_userid(&u.userid).is_none() {
                return Err(format!(
                    "value '{}' does not look like a valid user name",
                    u.userid
                ));
            }
            if !declared.insert(u.userid.clone()) {
                return Err(format!("duplicate user '{}'", u.userid));
            }
            for g in &u.groups {
                let members = groups
                    .get_mut(g)
                    .ok_or_else(|| format!("user '{}': group '{g}' does not exist", u.userid))?;
                members.insert(u.userid.clone());
            }
            users.insert(
                u.userid.clone(),
                User {
                    enable: u.enable,
                    expire: u.expire,
                },
            );
        }

        let mut rbac = Rbac {
            users,
            groups,
            tokens: BTreeMap::new(),
            roles,
            acl: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        for t in &spec.tokens {
            let (user, name) = rbac.token_key(&t.tokenid)?;
            check_secret(&t.tokenid, &t.secret)?;
            let token = Token {
                secret: t.secret.clone(),
                privsep: t.privsep,
                expire: t.expire,
            };
            if rbac.tokens.insert((user, name), token).is_some() {
                return Err(format!("duplicate token '{}'", t.tokenid));
            }
        }
        for p in &spec.pools {
            rbac.add_pool(p)?;
        }
        for a in &spec.acl {
            rbac.add_acl(a.clone())?;
        }
        Ok(rbac)
    }

    /// Split a full token id and check that its user exists.
    fn token_key(&self, tokenid: &str) -> Result<(String, String), String> {
        let (user, name) = ids::split_tokenid(tokenid)
            .ok_or_else(|| format!("'{tokenid}' is not a valid token ID"))?;
        if !self.users.contains_key(user) {
            return Err(format!("token '{tokenid}': no such user ('{user}')"));
        }
        Ok((user.to_string(), name.to_string()))
    }

    fn add_pool(&mut self, p: &PoolSpec) -> Result<(), String> {
        if !ids::is_poolid(&p.poolid) {
            return Err(format!(
                "pool name '{}' contains invalid characters",
                p.poolid
            ));
        }
        if self.pools.contains_key(&p.poolid) {
            return Err(format!("duplicate pool '{}'", p.poolid));
        }
        let mut pool = Pool::default();
        for &vmid in &p.vms {
            if let Some(other) = self.pool_of_vm(vmid) {
                return Err(format!(
                    "pool '{}': VM {vmid} is already in pool '{other}'",
                    p.poolid
                ));
            }
            pool.vms.insert(vmid);
        }
        for s in &p.storage {
            if !ids::is_storage_id(s) {
                return Err(format!("pool '{}': invalid storage '{s}'", p.poolid));
            }
            pool.storage.insert(s.clone());
        }
        self.pools.insert(p.poolid.clone(), pool);
        Ok(())
    }

    /// Add (or replace the propagate flag of) one ACL entry, validating everything it names.
    pub fn add_acl(&mut self, acl: AclSpec) -> Result<(), String> {
        let path = ids::normalize_path(&acl.path)
            .filter(|p| ids::check_path(p))
            .ok_or_else(|| format!("invalid ACL path '{}'", acl.path))?;
        if !self.roles.contains_key(&acl.roleid) {
            return Err(format!("role '{}' does not exist", acl.roleid));
        }
        let ugid = acl.ugid;
        match acl.r#type {
            AclType::User if !self.users.contains_key(&ugid) => {
                return Err(format!("no such user ('{ugid}')"));
            }
            AclType::Group if !self.groups.contains_key(&ugid) => {
                return Err(format!("group '{ugid}' does not exist"));
            }
            AclType::Token => {
                let key = self.token_key(&ugid)?;
                if !self.tokens.contains_key(&key) {
                    return Err(format!("no such token '{}' for user '{}'", key.1, key.0));
                }
            }
            _ => {}
        }
        let node = self.acl.entry(path).or_default();
        let members = match acl.r#type {
            AclType::User => &mut node.users,
            AclType::Group => &mut node.groups,
            AclType::Token => &mut node.tokens,
        };
        members
            .entry(ugid)
            .or_default()
            .insert(acl.roleid, acl.propagate);
        Ok(())
    }

    /// Set a token's secret, creating the token (privsep, no expiry) if it does not exist yet;
    /// `None` deletes (revokes) it together with its ACL entries.
    pub fn set_token_secret(
        &mut self,
        tokenid: &str,
        secret: Option<String>,
    ) -> Result<(), String> {
        let key = self.token_key(tokenid)?;
        match secret {
            Some(secret) => {
                check_secret(tokenid, &secret)?;
                self.tokens
                    .entry(key)
                    .and_modify(|t| t.secret = secret.clone())
                    .or_insert(Token {
                        secret,
                        privsep: true,
                        expire: 0,
                    });
            }
            None => {
                if self.tokens.remove(&key).is_none() {
                    return Err(format!("no such token '{}' for user '{}'", key.1, key.0));
                }
                for node in self.acl.values_mut() {
                    node.tokens.remove(tokenid);
                }
            }
        }
        Ok(())
    }

    /// Authenticate a request from its raw `Authorization` header.
    pub fn authenticate(&self, header: Option<&str>, now_epoch: i64) -> Result<AuthId, AuthError> {
        let Some(header) = header else {
            return Err(AuthError::NoTicket);
        };
        let value = match auth::parse_authorization(header) {
            auth::HeaderAuth::Nothing => return Err(AuthError::NoTicket),
            auth::HeaderAuth::Ticket | auth::HeaderAuth::Token(None) => {
                return Err(AuthError::Failed);
            }
            auth::HeaderAuth::Token(Some(v)) => v,
        };
        let (tokenid, secret) = auth::split_token_value(&value).ok_or(AuthError::Failed)?;
        let (userid, name) = ids::split_tokenid(tokenid).ok_or(AuthError::Failed)?;
        // check_user_enabled: exists (valid name), enabled, not expired.
        ids::split_userid(userid).ok_or(AuthError::Failed)?;
        let user = self.users.get(userid).ok_or(AuthError::Failed)?;
        if !user.enable || (user.expire != 0 && user.expire < now_epoch) {
            return Err(AuthError::Failed);
        }
        let token = self
            .tokens
            .get(&(userid.to_string(), name.to_string()))
            .ok_or(AuthError::Failed)?;
        if token.expire != 0 && token.expire < now_epoch {
            return Err(AuthError::Failed);
        }
        if token.secret != secret {
            return Err(AuthError::Failed);
        }
        Ok(AuthId {
            user: userid.to_string(),
            token: Some(name.to_string()),
        })
    }

    /// Whether the user (and token, if any) of `authid` exists.
    pub fn exists(&self, authid: &AuthId) -> bool {
        self.users.contains_key(&authid.user)
            && authid
                .token
                .as_ref()
                .is_none_or(|t| self.tokens.contains_key(&(authid.user.clone(), t.clone())))
    }

    /// Every valid privilege of PVE 9, sorted.
    pub fn all_privileges() -> &'static [&'static str] {
        builtin::ALL_PRIVILEGES
    }

    /// The privileges of a built-in or custom role.
    pub fn role_privs(&self, roleid: &str) -> Option<&BTreeSet<String>> {
        self.roles.get(roleid)
    }

    /// All pools with their members.
    pub fn pool_members(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    /// The pool a VM belongs to, if any.
    pub fn pool_of_vm(&self, vmid: u32) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.vms.contains(&vmid))
            .map(|(id, _)| id.as_str())
    }
}

/// A secret must be usable in a header: non-empty, and free of `=` (the header is split at the
/// last `=`), `;` (ends the header value) and whitespace.
fn check_secret(tokenid: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() || secret.contains(['=', ';']) || secret.chars().any(char::is_whitespace) {
        return Err(format!(
            "token '{tokenid}': secret must be non-empty without '=', ';' or whitespace"
        ));
    }
    Ok(())
}
