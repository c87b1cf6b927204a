//! Turning a decoded manifest into a static pod the kubelet runs (upstream
//! `config/common.go` `applyDefaults`, plus the API scheme defaults the API server would have
//! applied).
//!
//! Pure functions, run on the `source-file` and `source-http` threads:
//! - the UID, when the manifest has none, is a digest of the defaulted manifest and its origin,
//!   so the same file on the same node keeps its UID across kubelet restarts;
//! - the name becomes `<name>-<lowercased node name>`, the namespace defaults to `default`;
//! - `spec.nodeName`, the `config.hash`/`config.source` annotations, a NoExecute toleration
//!   (file pods only, as upstream) and `status.phase: Pending` are set;
//! - the result is validated ([`validate_pod`]): the subset of upstream `ValidatePod` that
//!   matters to a kubelet running the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, PodStatus, Probe, Toleration,
};
use log::trace;

use crate::config::manifest::{
    decode_manifest, FieldError, FieldErrors, Manifest, ManifestError, ManifestSource,
};
use crate::config::update::{CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION};

/// Decodes `data` and turns each pod into a static pod. A file holds exactly one `Pod`
/// (upstream `tryDecodeSinglePod`); a URL may serve a `Pod` or a list, and one bad pod
/// rejects the whole list (upstream `tryDecodePodList`).
pub fn decode_static_pods(
    data: &[u8],
    node_name: &str,
    source: &ManifestSource,
) -> Result<Vec<Pod>, ManifestError> {
    let pods = match (decode_manifest(data, source)?, source) {
        (Manifest::Pod(pod), _) => vec![*pod],
        (Manifest::List(pods), ManifestSource::Url(_)) => pods,
        (Manifest::List(_), ManifestSource::File(_)) => {
            return Err(ManifestError::WrongKind {
                origin: source.clone(),
                kind: "PodList".into(),
                expected: "Pod (a manifest file holds one pod)",
            })
        }
    };
    pods.into_iter()
        .map(|pod| apply_defaults(pod, node_name, source))
        .collect()
}

/// Makes a decoded manifest pod into the pod the kubelet runs on `node_name`, then validates
/// it. See the module docs for what is set.
pub fn apply_defaults(
    mut pod: Pod,
    node_name: &str,
    source: &ManifestSource,
) -> Result<Pod, ManifestError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(ManifestError::MissingName {
            origin: source.clone(),
        });
    }
    set_scheme_defaults(&mut pod);

    let uid = match pod.metadata.uid.clone().filter(|uid| !uid.is_empty()) {
        Some(uid) => uid,
        None => {
            let uid = static_pod_uid(&pod, node_name, source).map_err(|e| ManifestError::Hash {
                origin: source.clone(),
                pod: name.clone(),
                source: e,
            })?;
            trace!("generated UID pod={name:?} uid={uid} source={source}");
            pod.metadata.uid = Some(uid.clone());
            uid
        }
    };
    let full_name = format!("{name}-{}", node_name.to_lowercase());
    pod.metadata.name = Some(full_name.clone());
    if pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod.metadata.namespace = Some("default".into());
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    if matches!(source, ManifestSource::File(_)) {
        // Static pods must not be evicted for node problems (upstream applies this to file
        // pods only).
        add_or_update_toleration(
            spec.tolerations.get_or_insert_with(Vec::new),
            Toleration {
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                ..Default::default()
            },
        );
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), uid);
    annotations.insert(
        CONFIG_SOURCE_ANNOTATION.into(),
        source.config_source().into(),
    );
    pod.status.get_or_insert_with(PodStatus::default).phase = Some("Pending".into());

    let errors = validate_pod(&pod);
    if errors.is_empty() {
        Ok(pod)
    } else {
        Err(ManifestError::Invalid {
            origin: source.clone(),
            pod: full_name,
            errors: FieldErrors(errors),
        })
    }
}

