//! Container log rotation, as upstream's container log manager (`pkg/kubelet/logs`): the
//! runtime writes each container's log to one file and never rotates it, so the kubelet does.
//!
//! Thread `container-log-manager` wakes every `containerLogMonitorInterval` (10 s) and looks at
//! every running container (CRI `ListContainers`, then `ContainerStatus` for its log path),
//! with at most `containerLogMaxWorkers` (1) containers handled at once. A container whose log
//! has reached `containerLogMaxSize` (10Mi) is rotated:
//!
//! 1. leftovers of an interrupted pass go: `*.tmp` files, and rotated files whose `.gz` exists;
//! 2. the oldest rotated files go, so that with the current log and the one about to be
//!    rotated at most `containerLogMaxFiles` (5) remain;
//! 3. every rotated file is compressed to `<file>.gz` (written as `<file>.tmp` with the
//!    original's mode, then renamed);
//! 4. the log is renamed to `<log>.<YYYYMMDD-HHMMSS>` (UTC) and the runtime is asked to reopen
//!    it (CRI `ReopenContainerLog`); if that fails the rename is undone.
//!
//! A log file that is missing (a crash between the rename and the reopen) is reopened first.
//! Readers of the current file (`kubectl logs -f`) follow the rename and reopen the new file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use flate2::write::GzEncoder;
use flate2::Compression;
use thiserror::Error;

use crate::config::kubelet_config::KubeletConfiguration;
use crate::cri::{api, CriError, RuntimeService};

/// Suffix of a compressed rotated log.
const COMPRESS_SUFFIX: &str = ".gz";
/// Suffix of a file being written (compression in progress).
const TMP_SUFFIX: &str = ".tmp";

/// What went wrong with one container's log.
#[derive(Debug, Error)]
pub enum LogError {
    /// A runtime call failed.
    #[error(transparent)]
    Runtime(#[from] CriError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The runtime names no log file for the container.
    #[error("container {0} has no log path")]
    NoLogPath(String),
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// The rotation settings (`containerLog*` of the KubeletConfiguration, upstream defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPolicy {
    /// `containerLogMaxSize` in bytes: a log this large is rotated.
    pub max_size: u64,
    /// `containerLogMaxFiles`: the current log and its rotated files, at most (at least 2).
    pub max_files: usize,
    /// `containerLogMaxWorkers`: containers handled at once.
    pub workers: usize,
    /// `containerLogMonitorInterval`: how often the logs are looked at.
    pub interval: Duration,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_size: 10 * 1024 * 1024,
            max_files: 5,
            workers: 1,
            interval: Duration::from_secs(10),
        }
    }
}

impl LogPolicy {
    /// The policy of a validated configuration; a value left out (or zero for the interval)
    /// is upstream's default.
    pub fn from_config(raw: &KubeletConfiguration) -> LogPolicy {
        let defaults = LogPolicy::default();
        let max_size = raw
            .container_log_max_size
            .as_deref()
            .and_then(|s| crate::quantity::parse_value(s).ok())
            .and_then(|bytes| u64::try_from(bytes).ok())
            .unwrap_or(defaults.max_size);
        let count = |value: Option<i32>, default: usize| {
            value
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(default)
        };
        LogPolicy {
            max_size,
            max_files: count(raw.container_log_max_files, defaults.max_files),
            workers: count(raw.container_log_max_workers, defaults.workers),
            interval: raw
                .container_log_monitor_interval
                .and_then(|d| d.to_std())
                .filter(|d| !d.is_zero())
                .unwrap_or(defaults.interval),
        }
    }
}

/// Rotates the logs of the running containers of one runtime. See the module docs.
pub struct ContainerLogManager {
    runtime: Arc<dyn RuntimeService>,
    policy: LogPolicy,
    /// Each running container's log path (a container's never changes): set by whoever
    /// created the container, else asked of the runtime once per container.
    log_paths: LogPaths,
}

/// Log paths by container id, shared by the runtime manager (which sets them at creation)
/// and the log manager.
pub type LogPaths = Arc<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>>;

