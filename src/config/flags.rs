//! Raw command-line flags, named and spelled like the upstream kubelet's so existing systemd
//! units and kubeadm's `kubeadm-flags.env` work unchanged.
//!
//! This is the first of two configuration stages (the second is [`super::settings`]): every
//! value flag is an `Option` so the merge knows whether it was given, since a flag overrides
//! the `--config` file only when present. Both `--flag=value` and `--flag value` work; boolean
//! flags take an optional `=true`/`=false` like Go's pflag. Parsed once on the main thread.
//!
//! Subcommands (`rkubelet fake-runtime`, `rkubelet hollow`) will hang off this struct later as
//! an optional `#[structopt(subcommand)]` field; nothing here assumes there are none.

use std::path::PathBuf;
use std::str::FromStr;

use structopt::StructOpt;

use super::node_flags::{LabelMap, TaintList};
use crate::util::duration::GoDuration;

/// The kubelet's command line. Doc comments are the `--help` text.
#[derive(Debug, Clone, Default, PartialEq, StructOpt)]
#[structopt(
    name = "rkubelet",
    settings = &[structopt::clap::AppSettings::DisableVersion],
    about = "rkubelet: a Kubernetes node agent (kubelet) that runs the pods bound to its node \
             through a CRI v1 container runtime.\n\nFlags override the matching fields of the \
             --config file (a KubeletConfiguration, kubelet.config.k8s.io/v1beta1) and of the \
             --config-dir drop-ins.",
    after_help = "The upstream kubelet's (v1.33) other flags are accepted too, so existing units \
                  and kubeadm's flags work; they have no effect, and one warning at start-up \
                  names those given (see the README)."
)]
pub struct KubeletFlags {
    /// Path to the KubeletConfiguration file (YAML or JSON). Flags given on the command line
    /// override the values it holds; relative paths in it are resolved against its directory.
    #[structopt(long, parse(from_os_str))]
    pub config: Option<PathBuf>,

    /// Directory of drop-in KubeletConfiguration files: every *.conf file in it (and in the
    /// directories below it), in name order, is laid over --config and the drop-ins before
    /// it; relative paths in a drop-in are resolved against its directory. Flags override
    /// them all
    #[structopt(long, parse(from_os_str))]
    pub config_dir: Option<PathBuf>,

    /// Endpoint of the CRI runtime service, e.g. unix:///run/containerd/containerd.sock
    /// [default: unix:///run/containerd/containerd.sock] (config: containerRuntimeEndpoint)
    #[structopt(long)]
    pub container_runtime_endpoint: Option<String>,

    /// Endpoint of the CRI image service [default: the runtime endpoint]
    /// (config: imageServiceEndpoint)
    #[structopt(long)]
    pub image_service_endpoint: Option<String>,

    /// Directory (or single file) of static pod manifests to run (config: staticPodPath)
    #[structopt(long, parse(from_os_str))]
    pub pod_manifest_path: Option<PathBuf>,

    /// URL serving static pod manifests to run (config: staticPodURL)
    #[structopt(long)]
    pub manifest_url: Option<String>,

    /// HTTP headers for --manifest-url as comma-separated key:value pairs, e.g.
    /// 'a:hello,b:again,c:world'. Repeatable; a name given twice gets both values in order
    /// (config: staticPodURLHeader)
    #[structopt(long, number_of_values = 1)]
    pub manifest_url_header: Vec<HeaderList>,

    /// Directory for the kubelet's state: pod volumes, plugins, checkpoints
    /// [default: /var/lib/kubelet]
    #[structopt(long, parse(from_os_str))]
    pub root_dir: Option<PathBuf>,

    /// Directory of the TLS certificates; ignored when tlsCertFile and tlsPrivateKeyFile are
    /// set [default: <root-dir>/pki]
    #[structopt(long, parse(from_os_str))]
    pub cert_dir: Option<PathBuf>,

    /// Directory for pod logs, <dir>/<namespace>_<name>_<uid>/<container>/<n>.log
    /// [default: /var/log/pods] (config: podLogsDir)
    #[structopt(long, parse(from_os_str))]
    pub pod_logs_dir: Option<PathBuf>,

    /// Use this name for the node instead of the machine's hostname
    #[structopt(long)]
    pub hostname_override: Option<String>,

    /// IP address (or comma-separated IPv4,IPv6 pair) of the node, reported in its status
    #[structopt(long)]
    pub node_ip: Option<String>,

    /// Most pods this kubelet runs [default: 110] (config: maxPods)
    #[structopt(long)]
    pub max_pods: Option<i32>,

