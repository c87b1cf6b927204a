//! The file sets of API-backed volumes (upstream `MakePayload` of the configMap, secret,
//! downwardAPI and projected plugins): which files a volume holds, with which bytes and
//! modes, computed from the objects. Writing them is the [`AtomicWriter`]'s job.
//!
//! [`AtomicWriter`]: super::AtomicWriter

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ResourceFieldSelector, Secret,
};

use crate::quantity::parse_millis;

use super::atomic_writer::FileProjection;
use super::error::VolumeError;

/// Files of a volume: relative path → content and mode.
pub type Payload = BTreeMap<String, FileProjection>;

/// Default file mode of configMap, secret, downwardAPI and projected volumes (0644).
pub const DEFAULT_MODE: i32 = 0o644;

fn mode_of(mode: Option<i32>, default_mode: Option<i32>) -> u32 {
    u32::try_from(mode.or(default_mode).unwrap_or(DEFAULT_MODE)).unwrap_or(0o644) & 0o777
}

/// Maps `data` to files: every key when `items` is empty, else only the listed keys (a missing
/// key is an error unless `optional`). `kind` and `name` name the object in errors.
fn make_payload(
    kind: &str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (key, bytes) in data {
                out.insert(
                    key.clone(),
                    FileProjection {
                        data: bytes.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        out.insert(
                            item.path.clone(),
                            FileProjection {
                                data: bytes.clone(),
                                mode: mode_of(item.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            what: format!("{kind} \"{name}\""),
                            key: item.key.clone(),
                        })
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The files of a configMap volume (`data` and `binaryData`).
pub fn config_map_payload(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    let name = cm.metadata.name.as_deref().unwrap_or_default();
    make_payload("configmap", name, &data, items, default_mode, optional)
}

/// The files of a secret volume.
pub fn secret_payload(
    secret: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    make_payload("secret", name, &data, items, default_mode, optional)
}

/// `key="value"` lines sorted by key, as upstream formats labels and annotations files.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef` path for a pod (upstream `ExtractFieldPathAsString`).
pub fn field_ref_value(pod: &Pod, path: &str) -> Result<String, VolumeError> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(|key| map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .unwrap_or_default(),
        "status.podIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        _ => {
            if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
                v
            } else if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
                v
            } else {
                return Err(VolumeError::UnsupportedField {
                    path: path.to_string(),
                });
            }
        }
    };
    Ok(value)
}

/// What a container gets when it sets no limit: the node's capacity (upstream uses the
/// node's allocatable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: i128,
}

/// The value of a downward API `resourceFieldRef` (upstream `ExtractContainerResourceValue`):
/// the container's request or limit divided by `divisor` (unset or 0: 1) and rounded up; an
/// unset limit is the node's allocatable.
pub fn resource_field_value(
    pod: &Pod,
    field: &ResourceFieldSelector,
    default_container: Option<&str>,
    node: &NodeResources,
) -> Result<String, VolumeError> {
    let invalid = |reason: String| VolumeError::UnsupportedField {
        path: format!("{} ({reason})", field.resource),
    };
    let name = field
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .ok_or_else(|| invalid("no containerName".into()))?;
    let spec = pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| invalid(format!("no container named \"{name}\"")))?;
    let (kind, resource) = field
        .resource
        .split_once('.')
        .ok_or_else(|| invalid("unknown resource".into()))?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(invalid("unknown resource".into())),
    }
    .and_then(|m| m.get(resource));
    let parse = |q: &str| parse_millis(q).map_err(|e| invalid(e.to_string()));
    // Unset, the API stores the divisor as "0": it means 1, as upstream.
    let divisor_millis = match field.divisor.as_ref() {
        Some(d) if !d.0.is_empty() => parse(&d.0)?,
        _ => 0,
    };
    let divisor_millis = match divisor_millis {
        0 => 1000,
        d if d < 0 => return Err(invalid("divisor must not be negative".into())),
        d => d,
    };
    let set = set.map(|q| parse(&q.0)).transpose()?;
    let millis = match (set, kind, resource) {
        // An unset (or zero) cpu, memory or ephemeral-storage limit is the node's allocatable.
        (None | Some(0), "limits", "cpu") => node.cpu_millis,
        (None | Some(0), "limits", "memory") => node.memory_bytes * 1000,
        (None | Some(0), "limits", "ephemeral-storage") => node.ephemeral_storage_bytes * 1000,
        (Some(v), _, _) => v,
        (None, _, "cpu" | "memory" | "ephemeral-storage") => 0,
        (None, _, r) if r.starts_with("hugepages-") => 0,
        _ => return Err(invalid("unsupported resource".into())),
    };
    let value = if resource == "cpu" {
        ceil_div(millis, divisor_millis)
    } else {
        // Memory-like values count whole bytes before dividing.
        ceil_div(
            ceil_div(millis, 1000),
            ceil_div(divisor_millis, 1000).max(1),
        )
    };
    Ok(value.to_string())
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a <= 0 {
        a / b
    } else {
        // Not (a + b - 1) / b, which overflows near the top of the range.
        a / b + i128::from(a % b != 0)
    }
}

