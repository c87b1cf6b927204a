//! Pod resource arithmetic, in one place below everything that needs it (admission, pod
//! cgroups, the runtime manager's container resources, status, eviction): a container's
//! requests and limits in exact thousandths, a pod's effective request (init containers,
//! sidecars and overhead counted as upstream), its QoS class, and the CPU conversions
//! (shares, CFS quota, cgroup v2 weight). Pure functions, no thread.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::quantity::parse_millis;
use crate::types::is_sidecar;

/// CFS period the kubelet uses (`cpuCFSQuotaPeriod`, 100 ms).
pub const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MIN_QUOTA_US: i64 = 1000;

/// A container's `limits` or `requests` of `resource` in thousandths, when set.
pub fn quantity_millis(container: &Container, kind: &str, resource: &str) -> Option<i128> {
    let res = container.resources.as_ref()?;
    let map = match kind {
        "limits" => res.limits.as_ref(),
        _ => res.requests.as_ref(),
    }?;
    parse_millis(&map.get(resource)?.0).ok()
}

/// A container's request of `resource` in thousandths; the API defaults a missing request
/// to the limit.
pub fn request_millis(container: &Container, resource: &str) -> Option<i128> {
    quantity_millis(container, "requests", resource)
        .or_else(|| quantity_millis(container, "limits", resource))
}

fn request_of(c: &Container, resource: &str) -> i128 {
    request_millis(c, resource).unwrap_or(0)
}

/// A pod's effective request in thousandths (upstream `PodRequests`): the larger of the
/// main containers plus sidecars and the largest regular init container (plus the sidecars
/// started before it), plus the pod overhead.
pub fn pod_request_millis(pod: &Pod, resource: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let mut sidecars = 0;
    let mut init_peak = 0;
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            sidecars += request_of(c, resource);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars + request_of(c, resource));
        }
    }
    let main: i128 = spec
        .containers
        .iter()
        .map(|c| request_of(c, resource))
        .sum::<i128>()
        + sidecars;
    main.max(init_peak) + overhead_millis(pod, resource)
}

/// A pod's effective limit of `resource` in thousandths (upstream `PodLimits`): the larger
/// of the main containers' limits plus sidecars' and the largest regular init container's
/// (plus the sidecars started before it), plus the pod overhead. Containers without a limit
/// add nothing.
pub fn pod_limit_millis(pod: &Pod, resource: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let limit = |c: &Container| quantity_millis(c, "limits", resource).unwrap_or(0);
    let mut sidecars = 0;
    let mut init_peak = 0;
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            sidecars += limit(c);
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars + limit(c));
        }
    }
    let main: i128 = spec.containers.iter().map(limit).sum::<i128>() + sidecars;
    main.max(init_peak) + overhead_millis(pod, resource)
}

/// The pod's `overhead` of `resource` (its RuntimeClass's) in thousandths.
pub fn overhead_millis(pod: &Pod, resource: &str) -> i128 {
    pod.spec
        .as_ref()
        .and_then(|s| s.overhead.as_ref())
        .and_then(|o| o.get(resource))
        .and_then(|q| parse_millis(&q.0).ok())
        .unwrap_or(0)
}

/// The pod's QoS class (upstream `GetPodQOS`, for cpu and memory): `BestEffort` without
/// any request or limit, `Guaranteed` when every container limits both and requests
/// equal limits, else `Burstable`. Zero quantities count as unset.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.as_ref();
    let all = spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let mut any_set = false;
    let mut guaranteed = true;
    for c in all {
        for name in ["cpu", "memory"] {
            let r = quantity_millis(c, "requests", name).filter(|v| *v != 0);
            let l = quantity_millis(c, "limits", name).filter(|v| *v != 0);
            if r.is_some() || l.is_some() {
                any_set = true;
            }
            match (r, l) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Upstream `MilliCPUToShares`.
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    (milli * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `MilliCPUToQuota`: 0 (no quota) without a limit.
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    (milli * period / 1000).max(MIN_QUOTA_US)
}

/// cgroup v2 `cpu.weight` for v1 shares (upstream `CpuSharesToCpuWeight`).
pub fn shares_to_weight(shares: i64) -> i64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": containers, "initContainers": init}}))
        .unwrap()
    }

    #[test]
    fn qos_classes_as_upstream() {
        let none = pod(serde_json::json!([{"name": "a"}]), serde_json::json!([]));
        assert_eq!(qos_class(&none), "BestEffort");
        let both = serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
        let g = pod(
            serde_json::json!([{"name": "a", "resources": both}]),
            serde_json::json!([]),
        );
        assert_eq!(qos_class(&g), "Guaranteed");
        // Equal in value, written differently: still Guaranteed.
        let same = serde_json::json!({"limits": {"cpu": "0.5", "memory": "64Mi"},
            "requests": {"cpu": "500m", "memory": "67108864"}});
        let g2 = pod(
            serde_json::json!([{"name": "a", "resources": same}]),
            serde_json::json!([]),
        );
        assert_eq!(qos_class(&g2), "Guaranteed");
        let zero = serde_json::json!({"requests": {"cpu": "0"}});
        let z = pod(
            serde_json::json!([{"name": "a", "resources": zero}]),
            serde_json::json!([]),
        );
        assert_eq!(qos_class(&z), "BestEffort", "zero counts as unset");
        let b = pod(
            serde_json::json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]),
            serde_json::json!([]),
        );
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn pod_requests_count_init_containers_sidecars_and_overhead() {
        let r = |cpu: &str| serde_json::json!({"requests": {"cpu": cpu}});
        let p = pod(
            serde_json::json!([{"name": "a", "resources": r("100m")}]),
            serde_json::json!([
                {"name": "side", "restartPolicy": "Always", "resources": r("50m")},
                {"name": "big", "resources": r("500m")}
            ]),
        );
        assert_eq!(pod_request_millis(&p, "cpu"), 550);
        assert_eq!(milli_cpu_to_shares(500), 512);
        assert_eq!(milli_cpu_to_quota(500, CPU_PERIOD_US), 50_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
