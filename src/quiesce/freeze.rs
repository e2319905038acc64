//! fsfreeze planning: which mounts to freeze, in which order, and whether to freeze at all.
//! Pure — no I/O; the ioctls and the watchdog live in [`super::fsfreeze_sys`].
//!
//! Invariants:
//! * a configured path must itself be a mount point (the visible mount of that path in
//!   `/proc/self/mountinfo`); otherwise it is refused, naming the mount that holds it;
//! * `/`, and any entry on the same filesystem (same `major:minor`) as `/` or as a protected
//!   path (the state dir, which also holds the journal), is refused: a frozen filesystem the
//!   agent must write to would deadlock it;
//! * the freeze order is reverse mount order (later, deeper mounts first) and the thaw order is
//!   its reverse; two entries on one filesystem are frozen once (a second FIFREEZE of the same
//!   superblock would fail with EBUSY against ourselves);
//! * qemu in snapshot mode with the guest agent enabled and `freeze-fs` on: PVE freezes, ours is
//!   skipped unless forced; stop mode never freezes (the shutdown is the quiesce, and a frozen
//!   filesystem would block it).

use std::path::{Component, Path, PathBuf};

use crate::pve::guest_config::AgentOption;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    /// `major:minor` of the filesystem (identifies the superblock FIFREEZE acts on).
    pub dev: (u32, u32),
    /// The mount point, with the kernel's octal escapes (`\040` …) decoded.
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            let v = digit(1) * 64 + digit(2) * 8 + digit(3);
            if let Ok(c) = u8::try_from(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` (see proc(5)); malformed lines are skipped. Order is kept: it is
/// the mount order.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    Some(MountEntry {
        id: fields[0].parse().ok()?,
        parent: fields[1].parse().ok()?,
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape(fields[4])),
        fstype: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
    })
}

/// Index (in `mounts`) of the mount that holds `path`: the longest mount point that is a
/// component-wise prefix of `path`; among equal mount points the last one (it hides the others).
/// `path` should be absolute and canonical.
pub fn mount_of(path: &Path, mounts: &[MountEntry]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None; // (depth, index)
    for (i, m) in mounts.iter().enumerate() {
        if path.starts_with(&m.mount_point) {
            let depth = m.mount_point.components().count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// Lexically normalised absolute path (`.` removed, `..` applied, trailing `/` dropped).
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Why a configured fsfreeze path is refused (the caller adds the key and location).
pub fn refusal(
    entry: &Path,
    mounts: &[MountEntry],
    protected: &[(&str, PathBuf)],
) -> Option<String> {
    let entry = normalise(entry);
    if entry == Path::new("/") {
        return Some(
            "refusing to freeze \"/\": the root filesystem holds the agent's own files, logs and \
             binaries, and freezing it would hang the guest"
                .into(),
        );
    }
    let Some(i) = mount_of(&entry, mounts) else {
        return Some(format!(
            "{} is on no mount listed in /proc/self/mountinfo",
            entry.display()
        ));
    };
    let m = &mounts[i];
    if m.mount_point != entry {
        return Some(format!(
            "{} is not a mount point; it is on the filesystem mounted at {} (write that mount \
             point, or mount a filesystem at {})",
            entry.display(),
            m.mount_point.display(),
            entry.display()
        ));
    }
    if let Some(r) = mount_of(Path::new("/"), mounts)
        && mounts[r].dev == m.dev
    {
        return Some(format!(
            "refusing to freeze {}: it is the same filesystem as \"/\" (device {}:{})",
            entry.display(),
            m.dev.0,
            m.dev.1
        ));
    }
    for (what, p) in protected {
        if let Some(pi) = mount_of(p, mounts)
            && mounts[pi].dev == m.dev
        {
            return Some(format!(
                "refusing to freeze {}: it holds the {what} {} (the agent writes there while \
                 the filesystem would be frozen); move the {what} to another filesystem",
                entry.display(),
                p.display()
            ));
        }
    }
    None
}

/// The freeze plan of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Mount points in freeze order (reverse mount order); thaw in reverse of this.
    pub freeze_order: Vec<PathBuf>,
    /// `(entry, mount frozen for it)`: entries on a filesystem already in the plan.
    pub merged: Vec<(PathBuf, PathBuf)>,
}

/// Plans the freeze of `entries` against the current mounts; an entry that is refused (see
/// [`refusal`]) fails the plan with the reason.
pub fn plan(
    entries: &[PathBuf],
    mounts: &[MountEntry],
    protected: &[(&str, PathBuf)],
) -> Result<Plan, String> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut merged = Vec::new();
    for e in entries {
        if let Some(why) = refusal(e, mounts, protected) {
            return Err(why);
        }
        let i = mount_of(&normalise(e), mounts).expect("refusal checked the mount");
        match chosen.iter().find(|&&c| mounts[c].dev == mounts[i].dev) {
            Some(&c) => merged.push((normalise(e), mounts[c].mount_point.clone())),
            None => chosen.push(i),
        }
    }
    chosen.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Plan {
        freeze_order: chosen
            .into_iter()
            .map(|i| mounts[i].mount_point.clone())
            .collect(),
        merged,
    })
}

/// The guest type as far as freezing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeGuest {
    Qemu,
    Lxc,
}

/// What PVE's own job does around the consistency point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeJob {
    /// vzdump in this mode.
    Backup { snapshot: bool, stop: bool },
    /// A PVE snapshot; `vmstate` = with RAM (qemu then does not freeze through the agent).
    Snapshot { vmstate: bool },
}

/// Freeze or not, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Freeze {
        /// Informational note for the log (e.g. the LXC cgroup freezer interplay).
        note: Option<String>,
    },
    Skip {
        reason: String,
    },
}

/// Decides whether the agent freezes itself. `agent`: the qemu `agent` option, `None` when the
/// guest config could not be read (then we freeze: better twice than never).
pub fn decide(
    guest: FreezeGuest,
    job: FreezeJob,
    agent: Option<AgentOption>,
    force: bool,
) -> Decision {
    if let FreezeJob::Backup { stop: true, .. } = job {
        return Decision::Skip {
            reason: "stop mode shuts the guest down (that is the quiesce); a frozen filesystem \
                     would block the shutdown"
                .into(),
        };
    }
    let pve_freezes = match job {
        FreezeJob::Backup { snapshot, .. } => snapshot,
        FreezeJob::Snapshot { vmstate } => !vmstate,
    };
    match guest {
        FreezeGuest::Qemu => match agent {
            Some(a) if a.enabled && a.freeze_fs && pve_freezes => {
                if force {
                    Decision::Freeze {
                        note: Some(
                            "the guest agent is enabled with freeze-fs on, so PVE freezes too; \
                             freezing anyway (quiesce.fsfreeze-force = true)"
                                .into(),
                        ),
                    }
                } else {
                    Decision::Skip {
                        reason: "PVE freezes the guest's filesystems through the QEMU guest \
                                 agent (agent enabled, freeze-fs on); set \
                                 quiesce.fsfreeze-force = true to freeze anyway"
                            .into(),
                    }
                }
            }
            None => Decision::Freeze {
                note: Some(
                    "the guest config could not be read, so whether PVE freezes too is unknown"
                        .into(),
                ),
            },
            _ => Decision::Freeze { note: None },
        },
        FreezeGuest::Lxc if pve_freezes => Decision::Freeze {
            note: Some(
                "PVE also pauses the whole container (cgroup freezer) while it takes the \
                 volume snapshot; the agent then pauses too and its max-freeze deadline still \
                 holds"
                    .into(),
            ),
        },
        FreezeGuest::Lxc => Decision::Freeze { note: None },
    }
}

#[cfg(test)]
mod tests;