impl ContainerLogManager {
    /// A manager for `runtime`'s containers with `policy`.
    pub fn new(runtime: Arc<dyn RuntimeService>, policy: LogPolicy) -> Self {
        ContainerLogManager {
            runtime,
            policy,
            log_paths: LogPaths::default(),
        }
    }

    /// Shares `paths` with the creator of the containers.
    pub fn with_log_paths(mut self, paths: LogPaths) -> Self {
        self.log_paths = paths;
        self
    }

    /// Starts thread `container-log-manager`, which runs [`Self::rotate_logs`] every interval
    /// until `stop` fires or disconnects.
    pub fn start(self, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("container-log-manager".into())
            .spawn(move || loop {
                match stop.recv_timeout(self.policy.interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        self.rotate_logs();
                    }
                    _ => return,
                }
            })
    }

    /// One pass over the running containers; errors are logged per container and the pass
    /// goes on. Returns how many logs were rotated.
    pub fn rotate_logs(&self) -> usize {
        let mut filter = api::ContainerFilter::new();
        let mut running = api::ContainerStateValue::new();
        running.state = api::ContainerState::CONTAINER_RUNNING;
        filter.set_state(running);
        let ids: Vec<String> = match self.runtime.list_containers(Some(&filter)) {
            Ok(list) => list.into_iter().map(|c| c.id).collect(),
            Err(e) => {
                log::error!("container log rotation: listing running containers: {e}");
                return 0;
            }
        };
        if let Ok(mut paths) = self.log_paths.lock() {
            paths.retain(|id, _| ids.contains(id));
        }
        let workers = self.policy.workers.max(1).min(ids.len().max(1));
        if workers == 1 {
            return ids.iter().filter(|id| self.rotate_one(id)).count();
        }
        let (tx, rx) = crossbeam_channel::unbounded::<&str>();
        for id in &ids {
            let _ = tx.send(id.as_str());
        }
        drop(tx);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let rx = rx.clone();
                    scope.spawn(move || rx.iter().filter(|id| self.rotate_one(id)).count())
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).sum()
        })
    }

    fn rotate_one(&self, id: &str) -> bool {
        match self.rotate_if_needed(id, SystemTime::now()) {
            Ok(rotated) => rotated,
            Err(e) => {
                log::error!("container log rotation: container {id}: {e}");
                false
            }
        }
    }

    /// Rotates `id`'s log if it reached the size limit; returns whether it did.
    pub fn rotate_if_needed(&self, id: &str, now: SystemTime) -> Result<bool, LogError> {
        let known = self.log_paths.lock().ok().and_then(|p| p.get(id).cloned());
        let log = match known {
            Some(log) => log,
            None => {
                let status = self.runtime.container_status(id, false)?;
                let path = status.get_status().log_path.clone();
                if path.is_empty() {
                    return Err(LogError::NoLogPath(id.to_string()));
                }
                let log = PathBuf::from(path);
                if let Ok(mut paths) = self.log_paths.lock() {
                    paths.insert(id.to_string(), log.clone());
                }
                log
            }
        };
        let size = match fs::metadata(&log) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Lost between a rename and a reopen: the runtime makes the file again.
                log::info!(
                    "container log rotation: {} is missing; reopening it",
                    log.display()
                );
                self.runtime.reopen_container_log(id)?;
                fs::metadata(&log).map_err(file_error(&log))?.len()
            }
            Err(e) => return Err(file_error(&log)(e)),
        };
        if size < self.policy.max_size {
            return Ok(false);
        }
        let rotated = rotated_logs(&log)?;
        let rotated = cleanup_unused(rotated)?;
        let rotated = remove_excess(rotated, self.policy.max_files.saturating_sub(2))?;
        compress_all(&rotated)?;
        let target = rotated_name(&log, now);
        fs::rename(&log, &target).map_err(file_error(&log))?;
        if let Err(e) = self.runtime.reopen_container_log(id) {
            if let Err(undo) = fs::rename(&target, &log) {
                log::error!(
                    "container log rotation: renaming {} back to {}: {undo}",
                    target.display(),
                    log.display()
                );
            }
            return Err(e.into());
        }
        log::info!(
            "container log rotation: rotated {} ({size} bytes) to {}",
            log.display(),
            target.display()
        );
        Ok(true)
    }
}

