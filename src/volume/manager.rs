//! The volume manager: the volumes a pod worker sets up on every sync of a pod, before its
//! sandbox and containers start, the CRI mounts of each container, and teardown when the
//! pod is gone, including pod directories a crash left behind. Runs on the pod worker that
//! syncs the pod (one pod is never on two workers); housekeeping calls
//! [`VolumeManager::cleanup_orphans`].
//!
//! Layout as upstream: `<root-dir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>` and
//! `<root-dir>/pods/<uid>/etc-hosts`.
//!
//! | type          | plugin dir     | backing            | refreshed on each sync |
//! |---------------|----------------|--------------------|------------------------|
//! | emptyDir      | `empty-dir`    | disk, or tmpfs     | no                     |
//! | hostPath      | (the host path)| host               | no                     |
//! | configMap     | `configmap`    | disk               | yes                    |
//! | secret        | `secret`       | tmpfs              | yes                    |
//! | downwardAPI   | `downward-api` | tmpfs              | yes                    |
//! | projected     | `projected`    | tmpfs              | yes                    |
//!
//! API-backed volumes are written by the [`AtomicWriter`](super::AtomicWriter), so a reader
//! sees either the old or the new set of files. Their objects come from [`ObjectCache`] and
//! [`TokenManager`]. A volume that cannot be set up is reported by name; the caller keeps the
//! pod waiting and tries again with back-off.
//!
//! - [`setup`]: setting up each volume of a pod by its type.
//! - [`mounts`]: the CRI mounts of one container.
//! - [`csi`]: CSI volumes: attach checks, stage and publish through the driver.
//! - [`csi_teardown`]: CSI unpublish and unstage, `volumesInUse`, driver statistics.

mod csi;
mod csi_teardown;
mod mounts;
mod setup;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::api::KubeClient;
use crate::clock::{Clock, RealClock};
use crate::cri::api;
use crate::types::{is_host_network, PodUid};

use super::error::VolumeError;
use super::etc_hosts::{host_network_hosts_file_content, hosts_file_content, write_hosts_file};
use super::mount::{mounts_under, unmount};
use super::projection::NodeResources;
use super::sources::{ObjectCache, TokenManager, DEFAULT_OBJECT_TTL};

/// Where one volume lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    /// Host directory or file.
    pub path: PathBuf,
    /// Whether the plugin forces read-only (configMap, secret, downwardAPI, projected).
    pub read_only: bool,
}

/// A volume that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
pub struct MountError {
    /// The volume's name in the pod.
    pub volume: String,
    /// Why.
    #[source]
    pub source: VolumeError,
}

/// A pod's volumes after set-up.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Set-up volumes by name.
    pub volumes: BTreeMap<String, VolumePath>,
    /// Volumes of types rkubelet does not support (name, type), to report.
    pub unsupported: Vec<(String, &'static str)>,
    /// Volumes that failed; containers must not start while any is listed.
    pub failed: Vec<MountError>,
    /// The managed hosts file, unless the pod uses the host network.
    pub etc_hosts: Option<PathBuf>,
}

/// How the volume manager is wired.
pub struct VolumeSettings {
    /// The API server (ConfigMaps, Secrets, tokens); none for a standalone kubelet.
    pub api: Option<Arc<dyn KubeClient>>,
    /// Time, for the object cache and token lifetimes.
    pub clock: Arc<dyn Clock>,
    /// Whether memory-backed volumes are real tmpfs mounts. Hollow nodes and in-process
    /// tests turn this off; their memory-backed volumes are plain directories.
    pub tmpfs: bool,
    /// What an unset container limit means for downward API `resourceFieldRef`s.
    pub node: NodeResources,
    /// The services as a watch keeps them (service environment variables); without it they
    /// are listed from the API server.
    pub services: Option<Arc<crate::api::services::ServiceInformer>>,
    /// The registered CSI drivers; without them CSI volumes are unsupported.
    pub csi: Option<Arc<crate::csi::CsiDrivers>>,
}

