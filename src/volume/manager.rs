//! The volume manager, first part: the volumes a pod worker sets up before the pod's
//! containers start (emptyDir on disk or tmpfs, hostPath with its type checks, the
//! kubelet-managed `/etc/hosts`), the CRI mounts of each container, and teardown when the
//! pod is gone, including pod directories a crash left behind. Runs on the pod worker that
//! syncs the pod; housekeeping calls [`VolumeManager::cleanup_orphans`].
//!
//! Layout as upstream: `<root-dir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>` and
//! `<root-dir>/pods/<uid>/etc-hosts`. Volume types backed by API objects (configMap, secret,
//! downwardAPI, projected) are not set up yet: the pod still starts, and a `FailedMount`
//! warning names each such volume.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use crate::cri::api;
use crate::types::{is_host_network, PodUid};

use super::error::VolumeError;
use super::etc_hosts::{hosts_file_content, write_hosts_file};
use super::host_path::check_host_path;
use super::mount::{mount_tmpfs, mounts_under, unmount};

/// Where one volume lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    /// Host directory or file.
    pub path: PathBuf,
    /// Whether the plugin forces read-only.
    pub read_only: bool,
}

/// A pod's volumes after set-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// Set-up volumes by name.
    pub volumes: BTreeMap<String, VolumePath>,
    /// Volumes of types not supported yet (name, type), to report.
    pub unsupported: Vec<(String, &'static str)>,
    /// The managed hosts file, unless the pod uses the host network.
    pub etc_hosts: Option<PathBuf>,
}

/// Sets up and tears down pod volumes under the kubelet root dir.
#[derive(Debug, Clone)]
pub struct VolumeManager {
    root_dir: PathBuf,
}

/// Parses a quantity such as `64Mi`, `1G` or `1000` into bytes (the forms `sizeLimit` uses).
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult).ceil() as u64)
}

fn volume_type(v: &Volume) -> &'static str {
    match v {
        v if v.config_map.is_some() => "configMap",
        v if v.secret.is_some() => "secret",
        v if v.projected.is_some() => "projected",
        v if v.downward_api.is_some() => "downwardAPI",
        v if v.persistent_volume_claim.is_some() => "persistentVolumeClaim",
        _ => "unknown",
    }
}

impl VolumeManager {
    /// A manager rooted at `--root-dir`.
    pub fn new(root_dir: &Path) -> Self {
        VolumeManager {
            root_dir: root_dir.to_path_buf(),
        }
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

    /// Sets up every volume of the pod (idempotent: a sync after a restart finds them in place)
    /// and writes its `/etc/hosts` for `pod_ips`.
    pub fn setup_pod(
        &self,
        pod: &Pod,
        uid: &PodUid,
        pod_ips: &[String],
    ) -> Result<PodVolumes, VolumeError> {
        let mut out = PodVolumes::default();
        let spec = pod.spec.as_ref();
        for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            if let Some(empty) = &v.empty_dir {
                let dir = self.plugin_dir(uid, "empty-dir", &v.name);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| VolumeError::io("create directory", &dir, e))?;
                if empty.medium.as_deref() == Some("Memory") {
                    let size = empty.size_limit.as_ref().and_then(|q| parse_bytes(&q.0));
                    mount_tmpfs(&dir, size)?;
                } else {
                    set_mode(&dir, 0o777)?;
                }
                out.volumes.insert(
                    v.name.clone(),
                    VolumePath {
                        path: dir,
                        read_only: false,
                    },
                );
            } else if let Some(host) = &v.host_path {
                let path = PathBuf::from(&host.path);
                check_host_path(&path, host.type_.as_deref())?;
                out.volumes.insert(
                    v.name.clone(),
                    VolumePath {
                        path,
                        read_only: false,
                    },
                );
            } else {
                out.unsupported.push((v.name.clone(), volume_type(v)));
            }
        }
        if !is_host_network(pod) {
            let path = self.pod_dir(uid).join("etc-hosts");
            let hostname = pod
                .spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default();
            let aliases = spec
                .and_then(|s| s.host_aliases.clone())
                .unwrap_or_default();
            let content = hosts_file_content(pod_ips, &hostname, None, &aliases);
            let current = std::fs::read_to_string(&path).ok();
            if current.as_deref() != Some(content.as_str()) {
                std::fs::create_dir_all(self.pod_dir(uid))
                    .map_err(|e| VolumeError::io("create directory", self.pod_dir(uid), e))?;
                write_hosts_file(&path, &content)
                    .map_err(|e| VolumeError::io("write file", &path, e))?;
            }
            out.etc_hosts = Some(path);
        }
        Ok(out)
    }

    /// The CRI mounts of one container: its `volumeMounts` (with `subPath` and `readOnly`)
    /// and the managed `/etc/hosts` unless the container mounts its own there.
    pub fn container_mounts(
        &self,
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
            if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let rel = Path::new(sub);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(VolumeError::InvalidPath {
                        path: sub.to_string(),
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

    /// Unmounts everything under the pod's directory and removes it.
    pub fn teardown_pod(&self, uid: &PodUid) -> Result<(), VolumeError> {
        let dir = self.pod_dir(uid);
        for m in mounts_under(&dir) {
            unmount(&m)?;
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

fn set_mode(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("chmod", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, HostPathVolumeSource, PodSpec, VolumeMount,
    };

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
                name: "token".into(),
                projected: Some(Default::default()),
                ..Default::default()
            },
        ]);
        let vols = vm.setup_pod(&p, &uid, &["10.0.0.7".to_string()]).unwrap();
        let cache = tmp
            .path()
            .join("root/pods/u1/volumes/kubernetes.io~empty-dir/cache");
        assert!(cache.is_dir());
        assert!(host.is_dir());
        assert_eq!(vols.unsupported, vec![("token".to_string(), "projected")]);
        let hosts = std::fs::read_to_string(tmp.path().join("root/pods/u1/etc-hosts")).unwrap();
        assert!(hosts.contains("10.0.0.7\tweb"), "{hosts}");
        // Idempotent.
        assert_eq!(
            vm.setup_pod(&p, &uid, &["10.0.0.7".to_string()]).unwrap(),
            vols
        );

        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                mount("cache", "/cache", None, false),
                mount("data", "/data", Some("sub"), true),
                mount("token", "/var/run/secrets", None, true),
            ]),
            ..Default::default()
        };
        let mounts = vm.container_mounts(&c, &vols).unwrap();
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
        assert!(vm.container_mounts(&bad, &vols).is_err());

        // Orphan cleanup keeps known pods and removes the rest.
        vm.setup_pod(&pod(vec![]), &PodUid::from("u2"), &[])
            .unwrap();
        let keep: HashSet<PodUid> = [PodUid::from("u2")].into();
        assert_eq!(vm.cleanup_orphans(&keep), vec![uid]);
        assert!(!tmp.path().join("root/pods/u1").exists());
        assert!(tmp.path().join("root/pods/u2").exists());
        assert!(host.exists(), "hostPath data is never removed");
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
        let err = vm.setup_pod(&p, &PodUid::from("u"), &[]).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
    }

    #[test]
    fn byte_quantities() {
        assert_eq!(parse_bytes("64Mi"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("1.5Ki"), Some(1536));
        assert_eq!(parse_bytes("lots"), None);
    }
}
