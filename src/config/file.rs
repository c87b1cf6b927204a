//! The static pod source for `--pod-manifest-path` (upstream `config/file.go` and
//! `file_linux.go`), run on thread `source-file`.
//!
//! The path is a directory of manifests or a single manifest file. In a directory every regular
//! file whose name does not start with `.` is read, in name order, whatever its extension (as
//! upstream); subdirectories are not entered. A bad file is logged with its path and reason
//! and skipped; the others are still sent. Each full read yields one `Set` of all good pods.
//!
//! Timing: a full read every `file_check_frequency`, and every second a cheap listing check
//! (names, mtimes, sizes) that triggers a full read when something changed, so edits and
//! removals are noticed within about a second without inotify. A `Set` is sent only when it
//! differs from the last one sent, except the first, which is always sent: the kubelet waits
//! for every source's first `Set` before cleaning up pods.
//!
//! As upstream: a missing path sends an empty `Set` (logged once per change of state); a
//! single-file path that fails to read or parse, or a path that cannot be inspected, sends
//! nothing and keeps the last state.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{select, tick, Receiver, Sender};
use k8s_openapi::api::core::v1::Pod;
use log::{debug, error, info};

use crate::config::manifest::{ManifestError, ManifestSource, MAX_MANIFEST_BYTES};
use crate::config::mux::send_or_stop;
use crate::config::static_pod::decode_static_pods;
use crate::config::update::{PodOperation, PodUpdate, FILE_SOURCE};

/// How often the cheap listing check runs.
pub const CHANGE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A problem reading the manifest path or one manifest file.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// `stat` failed for a reason other than "does not exist".
    #[error("cannot inspect manifest path {path:?}: {source}")]
    Stat {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest directory could not be listed.
    #[error("cannot list manifest directory {path:?}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A manifest file could not be read.
    #[error("cannot read manifest file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Neither a directory nor a regular file (a socket, a device, ...).
    #[error("manifest path {path:?} is not a directory or regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// A directory inside the manifest directory.
    #[error("not recursing into manifest directory {path:?}")]
    Directory {
        /// The subdirectory.
        path: PathBuf,
    },
    /// The file was read but holds no usable pod.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// The result of one full read of the manifest path.
#[derive(Debug)]
pub enum PathRead {
    /// The path does not exist: the source has no pods.
    Missing,
    /// The good pods, in file-name order, and one error per bad entry.
    Pods {
        /// Static pods, defaulted and validated.
        pods: Vec<Pod>,
        /// What was wrong with the entries that were skipped.
        errors: Vec<FileSourceError>,
    },
}

/// Cheap fingerprint of the manifest path: entries with size and mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listing {
    Missing,
    Unreadable,
    Entries(Vec<(PathBuf, Option<(SystemTime, u64)>)>),
}

/// The `--pod-manifest-path` source. Owns its state; moved into its thread by `start`.
pub struct FileSource {
    path: PathBuf,
    node_name: String,
    check_frequency: Duration,
    /// The pods of the last `Set` sent; `None` until the first is sent.
    last_sent: Option<Vec<Pod>>,
    /// The listing taken before the last full read; a different one triggers a read.
    last_listing: Option<Listing>,
    /// The last problems logged, so a bad file is logged at error once, not every read.
    last_problems: Vec<String>,
}

impl FileSource {
    /// A source reading `path` for node `node_name`, fully re-read every `check_frequency`
    /// (upstream `fileCheckFrequency`, 20 s by default; at least one second).
    pub fn new(path: impl Into<PathBuf>, node_name: &str, check_frequency: Duration) -> Self {
        FileSource {
            path: path.into(),
            node_name: node_name.to_string(),
            check_frequency: check_frequency.max(CHANGE_CHECK_INTERVAL),
            last_sent: None,
            last_listing: None,
            last_problems: Vec::new(),
        }
    }

    /// Spawns thread `source-file` running [`run`](FileSource::run).
    pub fn start(
        self,
        updates: Sender<PodUpdate>,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("source-file".into())
            .spawn(move || self.run(updates, stop))
    }

    /// Reads now, then on every tick, sending `Set`s to `updates` until `stop` fires or the mux
    /// is gone.
    pub fn run(mut self, updates: Sender<PodUpdate>, stop: Receiver<()>) {
        info!("watching manifest path path={:?}", self.path);
        let check = tick(CHANGE_CHECK_INTERVAL);
        let full = tick(self.check_frequency);
        let mut pending = self.sync();
        loop {
            if let Some(update) = pending.take() {
                if !send_or_stop(&updates, update, &stop) {
                    break;
                }
            }
            select! {
                recv(stop) -> _ => break,
                recv(check) -> _ => if self.changed() {
                    debug!("manifest path changed path={:?}", self.path);
                    pending = self.sync();
                },
                recv(full) -> _ => pending = self.sync(),
            }
        }
        info!("stopped watching manifest path path={:?}", self.path);
    }

