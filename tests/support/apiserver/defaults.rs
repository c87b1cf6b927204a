//! What kube-apiserver adds to a pod on create: the scheme defaults a kubelet relies on
//! (restart policy, grace period, DNS policy, image pull policy, termination message) and the
//! initial status (`Pending` with the QoS class). Only the common defaults are here; admission
//! plugins (service accounts, priority, tolerations) are not simulated.

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
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            default_container(container);
        }
    }
}

fn default_container(container: &mut Map<String, Value>) {
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

/// The status a new pod starts with, whatever the client sent: `Pending` and its QoS class.
pub fn initial_pod_status(pod: &Value) -> Value {
    json!({ "phase": "Pending", "qosClass": qos_class(pod) })
}

/// The pod's QoS class: `BestEffort` with no requests or limits at all, `Guaranteed` when
/// every container limits CPU and memory and requests equal limits, else `Burstable`.
pub fn qos_class(pod: &Value) -> &'static str {
    let mut containers = Vec::new();
    for list in ["/spec/initContainers", "/spec/containers"] {
        if let Some(items) = pod.pointer(list).and_then(Value::as_array) {
            containers.extend(items.iter());
        }
    }
    let resources = |c: &Value, kind: &str, name: &str| {
        c.pointer(&format!("/resources/{kind}/{name}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let any_set = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|kind| {
            c.pointer(&format!("/resources/{kind}"))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any_set {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|name| {
            let limit = resources(c, "limits", name);
            let request = resources(c, "requests", name);
            limit.is_some() && (request.is_none() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
