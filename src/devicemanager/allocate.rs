//! Choosing devices for containers at admission (upstream `allocateContainerResources` and
//! `devicesToAllocate`) and what the chosen devices add to a container's CRI config.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};

use std::sync::Arc;

use super::{pod_uid, Allocation, DeviceManager, PluginApi, RunOptions, NO_NUMA};

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
    /// Gives every container of `pod` the devices it asks for (admission), after giving
    /// back those of the `finished` pods. A container found running when the kubelet started
    /// keeps what it has (upstream's kubelet-restart case). The error is upstream's admission
    /// message.
    pub fn allocate(&self, pod: &Pod, finished: &HashSet<String>) -> Result<(), String> {
        self.release_pods(finished);
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let uid = pod_uid(pod);
        let running: HashSet<String> = {
            let mut state = self.state();
            let names = state
                .running
                .iter()
                .filter(|(u, _)| *u == uid)
                .map(|(_, name)| name.clone())
                .collect();
            // Admitted once after the start: later starts of its containers are new ones.
            state.running.retain(|(u, _)| *u != uid);
            names
        };
        let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
        for (container, is_init) in inits.chain(spec.containers.iter().map(|c| (c, false))) {
            // Sidecars keep running, so their devices are never handed on.
            let donates = is_init && container.restart_policy.as_deref() != Some("Always");
            let was_running = running.contains(&container.name);
            self.allocate_container(pod, container, donates, was_running)
                .map_err(|e| format!("Allocate failed due to {e}, which is unexpected"))?;
        }
        Ok(())
    }

    /// Allocates the devices of one container (upstream `allocateContainerResources`): the
    /// choice is reserved before the plugin is asked, and recorded (checkpoint written) before
    /// this returns, so a container never starts with devices the checkpoint does not hold.
    pub(super) fn allocate_container(
        &self,
        pod: &Pod,
        container: &Container,
        donates: bool,
        was_running: bool,
    ) -> Result<(), String> {
        let uid = pod_uid(pod);
        for resource in container_resources(container) {
            let needed = container_count(container, &resource);
            if needed == 0 || !self.state().is_device_resource(&resource) {
                continue;
            }
            let chosen = self.devices_to_allocate(&uid, container, &resource, needed, was_running);
            let (ids, plugin) = match chosen {
                Ok(Chosen::Held(ids)) => {
                    self.pass_on(&uid, &resource, &ids, donates);
                    continue;
                }
                Ok(Chosen::New(ids, plugin)) => (ids, plugin),
                Err(e) => return Err(e),
            };
            let result = plugin
                .allocate(&ids.iter().cloned().collect::<Vec<_>>())
                .map_err(|e| format!("device plugin {resource} Allocate: {e}"));
            let mut state = self.state();
            if let Some(reserved) = state.reserved.get_mut(&resource) {
                reserved.retain(|id| !ids.contains(id));
            }
            let response = result?;
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
            state
                .pods
                .entry(uid.clone())
                .or_default()
                .entry(container.name.clone())
                .or_default()
                .insert(resource.clone(), Allocation { devices, response });
            if let Err(e) = self.write_checkpoint(&state) {
                // Not on disk: not given (upstream fails the allocation the same way).
                if let Some(c) = state
                    .pods
                    .get_mut(&uid)
                    .and_then(|c| c.get_mut(&container.name))
                {
                    c.remove(&resource);
                }
                return Err(format!("writing the device checkpoint: {e}"));
            }
            drop(state);
            self.pass_on(&uid, &resource, &ids, donates);
            log::info!(
                "device manager: pod uid={uid} container={} given {resource} {:?}",
                container.name,
                ids
            );
        }
        Ok(())
    }

    /// Records the devices of a finished-before-the-others init container as reusable by the
    /// pod's later containers (`donates`), or takes a later container's devices out of them.
    fn pass_on(&self, uid: &str, resource: &str, ids: &BTreeSet<String>, donates: bool) {
        let mut state = self.state();
        let pool = state
            .reusable
            .entry(uid.to_string())
            .or_default()
            .entry(resource.to_string())
            .or_default();
        if donates {
            pool.extend(ids.iter().cloned());
        } else {
            pool.retain(|id| !ids.contains(id));
        }
    }

    /// Which devices to give (upstream `devicesToAllocate`, its checks in its order).
    fn devices_to_allocate(
        &self,
        uid: &str,
        container: &Container,
        resource: &str,
        needed: usize,
        was_running: bool,
    ) -> Result<Chosen, String> {
        let mut state = self.state();
        let held = state
            .pods
            .get(uid)
            .and_then(|c| c.get(&container.name))
            .and_then(|r| r.get(resource))
            .map(Allocation::ids);
        if let Some(held) = &held {
            if held.len() != needed {
                return Err(format!(
                    "pod {uid:?} container {:?} changed request for resource {resource:?} from {} to {needed}",
                    container.name,
                    held.len()
                ));
            }
        }
        // A kubelet restart: a container still running keeps what it runs with.
        if was_running {
            return Ok(Chosen::Held(held.unwrap_or_default()));
        }
        let Some(entry) = state.resources.get(resource) else {
            return Err(format!("cannot allocate unregistered device {resource}"));
        };
        let healthy: BTreeSet<String> = entry
            .devices
            .iter()
            .filter(|(_, d)| d.healthy)
            .map(|(id, _)| id.clone())
            .collect();
        if healthy.is_empty() {
            return Err(format!(
                "no healthy devices present; cannot allocate unhealthy devices {resource}"
            ));
        }
        if let Some(held) = held {
            if !held.is_subset(&healthy) {
                return Err(format!(
                    "previously allocated devices are no longer healthy; cannot allocate unhealthy devices {resource}"
                ));
            }
            return Ok(Chosen::Held(held));
        }
        let Some(plugin) = entry.plugin.clone() else {
            return Err(format!("unknown Device Plugin {resource}"));
        };
        let preferred = entry.options.get_get_preferred_allocation_available();
        let in_use = state.in_use(resource);
        // Devices a finished init container of this pod held come first.
        let mut chosen: BTreeSet<String> = state
            .reusable
            .get(uid)
            .and_then(|r| r.get(resource))
            .into_iter()
            .flatten()
            .filter(|id| healthy.contains(*id))
            .take(needed)
            .cloned()
            .collect();
        let available: BTreeSet<String> = healthy
            .difference(&in_use)
            .filter(|id| !chosen.contains(*id))
            .cloned()
            .collect();
        let wanted = needed - chosen.len();
        if available.len() < wanted {
            return Err(format!(
                "requested number of devices unavailable for {resource}. Requested: {wanted}, Available: {}",
                available.len()
            ));
        }
        if wanted > 0 && preferred {
            // The plugin is asked without the lock; what it picks is checked after.
            drop(state);
            let all: BTreeSet<String> = available.union(&chosen).cloned().collect();
            let picked = plugin
                .preferred_allocation(&all, &chosen, needed)
                .map_err(|e| format!("device plugin {resource} GetPreferredAllocation: {e}"))?;
            state = self.state();
            let in_use = state.in_use(resource);
            for id in picked.intersection(&available) {
                if chosen.len() == needed {
                    break;
                }
                if !in_use.contains(id) {
                    chosen.insert(id.clone());
                }
            }
        }
        let in_use = state.in_use(resource);
        for id in &available {
            if chosen.len() == needed {
                break;
            }
            if !in_use.contains(id) {
                chosen.insert(id.clone());
            }
        }
        if chosen.len() < needed {
            return Err(format!(
                "requested number of devices unavailable for {resource}. Requested: {wanted}, Available: {}",
                available.difference(&in_use).count()
            ));
        }
        // Held from here until the answer is recorded, so no one else takes them meanwhile.
        state
            .reserved
            .entry(resource.to_string())
            .or_default()
            .extend(chosen.iter().cloned());
        Ok(Chosen::New(chosen, plugin))
    }

    /// What CRI needs for the devices of `container` (upstream `GetDeviceRunContainerOptions`):
    /// allocates again if the container's devices were not recorded (a lost checkpoint), then
    /// calls `PreStartContainer` where the plugin asked for it.
    pub fn run_options(&self, pod: &Pod, container: &Container) -> Result<RunOptions, String> {
        let uid = pod_uid(pod);
        let resources: Vec<String> = container_resources(container)
            .into_iter()
            .filter(|r| container_count(container, r) > 0 && self.state().is_device_resource(r))
            .collect();
        let missing = {
            let state = self.state();
            let held = state.pods.get(&uid).and_then(|c| c.get(&container.name));
            resources
                .iter()
                .any(|r| held.is_none_or(|h| !h.contains_key(r)))
        };
        if missing {
            log::info!(
                "device manager: pod uid={uid} container={} has no recorded devices: allocating again",
                container.name
            );
            self.allocate_container(pod, container, false, false)?;
        }
        for resource in &resources {
            let (held, pre_start) = {
                let state = self.state();
                let held: Vec<String> = state
                    .pods
                    .get(&uid)
                    .and_then(|c| c.get(&container.name))
                    .and_then(|r| r.get(resource))
                    .map(Allocation::ids)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let pre_start = state
                    .resources
                    .get(resource)
                    .map(|r| (r.options.get_pre_start_required(), r.plugin.clone()));
                (held, pre_start)
            };
            match pre_start {
                Some((false, _)) => {}
                Some((true, Some(plugin))) => plugin
                    .pre_start(&held)
                    .map_err(|e| format!("device plugin {resource} PreStartContainer: {e}"))?,
                Some((true, None)) | None => {
                    return Err(format!(
                        "endpoint not found in cache for a registered resource: {resource}"
                    ))
                }
            }
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

/// What [`DeviceManager::devices_to_allocate`] decided.
enum Chosen {
    /// The container holds these already: nothing to ask the plugin.
    Held(BTreeSet<String>),
    /// Newly chosen (and reserved), to be allocated by this plugin.
    New(BTreeSet<String>, Arc<dyn PluginApi>),
}
