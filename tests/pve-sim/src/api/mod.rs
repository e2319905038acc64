//! The `/api2/json` request pipeline, in real PVE's order (§6): route lookup → token
//! authentication → `allowtoken` → the schema's permission check on the templated path → proxy to
//! `{node}` → parameter validation against the schema → the handler (which does the `user: all`
//! checks in code, as PVE does).
//!
//! Invariant: every handler answers only for a (method, template) listed in `routes::ROUTES`.

mod cluster;
mod guests;
mod snapshots;
mod storage;
mod tasks;
mod vzdump;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::faults::FaultKind;
use crate::rbac::{AuthError, AuthId};
use crate::schema;
use crate::world::{RequestRecord, World};

pub struct ApiRequest {
    pub method: String,
    pub raw_path: String,
    pub query: String,
    pub body: Bytes,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub chunked: bool,
}

pub struct ApiResponse {
    pub status: u16,
    pub reason: Option<String>,
    pub body: Vec<u8>,
    pub delay_ms: u64,
}

/// What a handler answers: `data`, plus `total` where PVE sets it.
pub struct Reply {
    pub data: Value,
    pub total: Option<u64>,
}

impl Reply {
    pub fn data(data: Value) -> Result<Reply, ApiErr> {
        Ok(Reply { data, total: None })
    }
}

#[derive(Debug)]
pub struct ApiErr {
    pub status: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiErr {
    pub fn new(status: u16, message: impl Into<String>) -> ApiErr {
        ApiErr {
            status,
            message: message.into(),
            errors: None,
        }
    }
    /// `die` in a handler: 500 with the message.
    pub fn internal(message: impl Into<String>) -> ApiErr {
        ApiErr::new(500, message)
    }
    pub fn forbidden(path: &str, privs: &[&str]) -> ApiErr {
        ApiErr::new(
            403,
            format!("Permission check failed ({path}, {})", privs.join("|")),
        )
    }
    pub fn forbidden_plain(detail: &str) -> ApiErr {
        ApiErr::new(403, format!("Permission check failed ({detail})"))
    }
    pub fn param(name: &str, msg: impl Into<String>) -> ApiErr {
        let mut e = BTreeMap::new();
        e.insert(name.to_string(), msg.into());
        ApiErr::params(e)
    }
    pub fn params(errors: BTreeMap<String, String>) -> ApiErr {
        ApiErr {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }
    pub fn config_missing(kind: crate::scenario::GuestKind, node: &str, vmid: u32) -> ApiErr {
        ApiErr::internal(format!(
            "Configuration file '{}' does not exist",
            crate::world::conf_path(kind, node, vmid)
        ))
    }
}

/// One request's context for handlers.
pub struct Ctx {
    pub auth: AuthId,
    pub node: Option<String>,
    pub uri: BTreeMap<String, String>,
    pub params: BTreeMap<String, Value>,
}

impl Ctx {
    pub fn str(&self, k: &str) -> Option<&str> {
        self.params.get(k).and_then(Value::as_str)
    }
    pub fn int(&self, k: &str) -> Option<i64> {
        self.params.get(k).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    }
    pub fn bool(&self, k: &str) -> Option<bool> {
        self.params.get(k).and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => n.as_i64().map(|i| i != 0),
            Value::String(s) => Some(s == "1"),
            _ => None,
        })
    }
    pub fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("")
    }
    pub fn vmid(&self) -> u32 {
        self.int("vmid").unwrap_or(0) as u32
    }
    pub fn has(&self, w: &World, path: &str, privs: &[&str], any: bool) -> bool {
        w.rbac.check(&self.auth, path, privs, any)
    }
}

pub type HResult = Result<Reply, ApiErr>;

pub fn take_fault(w: &mut World, req: &ApiRequest) -> Option<FaultKind> {
    if w.faults.is_empty() {
        return None;
    }
    let path = api_path(&req.raw_path);
    let template = schema::pve9()
        .lookup(&req.method, &path)
        .map(|r| r.op.template.clone());
    let kind = crate::faults::take(&mut w.faults, &req.method, &path, template.as_deref())?;
    let status = match &kind {
        FaultKind::Status { code, .. } | FaultKind::Respond { code, .. } => *code,
        _ => 0,
    };
    if !matches!(kind, FaultKind::Latency { .. } | FaultKind::Close) {
        w.record_request(RequestRecord {
            seq: 0,
            time: 0.0,
            method: req.method.clone(),
            path,
            template,
            params: BTreeMap::new(),
            authid: None,
            status,
            fault: Some(format!("{kind:?}")),
        });
    }
    Some(kind)
}

/// The path below `/api2/json`, percent-decoded as pveproxy does before matching handlers.
fn api_path(raw: &str) -> String {
    let rel = raw.strip_prefix("/api2/json").unwrap_or(raw);
    percent_encoding::percent_decode_str(rel)
        .decode_utf8_lossy()
        .into_owned()
}

