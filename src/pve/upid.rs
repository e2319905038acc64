//! PVE task identifiers (UPIDs).
//!
//! Owns parsing and formatting of `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`
//! exactly as `PVE::UPID::decode` / `encode` do (reference §1):
//! * the match is anchored at both ends and the trailing `:` is mandatory;
//! * `pid` is exactly 8 hex digits, `pstart` 8–9, `starttime` exactly 8, either letter case;
//! * node `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`, type `[^:\s/]+`, id `[^:\s/]*` (may be
//!   empty), user `[^:\s/]+` (a full token id `user@realm!name` for token-started tasks).
//!
//! Display writes the numbers with `%08X`, so a parsed canonical UPID prints back byte for byte.
//! Pure logic, no I/O.

use std::fmt;
use std::str::FromStr;

/// A decoded PVE task id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    /// Node that runs the task; status and log must be read from this node.
    pub node: String,
    /// PID of the worker process on `node`.
    pub pid: u32,
    /// Worker start time in clock ticks since boot.
    pub pstart: u64,
    /// Task start time, UNIX epoch seconds.
    pub starttime: i64,
    /// Worker type (`vzdump`, `qmsnapshot`, `imgdel`, ...).
    pub wtype: String,
    /// Worker id, usually the VMID; may be empty or composite (`101@local`).
    pub id: String,
    /// Authenticated id that started the task (full token id for token requests).
    pub user: String,
}

/// Why a string is not a valid UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse worker upid '{input}': {reason}")]
pub struct UpidParseError {
    /// The rejected input.
    pub input: String,
    /// Which rule it broke.
    pub reason: &'static str,
}

impl Upid {
    /// True if the task was started through an API token (`user@realm!token`).
    pub fn user_is_token(&self) -> bool {
        self.user.contains('!')
    }

    /// The owning user (`user@realm`), without a token name.
    pub fn owner_user(&self) -> &str {
        self.user.split('!').next().unwrap_or(&self.user)
    }

