//! Backup volume names: vzdump archives on directory storages and snapshots on PBS.
//!
//! Invariant: names are relative to the storage (`backup/…`); the volid is `<storage>:<name>`.
//!
//! Directory storages (`vzdump-<type>-<vmid>-YYYY_MM_DD-hh_mm_ss.<vma|tar>[.<gz|lzo|zst>]`):
//! * vzdump writes the time with `strftime(…, localtime($backup_time))`, i.e. the node's local
//!   time, and `archive_info` reads it back with `Time::Local::timelocal`.
//! * Repeated hour (DST fall-back): `timelocal` returns the **earlier** of the two instants, so a
//!   backup taken in the second occurrence of the hour gets a ctime one hour too early
//!   (e.g. Europe/Budapest 2026-10-25 01:30:00 UTC is named `…02_30_00…` and read back as
//!   00:30:00 UTC). Skipped hour (spring-forward; never written by vzdump): a non-existent local
//!   time is read as one hour later. jiff's `compatible` disambiguation does exactly both.
//! * `std_name` is `archive_info`'s `is_std_name`: the whole name is the pattern above with a
//!   vmid `[1-9][0-9]{2,8}` and the extension found by `$BACKUP_EXT_RE_2`
//!   (`tgz`, `tar`, `vma`, optionally followed by `.gz|.lzo|.zst|.bz2` for `tar`/`vma`).
//!   An impossible date makes `timelocal` die; PVE then knows nothing about the file (its prune
//!   `type` is `unknown`). Here such a name gives `std_name: false`, `ctime: None`. Two-digit-era
//!   years (`00xx`, which `timelocal` reads relative to the current century) are treated the same
//!   way — a deliberate deviation to stay free of the wall clock.
//! * The owner vmid is the plugin's `parse_volname` (`^vzdump-(openvz|lxc|qemu)-(\d+)-.+`), which
//!   also covers non-standard names. `openvz` backups are not modelled (`None`).
//!
//! PBS (`backup/<vm|ct>/<vmid>/<YYYY-MM-DDThh:mm:ssZ>`): the time is UTC (`print_volid`).
//!
//! Owner vmids with a leading zero (`…-0101-…`) give `None`: PVE would check the literal path
//! `/vms/0101`, which this model does not represent.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// The guest type of a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    /// `qemu` / `lxc`, as in vzdump names and the API's `subtype`/`type` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }

    /// PBS backup type: `vm` / `ct`.
    pub fn pbs_type(self) -> &'static str {
        match self {
            GuestType::Qemu => "vm",
            GuestType::Lxc => "ct",
        }
    }
}

/// What a backup volume name tells.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveInfo {
    /// Owner vmid (`check_volume_access` checks `VM.Backup` on `/vms/<vmid>`).
    pub vmid: u32,
    pub ty: GuestType,
    /// The name's timestamp; `None` unless the name is standard.
    pub ctime: Option<i64>,
    /// `archive_info`'s `is_std_name`; PBS names are always standard.
    pub std_name: bool,
    /// The content listing's `format`: `vma.zst`, `tar.gz`, `tgz`, … or `pbs-vm` / `pbs-ct`.
    pub format: String,
}

/// Valid extensions (`$BACKUP_EXT_RE_2`). At most one of them ends a given name.
const BACKUP_EXTS: [&str; 11] = [
    "tgz", "tar", "vma", "tar.gz", "tar.lzo", "tar.zst", "tar.bz2", "vma.gz", "vma.lzo", "vma.zst",
    "vma.bz2",
];

