//! Where the node is reached: its `addresses` and the kubelet's port in
//! `daemonEndpoints`.

use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints};

use super::status_mut;
use crate::nodestatus::NodeStatusInputs;

/// `InternalIP` for each node IP, then `Hostname` (upstream `NodeAddress` without a cloud
/// provider).
pub fn node_address(node: &mut Node, inputs: &NodeStatusInputs) {
    if inputs.node_ips.is_empty() {
        log::error!(
            "Failed to set some node status fields: can't get ip address of node {}",
            node.metadata.name.as_deref().unwrap_or_default()
        );
        return;
    }
    let mut addresses: Vec<NodeAddress> = inputs
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".to_string(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".to_string(),
        address: inputs.hostname.clone(),
    });
    status_mut(node).addresses = Some(addresses);
}

/// `daemonEndpoints.kubeletEndpoint.Port` (upstream `DaemonEndpoints`).
pub fn daemon_endpoints(node: &mut Node, inputs: &NodeStatusInputs) {
    status_mut(node).daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(inputs.kubelet_port),
        }),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::setters::fixtures::{apply, reference_inputs, status};

    #[test]
    fn addresses_internal_ip_then_hostname() {
        let node = apply(node_address, &reference_inputs());
        let got: Vec<_> = status(&node)
            .addresses
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [("InternalIP", "192.0.2.2"), ("Hostname", "rust-node")]
        );
        // No IP: the previous addresses stay.
        let mut inputs = reference_inputs();
        inputs.node_ips.clear();
        let mut kept = node.clone();
        node_address(&mut kept, &inputs);
        assert_eq!(kept, node);
    }

    #[test]
    fn kubelet_endpoint_port() {
        let mut inputs = reference_inputs();
        let node = apply(daemon_endpoints, &inputs);
        let json = serde_json::to_value(status(&node).daemon_endpoints.as_ref().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kubeletEndpoint": {"Port": 10250}})
        );
        inputs.kubelet_port = 10255;
        let node = apply(daemon_endpoints, &inputs);
        let port = status(&node)
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port;
        assert_eq!(port, 10255);
    }
}
