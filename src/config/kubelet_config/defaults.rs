//! Upstream's defaults for `KubeletConfiguration` (`SetDefaults_KubeletConfiguration`), so
//! every subsystem reads one filled-in configuration and `/configz` shows what is in effect.
//!
//! As upstream, a zero value of a field that Go stores without a pointer (durations, ports,
//! most integers, strings) also means "unset" and gets the default. Defaults that depend on
//! feature gates are left out.

use super::{GoDuration, KubeletConfiguration, TimeOrMetaDuration, API_VERSION, KIND};

/// Upstream's default runtime endpoint (containerd).
pub(crate) const DEFAULT_CONTAINER_RUNTIME_ENDPOINT: &str =
    "unix:///run/containerd/containerd.sock";
/// Upstream's default pod log directory.
pub(crate) const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";
/// Upstream's default resolver file for pods.
pub(crate) const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Upstream's default `maxPods`.
pub(crate) const DEFAULT_MAX_PODS: i32 = 110;
/// Upstream's default `syncFrequency`.
pub(crate) const DEFAULT_SYNC_FREQUENCY: GoDuration = GoDuration::from_secs(60);
/// Upstream's default `fileCheckFrequency` and `httpCheckFrequency`.
pub(crate) const DEFAULT_CHECK_FREQUENCY: GoDuration = GoDuration::from_secs(20);
/// Upstream's default `runtimeRequestTimeout`.
pub(crate) const DEFAULT_RUNTIME_REQUEST_TIMEOUT: GoDuration = GoDuration::from_secs(120);

const SECOND: i64 = 1;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