/// `<log>.<YYYYMMDD-HHMMSS>` for `now` (UTC), upstream's rotated file name.
pub fn rotated_name(log: &Path, now: SystemTime) -> PathBuf {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::clock::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let stamp = format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    let mut name = log.as_os_str().to_os_string();
    name.push(format!(".{stamp}"));
    PathBuf::from(name)
}

/// Removes `log` and its rotated files (upstream's `Clean`, used when a container is
/// removed); a file already gone is no error.
pub fn remove_with_rotated(log: &Path) -> Result<(), LogError> {
    for rotated in rotated_logs(log)? {
        remove(&rotated)?;
    }
    remove(log)
}

/// The rotated files of `log` (`<log>.*`), oldest first (their names sort by time).
fn rotated_logs(log: &Path) -> Result<Vec<PathBuf>, LogError> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let Some(base) = log.file_name().map(|n| format!("{}.", n.to_string_lossy())) else {
        return Ok(Vec::new());
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(file_error(dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&base))
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(file_error(path)(e)),
        _ => Ok(()),
    }
}

fn has_suffix(path: &Path, suffix: &str) -> bool {
    path.to_string_lossy().ends_with(suffix)
}

/// Removes what an interrupted pass left: `*.tmp` files, and uncompressed files whose
/// compressed copy was finished. Returns the files that remain.
fn cleanup_unused(logs: Vec<PathBuf>) -> Result<Vec<PathBuf>, LogError> {
    let mut kept = Vec::with_capacity(logs.len());
    for log in &logs {
        let compressed = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", log.display()));
        if has_suffix(log, TMP_SUFFIX)
            || (!has_suffix(log, COMPRESS_SUFFIX) && logs.contains(&compressed))
        {
            remove(log)?;
        } else {
            kept.push(log.clone());
        }
    }
    Ok(kept)
}

/// Removes the oldest rotated files so that at most `keep` remain.
fn remove_excess(mut logs: Vec<PathBuf>, keep: usize) -> Result<Vec<PathBuf>, LogError> {
    let excess = logs.len().saturating_sub(keep);
    for log in logs.drain(..excess) {
        remove(&log)?;
    }
    Ok(logs)
}

/// Compresses every rotated file that is not yet compressed (the runtime writes only to the
/// current log after its reopen).
fn compress_all(logs: &[PathBuf]) -> Result<(), LogError> {
    for log in logs.iter().filter(|l| !has_suffix(l, COMPRESS_SUFFIX)) {
        compress(log)?;
    }
    Ok(())
}

