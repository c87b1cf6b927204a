//! `hostPath.type` checks (upstream `checkType` in `pkg/volume/hostpath/host_path.go`),
//! run by the caller's thread before a hostPath is bind-mounted into a container.
//!
//! The `*OrCreate` types create what is missing (a 0755 directory, an empty 0644
//! file) with the kubelet's owner and group; every other type only checks. Checks
//! follow symlinks, as upstream's `os.Stat` does.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use log::info;

use super::error::VolumeError;

/// The kind of filesystem object a hostPath `type` demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Expected {
    /// Upstream's wording in `hostPath type check failed: <path> is not a <this>`.
    fn description(self) -> &'static str {
        match self {
            Expected::Directory => "directory",
            Expected::File => "file",
            Expected::Socket => "socket file",
            Expected::CharDevice => "character device",
            Expected::BlockDevice => "block device",
        }
    }

    fn matches(self, file_type: fs::FileType) -> bool {
        match self {
            Expected::Directory => file_type.is_dir(),
            Expected::File => file_type.is_file(),
            Expected::Socket => file_type.is_socket(),
            Expected::CharDevice => file_type.is_char_device(),
            Expected::BlockDevice => file_type.is_block_device(),
        }
    }
}

/// Checks `path` against the hostPath `type` `kind` (`None` and `""` check nothing),
/// creating it first for `DirectoryOrCreate` and `FileOrCreate`.
pub fn check_host_path(path: &Path, kind: Option<&str>) -> Result<(), VolumeError> {
    let expected = match kind.unwrap_or_default() {
        "" => return Ok(()),
        "DirectoryOrCreate" => {
            if !exists(path)? {
                return make_dir(path);
            }
            Expected::Directory
        }
        "Directory" => Expected::Directory,
        "FileOrCreate" => {
            if !exists(path)? {
                return make_file(path);
            }
            Expected::File
        }
        "File" => Expected::File,
        "Socket" => Expected::Socket,
        "CharDevice" => Expected::CharDevice,
        "BlockDevice" => Expected::BlockDevice,
        other => {
            return Err(VolumeError::InvalidHostPathType {
                kind: other.to_string(),
            })
        }
    };
    let matches = match fs::metadata(path) {
        Ok(meta) => expected.matches(meta.file_type()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(VolumeError::io("stat", path, e)),
    };
    if matches {
        Ok(())
    } else {
        Err(VolumeError::HostPathType {
            path: path.to_path_buf(),
            expected: expected.description(),
        })
    }
}

/// Whether `path` exists (following symlinks; a dangling link does not).
fn exists(path: &Path) -> Result<bool, VolumeError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(VolumeError::io("stat", path, e)),
    }
}

/// `mkdir -p` with mode 0755 (less the umask, as upstream).
fn make_dir(path: &Path) -> Result<(), VolumeError> {
    info!("hostPath: creating directory {}", path.display());
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| VolumeError::io("create directory", path, e))
}

/// Creates an empty 0644 file; the parent directory must already exist.
fn make_file(path: &Path) -> Result<(), VolumeError> {
    info!("hostPath: creating file {}", path.display());
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(VolumeError::io("create file", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    #[test]
    fn type_checks_like_upstream() {
        let dir = TestDir::new("hostpath");
        let d = dir.path().join("dir");
        let f = dir.path().join("file");
        let s = dir.path().join("sock");
        let missing = dir.path().join("missing");
        fs::create_dir(&d).expect("dir");
        fs::write(&f, b"x").expect("file");
        let _listener = UnixListener::bind(&s).expect("socket");
        let null = Path::new("/dev/null");

        let ok: &[(&Path, Option<&str>)] = &[
            (&missing, None),
            (&missing, Some("")),
            (&d, Some("Directory")),
            (&d, Some("DirectoryOrCreate")),
            (&f, Some("File")),
            (&f, Some("FileOrCreate")),
            (&s, Some("Socket")),
            (null, Some("CharDevice")),
        ];
        for (path, kind) in ok {
            check_host_path(path, *kind)
                .unwrap_or_else(|e| panic!("{} as {kind:?}: {e}", path.display()));
        }

        let mismatches: &[(&Path, &str, &str)] = &[
            (&f, "Directory", "directory"),
            (&missing, "Directory", "directory"),
            (&f, "DirectoryOrCreate", "directory"),
            (&d, "File", "file"),
            (&d, "FileOrCreate", "file"),
            (&missing, "File", "file"),
            (&f, "Socket", "socket file"),
            (&f, "CharDevice", "character device"),
            (null, "BlockDevice", "block device"),
        ];
        for (path, kind, what) in mismatches {
            let err = check_host_path(path, Some(kind)).expect_err(kind);
            assert_eq!(
                err.to_string(),
                format!(
                    "hostPath type check failed: {} is not a {what}",
                    path.display()
                ),
                "{kind}"
            );
            assert!(err.is_retriable());
        }
    }

    #[test]
    fn or_create_types_create_what_is_missing() {
        let dir = TestDir::new("hostpath-create");
        let new_dir = dir.path().join("a/b/c");
        check_host_path(&new_dir, Some("DirectoryOrCreate")).expect("create dir");
        assert!(new_dir.is_dir());
        check_host_path(&new_dir, Some("Directory")).expect("now a directory");

        let new_file = dir.path().join("a/new.txt");
        check_host_path(&new_file, Some("FileOrCreate")).expect("create file");
        let meta = fs::metadata(&new_file).expect("stat");
        assert!(meta.is_file());
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.permissions().mode() & 0o777 & !0o022, 0o644 & !0o022);

        let orphan = dir.path().join("no-parent/file");
        let err = check_host_path(&orphan, Some("FileOrCreate")).expect_err("parent missing");
        assert!(matches!(err, VolumeError::Io { .. }), "{err}");
    }

    #[test]
    fn unknown_type_is_rejected() {
        let err = check_host_path(Path::new("/"), Some("Dir")).expect_err("bad type");
        assert_eq!(err.to_string(), "Dir is an invalid volume type");
        assert!(!err.is_retriable());
    }
}