/// SHA-256 over the canonical JSON of the (scheme-defaulted) manifest pod, then
/// `host:<node>` and `file:<path>` for files or `url:<url>` for URLs (upstream hashes with
/// MD5 in the same order, and likewise leaves the node out for URLs). k8s-openapi keeps
/// every map in a `BTreeMap` and fields in a fixed order, so the JSON is canonical. The first
/// 16 bytes, as 32 lowercase hex digits: the length of upstream's UIDs.
pub fn static_pod_uid(
    pod: &Pod,
    node_name: &str,
    source: &ManifestSource,
) -> Result<String, serde_json::Error> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&serde_json::to_vec(pod)?);
    match source {
        ManifestSource::File(path) => {
            ctx.update(format!("host:{node_name}").as_bytes());
            ctx.update(format!("file:{}", path.display()).as_bytes());
        }
        ManifestSource::Url(url) => ctx.update(format!("url:{url}").as_bytes()),
    }
    let digest = ctx.finish();
    Ok(digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Upstream `AddOrUpdateTolerationInPod`: a toleration matching on key, operator, value and
/// effect is replaced (unless identical); otherwise the new one is appended.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, new: Toleration) {
    let same_match = |t: &Toleration| {
        t.key.as_deref().unwrap_or_default() == new.key.as_deref().unwrap_or_default()
            && t.operator.as_deref().unwrap_or_default()
                == new.operator.as_deref().unwrap_or_default()
            && t.value.as_deref().unwrap_or_default() == new.value.as_deref().unwrap_or_default()
            && t.effect.as_deref().unwrap_or_default() == new.effect.as_deref().unwrap_or_default()
    };
    match tolerations.iter_mut().find(|t| same_match(t)) {
        Some(existing) => *existing = new,
        None => tolerations.push(new),
    }
}

/// The API scheme defaults (`pkg/apis/core/v1/defaults.go`) a pod from the API server already
/// carries, so static pods look the same to the rest of the kubelet: restart and DNS policy,
/// grace period, scheduler name, service links, an empty security context, requests from
/// limits, host-network ports, and per container the pull policy, termination message,
/// port protocol and probe settings.
pub fn set_scheme_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let set = |field: &mut Option<String>, value: &str| {
        if field.as_deref().unwrap_or_default().is_empty() {
            *field = Some(value.to_string());
        }
    };
    set(&mut spec.restart_policy, "Always");
    set(&mut spec.dns_policy, "ClusterFirst");
    set(&mut spec.scheduler_name, "default-scheduler");
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.enable_service_links.get_or_insert(true);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    let host_network = spec.host_network.unwrap_or(false);
    let init = spec.init_containers.iter_mut().flatten();
    for container in spec.containers.iter_mut().chain(init) {
        set_container_defaults(container, host_network);
    }
}

fn set_container_defaults(container: &mut Container, host_network: bool) {
    if container
        .image_pull_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        let image = container.image.as_deref().unwrap_or_default();
        container.image_pull_policy = Some(default_pull_policy(image).into());
    }
    if container
        .termination_message_path
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        container.termination_message_path = Some("/dev/termination-log".into());
    }
    if container
        .termination_message_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        container.termination_message_policy = Some("File".into());
    }
    for port in container.ports.iter_mut().flatten() {
        if port.protocol.as_deref().unwrap_or_default().is_empty() {
            port.protocol = Some("TCP".into());
        }
        if host_network && port.host_port.unwrap_or(0) == 0 {
            port.host_port = Some(port.container_port);
        }
    }
    if let Some(resources) = &mut container.resources {
        if let Some(limits) = &resources.limits {
            let requests = resources.requests.get_or_insert_with(BTreeMap::new);
            for (name, quantity) in limits {
                requests
                    .entry(name.clone())
                    .or_insert_with(|| quantity.clone());
            }
        }
    }
    let probes = [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ];
    for probe in probes.into_iter().flatten() {
        set_probe_defaults(probe);
    }
}