    /// True when the listing differs from the one taken at the last full read.
    pub fn changed(&self) -> bool {
        self.last_listing.as_ref() != Some(&listing(&self.path))
    }

    /// One full read: logs what changed in the problems, and returns the `Set` to send, if it
    /// differs from the last one sent (always for the first).
    pub fn sync(&mut self) -> Option<PodUpdate> {
        self.last_listing = Some(listing(&self.path));
        let (pods, problems) = match self.read_once() {
            Ok(PathRead::Missing) => (
                Some(Vec::new()),
                vec![format!(
                    "manifest path {:?} does not exist, ignoring",
                    self.path
                )],
            ),
            Ok(PathRead::Pods { pods, errors }) => {
                (Some(pods), errors.iter().map(ToString::to_string).collect())
            }
            Err(e) => (None, vec![e.to_string()]),
        };
        if problems != self.last_problems {
            for problem in problems.iter().filter(|p| !self.last_problems.contains(p)) {
                error!("unable to read manifest: {problem}");
            }
            if problems.is_empty() {
                info!("manifest path read without errors path={:?}", self.path);
            }
            self.last_problems = problems;
        }
        let pods = pods?;
        if self.last_sent.as_ref() == Some(&pods) {
            return None;
        }
        debug!(
            "manifest pods changed path={:?} pods={}",
            self.path,
            pods.len()
        );
        self.last_sent = Some(pods.clone());
        Some(PodUpdate {
            pods: pods.into_iter().map(Arc::new).collect(),
            op: PodOperation::Set,
            source: FILE_SOURCE.to_string(),
        })
    }

