//! UPIDs exactly as PVE writes them (reference §1): `UPID:node:PID:PSTART:STARTTIME:type:id:user:`
//! with `%08X` numbers and a mandatory trailing colon; plus the decode PVE applies to `{upid}`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub wtype: String,
    pub id: String,
    pub user: String,
}

impl Upid {
    pub fn encode(&self) -> String {
        format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.wtype, self.id, self.user
        )
    }

    /// PVE::UPID::decode: anchored, 9 `:`-separated parts, pid 8 hex, pstart 8–9 hex,
    /// starttime 8 hex, either case.
    pub fn decode(s: &str) -> Option<Upid> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
            return None;
        }
        let node = parts[1];
        let node_ok = !node.is_empty()
            && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        let hex = |p: &str, lo: usize, hi: usize| {
            (lo..=hi).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit())
        };
        let word = |p: &str, allow_empty: bool| {
            (allow_empty || !p.is_empty()) && !p.chars().any(|c| c.is_whitespace() || c == '/')
        };
        if !node_ok
            || !hex(parts[2], 8, 8)
            || !hex(parts[3], 8, 9)
            || !hex(parts[4], 8, 8)
            || !word(parts[5], false)
            || !word(parts[6], true)
            || !word(parts[7], false)
        {
            return None;
        }
        Some(Upid {
            node: node.to_string(),
            pid: u32::from_str_radix(parts[2], 16).ok()?,
            pstart: u64::from_str_radix(parts[3], 16).ok()?,
            starttime: i64::from_str_radix(parts[4], 16).ok()?,
            wtype: parts[5].to_string(),
            id: parts[6].to_string(),
            user: parts[7].to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_round_trips() {
        let s = "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd:";
        let u = Upid::decode(s).unwrap();
        assert_eq!(u.pid, 123456);
        assert_eq!(u.pstart, 8765432);
        assert_eq!(u.starttime, 1735707601);
        assert_eq!(u.user, "backup@pve!guestd");
        assert_eq!(u.encode(), s);
        let del = "UPID:pve1:0001E241:0085C03B:6774CC34:imgdel:101@local:backup@pve!guestd:";
        assert_eq!(Upid::decode(del).unwrap().id, "101@local");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:backup@pve!guestd",
            "UPID:pve1:1E240:0085BFF8:6774CBD1:vzdump:101:u@pve:",
            "UPID:-pve:0001E240:0085BFF8:6774CBD1:vzdump:101:u@pve:",
            "UPID:pve1:0001E240:0085BFF8:6774CBD1:vz/dump:101:u@pve:",
            "XPID:pve1:0001E240:0085BFF8:6774CBD1:vzdump:101:u@pve:",
        ] {
            assert!(Upid::decode(bad).is_none(), "{bad}");
        }
        assert!(Upid::decode("UPID:pve1:0001e240:10085bff8:6774cbd1:vzdump::u@pve:").is_some());
    }
}
