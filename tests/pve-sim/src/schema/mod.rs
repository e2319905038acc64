//! The official PVE API schema (the `apidata.js` dump of `PVE::RESTHandler::api_dump`) as the
//! simulator's source of truth: route lookup, permission checks and parameter validation.
//!
//! Owns: parsing the dump ([`Schema::from_json`], the embedded PVE 9 copy via [`pve9`]), URI
//! template matching like `RESTHandler::map_path_to_methods` ([`Schema::lookup`]), the
//! permission model ([`Permissions`], [`CheckExpr`]) and validation ([`validate`]).
//!
//! Invariants:
//! * every operation comes from the dump; nothing is invented here. The one piece of routing the
//!   dump cannot express is hard-coded: pve-storage mounts `{storage}/content` with
//!   `fragmentDelimiter => ''`, so below `/nodes/{node}/storage/{storage}/content` the rest of
//!   the path (volume ids contain `/`) is one segment;
//! * a `{param}` segment matches Perl `\S+` (a trailing newline is dropped, as `m/^(\S+)$/`
//!   captures), literal segments win over parameters, empty segments are skipped.

mod check;
pub mod formats;
mod param;
mod validate;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

pub use check::{CheckExpr, normalize_path, template_replace};
pub use param::{Format, Limit, ParamSchema, Pattern, PropSchema};
pub use validate::{Errors, validate};

/// The parsed API schema.
#[derive(Debug)]
pub struct Schema {
    operations: Vec<Operation>,
    root: Node,
}

/// One API method on one path template.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    /// e.g. `/nodes/{node}/qemu/{vmid}/snapshot/{snapname}`
    pub template: String,
    pub name: String,
    pub allowtoken: bool,
    pub permissions: Permissions,
    pub params: ParamSchema,
    pub protected: bool,
    pub proxyto: Option<String>,
}

/// A matched operation and the URI parameters taken from the path.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    pub op: &'a Operation,
    pub uri_params: BTreeMap<String, String>,
}

/// The `permissions` of an operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Permissions {
    Check(CheckExpr),
    /// `user => 'all'`: any authenticated user; the real checks are in the handler.
    UserAll,
    /// `user => 'world'`: no authentication at all.
    UserWorld,
    /// No `permissions` key: root@pam only.
    RootOnly,
}

impl Permissions {
    /// `check_api2_permissions` for an authenticated caller (`is_root`: the caller is
    /// `root@pam` itself, not one of its tokens' privilege-separated views).
    pub fn eval(
        &self,
        is_root: bool,
        vars: &BTreeMap<String, String>,
        has: &dyn Fn(&str, &[&str], bool) -> bool,
    ) -> Result<(), String> {
        if is_root {
            return Ok(());
        }
        match self {
            Permissions::RootOnly => Err("Permission check failed (user != root@pam)".into()),
            Permissions::UserAll | Permissions::UserWorld => Ok(()),
            Permissions::Check(c) => c.eval(vars, has),
        }
    }

    fn from_json(v: Option<&Value>) -> Result<Permissions, String> {
        let Some(v) = v else {
            return Ok(Permissions::RootOnly);
        };
        // `user => 'all'` is tested before `check` (e.g. GET /cluster/options has both)
        match v.get("user").and_then(Value::as_str) {
            Some("all") => return Ok(Permissions::UserAll),
            Some("world") => return Ok(Permissions::UserWorld),
            _ => {}
        }
        match v.get("check") {
            Some(c) => CheckExpr::from_json(c).map(Permissions::Check),
            // a permissions object without user/check raises for everyone but root
            None => Ok(Permissions::RootOnly),
        }
    }
}

/// The path tree: literal children, at most one parameter child, operations by method.
#[derive(Debug, Default)]
struct Node {
    literals: BTreeMap<String, Node>,
    param: Option<(String, Box<Node>)>,
    ops: BTreeMap<String, usize>,
    /// `fragmentDelimiter => ''`: the rest of the path is a single segment.
    greedy: bool,
}

/// Subtrees mounted with `fragmentDelimiter => ''` in the PVE source.
const GREEDY_SUBTREES: &[&str] = &["/nodes/{node}/storage/{storage}/content"];

static PVE9: OnceLock<Schema> = OnceLock::new();

/// The embedded PVE 9.1 schema (`tests/pve-sim/schema/pve9-apidata.json`), parsed once.
pub fn pve9() -> &'static Schema {
    PVE9.get_or_init(|| {
        Schema::from_json(include_str!("../../schema/pve9-apidata.json"))
            .expect("embedded PVE 9 schema parses")
    })
}

