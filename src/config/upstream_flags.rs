//! The upstream kubelet's (v1.33) other flags. kubeadm, distro units and operators pass
//! flags rkubelet has no use for (cAdvisor's storage drivers, `--fail-swap-on`, ...) or that
//! upstream deprecated in favour of the config file. They are accepted, so such a command
//! line starts, and named in one start-up warning, so none is ignored silently; a flag that
//! no kubelet knows still fails.

use std::ffi::OsString;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// A boolean: bare (`--flag`) means true, else `--flag=<bool>` (never the next argument).
    Bool,
    /// A value: `--flag=<v>` or `--flag <v>`.
    Value,
}

/// Upstream flags rkubelet does not implement as flags: name, how it takes its value, and the
/// KubeletConfiguration field it sets upstream ("" for none).
pub const ACCEPTED: &[(&str, Takes, &str)] = &[
    (
        "allowed-unsafe-sysctls",
        Takes::Value,
        "allowedUnsafeSysctls",
    ),
    ("application-metrics-count-limit", Takes::Value, ""),
    (
        "authentication-token-webhook-cache-ttl",
        Takes::Value,
        "authentication.webhook.cacheTTL",
    ),
    (
        "authorization-webhook-cache-authorized-ttl",
        Takes::Value,
        "authorization.webhook.cacheAuthorizedTTL",
    ),
    (
        "authorization-webhook-cache-unauthorized-ttl",
        Takes::Value,
        "authorization.webhook.cacheUnauthorizedTTL",
    ),
    ("boot-id-file", Takes::Value, ""),
    ("cloud-config", Takes::Value, ""),
    ("container-hints", Takes::Value, ""),
    ("containerd", Takes::Value, ""),
    ("containerd-namespace", Takes::Value, ""),
    (
        "contention-profiling",
        Takes::Bool,
        "enableContentionProfiling",
    ),
    ("cpu-cfs-quota", Takes::Bool, "cpuCFSQuota"),
    ("cpu-cfs-quota-period", Takes::Value, "cpuCFSQuotaPeriod"),
    ("cpu-manager-policy", Takes::Value, "cpuManagerPolicy"),
    (
        "cpu-manager-policy-options",
        Takes::Value,
        "cpuManagerPolicyOptions",
    ),
    (
        "cpu-manager-reconcile-period",
        Takes::Value,
        "cpuManagerReconcilePeriod",
    ),
    (
        "enable-controller-attach-detach",
        Takes::Bool,
        "enableControllerAttachDetach",
    ),
    (
        "enable-debugging-handlers",
        Takes::Bool,
        "enableDebuggingHandlers",
    ),
    ("enable-load-reader", Takes::Bool, ""),
    ("enable-server", Takes::Bool, "enableServer"),
    (
        "enforce-node-allocatable",
        Takes::Value,
        "enforceNodeAllocatable",
    ),
    ("event-burst", Takes::Value, "eventBurst"),
    ("event-qps", Takes::Value, "eventRecordQPS"),
    ("event-storage-age-limit", Takes::Value, ""),
    ("event-storage-event-limit", Takes::Value, ""),
    ("exit-on-lock-contention", Takes::Bool, ""),
    ("experimental-allocatable-ignore-eviction", Takes::Bool, ""),
    ("experimental-mounter-path", Takes::Value, ""),
    ("fail-cgroupv1", Takes::Bool, "failCgroupV1"),
    ("fail-swap-on", Takes::Bool, "failSwapOn"),
    ("feature-gates", Takes::Value, "featureGates"),
    ("global-housekeeping-interval", Takes::Value, ""),
    ("hairpin-mode", Takes::Value, "hairpinMode"),
    ("healthz-bind-address", Takes::Value, "healthzBindAddress"),
    ("healthz-port", Takes::Value, "healthzPort"),
    ("housekeeping-interval", Takes::Value, ""),
    (
        "image-gc-high-threshold",
        Takes::Value,
        "imageGCHighThresholdPercent",
    ),
    (
        "image-gc-low-threshold",
        Takes::Value,
        "imageGCLowThresholdPercent",
    ),
    (
        "kernel-memcg-notification",
        Takes::Bool,
        "kernelMemcgNotification",
    ),
    ("kube-api-burst", Takes::Value, "kubeAPIBurst"),
    ("kube-api-content-type", Takes::Value, "contentType"),
    ("kube-api-qps", Takes::Value, "kubeAPIQPS"),
    ("kube-reserved", Takes::Value, "kubeReserved"),
    ("kube-reserved-cgroup", Takes::Value, "kubeReservedCgroup"),
    ("kubelet-cgroups", Takes::Value, "kubeletCgroups"),
    ("lock-file", Takes::Value, ""),
    ("log-cadvisor-usage", Takes::Bool, ""),
    (
        "log-flush-frequency",
        Takes::Value,
        "logging.flushFrequency",
    ),
    (
        "log-json-info-buffer-size",
        Takes::Value,
        "logging.options.json.infoBufferSize",
    ),
    (
        "log-json-split-stream",
        Takes::Bool,
        "logging.options.json.splitStream",
    ),
    (
        "log-text-info-buffer-size",
        Takes::Value,
        "logging.options.text.infoBufferSize",
    ),
    (
        "log-text-split-stream",
        Takes::Bool,
        "logging.options.text.splitStream",
    ),
    ("logging-format", Takes::Value, "logging.format"),
    ("machine-id-file", Takes::Value, ""),
    (
        "make-iptables-util-chains",
        Takes::Bool,
        "makeIPTablesUtilChains",
    ),
    ("max-open-files", Takes::Value, "maxOpenFiles"),
    ("maximum-dead-containers", Takes::Value, ""),
    ("maximum-dead-containers-per-container", Takes::Value, ""),
    ("memory-manager-policy", Takes::Value, "memoryManagerPolicy"),
    ("minimum-container-ttl-duration", Takes::Value, ""),
    (
        "minimum-image-ttl-duration",
        Takes::Value,
        "imageMinimumGCAge",
    ),
    (
        "node-status-update-frequency",
        Takes::Value,
        "nodeStatusUpdateFrequency",
    ),
    ("oom-score-adj", Takes::Value, "oomScoreAdj"),
    ("pod-cidr", Takes::Value, "podCIDR"),
    ("pod-max-pids", Takes::Value, "podPidsLimit"),
    ("pods-per-core", Takes::Value, "podsPerCore"),
    (
        "protect-kernel-defaults",
        Takes::Bool,
        "protectKernelDefaults",
    ),
    ("qos-reserved", Takes::Value, "qosReserved"),
    ("register-schedulable", Takes::Bool, ""),
    ("registry-burst", Takes::Value, "registryBurst"),
    ("registry-qps", Takes::Value, "registryPullQPS"),
    ("reserved-cpus", Takes::Value, "reservedSystemCPUs"),
    ("reserved-memory", Takes::Value, "reservedMemory"),
    (
        "rotate-server-certificates",
        Takes::Bool,
        "serverTLSBootstrap",
    ),
    ("runtime-cgroups", Takes::Value, ""),
    ("seccomp-default", Takes::Bool, ""),
    ("serialize-image-pulls", Takes::Bool, "serializeImagePulls"),
    ("storage-driver-buffer-duration", Takes::Value, ""),
    ("storage-driver-db", Takes::Value, ""),
    ("storage-driver-host", Takes::Value, ""),
    ("storage-driver-password", Takes::Value, ""),
    ("storage-driver-secure", Takes::Bool, ""),
    ("storage-driver-table", Takes::Value, ""),
    ("storage-driver-user", Takes::Value, ""),
    (
        "streaming-connection-idle-timeout",
        Takes::Value,
        "streamingConnectionIdleTimeout",
    ),
    ("system-cgroups", Takes::Value, "systemCgroups"),
    ("system-reserved", Takes::Value, "systemReserved"),
    (
        "system-reserved-cgroup",
        Takes::Value,
        "systemReservedCgroup",
    ),
    ("tls-cipher-suites", Takes::Value, "tlsCipherSuites"),
    ("tls-min-version", Takes::Value, "tlsMinVersion"),
    (
        "topology-manager-policy",
        Takes::Value,
        "topologyManagerPolicy",
    ),
    (
        "topology-manager-policy-options",
        Takes::Value,
        "topologyManagerPolicyOptions",
    ),
    (
        "topology-manager-scope",
        Takes::Value,
        "topologyManagerScope",
    ),
    ("vmodule", Takes::Value, "logging.vmodule"),
    ("volume-plugin-dir", Takes::Value, "volumePluginDir"),
    (
        "volume-stats-agg-period",
        Takes::Value,
        "volumeStatsAggPeriod",
    ),
];

