//! The guest configuration (`GET /nodes/{node}/{qemu|lxc}/{vmid}/config`) and its property
//! strings that felhom-agent reads to recognise its own guest (reference §7 "Finding the guest's
//! own VMID") and to know whether vzdump will freeze the filesystems (§3).
//!
//! Invariants: keys are kept verbatim; property strings are split on `,` and `=`; MAC addresses
//! are returned upper-case; the agent `freeze-fs` option (aliases `freeze-fs-on-backup`,
//! `guest-fsfreeze`) defaults to on. Pure, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::lenient::str_to_bool;

/// A guest config: the raw key → value map with typed accessors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestConfig {
    pub raw: BTreeMap<String, Value>,
}

impl<'de> Deserialize<'de> for GuestConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(GuestConfig {
            raw: BTreeMap::deserialize(d)?,
        })
    }
}

/// One network interface from a `netN` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetIf {
    /// `net0`, `net1`, …
    pub key: String,
    /// Upper-case `AA:BB:CC:DD:EE:FF`.
    pub mac: String,
    /// qemu: NIC model (`virtio`, `e1000`, …); lxc: interface name (`eth0`).
    pub label: Option<String>,
    pub bridge: Option<String>,
}

/// The qemu `agent` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentOption {
    pub enabled: bool,
    /// Whether vzdump/snapshots issue fs-freeze/fs-thaw (default on).
    pub freeze_fs: bool,
}

/// Split a property string (`a=1,b=2,positional`) into `(key, value)` pairs; a bare item gets
/// the key `None`.
pub fn split_property_string(s: &str) -> Vec<(Option<&str>, &str)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => (None, p.trim()),
        })
        .collect()
}

/// Normalise a MAC address to upper-case colon form, or `None` if it is not one.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(s.to_ascii_uppercase())
    } else {
        None
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

impl GuestConfig {
    /// A config value as text.
    pub fn get(&self, key: &str) -> Option<String> {
        self.raw.get(key).and_then(value_text)
    }

    /// qemu `name` or lxc `hostname`.
    pub fn name(&self) -> Option<String> {
        self.get("name").or_else(|| self.get("hostname"))
    }

    /// Config lock (`backup`, `snapshot`, …) if set.
    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }

    /// The `uuid` of the qemu `smbios1` option, lower-cased.
    pub fn smbios_uuid(&self) -> Option<String> {
        let s = self.get("smbios1")?;
        split_property_string(&s)
            .into_iter()
            .find(|(k, _)| *k == Some("uuid"))
            .map(|(_, v)| v.to_ascii_lowercase())
    }

    /// All `netN` interfaces that carry a MAC, ordered by N.
    pub fn net_interfaces(&self) -> Vec<NetIf> {
        let mut out: Vec<(u32, NetIf)> = Vec::new();
        for (key, v) in &self.raw {
            let Some(n) = key.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Some(text) = value_text(v) else { continue };
            if let Some(nif) = parse_net(key, &text) {
                out.push((n, nif));
            }
        }
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, nif)| nif).collect()
    }

    /// The qemu `agent` option; absent means disabled.
    pub fn agent(&self) -> AgentOption {
        match self.get("agent") {
            Some(s) => parse_agent(&s),
            None => AgentOption {
                enabled: false,
                freeze_fs: true,
            },
        }
    }
}

/// Parse a `netN` value: qemu `virtio=AA:..,bridge=vmbr0` (or `model=virtio,macaddr=AA:..`),
/// lxc `name=eth0,bridge=vmbr0,hwaddr=AA:..`.
pub fn parse_net(key: &str, value: &str) -> Option<NetIf> {
    let items = split_property_string(value);
    let mut mac = None;
    let mut label = None;
    let mut bridge = None;
    for (k, v) in &items {
        match *k {
            Some("hwaddr") | Some("macaddr") => mac = normalize_mac(v).or(mac),
            Some("name") | Some("model") => label = Some(v.to_string()),
            Some("bridge") => bridge = Some(v.to_string()),
            Some(model) if mac.is_none() => {
                if let Some(m) = normalize_mac(v) {
                    mac = Some(m);
                    label = Some(model.to_string());
                }
            }
            _ => {}
        }
    }
    Some(NetIf {
        key: key.to_string(),
        mac: mac?,
        label,
        bridge,
    })
}

