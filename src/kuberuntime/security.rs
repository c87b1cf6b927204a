//! What a container spec says about identity, privileges and resources, turned into CRI
//! `LinuxContainerSecurityContext` and `LinuxContainerResources` as upstream does
//! (`security_context.go`, `kuberuntime_container_linux.go`, `qos/policy.go`). Pure
//! functions; the pod worker calls them when it builds a container's config.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SeccompProfile};

use crate::cri::api;
use crate::quantity::parse_millis;
use crate::resources::{
    milli_cpu_to_quota, milli_cpu_to_shares, quantity_millis, request_millis, CPU_PERIOD_US,
};

/// Paths masked in non-privileged containers (upstream `DefaultMaskedPaths`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths read-only in non-privileged containers (upstream `DefaultReadonlyPaths`).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `oom_score_adj` of Guaranteed containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// `oom_score_adj` of BestEffort containers.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// The pod's security context fields a container inherits unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectiveSecurity {
    /// `runAsUser`.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `seccompProfile`.
    pub seccomp: Option<SeccompProfile>,
}

/// Container settings override the pod's (upstream `DetermineEffectiveSecurityContext`).
pub fn effective_security(pod: &Pod, container: &Container) -> EffectiveSecurity {
    let psc: Option<&PodSecurityContext> =
        pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = container.security_context.as_ref();
    EffectiveSecurity {
        run_as_user: csc
            .and_then(|c| c.run_as_user)
            .or_else(|| psc.and_then(|p| p.run_as_user)),
        run_as_group: csc
            .and_then(|c| c.run_as_group)
            .or_else(|| psc.and_then(|p| p.run_as_group)),
        run_as_non_root: csc
            .and_then(|c| c.run_as_non_root)
            .or_else(|| psc.and_then(|p| p.run_as_non_root)),
        seccomp: csc
            .and_then(|c| c.seccomp_profile.clone())
            .or_else(|| psc.and_then(|p| p.seccomp_profile.clone())),
    }
}

/// Upstream `format.Pod`: `name_namespace(uid)`.
fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Upstream `verifyRunAsNonRoot`: with `runAsNonRoot`, the container must not run as uid 0.
/// `image_uid`/`image_user` are what the runtime reports for the image; an image naming
/// neither runs as root.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_user: &str,
) -> Result<(), String> {
    let sc = effective_security(pod, container);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    if let Some(uid) = sc.run_as_user {
        if uid == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {:?}, container: {})",
                pod_desc(pod),
                container.name
            ));
        }
        return Ok(());
    }
    match (image_uid, image_user) {
        (Some(0), _) | (None, "") => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {:?}, container: {})",
            pod_desc(pod),
            container.name
        )),
        (None, user) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {:?}, container: {})",
            pod_desc(pod),
            container.name
        )),
        _ => Ok(()),
    }
}

/// Where seccomp profiles come from: the kubelet's `seccompDefault` and `<root-dir>/seccomp`.
#[derive(Debug, Clone, Copy)]
pub struct SeccompSettings<'a> {
    /// Localhost profiles live under this directory.
    pub root: &'a std::path::Path,
    /// `seccompDefault`: a container without a profile gets `RuntimeDefault` instead of
    /// `Unconfined`.
    pub runtime_default: bool,
}

/// A CRI seccomp profile (upstream `getSeccompProfile`): the given one, else
/// `RuntimeDefault` with `seccompDefault`, else `Unconfined`.
pub fn seccomp_profile(
    profile: Option<&SeccompProfile>,
    seccomp: SeccompSettings<'_>,
) -> api::SecurityProfile {
    let mut out = api::SecurityProfile::new();
    let seccomp_root = seccomp.root;
    let default = if seccomp.runtime_default {
        "RuntimeDefault"
    } else {
        "Unconfined"
    };
    match profile.map_or(default, |p| p.type_.as_str()) {
        "RuntimeDefault" => out.set_profile_type(api::SecurityProfile_ProfileType::RuntimeDefault),
        "Localhost" => {
            out.set_profile_type(api::SecurityProfile_ProfileType::Localhost);
            let rel = profile
                .and_then(|p| p.localhost_profile.clone())
                .unwrap_or_default();
            out.set_localhost_ref(seccomp_root.join(rel).to_string_lossy().into_owned());
        }
        _ => out.set_profile_type(api::SecurityProfile_ProfileType::Unconfined),
    }
    out
}

