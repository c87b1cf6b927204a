//! The `--config` file: upstream's `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`),
//! every field under its upstream camelCase name, read from YAML or JSON.
//!
//! Unknown fields are errors, so a typo is caught while a kubeadm-generated file is accepted.
//! Every top-level field is an `Option`: `None` means "not in the file", which is how
//! [`super::settings`] knows whether to use the file's value or a default. [`load`] reads,
//! checks and validates a file; [`drop_in`] lays the `--config-dir` drop-ins over it, and
//! [`sources`] remembers which file (or flag) set which value, for errors;
//! [`KubeletConfiguration::set_defaults`] fills in upstream's defaults. Runs on the main
//! thread at start-up.

pub(crate) mod defaults;
pub mod drop_in;
mod load;
mod nested;
pub mod sources;
pub(crate) mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::load::{load, parse, read};
pub use self::nested::{
    CrashLoopBackOffConfig, FormatOptions, KubeletAnonymousAuthentication, KubeletAuthentication,
    KubeletAuthorization, KubeletWebhookAuthentication, KubeletWebhookAuthorization,
    KubeletX509Authentication, LoggingConfiguration, MemoryReservation, MemorySwapConfiguration,
    OutputRoutingOptions, ShutdownGracePeriodByPodPriority, Taint, TimeOrMetaDuration,
    TracingConfiguration, UserNamespaces, VModuleItem,
};
use crate::util::duration::GoDuration;

/// The only `apiVersion` upstream defines for `KubeletConfiguration`.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The `kind` of a kubelet configuration document.
pub const KIND: &str = "KubeletConfiguration";

