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
//! API-backed volumes are written by the [`AtomicWriter`], so a reader sees either the old
//! or the new set of files. Their objects come from [`ObjectCache`] and [`TokenManager`].
//! A volume that cannot be set up is reported by name; the caller keeps the pod waiting and
//! tries again with back-off.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod, ProjectedVolumeSource, Volume};

use crate::api::KubeClient;
use crate::clock::{Clock, RealClock};
use crate::cri::api;
use crate::types::{is_host_network, PodUid};

use super::atomic_writer::AtomicWriter;
use super::error::VolumeError;
use super::etc_hosts::{host_network_hosts_file_content, hosts_file_content, write_hosts_file};
use super::host_path::check_host_path;
use super::mount::{mount_tmpfs, mounts_under, unmount};
use super::projection::{
    config_map_payload, downward_api_payload, field_ref_value, secret_payload, NodeResources,
    Payload, DEFAULT_MODE,
};
use super::sources::{
    ObjectCache, TokenKey, TokenManager, DEFAULT_OBJECT_TTL, DEFAULT_TOKEN_EXPIRATION_SECONDS,
};
use super::FileProjection;

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
}

fn volume_type(v: &Volume) -> &'static str {
    match v {
        v if v.persistent_volume_claim.is_some() => "persistentVolumeClaim",
        v if v.nfs.is_some() => "nfs",
        v if v.csi.is_some() => "csi",
        v if v.ephemeral.is_some() => "ephemeral",
        v if v.image.is_some() => "image",
        v if v.iscsi.is_some() => "iscsi",
        _ => "unknown",
    }
}

