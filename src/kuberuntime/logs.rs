//! Where container logs live (same layout as upstream, so log shippers work):
//! `<pod-logs-dir>/<ns>_<name>_<uid>/<container>/<restartCount>.log`, and the legacy symlinks
//! `<container-logs-dir>/<pod>_<ns>_<container>-<containerID>.log` pointing at them.

use std::io;
use std::path::{Path, PathBuf};

/// The directory holding one pod's container logs.
pub fn pod_log_dir(pod_logs_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    pod_logs_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// A container's log path relative to the pod log directory (what CRI `log_path` takes).
pub fn container_log_relative_path(container: &str, restart_count: u32) -> PathBuf {
    Path::new(container).join(format!("{restart_count}.log"))
}

/// The legacy symlink name for a container's log.
pub fn legacy_symlink_path(
    container_logs_dir: &Path,
    pod: &str,
    namespace: &str,
    container: &str,
    container_id: &str,
) -> PathBuf {
    container_logs_dir.join(format!("{pod}_{namespace}_{container}-{container_id}.log"))
}

/// Creates (or replaces) the legacy symlink `link` → `target`.
pub fn create_legacy_symlink(target: &Path, link: &Path) -> io::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, link)
}

/// Removes the legacy symlinks of the given container ids (missing links are fine).
pub fn remove_legacy_symlinks(container_logs_dir: &Path, container_ids: &[String]) {
    let Ok(entries) = std::fs::read_dir(container_logs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if container_ids
            .iter()
            .any(|id| name.ends_with(&format!("-{id}.log")))
        {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                log::warn!("removing log symlink {}: {e}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_upstream() {
        let dir = pod_log_dir(Path::new("/var/log/pods"), "default", "web-n1", "u1");
        assert_eq!(dir, Path::new("/var/log/pods/default_web-n1_u1"));
        assert_eq!(
            dir.join(container_log_relative_path("app", 2)),
            Path::new("/var/log/pods/default_web-n1_u1/app/2.log")
        );
        assert_eq!(
            legacy_symlink_path(
                Path::new("/var/log/containers"),
                "web-n1",
                "default",
                "app",
                "abc"
            ),
            Path::new("/var/log/containers/web-n1_default_app-abc.log")
        );
    }

    #[test]
    fn symlinks_are_replaced_and_removed() {
        let tmp = std::env::temp_dir().join(format!("rkubelet-logs-{}", std::process::id()));
        let link = legacy_symlink_path(&tmp, "p", "ns", "c", "id1");
        create_legacy_symlink(Path::new("/nonexistent/0.log"), &link).unwrap();
        create_legacy_symlink(Path::new("/nonexistent/1.log"), &link).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/nonexistent/1.log")
        );
        remove_legacy_symlinks(&tmp, &["id1".to_string()]);
        assert!(std::fs::symlink_metadata(&link).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
