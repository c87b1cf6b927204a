//! Choosing devices for containers at admission (upstream `allocateContainerResources` and
//! `devicesToAllocate`) and what the chosen devices add to a container's CRI config.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{pod_uid, Allocation, Choice, DeviceManager, RunOptions, NO_NUMA};

/// A container's whole-number request of `resource` (extended resources are set in limits;
/// requests equal them).
fn container_count(container: &Container, resource: &str) -> usize {
    let resources = container.resources.as_ref();
    let quantity = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource))
        .or_else(|| {
            resources
                .and_then(|r| r.requests.as_ref())
                .and_then(|l| l.get(resource))
        });
    quantity
        .and_then(|q| crate::quantity::parse_value(&q.0).ok())
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
}

/// The extended resources a container names.
fn container_resources(container: &Container) -> BTreeSet<String> {
    let resources = container.resources.as_ref();
    resources
        .and_then(|r| r.limits.as_ref())
        .into_iter()
        .chain(resources.and_then(|r| r.requests.as_ref()))
        .flat_map(|m| m.keys())
        .filter(|k| k.contains('/'))
        .cloned()
        .collect()
}

impl DeviceManager {
    /// Gives every container of `pod` the devices it asks for (admission). `active` is the
    /// set of pods that still hold devices, or `None` while the pod sources are not all read
    /// (nothing is released then, as upstream). The error is upstream's admission message.
    pub fn allocate(&self, pod: &Pod, active: Option<&HashSet<String>>) -> Result<(), String> {
        if let Some(active) = active {
            let mut keep = active.clone();
            keep.insert(pod_uid(pod));
            self.retain_pods(&keep);
        }
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
        for (container, is_init) in inits.chain(spec.containers.iter().map(|c| (c, false))) {
            // Sidecars keep running, so their devices are never handed on.
            let donates = is_init && container.restart_policy.as_deref() != Some("Always");
            self.allocate_container(pod, container, donates)
                .map_err(|e| format!("Allocate failed due to {e}, which is unexpected"))?;
        }
        Ok(())
    }

