//! A container's environment (upstream `makeEnvironmentVariables`): `envFrom` ConfigMaps and
//! Secrets (with prefix), then `env` in order, each value expanded against what came before;
//! `valueFrom` reads pod fields, container resources, ConfigMap and Secret keys. `command`
//! and `args` are expanded against the result. Runs on the pod worker starting the container.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::util::expansion::expand;
use crate::volume::projection::{field_ref_value, resource_field_value, NodeResources};
use crate::volume::sources::ObjectCache;
use crate::volume::VolumeError;

/// Why a container's environment could not be built; shown as `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A required key is missing from its ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Object name.
        name: String,
        /// The key.
        key: String,
    },
    /// A required ConfigMap or Secret does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// Reading an object or a field failed.
    #[error("{0}")]
    Source(#[from] VolumeError),
}

/// What the environment needs besides the pod and container.
pub struct EnvContext<'a> {
    /// ConfigMaps and Secrets.
    pub objects: &'a ObjectCache,
    /// The host IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The pod's IPs (`status.podIP`, `status.podIPs`).
    pub pod_ips: &'a [String],
    /// Defaults for `resourceFieldRef` limits.
    pub node: &'a NodeResources,
}

/// Name/value pairs in the order they are first defined.
pub type Environment = Vec<(String, String)>;