impl Schema {
    /// Parses the API dump (plain JSON; an `apidata.js` `const apiSchema = ...;` wrapper is
    /// stripped).
    pub fn from_json(text: &str) -> Result<Schema, String> {
        let text = text.trim();
        let text = text
            .strip_prefix("const apiSchema = ")
            .map(|t| t.trim_end().trim_end_matches(';'))
            .unwrap_or(text);
        let tree: Value = serde_json::from_str(text).map_err(|e| format!("schema JSON: {e}"))?;
        let mut operations = Vec::new();
        collect(&tree, &mut operations)?;
        let mut root = Node::default();
        for (idx, op) in operations.iter().enumerate() {
            let node = segments(&op.template).fold(&mut root, |node, seg| {
                match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => {
                        &mut node
                            .param
                            .get_or_insert_with(|| (name.to_string(), Box::default()))
                            .1
                    }
                    None => node.literals.entry(seg.to_string()).or_default(),
                }
            });
            if node.ops.insert(op.method.clone(), idx).is_some() {
                return Err(format!("duplicate operation {} {}", op.method, op.template));
            }
        }
        for template in GREEDY_SUBTREES {
            let mut node = Some(&mut root);
            for seg in segments(template) {
                node = node.and_then(|n| {
                    if seg.starts_with('{') {
                        n.param.as_mut().map(|(_, c)| &mut **c)
                    } else {
                        n.literals.get_mut(seg)
                    }
                });
            }
            if let Some(n) = node {
                n.greedy = true;
            }
        }
        Ok(Schema { operations, root })
    }

    /// `path` is the part after /api2/json, percent-decoded per segment; matches templates
    /// like /nodes/{node}/qemu/{vmid}/snapshot/{snapname}. Literal segments win over {param}
    /// segments. Returns None when no template+method matches (real PVE: 501
    /// "Method 'GET /x' not implemented").
    pub fn lookup(&self, method: &str, path: &str) -> Option<Route<'_>> {
        let mut stack: Vec<String> = segments(path).map(str::to_string).collect();
        stack.reverse();
        let mut node = &self.root;
        let mut uri_params = BTreeMap::new();
        while let Some(comp) = stack.pop() {
            if let Some(next) = node.literals.get(&comp) {
                node = next;
            } else if let Some((name, next)) = &node.param {
                uri_params.insert(name.clone(), match_nonspace(&comp)?);
                node = next;
            } else {
                return None;
            }
            if node.greedy && stack.len() > 1 {
                stack.reverse();
                let joined = stack.join("/");
                stack = vec![joined];
            }
        }
        let op = &self.operations[*node.ops.get(method)?];
        Some(Route { op, uri_params })
    }

    pub fn has_operation(&self, method: &str, template: &str) -> bool {
        self.operations
            .iter()
            .any(|op| op.method == method && op.template == template)
    }

    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.operations.iter()
    }
}

/// Non-empty `/`-separated segments.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// `$comp =~ m/^(\S+)$/` → `$1`
fn match_nonspace(comp: &str) -> Option<String> {
    let c = comp.strip_suffix('\n').unwrap_or(comp);
    (!c.is_empty() && !c.chars().any(char::is_whitespace)).then(|| c.to_string())
}

fn collect(tree: &Value, out: &mut Vec<Operation>) -> Result<(), String> {
    let nodes = tree.as_array().ok_or("schema tree level is not an array")?;
    for node in nodes {
        let path = node
            .get("path")
            .and_then(Value::as_str)
            .ok_or("schema node without path")?;
        if let Some(Value::Object(info)) = node.get("info") {
            for (method, i) in info {
                out.push(operation(path, method, i).map_err(|e| format!("{method} {path}: {e}"))?);
            }
        }
        if let Some(children) = node.get("children") {
            collect(children, out)?;
        }
    }
    Ok(())
}

fn operation(path: &str, method: &str, i: &Value) -> Result<Operation, String> {
    let params = match i.get("parameters") {
        Some(p) => ParamSchema::from_json(p)?,
        None => ParamSchema::default(),
    };
    Ok(Operation {
        method: method.to_string(),
        template: path.to_string(),
        name: i
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        allowtoken: i.get("allowtoken").is_none_or(|v| param::truthy(Some(v))),
        permissions: Permissions::from_json(i.get("permissions"))?,
        params,
        protected: param::truthy(i.get("protected")),
        proxyto: i.get("proxyto").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests;
