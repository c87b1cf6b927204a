//! Which sysctls a pod may set (upstream `pkg/kubelet/sysctl`): the safe ones (namespaced,
//! isolated per pod; some only on kernels that namespace them), plus the unsafe ones the
//! operator allows with `allowedUnsafeSysctls` (names or `prefix*` patterns, which must be
//! namespaced sysctls). A pod asking for anything else, or for a network (IPC) sysctl while
//! it shares the host's network (IPC) namespace, is rejected at admission with reason
//! `SysctlForbidden`; nothing the runtime would apply to the host slips through.

use k8s_openapi::api::core::v1::Pod;

use super::admission::Rejection;

/// Upstream's admission reason.
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";

/// The safe sysctls, with the kernel version (major, minor) that namespaces each, if any.
const SAFE_SYSCTLS: &[(&str, Option<(u32, u32)>)] = &[
    ("kernel.shm_rmid_forced", None),
    ("net.ipv4.ip_local_port_range", None),
    ("net.ipv4.tcp_syncookies", None),
    ("net.ipv4.ping_group_range", None),
    ("net.ipv4.ip_unprivileged_port_start", None),
    ("net.ipv4.ip_local_reserved_ports", Some((3, 16))),
    ("net.ipv4.tcp_keepalive_time", Some((4, 5))),
    ("net.ipv4.tcp_fin_timeout", Some((4, 6))),
    ("net.ipv4.tcp_keepalive_intvl", Some((4, 5))),
    ("net.ipv4.tcp_keepalive_probes", Some((4, 5))),
    ("net.ipv4.tcp_rmem", Some((4, 15))),
    ("net.ipv4.tcp_wmem", Some((4, 15))),
];

/// The namespace a sysctl is isolated in, if any (upstream `NamespacedBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Namespace {
    Ipc,
    Net,
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Namespace::Ipc => "ipc",
            Namespace::Net => "net",
        }
    }
}

fn namespaced_by(name: &str) -> Option<Namespace> {
    if name == "kernel.sem" {
        return Some(Namespace::Ipc);
    }
    if ["kernel.shm", "kernel.msg", "fs.mqueue."]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some(Namespace::Ipc);
    }
    name.starts_with("net.").then_some(Namespace::Net)
}