fn set_probe_defaults(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http) = &mut probe.http_get {
        if http.path.as_deref().unwrap_or_default().is_empty() {
            http.path = Some("/".into());
        }
        if http.scheme.as_deref().unwrap_or_default().is_empty() {
            http.scheme = Some("HTTP".into());
        }
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` for any other tag or a digest.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The subset of upstream `ValidatePodCreate` that matters to a kubelet running the pod.
/// Expects defaults applied (namespace, restart and DNS policy, port protocols).
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    check_dns1123(&mut errors, "metadata.name", name, DnsKind::Subdomain);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    check_dns1123(&mut errors, "metadata.namespace", namespace, DnsKind::Label);
    let Some(spec) = &pod.spec else {
        errors.push(FieldError::Required {
            field: "spec.containers".into(),
        });
        return errors;
    };
    if spec.containers.is_empty() {
        errors.push(FieldError::Required {
            field: "spec.containers".into(),
        });
    }
    // Names are unique across regular and init containers; upstream checks the regular ones
    // first and reports a clash on the later container.
    let mut names = std::collections::HashSet::new();
    validate_containers(&mut errors, &mut names, "spec.containers", &spec.containers);
    if let Some(init) = &spec.init_containers {
        validate_containers(&mut errors, &mut names, "spec.initContainers", init);
    }
    // Ephemeral containers are only ever added to a running pod through the API's
    // `ephemeralcontainers` subresource; a manifest is a create.
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errors.push(FieldError::Forbidden {
            field: "spec.ephemeralContainers".into(),
            detail: "cannot be set on create",
        });
    }
    check_enum(
        &mut errors,
        "spec.restartPolicy",
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    check_enum(
        &mut errors,
        "spec.dnsPolicy",
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    errors
}

fn validate_containers<'a>(
    errors: &mut Vec<FieldError>,
    names: &mut std::collections::HashSet<&'a str>,
    path: &str,
    containers: &'a [Container],
) {
    for (i, container) in containers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name_field = format!("{at}.name");
        if container.name.is_empty() {
            errors.push(FieldError::Required { field: name_field });
        } else {
            check_dns1123(errors, &name_field, &container.name, DnsKind::Label);
            if !names.insert(&container.name) {
                errors.push(FieldError::Duplicate {
                    field: name_field,
                    value: format!("{:?}", container.name),
                });
            }
        }
        match container.image.as_deref() {
            None | Some("") => errors.push(FieldError::Required {
                field: format!("{at}.image"),
            }),
            Some(image) if image.trim() != image => errors.push(FieldError::Invalid {
                field: format!("{at}.image"),
                value: format!("{image:?}"),
                detail: "must not have leading or trailing whitespace".into(),
            }),
            Some(_) => {}
        }
        for (j, port) in container.ports.iter().flatten().enumerate() {
            let port_at = format!("{at}.ports[{j}]");
            check_port(
                errors,
                &format!("{port_at}.containerPort"),
                port.container_port,
            );
            if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
                check_port(errors, &format!("{port_at}.hostPort"), host_port);
            }
            check_enum(
                errors,
                &format!("{port_at}.protocol"),
                port.protocol.as_deref(),
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
}

fn check_port(errors: &mut Vec<FieldError>, field: &str, port: i32) {
    if !(1..=65535).contains(&port) {
        errors.push(FieldError::Invalid {
            field: field.into(),
            value: port.to_string(),
            detail: "must be between 1 and 65535, inclusive".into(),
        });
    }
}

/// An enumerated field; empty is Required (defaults fill the optional ones first).
fn check_enum(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Option<&str>,
    supported: &'static [&'static str],
) {
    match value {
        None | Some("") => errors.push(FieldError::Required {
            field: field.into(),
        }),
        Some(v) if !supported.contains(&v) => errors.push(FieldError::NotSupported {
            field: field.into(),
            value: format!("{v:?}"),
            supported,
        }),
        Some(_) => {}
    }
}

#[derive(Clone, Copy)]
enum DnsKind {
    /// RFC 1123 label: namespaces, container names.
    Label,
    /// RFC 1123 subdomain: pod names.
    Subdomain,
}

fn check_dns1123(errors: &mut Vec<FieldError>, field: &str, value: &str, kind: DnsKind) {
    if value.is_empty() {
        errors.push(FieldError::Required {
            field: field.into(),
        });
        return;
    }
    let (max, ok, msg) = match kind {
        DnsKind::Label => (
            63,
            is_dns1123_label(value),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character",
        ),
        DnsKind::Subdomain => (
            253,
            value.split('.').all(is_dns1123_label),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character",
        ),
    };
    let mut detail = Vec::new();
    if value.len() > max {
        detail.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        detail.push(msg.to_string());
    }
    if !detail.is_empty() {
        errors.push(FieldError::Invalid {
            field: field.into(),
            value: format!("{value:?}"),
            detail: detail.join(", "),
        });
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`; the length limit is checked separately.
fn is_dns1123_label(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn file(path: &str) -> ManifestSource {
        ManifestSource::File(PathBuf::from(path))
    }

    fn manifest(yaml: &str) -> Pod {
        match decode_manifest(yaml.as_bytes(), &file("/m/x.yaml")).unwrap() {
            Manifest::Pod(pod) => *pod,
            Manifest::List(_) => panic!("expected a pod"),
        }
    }

    const WEB: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: app
    image: nginx:1.27
    ports: [{containerPort: 80}]
    resources: {limits: {cpu: 500m}}
";

    fn uid(pod: &Pod) -> String {
        pod.metadata.uid.clone().unwrap()
    }

    #[test]
    fn ephemeral_containers_are_forbidden_in_a_manifest() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                "containers": [{"name": "app", "image": "busybox"}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}
        }))
        .unwrap();
        let errors: Vec<String> = validate_pod(&pod).iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec!["spec.ephemeralContainers: Forbidden: cannot be set on create".to_string()]
        );
        pod.spec.as_mut().unwrap().ephemeral_containers = Some(Vec::new());
        assert!(validate_pod(&pod).is_empty());
    }

    #[test]
    fn name_namespace_node_annotations_status() {
        let pod = apply_defaults(manifest(WEB), "Node-1", &file("/m/web.yaml")).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], uid(&pod));
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(uid(&pod).len(), 32);
        assert!(uid(&pod)
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
        let exists_no_execute = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        assert_eq!(spec.tolerations.as_deref(), Some(&[exists_no_execute][..]));
        // Scheme defaults.
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "500m");
    }

    #[test]
    fn uid_depends_on_content_node_and_origin_only() {
        let base = uid(&apply_defaults(manifest(WEB), "n1", &file("/m/web.yaml")).unwrap());
        let again = uid(&apply_defaults(manifest(WEB), "n1", &file("/m/web.yaml")).unwrap());
        assert_eq!(base, again);
        let edited = WEB.replace("nginx:1.27", "nginx:1.28");
        let cases = [
            ("other node", manifest(WEB), "n2", file("/m/web.yaml")),
            ("other path", manifest(WEB), "n1", file("/m/web2.yaml")),
            (
                "other content",
                manifest(&edited),
                "n1",
                file("/m/web.yaml"),
            ),
            (
                "url",
                manifest(WEB),
                "n1",
                ManifestSource::Url("http://h/web".into()),
            ),
        ];
        for (what, pod, node, source) in cases {
            let other = uid(&apply_defaults(pod, node, &source).unwrap());
            assert_ne!(base, other, "{what}");
        }
        // Spelling out a default does not change the UID (hash after defaulting, as upstream).
        let explicit = WEB.replace("spec:\n", "spec:\n  restartPolicy: Always\n");
        let same = uid(&apply_defaults(manifest(&explicit), "n1", &file("/m/web.yaml")).unwrap());
        assert_eq!(base, same);
    }

    #[test]
    fn explicit_uid_and_namespace_are_kept() {
        let yaml = WEB.replace(
            "name: web,",
            "name: web, uid: my-uid, namespace: kube-system,",
        );
        let pod = apply_defaults(manifest(&yaml), "n1", &file("/m/web.yaml")).unwrap();
        assert_eq!(uid(&pod), "my-uid");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            pod.metadata.annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            "my-uid"
        );
    }

    #[test]
    fn url_pods_get_no_toleration_and_http_source() {
        let source = ManifestSource::Url("http://h/pods".into());
        let pod = apply_defaults(manifest(WEB), "n1", &source).unwrap();
        assert_eq!(pod.spec.unwrap().tolerations, None);
        assert_eq!(
            pod.metadata.annotations.unwrap()[CONFIG_SOURCE_ANNOTATION],
            "http"
        );
    }

    #[test]
    fn existing_matching_toleration_is_replaced_not_duplicated() {
        let yaml = WEB.replace(
            "spec:\n",
            "spec:\n  tolerations:\n  - {operator: Exists, effect: NoExecute, tolerationSeconds: 5}\n  - {key: k, operator: Exists}\n",
        );
        let pod = apply_defaults(manifest(&yaml), "n1", &file("/m/web.yaml")).unwrap();
        let tolerations = pod.spec.unwrap().tolerations.unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0].toleration_seconds, None);
    }

    #[test]
    fn validation_errors_are_named() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("missing name", "metadata: {}", &[]),
            (
                "bad name",
                "metadata: {name: Web_1}",
                &["metadata.name: Invalid value: \"Web_1-n1\": a lowercase RFC 1123 subdomain"],
            ),
            (
                "bad namespace",
                "metadata: {name: web, namespace: Kube.System}",
                &["metadata.namespace: Invalid value: \"Kube.System\": a lowercase RFC 1123 label"],
            ),
            ("no containers", "metadata: {name: web}\nspec: {containers: []}", &["spec.containers: Required value"]),
            (
                "duplicate and bad names, no image, bad port and policy",
                "metadata: {name: web}\nspec:\n  restartPolicy: Sometimes\n  initContainers: [{name: app, image: i}]\n  containers:\n  - {name: app, image: i, ports: [{containerPort: 0}, {containerPort: 80, hostPort: 70000}]}\n  - {name: app, image: ''}\n  - {name: Bad_Name, image: ' i'}\n",
                &[
                    "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[1].hostPort: Invalid value: 70000",
                    "spec.containers[1].name: Duplicate value: \"app\"",
                    "spec.containers[1].image: Required value",
                    "spec.containers[2].name: Invalid value: \"Bad_Name\"",
                    "spec.containers[2].image: Invalid value: \" i\": must not have leading or trailing whitespace",
                    "spec.initContainers[0].name: Duplicate value: \"app\"",
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                ],
            ),
        ];
        for (what, body, wants) in cases {
            let spec = if body.contains("spec") {
                ""
            } else {
                "spec: {containers: [{name: c, image: i}]}"
            };
            let yaml = format!("apiVersion: v1\nkind: Pod\n{body}\n{spec}\n");
            let err = apply_defaults(manifest(&yaml), "n1", &file("/m/x.yaml")).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("/m/x.yaml: "), "{what}: {text}");
            match (&err, wants.is_empty()) {
                (ManifestError::MissingName { .. }, true) => continue,
                (ManifestError::Invalid { errors, .. }, false) => {
                    let got: Vec<String> = errors.0.iter().map(FieldError::to_string).collect();
                    assert_eq!(got.len(), wants.len(), "{what}: {got:#?}");
                    for (g, w) in got.iter().zip(wants.iter()) {
                        assert!(g.starts_with(w), "{what}: {g:?} does not start with {w:?}");
                    }
                }
                _ => panic!("{what}: unexpected {err:?}"),
            }
        }
    }

    #[test]
    fn decode_static_pods_accepts_lists_from_urls_only() {
        let list = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  spec: {containers: [{name: c, image: i}]}\n- metadata: {name: b}\n  spec: {containers: [{name: c, image: i}]}\n";
        let url = ManifestSource::Url("http://h/p".into());
        let pods = decode_static_pods(list.as_bytes(), "n1", &url).unwrap();
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a-n1", "b-n1"]);
        let err = decode_static_pods(list.as_bytes(), "n1", &file("/m/l.yaml")).unwrap_err();
        assert!(matches!(err, ManifestError::WrongKind { .. }), "{err}");
        // One bad pod rejects the whole list, as upstream.
        let bad = list.replace("name: b}", "name: B}");
        assert!(decode_static_pods(bad.as_bytes(), "n1", &url).is_err());
    }

    #[test]
    fn dns1123_labels() {
        for (s, ok) in [
            ("a", true),
            ("a-1", true),
            ("1a", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a_b", false),
            ("a.b", false),
        ] {
            assert_eq!(is_dns1123_label(s), ok, "{s:?}");
        }
    }

    #[test]
    fn pull_policy_defaults() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("registry:5000/nginx", "Always"),
            ("registry:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }
}
