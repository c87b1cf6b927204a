//! Building [`KubeletConfig`] from the flags, the `--config` file and the `--config-dir`
//! drop-ins, one setting at a time: the flag when given, else the files' value, else the
//! default, checked and converted to the type the kubelet reads. The merged file
//! configuration is kept as `raw`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::merger::Merger;
use super::node::{node_name, parse_node_ips};
use super::raw_flags::lay_flags_over_raw;
use super::KubeletConfig;
use crate::config::error::{ConfigError, Origin};
use crate::config::flags::{HeaderList, KubeletFlags};
use crate::config::kubelet_config::defaults::{
    DEFAULT_CHECK_FREQUENCY, DEFAULT_CONTAINER_RUNTIME_ENDPOINT, DEFAULT_MAX_PODS,
    DEFAULT_POD_LOGS_DIR, DEFAULT_RESOLV_CONF, DEFAULT_RUNTIME_REQUEST_TIMEOUT,
    DEFAULT_SYNC_FREQUENCY,
};
use crate::config::kubelet_config::drop_in::read_layers;
use crate::config::kubelet_config::validate::{
    check_cluster_domain, check_endpoint, check_header_names, check_http_url, check_ip,
    check_log_dir, check_range, validate_relations,
};
use crate::config::node_flags::{check_node_labels, LabelMap};

const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Container log symlinks go here when pod logs are in their default place (upstream fixes it).
const DEFAULT_CONTAINER_LOGS_DIR: &str = "/var/log/containers";
const DEFAULT_POD_WORKERS: usize = 8;
const MAX_POD_WORKERS: i64 = 256;

