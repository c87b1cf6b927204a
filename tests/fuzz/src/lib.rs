//! The fuzz targets: each takes arbitrary bytes and drives one parser of outside input the
//! way the kubelet does, with the follow-on steps its output feeds. A target returns
//! normally whatever the input; a panic, an abort, a hang or a memory blow-up is a finding.
//! `src/bin/<target>.rs` runs each under AFL++.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use rkubelet::config::manifest::ManifestSource;

/// Every target, by name (the binaries' names).
pub const TARGETS: &[&str] = &[
    "manifest",
    "kubelet_config",
    "kubeconfig",
    "watch_stream",
    "http_request",
    "cri_log",
    "values",
    "pod_to_cri",
];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "manifest" => manifest(data),
        "kubelet_config" => kubelet_config(data),
        "kubeconfig" => kubeconfig(data),
        "watch_stream" => watch_stream(data),
        "http_request" => http_request(data),
        "cri_log" => cri_log(data),
        "values" => values(data),
        "pod_to_cri" => pod_to_cri(data),
        _ => return false,
    }
    true
}

/// A scratch directory of this process for targets that read files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkubelet-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A static pod manifest as a file (one Pod, YAML or JSON) and as a manifest URL's body (a
/// Pod or a list), with defaults and validation; every pod that passes goes on to the CRI
/// translation.
pub fn manifest(data: &[u8]) {
    use rkubelet::config::static_pod::decode_static_pods;
    let sources = [
        ManifestSource::File(PathBuf::from("/etc/kubernetes/manifests/fuzz.yaml")),
        ManifestSource::Url("http://127.0.0.1/manifests".into()),
    ];
    for source in &sources {
        if let Ok(pods) = decode_static_pods(data, "fuzz-node", source) {
            for pod in &pods {
                translate(pod);
            }
        }
    }
}

/// A Pod as the API server would send it (JSON), validated as a static pod is, then
/// translated to CRI.
pub fn pod_to_cri(data: &[u8]) {
    let Ok(mut pod) = serde_json::from_slice::<Pod>(data) else {
        return;
    };
    rkubelet::config::static_pod::set_scheme_defaults(&mut pod);
    if rkubelet::config::static_pod::validate_pod(&pod).is_empty() {
        translate(&pod);
    }
}

/// What the runtime manager derives from a pod before any CRI call: the actions for a pod
/// with nothing running, the sandbox config, and each container's environment and config.
fn translate(pod: &Pod) {
    use rkubelet::kuberuntime::env::{make_environment, EnvContext};
    use rkubelet::kuberuntime::{compute_pod_actions, generate_container_config};
    use rkubelet::kuberuntime::{RuntimePodStatus, RuntimeSettings};
    let status = RuntimePodStatus::default();
    let _ = compute_pod_actions(pod, &status);
    let settings = RuntimeSettings::for_tests(&scratch());
    let _ = rkubelet::kuberuntime::sandbox::generate_sandbox_config(pod, 0, &settings);
    let objects = rkubelet::volume::sources::ObjectCache::new(
        None,
        Arc::new(rkubelet::clock::RealClock),
        Duration::from_secs(60),
    );
    let node = rkubelet::volume::NodeResources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };
    let ctx = EnvContext {
        objects: &objects,
        host_ips: &["10.0.0.1".to_string()],
        pod_ips: &["10.244.0.5".to_string()],
        node: &node,
    };
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        if let Ok((env, _)) = make_environment(pod, container, &ctx) {
            let _ = generate_container_config(pod, container, 0, "", Vec::new(), &env);
        }
    }
}

/// Splits `data` at the first `\n---8<---\n` into two documents (the second may be absent).
fn two_documents(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    const CUT: &[u8] = b"\n---8<---\n";
    match data.windows(CUT.len()).position(|w| w == CUT) {
        Some(i) => (&data[..i], Some(&data[i + CUT.len()..])),
        None => (data, None),
    }
}