    /// Allocates the devices of one container (upstream `allocateContainerResources`).
    fn allocate_container(
        &self,
        pod: &Pod,
        container: &Container,
        donates: bool,
    ) -> Result<(), String> {
        let uid = pod_uid(pod);
        for resource in container_resources(container) {
            let needed = container_count(container, &resource);
            if needed == 0 || !self.state().is_device_resource(&resource) {
                continue;
            }
            let Some((ids, plugin)) =
                self.devices_to_allocate(&uid, container, &resource, needed)?
            else {
                continue;
            };
            let result = plugin
                .allocate(&ids.iter().cloned().collect::<Vec<_>>())
                .map_err(|e| format!("device plugin {resource} Allocate: {e}"));
            let mut state = self.state();
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    drop(state);
                    return Err(e);
                }
            };
            let numa_of = |id: &String| {
                state
                    .resources
                    .get(&resource)
                    .and_then(|r| r.devices.get(id))
                    .map(|d| d.numa.clone())
                    .unwrap_or_default()
            };
            let mut devices: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            for id in &ids {
                let numa = numa_of(id);
                if numa.is_empty() {
                    devices.entry(NO_NUMA).or_default().push(id.clone());
                }
                for node in numa {
                    devices.entry(node).or_default().push(id.clone());
                }
            }
            let reusable = state.reusable.entry(uid.clone()).or_default();
            let pool = reusable.entry(resource.clone()).or_default();
            if donates {
                pool.extend(ids.iter().cloned());
            } else {
                pool.retain(|id| !ids.contains(id));
            }
            state
                .pods
                .entry(uid.clone())
                .or_default()
                .entry(container.name.clone())
                .or_default()
                .insert(resource.clone(), Allocation { devices, response });
            log::info!(
                "device manager: pod uid={uid} container={} given {resource} {:?}",
                container.name,
                ids
            );
            self.write_checkpoint(&state);
        }
        Ok(())
    }

    /// Which devices to give: `None` when the container holds them already.
    fn devices_to_allocate(
        &self,
        uid: &str,
        container: &Container,
        resource: &str,
        needed: usize,
    ) -> Result<Option<Choice>, String> {
        let state = self.state();
        if let Some(held) = state
            .pods
            .get(uid)
            .and_then(|c| c.get(&container.name))
            .and_then(|r| r.get(resource))
        {
            let count = held.ids().len();
            if count != needed {
                return Err(format!(
                    "pod {uid:?} container {:?} changed request for resource {resource:?} from {count} to {needed}",
                    container.name
                ));
            }
            return Ok(None);
        }
        let Some(entry) = state.resources.get(resource) else {
            return Err(format!("cannot allocate unregistered device {resource}"));
        };
        let in_use = state.in_use(resource);
        let reusable: BTreeSet<String> = state
            .reusable
            .get(uid)
            .and_then(|r| r.get(resource))
            .cloned()
            .unwrap_or_default();
        let healthy: BTreeSet<String> = entry
            .devices
            .iter()
            .filter(|(_, d)| d.healthy)
            .map(|(id, _)| id.clone())
            .collect();
        // Devices a finished init container of this pod held come first.
        let mut chosen: BTreeSet<String> = reusable
            .iter()
            .filter(|id| healthy.contains(*id))
            .take(needed)
            .cloned()
            .collect();
        if chosen.len() == needed {
            if let Some(plugin) = entry.plugin.clone() {
                return Ok(Some((chosen, plugin)));
            }
        }
        let available: BTreeSet<String> = healthy
            .difference(&in_use)
            .filter(|id| !chosen.contains(*id))
            .cloned()
            .collect();
        let wanted = needed - chosen.len();
        if available.len() < wanted {
            return Err(format!(
                "requested number of devices unavailable for {resource}. Requested: {needed}, Available: {}",
                available.len() + chosen.len()
            ));
        }
        let Some(plugin) = entry.plugin.clone() else {
            return Err(format!("unknown Device Plugin {resource}"));
        };
        let preferred = entry.options.get_get_preferred_allocation_available();
        drop(state);
        if preferred {
            let all: BTreeSet<String> = available.union(&chosen).cloned().collect();
            match plugin.preferred_allocation(&all, &chosen, needed) {
                // The plugin's choice counts only if it is a valid one.
                Ok(ids)
                    if ids.len() == needed
                        && ids.iter().all(|id| all.contains(id))
                        && chosen.iter().all(|id| ids.contains(id)) =>
                {
                    return Ok(Some((ids, plugin)));
                }
                Ok(ids) => log::warn!(
                    "device manager: {resource} GetPreferredAllocation answered {ids:?}, not {needed} of the available devices: choosing another way"
                ),
                Err(e) => log::warn!(
                    "device manager: {resource} GetPreferredAllocation: {e}: choosing another way"
                ),
            }
        }
        chosen.extend(available.into_iter().take(wanted));
        Ok(Some((chosen, plugin)))
    }

    /// What CRI needs for the devices of `container` (upstream `GetDeviceRunContainerOptions`):
    /// calls `PreStartContainer` where the plugin asked for it, and allocates again if the
    /// container's devices were not recorded (a lost checkpoint).
    pub fn run_options(&self, pod: &Pod, container: &Container) -> Result<RunOptions, String> {
        let uid = pod_uid(pod);
        let mut missing = false;
        for resource in container_resources(container) {
            if container_count(container, &resource) == 0
                || !self.state().is_device_resource(&resource)
            {
                continue;
            }
            let (held, pre_start) = {
                let state = self.state();
                let held = state
                    .pods
                    .get(&uid)
                    .and_then(|c| c.get(&container.name))
                    .and_then(|r| r.get(&resource))
                    .map(Allocation::ids);
                let pre_start = state
                    .resources
                    .get(&resource)
                    .map(|r| (r.options.get_pre_start_required(), r.plugin.clone()));
                (held, pre_start)
            };
            let Some(held) = held else {
                missing = true;
                continue;
            };
            match pre_start {
                Some((false, _)) => {}
                Some((true, Some(plugin))) => plugin
                    .pre_start(&held.into_iter().collect::<Vec<_>>())
                    .map_err(|e| format!("device plugin {resource} PreStartContainer: {e}"))?,
                Some((true, None)) | None => {
                    return Err(format!(
                        "endpoint not found in cache for a registered resource: {resource}"
                    ))
                }
            }
        }
        if missing {
            log::info!(
                "device manager: pod uid={uid} container={} has no recorded devices: allocating again",
                container.name
            );
            self.allocate_container(pod, container, false)?;
        }
        let state = self.state();
        let allocations: Vec<(&String, &Allocation)> = state
            .pods
            .get(&uid)
            .and_then(|c| c.get(&container.name))
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        Ok(super::options::merge(&allocations))
    }
}