/// Builds the settings; `hostname` reads the machine hostname (a seam for tests).
pub(super) fn merge(
    mut flags: KubeletFlags,
    hostname: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<KubeletConfig, ConfigError> {
    let config_file = flags.config.clone();
    // As upstream, an empty --config-dir is no directory.
    let config_dir = flags
        .config_dir
        .take()
        .filter(|dir| !dir.as_os_str().is_empty());
    let (mut raw, sources) = read_layers(config_file.as_deref(), config_dir.as_deref())?;
    validate_relations(&raw, &sources)?;
    let m = Merger { sources };
    let mut warnings = Vec::new();
    if let Some(image) = &flags.pod_infra_container_image {
        warnings.push(format!(
            "flag --pod-infra-container-image={image} is deprecated and has no effect \
             beyond sparing the image from garbage collection: the container runtime \
             chooses the sandbox image"
        ));
    }

    // In the file "" means unset (kubeadm writes it); an explicit empty flag is an error.
    let (endpoint, origin) = m
        .pick(
            flags.container_runtime_endpoint.take(),
            "--container-runtime-endpoint",
            &mut raw.container_runtime_endpoint,
            "containerRuntimeEndpoint",
        )
        .filter(|(endpoint, origin)| !endpoint.is_empty() || matches!(origin, Origin::Flag(_)))
        .unwrap_or_else(|| {
            let default = DEFAULT_CONTAINER_RUNTIME_ENDPOINT.to_string();
            (default, Origin::Default("containerRuntimeEndpoint"))
        });
    let container_runtime_endpoint = check_endpoint(origin, &endpoint)?;
    let image_service_endpoint = match m.pick(
        flags.image_service_endpoint.take(),
        "--image-service-endpoint",
        &mut raw.image_service_endpoint,
        "imageServiceEndpoint",
    ) {
        // Empty means "same as the runtime", from a flag too (as upstream).
        Some((endpoint, origin)) if !endpoint.is_empty() => check_endpoint(origin, &endpoint)?,
        _ => container_runtime_endpoint.clone(),
    };

    let root_dir = flags
        .root_dir
        .take()
        .unwrap_or_else(|| DEFAULT_ROOT_DIR.into());
    if !root_dir.is_absolute() {
        // Volume paths under it are handed to the runtime, which needs absolute host paths.
        let origin = Origin::Flag("--root-dir");
        return Err(origin.invalid(root_dir.display(), "must be an absolute path"));
    }
    let (pod_logs_dir, origin) = m
        .pick_path(
            flags.pod_logs_dir.take(),
            "--pod-logs-dir",
            &mut raw.pod_logs_dir,
            "podLogsDir",
        )
        .filter(|(dir, _)| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| (DEFAULT_POD_LOGS_DIR.into(), Origin::Default("podLogsDir")));
    check_log_dir(origin, &pod_logs_dir)?;
    let container_logs_dir = if pod_logs_dir == Path::new(DEFAULT_POD_LOGS_DIR) {
        PathBuf::from(DEFAULT_CONTAINER_LOGS_DIR)
    } else {
        let parent = pod_logs_dir.parent().unwrap_or(&pod_logs_dir);
        parent.join("containers")
    };

    let static_pod_path = m
        .pick_path(
            flags.pod_manifest_path.take(),
            "--pod-manifest-path",
            &mut raw.static_pod_path,
            "staticPodPath",
        )
        .map(|(path, _)| path)
        .filter(|path| !path.as_os_str().is_empty());
    let static_pod_url = match m.pick(
        flags.manifest_url.take(),
        "--manifest-url",
        &mut raw.static_pod_url,
        "staticPodURL",
    ) {
        Some((url, origin)) if !url.is_empty() => {
            check_http_url(origin, &url)?;
            Some(url)
        }
        _ => None,
    };
    let static_pod_url_header = if flags.manifest_url_header.is_empty() {
        let headers = raw.static_pod_url_header.clone().unwrap_or_default();
        check_header_names(m.file_origin("staticPodURLHeader"), &headers)?;
        headers
    } else {
        let headers = header_map(&flags.manifest_url_header);
        check_header_names(Origin::Flag("--manifest-url-header"), &headers)?;
        raw.static_pod_url_header = Some(headers.clone());
        headers
    };

    let node_name = node_name(flags.hostname_override.take(), hostname)?;
    let node_ips = parse_node_ips(flags.node_ip.as_deref().unwrap_or_default())?;

    let (max_pods, origin) = m
        .pick(flags.max_pods, "--max-pods", &mut raw.max_pods, "maxPods")
        .unwrap_or((DEFAULT_MAX_PODS, Origin::Default("maxPods")));
    let max_pods = u32::try_from(max_pods)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| origin.invalid(max_pods, "must be greater than 0"))?;

    let runtime_request_timeout = m.duration(
        flags.runtime_request_timeout,
        "--runtime-request-timeout",
        &mut raw.runtime_request_timeout,
        "runtimeRequestTimeout",
        DEFAULT_RUNTIME_REQUEST_TIMEOUT,
    )?;
    let sync_frequency = m.duration(
        flags.sync_frequency,
        "--sync-frequency",
        &mut raw.sync_frequency,
        "syncFrequency",
        DEFAULT_SYNC_FREQUENCY,
    )?;
    let file_check_frequency = m.duration(
        flags.file_check_frequency,
        "--file-check-frequency",
        &mut raw.file_check_frequency,
        "fileCheckFrequency",
        DEFAULT_CHECK_FREQUENCY,
    )?;
    let http_check_frequency = m.duration(
        flags.http_check_frequency,
        "--http-check-frequency",
        &mut raw.http_check_frequency,
        "httpCheckFrequency",
        DEFAULT_CHECK_FREQUENCY,
    )?;

    let run_once = m
        .pick(flags.run_once(), "--runonce", &mut raw.run_once, "runOnce")
        .is_some_and(|(run_once, _)| run_once);
    let verbosity = m
        .pick(
            flags.v,
            "--v",
            &mut raw.logging.verbosity,
            "logging.verbosity",
        )
        .map_or(0, |(v, _)| u8::try_from(v).unwrap_or(u8::MAX));

    let pod_workers = flags.pod_workers.unwrap_or(DEFAULT_POD_WORKERS);
    let workers = i64::try_from(pod_workers).unwrap_or(i64::MAX);
    check_range(Origin::Flag("--pod-workers"), workers, 1, MAX_POD_WORKERS)?;

    let cluster_dns = if flags.cluster_dns.is_empty() {
        let listed = raw.cluster_dns.iter().flatten().enumerate();
        listed
            .map(|(index, ip)| check_ip(m.file_origin(format!("clusterDNS[{index}]")), ip))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let listed: Vec<String> = flags
            .cluster_dns
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
            .map(String::from)
            .collect();
        let ips = listed
            .iter()
            .map(|ip| check_ip(Origin::Flag("--cluster-dns"), ip))
            .collect::<Result<Vec<_>, _>>()?;
        raw.cluster_dns = Some(listed);
        ips
    };
    let cluster_domain = match m.pick(
        flags.cluster_domain.take(),
        "--cluster-domain",
        &mut raw.cluster_domain,
        "clusterDomain",
    ) {
        Some((domain, origin)) if !domain.is_empty() => {
            Some(check_cluster_domain(origin, &domain)?)
        }
        _ => None,
    };
    let cgroup_driver = m
        .pick(
            flags.cgroup_driver.take(),
            "--cgroup-driver",
            &mut raw.cgroup_driver,
            "cgroupDriver",
        )
        .map(|(d, origin)| match d.as_str() {
            "cgroupfs" | "systemd" => Ok(d),
            _ => Err(origin.invalid(&d, "must be cgroupfs or systemd")),
        })
        .transpose()?
        .unwrap_or_else(|| "cgroupfs".into());
    lay_flags_over_raw(&m, &mut flags, &mut raw)?;
    let mut node_labels = BTreeMap::new();
    for LabelMap(labels) in flags.node_labels.drain(..) {
        node_labels.extend(labels);
    }
    check_node_labels(&node_labels).map_err(|reason| {
        Origin::Flag("--node-labels").invalid(
            node_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            reason,
        )
    })?;
    let image_credential_providers = super::credential_provider_flags(
        flags.image_credential_provider_config.take(),
        flags.image_credential_provider_bin_dir.take(),
    )?;
    let external_cloud_provider = match flags.cloud_provider.take().as_deref() {
        None | Some("") => false,
        Some("external") => true,
        Some(other) => {
            return Err(Origin::Flag("--cloud-provider").invalid(
                other,
                format!(
                    "cloud provider {other:?} was specified, but built-in cloud providers are \
                     disabled. Please set --cloud-provider=external and migrate to an external \
                     cloud provider"
                ),
            ))
        }
    };
    // An explicit "" (flag or file) disables the resolver file, so it is not filtered out.
    let resolv_conf = m
        .pick_path(
            flags.resolv_conf.take(),
            "--resolv-conf",
            &mut raw.resolv_conf,
            "resolvConf",
        )
        .map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), |(path, _)| path);

    raw.set_defaults();
    // Upstream's default is /var/lib/kubelet/pki whatever --root-dir says; following
    // --root-dir keeps kubelets with their own root dirs from sharing one key.
    let cert_dir = flags
        .cert_dir
        .take()
        .unwrap_or_else(|| root_dir.join("pki"));
    Ok(KubeletConfig {
        container_runtime_endpoint,
        image_service_endpoint,
        root_dir,
        pod_logs_dir,
        container_logs_dir,
        static_pod_path,
        static_pod_url,
        static_pod_url_header,
        node_name,
        node_ip: node_ips.first().copied(),
        node_ips,
        max_pods,
        runtime_request_timeout,
        sync_frequency,
        file_check_frequency,
        http_check_frequency,
        run_once,
        verbosity,
        kubeconfig: flags.kubeconfig.take(),
        bootstrap_kubeconfig: flags.bootstrap_kubeconfig.take(),
        cert_dir,
        pod_workers,
        cgroup_driver,
        prober_workers: flags.prober_workers.unwrap_or(4).clamp(1, 64),
        image_gc_period: flags
            .image_gc_period
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(300))
            .max(Duration::from_secs(1)),
        cluster_dns,
        cluster_domain,
        resolv_conf,
        config_file,
        config_dir,
        image_credential_providers,
        pod_infra_container_image: flags.pod_infra_container_image.take(),
        node_labels,
        external_cloud_provider,
        warnings,
        raw,
    })
}

