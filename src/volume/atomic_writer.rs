//! Atomic projection of a set of files into a volume directory (upstream
//! `pkg/volume/util/atomic_writer.go`), used by secret, configMap, downwardAPI and
//! projected volumes. Runs on the caller's thread; the caller serialises writes to one
//! target directory.
//!
//! Layout of a target directory after a write of `{"user", "k8s/annotations"}`:
//!
//! ```text
//! <target>/..2026_11_27_06_17_03.123456789/user            real files, one dir per version
//! <target>/..2026_11_27_06_17_03.123456789/k8s/annotations
//! <target>/..data -> ..2026_11_27_06_17_03.123456789       swapped by rename(2)
//! <target>/user   -> ..data/user                           user-visible, created once
//! <target>/k8s    -> ..data/k8s
//! ```
//!
//! An update writes a whole new timestamped directory, points `..data_tmp` at it and
//! renames `..data_tmp` over `..data`. Because every visible name resolves through
//! `..data`, a reader sees either the old set or the new one, never a mix. Names
//! starting with `..` are reserved for the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, error, trace};

use super::error::VolumeError;

/// The symlink every user-visible name resolves through.
const DATA_DIR_NAME: &str = "..data";
/// The symlink built next to `..data` and renamed over it.
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
/// Longest single path element, as upstream (and most filesystems) allow.
const MAX_FILE_NAME_LENGTH: usize = 255;
/// Longest payload path, as upstream.
const MAX_PATH_LENGTH: usize = 4096;

/// One file of a payload: its bytes and its permission bits (e.g. `0o644`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file content.
    pub data: Vec<u8>,
    /// Permission bits applied with chmod, so the umask does not interfere.
    pub mode: u32,
}

/// Writes payloads into `target_dir` so that each update appears at once.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    /// The volume directory; it must exist before the first write.
    target_dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for the existing directory `target_dir`.
    pub fn new(target_dir: impl Into<PathBuf>) -> AtomicWriter {
        AtomicWriter {
            target_dir: target_dir.into(),
        }
    }

    /// The directory this writer projects into.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Projects `payload` (relative path → file) into the target directory.
    ///
    /// Returns `Ok(false)` when the current content already equals the payload (same
    /// set of files, bytes and modes), `Ok(true)` after an update. On error the
    /// previous version stays visible.
    pub fn write(&self, payload: &BTreeMap<String, FileProjection>) -> Result<bool, VolumeError> {
        let target = self.target_dir.display();
        let payload = validate_payload(payload).inspect_err(|e| {
            error!("atomic writer: invalid payload for {target}: {e}");
        })?;

        let data_dir = self.target_dir.join(DATA_DIR_NAME);
        let old_ts_name = match fs::read_link(&data_dir) {
            Ok(link) => Some(link),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(VolumeError::io("read link", data_dir, e)),
        };
        let old_ts_dir = old_ts_name.as_ref().map(|n| self.target_dir.join(n));

        let mut paths_to_remove = BTreeSet::new();
        if let Some(old) = &old_ts_dir {
            paths_to_remove = stale_paths(&payload, old)?;
            if !should_write_payload(&payload, old)? && paths_to_remove.is_empty() {
                trace!("atomic writer: no update required for {target}");
                return Ok(false);
            }
        }

        let ts_dir = self.new_timestamp_dir()?;
        let ts_name = ts_dir
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| ts_dir.clone());
        if let Err(e) = write_payload_to_dir(&payload, &ts_dir) {
            error!("atomic writer: writing {}: {e}", ts_dir.display());
            remove_dir_logged(&ts_dir);
            return Err(e);
        }

        let new_data_dir = self.target_dir.join(NEW_DATA_DIR_NAME);
        if let Err(e) = self.swap_data_dir(&ts_name, &new_data_dir, &data_dir) {
            let _ = fs::remove_file(&new_data_dir);
            remove_dir_logged(&ts_dir);
            return Err(e);
        }
        debug!(
            "atomic writer: {target} now points at {}",
            ts_name.display()
        );

        self.create_user_visible_files(&payload)?;
        self.remove_user_visible_paths(&paths_to_remove)?;

        if let (Some(name), Some(old)) = (&old_ts_name, &old_ts_dir) {
            // Only ever delete something that looks like our own timestamped dir,
            // so a tampered `..data` link cannot point the removal elsewhere.
            if is_own_ts_name(name) && *name != ts_name {
                fs::remove_dir_all(old)
                    .map_err(|e| VolumeError::io("remove old data directory", old, e))?;
            }
        }
        Ok(true)
    }

    /// Creates `..<UTC timestamp>.<nanos>` with mode 0755 (group and others must be
    /// able to traverse it whatever the umask).
    fn new_timestamp_dir(&self) -> Result<PathBuf, VolumeError> {
        let mut attempt = 0u32;
        loop {
            let dir = self
                .target_dir
                .join(timestamp_dir_name(SystemTime::now(), attempt));
            match fs::DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => {
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(|e| VolumeError::io("chmod", &dir, e))?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(VolumeError::io("create directory", dir, e)),
            }
        }
    }

    /// Points `..data_tmp` at `ts_name` and renames it over `..data` (atomic).
    fn swap_data_dir(
        &self,
        ts_name: &Path,
        new_data_dir: &Path,
        data_dir: &Path,
    ) -> Result<(), VolumeError> {
        // A leftover from a crash between symlink and rename would make symlink fail.
        match fs::remove_file(new_data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(VolumeError::io("remove stale link", new_data_dir, e)),
        }
        std::os::unix::fs::symlink(ts_name, new_data_dir)
            .map_err(|e| VolumeError::io("create symlink", new_data_dir, e))?;
        fs::rename(new_data_dir, data_dir).map_err(|e| VolumeError::io("rename", data_dir, e))
    }

    /// Creates `name -> ..data/name` for each top-level payload entry that has no
    /// visible link yet.
    fn create_user_visible_files(
        &self,
        payload: &BTreeMap<PathBuf, &FileProjection>,
    ) -> Result<(), VolumeError> {
        let top_level: BTreeSet<_> = payload
            .keys()
            .filter_map(|p| p.components().next())
            .collect();
        for first in top_level {
            let visible = self.target_dir.join(first);
            match fs::symlink_metadata(&visible) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(VolumeError::io("stat", visible, e)),
            }
            let link = Path::new(DATA_DIR_NAME).join(first);
            std::os::unix::fs::symlink(&link, &visible)
                .map_err(|e| VolumeError::io("create symlink", &visible, e))?;
        }
        Ok(())
    }

    /// Removes the visible top-level links of paths that left the payload. Nested
    /// stale paths vanish with the old timestamped directory.
    fn remove_user_visible_paths(&self, paths: &BTreeSet<PathBuf>) -> Result<(), VolumeError> {
        let mut last_err = None;
        for p in paths.iter().filter(|p| p.components().count() == 1) {
            let visible = self.target_dir.join(p);
            match fs::remove_file(&visible) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    error!("atomic writer: pruning {}: {e}", visible.display());
                    last_err = Some(VolumeError::io("remove", visible, e));
                }
            }
        }
        last_err.map_or(Ok(()), Err)
    }
}