    /// Timeout of every CRI call except long-running ones (pull, logs, exec, attach)
    /// [default: 2m] (config: runtimeRequestTimeout)
    #[structopt(long)]
    pub runtime_request_timeout: Option<GoDuration>,

    /// Longest time between syncs of running containers and config [default: 1m]
    /// (config: syncFrequency)
    #[structopt(long)]
    pub sync_frequency: Option<GoDuration>,

    /// How often the static pod path is read for changes [default: 20s]
    /// (config: fileCheckFrequency)
    #[structopt(long)]
    pub file_check_frequency: Option<GoDuration>,

    /// How often the manifest URL is polled for changes [default: 20s]
    /// (config: httpCheckFrequency)
    #[structopt(long)]
    pub http_check_frequency: Option<GoDuration>,

    /// Run the static and API pods once, then exit instead of serving (config: runOnce)
    #[structopt(long, require_equals = true, value_name = "true|false")]
    pub runonce: Option<Option<GoBool>>,

    /// Print the kubelet version (`Kubernetes v1.33.0+rkubelet-<version>`) and exit; `=raw`
    /// prints its fields one by one
    #[structopt(long, require_equals = true, value_name = "true|false|raw")]
    pub version: Option<Option<String>>,

    /// Log verbosity, klog style: 0 info; 1-3 adds debug; 4 and up adds trace
    /// (config: logging.verbosity)
    #[structopt(short = "v", long = "v", value_name = "level")]
    pub v: Option<u32>,

    /// kubeconfig with the API server's address and credentials; without it the kubelet runs
    /// standalone (static pods only)
    #[structopt(long, parse(from_os_str))]
    pub kubeconfig: Option<PathBuf>,

    /// kubeconfig used to request a client certificate when --kubeconfig does not exist yet
    #[structopt(long, parse(from_os_str))]
    pub bootstrap_kubeconfig: Option<PathBuf>,

    /// Cluster DNS server IPs for pods, comma-separated; repeatable (config: clusterDNS)
    #[structopt(long, number_of_values = 1)]
    pub cluster_dns: Vec<String>,

    /// Cluster DNS domain added to pods' search list, e.g. cluster.local
    /// (config: clusterDomain)
    #[structopt(long)]
    pub cluster_domain: Option<String>,

    /// Resolver file pods' DNS settings start from; "" disables it
    /// [default: /etc/resolv.conf] (config: resolvConf)
    #[structopt(long, parse(from_os_str))]
    pub resolv_conf: Option<PathBuf>,

    /// rkubelet extension, not an upstream flag: number of pod worker threads, each syncing
    /// one pod at a time (1-256) [default: 8]
    #[structopt(long)]
    pub pod_workers: Option<usize>,

    /// Driver that manages cgroups: cgroupfs (systemd is not supported) [default: cgroupfs]
    /// (config: cgroupDriver)
    #[structopt(long)]
    pub cgroup_driver: Option<String>,

    /// Create the QoS cgroup hierarchy (kubepods, burstable, besteffort) and pod cgroups
    /// [default: true] (config: cgroupsPerQOS)
    #[structopt(long)]
    pub cgroups_per_qos: Option<bool>,

    /// Root cgroup for pods' cgroups [default: /] (config: cgroupRoot)
    #[structopt(long)]
    pub cgroup_root: Option<String>,

    /// rkubelet extension, not an upstream flag: number of threads that run probes (1-64)
    /// [default: 4]
    #[structopt(long)]
    pub prober_workers: Option<usize>,

    /// rkubelet extension, not an upstream flag: how often image garbage collection runs,
    /// e.g. 5m, 30s (upstream fixes it at 5m) [default: 5m]
    #[structopt(long)]
    pub image_gc_period: Option<GoDuration>,

    /// IP address the kubelet API serves on (0.0.0.0 for all) [default: 0.0.0.0]
    /// (config: address)
    #[structopt(long)]
    pub address: Option<String>,

    /// Port of the authenticated kubelet API [default: 10250] (config: port)
    #[structopt(long)]
    pub port: Option<i32>,

    /// Port of the unauthenticated read-only API, 0 to disable [default: 0]
    /// (config: readOnlyPort)
    #[structopt(long)]
    pub read_only_port: Option<i32>,

    /// Serving certificate of the kubelet API; without it a self-signed one is made in
    /// --cert-dir (config: tlsCertFile)
    #[structopt(long, parse(from_os_str))]
    pub tls_cert_file: Option<PathBuf>,

