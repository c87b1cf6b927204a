//! Reading a `--config` file: the `kind` and `apiVersion` check, the strict decode with errors
//! naming the file and field, relative paths resolved against the file's directory, and then
//! the value checks of [`super::validate`].

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::{validate, KubeletConfiguration, API_VERSION, KIND};
use crate::config::error::{ConfigError, Origin};
use crate::util::decode;

impl KubeletConfiguration {
    /// Makes the relative paths among upstream's path fields (`staticPodPath`,
    /// `authentication.x509.clientCAFile`, `tlsCertFile`, `tlsPrivateKeyFile`, `resolvConf`,
    /// `volumePluginDir`, `podLogsDir`) absolute by joining them to `root`, as upstream does
    /// with the config file's directory. Empty values stay empty.
    pub fn resolve_relative_paths(&mut self, root: &Path) {
        for path in [
            &mut self.static_pod_path,
            &mut self.authentication.x509.client_ca_file,
            &mut self.tls_cert_file,
            &mut self.tls_private_key_file,
            &mut self.resolv_conf,
            &mut self.volume_plugin_dir,
            &mut self.pod_logs_dir,
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_empty() && !Path::new(path.as_str()).is_absolute() {
                *path = clean(&root.join(path.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }
}

/// Lexically cleans a path like Go's `filepath.Clean` (drops `.`, folds `dir/..`).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            // `/..` is `/`.
            Component::ParentDir if out.has_root() => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Reads the `--config` file at `path`: checks `kind` and `apiVersion`, decodes every field
/// strictly, resolves relative paths against the file's directory and validates the values.
/// Errors name the file and the field (`authentication.x509.clientCAFile`).
pub fn load(path: &Path) -> Result<KubeletConfiguration, ConfigError> {
    let config = read(path)?;
    validate::validate_file(&config, path)?;
    Ok(config)
}

/// Reads a configuration document (the `--config` file or a drop-in): checks `kind` and
/// `apiVersion`, decodes every field strictly and resolves relative paths against the file's
/// directory, without validating the values.
pub fn read(path: &Path) -> Result<KubeletConfiguration, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut config = parse(&text, path)?;
    config.resolve_relative_paths(path.parent().unwrap_or(Path::new("")));
    Ok(config)
}

/// Decodes a KubeletConfiguration document (YAML, or JSON as a YAML subset) without
/// validating its values; `file` only names the source in errors.
pub fn parse(text: &str, file: &Path) -> Result<KubeletConfiguration, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Parse {
            file: file.to_path_buf(),
            reason: "the file is empty".to_string(),
        });
    }
    // JSON allows tabs between tokens where YAML does not; a tab can only be whitespace in
    // JSON (strings must escape it), so turning them into spaces changes nothing else.
    let text = if text.trim_start().starts_with('{') {
        text.replace('\t', " ")
    } else {
        text.to_string()
    };
    let document: serde_json::Value =
        serde_yaml_ng::from_str(&text).map_err(|err| parse_error(file, err.to_string()))?;
    check_type_meta(&document, file)?;
    // Through a `Value` like every other document (`util::decode`); a field at fault is
    // named by its path.
    decode::from_value(document.clone(), || document)
        .map_err(|err| parse_error(file, err.to_string()))
}

/// Checks `kind` and `apiVersion` before the strict decode, so that a wrong kind of document
/// (a Pod manifest, say) is reported as such rather than as a pile of unknown fields.
fn check_type_meta(document: &serde_json::Value, file: &Path) -> Result<(), ConfigError> {
    if !document.is_object() {
        return Err(ConfigError::Parse {
            file: file.to_path_buf(),
            reason: format!("expected a {KIND} object (a mapping)"),
        });
    }
    for (field, want) in [("kind", KIND), ("apiVersion", API_VERSION)] {
        let got = document.get(field);
        if got.and_then(serde_json::Value::as_str) != Some(want) {
            let origin = Origin::File {
                file: file.to_path_buf(),
                field: field.to_string(),
            };
            let value = match got {
                None => String::new(),
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(value) => value.to_string(),
            };
            return Err(origin.invalid(value, format!("must be {want:?}")));
        }
    }
    Ok(())
}

