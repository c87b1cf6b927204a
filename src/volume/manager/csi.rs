//! CSI volumes (upstream `pkg/volume/csi` with the reconciler's attach checks): persistent
//! volumes whose PV is `csi`, and inline ephemeral `csi` volumes.
//!
//! Setting up, in upstream's order:
//! 1. the `CSIDriver` object says whether the volume must be attached (`attachRequired`,
//!    default true), whether the driver wants pod information (`podInfoOnMount`) and which
//!    lifecycle modes it allows (an inline volume needs `Ephemeral`);
//! 2. an attachable volume is listed in `node.status.volumesInUse` (the node status
//!    reports [`VolumeManager::volumes_in_use`] and confirms it back), then it must be in
//!    `node.status.volumesAttached` and its `VolumeAttachment` (`csi-<sha256>`) attached;
//!    its `attachmentMetadata` is the publish context;
//! 3. `NodeStageVolume` to `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/
//!    globalmount` when the driver has `STAGE_UNSTAGE_VOLUME` (with `vol_data.json` beside
//!    it), then `NodePublishVolume` to `<root>/pods/<uid>/volumes/kubernetes.io~csi/<name>/
//!    mount` (`vol_data.json` in `<name>/`), with the secrets of the PV's secret refs and the
//!    pod's fsGroup as `volume_mount_group` when the driver applies it itself.
//!
//! Tearing down, `volumesInUse` and driver statistics are in `csi_teardown.rs`.
//!
//! Driver calls run on their own threads, never on the pod worker: while one runs, the
//! volume is [`VolumeError::InProgress`] and the pod is synced again after its back-off.
//! Tearing down unpublishes each volume, then unstages it once no pod on the node
//! publishes it any more. Everything needed for that is in the `vol_data.json` files, so a
//! kubelet restarted after a crash finds its CSI volumes again (a published target is a
//! mount point and is not published twice) and tears down those of pods deleted meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolume, Pod, Volume};
use k8s_openapi::api::storage::v1::CSIDriver;

use super::{ClaimVolume, VolumeManager, VolumePath};
use crate::csi::csi as proto;
use crate::csi::{self, CsiDrivers};
use crate::types::PodUid;
use crate::volume::mount::is_mount_point;
use crate::volume::ownership::set_volume_ownership;
use crate::volume::VolumeError;

/// The metadata file kept beside each publish and staging directory.
pub(super) const VOL_DATA: &str = "vol_data.json";

/// The CSI side of the volume manager.
pub(crate) struct CsiState {
    pub(super) drivers: Arc<CsiDrivers>,
    /// Driver operations in flight or finished and not yet collected, by key.
    ops: Arc<Mutex<HashMap<String, Op>>>,
    /// Unique names of attachable volumes set up or being set up (`volumesInUse`).
    pub(super) attachable: Mutex<BTreeSet<String>>,
    /// Unique names the node status has reported in `volumesInUse`.
    pub(super) reported: Mutex<BTreeSet<String>>,
}

enum Op {
    Running,
    Done(Result<(), String>),
}

