//! Tearing CSI volumes down (unpublish, then unstage once no pod on the node publishes the
//! volume), the attachable volumes to report in `node.status.volumesInUse`, and the
//! figures drivers report for their volumes. The set-up side is in `csi.rs`; both work
//! from the `vol_data.json` files beside each publish and staging directory, so a
//! restarted kubelet tears down what an earlier process set up.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::csi::{read_vol_data, remove_dir_if_empty, CsiState, VolumeUsage, VOL_DATA};
use super::VolumeManager;
use crate::csi;
use crate::csi::csi as proto;
use crate::types::PodUid;
use crate::volume::mount::is_mount_point;
use crate::volume::VolumeError;

impl VolumeManager {
    /// Unpublishes every CSI volume of the pod, and unstages those no other pod publishes.
    /// `InProgress` while driver calls run; the caller tries again later.
    pub(super) fn teardown_csi(&self, uid: &PodUid) -> Result<(), VolumeError> {
        let dir = self.pod_dir(uid).join("volumes").join("kubernetes.io~csi");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let Some(state) = self.csi.as_ref() else {
            return Err(VolumeError::Csi {
                message: format!(
                    "{} holds CSI volumes, but CSI is not enabled",
                    dir.display()
                ),
            });
        };
        let mut pending = Vec::new();
        for entry in entries.flatten() {
            let publish_dir = entry.path();
            let target = publish_dir.join("mount");
            let Some(data) = read_vol_data(&publish_dir) else {
                if !is_mount_point(&target) {
                    let _ = std::fs::remove_dir(&target);
                    remove_dir_if_empty(&publish_dir);
                    continue;
                }
                return Err(VolumeError::Csi {
                    message: format!(
                        "{} is mounted but its {VOL_DATA} is missing",
                        target.display()
                    ),
                });
            };
            let driver = data.get("driverName").cloned().unwrap_or_default();
            let handle = data.get("volumeHandle").cloned().unwrap_or_default();
            let key = format!(
                "unpublish/{}/{}",
                uid.0,
                entry.file_name().to_string_lossy()
            );
            let client = state.drivers.client(&driver);
            let target_owned = target.clone();
            let handle_owned = handle.clone();
            let outcome = state.run(&key, move || {
                let client = client?;
                client
                    .unpublish(&handle_owned, &target_owned.to_string_lossy())
                    .map_err(|e| format!("UnmountVolume.TearDown failed: {e}"))?;
                if is_mount_point(&target_owned) {
                    return Err(format!(
                        "UnmountVolume.TearDown failed: {} is still mounted after NodeUnpublishVolume",
                        target_owned.display()
                    ));
                }
                match std::fs::remove_dir(&target_owned) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("removing {}: {e}", target_owned.display())),
                }
            });
            match outcome {
                None => pending.push(handle.clone()),
                Some(Err(e)) => return Err(VolumeError::Csi { message: e }),
                Some(Ok(())) => {
                    let _ = std::fs::remove_file(publish_dir.join(VOL_DATA));
                    remove_dir_if_empty(&publish_dir);
                    if !self.unstage_if_unused(state, &driver, &handle)? {
                        pending.push(handle.clone());
                    }
                }
            }
        }
        if pending.is_empty() {
            remove_dir_if_empty(&dir);
            return Ok(());
        }
        Err(VolumeError::InProgress {
            unattached: false,
            timed_out: false,
            message: format!("waiting for CSI volumes {pending:?} to be unpublished"),
        })
    }

    /// Unstages a volume no pod publishes any more; true once it is unstaged (or was never
    /// staged).
    fn unstage_if_unused(
        &self,
        state: &CsiState,
        driver: &str,
        handle: &str,
    ) -> Result<bool, VolumeError> {
        if self.published_anywhere(driver, handle) {
            return Ok(true);
        }
        let staging = csi::staging_path(&self.root_dir, driver, handle);
        let parent = staging.parent().unwrap_or(&staging).to_path_buf();
        let forget = || {
            if let Ok(mut attachable) = state.attachable.lock() {
                attachable.remove(&csi::unique_volume_name(driver, handle));
            }
        };
        if read_vol_data(&parent).is_none() && !is_mount_point(&staging) {
            forget();
            return Ok(true);
        }
        let caps = state
            .drivers
            .capabilities(driver)
            .map_err(|message| VolumeError::Csi {
                message: format!("UnmountDevice failed: {message}"),
            })?;
        let client = state.drivers.client(driver);
        let handle_owned = handle.to_string();
        let key = format!("unstage/{driver}/{handle}");
        let outcome = state.run(&key, move || {
            if caps.stage_unstage {
                client?
                    .unstage(&handle_owned, &staging.to_string_lossy())
                    .map_err(|e| format!("UnmountDevice failed: {e}"))?;
            }
            if is_mount_point(&staging) {
                return Err(format!(
                    "UnmountDevice failed: {} is still mounted after NodeUnstageVolume",
                    staging.display()
                ));
            }
            let _ = std::fs::remove_dir(&staging);
            let _ = std::fs::remove_file(parent.join(VOL_DATA));
            remove_dir_if_empty(&parent);
            Ok(())
        });
        match outcome {
            None => Ok(false),
            Some(Err(message)) => Err(VolumeError::Csi { message }),
            Some(Ok(())) => {
                forget();
                Ok(true)
            }
        }
    }

    /// Whether any pod directory still publishes `driver`'s volume `handle`.
    fn published_anywhere(&self, driver: &str, handle: &str) -> bool {
        self.csi_publish_dirs().iter().any(|dir| {
            read_vol_data(dir).is_some_and(|d| {
                d.get("driverName").map(String::as_str) == Some(driver)
                    && d.get("volumeHandle").map(String::as_str) == Some(handle)
            })
        })
    }

    /// Every `<root>/pods/*/volumes/kubernetes.io~csi/*` directory.
    fn csi_publish_dirs(&self) -> Vec<PathBuf> {
        let Ok(pods) = std::fs::read_dir(self.root_dir.join("pods")) else {
            return Vec::new();
        };
        pods.flatten()
            .filter_map(|p| std::fs::read_dir(p.path().join("volumes/kubernetes.io~csi")).ok())
            .flat_map(|d| d.flatten().map(|e| e.path()))
            .collect()
    }

    /// The attachable CSI volumes to report in `node.status.volumesInUse`, sorted: those set
    /// up or being set up, and those still published on disk (after a restart) until they
    /// are torn down.
    pub fn volumes_in_use(&self) -> Vec<String> {
        let Some(state) = self.csi.as_ref() else {
            return Vec::new();
        };
        let mut names: BTreeSet<String> = state
            .attachable
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        for dir in self.csi_publish_dirs() {
            if let Some(data) = read_vol_data(&dir) {
                if data.get("attachmentID").is_some_and(|a| !a.is_empty()) {
                    names.insert(csi::unique_volume_name(
                        data.get("driverName").map_or("", String::as_str),
                        data.get("volumeHandle").map_or("", String::as_str),
                    ));
                }
            }
        }
        names.into_iter().collect()
    }

    /// The node status reported `names` in `volumesInUse`: their mounts may go on.
    pub fn mark_volumes_reported_in_use(&self, names: &[String]) {
        if let Some(state) = self.csi.as_ref() {
            if let Ok(mut reported) = state.reported.lock() {
                *reported = names.iter().cloned().collect();
            }
        }
    }

    /// `NodeGetVolumeStats` of a CSI claim volume, when its driver offers it.
    pub(super) fn csi_usage(&self, r: &crate::volume::manager::CsiRef) -> Option<VolumeUsage> {
        let state = self.csi.as_ref()?;
        let caps = state.drivers.capabilities(&r.driver).ok()?;
        if !caps.volume_stats {
            return None;
        }
        let staging = if caps.stage_unstage {
            r.staging.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let answer = state
            .drivers
            .client(&r.driver)
            .ok()?
            .volume_stats(&r.handle, &r.target.to_string_lossy(), &staging)
            .map_err(|e| log::debug!("NodeGetVolumeStats of {}: {e}", r.handle))
            .ok()?;
        let mut usage = VolumeUsage::default();
        for u in answer.get_usage() {
            let clamp = |v: i64| u64::try_from(v).ok();
            let figures = (
                clamp(u.get_available()),
                clamp(u.get_total()),
                clamp(u.get_used()),
            );
            match u.get_unit() {
                proto::VolumeUsage_Unit::BYTES => {
                    (
                        usage.available_bytes,
                        usage.capacity_bytes,
                        usage.used_bytes,
                    ) = figures;
                }
                proto::VolumeUsage_Unit::INODES => {
                    (usage.inodes_free, usage.inodes, usage.inodes_used) = figures;
                }
                _ => {}
            }
        }
        Some(usage)
    }
}