impl KubeletConfiguration {
    /// Fills every unset field that has an upstream default with that default.
    pub fn set_defaults(&mut self) {
        set_str(&mut self.api_version, API_VERSION);
        set_str(&mut self.kind, KIND);

        set(&mut self.enable_server, true);
        set_str(&mut self.address, "0.0.0.0");
        set_int(&mut self.port, 10250);
        set(&mut self.read_only_port, 0);
        set(&mut self.rotate_certificates, false);
        set(&mut self.server_tls_bootstrap, false);
        let authn = &mut self.authentication;
        set(&mut authn.anonymous.enabled, false);
        set(&mut authn.webhook.enabled, true);
        set_duration(&mut authn.webhook.cache_ttl, secs(2 * MINUTE));
        let authz = &mut self.authorization;
        set_str(&mut authz.mode, "Webhook");
        set_duration(&mut authz.webhook.cache_authorized_ttl, secs(5 * MINUTE));
        set_duration(&mut authz.webhook.cache_unauthorized_ttl, secs(30 * SECOND));
        set(&mut self.enable_debugging_handlers, true);
        set(&mut self.enable_contention_profiling, false);
        set(&mut self.healthz_port, 10248);
        set_str(&mut self.healthz_bind_address, "127.0.0.1");
        set(&mut self.enable_system_log_handler, true);
        set(&mut self.enable_profiling_handler, true);
        set(&mut self.enable_debug_flags_handler, true);
        set_str(
            &mut self.content_type,
            "application/vnd.kubernetes.protobuf",
        );
        set(&mut self.kube_api_qps, 50);
        set_int(&mut self.kube_api_burst, 100);
        set(&mut self.event_record_qps, 50);
        set_int(&mut self.event_burst, 100);

        set_duration(&mut self.sync_frequency, DEFAULT_SYNC_FREQUENCY);
        set_duration(&mut self.file_check_frequency, DEFAULT_CHECK_FREQUENCY);
        set_duration(&mut self.http_check_frequency, DEFAULT_CHECK_FREQUENCY);
        set(&mut self.run_once, false);
        if self.pod_housekeeping_period.is_none() {
            self.pod_housekeeping_period = Some(GoDuration::from_secs(2));
        }
        set_str(
            &mut self.config_map_and_secret_change_detection_strategy,
            "Watch",
        );

        set_str(
            &mut self.container_runtime_endpoint,
            DEFAULT_CONTAINER_RUNTIME_ENDPOINT,
        );
        set_duration(
            &mut self.runtime_request_timeout,
            DEFAULT_RUNTIME_REQUEST_TIMEOUT,
        );
        set(&mut self.registry_pull_qps, 5);
        set_int(&mut self.registry_burst, 10);
        if self.serialize_image_pulls.is_none() {
            let parallel = self.max_parallel_image_pulls.is_some_and(|n| n >= 2);
            self.serialize_image_pulls = Some(!parallel);
        }
        set_duration(&mut self.image_minimum_gc_age, secs(2 * MINUTE));
        set(&mut self.image_maximum_gc_age, GoDuration::ZERO);
        set(&mut self.image_gc_high_threshold_percent, 85);
        set(&mut self.image_gc_low_threshold_percent, 80);
        set_duration(&mut self.streaming_connection_idle_timeout, secs(4 * HOUR));

        // An explicit update frequency is also the report frequency's default (upstream keeps
        // this for backward compatibility), so look at it before defaulting it.
        if self
            .node_status_report_frequency
            .is_none_or(GoDuration::is_zero)
        {
            self.node_status_report_frequency = match self.node_status_update_frequency {
                Some(update) if !update.is_zero() => Some(update),
                _ => Some(secs(5 * MINUTE)),
            };
        }
        set_duration(&mut self.node_status_update_frequency, secs(10 * SECOND));
        set_int(&mut self.node_lease_duration_seconds, 40);
        set(&mut self.node_status_max_images, 50);
        set(&mut self.register_node, true);
        set_duration(&mut self.volume_stats_agg_period, secs(MINUTE));

        set_int(&mut self.max_pods, DEFAULT_MAX_PODS);
        set(&mut self.pods_per_core, 0);
        if self.pod_pids_limit.is_none_or(|limit| limit < 0) {
            self.pod_pids_limit = Some(-1);
        }
        set_str(&mut self.pod_logs_dir, DEFAULT_POD_LOGS_DIR);
        set(&mut self.resolv_conf, DEFAULT_RESOLV_CONF.to_string());
        set_str(&mut self.hairpin_mode, "promiscuous-bridge");
        set(&mut self.make_iptables_util_chains, true);
        set(&mut self.iptables_masquerade_bit, 14);
        set(&mut self.iptables_drop_bit, 15);
        set(&mut self.seccomp_default, false);

        set(&mut self.cgroups_per_qos, true);
        set_str(&mut self.cgroup_driver, "cgroupfs");
        set_str(&mut self.cpu_manager_policy, "none");
        set_duration(&mut self.cpu_manager_reconcile_period, secs(10 * SECOND));
        set_duration(&mut self.dra_manager_reconcile_period, secs(MINUTE));
        set_str(&mut self.memory_manager_policy, "None");
        set_str(&mut self.topology_manager_policy, "none");
        set_str(&mut self.topology_manager_scope, "container");
        set(&mut self.cpu_cfs_quota, true);
        set(&mut self.cpu_cfs_quota_period, GoDuration::from_millis(100));
        set_int(&mut self.max_open_files, 1_000_000);
        set(&mut self.oom_score_adj, -999);
        set(&mut self.protect_kernel_defaults, false);
        set(&mut self.fail_swap_on, true);
        set(&mut self.fail_cgroup_v1, false);
        set(&mut self.memory_throttling_factor, 0.9);
        set(&mut self.local_storage_capacity_isolation, true);
        set(&mut self.kernel_memcg_notification, false);

        set(&mut self.enforce_node_allocatable, vec!["pods".to_string()]);
        set_duration(
            &mut self.eviction_pressure_transition_period,
            secs(5 * MINUTE),
        );
        set(&mut self.merge_default_eviction_settings, false);
        // Upstream's loadConfigFile: no evictionHard means the defaults; a partial one is
        // completed with them only under mergeDefaultEvictionSettings.
        let defaults = crate::eviction::threshold::default_eviction_hard();
        match self.eviction_hard.as_mut() {
            None => self.eviction_hard = Some(defaults),
            Some(given) if self.merge_default_eviction_settings == Some(true) => {
                for (signal, value) in defaults {
                    given.entry(signal).or_insert(value);
                }
            }
            Some(_) => {}
        }

        set_str(&mut self.container_log_max_size, "10Mi");
        set(&mut self.container_log_max_files, 5);
        set(&mut self.container_log_max_workers, 1);
        set(
            &mut self.container_log_monitor_interval,
            GoDuration::from_secs(10),
        );
        set(&mut self.enable_controller_attach_detach, true);
        set_str(
            &mut self.volume_plugin_dir,
            "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/",
        );
        set_duration(&mut self.shutdown_grace_period, secs(0));
        set_duration(&mut self.shutdown_grace_period_critical_pods, secs(0));

        // component-base's SetRecommendedLoggingConfiguration.
        let logging = &mut self.logging;
        set_str(&mut logging.format, "text");
        if logging
            .flush_frequency
            .is_none_or(|flush| flush.duration.is_zero())
        {
            logging.flush_frequency = Some(TimeOrMetaDuration {
                duration: GoDuration::from_secs(5),
                serialize_as_string: true,
            });
        }
        set(&mut logging.verbosity, 0);
        set_str(&mut logging.options.text.info_buffer_size, "0");
        set_str(&mut logging.options.json.info_buffer_size, "0");
    }
}