/// The flags of `args` (the program name first) split in two: the arguments left for
/// rkubelet's own parser, and the accepted upstream flags found (as given, `--name=value`).
/// An accepted flag that needs a value and has none is an error naming it.
pub fn split_accepted(args: Vec<OsString>) -> Result<(Vec<OsString>, Vec<String>), String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut accepted = Vec::new();
    let mut args = args.into_iter();
    kept.extend(args.next());
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
            kept.push(arg);
            continue;
        };
        if text.is_empty() {
            // `--` ends the flags.
            kept.push(arg);
            kept.extend(args);
            break;
        }
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        // Upstream normalises `_` to `-` in flag names.
        let name = name.replace('_', "-");
        let Some((_, takes, _)) = ACCEPTED.iter().find(|(n, _, _)| *n == name) else {
            kept.push(arg);
            continue;
        };
        let value = match (takes, value) {
            (_, Some(value)) => value.to_string(),
            (Takes::Bool, None) => "true".to_string(),
            (Takes::Value, None) => args
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("flag needs an argument: --{name}"))?,
        };
        if *takes == Takes::Bool {
            super::flags::parse_go_bool(&value)
                .map_err(|e| format!("invalid argument {value:?} for \"--{name}\" flag: {e}"))?;
        }
        accepted.push(format!("--{name}={value}"));
    }
    Ok((kept, accepted))
}

