//! tmpfs mounts for `emptyDir.medium: Memory` and secret volumes, and queries over
//! the mount table for teardown (upstream `setupTmpfs` in `pkg/volume/emptydir` and
//! the mount-utils `Interface`). Runs on the caller's thread; all syscalls go
//! through rustix.
//!
//! Like upstream, the tmpfs gets `size=<bytes>` when a size limit is set and no other
//! options, so its root keeps the tmpfs default mode 1777.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use super::error::VolumeError;

/// Where the kernel lists this process's mounts.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`, the fields the volume code needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where the filesystem is mounted, with octal escapes decoded.
    pub mount_point: PathBuf,
    /// The filesystem type (`tmpfs`, `ext4`, `overlay`, ...).
    pub fs_type: String,
    /// The mount source (`tmpfs`, `/dev/sda1`, ...), escapes decoded.
    pub source: String,
}

/// Mounts a fresh tmpfs on the existing directory `target`, limited to
/// `size_limit_bytes` when given (otherwise the kernel default, half of RAM).
///
/// Idempotent: a tmpfs already mounted on `target` is left alone.
pub fn mount_tmpfs(target: &Path, size_limit_bytes: Option<u64>) -> Result<(), VolumeError> {
    if mount_fs_type(target).as_deref() == Some("tmpfs") {
        debug!("tmpfs already mounted on {}", target.display());
        return Ok(());
    }
    let mount_err = |source: io::Error| VolumeError::Mount {
        target: target.to_path_buf(),
        source,
    };
    let options = match size_limit_bytes.filter(|&n| n > 0) {
        Some(n) => Some(
            CString::new(format!("size={n}"))
                .map_err(|e| mount_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?,
        ),
        None => None,
    };
    info!(
        "mounting tmpfs on {} (options {:?})",
        target.display(),
        options.as_deref().unwrap_or_default()
    );
    rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::empty(),
        options.as_deref(),
    )
    .map_err(|e| mount_err(e.into()))
}

/// Bind-mounts `from` on `target` (a directory that exists), read-only when asked: a bind
/// mount first, then a remount with `ro`, as mount(8) does for `bind,ro`.
pub fn mount_bind(from: &Path, target: &Path, read_only: bool) -> Result<(), VolumeError> {
    let bind_err = |e: Errno| VolumeError::BindMount {
        from: from.to_path_buf(),
        target: target.to_path_buf(),
        source: e.into(),
    };
    rustix::mount::mount_bind(from, target).map_err(bind_err)?;
    if read_only {
        let flags = MountFlags::BIND | MountFlags::RDONLY;
        if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
            // Never leave a read-only volume writable.
            let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
            return Err(bind_err(e));
        }
    }
    info!(
        "bind-mounted {} on {}{}",
        from.display(),
        target.display(),
        if read_only { " (read-only)" } else { "" }
    );
    Ok(())
}

/// Unmounts `target`. A busy mount is detached lazily (`MNT_DETACH`) as a fallback;
/// a path that is not a mount point is already in the desired state.
pub fn unmount(target: &Path) -> Result<(), VolumeError> {
    let unmount_err = |e: Errno| VolumeError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    };
    match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
        Ok(()) => {
            info!("unmounted {}", target.display());
            Ok(())
        }
        Err(Errno::BUSY) => {
            warn!("{} is busy, detaching lazily", target.display());
            rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                .map_err(unmount_err)
        }
        Err(Errno::INVAL) if !is_mount_point(target) => {
            debug!(
                "{} is not a mount point, nothing to unmount",
                target.display()
            );
            Ok(())
        }
        Err(e) => Err(unmount_err(e)),
    }
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
/// An unreadable mount table yields an empty list and a warning.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut points: Vec<PathBuf> = read_mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then_with(|| a.cmp(b))
    });
    points.dedup();
    points
}

/// Whether something is mounted exactly on `path` (bind mounts included).
pub fn is_mount_point(path: &Path) -> bool {
    mount_fs_type(path).is_some()
}

/// The type of the topmost filesystem mounted exactly on `path`, if any.
fn mount_fs_type(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path).ok()?;
    read_mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
        .map(|m| m.fs_type)
}

fn read_mountinfo() -> Vec<MountInfo> {
    match fs::read_to_string(MOUNTINFO) {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            warn!("reading {MOUNTINFO}: {e}");
            Vec::new()
        }
    }
}

