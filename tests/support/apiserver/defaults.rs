//! What kube-apiserver adds to a pod on create: the v1 scheme defaults (upstream
//! `pkg/apis/core/v1/defaults.go` and the generated per-field defaults) for everything a
//! kubelet reads — restart policy, grace period, DNS policy, image pull policy, termination
//! message, probe and handler fields, port protocols, host ports on the host network,
//! requests copied from limits, volume modes and sources, field selector API versions and
//! resource field divisors (an unset divisor is stored as `"0"`) — and the initial status
//! (`Pending` with the QoS class). Admission plugins (service accounts, priority,
//! tolerations) are not simulated.

use k8s_openapi::api::core::v1::Pod;
use rkubelet::resources::qos_class;
use serde_json::{json, Map, Value};

/// Fills missing pod spec fields with upstream's defaults.
pub fn default_pod_spec(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            default_container(container, host_network && list != "ephemeralContainers");
            if list != "ephemeralContainers" {
                requests_from_limits(container);
            }
        }
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
            default_volume(volume);
        }
    }
}

fn default_container(container: &mut Map<String, Value>, host_network: bool) {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_uses_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(container, "imagePullPolicy", json!(policy));
    set_default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set_default(container, "terminationMessagePolicy", json!("File"));
    set_default(container, "resources", json!({}));
    if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            let unset = port.get("hostPort").is_none_or(|p| p == &json!(0));
            if host_network && unset {
                let container_port = port.get("containerPort").cloned().unwrap_or(json!(0));
                port.insert("hostPort".into(), container_port);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(probe, "timeoutSeconds", json!(1));
            set_default(probe, "periodSeconds", json!(10));
            set_default(probe, "successThreshold", json!(1));
            set_default(probe, "failureThreshold", json!(3));
            default_handler(probe);
            if let Some(grpc) = probe.get_mut("grpc").and_then(Value::as_object_mut) {
                set_default(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = container
        .get_mut("lifecycle")
        .and_then(Value::as_object_mut)
    {
        for hook in ["postStart", "preStop"] {
            if let Some(hook) = lifecycle.get_mut(hook).and_then(Value::as_object_mut) {
                default_handler(hook);
            }
        }
    }
    if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
        for var in env.iter_mut() {
            if let Some(from) = var.get_mut("valueFrom").and_then(Value::as_object_mut) {
                default_selectors(from);
            }
        }
    }
}

/// `httpGet` of a probe or hook: path `/`, scheme `HTTP`.
fn default_handler(handler: &mut Map<String, Value>) {
    if let Some(get) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(get, "path", json!("/"));
        set_default(get, "scheme", json!("HTTP"));
    }
}

/// `fieldRef.apiVersion` `v1`; a `resourceFieldRef` without a divisor stores `"0"` (a
/// non-pointer quantity).
fn default_selectors(source: &mut Map<String, Value>) {
    if let Some(field) = source.get_mut("fieldRef").and_then(Value::as_object_mut) {
        set_default(field, "apiVersion", json!("v1"));
    }
    if let Some(resource) = source
        .get_mut("resourceFieldRef")
        .and_then(Value::as_object_mut)
    {
        set_default(resource, "divisor", json!("0"));
    }
}

/// Limits without a request become the request too (upstream `SetDefaults_Pod`).
fn requests_from_limits(container: &mut Map<String, Value>) {
    let Some(resources) = container
        .get_mut("resources")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let requests = resources.entry("requests").or_insert_with(|| json!({}));
    if let Some(requests) = requests.as_object_mut() {
        for (name, value) in limits {
            requests.entry(name).or_insert(value);
        }
    }
}

fn default_volume(volume: &mut Map<String, Value>) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
        "csi",
        "ephemeral",
        "image",
    ];
    if !SOURCES.iter().any(|s| volume.contains_key(*s)) {
        volume.insert("emptyDir".into(), json!({}));
    }
    if let Some(host_path) = volume.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_default(host_path, "type", json!(""));
    }
    for kind in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(source) = volume.get_mut(kind).and_then(Value::as_object_mut) {
            set_default(source, "defaultMode", json!(0o644));
        }
    }
    if let Some(items) = volume
        .get_mut("downwardAPI")
        .and_then(|d| d.get_mut("items"))
        .and_then(Value::as_array_mut)
    {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            default_selectors(item);
        }
    }
    let sources = volume
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
        .and_then(Value::as_array_mut);
    for source in sources.into_iter().flatten() {
        if let Some(token) = source
            .get_mut("serviceAccountToken")
            .and_then(Value::as_object_mut)
        {
            set_default(token, "expirationSeconds", json!(3600));
        }
        let items = source
            .get_mut("downwardAPI")
            .and_then(|d| d.get_mut("items"))
            .and_then(Value::as_array_mut);
        for item in items.into_iter().flatten().filter_map(Value::as_object_mut) {
            default_selectors(item);
        }
    }
}

/// An image without a tag, or tagged `latest`, defaults to `Always` (a digest never does).
fn image_uses_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_string()).or_insert(value);
}

/// The status a new pod starts with, whatever the client sent: `Pending` and its QoS class
/// as the kubelet computes it (`rkubelet::resources::qos_class`, upstream `GetPodQOS`); a
/// body that does not decode as a Pod counts as `BestEffort`.
pub fn initial_pod_status(pod: &Value) -> Value {
    let qos =
        serde_json::from_value::<Pod>(pod.clone()).map_or("BestEffort", |pod| qos_class(&pod));
    json!({ "phase": "Pending", "qosClass": qos })
}