    /// Key of --tls-cert-file (config: tlsPrivateKeyFile)
    #[structopt(long, parse(from_os_str))]
    pub tls_private_key_file: Option<PathBuf>,

    /// CA bundle that client certificates of kubelet API callers must chain to
    /// (config: authentication.x509.clientCAFile)
    #[structopt(long, parse(from_os_str))]
    pub client_ca_file: Option<PathBuf>,

    /// Allow anonymous kubelet API requests [default: false]
    /// (config: authentication.anonymous.enabled)
    #[structopt(long, value_name = "true|false")]
    pub anonymous_auth: Option<bool>,

    /// Check bearer tokens through the TokenReview API [default: true]
    /// (config: authentication.webhook.enabled)
    #[structopt(long, value_name = "true|false")]
    pub authentication_token_webhook: Option<bool>,

    /// Authorization of kubelet API requests: Webhook or AlwaysAllow [default: Webhook]
    /// (config: authorization.mode)
    #[structopt(long)]
    pub authorization_mode: Option<String>,

    /// The path to the credential provider plugin config file (CredentialProviderConfig)
    #[structopt(long, parse(from_os_str))]
    pub image_credential_provider_config: Option<PathBuf>,

    /// The path to the directory where credential provider plugin binaries are located
    #[structopt(long, parse(from_os_str))]
    pub image_credential_provider_bin_dir: Option<PathBuf>,

    /// DEPRECATED: the container runtime chooses the sandbox image; as upstream, this only
    /// keeps the named image from image garbage collection
    #[structopt(long)]
    pub pod_infra_container_image: Option<String>,

    /// Labels to add when registering the node, comma-separated key=value pairs (repeatable).
    /// Keys in the kubernetes.io and k8s.io namespaces only in kubelet.kubernetes.io,
    /// node.kubernetes.io or the few a kubelet may set, as upstream
    #[structopt(long, number_of_values = 1)]
    pub node_labels: Vec<LabelMap>,

    /// Taints to register the node with, comma-separated "<key>=<value>:<effect>"; the last
    /// flag given counts (config: registerWithTaints)
    #[structopt(long, number_of_values = 1)]
    pub register_with_taints: Vec<TaintList>,

    /// Unique identifier of the node in a machine database, i.e. a cloud provider's
    /// "<provider>://<id>" (config: providerID)
    #[structopt(long)]
    pub provider_id: Option<String>,

    /// A container's log is rotated when it reaches this size [default: 10Mi]
    /// (config: containerLogMaxSize)
    #[structopt(long)]
    pub container_log_max_size: Option<String>,

    /// Log files kept per container, the current one included; at least 2 [default: 5]
    /// (config: containerLogMaxFiles)
    #[structopt(long)]
    pub container_log_max_files: Option<i32>,

    /// Hard eviction thresholds, "<signal><<quantity or %>" comma-separated, replacing the
    /// whole setting, e.g. "memory.available<100Mi,nodefs.available<10%"
    /// [default: memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,
    /// imagefs.available<15%,imagefs.inodesFree<5%] (config: evictionHard)
    #[structopt(long)]
    pub eviction_hard: Option<crate::config::node_flags::ThresholdMap>,

    /// Soft eviction thresholds, as --eviction-hard; each needs a grace period
    /// (config: evictionSoft)
    #[structopt(long)]
    pub eviction_soft: Option<crate::config::node_flags::ThresholdMap>,

    /// How long each soft threshold must hold before pods are evicted, "<signal>=<duration>"
    /// comma-separated, e.g. "memory.available=1m30s" (config: evictionSoftGracePeriod)
    #[structopt(long)]
    pub eviction_soft_grace_period: Option<crate::config::node_flags::SignalMap>,

    /// Once a threshold is met, how much beyond it must be free again, "<signal>=<quantity>"
    /// comma-separated (config: evictionMinimumReclaim)
    #[structopt(long)]
    pub eviction_minimum_reclaim: Option<crate::config::node_flags::SignalMap>,

    /// How long a pressure condition stays after its threshold is no longer met
    /// [default: 5m] (config: evictionPressureTransitionPeriod)
    #[structopt(long)]
    pub eviction_pressure_transition_period: Option<GoDuration>,

    /// Longest grace period, in seconds, of pods evicted for a soft threshold; 0 uses the
    /// pod's own [default: 0] (config: evictionMaxPodGracePeriod)
    #[structopt(long, allow_hyphen_values = true)]
    pub eviction_max_pod_grace_period: Option<i32>,

    /// Evict pods above their ephemeral-storage limits and emptyDirs above their sizeLimit
    /// [default: true] (config: localStorageCapacityIsolation)
    #[structopt(long)]
    pub local_storage_capacity_isolation: Option<bool>,

