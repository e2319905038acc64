//! PVE's backup naming and prune ("retention") algorithm, as a pure reference model.
//!
//! Owns: the `prune-backups` property string ([`PruneOptions`]), the marking of one backup group
//! ([`mark_group`], PVE's `prune_mark_backup_group`), and backup volume names on directory and
//! PBS storages ([`dir_volname`], [`pbs_volname`], [`parse_volname`]). No I/O, no wall clock:
//! every local-time computation takes the node's time zone explicitly.
//!
//! Read from proxmox/pve-storage `src/PVE/Storage.pm` (`prune_mark_backup_group`, `$prune_mark`,
//! `archive_info`, `$BACKUP_EXT_RE_2`; commit `0066560d` and the newer indexed copy, identical
//! here), `src/PVE/Storage/Plugin.pm` (`$prune_backups_format`, `validate_prune_backups`,
//! `prune_backups`, `parse_volname`, `$get_subdir_files`), `src/PVE/Storage/PBSPlugin.pm`
//! (`parse_volname`, `print_volid`), pve-common `src/PVE/JSONSchema.pm`
//! (`parse_property_string`, `check_object`, `check_prop`, `print_property_string`) and
//! `src/PVE/Exception.pm` (`stringify`), and pve-manager `PVE/VZDump.pm` (`exec_backup_task`).
//!
//! Invariants:
//! * [`mark_group`] returns exactly one [`Mark`] per input item, in input order.
//! * [`PruneOptions::parse`] yields the *normalized* value PVE's format validator returns: all
//!   zero/absent becomes `keep-all=1`, and `keep-all=0` is dropped.
//! * For every ctime whose local time is not in a repeated (DST fall-back) hour,
//!   `parse_volname(dir_volname(..))` gives back the same vmid, type and ctime.

mod mark;
mod names;
mod options;

pub use mark::{Mark, PruneItem, mark_group};
pub use names::{ArchiveInfo, GuestType, dir_volname, parse_volname, pbs_volname};
pub use options::PruneOptions;