/// `--config` with a `--config-dir` drop-in (the second document), read, merged, defaulted
/// and validated as at start-up.
pub fn kubelet_config(data: &[u8]) {
    let dir = scratch().join("kubelet-config");
    let _ = std::fs::remove_dir_all(&dir);
    let drop_ins = dir.join("conf.d");
    if std::fs::create_dir_all(&drop_ins).is_err() {
        return;
    }
    let (config, drop_in) = two_documents(data);
    let file = dir.join("config.yaml");
    if std::fs::write(&file, config).is_err() {
        return;
    }
    let mut args = vec![
        "rkubelet".to_string(),
        format!("--config={}", file.display()),
        "--hostname-override=fuzz-node".into(),
    ];
    if let Some(doc) = drop_in {
        if std::fs::write(drop_ins.join("10-fuzz.conf"), doc).is_err() {
            return;
        }
        args.push(format!("--config-dir={}", drop_ins.display()));
    }
    let _ = rkubelet::config::settings::KubeletConfig::from_args(args.iter().map(Into::into));
}

/// A kubeconfig file, resolved to the client's settings (files it names are read relative
/// to it).
pub fn kubeconfig(data: &[u8]) {
    let file = scratch().join("kubeconfig");
    if std::fs::write(&file, data).is_ok() {
        let _ = rkubelet::api::kubeconfig::load(&file);
    }
}

/// A watch response body of pods, every event decoded.
pub fn watch_stream(data: &[u8]) {
    let stream =
        rkubelet::api::watch::decode_watch::<Pod>(Cursor::new(data.to_vec()), "fuzz".into());
    for event in stream.take(10_000) {
        let _ = event;
    }
}

/// A kubelet API request head, and everything the server reads from it: headers, the path,
/// query parameters, the log options, exec's commands and the stream flags.
pub fn http_request(data: &[u8]) {
    use rkubelet::server::http::{parse_head, percent_decode, split_target};
    if let Ok((request, _body)) = parse_head(data) {
        let _ = request.header("authorization");
        let _ = request.header("content-length");
        let _ = request.query_all("command");
        for flag in [
            "input",
            "output",
            "error",
            "tty",
            "follow",
            "previous",
            "timestamps",
        ] {
            let _ = request.query_flag(flag);
        }
        let _ = rkubelet::server::logs::LogOptions::from_request(&request);
        let _ = split_target(&request.target);
        let segments: Vec<&str> = request.path.split('/').collect();
        let _ = segments;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = percent_decode(text, true);
        let _ = split_target(text);
    }
}

/// Container log files as the runtime writes them, line by line.
pub fn cri_log(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        let _ = rkubelet::server::logs::parse_line(line);
    }
}

/// The small value grammars of the API and the configuration: quantities, eviction
/// thresholds, durations, label and field selectors (matched against an object) and
/// `$(VAR)` expansion. Each line of the input is tried as each.
pub fn values(data: &[u8]) {
    use rkubelet::api::selector::{matches_fields, matches_labels, parse_fields, LabelSelector};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let labels = [
        ("app".to_string(), "web".to_string()),
        ("tier".to_string(), "front".to_string()),
    ]
    .into_iter()
    .collect();
    let object = serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "fuzz-node"},
        "status": {"phase": "Running"},
    });
    for line in text.lines() {
        let _ = rkubelet::quantity::parse_millis(line);
        let _ = rkubelet::quantity::parse_value(line);
        let _ = rkubelet::quantity::ThresholdValue::parse(line).map(|t| t.amount(1 << 40));
        let _ = rkubelet::util::duration::parse_duration(line)
            .map(rkubelet::util::duration::format_duration);
        let _ = parse_fields(line);
        let _ = LabelSelector::parse(line);
        let _ = matches_labels(&labels, line);
        let _ = matches_fields(&object, line);
        let lookup = |name: &str| name.len().is_multiple_of(3).then(|| format!("<{name}>"));
        let _ = rkubelet::util::expansion::expand(line, &lookup);
    }
}

/// Runs every target on every file under `dir/<target>/` (the corpora), for the tests.
pub fn replay(dir: &Path) -> usize {
    let mut ran = 0;
    for target in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(data) = std::fs::read(entry.path()) {
                run(target, &data);
                ran += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(scratch());
    ran
}
