//! Value checks: those of upstream's `ValidateKubeletConfiguration` that do not depend on
//! feature gates, applied to a config file by [`validate_file`], and the small `check_*`
//! functions that [`crate::config::settings`] also runs on merged flag and file values.
//!
//! The checks come in two kinds: [`validate_fields`] looks at one value at a time, so it can
//! run on each source of a value on its own (a file, a drop-in, a flag), and
//! [`validate_relations`] compares values with each other, so it runs on what those sources
//! add up to. Every failure is a [`ConfigError::Invalid`] naming where the value came from
//! (`--max-pods` or `<file>: maxPods`), as an [`Attribution`] says; the first problem found
//! is returned.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{GoDuration, KubeletConfiguration};
use crate::config::error::{ConfigError, Origin};

/// Says where a field's value came from, for errors.
pub(crate) trait Attribution {
    /// The origin of `field` (`authentication.x509.clientCAFile`, `clusterDNS[1]`); when the
    /// problem lies in its relation to the `related` fields, the origin of whichever of them
    /// was set last.
    fn origin(&self, field: &str, related: &[&str]) -> Origin;
}

/// Every value comes from one config file.
pub(crate) struct InFile<'a>(pub(crate) &'a Path);

impl Attribution for InFile<'_> {
    fn origin(&self, field: &str, _related: &[&str]) -> Origin {
        Origin::File {
            file: self.0.to_path_buf(),
            field: field.to_string(),
        }
    }
}

/// Checks every value set in a config file; `file` names it in errors.
pub(crate) fn validate_file(c: &KubeletConfiguration, file: &Path) -> Result<(), ConfigError> {
    validate_fields(c, &InFile(file))?;
    validate_relations(c, &InFile(file))
}

/// The checks of single values: durations, ranges, enumerations, addresses.
pub(crate) fn validate_fields(
    c: &KubeletConfiguration,
    attribution: &dyn Attribution,
) -> Result<(), ConfigError> {
    let v = Validator { attribution };
    v.durations(c)?;
    v.integers(c)?;
    v.enums(c)?;
    v.addresses(c)
}

/// The checks that compare values (the image GC thresholds and ages, the shutdown grace
/// periods, parallel pulls against `serializeImagePulls`, `systemCgroups` against
/// `cgroupRoot`), on the configuration as a whole.
pub(crate) fn validate_relations(
    c: &KubeletConfiguration,
    attribution: &dyn Attribution,
) -> Result<(), ConfigError> {
    Validator { attribution }.relations(c)
}

/// Runs the checks, naming origins through an [`Attribution`].
struct Validator<'a> {
    attribution: &'a dyn Attribution,
}