pub fn handle(w: &mut World, req: &ApiRequest) -> ApiResponse {
    let path = api_path(&req.raw_path);
    let mut rec = RequestRecord {
        seq: 0,
        time: 0.0,
        method: req.method.clone(),
        path: path.clone(),
        template: None,
        params: BTreeMap::new(),
        authid: None,
        status: 0,
        fault: None,
    };
    let result = pipeline(w, req, &path, &mut rec);
    let resp = render(w, result);
    rec.status = resp.status;
    w.record_request(rec);
    resp
}

enum Outcome {
    Ok(Reply),
    Err(ApiErr),
    Unauthorized(&'static str),
}

fn pipeline(w: &mut World, req: &ApiRequest, path: &str, rec: &mut RequestRecord) -> Outcome {
    if !req.raw_path.starts_with("/api2/json/") {
        return Outcome::Err(ApiErr::new(
            501,
            format!("Method '{} {}' not implemented", req.method, req.raw_path),
        ));
    }
    if req.chunked {
        return Outcome::Err(ApiErr::new(501, "chunked transfer encoding not supported"));
    }
    if (req.method == "GET" || req.method == "DELETE") && !req.body.is_empty() {
        return Outcome::Err(ApiErr::new(
            501,
            format!("Unexpected content for method '{}'", req.method),
        ));
    }
    let Some(route) = schema::pve9().lookup(&req.method, path) else {
        return Outcome::Err(ApiErr::new(
            501,
            format!("Method '{} {}' not implemented", req.method, path),
        ));
    };
    let op = route.op;
    rec.template = Some(op.template.clone());
    // Parameters: query + body (form or JSON), recorded as strings.
    let (params, from_form) = match collect_params(req) {
        Ok(p) => p,
        Err(e) => return Outcome::Err(e),
    };
    for (k, v) in &params {
        rec.params.insert(k.clone(), value_string(v));
    }
    let auth = match w
        .rbac
        .authenticate(req.authorization.as_deref(), w.clock.epoch())
    {
        Ok(a) => a,
        Err(AuthError::NoTicket) => return Outcome::Unauthorized("No ticket"),
        Err(AuthError::Failed) => return Outcome::Unauthorized("Authentication failed!"),
    };
    rec.authid = Some(auth.full());
    if auth.token.is_some() && !op.allowtoken {
        return Outcome::Err(ApiErr::new(
            403,
            format!(
                "Permission check failed (URI '{path}' not available with API token, need proper ticket.\n)"
            ),
        ));
    }
    if !crate::routes::ROUTES
        .iter()
        .any(|(m, t)| *m == op.method && *t == op.template)
    {
        return Outcome::Err(ApiErr::new(
            501,
            format!(
                "Method '{} {}' not implemented (not simulated by pve-sim)",
                req.method, path
            ),
        ));
    }
    // Permission check from the schema, before anything looks at whether the object exists.
    let mut vars: BTreeMap<String, String> = route.uri_params.clone();
    for (k, v) in &params {
        vars.entry(k.clone()).or_insert_with(|| value_string(v));
    }
    {
        let rbac = &w.rbac;
        let has = |p: &str, privs: &[&str], any: bool| rbac.check(&auth, p, privs, any);
        let is_root = auth.is_root() && auth.token.is_none();
        if let Err(msg) = op.permissions.eval(is_root, &vars, &has) {
            return Outcome::Err(ApiErr::new(403, msg.trim_end().to_string()));
        }
    }
    // Proxy to {node}.
    let node = route.uri_params.get("node").cloned();
    if let Some(n) = &node {
        match w.node(n) {
            None => {
                return Outcome::Err(ApiErr::internal(format!(
                    "hostname lookup '{n}' failed - failed to get address info for: {n}: Name or service not known"
                )));
            }
            Some(nd) if !nd.online => {
                return Outcome::Err(ApiErr::new(
                    595,
                    "Errors during connection establishment, proxy handshake: No route to host",
                ));
            }
            _ => {}
        }
    }
    // Validation against the schema (URI parameters included).
    let mut all: BTreeMap<String, Value> = params;
    for (k, v) in &route.uri_params {
        if let Some(prev) = all.get(k)
            && value_string(prev) != *v
        {
            return Outcome::Err(ApiErr::param(
                k,
                "duplicate parameter (already defined in URI) with conflicting values!",
            ));
        }
        all.insert(k.clone(), Value::String(v.clone()));
    }
    let typed = match schema::validate(op, &all, from_form) {
        Ok(t) => t,
        Err(errors) => return Outcome::Err(ApiErr::params(errors)),
    };
    let ctx = Ctx {
        auth,
        node,
        uri: route.uri_params.clone(),
        params: typed,
    };
    match dispatch(w, &op.method, &op.template, &ctx) {
        Ok(r) => Outcome::Ok(r),
        Err(e) => Outcome::Err(e),
    }
}

fn dispatch(w: &mut World, method: &str, template: &str, c: &Ctx) -> HResult {
    let t = template;
    match (method, t) {
        ("GET", "/version") => cluster::version(w, c),
        ("GET", "/nodes") => cluster::nodes(w, c),
        ("GET", "/cluster/resources") => cluster::resources(w, c),
        ("GET", "/access/permissions") => cluster::permissions(w, c),
        ("GET", "/nodes/{node}/certificates/info") => cluster::certificates(w, c),
        ("GET", "/nodes/{node}/qemu") | ("GET", "/nodes/{node}/lxc") => guests::list(w, c, t),
        ("GET", _) if t.ends_with("/status/current") => guests::status(w, c, t),
        ("GET", _) if t.ends_with("/{vmid}/config") => guests::config(w, c, t),
        ("GET", _) if t.ends_with("/{vmid}/snapshot") => snapshots::list(w, c, t),
        ("POST", _) if t.ends_with("/{vmid}/snapshot") => snapshots::create(w, c, t),
        ("DELETE", _) if t.ends_with("/snapshot/{snapname}") => snapshots::delete(w, c, t),
        ("GET", _) if t.ends_with("/snapshot/{snapname}/config") => snapshots::get_config(w, c, t),
        ("PUT", _) if t.ends_with("/snapshot/{snapname}/config") => snapshots::set_config(w, c, t),
        ("POST", _) if t.ends_with("/snapshot/{snapname}/rollback") => snapshots::rollback(w, c, t),
        ("POST", "/nodes/{node}/vzdump") => vzdump::vzdump(w, c),
        ("GET", "/nodes/{node}/vzdump/defaults") => vzdump::defaults(w, c),
        ("GET", "/nodes/{node}/tasks") => tasks::list(w, c),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => tasks::status(w, c),
        ("GET", "/nodes/{node}/tasks/{upid}/log") => tasks::log(w, c),
        ("DELETE", "/nodes/{node}/tasks/{upid}") => tasks::stop(w, c),
        ("GET", "/nodes/{node}/storage") => storage::list(w, c),
        ("GET", "/nodes/{node}/storage/{storage}/status") => storage::status(w, c),
        ("GET", "/nodes/{node}/storage/{storage}/content") => storage::content(w, c),
        ("GET", "/nodes/{node}/storage/{storage}/content/{volume}") => storage::volume_info(w, c),
        ("PUT", "/nodes/{node}/storage/{storage}/content/{volume}") => storage::volume_update(w, c),
        ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => {
            storage::volume_delete(w, c)
        }
        ("GET", "/nodes/{node}/storage/{storage}/prunebackups") => storage::prune_dry_run(w, c),
        ("DELETE", "/nodes/{node}/storage/{storage}/prunebackups") => storage::prune(w, c),
        _ => Err(ApiErr::new(
            501,
            format!("Method '{method} {template}' not implemented (not simulated by pve-sim)"),
        )),
    }
}

fn collect_params(req: &ApiRequest) -> Result<(BTreeMap<String, Value>, bool), ApiErr> {
    let mut params: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(req.query.as_bytes()) {
        params.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    let mut from_form = true;
    if !req.body.is_empty() {
        let is_json = req
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"));
        let body: Vec<(String, Value)> = if is_json {
            from_form = false;
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(m)) => m.into_iter().collect(),
                _ => return Err(ApiErr::new(400, "malformed JSON request body")),
            }
        } else {
            form_urlencoded::parse(&req.body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect()
        };
        for (k, v) in body {
            if let Some(prev) = params.get(&k)
                && value_string(prev) != value_string(&v)
            {
                return Err(ApiErr::param(
                    &k,
                    "duplicate parameter (already defined in URI) with conflicting values!",
                ));
            }
            params.insert(k, v);
        }
    }
    Ok((params, from_form))
}

/// `user@realm` or `user@realm!token`.
pub fn parse_authid(s: &str) -> Option<AuthId> {
    let (user, token) = match s.split_once('!') {
        Some((u, t)) if !t.is_empty() => (u, Some(t.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (name, realm) = user.split_once('@')?;
    if name.is_empty() || realm.is_empty() {
        return None;
    }
    Some(AuthId {
        user: user.to_string(),
        token,
    })
}

pub fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
        other => other.to_string(),
    }
}

fn render(w: &World, out: Outcome) -> ApiResponse {
    match out {
        Outcome::Ok(r) => {
            let mut body = json!({ "data": r.data });
            if let Some(t) = r.total.filter(|t| *t > 0) {
                body["total"] = json!(t);
            }
            ApiResponse {
                status: 200,
                reason: None,
                body: body.to_string().into_bytes(),
                delay_ms: 0,
            }
        }
        Outcome::Unauthorized(msg) => ApiResponse {
            status: 401,
            reason: Some(msg.to_string()),
            body: Vec::new(),
            delay_ms: w.settings.auth_failure_delay_ms,
        },
        Outcome::Err(e) => {
            let mut body = json!({ "data": null });
            if w.settings.error_message_in_body {
                body["message"] = json!(format!("{}\n", e.message));
            }
            if let Some(errs) = &e.errors {
                body["errors"] = json!(errs);
            }
            ApiResponse {
                status: e.status,
                reason: Some(e.message),
                body: body.to_string().into_bytes(),
                delay_ms: 0,
            }
        }
    }
}