fn mode_bits(mode: Option<i32>) -> u32 {
    u32::try_from(mode.unwrap_or(DEFAULT_MODE)).unwrap_or(0o644) & 0o777
}

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
        }
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

    /// Sets up (or refreshes) every volume of the pod. Idempotent: a sync after a restart
    /// finds directories and mounts in place and only rewrites what changed. Failures are
    /// listed per volume in [`PodVolumes::failed`]; the other volumes are still set up.
    pub fn setup_pod(&self, pod: &Pod, uid: &PodUid) -> PodVolumes {
        let fresh = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(uid.clone()))
            .unwrap_or(true);
        let mut out = PodVolumes::default();
        let spec = pod.spec.as_ref();
        for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            match self.setup_volume(pod, uid, v, fresh) {
                Ok(Some(path)) => {
                    out.volumes.insert(v.name.clone(), path);
                }
                Ok(None) => out.unsupported.push((v.name.clone(), volume_type(v))),
                Err(source) => {
                    if fresh {
                        // Read the objects fresh again next time.
                        if let Ok(mut seen) = self.seen.lock() {
                            seen.remove(uid);
                        }
                    }
                    out.failed.push(MountError {
                        volume: v.name.clone(),
                        source,
                    });
                }
            }
        }
        out
    }

    /// One volume; `Ok(None)` for a type rkubelet does not support.
    fn setup_volume(
        &self,
        pod: &Pod,
        uid: &PodUid,
        v: &Volume,
        fresh: bool,
    ) -> Result<Option<VolumePath>, VolumeError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let writable = |path: PathBuf| {
            Some(VolumePath {
                path,
                read_only: false,
            })
        };
        if let Some(empty) = &v.empty_dir {
            let dir = self.plugin_dir(uid, "empty-dir", &v.name);
            create_dir(&dir)?;
            if empty.medium.as_deref() == Some("Memory") && self.tmpfs {
                let size = empty
                    .size_limit
                    .as_ref()
                    .and_then(|q| crate::quantity::parse_value(&q.0).ok())
                    .and_then(|b| u64::try_from(b).ok());
                mount_tmpfs(&dir, size)?;
            }
            set_mode(&dir, 0o777)?;
            return Ok(writable(dir));
        }
        if let Some(host) = &v.host_path {
            let path = PathBuf::from(&host.path);
            check_host_path(&path, host.type_.as_deref())?;
            return Ok(writable(path));
        }
        let (plugin, on_tmpfs, payload) = if let Some(src) = &v.config_map {
            let optional = src.optional.unwrap_or(false);
            let payload = match self.objects.config_map(namespace, &src.name, fresh)? {
                Some(cm) => {
                    config_map_payload(&cm, src.items.as_deref(), src.default_mode, optional)?
                }
                None if optional => Payload::new(),
                None => return Err(not_found("configmap", &src.name)),
            };
            ("configmap", false, payload)
        } else if let Some(src) = &v.secret {
            let name = src.secret_name.as_deref().unwrap_or_default();
            let optional = src.optional.unwrap_or(false);
            let payload = match self.objects.secret(namespace, name, fresh)? {
                Some(s) => secret_payload(&s, src.items.as_deref(), src.default_mode, optional)?,
                None if optional => Payload::new(),
                None => return Err(not_found("secret", name)),
            };
            ("secret", true, payload)
        } else if let Some(src) = &v.downward_api {
            let items = src.items.as_deref().unwrap_or_default();
            let payload = downward_api_payload(pod, items, src.default_mode, &self.node)?;
            ("downward-api", true, payload)
        } else if let Some(src) = &v.projected {
            ("projected", true, self.projected_payload(pod, src, fresh)?)
        } else {
            return Ok(None);
        };
        let dir = self.plugin_dir(uid, plugin, &v.name);
        create_dir(&dir)?;
        if on_tmpfs && self.tmpfs {
            mount_tmpfs(&dir, None)?;
        }
        AtomicWriter::new(&dir).write(&payload)?;
        Ok(Some(VolumePath {
            path: dir,
            read_only: true,
        }))
    }

    /// The files of a projected volume: every source's files in one directory.
    fn projected_payload(
        &self,
        pod: &Pod,
        src: &ProjectedVolumeSource,
        fresh: bool,
    ) -> Result<Payload, VolumeError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut payload = Payload::new();
        for source in src.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                match self.objects.config_map(namespace, &cm.name, fresh)? {
                    Some(obj) => payload.extend(config_map_payload(
                        &obj,
                        cm.items.as_deref(),
                        src.default_mode,
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(not_found("configmap", &cm.name)),
                }
            } else if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                match self.objects.secret(namespace, &s.name, fresh)? {
                    Some(obj) => payload.extend(secret_payload(
                        &obj,
                        s.items.as_deref(),
                        src.default_mode,
                        optional,
                    )?),
                    None if optional => {}
                    None => return Err(not_found("secret", &s.name)),
                }
            } else if let Some(d) = &source.downward_api {
                let items = d.items.as_deref().unwrap_or_default();
                payload.extend(downward_api_payload(
                    pod,
                    items,
                    src.default_mode,
                    &self.node,
                )?);
            } else if let Some(t) = &source.service_account_token {
                let key = TokenKey {
                    namespace: namespace.to_string(),
                    service_account: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| "default".into()),
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t
                        .expiration_seconds
                        .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
                    pod_name: pod.metadata.name.clone().unwrap_or_default(),
                    pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                };
                let token = self.tokens.token(&key)?;
                payload.insert(
                    t.path.clone(),
                    FileProjection {
                        data: token.into_bytes(),
                        mode: mode_bits(src.default_mode),
                    },
                );
            } else {
                log::warn!(
                    "pod=\"{namespace}/{}\" projected volume source not supported, skipped: {source:?}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
            }
        }
        Ok(payload)
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
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let Some(vol) = volumes.volumes.get(&vm.name) else {
                // Unsupported volume types were reported at set-up; nothing to mount.
                continue;
            };
            let mut host = vol.path.clone();
            let sub = match vm.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
                Some(expr) => Some(expand_sub_path(pod, container, expr)),
                None => vm.sub_path.clone().filter(|s| !s.is_empty()),
            };
            if let Some(sub) = sub {
                let rel = Path::new(&sub);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(VolumeError::InvalidPath {
                        path: sub.clone(),
                        reason: "subPath must be a relative path without '..'",
                    });
                }
                host = host.join(rel);
                if !host.exists() {
                    std::fs::create_dir_all(&host)
                        .map_err(|e| VolumeError::io("create subPath", &host, e))?;
                }
            }
            let mut m = api::Mount::new();
            m.set_container_path(vm.mount_path.clone());
            m.set_host_path(host.to_string_lossy().into_owned());
            m.set_readonly(vm.read_only.unwrap_or(false) || vol.read_only);
            m.set_propagation(match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PROPAGATION_HOST_TO_CONTAINER,
                Some("Bidirectional") => api::MountPropagation::PROPAGATION_BIDIRECTIONAL,
                _ => api::MountPropagation::PROPAGATION_PRIVATE,
            });
            mounts.push(m);
        }
        if let Some(hosts) = &volumes.etc_hosts {
            if !mounts
                .iter()
                .any(|m| m.get_container_path() == "/etc/hosts")
            {
                let mut m = api::Mount::new();
                m.set_container_path("/etc/hosts".into());
                m.set_host_path(hosts.to_string_lossy().into_owned());
                mounts.push(m);
            }
        }
        Ok(mounts)
    }

    /// Unmounts everything under the pod's directory, removes it and forgets the pod's
    /// tokens.
    pub fn teardown_pod(&self, uid: &PodUid) -> Result<(), VolumeError> {
        let dir = self.pod_dir(uid);
        for m in mounts_under(&dir) {
            unmount(&m)?;
        }
        self.tokens.forget_pod(&uid.0);
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(uid);
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
                Err(err) => log::warn!("uid={uid} cleaning up orphaned pod directory: {err}"),
            }
        }
        cleaned
    }
}