    /// Images listed in the node's status, largest first; -1 lists all, 0 none [default: 50]
    /// (config: nodeStatusMaxImages)
    #[structopt(long, allow_hyphen_values = true)]
    pub node_status_max_images: Option<i32>,

    /// Create the Node object in the API server; with false the Node must exist already
    /// [default: true] (config: registerNode)
    #[structopt(long)]
    pub register_node: Option<bool>,

    /// Renew the client certificate through CertificateSigningRequests before it expires
    /// [default: false] (config: rotateCertificates)
    #[structopt(long)]
    pub rotate_certificates: Option<bool>,

    /// "external" when a cloud-controller-manager initialises the node (it registers with
    /// the node.cloudprovider.kubernetes.io/uninitialized taint); in-tree providers do not exist
    #[structopt(long)]
    pub cloud_provider: Option<String>,
}

impl KubeletFlags {
    /// What `--version` asks for: `None` when absent or `=false`, `Some(raw)` otherwise.
    pub fn version_requested(&self) -> Result<Option<bool>, String> {
        match self.version.as_ref() {
            None => Ok(None),
            Some(None) => Ok(Some(false)),
            Some(Some(value)) if value == "raw" => Ok(Some(true)),
            Some(Some(value)) => Ok(parse_go_bool(value)
                .map_err(|e| format!("invalid value {value:?} for --version: {e}"))?
                .then_some(false)),
        }
    }

    /// `--runonce`: `Some(true)` when given bare or `=true`, `Some(false)` for `=false`,
    /// `None` when absent.
    pub fn run_once(&self) -> Option<bool> {
        self.runonce.map(|value| value.is_none_or(|GoBool(b)| b))
    }
}

/// The value of a boolean flag, parsed like Go's `strconv.ParseBool` (`true`, `1`, `f`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoBool(pub bool);

impl FromStr for GoBool {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_bool(s).map(GoBool)
    }
}

/// One `--manifest-url-header` value: comma-separated `key:value` pairs, in order.
///
/// Parsed like upstream's `ColonSeparatedMultimapStringString`: empty items are skipped,
/// keys and values are trimmed, and a value may itself contain colons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl FromStr for HeaderList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pairs = Vec::new();
        for item in s.split(',').filter(|item| !item.is_empty()) {
            let (key, value) = item
                .split_once(':')
                .ok_or_else(|| format!("malformed pair {item:?}, expected key:value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("malformed pair {item:?}, the header name is empty"));
            }
            pairs.push((key.to_string(), value.trim().to_string()));
        }
        Ok(HeaderList(pairs))
    }
}