impl CsiState {
    pub(crate) fn new(drivers: Arc<CsiDrivers>) -> Self {
        CsiState {
            drivers,
            ops: Arc::new(Mutex::new(HashMap::new())),
            attachable: Mutex::new(BTreeSet::new()),
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    /// The outcome of operation `key` if it finished (collected once), `None` while it runs;
    /// starts it on its own thread when it is not known.
    pub(super) fn run(
        &self,
        key: &str,
        operation: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Option<Result<(), String>> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        match ops.remove(key) {
            Some(Op::Done(result)) => return Some(result),
            Some(Op::Running) => {
                ops.insert(key.to_string(), Op::Running);
                return None;
            }
            None => {}
        }
        ops.insert(key.to_string(), Op::Running);
        drop(ops);
        let all = Arc::clone(&self.ops);
        let owned = key.to_string();
        let spawned = std::thread::Builder::new()
            .name("csi-operation".into())
            .spawn(move || {
                let result = operation();
                if let Err(e) = &result {
                    log::warn!("CSI operation {owned} failed: {e}");
                }
                all.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(owned, Op::Done(result));
            });
        if let Err(e) = spawned {
            self.ops.lock().unwrap_or_else(|e| e.into_inner()).insert(
                key.to_string(),
                Op::Done(Err(format!("starting a thread: {e}"))),
            );
        }
        None
    }
}

/// A CSI volume of a pod, from its PV or inline.
#[derive(Debug, Clone)]
pub(super) struct CsiVolume {
    pub driver: String,
    pub handle: String,
    /// The directory name under `kubernetes.io~csi` (the PV's name, or the pod volume's).
    pub spec_name: String,
    pub read_only: bool,
    pub fs_type: String,
    pub attributes: BTreeMap<String, String>,
    /// (namespace, name) of the `nodeStageSecretRef`.
    pub stage_secret: Option<(String, String)>,
    /// (namespace, name) of the `nodePublishSecretRef`.
    pub publish_secret: Option<(String, String)>,
    pub mount_options: Vec<String>,
    pub access_modes: Vec<String>,
    /// An inline volume (lifecycle mode `Ephemeral`).
    pub ephemeral: bool,
}

/// The CSI volume of a PersistentVolume, if it is one.
pub(super) fn of_persistent_volume(pv: &PersistentVolume, read_only: bool) -> Option<CsiVolume> {
    let spec = pv.spec.as_ref()?;
    let src = spec.csi.as_ref()?;
    let secret = |r: Option<&k8s_openapi::api::core::v1::SecretReference>| {
        r.and_then(|r| Some((r.namespace.clone()?, r.name.clone()?)))
    };
    Some(CsiVolume {
        driver: src.driver.clone(),
        handle: src.volume_handle.clone(),
        spec_name: pv.metadata.name.clone().unwrap_or_default(),
        read_only: read_only || src.read_only.unwrap_or(false),
        fs_type: src.fs_type.clone().unwrap_or_default(),
        attributes: src.volume_attributes.clone().unwrap_or_default(),
        stage_secret: secret(src.node_stage_secret_ref.as_ref()),
        publish_secret: secret(src.node_publish_secret_ref.as_ref()),
        mount_options: spec.mount_options.clone().unwrap_or_default(),
        access_modes: spec.access_modes.clone().unwrap_or_default(),
        ephemeral: false,
    })
}

/// The CSI volume of an inline `csi` pod volume. Its handle is upstream's
/// `csi-<sha256(pod uid + volume name)>`.
pub(super) fn of_inline(pod: &Pod, uid: &PodUid, v: &Volume) -> Option<CsiVolume> {
    let src = v.csi.as_ref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let hex = csi::sha256_hex(&format!("{}{}", uid.0, v.name));
    Some(CsiVolume {
        driver: src.driver.clone(),
        handle: format!("csi-{hex}"),
        spec_name: v.name.clone(),
        read_only: src.read_only.unwrap_or(false),
        fs_type: src.fs_type.clone().unwrap_or_default(),
        attributes: src.volume_attributes.clone().unwrap_or_default(),
        stage_secret: None,
        publish_secret: src
            .node_publish_secret_ref
            .as_ref()
            .map(|r| (namespace.to_string(), r.name.clone())),
        mount_options: Vec::new(),
        access_modes: vec!["ReadWriteOnce".into()],
        ephemeral: true,
    })
}

/// The CSI access mode of the PV's first access mode (upstream without the
/// single-node-multi-writer capability).
fn access_mode(modes: &[String]) -> proto::VolumeCapability_AccessMode_Mode {
    use proto::VolumeCapability_AccessMode_Mode as Mode;
    match modes.first().map(String::as_str) {
        Some("ReadOnlyMany") => Mode::MULTI_NODE_READER_ONLY,
        Some("ReadWriteMany") => Mode::MULTI_NODE_MULTI_WRITER,
        _ => Mode::SINGLE_NODE_WRITER,
    }
}

/// The driver's settings from its CSIDriver object (upstream's defaults without one).
#[derive(Debug, Clone)]
struct DriverPolicy {
    attach_required: bool,
    pod_info_on_mount: bool,
    modes: Vec<String>,
    fs_group_policy: String,
    exists: bool,
}

impl DriverPolicy {
    fn of(driver: Option<&CSIDriver>) -> DriverPolicy {
        let spec = driver.map(|d| &d.spec);
        DriverPolicy {
            attach_required: spec.and_then(|s| s.attach_required).unwrap_or(true),
            pod_info_on_mount: spec.and_then(|s| s.pod_info_on_mount).unwrap_or(false),
            modes: spec
                .and_then(|s| s.volume_lifecycle_modes.clone())
                .unwrap_or_else(|| vec!["Persistent".into()]),
            fs_group_policy: spec
                .and_then(|s| s.fs_group_policy.clone())
                .unwrap_or_else(|| "ReadWriteOnceWithFSType".into()),
            exists: driver.is_some(),
        }
    }

    /// Upstream's lifecycle-mode check.
    fn check_mode(&self, driver: &str, ephemeral: bool) -> Result<(), String> {
        let mode = if ephemeral { "Ephemeral" } else { "Persistent" };
        if ephemeral && !self.exists {
            return Err(format!(
                "volume mode \"{mode}\" not supported by driver {driver} (no CSIDriver object)"
            ));
        }
        if self.modes.iter().any(|m| m == mode) {
            return Ok(());
        }
        let quoted: Vec<String> = self.modes.iter().map(|m| format!("\"{m}\"")).collect();
        Err(format!(
            "volume mode \"{mode}\" not supported by driver {driver} (only supports [{}])",
            quoted.join(" ")
        ))
    }

    /// Whether the kubelet applies the pod's fsGroup to the volume (upstream
    /// `supportsFSGroup`).
    fn applies_fs_group(&self, volume: &CsiVolume) -> bool {
        match self.fs_group_policy.as_str() {
            "None" => false,
            "File" => true,
            _ => {
                !volume.fs_type.is_empty()
                    && (volume.ephemeral
                        || (volume.access_modes.len() == 1
                            && volume.access_modes[0] == "ReadWriteOnce"))
            }
        }
    }
}

/// The volume context passed to the driver: the volume's attributes, plus the pod's
/// identity when the driver asks for it.
fn volume_context(pod: &Pod, volume: &CsiVolume, policy: &DriverPolicy) -> HashMap<String, String> {
    let mut context: HashMap<String, String> = volume.attributes.clone().into_iter().collect();
    if policy.pod_info_on_mount {
        let meta = &pod.metadata;
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        for (key, value) in [
            (csi::POD_NAME_KEY, meta.name.clone().unwrap_or_default()),
            (
                csi::POD_NAMESPACE_KEY,
                meta.namespace.clone().unwrap_or_else(|| "default".into()),
            ),
            (csi::POD_UID_KEY, meta.uid.clone().unwrap_or_default()),
            (csi::SERVICE_ACCOUNT_KEY, service_account),
            (csi::EPHEMERAL_KEY, volume.ephemeral.to_string()),
        ] {
            context.insert(key.to_string(), value);
        }
    }
    context
}

pub(super) fn read_vol_data(dir: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join(VOL_DATA)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_vol_data(dir: &Path, data: &BTreeMap<String, String>) -> Result<(), String> {
    let text = serde_json::to_vec(data).map_err(|e| e.to_string())?;
    crate::util::write_private(&dir.join(VOL_DATA), &text)
        .map_err(|e| format!("failed to save volume info data: {e}"))
}

pub(super) fn remove_dir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

impl VolumeManager {
    /// Sets up a CSI volume (see the module docs). `Ok(None)` when this kubelet has no CSI
    /// support wired in (the volume is then reported unsupported).
    pub(super) fn setup_csi(
        &self,
        pod: &Pod,
        uid: &PodUid,
        v: &Volume,
        volume: &CsiVolume,
        claim: Option<ClaimVolume>,
        fresh: bool,
    ) -> Result<Option<VolumePath>, VolumeError> {
        let Some(state) = self.csi.as_ref() else {
            return Ok(None);
        };
        let failed = |message: String| VolumeError::Csi { message };
        let publish_dir = self.plugin_dir(uid, "csi", &volume.spec_name);
        let target = publish_dir.join("mount");
        let done = VolumePath {
            path: target.clone(),
            read_only: volume.read_only,
        };
        let record = |claim: Option<ClaimVolume>| {
            if let (Some(mut info), Ok(mut claims)) = (claim, self.claims.lock()) {
                info.mounted_at = Some(publish_dir.clone());
                info.csi = Some(crate::volume::manager::CsiRef {
                    driver: volume.driver.clone(),
                    handle: volume.handle.clone(),
                    target: target.clone(),
                    staging: csi::staging_path(&self.root_dir, &volume.driver, &volume.handle),
                });
                claims.insert((uid.clone(), v.name.clone()), (done.clone(), info));
            }
        };
        let key = format!("publish/{}/{}", uid.0, v.name);
        // Published before (by this process, or before a restart): not published twice.
        if is_mount_point(&target) && read_vol_data(&publish_dir).is_some() {
            if let Some(Err(e)) = state.run_if_known(&key) {
                return Err(failed(e));
            }
            record(claim);
            return Ok(Some(done));
        }
        let policy = DriverPolicy::of(self.objects.csi_driver(&volume.driver)?.as_ref());
        policy
            .check_mode(&volume.driver, volume.ephemeral)
            .map_err(failed)?;
        let attachable = policy.attach_required && !volume.ephemeral;
        let mut publish_context = HashMap::new();
        let mut attachment_id = String::new();
        if attachable {
            let unique = csi::unique_volume_name(&volume.driver, &volume.handle);
            attachment_id = csi::attachment_name(&volume.handle, &volume.driver, &self.node_name);
            publish_context = self.wait_for_attach(state, &unique, &attachment_id)?;
        }
        let caps = state.drivers.capabilities(&volume.driver).map_err(failed)?;
        let secrets =
            |r: &Option<(String, String)>| -> Result<HashMap<String, String>, VolumeError> {
                let Some((ns, name)) = r else {
                    return Ok(HashMap::new());
                };
                let secret = self.objects.secret(ns, name, fresh)?.ok_or_else(|| {
                failed(format!(
                    "failed to find the secret {name} in the namespace {ns} with error: secrets \"{name}\" not found"
                ))
            })?;
                Ok(secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect())
            };
        let stage_secrets = secrets(&volume.stage_secret)?;
        let publish_secrets = secrets(&volume.publish_secret)?;
        let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let fs_group = psc.and_then(|c| c.fs_group);
        let policy_name = psc.and_then(|c| c.fs_group_change_policy.clone());
        let mount_group = match fs_group {
            Some(group) if caps.mount_group && policy.fs_group_policy != "None" => {
                group.to_string()
            }
            _ => String::new(),
        };
        let kubelet_fs_group = fs_group.filter(|_| {
            mount_group.is_empty() && !volume.read_only && policy.applies_fs_group(volume)
        });

        let mut capability = proto::VolumeCapability::new();
        let mut mount = proto::VolumeCapability_MountVolume::new();
        mount.set_fs_type(volume.fs_type.clone());
        mount.set_mount_flags(volume.mount_options.clone().into());
        mount.set_volume_mount_group(mount_group);
        capability.set_mount(mount);
        let mut mode = proto::VolumeCapability_AccessMode::new();
        mode.set_mode(access_mode(&volume.access_modes));
        capability.set_access_mode(mode);
        let context = volume_context(pod, volume, &policy);
        let staging = csi::staging_path(&self.root_dir, &volume.driver, &volume.handle);
        let stage = caps.stage_unstage && !volume.ephemeral;

        let mut stage_request = proto::NodeStageVolumeRequest::new();
        stage_request.set_volume_id(volume.handle.clone());
        stage_request.set_publish_context(publish_context.clone());
        stage_request.set_staging_target_path(staging.to_string_lossy().into_owned());
        stage_request.set_volume_capability(capability.clone());
        stage_request.set_secrets(stage_secrets);
        stage_request.set_volume_context(context.clone());

        let mut publish_request = proto::NodePublishVolumeRequest::new();
        publish_request.set_volume_id(volume.handle.clone());
        publish_request.set_publish_context(publish_context);
        if stage {
            publish_request.set_staging_target_path(staging.to_string_lossy().into_owned());
        }
        publish_request.set_target_path(target.to_string_lossy().into_owned());
        publish_request.set_volume_capability(capability);
        publish_request.set_readonly(volume.read_only);
        publish_request.set_secrets(publish_secrets);
        publish_request.set_volume_context(context);

        let mut publish_data = BTreeMap::new();
        publish_data.insert("specVolID".to_string(), volume.spec_name.clone());
        publish_data.insert("volumeHandle".to_string(), volume.handle.clone());
        publish_data.insert("driverName".to_string(), volume.driver.clone());
        publish_data.insert("nodeName".to_string(), self.node_name.clone());
        let lifecycle = if volume.ephemeral {
            "Ephemeral"
        } else {
            "Persistent"
        };
        publish_data.insert("volumeLifecycleMode".to_string(), lifecycle.to_string());
        if !attachment_id.is_empty() {
            publish_data.insert("attachmentID".to_string(), attachment_id);
        }
        let mut stage_data = BTreeMap::new();
        stage_data.insert("driverName".to_string(), volume.driver.clone());
        stage_data.insert("volumeHandle".to_string(), volume.handle.clone());

        let client = state.drivers.client(&volume.driver).map_err(failed)?;
        let publish_dir_owned = publish_dir.clone();
        let target_owned = target.clone();
        let operation = move || -> Result<(), String> {
            if stage && !is_mount_point(&staging) {
                let parent = staging.parent().unwrap_or(&staging).to_path_buf();
                std::fs::create_dir_all(&staging)
                    .map_err(|e| format!("creating {}: {e}", staging.display()))?;
                write_vol_data(&parent, &stage_data)?;
                client
                    .stage(&stage_request)
                    .map_err(|e| format!("MountVolume.MountDevice failed: {e}"))?;
            }
            std::fs::create_dir_all(&publish_dir_owned)
                .map_err(|e| format!("creating {}: {e}", publish_dir_owned.display()))?;
            set_mode(&publish_dir_owned, 0o750)?;
            write_vol_data(&publish_dir_owned, &publish_data)?;
            client
                .publish(&publish_request)
                .map_err(|e| e.to_string())?;
            if let Some(group) = kubelet_fs_group {
                set_volume_ownership(&target_owned, group, policy_name.as_deref(), false)
                    .map_err(|e| format!("applying fsGroup {group}: {e}"))?;
            }
            Ok(())
        };
        match state.run(&key, operation) {
            None => Err(VolumeError::InProgress {
                unattached: false,
                timed_out: false,
                message: format!(
                    "CSI driver {} is setting up volume \"{}\"",
                    volume.driver, v.name
                ),
            }),
            Some(Err(e)) => Err(failed(e)),
            Some(Ok(())) => {
                record(claim);
                Ok(Some(done))
            }
        }
    }

    /// Upstream's checks before an attachable volume is mounted: reported in use, attached
    /// according to the node's status, and its VolumeAttachment attached. Returns the
    /// attachment's metadata (the publish context).
    fn wait_for_attach(
        &self,
        state: &CsiState,
        unique: &str,
        attachment: &str,
    ) -> Result<HashMap<String, String>, VolumeError> {
        let waiting = |message: String| VolumeError::InProgress {
            message,
            unattached: true,
            timed_out: false,
        };
        if let Ok(mut attachable) = state.attachable.lock() {
            attachable.insert(unique.to_string());
        }
        let reported = state.reported.lock().is_ok_and(|r| r.contains(unique));
        if !reported {
            return Err(waiting(format!(
                "Volume has not been added to the list of VolumesInUse in the node's volume status for volume \"{unique}\""
            )));
        }
        let node = self.objects.node(&self.node_name)?;
        let attached = node
            .and_then(|n| n.status)
            .and_then(|s| s.volumes_attached)
            .unwrap_or_default()
            .iter()
            .any(|a| a.name == unique);
        if !attached {
            return Err(waiting(format!(
                "Volume not attached according to node status for volume \"{unique}\""
            )));
        }
        let Some(va) = self.objects.volume_attachment(attachment)? else {
            return Err(waiting(format!(
                "volume attachment {attachment} for volume \"{unique}\" not found yet"
            )));
        };
        let status = va.status.unwrap_or_default();
        if !status.attached {
            if let Some(e) = status.attach_error.and_then(|e| e.message) {
                return Err(VolumeError::Csi {
                    message: format!(
                        "rpc error: code = Unknown desc = attachment {attachment} failed: {e}"
                    ),
                });
            }
            return Err(waiting(format!(
                "volume attachment {attachment} is not attached yet"
            )));
        }
        Ok(status
            .attachment_metadata
            .unwrap_or_default()
            .into_iter()
            .collect())
    }
}

impl CsiState {
    /// The outcome of a finished operation `key` (collected), without starting anything.
    fn run_if_known(&self, key: &str) -> Option<Result<(), String>> {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        match ops.remove(key) {
            Some(Op::Done(result)) => Some(result),
            Some(Op::Running) => {
                ops.insert(key.to_string(), Op::Running);
                None
            }
            None => None,
        }
    }
}

/// Figures of a volume as its driver reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Bytes available.
    pub available_bytes: Option<u64>,
    /// Bytes in total.
    pub capacity_bytes: Option<u64>,
    /// Bytes used.
    pub used_bytes: Option<u64>,
    /// Inodes free.
    pub inodes_free: Option<u64>,
    /// Inodes in total.
    pub inodes: Option<u64>,
    /// Inodes used.
    pub inodes_used: Option<u64>,
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(spec: serde_json::Value) -> CSIDriver {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d.example.com"}, "spec": spec
        }))
        .unwrap()
    }

    fn volume(ephemeral: bool, fs_type: &str, modes: &[&str]) -> CsiVolume {
        CsiVolume {
            driver: "d.example.com".into(),
            handle: "h".into(),
            spec_name: "pv".into(),
            read_only: false,
            fs_type: fs_type.into(),
            attributes: [("a".to_string(), "b".to_string())].into_iter().collect(),
            stage_secret: None,
            publish_secret: None,
            mount_options: Vec::new(),
            access_modes: modes.iter().map(|m| m.to_string()).collect(),
            ephemeral,
        }
    }

    #[test]
    fn lifecycle_modes_are_checked_with_upstreams_words() {
        let none = DriverPolicy::of(None);
        assert!(none.attach_required);
        assert!(none.check_mode("d", false).is_ok());
        assert_eq!(
            none.check_mode("d", true).unwrap_err(),
            "volume mode \"Ephemeral\" not supported by driver d (no CSIDriver object)"
        );
        let persistent = DriverPolicy::of(Some(&driver(serde_json::json!({}))));
        assert_eq!(
            persistent.check_mode("d", true).unwrap_err(),
            "volume mode \"Ephemeral\" not supported by driver d (only supports [\"Persistent\"])"
        );
        let both = DriverPolicy::of(Some(&driver(
            serde_json::json!({"volumeLifecycleModes": ["Persistent", "Ephemeral"], "attachRequired": false}),
        )));
        assert!(both.check_mode("d", true).is_ok());
        assert!(!both.attach_required);
    }

    #[test]
    fn fs_group_follows_the_drivers_policy() {
        let default = DriverPolicy::of(None);
        assert!(!default.applies_fs_group(&volume(false, "", &["ReadWriteOnce"])));
        assert!(default.applies_fs_group(&volume(false, "ext4", &["ReadWriteOnce"])));
        assert!(!default.applies_fs_group(&volume(false, "ext4", &["ReadWriteMany"])));
        assert!(default.applies_fs_group(&volume(true, "ext4", &[])));
        let file = DriverPolicy::of(Some(&driver(serde_json::json!({"fsGroupPolicy": "File"}))));
        assert!(file.applies_fs_group(&volume(false, "", &["ReadWriteMany"])));
        let off = DriverPolicy::of(Some(&driver(serde_json::json!({"fsGroupPolicy": "None"}))));
        assert!(!off.applies_fs_group(&volume(false, "ext4", &["ReadWriteOnce"])));
    }

    #[test]
    fn pod_information_is_passed_only_when_asked() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "serviceAccountName": "sa"}
        }))
        .unwrap();
        let quiet = volume_context(&pod, &volume(false, "", &[]), &DriverPolicy::of(None));
        assert_eq!(quiet.len(), 1);
        let asked = DriverPolicy::of(Some(&driver(serde_json::json!({"podInfoOnMount": true}))));
        let context = volume_context(&pod, &volume(true, "", &[]), &asked);
        assert_eq!(context[csi::POD_NAME_KEY], "p");
        assert_eq!(context[csi::POD_NAMESPACE_KEY], "ns");
        assert_eq!(context[csi::POD_UID_KEY], "u1");
        assert_eq!(context[csi::SERVICE_ACCOUNT_KEY], "sa");
        assert_eq!(context[csi::EPHEMERAL_KEY], "true");
        assert_eq!(context["a"], "b");
    }

    #[test]
    fn access_modes_map_to_csi() {
        use proto::VolumeCapability_AccessMode_Mode as Mode;
        assert_eq!(
            access_mode(&["ReadOnlyMany".into()]),
            Mode::MULTI_NODE_READER_ONLY
        );
        assert_eq!(
            access_mode(&["ReadWriteMany".into()]),
            Mode::MULTI_NODE_MULTI_WRITER
        );
        assert_eq!(
            access_mode(&["ReadWriteOnce".into()]),
            Mode::SINGLE_NODE_WRITER
        );
        assert_eq!(access_mode(&[]), Mode::SINGLE_NODE_WRITER);
    }
}