/// Upstream's `KubeletConfiguration`, field for field. Doc comments give the upstream default
/// that [`KubeletConfiguration::set_defaults`] applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// `apiVersion`: must be [`API_VERSION`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `kind`: must be [`KIND`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,

    // --- Server, TLS and API access ---
    /// `enableServer`: serve the kubelet API (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_server: Option<bool>,
    /// `address` the kubelet API listens on (default 0.0.0.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `port` of the kubelet API (default 10250).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `readOnlyPort`: unauthenticated read-only port, 0 disables (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_port: Option<i32>,
    /// `tlsCertFile`: serving certificate (default: self-signed in the cert dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    /// `tlsPrivateKeyFile`: key of `tlsCertFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_private_key_file: Option<String>,
    /// `tlsCipherSuites`: Go cipher suite names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Vec<String>>,
    /// `tlsCurvePreferences`: Go `tls.CurveID` numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_curve_preferences: Option<Vec<i32>>,
    /// `tlsMinVersion`: `VersionTLS12` or `VersionTLS13` (and the older two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    /// `rotateCertificates`: renew the client certificate through CSRs (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    /// `serverTLSBootstrap`: get the serving certificate through a CSR (default false).
    #[serde(rename = "serverTLSBootstrap", skip_serializing_if = "Option::is_none")]
    pub server_tls_bootstrap: Option<bool>,
    /// `authentication` of kubelet API requests.
    pub authentication: KubeletAuthentication,
    /// `authorization` of kubelet API requests.
    pub authorization: KubeletAuthorization,
    /// `enableDebuggingHandlers`: logs, exec, attach, port-forward endpoints (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_debugging_handlers: Option<bool>,
    /// `enableContentionProfiling` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_contention_profiling: Option<bool>,
    /// `healthzPort`: localhost healthz port, 0 disables (default 10248).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz_port: Option<i32>,
    /// `healthzBindAddress` (default 127.0.0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz_bind_address: Option<String>,
    /// `enableSystemLogHandler`: `/logs/` endpoint (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_system_log_handler: Option<bool>,
    /// `enableSystemLogQuery`: node log query on `/logs/` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_system_log_query: Option<bool>,
    /// `enableProfilingHandler`: `/debug/pprof/` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_profiling_handler: Option<bool>,
    /// `enableDebugFlagsHandler`: `/debug/flags/v` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_debug_flags_handler: Option<bool>,
    /// `contentType` of API requests (default application/vnd.kubernetes.protobuf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `kubeAPIQPS` (default 50).
    #[serde(rename = "kubeAPIQPS", skip_serializing_if = "Option::is_none")]
    pub kube_api_qps: Option<i32>,
    /// `kubeAPIBurst` (default 100).
    #[serde(rename = "kubeAPIBurst", skip_serializing_if = "Option::is_none")]
    pub kube_api_burst: Option<i32>,
    /// `eventRecordQPS`: event creations per second, 0 unlimited (default 50).
    #[serde(rename = "eventRecordQPS", skip_serializing_if = "Option::is_none")]
    pub event_record_qps: Option<i32>,
    /// `eventBurst` (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_burst: Option<i32>,

    // --- Pod sources and sync ---
    /// `staticPodPath`: directory or file of static pod manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_pod_path: Option<String>,
    /// `staticPodURL`: URL of static pod manifests.
    #[serde(rename = "staticPodURL", skip_serializing_if = "Option::is_none")]
    pub static_pod_url: Option<String>,
    /// `staticPodURLHeader`: HTTP headers for `staticPodURL`.
    #[serde(rename = "staticPodURLHeader", skip_serializing_if = "Option::is_none")]
    pub static_pod_url_header: Option<BTreeMap<String, Vec<String>>>,
    /// `syncFrequency`: longest time between pod syncs (default 1m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_frequency: Option<GoDuration>,
    /// `fileCheckFrequency`: static pod path poll interval (default 20s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_check_frequency: Option<GoDuration>,
    /// `httpCheckFrequency`: static pod URL poll interval (default 20s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_check_frequency: Option<GoDuration>,
    /// `runOnce`: run the pods once and exit (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_once: Option<bool>,
    /// `podHousekeepingPeriod`: pod cleanup interval (newest upstream; default 2s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_housekeeping_period: Option<GoDuration>,
    /// `configMapAndSecretChangeDetectionStrategy`: `Get`, `Cache` or `Watch` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map_and_secret_change_detection_strategy: Option<String>,

    // --- Container runtime and images ---
    /// `containerRuntimeEndpoint` (default unix:///run/containerd/containerd.sock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime_endpoint: Option<String>,
    /// `imageServiceEndpoint` (default: `containerRuntimeEndpoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_service_endpoint: Option<String>,
    /// `runtimeRequestTimeout`: timeout of non-streaming CRI calls (default 2m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_request_timeout: Option<GoDuration>,
    /// `registryPullQPS`: image pulls per second, 0 unlimited (default 5).
    #[serde(rename = "registryPullQPS", skip_serializing_if = "Option::is_none")]
    pub registry_pull_qps: Option<i32>,
    /// `registryBurst` (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_burst: Option<i32>,
    /// `imagePullCredentialsVerificationPolicy`: `NeverVerify`, `NeverVerifyPreloadedImages`,
    /// `NeverVerifyAllowlistedImages` or `AlwaysVerify`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_credentials_verification_policy: Option<String>,
    /// `preloadedImagesVerificationAllowlist`: images exempt from re-verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preloaded_images_verification_allowlist: Option<Vec<String>>,
    /// `serializeImagePulls`: one pull at a time (default true unless
    /// `maxParallelImagePulls` > 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serialize_image_pulls: Option<bool>,
    /// `maxParallelImagePulls` (default unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel_image_pulls: Option<i32>,
    /// `imageMinimumGCAge`: unused images younger than this are kept (default 2m).
    #[serde(rename = "imageMinimumGCAge", skip_serializing_if = "Option::is_none")]
    pub image_minimum_gc_age: Option<GoDuration>,
    /// `imageMaximumGCAge`: unused images older than this are removed, 0 off (default 0s).
    #[serde(rename = "imageMaximumGCAge", skip_serializing_if = "Option::is_none")]
    pub image_maximum_gc_age: Option<GoDuration>,
    /// `imageGCHighThresholdPercent`: disk use that starts image GC (default 85).
    #[serde(
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// `imageGCLowThresholdPercent`: disk use image GC frees down to (default 80).
    #[serde(
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// `streamingConnectionIdleTimeout`: deprecated, no effect (default 4h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming_connection_idle_timeout: Option<GoDuration>,

    // --- Node status and lease ---
    /// `nodeStatusUpdateFrequency`: how often node status is computed (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_status_update_frequency: Option<GoDuration>,
    /// `nodeStatusReportFrequency`: longest time between unchanged status posts (default 5m,
    /// or `nodeStatusUpdateFrequency` when that is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_status_report_frequency: Option<GoDuration>,
    /// `nodeLeaseDurationSeconds` (default 40).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_lease_duration_seconds: Option<i32>,
    /// `nodeStatusMaxImages`: images listed in node status, -1 no cap (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_status_max_images: Option<i32>,
    /// `registerNode`: create the Node object (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_node: Option<bool>,
    /// `registerWithTaints`: taints set when the node registers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_with_taints: Option<Vec<Taint>>,
    /// `providerID`: the node's cloud provider ID.
    #[serde(rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// `volumeStatsAggPeriod`: volume disk usage refresh interval (default 1m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_stats_agg_period: Option<GoDuration>,

    // --- Pods, DNS and networking ---
    /// `maxPods` (default 110).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i32>,
    /// `podsPerCore`: pods per CPU core, 0 no limit (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods_per_core: Option<i32>,
    /// `podPidsLimit`: PIDs per pod, -1 unlimited (default -1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_pids_limit: Option<i64>,
    /// `podCIDR`: pod IP range in standalone mode.
    #[serde(rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// `podLogsDir` (default /var/log/pods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_logs_dir: Option<String>,
    /// `clusterDomain`: DNS domain appended to pods' search list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    /// `clusterDNS`: cluster DNS server IPs.
    #[serde(rename = "clusterDNS", skip_serializing_if = "Option::is_none")]
    pub cluster_dns: Option<Vec<String>>,
    /// `resolvConf`: base resolver file for pods, "" disables (default /etc/resolv.conf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    /// `hairpinMode`: `promiscuous-bridge` (default), `hairpin-veth` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hairpin_mode: Option<String>,
    /// `makeIPTablesUtilChains` (default true).
    #[serde(
        rename = "makeIPTablesUtilChains",
        skip_serializing_if = "Option::is_none"
    )]
    pub make_iptables_util_chains: Option<bool>,
    /// `iptablesMasqueradeBit`: deprecated, no effect (default 14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_masquerade_bit: Option<i32>,
    /// `iptablesDropBit`: deprecated, no effect (default 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptables_drop_bit: Option<i32>,
    /// `allowedUnsafeSysctls`: unsafe sysctls (or `prefix*` patterns) pods may set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// `seccompDefault`: `RuntimeDefault` seccomp for every workload (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_default: Option<bool>,
    /// `userNamespaces` settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_namespaces: Option<UserNamespaces>,

    // --- Cgroups, resource managers and OS ---
    /// `kubeletCgroups`: cgroup to put the kubelet in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet_cgroups: Option<String>,
    /// `systemCgroups`: cgroup for non-kernel processes; needs `cgroupRoot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cgroups: Option<String>,
    /// `cgroupRoot`: root cgroup for pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_root: Option<String>,
    /// `cgroupsPerQOS`: QoS cgroup hierarchy (default true).
    #[serde(rename = "cgroupsPerQOS", skip_serializing_if = "Option::is_none")]
    pub cgroups_per_qos: Option<bool>,
    /// `cgroupDriver`: `cgroupfs` (default) or `systemd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_driver: Option<String>,
    /// `cpuManagerPolicy`: `none` (default) or `static`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_policy: Option<String>,
    /// `singleProcessOOMKill`: no `memory.oom.group` on cgroup v2.
    #[serde(
        rename = "singleProcessOOMKill",
        skip_serializing_if = "Option::is_none"
    )]
    pub single_process_oom_kill: Option<bool>,
    /// `cpuManagerPolicyOptions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_policy_options: Option<BTreeMap<String, String>>,
    /// `cpuManagerReconcilePeriod` (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_manager_reconcile_period: Option<GoDuration>,
    /// `draManagerReconcilePeriod` (newest upstream; default 60s).
    #[serde(
        rename = "draManagerReconcilePeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub dra_manager_reconcile_period: Option<GoDuration>,
    /// `memoryManagerPolicy`: `None` (default) or `Static`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_manager_policy: Option<String>,
    /// `topologyManagerPolicy`: `none` (default), `best-effort`, `restricted`,
    /// `single-numa-node`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_policy: Option<String>,
    /// `topologyManagerScope`: `container` (default) or `pod`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_scope: Option<String>,
    /// `topologyManagerPolicyOptions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_manager_policy_options: Option<BTreeMap<String, String>>,
    /// `qosReserved`: resource to percentage reserved for guaranteed pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_reserved: Option<BTreeMap<String, String>>,
    /// `cpuCFSQuota`: enforce CPU limits with CFS quota (default true).
    #[serde(rename = "cpuCFSQuota", skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota: Option<bool>,
    /// `cpuCFSQuotaPeriod`: 1ms to 1s (default 100ms).
    #[serde(rename = "cpuCFSQuotaPeriod", skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota_period: Option<GoDuration>,
    /// `maxOpenFiles` of the kubelet process (default 1000000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<i64>,
    /// `oomScoreAdj` of the kubelet process, -1000 to 1000 (default -999).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// `protectKernelDefaults`: fail instead of fixing kernel settings (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect_kernel_defaults: Option<bool>,
    /// `failSwapOn`: refuse to start with swap on (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_swap_on: Option<bool>,
    /// `memorySwap` settings.
    pub memory_swap: MemorySwapConfiguration,
    /// `failCgroupV1`: refuse to start on cgroup v1 (default false).
    #[serde(rename = "failCgroupV1", skip_serializing_if = "Option::is_none")]
    pub fail_cgroup_v1: Option<bool>,
    /// `memoryThrottlingFactor` for cgroup v2 `memory.high` (default 0.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_throttling_factor: Option<f64>,
    /// `memoryReservationPolicy`: `None` (default) or `TieredReservation` (newest upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation_policy: Option<String>,
    /// `reservedMemory`: per-NUMA-node reservations for the memory manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_memory: Option<Vec<MemoryReservation>>,
    /// `localStorageCapacityIsolation`: ephemeral storage limits (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_storage_capacity_isolation: Option<bool>,
    /// `kernelMemcgNotification`: memcg notifications for eviction (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_memcg_notification: Option<bool>,

    // --- Node allocatable and eviction ---
    /// `systemReserved`: resources kept for the OS (`cpu: 200m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_reserved: Option<BTreeMap<String, String>>,
    /// `kubeReserved`: resources kept for Kubernetes daemons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_reserved: Option<BTreeMap<String, String>>,
    /// `reservedSystemCPUs`: CPU list kept for system and Kubernetes daemons.
    #[serde(rename = "reservedSystemCPUs", skip_serializing_if = "Option::is_none")]
    pub reserved_system_cpus: Option<String>,
    /// `systemReservedCgroup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_reserved_cgroup: Option<String>,
    /// `kubeReservedCgroup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_reserved_cgroup: Option<String>,
    /// `enforceNodeAllocatable` (default `[pods]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_node_allocatable: Option<Vec<String>>,
    /// `evictionHard`: signal to threshold, e.g. `memory.available: 100Mi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// `evictionSoft`: signal to threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// `evictionSoftGracePeriod`: signal to grace period (`1m30s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    /// `evictionPressureTransitionPeriod` (default 5m).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_pressure_transition_period: Option<GoDuration>,
    /// `evictionMaxPodGracePeriod`: seconds, cap for soft evictions (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// `evictionMinimumReclaim`: signal to quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    /// `mergeDefaultEvictionSettings` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_default_eviction_settings: Option<bool>,

    // --- Logs, shutdown, features and the rest ---
    /// `containerLogMaxSize`: rotate a container log at this size (default 10Mi).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_size: Option<String>,
    /// `containerLogMaxFiles` kept per container (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_files: Option<i32>,
    /// `containerLogMaxWorkers`: concurrent log rotations (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_workers: Option<i32>,
    /// `containerLogMonitorInterval` (default 10s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_monitor_interval: Option<GoDuration>,
    /// `logging` options; `logging.verbosity` is what `--v` overrides.
    pub logging: LoggingConfiguration,
    /// `shutdownGracePeriod` for pods on node shutdown (default 0s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period: Option<GoDuration>,
    /// `shutdownGracePeriodCriticalPods`: the part of it kept for critical pods (default 0s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period_critical_pods: Option<GoDuration>,
    /// `shutdownGracePeriodByPodPriority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period_by_pod_priority: Option<Vec<ShutdownGracePeriodByPodPriority>>,
    /// `crashLoopBackOff` settings.
    pub crash_loop_back_off: CrashLoopBackOffConfig,
    /// `featureGates`: feature name to on/off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    /// `enableControllerAttachDetach` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_controller_attach_detach: Option<bool>,
    /// `volumePluginDir` (default /usr/libexec/kubernetes/kubelet-plugins/volume/exec/).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_plugin_dir: Option<String>,
    /// `showHiddenMetricsForVersion`: `<major>.<minor>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// `tracing`: OpenTelemetry export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfiguration>,
}