    /// The id parsed as a VMID, if it is one.
    pub fn vmid(&self) -> Option<u32> {
        self.id.parse().ok()
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `[^:\s/]*`: no colon, no slash, no whitespace.
fn valid_free(s: &str) -> bool {
    !s.chars().any(|c| c == ':' || c == '/' || c.is_whitespace())
}

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| UpidParseError {
            input: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 9 || parts[0] != "UPID" {
            return Err(err("expected UPID:node:pid:pstart:starttime:type:id:user:"));
        }
        if !parts[8].is_empty() {
            return Err(err("missing trailing ':'"));
        }
        let (node, pid, pstart, start, wtype, id, user) = (
            parts[1], parts[2], parts[3], parts[4], parts[5], parts[6], parts[7],
        );
        if !valid_node(node) {
            return Err(err("invalid node name"));
        }
        if pid.len() != 8 || !is_hex(pid) {
            return Err(err("pid must be 8 hex digits"));
        }
        if !(8..=9).contains(&pstart.len()) || !is_hex(pstart) {
            return Err(err("pstart must be 8-9 hex digits"));
        }
        if start.len() != 8 || !is_hex(start) {
            return Err(err("starttime must be 8 hex digits"));
        }
        if wtype.is_empty() || !valid_free(wtype) {
            return Err(err("invalid worker type"));
        }
        if !valid_free(id) {
            return Err(err("invalid worker id"));
        }
        if user.is_empty() || !valid_free(user) {
            return Err(err("invalid user"));
        }
        // The length and digit checks above make these conversions infallible.
        let hex = |v: &str| u64::from_str_radix(v, 16).map_err(|_| err("bad hex number"));
        Ok(Upid {
            node: node.to_string(),
            pid: u32::try_from(hex(pid)?).map_err(|_| err("pid out of range"))?,
            pstart: hex(pstart)?,
            starttime: i64::try_from(hex(start)?).map_err(|_| err("starttime out of range"))?,
            wtype: wtype.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.wtype, self.id, self.user
        )
    }
}

impl serde::Serialize for Upid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Upid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_example_vzdump() {
        let s = "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(
            u,
            Upid {
                node: "pve1".into(),
                pid: 123456,
                pstart: 8765432,
                starttime: 1735707601,
                wtype: "vzdump".into(),
                id: "101".into(),
                user: "backup@pve!guestd".into(),
            }
        );
        assert!(u.user_is_token());
        assert_eq!(u.owner_user(), "backup@pve");
        assert_eq!(u.vmid(), Some(101));
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn reference_example_imgdel() {
        let s = "UPID:pve1:0001E241:0085C03B:6774CC34:imgdel:101@local:backup@pve!guestd:";
        let u: Upid = s.parse().unwrap();
        assert_eq!(u.pid, 0x1E241);
        assert_eq!(u.pstart, 0x85C03B);
        assert_eq!(u.starttime, 0x6774CC34);
        assert_eq!(u.wtype, "imgdel");
        assert_eq!(u.id, "101@local");
        assert_eq!(u.vmid(), None);
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn empty_id_nine_digit_pstart_and_lower_case() {
        let u: Upid = "UPID:node-a1:0001e240:1085bff8a:6774cbd1:vzdump::root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.id, "");
        assert_eq!(u.pstart, 0x1085BFF8A);
        assert!(!u.user_is_token());
        assert_eq!(
            u.to_string(),
            "UPID:node-a1:0001E240:1085BFF8A:6774CBD1:vzdump::root@pam:"
        );
    }

    #[test]
    fn rejects_malformed() {
        let bad = [
            // trailing ':' missing
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd",
            // extra field
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve:x:",
            // pid 7 digits
            "UPID:pve1:001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            // pid 9 digits
            "UPID:pve1:00001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            // pstart 10 digits
            "UPID:pve1:0001E240:000085BFF8:6774CBD1:vzdump:101:root@pam:",
            // pstart 7 digits
            "UPID:pve1:0001E240:085BFF8:6774CBD1:vzdump:101:root@pam:",
            // starttime 9 digits
            "UPID:pve1:0001E240:0085BFF8:06774CBD1:vzdump:101:root@pam:",
            // non-hex
            "UPID:pve1:0001G240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            // node ends with '-'
            "UPID:pve-:0001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            // node with a dot (FQDN)
            "UPID:pve.lan:0001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            // empty type
            "UPID:pve1:0001E240:0085BFF8:6774CBD1::101:root@pam:",
            // slash in id
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:1/1:root@pam:",
            // space in user
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:ro ot@pam:",
            // empty user
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101::",
            // leading garbage
            " UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            "upid:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:root@pam:",
            "",
        ];
        for b in bad {
            assert!(b.parse::<Upid>().is_err(), "accepted {b:?}");
        }
        let e = "UPID:x".parse::<Upid>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to parse worker upid 'UPID:x': expected UPID:node:pid:pstart:starttime:type:id:user:"
        );
    }

    #[test]
    fn serde_round_trip() {
        let s = "\"UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:\"";
        let u: Upid = serde_json::from_str(s).unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), s);
        assert!(serde_json::from_str::<Upid>("\"OK\"").is_err());
    }

    fn arb_upid() -> impl Strategy<Value = Upid> {
        (
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?",
            any::<u32>(),
            0u64..=0xF_FFFF_FFFF,
            0i64..=0xFFFF_FFFF,
            "[^:\\s/]{1,12}",
            "[^:\\s/]{0,12}",
            "[^:\\s/]{1,20}",
        )
            .prop_map(|(node, pid, pstart, starttime, wtype, id, user)| Upid {
                node,
                pid,
                pstart,
                starttime,
                wtype,
                id,
                user,
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(u in arb_upid()) {
            let s = u.to_string();
            let back: Upid = s.parse().unwrap();
            prop_assert_eq!(&back, &u);
            prop_assert_eq!(back.to_string(), s);
        }

        #[test]
        fn parse_accepts_lower_case_and_normalises(u in arb_upid()) {
            let s = u.to_string();
            let lower = format!(
                "UPID:{}:{:08x}:{:08x}:{:08x}:{}:{}:{}:",
                u.node, u.pid, u.pstart, u.starttime, u.wtype, u.id, u.user
            );
            let back: Upid = lower.parse().unwrap();
            prop_assert_eq!(back.to_string(), s);
        }

        #[test]
        fn never_panics(s in "UPID:[ -~]{0,60}") {
            let _ = s.parse::<Upid>();
        }
    }
}