/// Collects `--manifest-url-header` values; a repeated name keeps every value in order.
fn header_map(lists: &[HeaderList]) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in lists.iter().flat_map(|list| list.0.iter()) {
        headers.entry(name.clone()).or_default().push(value.clone());
    }
    headers
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::settings::test_support::{secs, settings, with_config, TempDir};
    use crate::util::duration::GoDuration;

    #[test]
    fn defaults() {
        let c = settings(&[]).unwrap();
        let containerd = "unix:///run/containerd/containerd.sock";
        assert_eq!(c.container_runtime_endpoint, containerd);
        assert_eq!(c.image_service_endpoint, containerd);
        assert_eq!(c.root_dir, Path::new("/var/lib/kubelet"));
        assert_eq!(c.cert_dir, Path::new("/var/lib/kubelet/pki"));
        let moved = settings(&["--root-dir=/srv/kubelet"]).unwrap();
        assert_eq!(moved.cert_dir, Path::new("/srv/kubelet/pki"));
        assert_eq!(c.pod_logs_dir, Path::new("/var/log/pods"));
        assert_eq!(c.container_logs_dir, Path::new("/var/log/containers"));
        assert_eq!(c.static_pod_path, None);
        assert_eq!(c.static_pod_url, None);
        assert!(c.static_pod_url_header.is_empty());
        assert_eq!(c.node_name, "node-a.example.com");
        assert_eq!(c.node_ip, None);
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.runtime_request_timeout, secs(120));
        assert_eq!(c.sync_frequency, secs(60));
        assert_eq!(c.file_check_frequency, secs(20));
        assert_eq!(c.http_check_frequency, secs(20));
        assert!(!c.run_once);
        assert_eq!(c.verbosity, 0);
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.pod_workers, 8);
        assert!(c.cluster_dns.is_empty());
        assert_eq!(c.cluster_domain, None);
        assert_eq!(c.resolv_conf, Path::new("/etc/resolv.conf"));
        assert_eq!(c.config_file, None);
        assert!(c.warnings.is_empty());
        // `raw` is upstream's defaulted configuration.
        assert_eq!(c.raw.kind.as_deref(), Some("KubeletConfiguration"));
        assert_eq!(c.raw.port, Some(10250));
        assert_eq!(c.raw.max_pods, Some(110));
        assert_eq!(
            c.raw.container_runtime_endpoint.as_deref(),
            Some(containerd)
        );
    }

    const FILE: &str = "containerRuntimeEndpoint: unix:///run/crio/crio.sock