/// Whether `name` is a valid environment variable name as the API accepts (C identifier
/// characters plus `-` and `.`, not starting with a digit).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The environment of `container`, in order, later definitions replacing earlier ones of the
/// same name as upstream does. Keys of `envFrom` objects that are not valid names are skipped
/// and returned in the second list (upstream reports them in an event).
pub fn make_environment(
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext<'_>,
) -> Result<(Environment, Vec<String>), EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut invalid = Vec::new();
    fn set(
        values: &mut HashMap<String, String>,
        order: &mut Vec<String>,
        name: String,
        value: String,
    ) {
        if values.insert(name.clone(), value).is_none() {
            order.push(name);
        }
    }

    if ctx.objects.has_api() {
        for (name, value) in service_env(pod, ctx.objects)? {
            set(&mut values, &mut order, name, value);
        }
    }

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data: Vec<(String, String)> = if let Some(r) = &from.config_map_ref {
            match ctx.objects.config_map(namespace, &r.name, false)? {
                Some(cm) => {
                    let mut d: Vec<(String, String)> =
                        cm.data.unwrap_or_default().into_iter().collect();
                    d.extend(
                        cm.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())),
                    );
                    d
                }
                None if r.optional.unwrap_or(false) => continue,
                None => {
                    return Err(EnvError::NotFound {
                        kind: "configmap",
                        name: r.name.clone(),
                    })
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match ctx.objects.secret(namespace, &r.name, false)? {
                Some(s) => s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if r.optional.unwrap_or(false) => continue,
                None => {
                    return Err(EnvError::NotFound {
                        kind: "secret",
                        name: r.name.clone(),
                    })
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if valid_env_name(&name) {
                set(&mut values, &mut order, name, v);
            } else {
                invalid.push(name);
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            let lookup = |n: &str| values.get(n).cloned();
            expand(v, &lookup)
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                match field.field_path.as_str() {
                    "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
                    "status.podIPs" => ctx.pod_ips.join(","),
                    "status.hostIP" => ctx.host_ips.first().cloned().unwrap_or_default(),
                    "status.hostIPs" => ctx.host_ips.join(","),
                    path => field_ref_value(pod, path)?,
                }
            } else if let Some(field) = &from.resource_field_ref {
                resource_field_value(pod, field, Some(&container.name), ctx.node)?
            } else if let Some(sel) = &from.config_map_key_ref {
                let optional = sel.optional.unwrap_or(false);
                let cm = ctx.objects.config_map(namespace, &sel.name, false)?;
                let found = cm.as_ref().and_then(|cm| {
                    cm.data
                        .as_ref()
                        .and_then(|d| d.get(&sel.key).cloned())
                        .or_else(|| {
                            cm.binary_data.as_ref().and_then(|d| {
                                d.get(&sel.key)
                                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                            })
                        })
                });
                match (found, cm.is_some()) {
                    (Some(v), _) => v,
                    (None, _) if optional => continue,
                    (None, true) => {
                        return Err(EnvError::MissingKey {
                            kind: "ConfigMap",
                            namespace: namespace.into(),
                            name: sel.name.clone(),
                            key: sel.key.clone(),
                        })
                    }
                    (None, false) => {
                        return Err(EnvError::NotFound {
                            kind: "configmap",
                            name: sel.name.clone(),
                        })
                    }
                }
            } else if let Some(sel) = &from.secret_key_ref {
                let optional = sel.optional.unwrap_or(false);
                let secret = ctx.objects.secret(namespace, &sel.name, false)?;
                let found = secret.as_ref().and_then(|s| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(&sel.key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                });
                match (found, secret.is_some()) {
                    (Some(v), _) => v,
                    (None, _) if optional => continue,
                    (None, true) => {
                        return Err(EnvError::MissingKey {
                            kind: "Secret",
                            namespace: namespace.into(),
                            name: sel.name.clone(),
                            key: sel.key.clone(),
                        })
                    }
                    (None, false) => {
                        return Err(EnvError::NotFound {
                            kind: "secret",
                            name: sel.name.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut values, &mut order, var.name.clone(), value);
    }
    let env = order
        .into_iter()
        .map(|name| {
            let value = values.get(&name).cloned().unwrap_or_default();
            (name, value)
        })
        .collect();
    Ok((env, invalid))
}

/// Services whose variables every container of the namespace gets: the `kubernetes` service
/// of `default` always, the pod's namespace's services with `enableServiceLinks` (default).
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

/// `MY_SVC` for `my-svc`.
fn env_prefix(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Service variables as upstream (`envvars.FromServices`): `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT[_<PORT NAME>]` and the Docker link variables.
pub fn service_env(pod: &Pod, objects: &ObjectCache) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: std::collections::BTreeMap<String, k8s_openapi::api::core::v1::Service> =
        std::collections::BTreeMap::new();
    if links {
        for s in objects.services(namespace)? {
            chosen.insert(s.metadata.name.clone().unwrap_or_default(), s);
        }
    }
    for s in objects.services("default")? {
        let name = s.metadata.name.clone().unwrap_or_default();
        if MASTER_SERVICES.contains(&name.as_str()) {
            chosen.entry(name).or_insert(s);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = env_prefix(&name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_prefix(port_name)),
                    p.port.to_string(),
                ));
            }
        }
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        for (i, p) in ports.iter().enumerate() {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{host}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((port_prefix.clone(), url));
            out.push((format!("{port_prefix}_PROTO"), lower));
            out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
            out.push((format!("{port_prefix}_ADDR"), ip.clone()));
        }
    }
    Ok(out)
}

/// `command` and `args` with `$(VAR)` expanded from the container's environment.
pub fn expand_command_and_args(
    container: &Container,
    env: &[(String, String)],
) -> (Vec<String>, Vec<String>) {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| map.get(n).map(|v| v.to_string());
    let each = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|s| expand(s, &lookup)).collect()
    };
    (each(&container.command), each(&container.args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeClient;
    use crate::api::KubeClient;
    use crate::clock::FakeClock;
    use std::sync::Arc;
    use std::time::Duration;

    fn objects(api: &Arc<FakeClient>) -> ObjectCache {
        ObjectCache::new(
            Some(api.clone() as Arc<dyn KubeClient>),
            Arc::new(FakeClock::new()),
            Duration::ZERO,
        )
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "serviceAccountName": "robot", "containers": [{
                "name": "app",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "command": ["echo", "$(GREETING)", "$$(GREETING)"],
                "args": ["$(MISSING)", "$(POD_IP)"],
                "envFrom": [
                    {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "creds"}},
                    {"configMapRef": {"name": "absent", "optional": true}}
                ],
                "env": [
                    {"name": "NAME", "value": "world"},
                    {"name": "GREETING", "value": "hello $(NAME) $(CFG_mode)"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {
                        "resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {
                        "resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {
                        "name": "settings", "key": "nope", "optional": true}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "NAME", "value": "again"}
                ]
            }]}
        }))
        .unwrap()
    }

    fn store(api: &FakeClient) {
        api.put_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "settings", "namespace": "team"},
                "data": {"mode": "blue", "bad key": "x"}
            }))
            .unwrap(),
        );
        api.insert_secret(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds", "namespace": "team"},
                "data": {"password": "aHVudGVyMg=="}
            }))
            .unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn every_kind_of_value_in_order_with_expansion() {
        let api = Arc::new(FakeClient::new());
        store(&api);
        let objects = objects(&api);
        let pod = pod();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let ctx = EnvContext {
            objects: &objects,
            host_ips: &["192.0.2.1".to_string()],
            pod_ips: &["10.0.0.7".to_string()],
            node: &NodeResources::default(),
        };
        let (env, invalid) = make_environment(&pod, container, &ctx).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(invalid, ["CFG_bad key"]);
        assert_eq!(get("CFG_mode"), Some("blue"));
        assert_eq!(get("password"), Some("hunter2"));
        assert_eq!(get("GREETING"), Some("hello world blue"));
        assert_eq!(get("NAME"), Some("again"), "a later definition wins");
        assert_eq!(get("POD_NAME"), Some("web"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("SA"), Some("robot"));
        assert_eq!(get("POD_IP"), Some("10.0.0.7"));
        assert_eq!(get("HOST_IP"), Some("192.0.2.1"));
        assert_eq!(get("MEM_MI"), Some("64"));
        assert_eq!(get("CPU_M"), Some("250"));
        assert_eq!(get("MODE"), Some("blue"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("PASSWORD"), Some("hunter2"));
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..3], ["CFG_mode", "password", "NAME"]);
        let (command, args) = expand_command_and_args(container, &env);
        assert_eq!(command, ["echo", "hello world blue", "$(GREETING)"]);
        assert_eq!(args, ["$(MISSING)", "10.0.0.7"]);
    }

    #[test]
    fn service_variables_as_upstream() {
        let api = Arc::new(FakeClient::new());
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| {
            api.insert_service(
                &serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"clusterIP": ip, "ports": ports}
                }))
                .unwrap(),
            )
            .unwrap();
        };
        svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([{"name": "https", "port": 443}]),
        );
        svc(
            "default",
            "other",
            "10.96.0.9",
            serde_json::json!([{"port": 80}]),
        );
        svc(
            "team",
            "my-db",
            "10.96.0.5",
            serde_json::json!([
            {"port": 5432}, {"name": "metrics", "port": 9187, "protocol": "TCP"}]),
        );
        svc(
            "team",
            "headless",
            "None",
            serde_json::json!([{"port": 80}]),
        );
        let objects = objects(&api);
        let pod = pod();
        let env = service_env(&pod, &objects).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("MY_DB_SERVICE_HOST"), Some("10.96.0.5"));
        assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), Some("9187"));
        assert_eq!(get("MY_DB_PORT_9187_TCP"), Some("tcp://10.96.0.5:9187"));
        assert_eq!(get("MY_DB_PORT_5432_TCP_PROTO"), Some("tcp"));
        assert_eq!(
            get("OTHER_SERVICE_HOST"),
            None,
            "other namespaces' services stay out"
        );
        assert!(env.iter().all(|(n, _)| !n.starts_with("HEADLESS")));
        let mut no_links = pod.clone();
        no_links.spec.as_mut().unwrap().enable_service_links = Some(false);
        let env = service_env(&no_links, &objects).unwrap();
        assert!(env.iter().any(|(n, _)| n == "KUBERNETES_SERVICE_HOST"));
        assert!(env.iter().all(|(n, _)| !n.starts_with("MY_DB")));
    }

    #[test]
    fn missing_required_keys_and_objects_name_what_is_missing() {
        let api = Arc::new(FakeClient::new());
        let objects = objects(&api);
        let mut pod = pod();
        let ctx = EnvContext {
            objects: &objects,
            host_ips: &[],
            pod_ips: &[],
            node: &NodeResources::default(),
        };
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        let err = make_environment(&pod, &container, &ctx).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"settings\" not found");
        store(&api);
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[0].env_from = None;
        spec.containers[0].env = Some(
            serde_json::from_value(serde_json::json!([{"name": "X", "valueFrom": {
                "configMapKeyRef": {"name": "settings", "key": "colour"}}}]))
            .unwrap(),
        );
        let container = spec.containers[0].clone();
        let err = make_environment(&pod, &container, &ctx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key colour in ConfigMap team/settings"
        );
    }
}