/// Checks every path and returns the payload keyed by cleaned paths.
fn validate_payload(
    payload: &BTreeMap<String, FileProjection>,
) -> Result<BTreeMap<PathBuf, &FileProjection>, VolumeError> {
    let mut clean = BTreeMap::new();
    for (path, file) in payload {
        clean.insert(validate_path(path)?, file);
    }
    Ok(clean)
}

/// Upstream's rules: not empty, relative, at most 4096 bytes, no `..` element, no
/// element over 255 bytes, first element not starting with `..`. Returns the path
/// with `.` and empty elements dropped.
fn validate_path(path: &str) -> Result<PathBuf, VolumeError> {
    let invalid = |reason| VolumeError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be relative path"));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(invalid("must be less than or equal to 4096 characters"));
    }
    let items: Vec<&str> = path.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(invalid("must not contain '..'"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(invalid(
                "filenames must be less than or equal to 255 characters",
            ));
        }
    }
    if items.first().is_some_and(|first| first.starts_with("..")) {
        return Err(invalid("must not start with '..'"));
    }
    let clean: PathBuf = Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if clean.as_os_str().is_empty() {
        return Err(invalid("must name a file"));
    }
    Ok(clean)
}

/// Whether any payload file is missing from, or differs in bytes or mode from, the
/// current version in `old_ts_dir`.
fn should_write_payload(
    payload: &BTreeMap<PathBuf, &FileProjection>,
    old_ts_dir: &Path,
) -> Result<bool, VolumeError> {
    for (rel, file) in payload {
        let path = old_ts_dir.join(rel);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(VolumeError::io("stat", path, e)),
        };
        if !meta.is_file() || meta.permissions().mode() & 0o7777 != file.mode & 0o7777 {
            return Ok(true);
        }
        let on_disk = fs::read(&path).map_err(|e| VolumeError::io("read file", &path, e))?;
        if on_disk != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Relative paths present in `old_ts_dir` that are neither payload files nor
/// ancestors of payload files.
fn stale_paths(
    payload: &BTreeMap<PathBuf, &FileProjection>,
    old_ts_dir: &Path,
) -> Result<BTreeSet<PathBuf>, VolumeError> {
    let mut current = BTreeSet::new();
    match walk(old_ts_dir, Path::new(""), &mut current) {
        Ok(()) => {}
        Err(VolumeError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(BTreeSet::new());
        }
        Err(e) => return Err(e),
    }
    let wanted: BTreeSet<PathBuf> = payload
        .keys()
        .flat_map(|p| p.ancestors().filter(|a| !a.as_os_str().is_empty()))
        .map(Path::to_path_buf)
        .collect();
    Ok(current.difference(&wanted).cloned().collect())
}

/// Collects every entry below `root/rel` (files and directories) as relative paths.
fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> Result<(), VolumeError> {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).map_err(|e| VolumeError::io("read directory", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("read directory", &dir, e))?;
        let child = rel.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(|e| VolumeError::io("stat", entry.path(), e))?
            .is_dir();
        out.insert(child.clone());
        if is_dir {
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

/// Writes each payload file below `dir`, creating parent directories (0755).
fn write_payload_to_dir(
    payload: &BTreeMap<PathBuf, &FileProjection>,
    dir: &Path,
) -> Result<(), VolumeError> {
    for (rel, file) in payload {
        let full = dir.join(rel);
        if let Some(parent) = full.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| VolumeError::io("create directory", parent, e))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode & 0o7777)
            .open(&full)
            .map_err(|e| VolumeError::io("create file", &full, e))?;
        f.write_all(&file.data)
            .map_err(|e| VolumeError::io("write file", &full, e))?;
        // open(2) applied the umask; the payload's mode must win.
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(|e| VolumeError::io("chmod", &full, e))?;
    }
    Ok(())
}

/// Whether a `..data` link target is a plain `..<something>` name in the target dir.
fn is_own_ts_name(name: &Path) -> bool {
    let mut components = name.components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(n)), None)
            if n.to_string_lossy().starts_with("..") && n != DATA_DIR_NAME && n != NEW_DATA_DIR_NAME
    )
}