imageServiceEndpoint: /run/images.sock
podLogsDir: /srv/logs/pods
staticPodPath: /etc/kubernetes/manifests
staticPodURL: https://example.com/pods
staticPodURLHeader:
  Authorization: [Bearer abc]
maxPods: 50
runtimeRequestTimeout: 30s
syncFrequency: 1m30s
fileCheckFrequency: 5s
httpCheckFrequency: 45s
runOnce: true
logging:
  verbosity: 4
clusterDNS: [10.96.0.10, fd00::a]
clusterDomain: cluster.local.
resolvConf: /run/systemd/resolve/resolv.conf
";

    #[test]
    fn file_values_are_used() {
        let dir = TempDir::new("file-values");
        let config = dir.config(FILE);
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(c.container_runtime_endpoint, "unix:///run/crio/crio.sock");
        assert_eq!(c.image_service_endpoint, "unix:///run/images.sock");
        assert_eq!(c.pod_logs_dir, Path::new("/srv/logs/pods"));
        assert_eq!(c.container_logs_dir, Path::new("/srv/logs/containers"));
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/etc/kubernetes/manifests"))
        );
        assert_eq!(
            c.static_pod_url.as_deref(),
            Some("https://example.com/pods")
        );
        assert_eq!(c.static_pod_url_header["Authorization"], vec!["Bearer abc"]);
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.runtime_request_timeout, secs(30));
        assert_eq!(c.sync_frequency, secs(90));
        assert_eq!(c.file_check_frequency, secs(5));
        assert_eq!(c.http_check_frequency, secs(45));
        assert!(c.run_once);
        assert_eq!(c.verbosity, 4);
        let dns: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()];
        assert_eq!(c.cluster_dns, dns);
        assert_eq!(c.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(c.resolv_conf, Path::new("/run/systemd/resolve/resolv.conf"));
        assert_eq!(c.config_file.as_deref(), Some(config.as_path()));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = TempDir::new("flags-override");
        let config = dir.config(FILE);
        let c = with_config(
            &config,
            &[
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                "--pod-logs-dir=/var/log/pods",
                "--pod-manifest-path=/srv/manifests",
                "--manifest-url=http://10.0.0.1/pods",
                "--manifest-url-header=X-A:1,X-A:2",
                "--max-pods=20",
                "--runtime-request-timeout=10s",
                "--sync-frequency=2m",
                "--file-check-frequency=1s",
                "--http-check-frequency=2s",
                "--runonce=false",
                "-v=2",
                "--cluster-dns=10.0.0.10",
                "--cluster-domain=corp.example",
                "--resolv-conf=",
            ],
        )
        .unwrap();
        let containerd = "unix:///run/containerd/containerd.sock";
        assert_eq!(c.container_runtime_endpoint, containerd);
        // Not given as a flag: still the file's.
        assert_eq!(c.image_service_endpoint, "unix:///run/images.sock");
        assert_eq!(c.container_logs_dir, Path::new("/var/log/containers"));
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/srv/manifests"))
        );
        assert_eq!(c.static_pod_url.as_deref(), Some("http://10.0.0.1/pods"));
        assert_eq!(
            c.static_pod_url_header,
            BTreeMap::from([("X-A".to_string(), vec!["1".to_string(), "2".to_string()])])
        );
        assert_eq!(c.max_pods, 20);
        assert_eq!(c.runtime_request_timeout, secs(10));
        assert_eq!(c.sync_frequency, secs(120));
        assert_eq!(c.file_check_frequency, secs(1));
        assert_eq!(c.http_check_frequency, secs(2));
        assert!(!c.run_once);
        assert_eq!(c.verbosity, 2);
        assert_eq!(c.cluster_dns, vec!["10.0.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain.as_deref(), Some("corp.example"));
        assert_eq!(c.resolv_conf, Path::new(""));
        // `raw` shows the merged values.
        assert_eq!(c.raw.max_pods, Some(20));
        assert_eq!(c.raw.sync_frequency, Some(GoDuration::from_secs(120)));
        assert_eq!(c.raw.logging.verbosity, Some(2));
        assert_eq!(c.raw.cluster_dns, Some(vec!["10.0.0.10".to_string()]));
        assert_eq!(c.raw.resolv_conf.as_deref(), Some(""));
        assert_eq!(
            c.raw.container_runtime_endpoint.as_deref(),
            Some(containerd)
        );
    }

    #[test]
    fn registration_image_count_and_rotation_flags_override_the_file() {
        let dir = TempDir::new("registration-flags");
        let config =
            dir.config("nodeStatusMaxImages: 10\nregisterNode: true\nrotateCertificates: false\n");
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(c.raw.node_status_max_images, Some(10));
        let flags = [
            "--node-status-max-images=-1",
            "--register-node=false",
            "--rotate-certificates=true",
        ];
        let c = with_config(&config, &flags).unwrap();
        assert_eq!(c.raw.node_status_max_images, Some(-1));
        assert_eq!(c.raw.register_node, Some(false));
        assert_eq!(c.raw.rotate_certificates, Some(true));
        let c = settings(&[]).unwrap();
        assert_eq!(c.raw.node_status_max_images, Some(50));
        assert_eq!(c.raw.register_node, Some(true));
    }

    #[test]
    fn eviction_flags_replace_the_file_and_bad_thresholds_name_their_source() {
        let dir = TempDir::new("eviction-flags");
        let config = dir.config("evictionHard: {memory.available: 200Mi, nodefs.available: 5%}\n");
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(
            c.raw.eviction_hard.as_ref().unwrap().len(),
            2,
            "no merge by default"
        );
        let flags = [
            "--eviction-hard=memory.available<1Gi",
            "--eviction-soft=memory.available<2Gi",
            "--eviction-soft-grace-period=memory.available=1m30s",
            "--eviction-pressure-transition-period=30s",
            "--eviction-max-pod-grace-period=20",
            "--local-storage-capacity-isolation=false",
        ];
        let c = with_config(&config, &flags).unwrap();
        let hard = c.raw.eviction_hard.as_ref().unwrap();
        assert_eq!(hard.len(), 1);
        assert_eq!(hard["memory.available"], "1Gi");
        assert_eq!(c.raw.eviction_max_pod_grace_period, Some(20));
        assert_eq!(c.raw.local_storage_capacity_isolation, Some(false));
        let eviction = crate::eviction::EvictionConfig::from_config(&c.raw).unwrap();
        assert_eq!(eviction.thresholds.len(), 2);
        assert_eq!(
            eviction.pressure_transition_period,
            std::time::Duration::from_secs(30)
        );
        let err = with_config(&config, &["--eviction-soft=memory.available<2Gi"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--eviction-soft"), "{err}");
        assert!(
            err.contains("grace period must be specified for the soft eviction threshold"),
            "{err}"
        );
        let bad = dir.config("evictionHard: {memory.free: 1Gi}\n");
        let err = with_config(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("evictionHard"), "{err}");
        assert!(
            err.contains("unsupported eviction signal memory.free"),
            "{err}"
        );
        let merged = dir
            .config("evictionHard: {memory.available: 1Gi}\nmergeDefaultEvictionSettings: true\n");
        let c = with_config(&merged, &[]).unwrap();
        let hard = c.raw.eviction_hard.as_ref().unwrap();
        assert_eq!(hard.len(), 5);
        assert_eq!(hard["memory.available"], "1Gi");
        assert_eq!(hard["imagefs.available"], "15%");
        let c = settings(&[]).unwrap();
        assert_eq!(c.raw.eviction_hard.as_ref().unwrap().len(), 5);
    }

    #[test]
    fn zero_durations_and_empty_strings_in_the_file_mean_default() {
        let dir = TempDir::new("zero-means-default");
        let body = "syncFrequency: 0s\nfileCheckFrequency: 0s\nruntimeRequestTimeout: 0s\n\
                    containerRuntimeEndpoint: \"\"\nstaticPodPath: \"\"\nclusterDomain: \"\"\n";
        let c = with_config(&dir.config(body), &[]).unwrap();
        assert_eq!(c.sync_frequency, secs(60));
        assert_eq!(c.file_check_frequency, secs(20));
        assert_eq!(c.runtime_request_timeout, secs(120));
        assert_eq!(
            c.container_runtime_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(c.static_pod_path, None);
        assert_eq!(c.cluster_domain, None);
        assert_eq!(c.raw.sync_frequency, Some(GoDuration::from_secs(60)));
    }

    #[test]
    fn relative_file_paths_are_resolved_against_the_config_directory() {
        let dir = TempDir::new("relative");
        let config = dir.config("staticPodPath: manifests\npodLogsDir: logs/pods\n");
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(c.static_pod_path, Some(dir.0.join("manifests")));
        assert_eq!(c.pod_logs_dir, dir.0.join("logs/pods"));
        assert_eq!(c.container_logs_dir, dir.0.join("logs/containers"));
    }

    #[test]
    fn invalid_values_name_their_origin() {
        let dir = TempDir::new("invalid");
        let file = |body: &str| dir.config(body).display().to_string();
        let cases: Vec<(Option<String>, Vec<&str>, String)> = vec![
            (
                None,
                vec!["--max-pods=0"],
                "flag --max-pods: invalid value \"0\"".into(),
            ),
            (
                None,
                vec!["--max-pods=-4"],
                "flag --max-pods: invalid value \"-4\"".into(),
            ),
            (
                None,
                vec!["--sync-frequency=0s"],
                "flag --sync-frequency: invalid value \"0s\"".into(),
            ),
            (
                None,
                vec!["--runtime-request-timeout=-1s"],
                "flag --runtime-request-timeout: invalid value \"-1s\"".into(),
            ),
            (
                None,
                vec!["--node-status-max-images=-2"],
                "flag --node-status-max-images: invalid value \"-2\"".into(),
            ),
            (
                None,
                vec!["--pod-workers=0"],
                "flag --pod-workers: invalid value \"0\"".into(),
            ),
            (
                None,
                vec!["--pod-workers=257"],
                "flag --pod-workers: invalid value \"257\"".into(),
            ),
            (
                None,
                vec!["--node-ip=nope"],
                "flag --node-ip: invalid value \"nope\"".into(),
            ),
            (
                None,
                vec!["--node-ip=10.0.0.1,10.0.0.2"],
                "flag --node-ip: invalid value \"10.0.0.1,10.0.0.2\"".into(),
            ),
            (
                None,
                vec!["--cluster-dns=10.0.0.10,bad"],
                "flag --cluster-dns: invalid value \"bad\"".into(),
            ),
            (
                None,
                vec!["--hostname-override=Bad_Name"],
                "flag --hostname-override: invalid value \"bad_name\"".into(),
            ),
            (
                None,
                vec!["--manifest-url=ftp://example.com"],
                "flag --manifest-url: invalid value \"ftp://example.com\"".into(),
            ),
            (
                None,
                vec!["--container-runtime-endpoint=tcp://10.0.0.1:1"],
                "flag --container-runtime-endpoint: invalid value".into(),
            ),
            (
                None,
                vec!["--container-runtime-endpoint="],
                "flag --container-runtime-endpoint: invalid value \"\"".into(),
            ),
            (
                None,
                vec!["--image-service-endpoint=relative.sock"],
                "flag --image-service-endpoint: invalid value".into(),
            ),
            (
                None,
                vec!["--root-dir=var/lib"],
                "flag --root-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--pod-logs-dir=logs"],
                "flag --pod-logs-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--pod-logs-dir=/"],
                "flag --pod-logs-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--manifest-url-header=Bad Name:1"],
                "flag --manifest-url-header: invalid value \"Bad Name\"".into(),
            ),
            (
                Some("maxPods: 0\n".into()),
                vec![],
                format!("{}: maxPods: invalid value \"0\"", file("maxPods: 0\n")),
            ),
            (
                Some("syncFrequency: -1s\n".into()),
                vec![],
                format!("{}: syncFrequency: invalid value \"-1s\"", file("")),
            ),
            (
                Some("syncFrequency: 1parsec\n".into()),
                vec![],
                format!("{}: syncFrequency: time: unknown unit", file("")),
            ),
            (
                Some("containerLogMaxFiles: 1\n".into()),
                vec![],
                format!("{}: containerLogMaxFiles: invalid value \"1\"", file("")),
            ),
            (
                Some("containerLogMaxWorkers: 0\n".into()),
                vec![],
                format!("{}: containerLogMaxWorkers: invalid value \"0\"", file("")),
            ),
            (
                Some("containerLogMaxSize: 10Q\n".into()),
                vec![],
                format!("{}: containerLogMaxSize: invalid value \"10Q\"", file("")),
            ),
            (
                Some("containerLogMonitorInterval: 2s\n".into()),
                vec![],
                format!(
                    "{}: containerLogMonitorInterval: invalid value \"2s\": must be a positive \
                     time duration greater than or equal to 3s",
                    file("")
                ),
            ),
            (
                None,
                vec!["--container-log-max-files=1"],
                "flag --container-log-max-files: invalid value \"1\"".into(),
            ),
            (
                None,
                vec!["--container-log-max-size=lots"],
                "flag --container-log-max-size: invalid value \"lots\"".into(),
            ),
            (
                Some("fooBar: 1\n".into()),
                vec![],
                format!("{}: unknown field `fooBar`", file("")),
            ),
            (
                Some("maxPods: \"lots\"\n".into()),
                vec![],
                format!("{}: maxPods: invalid type", file("")),
            ),
            (
                Some("staticPodURLHeader:\n  \"a b\": [x]\n".into()),
                vec![],
                format!("{}: staticPodURLHeader: invalid value \"a b\"", file("")),
            ),
        ];
        for (body, args, want) in cases {
            let result = match &body {
                Some(body) => with_config(&dir.config(body), &args),
                None => settings(&args),
            };
            let err = result.unwrap_err();
            assert_eq!(err.exit_code(), 1);
            let message = err.to_string();
            assert!(
                message.starts_with(&want),
                "{args:?} {body:?}:\n{message}\nwanted {want}"
            );
        }
    }
}