impl Validator<'_> {
    fn at(&self, field: &str) -> Origin {
        self.attribution.origin(field, &[])
    }

    fn related(&self, field: &str, related: &[&str]) -> Origin {
        self.attribution.origin(field, related)
    }

    fn durations(&self, c: &KubeletConfiguration) -> Result<(), ConfigError> {
        let authn = &c.authentication.webhook;
        let authz = &c.authorization.webhook;
        let all = [
            ("syncFrequency", c.sync_frequency),
            ("fileCheckFrequency", c.file_check_frequency),
            ("httpCheckFrequency", c.http_check_frequency),
            ("podHousekeepingPeriod", c.pod_housekeeping_period),
            ("runtimeRequestTimeout", c.runtime_request_timeout),
            ("imageMinimumGCAge", c.image_minimum_gc_age),
            ("imageMaximumGCAge", c.image_maximum_gc_age),
            (
                "streamingConnectionIdleTimeout",
                c.streaming_connection_idle_timeout,
            ),
            ("nodeStatusUpdateFrequency", c.node_status_update_frequency),
            ("nodeStatusReportFrequency", c.node_status_report_frequency),
            ("volumeStatsAggPeriod", c.volume_stats_agg_period),
            ("cpuManagerReconcilePeriod", c.cpu_manager_reconcile_period),
            ("draManagerReconcilePeriod", c.dra_manager_reconcile_period),
            (
                "evictionPressureTransitionPeriod",
                c.eviction_pressure_transition_period,
            ),
            (
                "containerLogMonitorInterval",
                c.container_log_monitor_interval,
            ),
            ("shutdownGracePeriod", c.shutdown_grace_period),
            (
                "shutdownGracePeriodCriticalPods",
                c.shutdown_grace_period_critical_pods,
            ),
            ("authentication.webhook.cacheTTL", authn.cache_ttl),
            (
                "authorization.webhook.cacheAuthorizedTTL",
                authz.cache_authorized_ttl,
            ),
            (
                "authorization.webhook.cacheUnauthorizedTTL",
                authz.cache_unauthorized_ttl,
            ),
            (
                "logging.flushFrequency",
                c.logging.flush_frequency.map(|f| f.duration),
            ),
        ];
        for (field, value) in all {
            if let Some(d) = value.filter(|d| d.is_negative()) {
                return Err(self.at(field).invalid(d, "must not be negative"));
            }
        }
        let second = GoDuration::from_secs(1);
        if let Some(d) = c.cpu_cfs_quota_period {
            if d < GoDuration::from_millis(1) || d > second {
                return Err(self
                    .at("cpuCFSQuotaPeriod")
                    .invalid(d, "must be between 1ms and 1s"));
            }
        }
        if let Some(d) = c.crash_loop_back_off.max_container_restart_period {
            if d < second || d > GoDuration::from_secs(300) {
                let field = "crashLoopBackOff.maxContainerRestartPeriod";
                return Err(self.at(field).invalid(d, "must be between 1s and 300s"));
            }
        }
        for (field, value) in [
            ("shutdownGracePeriod", c.shutdown_grace_period),
            (
                "shutdownGracePeriodCriticalPods",
                c.shutdown_grace_period_critical_pods,
            ),
        ] {
            if let Some(d) = value.filter(|d| !d.is_zero() && *d < second) {
                return Err(self.at(field).invalid(d, "must be 0s or at least 1s"));
            }
        }
        Ok(())
    }

    fn integers(&self, c: &KubeletConfiguration) -> Result<(), ConfigError> {
        const MAX: i64 = i64::MAX;
        let i = |v: Option<i32>| v.map(i64::from);
        let ranges = [
            ("maxPods", i(c.max_pods), 1, MAX),
            ("port", i(c.port).filter(|p| *p != 0), 1, 65535),
            ("readOnlyPort", i(c.read_only_port), 0, 65535),
            ("healthzPort", i(c.healthz_port), 0, 65535),
            (
                "imageGCHighThresholdPercent",
                i(c.image_gc_high_threshold_percent),
                0,
                100,
            ),
            (
                "imageGCLowThresholdPercent",
                i(c.image_gc_low_threshold_percent),
                0,
                100,
            ),
            ("registryPullQPS", i(c.registry_pull_qps), 0, MAX),
            ("registryBurst", i(c.registry_burst), 0, MAX),
            ("eventRecordQPS", i(c.event_record_qps), 0, MAX),
            ("eventBurst", i(c.event_burst), 0, MAX),
            ("kubeAPIQPS", i(c.kube_api_qps), 0, MAX),
            ("kubeAPIBurst", i(c.kube_api_burst), 0, MAX),
            (
                "nodeLeaseDurationSeconds",
                i(c.node_lease_duration_seconds),
                0,
                MAX,
            ),
            ("nodeStatusMaxImages", i(c.node_status_max_images), -1, MAX),
            ("containerLogMaxFiles", i(c.container_log_max_files), 2, MAX),
            (
                "containerLogMaxWorkers",
                i(c.container_log_max_workers),
                1,
                MAX,
            ),
            ("maxOpenFiles", c.max_open_files, 0, MAX),
            ("podsPerCore", i(c.pods_per_core), 0, MAX),
            ("oomScoreAdj", i(c.oom_score_adj), -1000, 1000),
            ("iptablesMasqueradeBit", i(c.iptables_masquerade_bit), 0, 31),
            ("iptablesDropBit", i(c.iptables_drop_bit), 0, 31),
            (
                "maxParallelImagePulls",
                i(c.max_parallel_image_pulls),
                1,
                MAX,
            ),
            (
                "containerLogMaxWorkers",
                i(c.container_log_max_workers),
                1,
                MAX,
            ),
        ];
        for (field, value, lo, hi) in ranges {
            if let Some(value) = value {
                check_range(self.at(field), value, lo, hi)?;
            }
        }
        if let Some(ids) = c.user_namespaces.as_ref().and_then(|u| u.ids_per_pod) {
            if ids <= 0 || ids % 65536 != 0 || ids >= 1 << 32 {
                let reason = "must be a positive multiple of 65536 below 2^32";
                return Err(self.at("userNamespaces.idsPerPod").invalid(ids, reason));
            }
        }
        Ok(())
    }

    fn enums(&self, c: &KubeletConfiguration) -> Result<(), ConfigError> {
        let verification = [
            "NeverVerify",
            "NeverVerifyPreloadedImages",
            "NeverVerifyAllowlistedImages",
            "AlwaysVerify",
        ];
        let all: [(&str, &Option<String>, &[&str]); 11] = [
            (
                "authorization.mode",
                &c.authorization.mode,
                &["AlwaysAllow", "Webhook"],
            ),
            ("cgroupDriver", &c.cgroup_driver, &["cgroupfs", "systemd"]),
            (
                "hairpinMode",
                &c.hairpin_mode,
                &["promiscuous-bridge", "hairpin-veth", "none"],
            ),
            (
                "topologyManagerPolicy",
                &c.topology_manager_policy,
                &["none", "best-effort", "restricted", "single-numa-node"],
            ),
            (
                "topologyManagerScope",
                &c.topology_manager_scope,
                &["container", "pod"],
            ),
            (
                "configMapAndSecretChangeDetectionStrategy",
                &c.config_map_and_secret_change_detection_strategy,
                &["Get", "Cache", "Watch"],
            ),
            (
                "memorySwap.swapBehavior",
                &c.memory_swap.swap_behavior,
                &["NoSwap", "LimitedSwap"],
            ),
            (
                "imagePullCredentialsVerificationPolicy",
                &c.image_pull_credentials_verification_policy,
                &verification,
            ),
            (
                "memoryReservationPolicy",
                &c.memory_reservation_policy,
                &["None", "TieredReservation"],
            ),
            ("logging.format", &c.logging.format, &["text", "json"]),
            (
                "tlsMinVersion",
                &c.tls_min_version,
                &[
                    "VersionTLS10",
                    "VersionTLS11",
                    "VersionTLS12",
                    "VersionTLS13",
                ],
            ),
        ];
        for (field, value, allowed) in all {
            // "" is Go's zero value: unset.
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                if !allowed.contains(&value) {
                    let reason = format!("must be one of {}", quoted_list(allowed));
                    return Err(self.at(field).invalid(value, reason));
                }
            }
        }
        let enforce = [
            "none",
            "pods",
            "system-reserved",
            "system-reserved-compressible",
            "kube-reserved",
            "kube-reserved-compressible",
        ];
        let keys = c.enforce_node_allocatable.as_deref().unwrap_or_default();
        for (index, key) in keys.iter().enumerate() {
            let field = format!("enforceNodeAllocatable[{index}]");
            if !enforce.contains(&key.as_str()) {
                let reason = format!("must be one of {}", quoted_list(&enforce));
                return Err(self.at(&field).invalid(key, reason));
            }
            if key == "none" && keys.len() > 1 {
                return Err(self
                    .at(&field)
                    .invalid(key, "\"none\" excludes every other value"));
            }
        }
        let taints = c.register_with_taints.as_deref().unwrap_or_default();
        for (index, taint) in taints.iter().enumerate() {
            let at = |name: &str| self.at(&format!("registerWithTaints[{index}].{name}"));
            if taint.key.is_empty() {
                return Err(at("key").invalid("", "is required"));
            }
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&taint.effect.as_str()) {
                let reason = "must be one of \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"";
                return Err(at("effect").invalid(&taint.effect, reason));
            }
            if let Some(time) = &taint.time_added {
                return Err(at("timeAdded").invalid(time, "must not be set"));
            }
        }
        Ok(())
    }

    fn addresses(&self, c: &KubeletConfiguration) -> Result<(), ConfigError> {
        for (field, value) in [
            ("address", &c.address),
            ("healthzBindAddress", &c.healthz_bind_address),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                check_ip(self.at(field), value)?;
            }
        }
        for (index, ip) in c.cluster_dns.iter().flatten().enumerate() {
            check_ip(self.at(&format!("clusterDNS[{index}]")), ip)?;
        }
        if let Some(domain) = c.cluster_domain.as_deref().filter(|d| !d.is_empty()) {
            check_cluster_domain(self.at("clusterDomain"), domain)?;
        }
        if let Some(url) = c.static_pod_url.as_deref().filter(|u| !u.is_empty()) {
            check_http_url(self.at("staticPodURL"), url)?;
        }
        for (field, value) in [
            ("containerRuntimeEndpoint", &c.container_runtime_endpoint),
            ("imageServiceEndpoint", &c.image_service_endpoint),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                check_endpoint(self.at(field), value)?;
            }
        }
        if let Some(dir) = c.pod_logs_dir.as_deref().filter(|d| !d.is_empty()) {
            check_log_dir(self.at("podLogsDir"), Path::new(dir))?;
        }
        Ok(())
    }

    fn relations(&self, c: &KubeletConfiguration) -> Result<(), ConfigError> {
        if let Err(e) = crate::eviction::EvictionConfig::from_config(c) {
            let related: &[&str] = match e.setting() {
                "evictionSoft" => &["evictionSoftGracePeriod"],
                _ => &[],
            };
            let origin = self.related(e.setting(), related);
            return Err(origin.invalid(e.signal(), e.to_string()));
        }
        let high = c.image_gc_high_threshold_percent.unwrap_or(85);
        let low = c.image_gc_low_threshold_percent.unwrap_or(80);
        if low >= high {
            let reason = format!("must be below imageGCHighThresholdPercent ({high})");
            let origin = self.related(
                "imageGCLowThresholdPercent",
                &["imageGCHighThresholdPercent"],
            );
            return Err(origin.invalid(low, reason));
        }
        let min_age = c
            .image_minimum_gc_age
            .filter(|d| !d.is_zero())
            .unwrap_or(GoDuration::from_secs(120));
        if let Some(max_age) = c.image_maximum_gc_age.filter(|d| !d.is_zero()) {
            if max_age <= min_age {
                let reason = format!("must be longer than imageMinimumGCAge ({min_age})");
                let origin = self.related("imageMaximumGCAge", &["imageMinimumGCAge"]);
                return Err(origin.invalid(max_age, reason));
            }
        }
        let has_system_cgroups = c.system_cgroups.as_deref().is_some_and(|s| !s.is_empty());
        if has_system_cgroups && c.cgroup_root.as_deref().is_none_or(str::is_empty) {
            let reason = "needs cgroupRoot to be set as well";
            let value = c.system_cgroups.as_deref().unwrap_or_default();
            let origin = self.related("systemCgroups", &["cgroupRoot"]);
            return Err(origin.invalid(value, reason));
        }
        let total = c.shutdown_grace_period.unwrap_or_default();
        let critical = c.shutdown_grace_period_critical_pods.unwrap_or_default();
        if critical > total {
            let reason = format!("must not exceed shutdownGracePeriod ({total})");
            let origin = self.related("shutdownGracePeriodCriticalPods", &["shutdownGracePeriod"]);
            return Err(origin.invalid(critical, reason));
        }
        let by_priority = c.shutdown_grace_period_by_pod_priority.as_deref();
        if by_priority.is_some_and(|p| !p.is_empty()) && !total.is_zero() {
            let reason = "cannot be combined with shutdownGracePeriodByPodPriority";
            let origin = self.related("shutdownGracePeriod", &["shutdownGracePeriodByPodPriority"]);
            return Err(origin.invalid(total, reason));
        }
        if let Some(size) = c
            .container_log_max_size
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            match crate::quantity::parse_value(size) {
                Ok(bytes) if bytes >= 0 => {}
                Ok(_) => {
                    return Err(self
                        .at("containerLogMaxSize")
                        .invalid(size, "must not be negative"))
                }
                Err(e) => return Err(self.at("containerLogMaxSize").invalid(size, e.to_string())),
            }
        }
        if let Some(interval) = c
            .container_log_monitor_interval
            .filter(|d| !d.is_zero() && d.to_std().is_some_and(|d| d < Duration::from_secs(3)))
        {
            let reason = "must be a positive time duration greater than or equal to 3s";
            return Err(self
                .at("containerLogMonitorInterval")
                .invalid(interval, reason));
        }
        let serialized = c.serialize_image_pulls == Some(true);
        if let Some(parallel) = c.max_parallel_image_pulls.filter(|n| *n > 1 && serialized) {
            let reason = "must be 1 unless serializeImagePulls is false";
            let origin = self.related("maxParallelImagePulls", &["serializeImagePulls"]);
            return Err(origin.invalid(parallel, reason));
        }
        Ok(())
    }
}