/// Sets up and tears down pod volumes under the kubelet root dir.
pub struct VolumeManager {
    root_dir: PathBuf,
    tmpfs: bool,
    node: NodeResources,
    objects: ObjectCache,
    tokens: TokenManager,
    /// Pods set up since start; a pod's first set-up reads its objects fresh.
    seen: Mutex<HashSet<PodUid>>,
    /// The node's hosts file, which hostNetwork pods see (`/etc/hosts`).
    host_etc_hosts: PathBuf,
    /// The node's name (PersistentVolume node affinity).
    node_name: String,
    /// Claim volumes set up, by pod and volume name: later syncs reuse them without asking
    /// the API server again (a pod's first set-up after a start always asks).
    claims: Mutex<HashMap<(PodUid, String), (VolumePath, ClaimVolume)>>,
    /// CSI drivers and their operations.
    csi: Option<csi::CsiState>,
    /// Since when each volume still in progress has been waited for, by pod and volume.
    waiting: Mutex<HashMap<(PodUid, String), std::time::Instant>>,
}

/// How long a pod's volumes are waited for before the pod gets an event about it (upstream's
/// `WaitForAttachAndMount` timeout).
pub const MOUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A volume of a pod that comes from a PersistentVolumeClaim, for stats and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimVolume {
    /// The pod's UID.
    pub uid: PodUid,
    /// The volume's name in the pod spec.
    pub volume: String,
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub claim: String,
    /// Where it is mounted for the pod, when the kubelet mounts it (`local` PVs) under the
    /// pod's directory; `None` for volumes used in place (`hostPath`), which upstream keeps
    /// no statistics for.
    pub mounted_at: Option<PathBuf>,
    /// The CSI volume behind it, whose driver reports its figures.
    pub csi: Option<CsiRef>,
    /// The driver's figures (`NodeGetVolumeStats`), filled in by
    /// [`VolumeManager::claim_volumes_with_usage`].
    pub usage: Option<VolumeUsage>,
}

/// A published CSI volume, for its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiRef {
    /// The driver's name.
    pub driver: String,
    /// The volume handle.
    pub handle: String,
    /// Where it is published for the pod.
    pub target: PathBuf,
    /// Where it is staged on the node.
    pub staging: PathBuf,
}

pub use csi::VolumeUsage;

impl VolumeManager {
    /// A manager rooted at `--root-dir` without an API server, mounting real tmpfs.
    pub fn new(root_dir: &Path) -> Self {
        Self::with_settings(
            root_dir,
            VolumeSettings {
                api: None,
                clock: Arc::new(RealClock),
                tmpfs: true,
                node: NodeResources::default(),
                services: None,
                csi: None,
            },
        )
    }

