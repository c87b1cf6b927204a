//! What a container's device allocations add to its CRI config (upstream
//! `deviceRunContainerOptions`): envs, mounts, device nodes, CDI devices and annotations,
//! merged over the container's resources with the first of each name or path kept.

use std::collections::{BTreeMap, BTreeSet};

use super::Allocation;
use crate::cri::api;

/// The CRI additions for one container's devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// Environment variables, before the container's own.
    pub envs: Vec<(String, String)>,
    /// Host paths to mount, before the container's volumes.
    pub mounts: Vec<api::Mount>,
    /// Device nodes.
    pub devices: Vec<api::Device>,
    /// CDI device names.
    pub cdi_devices: Vec<String>,
    /// Annotations for the runtime (the kubelet's own win over these).
    pub annotations: BTreeMap<String, String>,
}

impl RunOptions {
    /// Whether there is nothing to add.
    pub fn is_empty(&self) -> bool {
        *self == RunOptions::default()
    }

    /// Adds these to `config` (envs go through [`RunOptions::envs`] before the config is
    /// built, so `$(VAR)` expansion sees them).
    pub fn apply(&self, config: &mut api::ContainerConfig) {
        let mut mounts: Vec<api::Mount> = self.mounts.clone();
        mounts.extend(config.take_mounts().into_iter());
        config.set_mounts(mounts.into());
        config.mut_devices().extend(self.devices.iter().cloned());
        for name in &self.cdi_devices {
            let mut cdi = api::CDIDevice::new();
            cdi.set_name(name.clone());
            config.mut_CDI_devices().push(cdi);
        }
        let annotations = config.mut_annotations();
        for (k, v) in &self.annotations {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Merges the allocations of one container, in resource-name order.
pub fn merge(allocations: &[(&String, &Allocation)]) -> RunOptions {
    let mut out = RunOptions::default();
    let mut env_seen: BTreeMap<String, String> = BTreeMap::new();
    let mut mount_paths = BTreeSet::new();
    let mut device_paths = BTreeSet::new();
    let mut cdi_seen = BTreeSet::new();
    for (resource, allocation) in allocations {
        let r = &allocation.response;
        let envs: BTreeMap<&String, &String> = r.get_envs().iter().collect();
        for (k, v) in envs {
            match env_seen.get(k) {
                Some(old) if old != v => log::warn!(
                    "device manager: {resource} sets env {k}={v:?}, already {old:?}: keeping the first"
                ),
                Some(_) => {}
                None => {
                    env_seen.insert(k.clone(), v.clone());
                    out.envs.push((k.clone(), v.clone()));
                }
            }
        }
        for m in r.get_mounts() {
            if !mount_paths.insert(m.get_container_path().to_string()) {
                log::warn!(
                    "device manager: {resource} mount at {} already given: skipped",
                    m.get_container_path()
                );
                continue;
            }
            let mut mount = api::Mount::new();
            mount.set_container_path(m.get_container_path().to_string());
            mount.set_host_path(m.get_host_path().to_string());
            mount.set_readonly(m.get_read_only());
            out.mounts.push(mount);
        }
        for d in r.get_devices() {
            if !device_paths.insert(d.get_container_path().to_string()) {
                log::warn!(
                    "device manager: {resource} device at {} already given: skipped",
                    d.get_container_path()
                );
                continue;
            }
            let mut device = api::Device::new();
            device.set_container_path(d.get_container_path().to_string());
            device.set_host_path(d.get_host_path().to_string());
            device.set_permissions(d.get_permissions().to_string());
            out.devices.push(device);
        }
        for c in r.get_cdi_devices() {
            if cdi_seen.insert(c.get_name().to_string()) {
                out.cdi_devices.push(c.get_name().to_string());
            }
        }
        for (k, v) in r.get_annotations() {
            out.annotations
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
    out
}