/// The files of a downwardAPI volume (or projection).
pub fn downward_api_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node: &NodeResources,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_ref_value(pod, &field.field_path)?
        } else if let Some(field) = &item.resource_field_ref {
            resource_field_value(pod, field, None, node)?
        } else {
            continue;
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(item.mode, default_mode),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectFieldSelector;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn cm() -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                ..Default::default()
            },
            data: Some(
                [
                    ("a".to_string(), "1".to_string()),
                    ("b".to_string(), "2".to_string()),
                ]
                .into(),
            ),
            binary_data: Some([("bin".to_string(), ByteString(vec![0, 1]))].into()),
            ..Default::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn config_map_all_keys_items_modes_and_missing_keys() {
        let all = config_map_payload(&cm(), None, None, false).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b", "bin"]);
        assert_eq!(all["a"].mode, 0o644);
        assert_eq!(all["bin"].data, vec![0, 1]);

        let some = config_map_payload(
            &cm(),
            Some(&[item("a", "dir/x", Some(0o400))]),
            Some(0o600),
            false,
        )
        .unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(
            (some["dir/x"].data.as_slice(), some["dir/x"].mode),
            (b"1".as_slice(), 0o400)
        );

        let err =
            config_map_payload(&cm(), Some(&[item("zz", "z", None)]), None, false).unwrap_err();
        assert!(
            err.to_string().contains("configmap \"cfg\"") && err.to_string().contains("zz"),
            "{err}"
        );
        assert!(
            config_map_payload(&cm(), Some(&[item("zz", "z", None)]), None, true)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn secret_bytes_and_default_mode() {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            data: Some([("token".to_string(), ByteString(b"abc".to_vec()))].into()),
            ..Default::default()
        };
        let p = secret_payload(&s, None, Some(0o420), false).unwrap();
        assert_eq!(
            (p["token"].data.as_slice(), p["token"].mode),
            (b"abc".as_slice(), 0o420)
        );
    }

    #[test]
    fn downward_api_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("team".into()),
                labels: Some(
                    [
                        ("app".to_string(), "web".to_string()),
                        ("tier".to_string(), "front \"x\"".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let file = |path: &str, field: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = downward_api_payload(
            &pod,
            &[
                file("namespace", "metadata.namespace"),
                file("labels", "metadata.labels"),
                file("app", "metadata.labels['app']"),
            ],
            None,
            &NodeResources::default(),
        )
        .unwrap();
        assert_eq!(p["namespace"].data, b"team");
        assert_eq!(
            String::from_utf8(p["labels"].data.clone()).unwrap(),
            "app=\"web\"\ntier=\"front \\\"x\\\"\""
        );
        assert_eq!(p["app"].data, b"web");
        assert!(downward_api_payload(
            &pod,
            &[file("x", "spec.bogus")],
            None,
            &NodeResources::default()
        )
        .is_err());
    }

    #[test]
    fn resource_fields_divide_round_up_and_default_limits_to_the_node() {
        use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some([("memory".to_string(), Quantity("64Mi".into()))].into()),
                        requests: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = NodeResources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 0,
        };
        let field = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            container_name: Some("app".into()),
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
        };
        let value = |f: ResourceFieldSelector| resource_field_value(&pod, &f, None, &node).unwrap();
        assert_eq!(value(field("requests.cpu", None)), "1");
        assert_eq!(value(field("requests.cpu", Some("1m"))), "250");
        assert_eq!(value(field("limits.memory", None)), "67108864");
        assert_eq!(value(field("limits.memory", Some("1Mi"))), "64");
        assert_eq!(value(field("limits.cpu", None)), "4");
        assert_eq!(value(field("limits.memory", Some("1Gi"))), "1");
        // The API server stores an unset divisor as "0": it means 1.
        assert_eq!(value(field("limits.memory", Some("0"))), "67108864");
        assert_eq!(value(field("requests.cpu", Some("0"))), "1");
        assert_eq!(value(field("requests.hugepages-2Mi", Some("0"))), "0");
        let mut other = field("limits.cpu", None);
        other.container_name = Some("nope".into());
        assert!(resource_field_value(&pod, &other, None, &node).is_err());
    }
}