/// Expands `$(VAR)` in a `subPathExpr` from the container's environment (literal values and
/// downward API fields), as upstream does; `$$` is a literal `$`, unknown names stay as they
/// are.
fn expand_sub_path(pod: &Pod, container: &Container, expr: &str) -> String {
    let lookup = |name: &str| -> Option<String> {
        let var = container
            .env
            .iter()
            .flatten()
            .rev()
            .find(|e| e.name == name)?;
        if let Some(v) = &var.value {
            return Some(v.clone());
        }
        let field = var.value_from.as_ref()?.field_ref.as_ref()?;
        field_ref_value(pod, &field.field_path).ok()
    };
    crate::util::expansion::expand(expr, &lookup)
}

fn not_found(kind: &'static str, name: &str) -> VolumeError {
    VolumeError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn create_dir(dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::io("create directory", dir, e))
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("chmod", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeClient;
    use crate::volume::test_support::TestDir;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, PodSpec,
        VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(volumes: Vec<Volume>) -> Pod {
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
                persistent_volume_claim: Some(Default::default()),
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
        assert_eq!(
            vols.unsupported,
            vec![("claim".to_string(), "persistentVolumeClaim")]
        );
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

    #[test]
    fn host_path_type_errors_are_reported() {
        let tmp = TestDir::new("vm-hp");
        let vm = VolumeManager::new(&tmp.path().join("root"));
        let p = pod(vec![Volume {
            name: "sock".into(),
            host_path: Some(HostPathVolumeSource {
                path: tmp.path().to_string_lossy().into(),
                type_: Some("Socket".into()),
            }),
            ..Default::default()
        }]);
        let failed = vm.setup_pod(&p, &PodUid::from("u")).failed;
        assert_eq!(failed.len(), 1);
        let err = failed[0].to_string();
        assert!(
            err.starts_with("MountVolume.SetUp failed for volume \"sock\" : ")
                && err.contains("is not a socket"),
            "{err}"
        );
    }

    /// The projected volume ServiceAccount admission adds to every pod.
    fn kube_api_access() -> Volume {
        serde_json::from_value(serde_json::json!({
            "name": "kube-api-access-x7k2p",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]
            }
        }))
        .unwrap()
    }

    fn api_manager(tmp: &TestDir) -> (VolumeManager, Arc<FakeClient>) {
        let api = Arc::new(FakeClient::new());
        let vm = VolumeManager::with_settings(
            &tmp.path().join("root"),
            VolumeSettings {
                api: Some(api.clone() as Arc<dyn KubeClient>),
                clock: Arc::new(crate::clock::FakeClock::new()),
                tmpfs: false,
                node: NodeResources::default(),
                services: None,
            },
        );
        (vm, api)
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn service_account_projection_holds_token_ca_and_namespace() {
        let tmp = TestDir::new("vm-sa");
        let (vm, api) = api_manager(&tmp);
        api.put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
        let mut p = pod(vec![kube_api_access()]);
        p.metadata.namespace = Some("team".into());
        p.metadata.uid = Some("u1".into());
        let uid = PodUid::from("u1");
        let vols = vm.setup_pod(&p, &uid);
        assert!(vols.failed.is_empty(), "{:?}", vols.failed);
        let dir = tmp
            .path()
            .join("root/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x7k2p");
        assert_eq!(vols.volumes["kube-api-access-x7k2p"].path, dir);
        assert!(vols.volumes["kube-api-access-x7k2p"].read_only);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("ca.crt"), "PEM");
        assert_eq!(read("namespace"), "team");
        assert!(read("token").starts_with("fake-token-team-default-"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let requests = api.token_requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].2.spec.expiration_seconds, Some(3607));

        // Later syncs reuse the token; a pod that is torn down forgets it.
        vm.setup_pod(&p, &uid);
        assert_eq!(api.token_requests().len(), 1);
        vm.teardown_pod(&uid).unwrap();
        assert!(!tmp.path().join("root/pods/u1").exists());
    }

    #[test]
    fn missing_config_map_fails_by_name_until_it_exists_and_optional_ones_are_empty() {
        let tmp = TestDir::new("vm-cm");
        let (vm, api) = api_manager(&tmp);
        let vol = |name: &str, optional: bool| Volume {
            name: name.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "settings".into(),
                optional: Some(optional),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut p = pod(vec![vol("cfg", false), vol("maybe", true)]);
        p.metadata.namespace = Some("team".into());
        let uid = PodUid::from("u1");
        let vols = vm.setup_pod(&p, &uid);
        assert_eq!(vols.failed.len(), 1);
        assert_eq!(
            vols.failed[0].to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"settings\" not found"
        );
        let maybe = &vols.volumes["maybe"].path;
        assert_eq!(
            std::fs::read_dir(maybe)
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with(".."))
                .count(),
            0
        );

        // A failed first set-up reads fresh again: the new ConfigMap is seen at once.
        api.put_config_map(config_map("settings", &[("mode", "blue")]));
        let vols = vm.setup_pod(&p, &uid);
        assert!(vols.failed.is_empty(), "{:?}", vols.failed);
        let file = vols.volumes["cfg"].path.join("mode");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "blue");
        vm.teardown_pod(&uid).unwrap();
    }

    #[test]
    fn forbidden_reads_fail_the_volume_with_the_api_message_and_are_retried() {
        let tmp = TestDir::new("vm-403");
        let (vm, api) = api_manager(&tmp);
        let message = "configmaps \"settings\" is forbidden: User \"system:node:n\" cannot get resource \"configmaps\"";
        api.inject_error(
            "get_config_map",
            crate::api::store::status_error("GET", 403, "Forbidden", message.into()),
        );
        api.put_config_map(config_map("settings", &[("k", "v")]));
        let mut p = pod(vec![Volume {
            name: "cfg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "settings".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        p.metadata.namespace = Some("team".into());
        let uid = PodUid::from("u1");
        let failed = vm.setup_pod(&p, &uid).failed;
        assert_eq!(failed.len(), 1);
        assert!(failed[0].source.is_retriable());
        let text = failed[0].to_string();
        assert!(
            text.contains("configmap \"settings\"") && text.contains(message),
            "{text}"
        );
        assert!(
            vm.setup_pod(&p, &uid).failed.is_empty(),
            "the next sync succeeds"
        );
        vm.teardown_pod(&uid).unwrap();
    }

    #[test]
    fn sub_path_expr_expands_from_the_environment() {
        use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
        let mut p = pod(vec![]);
        p.metadata.namespace = Some("team".into());
        let c = Container {
            name: "app".into(),
            env: Some(vec![
                EnvVar {
                    name: "NS".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "SUB".into(),
                    value: Some("logs".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        assert_eq!(
            expand_sub_path(&p, &c, "$(NS)/$(SUB)/$(NOPE)/$$x"),
            "team/logs/$(NOPE)/$x"
        );
    }
}