    /// Reads the manifest path once, without logging or sending. `Err` means nothing usable
    /// was read and the last state should stand.
    pub fn read_once(&self) -> Result<PathRead, FileSourceError> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PathRead::Missing),
            Err(source) => {
                return Err(FileSourceError::Stat {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        if meta.is_file() {
            let pod = self.read_file(&self.path)?;
            return Ok(PathRead::Pods {
                pods: vec![pod],
                errors: Vec::new(),
            });
        }
        if !meta.is_dir() {
            return Err(FileSourceError::NotRegular {
                path: self.path.clone(),
            });
        }
        let mut pods = Vec::new();
        let mut errors = Vec::new();
        for path in manifest_entries(&self.path)? {
            match fs::metadata(&path) {
                // Removed between listing and reading: not an error (as upstream).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => errors.push(FileSourceError::Stat { path, source }),
                Ok(meta) if meta.is_dir() => errors.push(FileSourceError::Directory { path }),
                Ok(meta) if !meta.is_file() => errors.push(FileSourceError::NotRegular { path }),
                Ok(_) => match self.read_file(&path) {
                    Ok(pod) => pods.push(pod),
                    Err(FileSourceError::Read { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(e),
                },
            }
        }
        Ok(PathRead::Pods { pods, errors })
    }

    /// Reads and decodes one manifest file into its static pod.
    fn read_file(&self, path: &Path) -> Result<Pod, FileSourceError> {
        let read_err = |source| FileSourceError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut data = Vec::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut data))
            .map_err(read_err)?;
        let source = ManifestSource::File(path.to_path_buf());
        let mut pods = decode_static_pods(&data, &self.node_name, &source)?;
        // A file source yields exactly one pod (lists are rejected by decode_static_pods).
        pods.pop()
            .ok_or(FileSourceError::Manifest(ManifestError::Empty {
                origin: source,
            }))
    }
}

/// The non-hidden entries of `dir`, sorted by name.
fn manifest_entries(dir: &Path) -> Result<Vec<PathBuf>, FileSourceError> {
    let read_dir_err = |source| FileSourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        if !entry.file_name().as_encoded_bytes().starts_with(b".") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// The cheap fingerprint compared every second.
fn listing(path: &Path) -> Listing {
    let stamp = |p: &Path| {
        fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Listing::Missing,
        Err(_) => Listing::Unreadable,
        Ok(meta) if meta.is_dir() => match manifest_entries(path) {
            Ok(entries) => Listing::Entries(
                entries
                    .into_iter()
                    .map(|p| {
                        let s = stamp(&p);
                        (p, s)
                    })
                    .collect(),
            ),
            Err(_) => Listing::Unreadable,
        },
        Ok(_) => Listing::Entries(vec![(path.to_path_buf(), stamp(path))]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::update::CONFIG_SOURCE_ANNOTATION;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("rkubelet-file-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, body: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, body).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn manifest(name: &str, image: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n\
             spec: {{containers: [{{name: app, image: \"{image}\"}}]}}\n"
        )
    }

    fn names(update: &PodUpdate) -> Vec<String> {
        update
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    fn source(dir: &TempDir) -> FileSource {
        FileSource::new(&dir.0, "node-1", Duration::from_secs(20))
    }

    #[test]
    fn good_and_bad_files_in_one_directory() {
        let dir = TempDir::new("mixed");
        dir.write("a.yaml", &manifest("a", "nginx:1"));
        let bad = dir.write("b.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n");
        dir.write("c.json", r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c"},"spec":{"containers":[{"name":"app","image":"i"}]}}"#);
        dir.write("d.manifest", &manifest("d", "i"));
        let mut src = source(&dir);

        let PathRead::Pods { errors, .. } = src.read_once().unwrap() else {
            panic!("directory exists");
        };
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(text.contains(&bad.display().to_string()), "{text}");
        assert!(text.contains("line 4"), "{text}");

        let update = src.sync().unwrap();
        assert_eq!(update.op, PodOperation::Set);
        assert_eq!(update.source, FILE_SOURCE);
        // Every non-hidden file counts, whatever its extension (as upstream).
        assert_eq!(names(&update), ["a-node-1", "c-node-1", "d-node-1"]);
        let annotations = update.pods[0].metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
    }

    #[test]
    fn hidden_files_and_subdirectories_are_skipped() {
        let dir = TempDir::new("hidden");
        dir.write(".a.yaml.swp", &manifest("hidden", "i"));
        dir.write("web.yaml", &manifest("web", "i"));
        fs::create_dir(dir.0.join("sub")).unwrap();
        let PathRead::Pods { pods, errors } = source(&dir).read_once().unwrap() else {
            panic!("directory exists");
        };
        assert_eq!(pods.len(), 1);
        assert!(
            matches!(&errors[..], [FileSourceError::Directory { .. }]),
            "{errors:?}"
        );
    }

    #[test]
    fn sends_only_changes_and_notices_edits_and_removals() {
        let dir = TempDir::new("changes");
        let a = dir.write("a.yaml", &manifest("a", "i:1"));
        dir.write("b.yaml", &manifest("b", "i:1"));
        let mut src = source(&dir);
        assert!(src.changed(), "nothing read yet");
        let first = src.sync().unwrap();
        assert_eq!(names(&first), ["a-node-1", "b-node-1"]);
        assert!(!src.changed());
        assert!(src.sync().is_none(), "same pods: no Set");

        dir.write("b.yaml", &manifest("b", "i:22"));
        assert!(src.changed(), "size changed");
        let edited = src.sync().unwrap();
        let uid = |u: &PodUpdate, i: usize| u.pods[i].metadata.uid.clone().unwrap();
        assert_eq!(uid(&first, 0), uid(&edited, 0));
        assert_ne!(
            uid(&first, 1),
            uid(&edited, 1),
            "content is part of the UID"
        );

        fs::remove_file(a).unwrap();
        assert!(src.changed());
        assert_eq!(names(&src.sync().unwrap()), ["b-node-1"]);
    }

    #[test]
    fn missing_path_sends_one_empty_set() {
        let dir = TempDir::new("missing");
        let mut src = FileSource::new(dir.0.join("nope"), "n", Duration::from_secs(20));
        assert!(matches!(src.read_once(), Ok(PathRead::Missing)));
        let update = src.sync().unwrap();
        assert!(update.pods.is_empty());
        assert!(src.sync().is_none());
        fs::create_dir(dir.0.join("nope")).unwrap();
        fs::write(dir.0.join("nope/x.yaml"), manifest("x", "i")).unwrap();
        assert!(src.changed());
        assert_eq!(names(&src.sync().unwrap()), ["x-n"]);
    }

    #[test]
    fn single_file_path_and_a_bad_single_file_keeps_state() {
        let dir = TempDir::new("single");
        let path = dir.write("static.yaml", &manifest("one", "i"));
        let mut src = FileSource::new(&path, "n", Duration::from_secs(20));
        assert_eq!(names(&src.sync().unwrap()), ["one-n"]);
        fs::write(&path, "kind: Pod\n").unwrap();
        assert!(matches!(src.read_once(), Err(FileSourceError::Manifest(_))));
        assert!(src.sync().is_none(), "nothing sent, last state stands");
    }

    #[test]
    fn empty_file_and_pod_list_are_errors() {
        let dir = TempDir::new("empty");
        dir.write("empty.yaml", "");
        dir.write("list.yaml", "apiVersion: v1\nkind: PodList\nitems: []\n");
        let PathRead::Pods { pods, errors } = source(&dir).read_once().unwrap() else {
            panic!("directory exists");
        };
        assert!(pods.is_empty());
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            texts[0].contains("empty.yaml: manifest is empty"),
            "{texts:?}"
        );
        assert!(
            texts[1].contains("list.yaml: kind \"PodList\""),
            "{texts:?}"
        );
    }

    #[test]
    fn thread_sends_first_set_then_changes_then_stops() {
        let dir = TempDir::new("thread");
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let handle = source(&dir).start(tx, stop).unwrap();
        let deadline = Duration::from_secs(10);
        assert!(
            rx.recv_timeout(deadline).unwrap().pods.is_empty(),
            "first Set always sent"
        );
        dir.write("late.yaml", &manifest("late", "i"));
        let update = rx.recv_timeout(deadline).unwrap();
        assert_eq!(names(&update), ["late-node-1"]);
        drop(stop_tx);
        handle.join().unwrap();
    }
}
