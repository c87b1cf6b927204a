//! What the kubelet knows of its own Node object: its UID (the controller owner of mirror
//! pods, which NodeRestriction checks) and its host IPs (`status.hostIP(s)` of every pod, and
//! `podIP(s)` of hostNetwork pods). Written by the `node-status` thread each time it reads or
//! writes the Node, so a recreated Node's new UID and changed addresses are picked up; read
//! by pod workers. Until the Node is seen, the host IPs are the configured or detected node
//! IPs.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Node;

/// The Node's facts, shared between the node status thread and the pod workers.
#[derive(Debug, Default)]
pub struct NodeRecord {
    /// The configured (`--node-ip`) or detected node IPs, fixed at start-up.
    node_ips: Vec<IpAddr>,
    facts: RwLock<Facts>,
}

#[derive(Debug, Default, Clone)]
struct Facts {
    uid: Option<String>,
    host_ips: Vec<String>,
}

impl NodeRecord {
    /// A record whose host IPs are `node_ips` until the Node is seen.
    pub fn new(node_ips: &[IpAddr]) -> Arc<NodeRecord> {
        Arc::new(NodeRecord {
            node_ips: node_ips.to_vec(),
            facts: RwLock::new(Facts {
                uid: None,
                host_ips: host_ips(node_ips.iter().copied()),
            }),
        })
    }

    /// Takes the UID and host IPs of `node` as the API server returned it.
    pub fn observe(&self, node: &Node) {
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        // Upstream `GetNodeHostIPs`: internal addresses first, then external ones.
        let ips = ["InternalIP", "ExternalIP"].iter().flat_map(|kind| {
            addresses
                .iter()
                .filter(move |a| a.type_ == *kind)
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
        });
        let ips = host_ips(ips);
        let mut facts = self.facts.write().unwrap_or_else(|p| p.into_inner());
        if node.metadata.uid.is_some() {
            facts.uid.clone_from(&node.metadata.uid);
        }
        if !ips.is_empty() {
            facts.host_ips = ips;
        }
    }

    /// The configured or detected node IPs (the Node's `InternalIP` addresses).
    pub fn node_ips(&self) -> &[IpAddr] {
        &self.node_ips
    }

    /// The Node's UID, once seen.
    pub fn uid(&self) -> Option<String> {
        self.read().uid
    }

    /// The host IPs: the primary one, then the first of the other IP family if any.
    pub fn host_ips(&self) -> Vec<String> {
        self.read().host_ips
    }

    fn read(&self) -> Facts {
        self.facts.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The first address, and the first one of the other family (a dual-stack pair).
fn host_ips(ips: impl Iterator<Item = IpAddr>) -> Vec<String> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(2);
    for ip in ips {
        match out.first() {
            None => out.push(ip),
            Some(first) if out.len() == 1 && first.is_ipv4() != ip.is_ipv4() => out.push(ip),
            _ => {}
        }
    }
    out.iter().map(IpAddr::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(uid: &str, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn host_ips_follow_the_node_and_its_uid_is_kept() {
        let record = NodeRecord::new(&["192.0.2.9".parse().unwrap()]);
        assert_eq!(record.host_ips(), ["192.0.2.9"]);
        assert_eq!(record.uid(), None);
        record.observe(&node(
            "u1",
            &[
                ("Hostname", "n"),
                ("ExternalIP", "198.51.100.1"),
                ("InternalIP", "10.0.0.5"),
                ("InternalIP", "10.0.0.6"),
                ("InternalIP", "fd00::5"),
            ],
        ));
        assert_eq!(record.host_ips(), ["10.0.0.5", "fd00::5"]);
        assert_eq!(record.uid().as_deref(), Some("u1"));
        // The Node was recreated.
        record.observe(&node("u2", &[("ExternalIP", "198.51.100.1")]));
        assert_eq!(record.uid().as_deref(), Some("u2"));
        assert_eq!(record.host_ips(), ["198.51.100.1"]);
    }
}
