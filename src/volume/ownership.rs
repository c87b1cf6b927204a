//! A pod's `fsGroup` applied to a volume it can write (upstream `SetVolumeOwnership`): every
//! file and directory gets the group, group read-write (read-only volumes: group read),
//! directories also group execute and setgid so new files inherit the group. With
//! `fsGroupChangePolicy: OnRootMismatch` nothing is walked when the volume's root already
//! has the group and those bits.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::VolumeError;

const RW: u32 = 0o660;
const RO: u32 = 0o440;
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Whether the root of a volume already has `gid` and the bits the walk would set.
fn root_matches(root: &Metadata, gid: u32, read_only: bool) -> bool {
    if root.gid() != gid || !root.is_dir() {
        return false;
    }
    let wanted = if read_only { RO } else { RW } | SETGID;
    root.mode() & wanted == wanted
}

fn apply(path: &Path, meta: &Metadata, gid: u32, read_only: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        // chmod would follow it.
        return Ok(());
    }
    let mut mask = if read_only { RO } else { RW };
    if meta.is_dir() {
        mask |= SETGID | EXEC;
    }
    let mode = meta.mode() & 0o7777;
    if mode | mask != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | mask))?;
    }
    Ok(())
}

fn walk(dir: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        apply(&path, &meta, gid, read_only)?;
        if meta.is_dir() {
            walk(&path, gid, read_only)?;
        }
    }
    Ok(())
}

/// Applies `fs_group` to the volume at `root` as upstream does; `policy` is the pod's
/// `fsGroupChangePolicy` (`Always` when unset).
pub fn set_volume_ownership(
    root: &Path,
    fs_group: i64,
    policy: Option<&str>,
    read_only: bool,
) -> Result<(), VolumeError> {
    let err = |e: io::Error| VolumeError::io("apply fsGroup to", root, e);
    let gid = u32::try_from(fs_group).map_err(|_| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fsGroup {fs_group} is not a valid group id"),
        ))
    })?;
    let meta = std::fs::symlink_metadata(root).map_err(err)?;
    if policy == Some("OnRootMismatch") && root_matches(&meta, gid, read_only) {
        log::debug!("{}: fsGroup {gid} already applied", root.display());
        return Ok(());
    }
    apply(root, &meta, gid, read_only).map_err(err)?;
    if meta.is_dir() {
        walk(root, gid, read_only).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;

    #[test]
    fn group_and_bits_are_applied_and_on_root_mismatch_skips_a_matching_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: changing a file's group needs root");
            return;
        }
        let tmp = TestDir::new("fsgroup");
        let root = tmp.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(
            root.join("sub/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).unwrap();
        set_volume_ownership(&root, 4321, None, false).unwrap();
        let meta = |rel: &str| std::fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!(meta("").gid(), 4321);
        assert_eq!(meta("sub").mode() & 0o2770, 0o2770);
        assert_eq!(meta("sub/file").gid(), 4321);
        assert_eq!(meta("sub/file").mode() & 0o777, 0o660);
        assert_eq!(meta("link").gid(), 4321);
        assert_ne!(
            std::fs::metadata("/etc/hostname").unwrap().gid(),
            4321,
            "symlinks are not followed"
        );
        // OnRootMismatch: a matching root means nothing below is walked.
        std::os::unix::fs::lchown(root.join("sub/file"), None, Some(0)).unwrap();
        set_volume_ownership(&root, 4321, Some("OnRootMismatch"), false).unwrap();
        assert_eq!(meta("sub/file").gid(), 0);
        set_volume_ownership(&root, 4321, Some("Always"), false).unwrap();
        assert_eq!(meta("sub/file").gid(), 4321);
        assert!(set_volume_ownership(&root, -1, None, false).is_err());
    }
}
