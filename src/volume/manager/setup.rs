//! Setting up a pod's volumes: each supported type into its plugin directory (emptyDir,
//! hostPath in place), API-backed ones from the object cache and token manager, written
//! atomically.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource, Volume};

use super::{create_dir, ClaimVolume, MountError, PodVolumes, VolumeManager, VolumePath};
use crate::types::PodUid;
use crate::volume::atomic_writer::AtomicWriter;
use crate::volume::claims;
use crate::volume::host_path::check_host_path;
use crate::volume::mount::{is_mount_point, mount_bind, mount_tmpfs};
use crate::volume::ownership::set_volume_ownership;
use crate::volume::projection::{
    config_map_payload, downward_api_payload, secret_payload, Payload, DEFAULT_MODE,
};
use crate::volume::sources::{TokenKey, DEFAULT_TOKEN_EXPIRATION_SECONDS};
use crate::volume::{FileProjection, VolumeError};

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
            let result = self.setup_volume(pod, uid, v, fresh);
            let result = self.note_waiting(uid, &v.name, result);
            match result {
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

    /// Keeps when each volume still in progress began to be waited for, and marks it timed out
    /// once it has waited [`MOUNT_TIMEOUT`](super::MOUNT_TIMEOUT).
    fn note_waiting(
        &self,
        uid: &PodUid,
        volume: &str,
        result: Result<Option<VolumePath>, VolumeError>,
    ) -> Result<Option<VolumePath>, VolumeError> {
        let Ok(mut waiting) = self.waiting.lock() else {
            return result;
        };
        let key = (uid.clone(), volume.to_string());
        match result {
            Err(VolumeError::InProgress {
                message,
                unattached,
                ..
            }) => {
                let since = *waiting.entry(key).or_insert_with(std::time::Instant::now);
                Err(VolumeError::InProgress {
                    message,
                    unattached,
                    timed_out: since.elapsed() >= super::MOUNT_TIMEOUT,
                })
            }
            other => {
                waiting.remove(&key);
                other
            }
        }
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
        } else if let Some(claim) = claims::claim_of(pod, v) {
            return self.setup_claim(pod, uid, v, &claim, fresh);
        } else if let Some(inline) = super::csi::of_inline(pod, uid, v) {
            return self.setup_csi(pod, uid, v, &inline, None, fresh);
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

    /// A claim volume (`persistentVolumeClaim` or generic `ephemeral`): the claim and its
    /// PersistentVolume are read and checked as upstream's populator does, then the volume is
    /// set up by its PV's type: `hostPath` in place, `local` bind-mounted into the pod's
    /// volume directory after its node affinity is checked. `Ok(None)` for PV types rkubelet
    /// cannot mount. Once set up, later syncs reuse it (after a restart the mount is found in
    /// place and not made twice).
    fn setup_claim(
        &self,
        pod: &Pod,
        uid: &PodUid,
        v: &Volume,
        claim: &claims::ClaimRef,
        fresh: bool,
    ) -> Result<Option<VolumePath>, VolumeError> {
        let key = (uid.clone(), v.name.clone());
        if !fresh {
            if let Some((done, _)) = self.claims.lock().ok().and_then(|c| c.get(&key).cloned()) {
                return Ok(Some(done));
            }
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let not_ready = |message: String| VolumeError::ClaimNotReady { message };
        let pvc = self.objects.claim(namespace, &claim.name)?;
        let pv_name =
            claims::check_claim(namespace, &claim.name, pvc.as_ref()).map_err(not_ready)?;
        let Some(pvc) = pvc else {
            return Ok(None);
        };
        if claim.ephemeral {
            claims::check_owner(pod, &pvc).map_err(not_ready)?;
        }
        let pv = self.objects.persistent_volume(&pv_name)?;
        claims::check_volume(namespace, &claim.name, &pvc, &pv_name, pv.as_ref())
            .map_err(not_ready)?;
        let Some(pv) = pv else {
            return Ok(None);
        };
        let read_only = claim.read_only;
        let Some(spec) = pv.spec.as_ref() else {
            return Ok(None);
        };
        // The volume mode must fit how the containers use the volume (upstream's populator);
        // raw block volumes are not supported here, so they never start without their device.
        let block = spec.volume_mode.as_deref() == Some("Block");
        let (as_mount, as_device) = claims::uses(pod, &v.name);
        if block && as_mount {
            return Err(not_ready(format!(
                "volume {} has volumeMode Block, but is specified in volumeMounts",
                v.name
            )));
        }
        if !block && as_device {
            return Err(not_ready(format!(
                "volume {} has volumeMode Filesystem, but is specified in volumeDevices",
                v.name
            )));
        }
        if block {
            return Ok(None);
        }
        let info = ClaimVolume {
            uid: uid.clone(),
            volume: v.name.clone(),
            namespace: namespace.to_string(),
            claim: claim.name.clone(),
            mounted_at: None,
            csi: None,
            usage: None,
        };
        if let Some(csi_volume) = super::csi::of_persistent_volume(&pv, read_only) {
            return self.setup_csi(pod, uid, v, &csi_volume, Some(info), fresh);
        }
        let mut mounted_at = None;
        let path = if let Some(host) = &spec.host_path {
            let path = PathBuf::from(&host.path);
            check_host_path(&path, host.type_.as_deref())?;
            path
        } else if let Some(local) = &spec.local {
            let labels = self
                .objects
                .node_labels(&self.node_name)?
                .unwrap_or_default();
            claims::check_node_affinity(&pv, &labels, &self.node_name)
                .map_err(|message| VolumeError::MountCheck { message })?;
            let target = self.plugin_dir(uid, "local-volume", &pv_name);
            if !is_mount_point(&target) {
                create_dir(&target)?;
                mount_bind(Path::new(&local.path), &target, read_only)?;
                // The pod's fsGroup, on the volume's first mount for the pod, unless it is
                // read-only (upstream's local plugin).
                let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
                if let (Some(group), false) = (psc.and_then(|c| c.fs_group), read_only) {
                    let policy = psc.and_then(|c| c.fs_group_change_policy.as_deref());
                    set_volume_ownership(&target, group, policy, false)?;
                }
            }
            mounted_at = Some(target.clone());
            target
        } else {
            return Ok(None);
        };
        let done = VolumePath { path, read_only };
        let info = ClaimVolume { mounted_at, ..info };
        if let Ok(mut claims) = self.claims.lock() {
            claims.insert(key, (done.clone(), info));
        }
        Ok(Some(done))
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
}

fn not_found(kind: &'static str, name: &str) -> VolumeError {
    VolumeError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("chmod", dir, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fixtures::pod;
    use super::*;
    use crate::api::fake::FakeClient;
    use crate::api::KubeClient;
    use crate::volume::test_support::TestDir;
    use crate::volume::NodeResources;
    use crate::volume::VolumeSettings;
    use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, HostPathVolumeSource};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
                csi: None,
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

    fn claim_pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "team", "uid": "pod-uid"},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn claim(
        name: &str,
        phase: &str,
        volume: Option<&str>,
    ) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "team", "uid": format!("{name}-uid")},
            "spec": {"volumeName": volume},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn claims_wait_until_bound_then_mount_their_host_path_volume() {
        let tmp = TestDir::new("claims");
        let (vm, api) = api_manager(&tmp);
        let data = tmp.path().join("pv-data");
        let p = claim_pod(serde_json::json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}}
        ]));
        let uid = PodUid::from("pod-uid");
        // No claim yet, then an unbound one: the volume fails with upstream's words.
        let failed = vm.setup_pod(&p, &uid).failed;
        assert_eq!(
            failed[0].source.to_string(),
            "error processing PVC team/c1: failed to fetch PVC from API server: persistentvolumeclaims \"c1\" not found"
        );
        let pending = api
            .insert_persistent_volume_claim(&claim("c1", "Pending", None))
            .unwrap();
        let claim_uid = pending.metadata.uid.clone().unwrap();
        let failed = vm.setup_pod(&p, &uid).failed;
        assert_eq!(
            failed[0].source.to_string(),
            "error processing PVC team/c1: PVC is not bound"
        );
        // Bound to a hostPath PV: the path itself, read-only as the claim reference says.
        api.insert_persistent_volume(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv1"},
                "spec": {"hostPath": {"path": data.to_string_lossy(), "type": "DirectoryOrCreate"},
                         "claimRef": {"namespace": "team", "name": "c1", "uid": claim_uid}}
            }))
            .unwrap(),
        )
        .unwrap();
        api.update_persistent_volume_claim(&claim("c1", "Bound", Some("pv1")))
            .unwrap();
        let vols = vm.setup_pod(&p, &uid);
        assert!(vols.failed.is_empty(), "{:?}", vols.failed);
        assert_eq!(
            vols.volumes["data"],
            VolumePath {
                path: data.clone(),
                read_only: true
            }
        );
        assert!(data.is_dir());
    }

    #[test]
    fn ephemeral_claims_must_be_the_pods_and_local_volumes_must_be_for_this_node() {
        let tmp = TestDir::new("claims-eph");
        let (vm, api) = api_manager(&tmp);
        let vm = vm.with_node_name("node-a");
        let p = claim_pod(serde_json::json!([
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
        ]));
        let uid = PodUid::from("pod-uid");
        let foreign = claim("db-scratch", "Bound", Some("local-1"));
        api.insert_persistent_volume_claim(&foreign).unwrap();
        let failed = vm.setup_pod(&p, &uid).failed;
        assert_eq!(
            failed[0].source.to_string(),
            "PVC team/db-scratch was not created for pod team/db (pod is not owner)"
        );
        // The pod's own claim, bound to a local PV pinned to another node.
        let tmp2 = TestDir::new("claims-eph-2");
        let (vm, api) = api_manager(&tmp2);
        let vm = vm.with_node_name("node-a");
        let mut owned = foreign.clone();
        owned.metadata.owner_references = Some(vec![serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "name": "db", "uid": "pod-uid", "controller": true
        }))
        .unwrap()]);
        let owned = api.insert_persistent_volume_claim(&owned).unwrap();
        let owned_uid = owned.metadata.uid.clone().unwrap();
        api.insert_persistent_volume(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "local-1"},
                "spec": {"local": {"path": "/nonexistent"},
                         "claimRef": {"namespace": "team", "name": "db-scratch", "uid": owned_uid},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-b"]}]}]}}}
            }))
            .unwrap(),
        )
        .unwrap();
        api.insert_node(
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a",
                "labels": {"kubernetes.io/hostname": "node-a"}}}))
            .unwrap(),
        )
        .unwrap();
        let failed = vm.setup_pod(&p, &uid).failed;
        assert_eq!(
            failed[0].source.to_string(),
            "MountVolume.NodeAffinity check failed for volume \"local-1\" : no matching NodeSelectorTerms"
        );
        assert!(!tmp2
            .path()
            .join("root/pods/pod-uid/volumes/kubernetes.io~local-volume/local-1")
            .exists());
    }

    #[test]
    fn a_block_volume_cannot_be_mounted_as_a_filesystem() {
        let tmp = TestDir::new("claims-block");
        let (vm, api) = api_manager(&tmp);
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "team", "uid": "pod-uid"},
            "spec": {"containers": [{"name": "a",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c1"}}]}
        }))
        .unwrap();
        let bound = api
            .insert_persistent_volume_claim(&claim("c1", "Bound", Some("pv1")))
            .unwrap();
        api.insert_persistent_volume(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pv1"},
                "spec": {"volumeMode": "Block", "local": {"path": "/dev/null"},
                         "claimRef": {"namespace": "team", "name": "c1",
                                      "uid": bound.metadata.uid}}
            }))
            .unwrap(),
        )
        .unwrap();
        let failed = vm.setup_pod(&p, &PodUid::from("pod-uid")).failed;
        assert_eq!(
            failed[0].source.to_string(),
            "volume data has volumeMode Block, but is specified in volumeMounts"
        );
    }
}