/// Wraps a YAML syntax error or a decode error (which starts with the field's path, e.g.
/// `authentication.x509: unknown field `foo`, ...`) with the file name, dropping serde's list of
/// every known field when it is long.
fn parse_error(file: &Path, mut reason: String) -> ConfigError {
    if let Some(start) = reason.find(", expected one of ") {
        let end = reason[start..]
            .find(" at line ")
            .map_or(reason.len(), |offset| start + offset);
        if end - start > 120 {
            reason.replace_range(start..end, "");
        }
    }
    ConfigError::Parse {
        file: file.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::kubelet_config::test_support::{parse_str, HEADER};
    use crate::config::kubelet_config::TimeOrMetaDuration;
    use crate::util::duration::GoDuration;

    /// A config file in a fresh directory, removed on drop.
    struct TempConfig {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TempConfig {
        fn new(test: &str, name: &str, text: &str) -> TempConfig {
            let dir = std::env::temp_dir().join(format!(
                "rkubelet-kubelet-config-{}-{test}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            fs::write(&path, text).unwrap();
            TempConfig { dir, path }
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// What `kubeadm init` writes to /var/lib/kubelet/config.yaml, plus common extras.
    const KUBEADM: &str = r#"apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerLogMaxSize: 50Mi
containerRuntimeEndpoint: ""
cpuManagerReconcilePeriod: 0s
crashLoopBackOff: {}
evictionHard:
  imagefs.available: 15%
  memory.available: 100Mi
  nodefs.available: 10%
  nodefs.inodesFree: 5%
evictionPressureTransitionPeriod: 0s
featureGates:
  NodeSwap: true
  KubeletTracing: false
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
kubeReserved:
  cpu: 100m
  memory: 256Mi
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
maxPods: 250
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
registerWithTaints:
- key: node-role.kubernetes.io/control-plane
  effect: NoSchedule
resolvConf: /run/systemd/resolve/resolv.conf
rotateCertificates: true
runtimeRequestTimeout: 0s
serverTLSBootstrap: true
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
systemReserved:
  cpu: "1"
  memory: 1Gi
tlsCipherSuites:
- TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
volumeStatsAggPeriod: 0s
"#;

    #[test]
    fn accepts_a_kubeadm_config() {
        let config = TempConfig::new("kubeadm", "config.yaml", KUBEADM);
        let c = load(&config.path).unwrap();
        assert_eq!(c.cgroup_driver.as_deref(), Some("systemd"));
        assert_eq!(c.authorization.mode.as_deref(), Some("Webhook"));
        assert_eq!(c.authentication.webhook.enabled, Some(true));
        assert_eq!(
            c.authentication.x509.client_ca_file.as_deref(),
            Some("/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(c.cluster_dns, Some(vec!["10.96.0.10".to_string()]));
        let eviction = c.eviction_hard.as_ref().unwrap();
        assert_eq!(eviction["memory.available"], "100Mi");
        assert_eq!(eviction["nodefs.available"], "10%");
        assert!(c.feature_gates.as_ref().unwrap()["NodeSwap"]);
        assert_eq!(c.rotate_certificates, Some(true));
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some("/etc/kubernetes/manifests")
        );
        assert_eq!(c.sync_frequency, Some(GoDuration::ZERO));
        assert_eq!(c.system_reserved.as_ref().unwrap()["cpu"], "1");
        assert_eq!(
            c.register_with_taints.as_ref().unwrap()[0].effect,
            "NoSchedule"
        );
        assert_eq!(
            c.logging.flush_frequency,
            Some(TimeOrMetaDuration {
                duration: GoDuration::ZERO,
                serialize_as_string: false
            })
        );
        assert_eq!(
            c.logging.options.json.info_buffer_size.as_deref(),
            Some("0")
        );
        assert_eq!(c.container_runtime_endpoint.as_deref(), Some(""));
    }

    #[test]
    fn accepts_json() {
        let json = "{\n\t\"apiVersion\": \"kubelet.config.k8s.io/v1beta1\",\n\t\"kind\": \
                    \"KubeletConfiguration\",\n\t\"maxPods\": 42,\n\t\"syncFrequency\": \
                    \"30s\",\n\t\"authentication\": {\"webhook\": {\"enabled\": false}},\n\t\
                    \"logging\": {\"flushFrequency\": 5000000000}\n}\n";
        let config = TempConfig::new("json", "config.json", json);
        let c = load(&config.path).unwrap();
        assert_eq!(c.max_pods, Some(42));
        assert_eq!(c.sync_frequency, Some(GoDuration::from_secs(30)));
        assert_eq!(c.authentication.webhook.enabled, Some(false));
        assert_eq!(
            c.logging.flush_frequency.map(|f| f.duration),
            Some(GoDuration::from_secs(5))
        );
        let err = parse(
            "{\"apiVersion\": \"kubelet.config.k8s.io/v1beta1\", \"kind\": \
             \"KubeletConfiguration\", \"maxPods\": \"lots\"}",
            Path::new("/k.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("maxPods") && err.contains("/k.json"), "{err}");
    }

    #[test]
    fn decode_errors_name_the_file_and_field() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "unknown field",
                "fooBar: 1\n",
                &["unknown field `fooBar`"],
            ),
            (
                "wrong type",
                "maxPods: \"lots\"\n",
                &["maxPods: invalid type", "lots"],
            ),
            (
                "wrong type bool",
                "rotateCertificates: 3\n",
                &["rotateCertificates"],
            ),
            (
                "nested unknown field",
                "authentication:\n  x509:\n    clientCAFil: /ca.crt\n",
                &["authentication.x509", "unknown field `clientCAFil`"],
            ),
            (
                "nested wrong type",
                "authentication:\n  webhook:\n    enabled: \"yes\"\n",
                &["authentication.webhook.enabled: invalid type"],
            ),
            (
                "bad duration",
                "syncFrequency: 1x\n",
                &["syncFrequency: time: unknown unit \"x\""],
            ),
            (
                "duration without unit",
                "authorization:\n  webhook:\n    cacheAuthorizedTTL: 5\n",
                &["authorization.webhook.cacheAuthorizedTTL: invalid type: integer `5`, expected a Go duration string"],
            ),
            (
                "map value type",
                "featureGates:\n  NodeSwap: sometimes\n",
                &["featureGates.NodeSwap"],
            ),
            (
                "list item field",
                "registerWithTaints:\n- key: a\n  efect: NoSchedule\n",
                &["registerWithTaints[0]", "unknown field `efect`"],
            ),
            ("not yaml", "maxPods: [\n", &["line"]),
        ];
        for (name, body, wants) in cases {
            let err = parse_str(body).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{name}: {err:?}");
            let message = err.to_string();
            assert!(
                message.starts_with("/etc/kubernetes/kubelet.yaml: "),
                "{name}: {message}"
            );
            for want in *wants {
                assert!(message.contains(want), "{name}: {message:?} lacks {want:?}");
            }
        }
        // serde's list of all ~130 field names is left out; short lists stay.
        let message = parse_str("fooBar: 1\n").unwrap_err().to_string();
        assert!(!message.contains("enableServer"), "{message}");
        let message = parse_str("tracing: {endpointt: x}\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("expected `endpoint` or"), "{message}");
    }

    #[test]
    fn checks_kind_and_api_version() {
        let cases: &[(&str, &str)] = &[
            (
                "apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n",
                "apiVersion",
            ),
            ("apiVersion: v1\nkind: Pod\n", "kind"),
            ("kind: KubeletConfiguration\n", "apiVersion"),
            ("apiVersion: kubelet.config.k8s.io/v1beta1\n", "kind"),
            (
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\n",
                "kind",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text, Path::new("/k.yaml")).unwrap_err();
            match &err {
                ConfigError::Invalid {
                    origin: Origin::File { file, field: got },
                    ..
                } => {
                    assert_eq!(file, Path::new("/k.yaml"));
                    assert_eq!(got, field, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
            assert!(err
                .to_string()
                .starts_with(&format!("/k.yaml: {field}: invalid value")));
        }
        for text in ["", "  \n", "- a\n- b\n", "just a string\n"] {
            let err = parse(text, Path::new("/k.yaml")).unwrap_err();
            assert!(
                matches!(err, ConfigError::Parse { .. }),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn value_errors_name_the_file_and_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("maxPods: 0\n", "maxPods", "must be greater than 0"),
            ("maxPods: -3\n", "maxPods", "must be greater than 0"),
            (
                "syncFrequency: -1s\n",
                "syncFrequency",
                "must not be negative",
            ),
            (
                "authentication:\n  webhook:\n    cacheTTL: -2m\n",
                "authentication.webhook.cacheTTL",
                "negative",
            ),
            ("port: 70000\n", "port", "between 1 and 65535"),
            ("healthzPort: -1\n", "healthzPort", "between 0 and 65535"),
            (
                "oomScoreAdj: -1001\n",
                "oomScoreAdj",
                "between -1000 and 1000",
            ),
            (
                "imageGCLowThresholdPercent: 90\n",
                "imageGCLowThresholdPercent",
                "below",
            ),
            ("cgroupDriver: upstart\n", "cgroupDriver", "\"systemd\""),
            (
                "authorization:\n  mode: RBAC\n",
                "authorization.mode",
                "\"Webhook\"",
            ),
            (
                "clusterDNS: [10.0.0.10, 10.0.0.300]\n",
                "clusterDNS[1]",
                "not an IP",
            ),
            ("staticPodURL: ftp://example.com/\n", "staticPodURL", "http"),
            (
                "containerRuntimeEndpoint: tcp://1.2.3.4:1\n",
                "containerRuntimeEndpoint",
                "unix",
            ),
            ("cpuCFSQuotaPeriod: 2s\n", "cpuCFSQuotaPeriod", "1ms and 1s"),
            (
                "shutdownGracePeriod: 500ms\n",
                "shutdownGracePeriod",
                "at least 1s",
            ),
            ("systemCgroups: /system\n", "systemCgroups", "cgroupRoot"),
            (
                "registerWithTaints:\n- key: a\n  effect: Sometimes\n",
                "registerWithTaints[0].effect",
                "NoExecute",
            ),
            (
                "enforceNodeAllocatable: [none, pods]\n",
                "enforceNodeAllocatable[0]",
                "none",
            ),
            (
                "serializeImagePulls: true\nmaxParallelImagePulls: 4\n",
                "maxParallelImagePulls",
                "serializeImagePulls",
            ),
            (
                "userNamespaces:\n  idsPerPod: 1000\n",
                "userNamespaces.idsPerPod",
                "65536",
            ),
            (
                "clusterDomain: Cluster_Local\n",
                "clusterDomain",
                "DNS subdomain",
            ),
        ];
        for (body, field, reason) in cases {
            let config = TempConfig::new("values", "kubelet.yaml", &format!("{HEADER}{body}"));
            let err = load(&config.path).unwrap_err();
            let prefix = format!("{}: {field}: invalid value", config.path.display());
            let message = err.to_string();
            assert!(message.starts_with(&prefix), "{body}: {message}");
            assert!(message.contains(reason), "{body}: {message}");
        }
    }

    #[test]
    fn resolves_relative_paths_against_the_config_directory() {
        let body = "staticPodPath: ./manifests\ntlsCertFile: pki/../pki/kubelet.crt\n\
                    authentication:\n  x509:\n    clientCAFile: ca.crt\n\
                    podLogsDir: /var/log/pods\nresolvConf: \"\"\n";
        let config = TempConfig::new("relative", "kubelet.yaml", &format!("{HEADER}{body}"));
        let c = load(&config.path).unwrap();
        let dir = config.dir.display();
        assert_eq!(c.static_pod_path, Some(format!("{dir}/manifests")));
        assert_eq!(c.tls_cert_file, Some(format!("{dir}/pki/kubelet.crt")));
        assert_eq!(
            c.authentication.x509.client_ca_file,
            Some(format!("{dir}/ca.crt"))
        );
        assert_eq!(c.pod_logs_dir.as_deref(), Some("/var/log/pods"));
        assert_eq!(c.resolv_conf.as_deref(), Some(""));
    }

    #[test]
    fn cleans_paths_like_go() {
        for (input, want) in [
            ("/a/./b/../c", "/a/c"),
            ("/../a", "/a"),
            ("a/../../b", "../b"),
            ("./", "."),
        ] {
            assert_eq!(clean(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = load(Path::new("/nonexistent/rkubelet/kubelet.yaml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("/nonexistent/rkubelet/kubelet.yaml"));
    }
}