    /// A manager rooted at `--root-dir` with the given wiring.
    pub fn with_settings(root_dir: &Path, settings: VolumeSettings) -> Self {
        VolumeManager {
            root_dir: root_dir.to_path_buf(),
            tmpfs: settings.tmpfs,
            node: settings.node,
            objects: ObjectCache::new(
                settings.api.clone(),
                Arc::clone(&settings.clock),
                DEFAULT_OBJECT_TTL,
            )
            .with_service_informer(settings.services),
            tokens: TokenManager::new(settings.api, settings.clock),
            host_etc_hosts: PathBuf::from("/etc/hosts"),
            seen: Mutex::new(HashSet::new()),
            node_name: String::new(),
            claims: Mutex::new(HashMap::new()),
            csi: settings.csi.map(csi::CsiState::new),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// [`claim_volumes`](Self::claim_volumes) with the figures CSI drivers report for theirs
    /// (one `NodeGetVolumeStats` call each, for drivers that have it).
    pub fn claim_volumes_with_usage(&self) -> Vec<ClaimVolume> {
        let mut claims = self.claim_volumes();
        for claim in &mut claims {
            if let Some(r) = &claim.csi {
                claim.usage = self.csi_usage(r);
            }
        }
        claims
    }

    /// The claim volumes set up now, by pod.
    pub fn claim_volumes(&self) -> Vec<ClaimVolume> {
        let mut out: Vec<ClaimVolume> = self
            .claims
            .lock()
            .map(|c| c.values().map(|(_, info)| info.clone()).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| (&a.uid.0, &a.volume).cmp(&(&b.uid.0, &b.volume)));
        out
    }

    /// The node's name, which PersistentVolume node affinity is checked against.
    pub fn with_node_name(mut self, node_name: &str) -> Self {
        self.node_name = node_name.to_string();
        self
    }

    /// The ConfigMap and Secret cache (image pull secrets are read through it too).
    pub fn objects(&self) -> &ObjectCache {
        &self.objects
    }

    /// What an unset container limit means for downward API and env resource fields.
    pub fn node_resources(&self) -> &NodeResources {
        &self.node
    }

    /// Reads the node's hosts file for hostNetwork pods from `path` instead of `/etc/hosts`
    /// (tests).
    pub fn with_host_etc_hosts(mut self, path: &Path) -> Self {
        self.host_etc_hosts = path.to_path_buf();
        self
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &PodUid) -> PathBuf {
        self.root_dir.join("pods").join(&uid.0)
    }

    fn plugin_dir(&self, uid: &PodUid, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("volumes")
            .join(format!("kubernetes.io~{plugin}"))
            .join(name)
    }

    /// Writes the pod's managed `/etc/hosts` (upstream `ensureHostsFile`): for a pod on the
    /// pod network, localhost, its IPs with `hostname` (and `hostname.domain` when the pod
    /// has a subdomain) and its host aliases; for a hostNetwork pod, the node's own
    /// `/etc/hosts` with the aliases added. A pod on the pod network without an IP yet gets
    /// none, as upstream.
    pub fn etc_hosts(
        &self,
        pod: &Pod,
        uid: &PodUid,
        pod_ips: &[String],
        hostname: &str,
        domain: Option<&str>,
    ) -> Result<Option<PathBuf>, VolumeError> {
        let spec = pod.spec.as_ref();
        let aliases = spec
            .and_then(|s| s.host_aliases.clone())
            .unwrap_or_default();
        let content = if is_host_network(pod) {
            let node_hosts = std::fs::read_to_string(&self.host_etc_hosts)
                .map_err(|e| VolumeError::io("read file", &self.host_etc_hosts, e))?;
            host_network_hosts_file_content(&node_hosts, &aliases)
        } else if pod_ips.is_empty() {
            return Ok(None);
        } else {
            hosts_file_content(pod_ips, hostname, domain, &aliases)
        };
        let path = self.pod_dir(uid).join("etc-hosts");
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() != Some(content.as_str()) {
            create_dir(&self.pod_dir(uid))?;
            write_hosts_file(&path, &content)
                .map_err(|e| VolumeError::io("write file", &path, e))?;
        }
        Ok(Some(path))
    }

    /// The CRI mounts of one container: its `volumeMounts` (with `subPath`, `subPathExpr`,
    /// `readOnly` and `mountPropagation`) and the managed `/etc/hosts` unless the container
    /// mounts its own there.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &PodVolumes,
    ) -> Result<Vec<api::Mount>, VolumeError> {
        mounts::container_mounts(pod, container, volumes)
    }

    /// How many entries each per-pod table holds (all are emptied by [`Self::teardown_pod`]).
    pub fn per_pod_entries(&self) -> Vec<(&'static str, usize)> {
        fn count<T>(m: &Mutex<T>, len: impl Fn(&T) -> usize) -> usize {
            m.lock().map_or(0, |m| len(&m))
        }
        vec![
            ("volume pods set up", count(&self.seen, HashSet::len)),
            ("claim volumes", count(&self.claims, HashMap::len)),
            ("volumes waited for", count(&self.waiting, HashMap::len)),
            ("service account tokens", self.tokens.len()),
        ]
    }

    /// Unmounts everything under the pod's directory, removes it and forgets the pod's
    /// tokens.
    pub fn teardown_pod(&self, uid: &PodUid) -> Result<(), VolumeError> {
        // CSI volumes go through their driver (unpublish, then unstage) before anything
        // else under the pod's directory is unmounted.
        self.teardown_csi(uid)?;
        let dir = self.pod_dir(uid);
        for m in mounts_under(&dir) {
            unmount(&m)?;
        }
        self.tokens.forget_pod(&uid.0);
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(uid);
        }
        if let Ok(mut claims) = self.claims.lock() {
            claims.retain(|(pod, _), _| pod != uid);
        }
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.retain(|(pod, _), _| pod != uid);
        }
        // A persistent volume's data is behind a mount here: nothing is removed while
        // anything is still mounted below.
        let left = mounts_under(&dir);
        if let Some(first) = left.first() {
            return Err(VolumeError::Unmount {
                target: first.clone(),
                source: std::io::Error::other("still mounted after unmounting"),
            });
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io("remove directory", &dir, e)),
        }
    }

    /// Tears down pod directories of pods not in `keep` (left by pods removed while the
    /// kubelet was down). Returns the UIDs cleaned up.
    pub fn cleanup_orphans(&self, keep: &HashSet<PodUid>) -> Vec<PodUid> {
        let Ok(entries) = std::fs::read_dir(self.root_dir.join("pods")) else {
            return Vec::new();
        };
        let mut cleaned = Vec::new();
        for e in entries.flatten() {
            let uid = PodUid(e.file_name().to_string_lossy().into_owned());
            if keep.contains(&uid) {
                continue;
            }
            match self.teardown_pod(&uid) {
                Ok(()) => cleaned.push(uid),
                Err(err @ VolumeError::InProgress { .. }) => {
                    log::debug!("uid={uid} cleaning up orphaned pod directory: {err}")
                }
                Err(err) => log::warn!("uid={uid} cleaning up orphaned pod directory: {err}"),
            }
        }
        cleaned
    }
}