/// Parses `/proc/<pid>/mountinfo` text, skipping malformed lines.
///
/// Format: `id parent major:minor root mount_point options [optional...] - fstype
/// source super_options`.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            let fs_type = fields.get(sep + 1)?;
            let source = fields.get(sep + 2)?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: unescape(fs_type),
                source: unescape(source),
            })
        })
        .collect()
}

/// Decodes the kernel's `\ooo` octal escapes (space `\040`, tab `\011`, newline
/// `\012`, backslash `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;
    use std::os::unix::fs::PermissionsExt;

    const FIXTURE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
101 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tok rw,relatime - tmpfs tmpfs rw,size=4096k
102 22 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my\\040cache rw master:3 shared:4 - tmpfs tmp\\011fs rw
103 101 8:1 /data /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tok/sub rw - ext4 /dev/sda1 rw
104 22 8:1 /x /var/lib/kubelet/pods/u10/vol rw - ext4 /dev/sda1 rw
garbage line
";

    #[test]
    fn parses_fixture_with_escapes() {
        let mounts = parse_mountinfo(FIXTURE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[3],
            MountInfo {
                mount_point: PathBuf::from(
                    "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my cache"
                ),
                fs_type: "tmpfs".into(),
                source: "tmp\tfs".into(),
            }
        );
        assert_eq!(mounts[1].fs_type, "proc");
        assert_eq!(mounts[4].source, "/dev/sda1");
    }

    #[test]
    fn unescape_cases() {
        let cases = [
            ("plain", "plain"),
            ("a\\040b", "a b"),
            ("back\\134slash", "back\\slash"),
            ("nl\\012", "nl\n"),
            ("short\\04", "short\\04"),
            ("not\\089", "not\\089"),
            ("\\", "\\"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape(input), want, "{input}");
        }
    }

    #[test]
    fn mount_points_filter_on_whole_components() {
        let under: Vec<PathBuf> = parse_mountinfo(FIXTURE)
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with("/var/lib/kubelet/pods/u1"))
            .collect();
        assert_eq!(under.len(), 3, "u10 must not match u1: {under:?}");
    }

    #[test]
    fn root_and_proc_are_mount_points() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self/mountinfo")));
        assert!(!is_mount_point(Path::new("/definitely/not/there")));
    }

    /// Whether this process holds CAP_SYS_ADMIN (bit 21 of CapEff), which mount(2) needs.
    fn has_cap_sys_admin() -> bool {
        let status = fs::read_to_string("/proc/self/status").expect("read status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff line")
            .trim();
        let caps = u64::from_str_radix(hex, 16).expect("CapEff hex");
        caps & (1 << 21) != 0
    }

    #[test]
    fn tmpfs_mount_and_unmount() {
        let dir = TestDir::new("mount");
        let target = dir.path().join("mem");
        fs::create_dir(&target).expect("mkdir");

        if !has_cap_sys_admin() {
            // Unprivileged: the mount must be refused, and say so.
            let err = mount_tmpfs(&target, Some(1 << 20)).expect_err("mount without CAP_SYS_ADMIN");
            match &err {
                VolumeError::Mount { source, .. } => {
                    assert_eq!(source.kind(), io::ErrorKind::PermissionDenied, "{err}")
                }
                other => panic!("unexpected error {other}"),
            }
            assert!(!err.is_retriable());
            return;
        }

        mount_tmpfs(&target, Some(1 << 20)).expect("mount tmpfs");
        assert!(is_mount_point(&target));
        assert_eq!(mount_fs_type(&target).as_deref(), Some("tmpfs"));
        assert_eq!(
            mounts_under(dir.path()),
            vec![fs::canonicalize(&target).expect("canon")]
        );
        let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        // Idempotent, and the size limit is enforced.
        mount_tmpfs(&target, Some(1 << 20)).expect("second mount is a no-op");
        assert_eq!(mounts_under(dir.path()).len(), 1);
        let too_big = fs::write(target.join("big"), vec![0u8; 2 << 20]);
        assert!(too_big.is_err(), "2 MiB must not fit in a 1 MiB tmpfs");

        unmount(&target).expect("unmount");
        assert!(!is_mount_point(&target));
        assert!(mounts_under(dir.path()).is_empty());
        unmount(&target).expect("unmounting a plain dir is a no-op");
    }
}
