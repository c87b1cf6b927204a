//! Settings rkubelet accepts (so a kubeadm- or distro-written configuration loads) but does
//! not act on. Ignoring them silently would mislead an operator, so start-up names every
//! one that is set to something other than upstream's default, in one warning. The list is
//! also in the README.

use serde_json::Value;

use super::kubelet_config::KubeletConfiguration;
use super::settings::KubeletConfig;

/// `KubeletConfiguration` fields (camelCase) that have no effect in rkubelet.
pub const UNIMPLEMENTED_FIELDS: &[&str] = &[
    "configMapAndSecretChangeDetectionStrategy",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "crashLoopBackOff",
    "draManagerReconcilePeriod",
    "enableContentionProfiling",
    "enableDebugFlagsHandler",
    "enableDebuggingHandlers",
    "enableProfilingHandler",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "eventBurst",
    "eventRecordQPS",
    "failSwapOn",
    "featureGates",
    "hairpinMode",
    "imageMaximumGCAge",
    "imagePullCredentialsVerificationPolicy",
    "iptablesDropBit",
    "iptablesMasqueradeBit",
    "kernelMemcgNotification",
    "kubeletCgroups",
    "makeIPTablesUtilChains",
    "maxOpenFiles",
    "memoryManagerPolicy",
    "memoryReservationPolicy",
    "memorySwap",
    "memoryThrottlingFactor",
    "podHousekeepingPeriod",
    "preloadedImagesVerificationAllowlist",
    "protectKernelDefaults",
    "qosReserved",
    "registryBurst",
    "registryPullQPS",
    "reservedMemory",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "shutdownGracePeriod",
    "shutdownGracePeriodByPodPriority",
    "shutdownGracePeriodCriticalPods",
    "singleProcessOOMKill",
    "systemCgroups",
    "tlsCurvePreferences",
    "topologyManagerPolicy",
    "topologyManagerPolicyOptions",
    "topologyManagerScope",
    "userNamespaces",
    "volumePluginDir",
];

/// The unimplemented fields of `raw` (the effective configuration, defaults applied) whose
/// value differs from upstream's default, in the list's order.
pub fn unimplemented_fields(raw: &KubeletConfiguration) -> Vec<&'static str> {
    let mut defaults = KubeletConfiguration::default();
    defaults.set_defaults();
    let (Ok(Value::Object(set)), Ok(Value::Object(default))) =
        (serde_json::to_value(raw), serde_json::to_value(&defaults))
    else {
        return Vec::new();
    };
    UNIMPLEMENTED_FIELDS
        .iter()
        .copied()
        .filter(|field| {
            let value = set.get(*field).filter(|v| !is_empty(v));
            let upstream = default.get(*field).filter(|v| !is_empty(v));
            value.is_some() && value != upstream
        })
        .collect()
}

/// An empty map or list reads as not set.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Everything set that rkubelet does not act on.
pub fn unimplemented_settings(config: &KubeletConfig) -> Vec<String> {
    unimplemented_fields(&config.raw)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Logs one warning naming every setting in effect that rkubelet does not implement.
pub fn warn_unimplemented(config: &KubeletConfig) {
    let settings = unimplemented_settings(config);
    if !settings.is_empty() {
        log::warn!(
            "These settings are set but not implemented by rkubelet and have no effect: {}",
            settings.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effective(yaml: &str) -> KubeletConfiguration {
        let mut c: KubeletConfiguration = serde_yaml_ng::from_str(yaml).unwrap();
        c.set_defaults();
        c
    }

    #[test]
    fn only_non_default_unimplemented_fields_are_named() {
        let plain =
            effective("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n");
        assert!(
            unimplemented_fields(&plain).is_empty(),
            "{:?}",
            unimplemented_fields(&plain)
        );
        let kubeadm = effective(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             rotateCertificates: true\ncpuManagerPolicy: none\nfailSwapOn: false\n\
             kernelMemcgNotification: true\nfeatureGates: {SomeGate: true}\n\
             containerLogMaxSize: 10Mi\nmaxPods: 50\n",
        );
        assert_eq!(
            unimplemented_fields(&kubeadm),
            ["failSwapOn", "featureGates", "kernelMemcgNotification"]
        );
    }

    #[test]
    fn every_listed_field_exists_in_the_configuration() {
        let mut all = KubeletConfiguration::default();
        all.set_defaults();
        let json = serde_json::to_string(&all).unwrap();
        for field in UNIMPLEMENTED_FIELDS {
            // Defaults may leave a field out; deserializing it proves the name is known.
            let doc = format!("{{\"{field}\": null}}");
            assert!(
                serde_json::from_str::<KubeletConfiguration>(&doc).is_ok() || json.contains(field),
                "{field}"
            );
        }
    }
}