/// `n` seconds, for the duration defaults.
const fn secs(n: i64) -> GoDuration {
    GoDuration::from_secs(n)
}

/// Sets a field Go stores behind a pointer: only `None` is unset.
fn set<T>(field: &mut Option<T>, default: T) {
    field.get_or_insert(default);
}

/// Sets a Go integer field, where 0 also means unset.
fn set_int<T: Copy + Default + PartialEq>(field: &mut Option<T>, default: T) {
    if field.is_none_or(|value| value == T::default()) {
        *field = Some(default);
    }
}

/// Sets a Go string field, where "" also means unset.
fn set_str(field: &mut Option<String>, default: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(default.to_string());
    }
}

/// Sets a `metav1.Duration` field, where 0s also means unset.
fn set_duration(field: &mut Option<GoDuration>, default: GoDuration) {
    if field.is_none_or(GoDuration::is_zero) {
        *field = Some(default);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fills_upstream_defaults() {
        let mut config = KubeletConfiguration::default();
        config.set_defaults();
        assert_eq!(config.api_version.as_deref(), Some(API_VERSION));
        assert_eq!(config.port, Some(10250));
        assert_eq!(config.max_pods, Some(110));
        assert_eq!(config.sync_frequency, Some(GoDuration::from_secs(60)));
        assert_eq!(
            config.runtime_request_timeout,
            Some(DEFAULT_RUNTIME_REQUEST_TIMEOUT)
        );
        assert_eq!(config.authorization.mode.as_deref(), Some("Webhook"));
        assert_eq!(
            config.authentication.webhook.cache_ttl,
            Some(GoDuration::from_secs(120))
        );
        assert_eq!(
            config.node_status_report_frequency,
            Some(GoDuration::from_secs(300))
        );
        assert_eq!(config.serialize_image_pulls, Some(true));
        assert_eq!(config.pod_pids_limit, Some(-1));
        assert_eq!(config.resolv_conf.as_deref(), Some(DEFAULT_RESOLV_CONF));
        assert_eq!(
            config.logging.flush_frequency.map(|f| f.duration),
            Some(GoDuration::from_secs(5))
        );
    }

    #[test]
    fn zero_means_unset_only_where_go_cannot_tell() {
        let mut config = KubeletConfiguration {
            sync_frequency: Some(GoDuration::ZERO),
            port: Some(0),
            read_only_port: Some(0),
            healthz_port: Some(0),
            cgroup_driver: Some(String::new()),
            resolv_conf: Some(String::new()),
            node_status_update_frequency: Some(GoDuration::from_secs(4)),
            max_parallel_image_pulls: Some(3),
            ..KubeletConfiguration::default()
        };
        config.set_defaults();
        assert_eq!(config.sync_frequency, Some(GoDuration::from_secs(60)));
        assert_eq!(config.port, Some(10250));
        // Pointer fields keep an explicit zero or empty string.
        assert_eq!(config.read_only_port, Some(0));
        assert_eq!(config.healthz_port, Some(0));
        assert_eq!(config.resolv_conf.as_deref(), Some(""));
        assert_eq!(config.cgroup_driver.as_deref(), Some("cgroupfs"));
        // The report frequency follows an explicit update frequency.
        assert_eq!(
            config.node_status_report_frequency,
            Some(GoDuration::from_secs(4))
        );
        assert_eq!(config.serialize_image_pulls, Some(false));
    }
}