fn zoned_or_clamped(ctime: i64, tz: &TimeZone) -> jiff::Zoned {
    let ts = Timestamp::from_second(ctime).unwrap_or(if ctime < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    ts.to_zoned(tz.clone())
}

/// The vzdump archive name on a directory storage, in the local time of `tz`, e.g.
/// `backup/vzdump-qemu-101-2026_11_23-15_00_01.vma.zst`. `compress` is vzdump's option:
/// `zstd` → `.zst`, `gzip` → `.gz`, `lzo`/`1` → `.lzo`, `0` (or anything else) → none.
/// A ctime outside jiff's range is clamped to it.
pub fn dir_volname(ty: GuestType, vmid: u32, ctime: i64, tz: &TimeZone, compress: &str) -> String {
    let z = zoned_or_clamped(ctime, tz);
    let base = match ty {
        GuestType::Qemu => "vma",
        GuestType::Lxc => "tar",
    };
    let comp = match compress {
        "zstd" => ".zst",
        "gzip" => ".gz",
        "lzo" | "1" => ".lzo",
        _ => "",
    };
    format!(
        "backup/vzdump-{}-{vmid}-{}_{:02}_{:02}-{:02}_{:02}_{:02}.{base}{comp}",
        ty.as_str(),
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute(),
        z.second()
    )
}

/// The PBS volume name, UTC: `backup/vm/101/2026-11-23T15:00:01Z`. A ctime outside jiff's
/// range is clamped to it.
pub fn pbs_volname(ty: GuestType, vmid: u32, ctime: i64) -> String {
    let z = zoned_or_clamped(ctime, &TimeZone::UTC);
    format!(
        "backup/{}/{vmid}/{}Z",
        ty.pbs_type(),
        z.strftime("%Y-%m-%dT%H:%M:%S")
    )
}

/// Parses a dir or PBS backup volume name (relative to the storage, without `<storage>:`).
/// `None` if it is not a backup name with a qemu/lxc type and an owner vmid.
pub fn parse_volname(volname: &str, tz: &TimeZone) -> Option<ArchiveInfo> {
    let rest = volname.strip_prefix("backup/")?;
    if rest.contains('/') {
        parse_pbs(rest)
    } else {
        parse_dir(rest, tz)
    }
}

fn parse_pbs(rest: &str) -> Option<ArchiveInfo> {
    // ^backup/([^\s_]+)/([^\s_]+)/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)$
    let (head, time) = rest.rsplit_once('/')?;
    let (btype, bid) = head.rsplit_once('/')?;
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '_');
    if !plain(btype) || !plain(bid) || !time_shape(time) {
        return None;
    }
    let ty = match btype {
        "vm" => GuestType::Qemu,
        "ct" => GuestType::Lxc,
        _ => return None,
    };
    let vmid = owner_vmid(bid)?;
    let field = |r: std::ops::Range<usize>| time[r].parse::<i64>().ok();
    let ctime = civil(
        [
            field(0..4)?,
            field(5..7)?,
            field(8..10)?,
            field(11..13)?,
            field(14..16)?,
            field(17..19)?,
        ],
        &TimeZone::UTC,
    );
    Some(ArchiveInfo {
        vmid,
        ty,
        ctime,
        std_name: ctime.is_some(),
        format: format!("pbs-{btype}"),
    })
}