/// A sysctl name with `/` separators in the dotted form (upstream
/// `ConvertSysctlVariableToDotsSeparator`: when the first separator is a `/`, slashes and
/// dots swap).
pub fn dotted(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// Why the operator's `allowedUnsafeSysctls` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowedUnsafeSysctls: {0}")]
pub struct AllowlistError(String);

/// The sysctls pods may set on this node.
#[derive(Debug, Clone, Default)]
pub struct SysctlAllowlist {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl SysctlAllowlist {
    /// The safe sysctls this kernel namespaces (`kernel`: its (major, minor), `None` when
    /// unknown: only the ones every kernel namespaces) and the operator's unsafe ones.
    pub fn new(
        allowed_unsafe: &[String],
        kernel: Option<(u32, u32)>,
    ) -> Result<Self, AllowlistError> {
        let mut list = SysctlAllowlist::default();
        for (name, min_kernel) in SAFE_SYSCTLS {
            let supported = match (min_kernel, kernel) {
                (None, _) => true,
                (Some(min), Some(have)) => have >= *min,
                (Some(_), None) => false,
            };
            if supported {
                list.names.push((*name).to_string());
            }
        }
        for entry in allowed_unsafe {
            let entry = dotted(entry);
            let valid = !entry.is_empty()
                && entry.len() <= 253
                && entry.trim_end_matches('*').chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && entry.matches('*').count() <= 1
                && (!entry.contains('*') || entry.ends_with('*'));
            if !valid {
                return Err(AllowlistError(format!(
                    "sysctl {entry:?} must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\\*)?$"
                )));
            }
            match entry.strip_suffix('*') {
                Some(prefix) => {
                    if namespaced_by(prefix).is_none() {
                        return Err(AllowlistError(format!(
                            "the sysctls {entry:?} are not known to be namespaced"
                        )));
                    }
                    list.prefixes.push(prefix.to_string());
                }
                None => {
                    if namespaced_by(&entry).is_none() {
                        return Err(AllowlistError(format!(
                            "the sysctl {entry:?} are not known to be namespaced"
                        )));
                    }
                    list.names.push(entry);
                }
            }
        }
        Ok(list)
    }

    fn allows(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Admits `pod` unless one of its sysctls is forbidden here (upstream `Admit`).
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let sysctls = spec
            .security_context
            .as_ref()
            .and_then(|s| s.sysctls.as_deref())
            .unwrap_or_default();
        for sysctl in sysctls {
            let name = dotted(&sysctl.name);
            let why = if !self.allows(&name) {
                Some(format!("{name:?} not allowlisted"))
            } else {
                let shared = match namespaced_by(&name) {
                    Some(Namespace::Net) => spec.host_network.unwrap_or(false),
                    Some(Namespace::Ipc) => spec.host_ipc.unwrap_or(false),
                    None => false,
                };
                namespaced_by(&name)
                    .filter(|_| shared)
                    .map(|ns| format!("{name:?} not allowed with host {} enabled", ns.name()))
            };
            if let Some(why) = why {
                return Err(Rejection {
                    reason: FORBIDDEN_REASON.to_string(),
                    message: format!("forbidden sysctl: {why}"),
                });
            }
        }
        Ok(())
    }
}

/// The running kernel's (major, minor) version, from `/proc/sys/kernel/osrelease`.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel_version(&release)
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sysctls: &[&str], host_network: bool) -> Pod {
        let list: Vec<serde_json::Value> = sysctls
            .iter()
            .map(|n| serde_json::json!({"name": n, "value": "1"}))
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "hostNetwork": host_network, "securityContext": {"sysctls": list},
            "containers": [{"name": "c"}]}}))
        .unwrap()
    }

    #[test]
    fn safe_sysctls_pass_unsafe_ones_only_when_allowed() {
        let list = SysctlAllowlist::new(&[], Some((6, 1))).unwrap();
        assert!(list
            .admit(&pod(
                &["net.ipv4.tcp_syncookies", "kernel.shm_rmid_forced"],
                false
            ))
            .is_ok());
        assert!(
            list.admit(&pod(&["net/ipv4/tcp_rmem"], false)).is_ok(),
            "slashes work too"
        );
        let err = list.admit(&pod(&["kernel.msgmax"], false)).unwrap_err();
        assert_eq!(err.reason, "SysctlForbidden");
        assert_eq!(
            err.message,
            "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
        );
        let allowed =
            SysctlAllowlist::new(&["kernel.msg*".into(), "net.core.somaxconn".into()], None)
                .unwrap();
        assert!(allowed
            .admit(&pod(&["kernel.msgmax", "net.core.somaxconn"], false))
            .is_ok());
        // Kernels too old to namespace a sysctl do not get it.
        assert!(allowed.admit(&pod(&["net.ipv4.tcp_rmem"], false)).is_err());
    }

    #[test]
    fn network_sysctls_are_refused_on_the_host_network() {
        let list = SysctlAllowlist::new(&[], Some((6, 1))).unwrap();
        let err = list
            .admit(&pod(&["net.ipv4.ip_local_port_range"], true))
            .unwrap_err();
        assert_eq!(
            err.message,
            "forbidden sysctl: \"net.ipv4.ip_local_port_range\" not allowed with host net enabled"
        );
        assert!(list.admit(&pod(&["kernel.shm_rmid_forced"], true)).is_ok());
    }

    #[test]
    fn the_allowlist_takes_only_namespaced_sysctls() {
        for bad in ["vm.swappiness", "kernel.*", "net.*.x", "Net.core"] {
            assert!(SysctlAllowlist::new(&[bad.into()], None).is_err(), "{bad}");
        }
        assert!(SysctlAllowlist::new(&["net.*".into(), "fs.mqueue.*".into()], None).is_ok());
        assert_eq!(parse_kernel_version("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.15"), Some((4, 15)));
    }
}
