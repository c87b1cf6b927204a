//! The versions and platform in `nodeInfo` (upstream `VersionInfo` and `GoRuntime`).

use k8s_openapi::api::core::v1::Node;

use super::{node_info_mut, status_mut};
use crate::nodestatus::NodeStatusInputs;

/// Kernel, OS image, runtime and kubelet versions (upstream `VersionInfo`).
/// `containerRuntimeVersion` is `<runtime_name>://<version>` with the version's leading `v`
/// dropped as upstream's semantic-version parse does (`containerd://1.6.20`), `Unknown`
/// when CRI `Version` failed. `kubeProxyVersion` stays empty: since KEP-4004
/// (`DisableNodeKubeProxyVersion`, on by default for the Kubernetes version of our API
/// types) the kubelet no longer claims to know it.
pub fn version_info(node: &mut Node, inputs: &NodeStatusInputs) {
    let info = node_info_mut(status_mut(node));
    info.kernel_version
        .clone_from(&inputs.machine.kernel_version);
    info.os_image.clone_from(&inputs.machine.os_image);
    let version = match inputs.runtime_version.as_deref() {
        Some(v) => v
            .strip_prefix('v')
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(v),
        None => "Unknown",
    };
    info.container_runtime_version = format!("{}://{version}", inputs.runtime_name);
    info.kubelet_version.clone_from(&inputs.kubelet_version);
    info.kube_proxy_version = String::new();
}

/// `operatingSystem` and `architecture` (upstream `GoRuntime`).
pub fn go_runtime(node: &mut Node, inputs: &NodeStatusInputs) {
    let info = node_info_mut(status_mut(node));
    info.operating_system
        .clone_from(&inputs.machine.operating_system);
    info.architecture.clone_from(&inputs.machine.architecture);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::setters::fixtures::{apply, reference_inputs, status};

    #[test]
    fn versions() {
        let cases = [
            (Some("v1.6.20"), "containerd://1.6.20"),
            (Some("1.28.1"), "containerd://1.28.1"),
            (Some("vNext"), "containerd://vNext"),
            (None, "containerd://Unknown"),
        ];
        for (version, want) in cases {
            let mut inputs = reference_inputs();
            inputs.runtime_version = version.map(String::from);
            let mut node = apply(version_info, &inputs);
            go_runtime(&mut node, &inputs);
            let info = status(&node).node_info.as_ref().unwrap();
            assert_eq!(info.container_runtime_version, want);
            assert_eq!(info.kernel_version, "6.18.44-fc-v669");
            assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
            assert_eq!(
                info.kubelet_version,
                format!("v1.33.0+rkubelet-{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(info.kube_proxy_version, "");
            assert_eq!(
                (info.operating_system.as_str(), info.architecture.as_str()),
                ("linux", "amd64")
            );
        }
    }
}