/// `log` → `log.gz` through `log.tmp`; the original is removed once the copy is complete.
fn compress(log: &Path) -> Result<(), LogError> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", log.display()));
    let done = PathBuf::from(format!("{}{COMPRESS_SUFFIX}", log.display()));
    let input = File::open(log).map_err(file_error(log))?;
    // The compressed copy is as private as the runtime made the log (containerd: 0640).
    let mode = input
        .metadata()
        .map_err(file_error(log))?
        .permissions()
        .mode();
    let output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o777)
        .open(&tmp)
        .map_err(file_error(&tmp))?;
    output
        .set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(file_error(&tmp))?;
    let mut encoder = GzEncoder::new(BufWriter::new(output), Compression::default());
    io::copy(&mut BufReader::new(input), &mut encoder).map_err(file_error(log))?;
    let writer = encoder.finish().map_err(file_error(&tmp))?;
    writer
        .into_inner()
        .map_err(|e| file_error(&tmp)(e.into_error()))?
        .sync_all()
        .map_err(file_error(&tmp))?;
    fs::rename(&tmp, &done).map_err(file_error(&tmp))?;
    remove(log)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::cri::{Call, FakeRuntime};

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "rkubelet-log-manager-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn at(secs: u64) -> SystemTime {
        // 2026-12-04 10:00:00 UTC plus `secs`.
        UNIX_EPOCH + Duration::from_secs(1_796_378_400 + secs)
    }

    const IMAGE: &str = "docker.io/library/busybox:local";

    /// Runs container `name` in a sandbox of its own, its log at `dir/<log>`.
    fn run_container(rt: &FakeRuntime, dir: &Path, name: &str, log: &str) -> String {
        let mut meta = api::PodSandboxMetadata::new();
        meta.name = name.to_string();
        meta.namespace = "default".to_string();
        meta.uid = format!("uid-{name}");
        let mut sandbox = api::PodSandboxConfig::new();
        sandbox.set_metadata(meta);
        sandbox.log_directory = dir.display().to_string();
        let sandbox_id = rt.run_pod_sandbox(&sandbox, "").unwrap();
        let mut meta = api::ContainerMetadata::new();
        meta.name = name.to_string();
        let mut image = api::ImageSpec::new();
        image.image = IMAGE.to_string();
        let mut config = api::ContainerConfig::new();
        config.set_metadata(meta);
        config.set_image(image);
        config.log_path = log.to_string();
        let id = rt.create_container(&sandbox_id, &config, &sandbox).unwrap();
        rt.start_container(&id).unwrap();
        id
    }

    /// A fake runtime with one running container whose log is `dir/0.log`.
    fn running(dir: &Path) -> (Arc<FakeRuntime>, String) {
        let rt = Arc::new(FakeRuntime::new());
        rt.preload_image(IMAGE);
        let id = run_container(&rt, dir, "app", "0.log");
        (rt, id)
    }

    fn policy(max_size: u64, max_files: usize) -> LogPolicy {
        LogPolicy {
            max_size,
            max_files,
            ..LogPolicy::default()
        }
    }

    #[test]
    fn the_policy_comes_from_the_configuration_with_upstreams_defaults() {
        let mut raw = KubeletConfiguration::default();
        assert_eq!(LogPolicy::from_config(&raw), LogPolicy::default());
        raw.container_log_max_size = Some("1Mi".into());
        raw.container_log_max_files = Some(2);
        raw.container_log_max_workers = Some(3);
        raw.container_log_monitor_interval = Some(crate::util::duration::GoDuration::from_secs(4));
        assert_eq!(
            LogPolicy::from_config(&raw),
            LogPolicy {
                max_size: 1 << 20,
                max_files: 2,
                workers: 3,
                interval: Duration::from_secs(4),
            }
        );
    }

    #[test]
    fn rotated_names_are_upstreams_utc_stamp() {
        let name = rotated_name(Path::new("/var/log/pods/x/app/0.log"), at(3723));
        assert_eq!(name, Path::new("/var/log/pods/x/app/0.log.20261204-110203"));
    }

    #[test]
    fn a_log_below_the_limit_is_left_alone() {
        let dir = Dir::new("below");
        let (rt, id) = running(&dir.0);
        fs::write(dir.0.join("0.log"), vec![b'x'; 99]).unwrap();
        let m = ContainerLogManager::new(rt.clone(), policy(100, 2));
        assert!(!m.rotate_if_needed(&id, at(0)).unwrap());
        assert_eq!(dir.names(), ["0.log"]);
        assert!(!rt.calls().contains(&Call::ReopenContainerLog(id)));
    }

    #[test]
    fn a_path_set_at_creation_is_used_without_asking_the_runtime() {
        let dir = Dir::new("seeded");
        let (rt, id) = running(&dir.0);
        fs::write(dir.0.join("0.log"), vec![b'x'; 200]).unwrap();
        let paths = LogPaths::default();
        paths
            .lock()
            .unwrap()
            .insert(id.clone(), dir.0.join("0.log"));
        let m = ContainerLogManager::new(rt.clone(), policy(100, 2)).with_log_paths(paths);
        assert_eq!(m.rotate_logs(), 1);
        assert!(!rt.calls().contains(&Call::ContainerStatus(id.clone())));
        // Without it, the runtime is asked once, then the answer is kept.
        let unseeded = ContainerLogManager::new(rt.clone(), policy(1 << 20, 2));
        unseeded.rotate_logs();
        unseeded.rotate_logs();
        let asked = rt
            .calls()
            .iter()
            .filter(|c| **c == Call::ContainerStatus(id.clone()))
            .count();
        assert_eq!(asked, 1);
    }

    #[test]
    fn rotation_keeps_max_files_compresses_older_ones_and_reopens() {
        let dir = Dir::new("rotate");
        let (rt, id) = running(&dir.0);
        let m = ContainerLogManager::new(rt.clone(), policy(10, 4));
        let log = dir.0.join("0.log");
        for i in 0..5u64 {
            // The runtime's reopen makes a new file (containerd: mode 0640); the fake writes
            // none, so do it here.
            fs::write(&log, format!("line {i} of the log\n")).unwrap();
            fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
            assert!(m.rotate_if_needed(&id, at(i)).unwrap(), "pass {i}");
        }
        // Max 4 files: the current log (which the runtime would reopen) and 3 rotated ones:
        // before each rotation at most 2 are kept, and they are compressed.
        assert_eq!(
            dir.names(),
            [
                "0.log.20261204-100002.gz",
                "0.log.20261204-100003.gz",
                "0.log.20261204-100004"
            ]
        );
        let gz = dir.0.join("0.log.20261204-100003.gz");
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "line 3 of the log\n");
        let mode = fs::metadata(&gz).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the compressed copy keeps the log's mode");
        let reopens = rt
            .calls()
            .iter()
            .filter(|c| **c == Call::ReopenContainerLog(id.clone()))
            .count();
        assert_eq!(reopens, 5);
    }

    #[test]
    fn a_failed_reopen_undoes_the_rename() {
        let dir = Dir::new("undo");
        let (rt, id) = running(&dir.0);
        fs::write(dir.0.join("0.log"), "0123456789\n").unwrap();
        rt.inject_error(
            "ReopenContainerLog",
            CriError::Rpc {
                method: "ReopenContainerLog",
                code: crate::cri::RpcCode::Unknown,
                message: "boom".into(),
            },
        );
        let m = ContainerLogManager::new(rt, policy(10, 2));
        let err = m.rotate_if_needed(&id, at(0)).unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert_eq!(dir.names(), ["0.log"]);
    }

    #[test]
    fn leftovers_of_an_interrupted_pass_are_cleaned_and_a_lost_log_reopened() {
        let dir = Dir::new("leftovers");
        let (rt, id) = running(&dir.0);
        for name in [
            "0.log.20261204-090000",
            "0.log.20261204-090000.gz",
            "0.log.20261204-090100.tmp",
            "0.log.20261204-090200",
        ] {
            fs::write(dir.0.join(name), "old\n").unwrap();
        }
        // No 0.log: a crash came between the rename and the reopen. The fake's reopen makes
        // no file, so the manager reports the file still missing, after asking for it.
        let m = ContainerLogManager::new(rt.clone(), policy(1, 5));
        let err = m.rotate_if_needed(&id, at(0)).unwrap_err();
        assert!(matches!(err, LogError::File { .. }), "{err}");
        assert!(rt.calls().contains(&Call::ReopenContainerLog(id.clone())));
        fs::write(dir.0.join("0.log"), "new\n").unwrap();
        assert!(m.rotate_if_needed(&id, at(0)).unwrap());
        assert_eq!(
            dir.names(),
            [
                "0.log.20261204-090000.gz",
                "0.log.20261204-090200.gz",
                "0.log.20261204-100000"
            ]
        );
    }

    #[test]
    fn a_pass_rotates_every_running_container_over_the_limit_with_several_workers() {
        let dir = Dir::new("pass");
        let rt = Arc::new(FakeRuntime::new());
        rt.preload_image(IMAGE);
        let mut logs = Vec::new();
        for name in ["a", "b", "c"] {
            let log = dir.0.join(format!("{name}.log"));
            run_container(&rt, &dir.0, name, &format!("{name}.log"));
            fs::write(&log, vec![b'x'; 50]).unwrap();
            logs.push(log);
        }
        fs::write(&logs[2], b"short").unwrap();
        let m = ContainerLogManager::new(
            rt,
            LogPolicy {
                max_size: 10,
                max_files: 2,
                workers: 2,
                interval: Duration::from_secs(10),
            },
        );
        assert_eq!(m.rotate_logs(), 2);
        let names = dir.names();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("a.log.")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("b.log.")), "{names:?}");
        assert!(names.contains(&"c.log".to_string()), "{names:?}");
    }
}