/// `"a", "b", "c"`.
fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    quoted.join(", ")
}

/// Checks `lo <= value <= hi` (`hi == i64::MAX` meaning no upper bound).
pub(crate) fn check_range(origin: Origin, value: i64, lo: i64, hi: i64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    let reason = match (lo, hi) {
        (0, i64::MAX) => "must not be negative".to_string(),
        (1, i64::MAX) => "must be greater than 0".to_string(),
        (lo, i64::MAX) => format!("must be at least {lo}"),
        (lo, hi) => format!("must be between {lo} and {hi}"),
    };
    Err(origin.invalid(value, reason))
}

/// Checks that a duration is above zero (tickers and timeouts cannot be zero) and converts it.
pub(crate) fn check_positive(
    origin: Origin,
    value: GoDuration,
) -> Result<std::time::Duration, ConfigError> {
    match value.to_std() {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(origin.invalid(value, "must be greater than 0")),
    }
}

/// Parses an IP address.
pub(crate) fn check_ip(origin: Origin, value: &str) -> Result<IpAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| origin.invalid(value, "not an IP address"))
}

/// Checks a DNS-1123 subdomain (lower-case alphanumerics, `-` and `.`, at most 253
/// characters, each label starting and ending alphanumeric), as node names must be.
pub(crate) fn check_dns_subdomain(origin: Origin, value: &str) -> Result<(), ConfigError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.is_empty() || value.len() > 253 || !value.split('.').all(label_ok) {
        let reason = "must be a DNS subdomain: lower-case letters, digits, '-' and '.', \
                      starting and ending with a letter or digit";
        return Err(origin.invalid(value, reason));
    }
    Ok(())
}