impl KubeletConfiguration {
    /// An empty configuration with `apiVersion` and `kind` set, used when there is no file.
    pub fn new() -> Self {
        KubeletConfiguration {
            api_version: Some(API_VERSION.to_string()),
            kind: Some(KIND.to_string()),
            ..KubeletConfiguration::default()
        }
    }
}

/// A configuration document from a test's YAML.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{parse, KubeletConfiguration};
    use crate::config::error::ConfigError;

    pub(super) const HEADER: &str =
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    pub(super) fn parse_str(body: &str) -> Result<KubeletConfiguration, ConfigError> {
        parse(
            &format!("{HEADER}{body}"),
            Path::new("/etc/kubernetes/kubelet.yaml"),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::Path;

    use super::test_support::parse_str;
    use super::*;

    /// Every upstream v1beta1 field, each with a value of the right type.
    const ALL_FIELDS: &str = r#"
enableServer: true
staticPodPath: /etc/kubernetes/manifests
podLogsDir: /var/log/pods
syncFrequency: 1m
fileCheckFrequency: 20s
httpCheckFrequency: 20s
staticPodURL: http://example.com/pods
staticPodURLHeader: {Authorization: [Bearer x]}
address: 0.0.0.0
port: 10250
readOnlyPort: 0
tlsCertFile: /pki/kubelet.crt
tlsPrivateKeyFile: /pki/kubelet.key
tlsCipherSuites: [TLS_AES_128_GCM_SHA256]
tlsCurvePreferences: [23, 29]
tlsMinVersion: VersionTLS12
rotateCertificates: true
serverTLSBootstrap: true
authentication: {x509: {clientCAFile: /pki/ca.crt}, webhook: {enabled: true, cacheTTL: 2m}, anonymous: {enabled: false}}
authorization: {mode: Webhook, webhook: {cacheAuthorizedTTL: 5m, cacheUnauthorizedTTL: 30s}}
registryPullQPS: 5
registryBurst: 10
imagePullCredentialsVerificationPolicy: NeverVerifyPreloadedImages
preloadedImagesVerificationAllowlist: [registry.k8s.io/pause]
eventRecordQPS: 50
eventBurst: 100
enableDebuggingHandlers: true
enableContentionProfiling: false
healthzPort: 10248
healthzBindAddress: 127.0.0.1
oomScoreAdj: -999
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
streamingConnectionIdleTimeout: 4h
nodeStatusUpdateFrequency: 10s
nodeStatusReportFrequency: 5m
nodeLeaseDurationSeconds: 40
imageMinimumGCAge: 2m
imageMaximumGCAge: 0s
imageGCHighThresholdPercent: 85
imageGCLowThresholdPercent: 80
volumeStatsAggPeriod: 1m
kubeletCgroups: /kubelet
systemCgroups: /system
cgroupRoot: /
cgroupsPerQOS: true
cgroupDriver: cgroupfs
cpuManagerPolicy: none
singleProcessOOMKill: false
cpuManagerPolicyOptions: {full-pcpus-only: "true"}
cpuManagerReconcilePeriod: 10s
draManagerReconcilePeriod: 60s
memoryManagerPolicy: None
topologyManagerPolicy: none
topologyManagerScope: container
topologyManagerPolicyOptions: {prefer-closest-numa-nodes: "true"}
qosReserved: {memory: 50%}
runtimeRequestTimeout: 2m
hairpinMode: promiscuous-bridge
maxPods: 110
podCIDR: 10.244.0.0/24
podPidsLimit: -1
resolvConf: /etc/resolv.conf
runOnce: false
cpuCFSQuota: true
cpuCFSQuotaPeriod: 100ms
nodeStatusMaxImages: 50
maxOpenFiles: 1000000
contentType: application/vnd.kubernetes.protobuf
kubeAPIQPS: 50
kubeAPIBurst: 100
serializeImagePulls: true
maxParallelImagePulls: 1
evictionHard: {memory.available: 100Mi}
evictionSoft: {memory.available: 300Mi}
evictionSoftGracePeriod: {memory.available: 1m30s}
evictionPressureTransitionPeriod: 5m
evictionMaxPodGracePeriod: 0
evictionMinimumReclaim: {imagefs.available: 2Gi}
mergeDefaultEvictionSettings: false
podsPerCore: 0
enableControllerAttachDetach: true
protectKernelDefaults: false
makeIPTablesUtilChains: true
iptablesMasqueradeBit: 14
iptablesDropBit: 15
featureGates: {NodeSwap: true}
failSwapOn: true
memorySwap: {swapBehavior: NoSwap}
containerLogMaxSize: 10Mi
containerLogMaxFiles: 5
containerLogMaxWorkers: 1
containerLogMonitorInterval: 10s
configMapAndSecretChangeDetectionStrategy: Watch
systemReserved: {cpu: 200m}
kubeReserved: {memory: 150Mi}
reservedSystemCPUs: "0-1"
showHiddenMetricsForVersion: "1.32"
systemReservedCgroup: /system.slice
kubeReservedCgroup: /kube.slice
enforceNodeAllocatable: [pods]
allowedUnsafeSysctls: [net.core.somaxconn]
volumePluginDir: /usr/libexec/kubernetes/kubelet-plugins/volume/exec/
providerID: aws:///eu-west-1a/i-0123
kernelMemcgNotification: false
logging: {format: text, flushFrequency: 5s, verbosity: 2, vmodule: [{filePattern: "kubelet*", verbosity: 4}], options: {text: {splitStream: false, infoBufferSize: "0"}, json: {infoBufferSize: 64Ki}}}
enableSystemLogHandler: true
enableSystemLogQuery: false
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
shutdownGracePeriodByPodPriority: [{priority: 0, shutdownGracePeriodSeconds: 30}]
crashLoopBackOff: {maxContainerRestartPeriod: 300s}
reservedMemory: [{numaNode: 0, limits: {memory: 1Gi}}]
enableProfilingHandler: true
enableDebugFlagsHandler: true
seccompDefault: false
memoryThrottlingFactor: 0.9
memoryReservationPolicy: None
registerWithTaints: [{key: dedicated, value: infra, effect: NoSchedule}]
registerNode: true
tracing: {endpoint: "localhost:4317", samplingRatePerMillion: 100}
localStorageCapacityIsolation: true
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
imageServiceEndpoint: unix:///run/containerd/containerd.sock
failCgroupV1: false
userNamespaces: {idsPerPod: 65536}
podHousekeepingPeriod: 2s
"#;

    #[test]
    fn every_upstream_field_has_its_upstream_name() {
        let config = parse_str(ALL_FIELDS).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        let got: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = ALL_FIELDS
            .lines()
            .filter_map(|line| line.split_once(':').map(|(key, _)| key))
            .filter(|key| !key.is_empty())
            .chain(["apiVersion", "kind"])
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(want.len(), 129);
        // Serializing and parsing again gives the same configuration.
        let text = serde_yaml_ng::to_string(&config).unwrap();
        assert_eq!(parse(&text, Path::new("again.yaml")).unwrap(), config);
        assert_eq!(json["logging"]["flushFrequency"], "5s");
        assert_eq!(
            json["authentication"]["x509"]["clientCAFile"],
            "/pki/ca.crt"
        );
    }
}