/// The container's CRI security context (upstream `determineEffectiveSecurityContext` and
/// `convertToRuntimeSecurityContext`); namespaces are set by the caller.
pub fn container_security_context(
    pod: &Pod,
    container: &Container,
    seccomp: SeccompSettings<'_>,
) -> api::LinuxContainerSecurityContext {
    let eff = effective_security(pod, container);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = container.security_context.as_ref();
    let mut out = api::LinuxContainerSecurityContext::new();
    if let Some(uid) = eff.run_as_user {
        out.mut_run_as_user().set_value(uid);
    }
    if let Some(gid) = eff.run_as_group {
        out.mut_run_as_group().set_value(gid);
    }
    let mut groups: Vec<i64> = psc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(fs_group) = psc.and_then(|p| p.fs_group) {
        if !groups.contains(&fs_group) {
            groups.push(fs_group);
        }
    }
    out.set_supplemental_groups(groups);
    let privileged = csc.and_then(|c| c.privileged).unwrap_or(false);
    out.set_privileged(privileged);
    out.set_readonly_rootfs(
        csc.and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
    );
    if let Some(caps) = csc.and_then(|c| c.capabilities.as_ref()) {
        let mut c = api::Capability::new();
        c.set_add_capabilities(caps.add.clone().unwrap_or_default().into());
        c.set_drop_capabilities(caps.drop.clone().unwrap_or_default().into());
        out.set_capabilities(c);
    }
    // no_new_privs unless privilege escalation is explicitly allowed (or the container is
    // privileged, which implies it).
    let allow = csc.and_then(|c| c.allow_privilege_escalation);
    out.set_no_new_privs(!privileged && allow == Some(false));
    out.set_seccomp(seccomp_profile(eff.seccomp.as_ref(), seccomp));
    let apparmor = csc
        .and_then(|c| c.app_armor_profile.as_ref())
        .or_else(|| psc.and_then(|p| p.app_armor_profile.as_ref()));
    if let Some(profile) = apparmor {
        let mut p = api::SecurityProfile::new();
        match profile.type_.as_str() {
            "Unconfined" => p.set_profile_type(api::SecurityProfile_ProfileType::Unconfined),
            "Localhost" => {
                p.set_profile_type(api::SecurityProfile_ProfileType::Localhost);
                p.set_localhost_ref(profile.localhost_profile.clone().unwrap_or_default());
            }
            _ => p.set_profile_type(api::SecurityProfile_ProfileType::RuntimeDefault),
        }
        out.set_apparmor(p);
    }
    let unmasked = csc.and_then(|c| c.proc_mount.as_deref()) == Some("Unmasked");
    if !privileged && !unmasked {
        out.set_masked_paths(DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect());
        out.set_readonly_paths(
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    if let Some(se) = csc
        .and_then(|c| c.se_linux_options.as_ref())
        .or_else(|| psc.and_then(|p| p.se_linux_options.as_ref()))
    {
        let mut o = api::SELinuxOption::new();
        o.set_user(se.user.clone().unwrap_or_default());
        o.set_role(se.role.clone().unwrap_or_default());
        o.set_field_type(se.type_.clone().unwrap_or_default());
        o.set_level(se.level.clone().unwrap_or_default());
        out.set_selinux_options(o);
    }
    out
}

/// Upstream `GetContainerOOMScoreAdjust` for a QoS class; `memory_request` and
/// `memory_capacity` in bytes.
pub fn oom_score_adj(qos: &str, memory_request: i128, memory_capacity: i128) -> i64 {
    match qos {
        "Guaranteed" => GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {
            let capacity = memory_capacity.max(1);
            let adj = 1000 - (1000 * memory_request) / capacity;
            let adj = i64::try_from(adj).unwrap_or(1000);
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

/// The container's CRI resources (upstream `generateLinuxContainerResources`).
pub fn container_resources(
    container: &Container,
    qos: &str,
    memory_capacity: i128,
) -> api::LinuxContainerResources {
    let mut out = api::LinuxContainerResources::new();
    let cpu_limit = quantity_millis(container, "limits", "cpu");
    let request = request_millis(container, "cpu").unwrap_or(0);
    out.set_cpu_shares(milli_cpu_to_shares(
        i64::try_from(request).unwrap_or(i64::MAX),
    ));
    if let Some(limit) = cpu_limit {
        out.set_cpu_period(CPU_PERIOD_US);
        out.set_cpu_quota(milli_cpu_to_quota(
            i64::try_from(limit).unwrap_or(i64::MAX),
            CPU_PERIOD_US,
        ));
    }
    let memory_limit = quantity_millis(container, "limits", "memory").map(|m| m / 1000);
    if let Some(bytes) = memory_limit {
        out.set_memory_limit_in_bytes(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    let memory_request = request_millis(container, "memory").map_or(0, |m| m / 1000);
    out.set_oom_score_adj(oom_score_adj(qos, memory_request, memory_capacity));
    out.set_hugepage_limits(hugepage_limits(container).into());
    out
}

/// `hugepages-<size>` limits as CRI hugepage limits (`hugepages-2Mi` → page size `2MB`).
fn hugepage_limits(container: &Container) -> Vec<api::HugepageLimit> {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    limits
        .into_iter()
        .flatten()
        .filter_map(|(name, q)| {
            let size = name.strip_prefix("hugepages-")?;
            let bytes = parse_millis(size).ok()? / 1000;
            let page = match bytes {
                b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GB", b >> 30),
                b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MB", b >> 20),
                b => format!("{}KB", b >> 10),
            };
            let mut h = api::HugepageLimit::new();
            h.set_page_size(page);
            h.set_limit(u64::try_from(parse_millis(&q.0).ok()? / 1000).ok()?);
            Some(h)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn shares_quota_and_oom_score_tables() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (100, 102),
            (250, 256),
            (1000, 1024),
            (300_000, 262_144),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
        for (milli, quota) in [(0, 0), (1, 1000), (500, 50_000), (2000, 200_000)] {
            assert_eq!(milli_cpu_to_quota(milli, CPU_PERIOD_US), quota, "{milli}m");
        }
        let gi = 1i128 << 30;
        assert_eq!(oom_score_adj("Guaranteed", gi, 4 * gi), -997);
        assert_eq!(oom_score_adj("BestEffort", 0, 4 * gi), 1000);
        assert_eq!(oom_score_adj("Burstable", gi, 4 * gi), 750);
        assert_eq!(
            oom_score_adj("Burstable", 0, 4 * gi),
            999,
            "below BestEffort"
        );
        assert_eq!(
            oom_score_adj("Burstable", 4 * gi, 4 * gi),
            3,
            "above Guaranteed"
        );
    }

    #[test]
    fn limits_and_requests_become_cri_resources() {
        let c = container(serde_json::json!({"name": "app", "resources": {
            "limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}));
        let r = container_resources(&c, "Burstable", 1 << 32);
        assert_eq!(r.get_cpu_shares(), 256);
        assert_eq!((r.get_cpu_quota(), r.get_cpu_period()), (50_000, 100_000));
        assert_eq!(r.get_memory_limit_in_bytes(), 64 << 20);
        let huge = container(serde_json::json!({"name": "h", "resources": {
            "limits": {"hugepages-2Mi": "4Mi", "hugepages-1Gi": "2Gi", "memory": "1Gi"}}}));
        let h = container_resources(&huge, "Burstable", 1 << 34);
        let mut pages: Vec<(String, u64)> = h
            .get_hugepage_limits()
            .iter()
            .map(|l| (l.get_page_size().to_string(), l.get_limit()))
            .collect();
        pages.sort();
        assert_eq!(
            pages,
            [
                ("1GB".to_string(), 2u64 << 30),
                ("2MB".to_string(), 4 << 20)
            ]
        );
        let none = container_resources(
            &container(serde_json::json!({"name": "x"})),
            "BestEffort",
            1 << 32,
        );
        assert_eq!(
            (
                none.get_cpu_shares(),
                none.get_cpu_quota(),
                none.get_memory_limit_in_bytes()
            ),
            (2, 0, 0)
        );
        assert_eq!(none.get_oom_score_adj(), 1000);
    }

    #[test]
    fn container_settings_override_the_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 3000,
                                         "supplementalGroups": [4000], "fsGroup": 2000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "app"}]}
        }))
        .unwrap();
        let c = container(serde_json::json!({"name": "app", "securityContext": {
            "runAsUser": 1234, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["NET_RAW"], "add": ["NET_ADMIN"]}}}));
        let seccomp = SeccompSettings {
            root: std::path::Path::new("/var/lib/kubelet/seccomp"),
            runtime_default: false,
        };
        let sc = container_security_context(&pod, &c, seccomp);
        assert_eq!(sc.get_run_as_user().get_value(), 1234);
        assert_eq!(sc.get_run_as_group().get_value(), 3000);
        assert_eq!(sc.get_supplemental_groups(), [4000, 2000]);
        assert!(sc.get_readonly_rootfs() && sc.get_no_new_privs() && !sc.get_privileged());
        assert_eq!(sc.get_capabilities().get_drop_capabilities(), ["NET_RAW"]);
        assert_eq!(sc.get_capabilities().get_add_capabilities(), ["NET_ADMIN"]);
        assert_eq!(
            sc.get_seccomp().get_profile_type(),
            api::SecurityProfile_ProfileType::RuntimeDefault
        );
        assert_eq!(sc.get_masked_paths().len(), DEFAULT_MASKED_PATHS.len());
        let privileged =
            container(serde_json::json!({"name": "p", "securityContext": {"privileged": true}}));
        let sc = container_security_context(&pod, &privileged, seccomp);
        assert!(sc.get_privileged() && !sc.get_no_new_privs() && sc.get_masked_paths().is_empty());
    }

    #[test]
    fn seccomp_default_makes_runtime_default_the_default_profile() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}, {"name": "open",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}
        }))
        .unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let profile = |c: &Container, runtime_default| {
            let seccomp = SeccompSettings {
                root: std::path::Path::new("/s"),
                runtime_default,
            };
            container_security_context(&pod, c, seccomp)
                .get_seccomp()
                .get_profile_type()
        };
        use api::SecurityProfile_ProfileType::{RuntimeDefault, Unconfined};
        assert_eq!(profile(&spec.containers[0], false), Unconfined);
        assert_eq!(profile(&spec.containers[0], true), RuntimeDefault);
        assert_eq!(
            profile(&spec.containers[1], true),
            Unconfined,
            "explicit wins"
        );
    }

    #[test]
    fn run_as_non_root_is_verified_against_the_image_user() {
        let pod = |sc: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
                "spec": {"securityContext": sc, "containers": [{"name": "app"}]}
            }))
            .unwrap()
        };
        let c = container(serde_json::json!({"name": "app"}));
        let non_root = pod(serde_json::json!({"runAsNonRoot": true}));
        let err = verify_run_as_non_root(&non_root, &c, None, "").unwrap_err();
        assert_eq!(
            err,
            "container has runAsNonRoot and image will run as root (pod: \"web_team(u1)\", container: app)"
        );
        assert!(verify_run_as_non_root(&non_root, &c, Some(0), "").is_err());
        assert!(verify_run_as_non_root(&non_root, &c, Some(1000), "").is_ok());
        assert!(verify_run_as_non_root(&non_root, &c, None, "nginx")
            .unwrap_err()
            .contains("non-numeric user (nginx)"));
        let explicit = pod(serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}));
        assert!(verify_run_as_non_root(&explicit, &c, Some(1000), "")
            .unwrap_err()
            .starts_with("container's runAsUser breaks non-root policy"));
        assert!(verify_run_as_non_root(&pod(serde_json::json!({})), &c, Some(0), "").is_ok());
    }
}
