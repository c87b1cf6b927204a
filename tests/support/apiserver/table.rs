//! `meta.k8s.io/v1 Table` answers for kubectl's default output (it asks with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`). The columns follow kube-apiserver's
//! printers for pods, nodes, events, namespaces and leases; the cell values are simplified
//! (e.g. the pod STATUS column knows the common reasons, not every corner of `printPod`).

use serde_json::{json, Value};

use super::meta::{human_age, parse_time, str_at, unix_now};
use super::resources::Resource;

/// One column: name, type, priority (1 = shown only with `-o wide`), description.
type Column = (&'static str, &'static str, u8, &'static str);

fn columns(resource: Resource) -> Vec<Column> {
    let name: Column = (
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age: Column = ("Age", "string", 0, "Time since the object was created.");
    match resource {
        Resource::Pods => vec![
            name,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age,
            ("IP", "string", 1, "IP address allocated to the pod."),
            (
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "Nominated node name, if any.",
            ),
            ("Readiness Gates", "string", 1, "Pod readiness gates."),
        ],
        Resource::Nodes => vec![
            name,
            ("Status", "string", 0, "The status of the node."),
            ("Roles", "string", 0, "The roles of the node."),
            age,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            ("Internal-IP", "string", 1, "The node's internal IP."),
            ("External-IP", "string", 1, "The node's external IP."),
            ("OS-Image", "string", 1, "OS image reported by the node."),
            (
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            (
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ],
        Resource::Events => vec![
            (
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            ("Type", "string", 0, "Type of this event (Normal, Warning)."),
            ("Reason", "string", 0, "Why the action was taken."),
            ("Object", "string", 0, "The object this event is about."),
            ("Message", "string", 0, "A human-readable description."),
        ],
        Resource::Namespaces => vec![
            name,
            ("Status", "string", 0, "The status of the namespace."),
            age,
        ],
        Resource::Leases => vec![
            name,
            ("Holder", "string", 0, "The holder of the lease."),
            age,
        ],
        Resource::ConfigMaps => vec![
            name,
            ("Data", "string", 0, "Number of keys in the config map."),
            age,
        ],
        Resource::Secrets => vec![
            name,
            ("Type", "string", 0, "The type of the secret."),
            ("Data", "string", 0, "Number of keys in the secret."),
            age,
        ],
        Resource::Services => vec![
            name,
            ("Type", "string", 0, "The type of the service."),
            ("Cluster-IP", "string", 0, "The cluster IP of the service."),
            age,
        ],
        Resource::RuntimeClasses => vec![
            name,
            ("Handler", "string", 0, "The name of the CRI handler."),
            age,
        ],
        Resource::PersistentVolumeClaims => vec![
            name,
            ("Status", "string", 0, "The phase of the claim."),
            ("Volume", "string", 0, "The volume the claim is bound to."),
            ("Capacity", "string", 0, "The size of the bound volume."),
            (
                "Access Modes",
                "string",
                0,
                "The access modes of the bound volume.",
            ),
            (
                "StorageClass",
                "string",
                0,
                "The storage class of the claim.",
            ),
            age,
        ],
        Resource::PersistentVolumes => vec![
            name,
            ("Capacity", "string", 0, "The size of the volume."),
            (
                "Access Modes",
                "string",
                0,
                "The access modes of the volume.",
            ),
            (
                "Reclaim Policy",
                "string",
                0,
                "What happens to the volume when released.",
            ),
            ("Status", "string", 0, "The phase of the volume."),
            ("Claim", "string", 0, "The claim the volume is bound to."),
            (
                "StorageClass",
                "string",
                0,
                "The storage class of the volume.",
            ),
            age,
        ],
        Resource::CsiDrivers => vec![
            name,
            (
                "AttachRequired",
                "boolean",
                0,
                "Whether volumes are attached first.",
            ),
            (
                "PodInfoOnMount",
                "boolean",
                0,
                "Whether pod information is passed on mount.",
            ),
            ("Modes", "string", 0, "The volume lifecycle modes."),
            age,
        ],
        Resource::CsiNodes => vec![
            name,
            ("Drivers", "integer", 0, "The number of registered drivers."),
            age,
        ],
        Resource::VolumeAttachments => vec![
            name,
            ("Attacher", "string", 0, "The driver attaching the volume."),
            ("PV", "string", 0, "The volume attached."),
            ("Node", "string", 0, "The node it is attached to."),
            ("Attached", "boolean", 0, "Whether it is attached."),
            age,
        ],
        Resource::CertificateSigningRequests => vec![
            name,
            age,
            ("SignerName", "string", 0, "The signer of the request."),
            ("Requestor", "string", 0, "The user who made the request."),
            (
                "RequestedDuration",
                "string",
                0,
                "The validity the request asked for.",
            ),
            ("Condition", "string", 0, "The conditions of the request."),
        ],
    }
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text.to_string()
    }
}

fn age_of(obj: &Value, pointer: &str, now: i64) -> String {
    parse_time(str_at(obj, pointer))
        .map(|t| human_age(t, now))
        .unwrap_or_else(|| "<unknown>".to_string())
}

fn cells(resource: Resource, obj: &Value, now: i64) -> Vec<Value> {
    let name = str_at(obj, "/metadata/name");
    let age = age_of(obj, "/metadata/creationTimestamp", now);
    match resource {
        Resource::Pods => pod_cells(obj, age),
        Resource::Nodes => node_cells(obj, age),
        Resource::Events => {
            let seen = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .into_iter()
            .find(|p| !str_at(obj, p).is_empty())
            .map(|p| age_of(obj, p, now))
            .unwrap_or_else(|| "<unknown>".to_string());
            let object = format!(
                "{}/{}",
                str_at(obj, "/involvedObject/kind").to_lowercase(),
                str_at(obj, "/involvedObject/name")
            );
            let [kind, reason, message] = ["/type", "/reason", "/message"].map(|p| str_at(obj, p));
            vec![
                json!(seen),
                json!(kind),
                json!(reason),
                json!(object),
                json!(message),
            ]
        }
        Resource::Namespaces => vec![json!(name), json!(str_at(obj, "/status/phase")), json!(age)],
        Resource::Leases => vec![
            json!(name),
            json!(or_none(str_at(obj, "/spec/holderIdentity"))),
            json!(age),
        ],
        Resource::ConfigMaps => {
            let keys = key_count(obj, "/data") + key_count(obj, "/binaryData");
            vec![json!(name), json!(keys), json!(age)]
        }
        Resource::Secrets => vec![
            json!(name),
            json!(str_at(obj, "/type")),
            json!(key_count(obj, "/data")),
            json!(age),
        ],
        Resource::Services => vec![
            json!(name),
            json!(str_at(obj, "/spec/type")),
            json!(or_none(str_at(obj, "/spec/clusterIP"))),
            json!(age),
        ],
        Resource::RuntimeClasses => vec![json!(name), json!(str_at(obj, "/handler")), json!(age)],
        Resource::PersistentVolumeClaims => vec![
            json!(name),
            json!(str_at(obj, "/status/phase")),
            json!(str_at(obj, "/spec/volumeName")),
            json!(str_at(obj, "/status/capacity/storage")),
            json!(access_modes(obj, "/status/accessModes")),
            json!(str_at(obj, "/spec/storageClassName")),
            json!(age),
        ],
        Resource::PersistentVolumes => {
            let claim = match str_at(obj, "/spec/claimRef/name") {
                "" => String::new(),
                claim => format!("{}/{claim}", str_at(obj, "/spec/claimRef/namespace")),
            };
            vec![
                json!(name),
                json!(str_at(obj, "/spec/capacity/storage")),
                json!(access_modes(obj, "/spec/accessModes")),
                json!(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(str_at(obj, "/status/phase")),
                json!(claim),
                json!(str_at(obj, "/spec/storageClassName")),
                json!(age),
            ]
        }
        Resource::CsiDrivers => {
            let modes: Vec<&str> = obj
                .pointer("/spec/volumeLifecycleModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            vec![
                json!(name),
                obj.pointer("/spec/attachRequired")
                    .cloned()
                    .unwrap_or(json!(true)),
                obj.pointer("/spec/podInfoOnMount")
                    .cloned()
                    .unwrap_or(json!(false)),
                json!(modes.join(",")),
                json!(age),
            ]
        }
        Resource::CsiNodes => {
            let drivers = obj
                .pointer("/spec/drivers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![json!(name), json!(drivers), json!(age)]
        }
        Resource::VolumeAttachments => vec![
            json!(name),
            json!(str_at(obj, "/spec/attacher")),
            json!(str_at(obj, "/spec/source/persistentVolumeName")),
            json!(str_at(obj, "/spec/nodeName")),
            obj.pointer("/status/attached")
                .cloned()
                .unwrap_or(json!(false)),
            json!(age),
        ],
        Resource::CertificateSigningRequests => {
            let mut condition: Vec<&str> = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("type").and_then(Value::as_str))
                .collect();
            if !str_at(obj, "/status/certificate").is_empty() {
                condition.push("Issued");
            }
            let condition = if condition.is_empty() {
                "Pending".to_string()
            } else {
                condition.join(",")
            };
            let duration = obj
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(|s| human_age(0, s))
                .unwrap_or_else(|| "<none>".to_string());
            vec![
                json!(name),
                json!(age),
                json!(str_at(obj, "/spec/signerName")),
                json!(str_at(obj, "/spec/username")),
                json!(duration),
                json!(condition),
            ]
        }
    }
}

/// How many keys the map at `pointer` has (0 if absent).
fn key_count(obj: &Value, pointer: &str) -> usize {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |map| map.len())
}

fn pod_cells(pod: &Value, age: String) -> Vec<Value> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|s| s["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    vec![
        json!(str_at(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod, &statuses)),
        json!(restarts.to_string()),
        json!(age),
        json!(or_none(str_at(pod, "/status/podIP"))),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
        json!(if gates == 0 {
            "<none>".to_string()
        } else {
            format!("0/{gates}")
        }),
    ]
}

/// The STATUS column: the phase, overridden by the first container's waiting or terminated
/// reason, `Init:` states while init containers run, and `Terminating` once deleted.
fn pod_status(pod: &Value, statuses: &[Value]) -> String {
    let mut reason = match str_at(pod, "/status/reason") {
        "" => str_at(pod, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let init = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init_done = init
        .iter()
        .filter(|s| s.pointer("/state/terminated/exitCode") == Some(&json!(0)))
        .count();
    let mut initializing = false;
    if let Some(waiting) = init.iter().find_map(|s| s.pointer("/state/waiting/reason")) {
        initializing = true;
        reason = format!("Init:{}", waiting.as_str().unwrap_or(""));
    } else if init_done < init.len() {
        initializing = true;
        reason = format!("Init:{init_done}/{}", init.len());
    }
    if !initializing {
        for status in statuses.iter().rev() {
            let waiting = str_at(status, "/state/waiting/reason");
            let terminated = str_at(status, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if !terminated.is_empty() {
                reason = terminated.to_string();
            }
        }
    }
    if !str_at(pod, "/metadata/deletionTimestamp").is_empty() && reason != "NodeLost" {
        reason = "Terminating".to_string();
    }
    reason
}

fn node_cells(node: &Value, age: String) -> Vec<Value> {
    let conditions = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    let mut status = match ready.map(|c| str_at(c, "/status")) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => Some(role.to_string()),
                _ if key == "kubernetes.io/role" => value.as_str().map(str::to_string),
                _ => None,
            },
        )
        .collect();
    roles.sort();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find(|a| a["type"] == kind))
            .map(|a| str_at(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| or_none(str_at(node, &format!("/status/nodeInfo/{field}")));
    vec![
        json!(str_at(node, "/metadata/name")),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// The table of `objects`. `include_object` is the request's `includeObject` (`None`,
/// `Object`, or the default `Metadata`); `api_version` is `meta.k8s.io/v1` or `.../v1beta1`.
pub fn table(
    resource: Resource,
    objects: &[Value],
    resource_version: u64,
    include_object: Option<&str>,
    api_version: &str,
) -> Value {
    let now = unix_now();
    let column_definitions: Vec<Value> = columns(resource)
        .into_iter()
        .map(|(name, kind, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({ "name": name, "type": kind, "format": format, "description": description, "priority": priority })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({ "cells": cells(resource, obj, now) });
            match include_object {
                Some("None") => {}
                Some("Object") => row["object"] = obj.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": api_version,
                        "metadata": obj["metadata"].clone(),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": { "resourceVersion": resource_version.to_string() },
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// kubectl's short forms of access modes (`RWO,ROX`).
fn access_modes(obj: &Value, pointer: &str) -> String {
    let modes: Vec<&str> = obj
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    modes.join(",")
}