/// The start-up warning naming the accepted flags that were given, with the config file
/// field to use instead where upstream has one.
pub fn warning(accepted: &[String]) -> Option<String> {
    if accepted.is_empty() {
        return None;
    }
    let described: Vec<String> = accepted
        .iter()
        .map(|flag| {
            let name = flag
                .trim_start_matches('-')
                .split('=')
                .next()
                .unwrap_or_default();
            match ACCEPTED.iter().find(|(n, _, _)| *n == name) {
                Some((_, _, field)) if !field.is_empty() => {
                    format!("{flag} (set {field} in the --config file instead)")
                }
                _ => flag.clone(),
            }
        })
        .collect();
    Some(format!(
        "flags accepted for compatibility with the upstream kubelet but without effect in \
         rkubelet: {}",
        described.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flags::KubeletFlags;
    use structopt::StructOpt;

    fn split(args: &[&str]) -> Result<(Vec<OsString>, Vec<String>), String> {
        split_accepted(
            std::iter::once("rkubelet")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn accepted_flags_are_taken_out_with_their_values() {
        let (kept, accepted) = split(&[
            "--fail-swap-on=false",
            "--max-pods=20",
            "--image-gc-high-threshold",
            "90",
            "--kube_reserved=cpu=100m",
            "--seccomp-default",
            "--",
            "--fail-swap-on",
        ])
        .unwrap();
        assert_eq!(
            kept,
            ["rkubelet", "--max-pods=20", "--", "--fail-swap-on"].map(OsString::from)
        );
        assert_eq!(
            accepted,
            [
                "--fail-swap-on=false",
                "--image-gc-high-threshold=90",
                "--kube-reserved=cpu=100m",
                "--seccomp-default=true"
            ]
        );
        let text = warning(&accepted).unwrap();
        assert!(
            text.contains("--fail-swap-on=false (set failSwapOn in the --config file instead)"),
            "{text}"
        );
        assert!(
            text.contains("--seccomp-default=true,") || text.ends_with("--seccomp-default=true"),
            "{text}"
        );
        assert_eq!(warning(&[]), None);
    }

    #[test]
    fn a_missing_or_bad_value_names_the_flag() {
        assert_eq!(
            split(&["--image-gc-high-threshold"]).unwrap_err(),
            "flag needs an argument: --image-gc-high-threshold"
        );
        assert!(split(&["--fail-swap-on=maybe"])
            .unwrap_err()
            .contains("\"--fail-swap-on\""));
        // A bool never takes the next argument.
        let (kept, _) = split(&["--fail-swap-on", "--max-pods=3"]).unwrap();
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn the_table_holds_no_flag_rkubelet_parses_itself_and_no_duplicates() {
        for (i, (name, takes, _)) in ACCEPTED.iter().enumerate() {
            assert!(
                ACCEPTED[..i].iter().all(|(other, _, _)| other != name),
                "--{name} twice"
            );
            let arg = match takes {
                Takes::Bool => format!("--{name}"),
                Takes::Value => format!("--{name}=x"),
            };
            let err = KubeletFlags::from_iter_safe(["rkubelet", arg.as_str()]).unwrap_err();
            assert_eq!(
                err.kind,
                structopt::clap::ErrorKind::UnknownArgument,
                "--{name} is parsed by rkubelet itself"
            );
        }
    }
}