fn create_dir(dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::io("create directory", dir, e))
}

/// The pod the manager's tests set up volumes for.
#[cfg(test)]
mod fixtures {
    use k8s_openapi::api::core::v1::{Pod, PodSpec, Volume};

    pub(super) fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::pod;
    use super::*;
    use crate::volume::test_support::TestDir;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, HostPathVolumeSource, Volume, VolumeMount,
    };

    fn mount(name: &str, path: &str, sub: Option<&str>, ro: bool) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub.map(str::to_string),
            read_only: Some(ro),
            ..Default::default()
        }
    }

    #[test]
    fn empty_dir_host_path_and_etc_hosts() {
        let tmp = TestDir::new("vm");
        let host = tmp.path().join("host-data");
        let vm = VolumeManager::new(&tmp.path().join("root"));
        let uid = PodUid::from("u1");
        let p = pod(vec![
            Volume {
                name: "cache".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "data".into(),
                host_path: Some(HostPathVolumeSource {
                    path: host.to_string_lossy().into(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "claim".into(),
                nfs: Some(k8s_openapi::api::core::v1::NFSVolumeSource {
                    server: "nfs.example".into(),
                    path: "/exports".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let mut vols = vm.setup_pod(&p, &uid);
        assert!(vols.failed.is_empty(), "{:?}", vols.failed);
        vols.etc_hosts = vm
            .etc_hosts(&p, &uid, &["10.0.0.7".to_string()], "web", None)
            .unwrap();
        let cache = tmp
            .path()
            .join("root/pods/u1/volumes/kubernetes.io~empty-dir/cache");
        assert!(cache.is_dir());
        assert!(host.is_dir());
        assert_eq!(vols.unsupported, vec![("claim".to_string(), "nfs")]);
        let hosts = std::fs::read_to_string(tmp.path().join("root/pods/u1/etc-hosts")).unwrap();
        assert!(hosts.contains("10.0.0.7\tweb"), "{hosts}");
        // Idempotent.
        assert_eq!(vm.setup_pod(&p, &uid).volumes, vols.volumes);

        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                mount("cache", "/cache", None, false),
                mount("data", "/data", Some("sub"), true),
                mount("claim", "/claim", None, true),
            ]),
            ..Default::default()
        };
        let mounts = vm.container_mounts(&p, &c, &vols).unwrap();
        let got: Vec<(&str, String, bool)> = mounts
            .iter()
            .map(|m| {
                (
                    m.get_container_path(),
                    m.get_host_path().to_string(),
                    m.get_readonly(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/cache", cache.to_string_lossy().into_owned(), false),
                (
                    "/data",
                    host.join("sub").to_string_lossy().into_owned(),
                    true
                ),
                (
                    "/etc/hosts",
                    tmp.path()
                        .join("root/pods/u1/etc-hosts")
                        .to_string_lossy()
                        .into_owned(),
                    false
                ),
            ]
        );
        assert!(host.join("sub").is_dir());

        let bad = Container {
            name: "x".into(),
            volume_mounts: Some(vec![mount("cache", "/c", Some("../escape"), false)]),
            ..Default::default()
        };
        assert!(vm.container_mounts(&p, &bad, &vols).is_err());

        // Orphan cleanup keeps known pods and removes the rest.
        vm.etc_hosts(
            &pod(vec![]),
            &PodUid::from("u2"),
            &["10.0.0.8".into()],
            "web",
            None,
        )
        .unwrap();
        let keep: HashSet<PodUid> = [PodUid::from("u2")].into();
        assert_eq!(vm.cleanup_orphans(&keep), vec![uid]);
        assert!(!tmp.path().join("root/pods/u1").exists());
        assert!(tmp.path().join("root/pods/u2").exists());
        assert!(host.exists(), "hostPath data is never removed");
    }

    #[test]
    fn etc_hosts_follows_upstreams_rules() {
        let tmp = TestDir::new("vm-hosts");
        let node_hosts = tmp.path().join("node-hosts");
        std::fs::write(&node_hosts, "127.0.0.1\tlocalhost\n10.1.2.3\tnode1\n").unwrap();
        let vm = VolumeManager::with_settings(
            &tmp.path().join("root"),
            VolumeSettings {
                api: None,
                clock: Arc::new(RealClock),
                tmpfs: false,
                node: NodeResources::default(),
                services: None,
                csi: None,
            },
        )
        .with_host_etc_hosts(&node_hosts);
        let mut p = pod(vec![]);
        let uid = PodUid::from("u1");
        // On the pod network without an IP yet: no managed file.
        assert_eq!(vm.etc_hosts(&p, &uid, &[], "web", None).unwrap(), None);
        // With a subdomain: the FQDN first.
        let path = vm
            .etc_hosts(
                &p,
                &uid,
                &["10.0.0.7".into()],
                "web",
                Some("sub.ns.svc.cluster.local"),
            )
            .unwrap()
            .unwrap();
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(
            content.starts_with("# Kubernetes-managed hosts file.\n"),
            "{content}"
        );
        assert!(
            content.ends_with("10.0.0.7\tweb.sub.ns.svc.cluster.local\tweb\n"),
            "{content}"
        );
        // hostNetwork: the node's file under its own header, with the aliases.
        if let Some(spec) = p.spec.as_mut() {
            spec.host_network = Some(true);
            spec.host_aliases = Some(vec![k8s_openapi::api::core::v1::HostAlias {
                ip: "10.9.9.9".into(),
                hostnames: Some(vec!["db".into()]),
            }]);
        }
        let path = vm.etc_hosts(&p, &uid, &[], "node1", None).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1\tlocalhost\n10.1.2.3\tnode1\n\n# Entries added by HostAliases.\n10.9.9.9\tdb\n"
        );
    }
}