/// Parse the qemu `agent` property string (`1`, `enabled=1,freeze-fs=0`, …).
pub fn parse_agent(s: &str) -> AgentOption {
    let mut opt = AgentOption {
        enabled: false,
        freeze_fs: true,
    };
    for (k, v) in split_property_string(s) {
        match k {
            None | Some("enabled") => opt.enabled = str_to_bool(v).unwrap_or(false),
            Some("freeze-fs") | Some("freeze-fs-on-backup") | Some("guest-fsfreeze") => {
                opt.freeze_fs = str_to_bool(v).unwrap_or(true)
            }
            _ => {}
        }
    }
    opt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> GuestConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn qemu_config() {
        let c = cfg(
            r#"{"name":"web","smbios1":"uuid=9D9C1B2A-1111-4222-8333-444455556666,serial=dm1tMTAx,base64=1","net0":"virtio=bc:24:11:aa:bb:cc,bridge=vmbr0,firewall=1","net2":"model=e1000,macaddr=BC:24:11:00:00:02","net1":"e1000=BC:24:11:00:00:01,bridge=vmbr1","agent":"1,freeze-fs-on-backup=0","digest":"x","cores":2}"#,
        );
        assert_eq!(c.name().as_deref(), Some("web"));
        assert_eq!(
            c.smbios_uuid().as_deref(),
            Some("9d9c1b2a-1111-4222-8333-444455556666")
        );
        assert_eq!(
            c.net_interfaces(),
            vec![
                NetIf {
                    key: "net0".into(),
                    mac: "BC:24:11:AA:BB:CC".into(),
                    label: Some("virtio".into()),
                    bridge: Some("vmbr0".into()),
                },
                NetIf {
                    key: "net1".into(),
                    mac: "BC:24:11:00:00:01".into(),
                    label: Some("e1000".into()),
                    bridge: Some("vmbr1".into()),
                },
                NetIf {
                    key: "net2".into(),
                    mac: "BC:24:11:00:00:02".into(),
                    label: Some("e1000".into()),
                    bridge: None,
                },
            ]
        );
        assert_eq!(
            c.agent(),
            AgentOption {
                enabled: true,
                freeze_fs: false
            }
        );
        assert_eq!(c.get("cores").as_deref(), Some("2"));
    }

    #[test]
    fn lxc_config() {
        let c = cfg(
            r#"{"hostname":"CT200","net0":"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:12:34:56,ip=dhcp,type=veth","net1":"name=eth1,bridge=vmbr0,ip=dhcp","lock":"backup"}"#,
        );
        assert_eq!(c.name().as_deref(), Some("CT200"));
        assert_eq!(c.smbios_uuid(), None);
        assert_eq!(c.lock().as_deref(), Some("backup"));
        let n = c.net_interfaces();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].mac, "BC:24:11:12:34:56");
        assert_eq!(n[0].label.as_deref(), Some("eth0"));
    }

    #[test]
    fn agent_variants() {
        let on = |e, f| AgentOption {
            enabled: e,
            freeze_fs: f,
        };
        assert_eq!(GuestConfig::default().agent(), on(false, true));
        assert_eq!(parse_agent("1"), on(true, true));
        assert_eq!(parse_agent("0"), on(false, true));
        assert_eq!(parse_agent("enabled=1,freeze-fs=0"), on(true, false));
        assert_eq!(
            parse_agent("enabled=1,guest-fsfreeze=0,type=isa"),
            on(true, false)
        );
        assert_eq!(
            parse_agent("enabled=yes,fstrim_cloned_disks=1"),
            on(true, true)
        );
        assert_eq!(cfg(r#"{"agent":1}"#).agent(), on(true, true));
    }

    #[test]
    fn mac_normalisation() {
        assert_eq!(
            normalize_mac("bc:24:11:aa:bb:cc").as_deref(),
            Some("BC:24:11:AA:BB:CC")
        );
        assert_eq!(normalize_mac("bc:24:11:aa:bb"), None);
        assert_eq!(normalize_mac("bc-24-11-aa-bb-cc"), None);
        assert_eq!(normalize_mac("vmbr0"), None);
    }
}