fn remove_dir_logged(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        error!("atomic writer: cleaning up {}: {e}", dir.display());
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.<nanoseconds>` in UTC, plus `_<attempt>` on retries.
fn timestamp_dir_name(now: SystemTime, attempt: u32) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut name = format!(
        "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{:09}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_nanos()
    );
    if attempt > 0 {
        name.push_str(&format!("_{attempt}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;
    use std::time::Duration;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(entries: &[(&str, &str)]) -> BTreeMap<String, FileProjection> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), file(v, 0o644)))
            .collect()
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(dir.join(rel)).expect("read projected file")
    }

    /// Names in the target dir that are timestamped data dirs.
    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_write_creates_layout() {
        let dir = TestDir::new("aw-first");
        let w = AtomicWriter::new(dir.path());
        let changed = w
            .write(&payload(&[("user", "alice"), ("pass", "s3cret")]))
            .expect("write");
        assert!(changed);
        assert_eq!(read(dir.path(), "user"), "alice");
        assert_eq!(read(dir.path(), "pass"), "s3cret");
        assert_eq!(
            fs::read_link(dir.path().join("user")).expect("link"),
            Path::new("..data/user")
        );
        let data = fs::read_link(dir.path().join(DATA_DIR_NAME)).expect("..data");
        assert_eq!(
            ts_dirs(dir.path()),
            vec![data.to_string_lossy().into_owned()]
        );
        let meta = fs::metadata(dir.path().join(&data)).expect("ts dir");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(fs::symlink_metadata(dir.path().join(NEW_DATA_DIR_NAME)).is_err());
    }

    #[test]
    fn unchanged_write_returns_false_and_keeps_version() {
        let dir = TestDir::new("aw-same");
        let w = AtomicWriter::new(dir.path());
        let p = payload(&[("a", "1"), ("b/c", "2")]);
        assert!(w.write(&p).expect("first"));
        let before = fs::read_link(dir.path().join(DATA_DIR_NAME)).expect("link");
        assert!(!w.write(&p).expect("second"));
        let after = fs::read_link(dir.path().join(DATA_DIR_NAME)).expect("link");
        assert_eq!(before, after);
    }

    #[test]
    fn update_swaps_content_and_removes_old_version() {
        let dir = TestDir::new("aw-update");
        let w = AtomicWriter::new(dir.path());
        assert!(w.write(&payload(&[("a", "old")])).expect("first"));
        let old = fs::read_link(dir.path().join(DATA_DIR_NAME)).expect("link");
        assert!(w.write(&payload(&[("a", "new")])).expect("second"));
        assert_eq!(read(dir.path(), "a"), "new");
        let new = fs::read_link(dir.path().join(DATA_DIR_NAME)).expect("link");
        assert_ne!(old, new);
        assert_eq!(
            ts_dirs(dir.path()),
            vec![new.to_string_lossy().into_owned()]
        );
    }

    #[test]
    fn removed_keys_disappear() {
        let dir = TestDir::new("aw-remove");
        let w = AtomicWriter::new(dir.path());
        let first = payload(&[("keep", "k"), ("gone", "g"), ("sub/x", "x"), ("sub/y", "y")]);
        assert!(w.write(&first).expect("first"));
        // Same content for the remaining keys: the removal alone forces an update.
        assert!(w
            .write(&payload(&[("keep", "k"), ("sub/x", "x")]))
            .expect("second"));
        assert!(fs::symlink_metadata(dir.path().join("gone")).is_err());
        assert!(!dir.path().join("sub/y").exists());
        assert_eq!(read(dir.path(), "sub/x"), "x");
        assert_eq!(read(dir.path(), "keep"), "k");
    }

    #[test]
    fn nested_paths_link_top_level_only() {
        let dir = TestDir::new("aw-nested");
        let w = AtomicWriter::new(dir.path());
        assert!(w
            .write(&payload(&[
                ("a/b/c", "deep"),
                ("a/d", "d"),
                ("./e//f", "f")
            ]))
            .expect("write"));
        assert_eq!(read(dir.path(), "a/b/c"), "deep");
        assert_eq!(read(dir.path(), "a/d"), "d");
        assert_eq!(read(dir.path(), "e/f"), "f");
        assert_eq!(
            fs::read_link(dir.path().join("a")).expect("link"),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(dir.path().join("e")).expect("link"),
            Path::new("..data/e")
        );
    }

    #[test]
    fn invalid_paths_are_rejected_without_touching_disk() {
        let long_name = "x".repeat(256);
        let long_path = "a/".repeat(2049);
        let cases = [
            "",
            "/etc/passwd",
            "..",
            "a/../b",
            "a/..",
            "..data",
            "..foo/bar",
            long_name.as_str(),
            long_path.as_str(),
            ".",
        ];
        for path in cases {
            let dir = TestDir::new("aw-invalid");
            let w = AtomicWriter::new(dir.path());
            let err = w
                .write(&payload(&[(path, "x")]))
                .expect_err(&format!("{path:?} must be rejected"));
            assert!(
                matches!(err, VolumeError::InvalidPath { .. }),
                "{path:?}: {err}"
            );
            assert!(!err.is_retriable());
            assert_eq!(
                fs::read_dir(dir.path()).expect("dir").count(),
                0,
                "{path:?}"
            );
        }
        // Names that merely contain dots are fine.
        assert!(validate_path("a..b/..c").is_ok());
        assert!(validate_path(".hidden").is_ok());
    }

    #[test]
    fn modes_are_applied_and_mode_change_rewrites() {
        let dir = TestDir::new("aw-modes");
        let w = AtomicWriter::new(dir.path());
        let mut p = BTreeMap::new();
        p.insert("secret".to_string(), file("s", 0o400));
        p.insert("script".to_string(), file("#!/bin/sh", 0o755));
        p.insert("world".to_string(), file("w", 0o666));
        assert!(w.write(&p).expect("write"));
        for (name, mode) in [("secret", 0o400), ("script", 0o755), ("world", 0o666)] {
            let meta = fs::metadata(dir.path().join(name)).expect("stat");
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}");
        }
        p.insert("world".to_string(), file("w", 0o644));
        assert!(w.write(&p).expect("mode change"));
        let meta = fs::metadata(dir.path().join("world")).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn stale_tmp_link_from_crash_is_replaced() {
        let dir = TestDir::new("aw-stale");
        std::os::unix::fs::symlink("..nowhere", dir.path().join(NEW_DATA_DIR_NAME))
            .expect("stale link");
        let w = AtomicWriter::new(dir.path());
        assert!(w.write(&payload(&[("a", "1")])).expect("write"));
        assert_eq!(read(dir.path(), "a"), "1");
    }

    #[test]
    fn missing_target_dir_is_an_io_error() {
        let dir = TestDir::new("aw-missing");
        let w = AtomicWriter::new(dir.path().join("absent"));
        let err = w.write(&payload(&[("a", "1")])).expect_err("no target");
        assert!(matches!(err, VolumeError::Io { .. }), "{err}");
    }

    #[test]
    fn timestamp_names_are_utc() {
        let t = UNIX_EPOCH + Duration::new(1_795_760_223, 123_456_789);
        assert_eq!(timestamp_dir_name(t, 0), "..2026_11_27_06_17_03.123456789");
        assert_eq!(
            timestamp_dir_name(t, 2),
            "..2026_11_27_06_17_03.123456789_2"
        );
    }
}