/// Parses a boolean flag value the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}, expected true or false")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use structopt::clap::ErrorKind;

    fn parse(args: &[&str]) -> Result<KubeletFlags, structopt::clap::Error> {
        KubeletFlags::from_iter_safe(std::iter::once("rkubelet").chain(args.iter().copied()))
    }

    #[test]
    fn no_flags_means_nothing_given() {
        assert_eq!(parse(&[]).unwrap(), KubeletFlags::default());
    }

    #[test]
    fn both_value_syntaxes_work() {
        for args in [
            &["--max-pods=20", "--sync-frequency=1m30s", "--v=3"][..],
            &["--max-pods", "20", "--sync-frequency", "1m30s", "--v", "3"][..],
            &["--max-pods", "20", "--sync-frequency", "1m30s", "-v", "3"][..],
            &["--max-pods", "20", "--sync-frequency", "1m30s", "-v=3"][..],
            &["--max-pods", "20", "--sync-frequency", "1m30s", "-v3"][..],
        ] {
            let flags = parse(args).unwrap();
            assert_eq!(flags.max_pods, Some(20), "{args:?}");
            assert_eq!(
                flags.sync_frequency,
                Some(GoDuration::from_secs(90)),
                "{args:?}"
            );
            assert_eq!(flags.v, Some(3), "{args:?}");
        }
    }

    #[test]
    fn upstream_flag_names_parse() {
        let flags = parse(&[
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///run/crio/crio.sock",
            "--image-service-endpoint=unix:///run/img.sock",
            "--pod-manifest-path=/etc/kubernetes/manifests",
            "--manifest-url=http://example.com/pods",
            "--manifest-url-header=a:hello,b:again",
            "--manifest-url-header",
            "b:beautiful",
            "--root-dir=/srv/kubelet",
            "--cert-dir=/srv/pki",
            "--pod-logs-dir=/srv/logs/pods",
            "--hostname-override=node-1",
            "--node-ip=10.0.0.5",
            "--runtime-request-timeout=30s",
            "--file-check-frequency=5s",
            "--http-check-frequency=500ms",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--cluster-dns=10.96.0.10,fd00::10",
            "--cluster-dns",
            "10.96.0.11",
            "--cluster-domain=cluster.local",
            "--resolv-conf=/run/systemd/resolve/resolv.conf",
            "--pod-workers=16",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        ])
        .unwrap();
        assert_eq!(flags.config, Some("/var/lib/kubelet/config.yaml".into()));
        assert_eq!(
            flags.manifest_url_header,
            vec![
                HeaderList(vec![
                    ("a".into(), "hello".into()),
                    ("b".into(), "again".into())
                ]),
                HeaderList(vec![("b".into(), "beautiful".into())]),
            ]
        );
        assert_eq!(flags.cluster_dns, vec!["10.96.0.10,fd00::10", "10.96.0.11"]);
        assert_eq!(
            flags.http_check_frequency,
            Some(GoDuration::from_millis(500))
        );
        assert_eq!(flags.pod_workers, Some(16));
        assert_eq!(
            flags.pod_infra_container_image.as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
    }

    #[test]
    fn runonce_takes_an_optional_attached_bool() {
        let cases: &[(&[&str], Option<bool>)] = &[
            (&[], None),
            (&["--runonce"], Some(true)),
            (&["--runonce=true"], Some(true)),
            (&["--runonce=false"], Some(false)),
            (&["--runonce=0"], Some(false)),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).unwrap().run_once(), *want, "{args:?}");
        }
        // A detached word is not the flag's value (as with pflag), so it is rejected.
        assert!(parse(&["--runonce", "false"]).is_err());
        assert!(parse(&["--runonce=maybe"]).is_err());
    }

    #[test]
    fn bad_flags_are_clap_errors() {
        let cases: &[(&[&str], ErrorKind)] = &[
            (&["--help"], ErrorKind::HelpDisplayed),
            (&["--no-such-flag"], ErrorKind::UnknownArgument),
            (&["--max-pods=lots"], ErrorKind::ValueValidation),
            (&["--sync-frequency=10"], ErrorKind::ValueValidation),
            (
                &["--manifest-url-header=nocolon"],
                ErrorKind::ValueValidation,
            ),
            (&["stray"], ErrorKind::UnknownArgument),
        ];
        for (args, kind) in cases {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind, *kind, "{args:?}: {err}");
        }
        let err = parse(&["--sync-frequency=10"]).unwrap_err();
        assert!(err.message.contains("--sync-frequency"), "{}", err.message);
        assert!(err.message.contains("missing unit"), "{}", err.message);
    }

    #[test]
    fn version_takes_an_optional_go_bool_or_raw() {
        let asked = |args: &[&str]| parse(args).unwrap().version_requested();
        assert_eq!(asked(&[]), Ok(None));
        assert_eq!(asked(&["--version"]), Ok(Some(false)));
        assert_eq!(asked(&["--version=true"]), Ok(Some(false)));
        assert_eq!(asked(&["--version=raw"]), Ok(Some(true)));
        assert_eq!(asked(&["--version=false"]), Ok(None));
        assert!(asked(&["--version=maybe"])
            .unwrap_err()
            .contains("--version"));
    }

    #[test]
    fn help_marks_the_rkubelet_extension() {
        let err = parse(&["--help"]).unwrap_err();
        assert!(err.message.contains("--pod-workers"), "{}", err.message);
        assert!(
            err.message.contains("rkubelet extension"),
            "{}",
            err.message
        );
        assert!(err.message.contains("DEPRECATED"), "{}", err.message);
    }

    #[test]
    fn header_lists_parse_like_upstream() {
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(&str, Option<Pairs>)] = &[
            ("a:1", Some(&[("a", "1")])),
            (" a : 1 ,b:2", Some(&[("a", "1"), ("b", "2")])),
            ("a:1,,b:2,", Some(&[("a", "1"), ("b", "2")])),
            ("auth:Bearer x:y", Some(&[("auth", "Bearer x:y")])),
            ("", Some(&[])),
            ("a", None),
            (":v", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<HeaderList>().ok();
            let want = want.map(|pairs| {
                HeaderList(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            });
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn go_bools() {
        for (s, want) in [("1", true), ("True", true), ("F", false), ("false", false)] {
            assert_eq!(parse_go_bool(s), Ok(want));
        }
        assert!(parse_go_bool("yes").is_err());
    }
}