/// Checks a cluster DNS domain and returns it without a trailing dot (`cluster.local.`).
pub(crate) fn check_cluster_domain(origin: Origin, value: &str) -> Result<String, ConfigError> {
    let domain = value.strip_suffix('.').unwrap_or(value);
    check_dns_subdomain(origin, domain)?;
    Ok(domain.to_string())
}

/// Checks a manifest URL: `http://` or `https://` followed by a host.
pub(crate) fn check_http_url(origin: Origin, value: &str) -> Result<(), ConfigError> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(origin.invalid(value, "the URL has no host")),
        None => Err(origin.invalid(value, "must be an http:// or https:// URL")),
    }
}

/// Checks a CRI endpoint and returns it in `unix://` form: `unix:///path` or a bare absolute
/// path (which upstream also accepts, as a unix socket). Other schemes (`tcp`, `npipe`) are
/// refused: rkubelet speaks CRI over unix sockets only.
pub(crate) fn check_endpoint(origin: Origin, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(origin.invalid(value, "must not be empty"));
    }
    let path = value.strip_prefix("unix://").unwrap_or(value);
    if path.contains("://") {
        return Err(origin.invalid(value, "only unix:// endpoints are supported"));
    }
    if !path.starts_with('/') {
        return Err(origin.invalid(value, "must be unix:///<absolute path> or an absolute path"));
    }
    Ok(format!("unix://{path}"))
}

/// Checks a pod log directory: absolute, and not `/` (upstream rejects both).
pub(crate) fn check_log_dir(origin: Origin, dir: &Path) -> Result<(), ConfigError> {
    if !dir.is_absolute() {
        return Err(origin.invalid(dir.display(), "must be an absolute path"));
    }
    if dir.parent().is_none() {
        return Err(origin.invalid(dir.display(), "must not be the root directory"));
    }
    Ok(())
}

/// Checks that header names are HTTP tokens (RFC 9110 `tchar`s).
pub(crate) fn check_header_names(
    origin: Origin,
    headers: &BTreeMap<String, Vec<String>>,
) -> Result<(), ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    match headers
        .keys()
        .find(|name| name.is_empty() || !name.bytes().all(tchar))
    {
        Some(name) => Err(origin.invalid(name, "not a valid HTTP header name")),
        None => Ok(()),
    }
}
