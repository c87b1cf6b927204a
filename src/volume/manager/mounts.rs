//! The CRI mounts of one container: its `volumeMounts` resolved against the pod's set-up
//! volumes, and the managed `/etc/hosts`.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodVolumes;
use crate::cri::api;
use crate::volume::projection::field_ref_value;
use crate::volume::VolumeError;

/// The mounts [`VolumeManager::container_mounts`](super::VolumeManager::container_mounts)
/// returns.
pub(super) fn container_mounts(
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::pod;
    use super::*;

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