/// `\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z`
fn time_shape(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn parse_dir(name: &str, tz: &TimeZone) -> Option<ArchiveInfo> {
    if name.contains('\n') {
        return None;
    }
    // ^([^/]+$BACKUP_EXT_RE_2)$ (archive_info additionally needs the vzdump-<type>- prefix)
    let ext = BACKUP_EXTS.iter().copied().find(|ext| {
        name.len() > ext.len() + 1
            && name.ends_with(ext)
            && name.as_bytes()[name.len() - ext.len() - 1] == b'.'
    })?;
    let stem = &name[..name.len() - ext.len() - 1];

    // plugin parse_volname: ^vzdump-(openvz|lxc|qemu)-(\d+)-.+
    let after = name.strip_prefix("vzdump-")?;
    let (ty, after) = if let Some(a) = after.strip_prefix("qemu-") {
        (GuestType::Qemu, a)
    } else if let Some(a) = after.strip_prefix("lxc-") {
        (GuestType::Lxc, a)
    } else {
        return None;
    };
    let digits_end = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    let (digits, tail) = after.split_at(digits_end);
    if tail.len() < 2 || !tail.starts_with('-') {
        return None;
    }
    let vmid = owner_vmid(digits)?;

    // archive_info: the stem must be exactly vzdump-<type>-<vmid>-YYYY_MM_DD-hh_mm_ss
    let ctime = std_stem_ctime(stem, ty, digits, tz);
    Some(ArchiveInfo {
        vmid,
        ty,
        ctime,
        std_name: ctime.is_some(),
        format: ext.to_string(),
    })
}

/// The ctime of a standard stem, `None` if the stem is not standard or the date is impossible.
fn std_stem_ctime(stem: &str, ty: GuestType, digits: &str, tz: &TimeZone) -> Option<i64> {
    if !(3..=9).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    let prefix = format!("vzdump-{}-{digits}-", ty.as_str());
    let t = stem.strip_prefix(&prefix)?.as_bytes();
    // YYYY_MM_DD-hh_mm_ss
    let shape_ok = t.len() == 19
        && t.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 | 13 | 16 => c == b'_',
            10 => c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let num =
        |r: std::ops::Range<usize>| t[r].iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    let mut year = num(0..4);
    // Time::Local: 100..=999 means 1900 + year; 0..=99 is the rolling century (not modelled)
    if year < 100 {
        return None;
    }
    if year < 1000 {
        year += 1900;
    }
    civil(
        [
            year,
            num(5..7),
            num(8..10),
            num(11..13),
            num(14..16),
            num(17..19),
        ],
        tz,
    )
}

/// `timelocal` with range checks: the epoch of a local civil time in `tz`, earlier instant for a
/// repeated time, one hour later for a skipped time; `None` for an impossible date/time.
fn civil(f: [i64; 6], tz: &TimeZone) -> Option<i64> {
    let [y, mo, d, h, mi, s] = f;
    let dt = DateTime::new(
        i16::try_from(y).ok()?,
        i8::try_from(mo).ok()?,
        i8::try_from(d).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(s).ok()?,
        0,
    )
    .ok()?;
    let z = tz.to_ambiguous_zoned(dt).compatible().ok()?;
    Some(z.timestamp().as_second())
}

/// An owner vmid: ASCII digits, no leading zero, fits in u32.
fn owner_vmid(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }
    fn budapest() -> TimeZone {
        TimeZone::get("Europe/Budapest").unwrap()
    }
    fn info(vmid: u32, ty: GuestType, ctime: Option<i64>, format: &str) -> ArchiveInfo {
        ArchiveInfo {
            vmid,
            ty,
            ctime,
            std_name: ctime.is_some(),
            format: format.into(),
        }
    }

    #[test]
    fn dir_names_use_local_time() {
        let t = ts("2026-11-23T15:00:01Z");
        assert_eq!(
            dir_volname(GuestType::Qemu, 101, t, &TimeZone::UTC, "zstd"),
            "backup/vzdump-qemu-101-2026_11_23-15_00_01.vma.zst"
        );
        assert_eq!(
            dir_volname(GuestType::Lxc, 101, t, &budapest(), "zstd"),
            "backup/vzdump-lxc-101-2026_11_23-16_00_01.tar.zst"
        );
        assert_eq!(
            dir_volname(GuestType::Qemu, 100, t, &TimeZone::UTC, "gzip"),
            "backup/vzdump-qemu-100-2026_11_23-15_00_01.vma.gz"
        );
        assert_eq!(
            dir_volname(GuestType::Lxc, 100, t, &TimeZone::UTC, "1"),
            "backup/vzdump-lxc-100-2026_11_23-15_00_01.tar.lzo"
        );
        assert_eq!(
            dir_volname(GuestType::Qemu, 100, t, &TimeZone::UTC, "0"),
            "backup/vzdump-qemu-100-2026_11_23-15_00_01.vma"
        );
    }

    #[test]
    fn pbs_names_are_utc() {
        let t = ts("2026-11-23T15:00:01Z");
        assert_eq!(
            pbs_volname(GuestType::Qemu, 101, t),
            "backup/vm/101/2026-11-23T15:00:01Z"
        );
        assert_eq!(
            pbs_volname(GuestType::Lxc, 102, t),
            "backup/ct/102/2026-11-23T15:00:01Z"
        );
        assert_eq!(
            parse_volname("backup/ct/102/2026-11-23T15:00:01Z", &budapest()),
            Some(info(102, GuestType::Lxc, Some(t), "pbs-ct"))
        );
    }

    #[test]
    fn parses_standard_dir_names() {
        let tz = budapest();
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-2026_11_23-16_00_01.vma.zst", &tz),
            Some(info(
                101,
                GuestType::Qemu,
                Some(ts("2026-11-23T15:00:01Z")),
                "vma.zst"
            ))
        );
        assert_eq!(
            parse_volname("backup/vzdump-lxc-999999999-2026_01_02-03_04_05.tgz", &tz)
                .map(|i| (i.vmid, i.format, i.std_name)),
            Some((999_999_999, "tgz".to_string(), true))
        );
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-2026_11_23-16_00_01.tar.bz2", &tz)
                .map(|i| i.format),
            Some("tar.bz2".to_string())
        );
    }

    #[test]
    fn non_standard_dir_names_keep_their_owner() {
        let tz = TimeZone::UTC;
        // renamed by hand
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-before-upgrade.vma.zst", &tz),
            Some(info(101, GuestType::Qemu, None, "vma.zst"))
        );
        // vmid below 100: owned, but not a standard name
        assert_eq!(
            parse_volname("backup/vzdump-lxc-99-2026_11_23-15_00_01.tar", &tz),
            Some(info(99, GuestType::Lxc, None, "tar"))
        );
        // impossible dates: timelocal dies
        for bad in [
            "backup/vzdump-qemu-101-2026_02_29-15_00_01.vma",
            "backup/vzdump-qemu-101-2026_13_01-15_00_01.vma",
            "backup/vzdump-qemu-101-2026_11_23-24_00_00.vma",
            "backup/vzdump-qemu-101-2026_11_23-15_00_60.vma",
            "backup/vzdump-qemu-101-0026_11_23-15_00_00.vma",
        ] {
            assert_eq!(
                parse_volname(bad, &tz),
                Some(info(101, GuestType::Qemu, None, "vma")),
                "{bad}"
            );
        }
        // leap day exists in 2028
        assert!(
            parse_volname("backup/vzdump-qemu-101-2028_02_29-15_00_01.vma", &tz)
                .unwrap()
                .std_name
        );
        // wrong extension for the standard part, or trailing junk
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-2026_11_23-15_00_01.x.vma", &tz),
            Some(info(101, GuestType::Qemu, None, "vma"))
        );
    }

    #[test]
    fn rejects_non_backups() {
        let tz = TimeZone::UTC;
        for bad in [
            "vzdump-qemu-101-2026_11_23-15_00_01.vma",
            "backup/vzdump-qemu-101-2026_11_23-15_00_01.vma.xz",
            "backup/vzdump-qemu-101-2026_11_23-15_00_01.zst",
            "backup/vzdump-openvz-101-2026_11_23-15_00_01.tar",
            "backup/vzdump-qemu-abc-2026_11_23-15_00_01.vma",
            "backup/vzdump-qemu-0101-2026_11_23-15_00_01.vma",
            "backup/vzdump-qemu-101.vma",
            "backup/other-101.vma",
            "backup/.vma",
            "backup/vm/101/2026-11-23T15:00:01",
            "backup/host/101/2026-11-23T15:00:01Z",
            "backup/vm/abc/2026-11-23T15:00:01Z",
            "backup/vm/1_1/2026-11-23T15:00:01Z",
            "backup/vm/101/x/2026-11-23T15:00:01Z",
        ] {
            assert_eq!(parse_volname(bad, &tz), None, "{bad}");
        }
        // PVE's owner regex `-(\d+)-.+` may reach into the extension: still a backup of 101
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-.vma", &tz),
            Some(info(101, GuestType::Qemu, None, "vma"))
        );
    }

    #[test]
    fn repeated_hour_reads_back_as_the_earlier_instant() {
        let tz = budapest();
        let first = ts("2026-10-25T00:30:00Z"); // 02:30 CEST
        let second = ts("2026-10-25T01:30:00Z"); // 02:30 CET
        let a = dir_volname(GuestType::Qemu, 101, first, &tz, "zstd");
        let b = dir_volname(GuestType::Qemu, 101, second, &tz, "zstd");
        assert_eq!(a, "backup/vzdump-qemu-101-2026_10_25-02_30_00.vma.zst");
        assert_eq!(a, b);
        assert_eq!(parse_volname(&b, &tz).unwrap().ctime, Some(first));
        // a skipped local time (02:30 on 2026-03-29) is read as one hour later (03:30 CEST)
        assert_eq!(
            parse_volname("backup/vzdump-qemu-101-2026_03_29-02_30_00.vma", &tz)
                .unwrap()
                .ctime,
            Some(ts("2026-03-29T01:30:00Z"))
        );
    }

    fn guest_type() -> impl Strategy<Value = GuestType> {
        prop_oneof![Just(GuestType::Qemu), Just(GuestType::Lxc)]
    }

    proptest! {
        #[test]
        fn dir_names_round_trip(
            ty in guest_type(),
            vmid in 100u32..=999_999_999,
            // 2000-01-01 .. 2100-01-01
            ctime in 946_684_800i64..4_102_444_800,
            budapest_tz in any::<bool>(),
            compress in prop_oneof![Just("zstd"), Just("gzip"), Just("lzo"), Just("0")],
        ) {
            let tz = if budapest_tz { budapest() } else { TimeZone::UTC };
            let local = Timestamp::from_second(ctime).unwrap().to_zoned(tz.clone()).datetime();
            prop_assume!(!tz.to_ambiguous_zoned(local).is_ambiguous());
            let name = dir_volname(ty, vmid, ctime, &tz, compress);
            let info = parse_volname(&name, &tz).unwrap();
            prop_assert_eq!(info.vmid, vmid);
            prop_assert_eq!(info.ty, ty);
            prop_assert_eq!(info.ctime, Some(ctime));
            prop_assert!(info.std_name);
            let suffix = format!(".{}", info.format);
            prop_assert!(name.ends_with(&suffix), "{} does not end with {}", name, suffix);
        }

        #[test]
        fn pbs_names_round_trip(
            ty in guest_type(),
            vmid in 100u32..=999_999_999,
            ctime in 0i64..4_102_444_800,
        ) {
            let info = parse_volname(&pbs_volname(ty, vmid, ctime), &budapest()).unwrap();
            prop_assert_eq!(info, ArchiveInfo {
                vmid,
                ty,
                ctime: Some(ctime),
                std_name: true,
                format: format!("pbs-{}", ty.pbs_type()),
            });
        }
    }
}
