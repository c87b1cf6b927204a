//! The CRI sandbox config for a pod (upstream `generatePodSandboxConfig`): metadata, hostname,
//! log directory, DNS, port mappings, namespaces, labels and annotations.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use protobuf::RepeatedField;

use crate::cri::api;
use crate::types::is_host_network;

use super::labels::{new_pod_labels, pod_name, pod_namespace, pod_uid};
use super::logs::pod_log_dir;
use super::RuntimeSettings;

/// Parsed `nameserver`/`search`/`options` lines of a resolv.conf.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses.
    pub servers: Vec<String>,
    /// `search` domains.
    pub searches: Vec<String>,
    /// `options` entries.
    pub options: Vec<String>,
}

/// Parses resolv.conf text; comments and unknown lines are skipped.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => conf.servers.extend(words.take(1).map(str::to_string)),
            // The last `search` line wins, as in the resolver.
            Some("search") => conf.searches = words.map(str::to_string).collect(),
            Some("options") => conf.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    conf
}

/// The pod's DNS config for the sandbox (upstream `GetPodDNS`, without cluster DNS when none
/// is configured: `ClusterFirst` then falls back to the host's resolv.conf as upstream does).
pub fn pod_dns(pod: &Pod, settings: &RuntimeSettings) -> api::DNSConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host = settings
        .resolv_conf
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default();
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !is_host_network(pod),
        _ => false,
    };
    let mut conf = if policy == "None" {
        ResolvConf::default()
    } else if cluster_first && !settings.cluster_dns.is_empty() {
        let ns = pod_namespace(pod);
        let mut searches = Vec::new();
        if let Some(domain) = settings.cluster_domain.as_deref() {
            searches.push(format!("{ns}.svc.{domain}"));
            searches.push(format!("svc.{domain}"));
            searches.push(domain.to_string());
        }
        searches.extend(host.searches);
        ResolvConf {
            servers: settings
                .cluster_dns
                .iter()
                .map(|ip| ip.to_string())
                .collect(),
            searches,
            options: vec!["ndots:5".to_string()],
        }
    } else {
        host
    };
    if let Some(custom) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.servers
            .extend(custom.nameservers.iter().flatten().cloned());
        conf.searches
            .extend(custom.searches.iter().flatten().cloned());
        for o in custom.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            conf.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            conf.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut dns = api::DNSConfig::new();
    dns.set_servers(RepeatedField::from_vec(conf.servers));
    dns.set_searches(RepeatedField::from_vec(conf.searches));
    dns.set_options(RepeatedField::from_vec(conf.options));
    dns
}

/// The hostname a pod sees: `spec.hostname` or the pod name, cut to 63 characters; the
/// node's for host-network pods.
pub fn pod_hostname(pod: &Pod, node_name: &str) -> String {
    if is_host_network(pod) {
        return node_name.to_string();
    }
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| pod_name(pod).to_string());
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

fn port_mappings(pod: &Pod) -> Vec<api::PortMapping> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| {
            let mut m = api::PortMapping::new();
            m.set_protocol(match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::UDP,
                Some("SCTP") => api::Protocol::SCTP,
                _ => api::Protocol::TCP,
            });
            m.set_container_port(p.container_port);
            m.set_host_port(p.host_port.unwrap_or(0));
            m.set_host_ip(p.host_ip.clone().unwrap_or_default());
            m
        })
        .collect()
}

/// The namespace modes for a pod's sandbox and containers.
pub fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let node_or_pod = |host: Option<bool>| {
        if host.unwrap_or(false) {
            api::NamespaceMode::NODE
        } else {
            api::NamespaceMode::POD
        }
    };
    let mut ns = api::NamespaceOption::new();
    ns.set_network(node_or_pod(spec.and_then(|s| s.host_network)));
    ns.set_ipc(node_or_pod(spec.and_then(|s| s.host_ipc)));
    ns.set_pid(if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        api::NamespaceMode::NODE
    } else if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        api::NamespaceMode::POD
    } else {
        api::NamespaceMode::CONTAINER
    });
    ns
}

/// Builds the sandbox config for `pod` at sandbox `attempt`.
pub fn generate_sandbox_config(
    pod: &Pod,
    attempt: u32,
    settings: &RuntimeSettings,
) -> api::PodSandboxConfig {
    let mut meta = api::PodSandboxMetadata::new();
    meta.set_name(pod_name(pod).to_string());
    meta.set_namespace(pod_namespace(pod).to_string());
    meta.set_uid(pod_uid(pod).to_string());
    meta.set_attempt(attempt);

    let mut config = api::PodSandboxConfig::new();
    config.set_metadata(meta);
    // A hostNetwork pod shares the node's UTS namespace: setting a hostname there is refused
    // by the runtime (runc: "unable to set hostname without a private UTS namespace"), so,
    // as upstream, only pods with their own network get one.
    if !is_host_network(pod) {
        config.set_hostname(pod_hostname(pod, &settings.node_name));
    }
    config.set_log_directory(log_directory(pod, &settings.pod_logs_dir));
    config.set_dns_config(pod_dns(pod, settings));
    config.set_port_mappings(RepeatedField::from_vec(port_mappings(pod)));
    config.set_labels(new_pod_labels(pod));
    config.set_annotations(
        pod.metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );

    let mut security = api::LinuxSandboxSecurityContext::new();
    security.set_namespace_options(namespace_options(pod));
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    if let Some(uid) = psc.and_then(|p| p.run_as_user) {
        security.mut_run_as_user().set_value(uid);
    }
    if let Some(gid) = psc.and_then(|p| p.run_as_group) {
        security.mut_run_as_group().set_value(gid);
    }
    let mut groups = psc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default();
    groups.extend(psc.and_then(|p| p.fs_group).filter(|g| !groups.contains(g)));
    security.set_supplemental_groups(groups);
    // The sandbox is privileged when any container is (upstream
    // `determinePodSandboxPrivileged`).
    let privileged = pod.spec.iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
    });
    security.set_privileged(privileged);
    security.set_seccomp(super::security::seccomp_profile(
        psc.and_then(|p| p.seccomp_profile.as_ref()),
        super::security::SeccompSettings {
            root: &settings.root_dir.join("seccomp"),
            runtime_default: settings.seccomp_default,
        },
    ));
    let mut linux = api::LinuxPodSandboxConfig::new();
    linux.set_security_context(security);
    linux.set_sysctls(
        psc.and_then(|p| p.sysctls.as_ref())
            .into_iter()
            .flatten()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
    );
    config.set_linux(linux);
    config
}

/// The pod's log directory as a string for CRI.
pub fn log_directory(pod: &Pod, pod_logs_dir: &Path) -> String {
    pod_log_dir(
        pod_logs_dir,
        pod_namespace(pod),
        pod_name(pod),
        pod_uid(pod),
    )
    .to_string_lossy()
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn settings() -> RuntimeSettings {
        RuntimeSettings {
            node_name: "node1".into(),
            ..RuntimeSettings::for_tests(Path::new("/tmp/rkubelet-test"))
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-node1".into()),
                namespace: Some("team".into()),
                uid: Some("u1".into()),
                annotations: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(vec![ContainerPort {
                        container_port: 80,
                        host_port: Some(8080),
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resolv_conf_parsing() {
        let c = parse_resolv_conf(
            "# c\nnameserver 1.1.1.1\nnameserver 8.8.8.8 # x\nsearch a b\nsearch c d\noptions ndots:2 edns0\n",
        );
        assert_eq!(c.servers, ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(c.searches, ["c", "d"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn sandbox_config_fields() {
        let c = generate_sandbox_config(&pod(), 2, &settings());
        assert_eq!(c.get_metadata().get_name(), "web-node1");
        assert_eq!(c.get_metadata().get_namespace(), "team");
        assert_eq!(c.get_metadata().get_attempt(), 2);
        assert_eq!(c.get_hostname(), "web-node1");
        assert!(c.get_log_directory().ends_with("/team_web-node1_u1"));
        assert_eq!(
            c.get_labels()
                .get("io.kubernetes.pod.uid")
                .map(String::as_str),
            Some("u1")
        );
        assert_eq!(c.get_annotations().get("a").map(String::as_str), Some("b"));
        let pm = &c.get_port_mappings()[0];
        assert_eq!((pm.get_container_port(), pm.get_host_port()), (80, 8080));
        assert_eq!(pm.get_protocol(), api::Protocol::UDP);
        let ns = c.get_linux().get_security_context().get_namespace_options();
        assert_eq!(ns.get_network(), api::NamespaceMode::POD);
        assert_eq!(ns.get_pid(), api::NamespaceMode::CONTAINER);
    }

    #[test]
    fn cluster_dns_and_host_network() {
        let mut s = settings();
        s.cluster_dns = vec!["10.96.0.10".parse().unwrap()];
        s.cluster_domain = Some("cluster.local".into());
        let dns = pod_dns(&pod(), &s);
        assert_eq!(dns.get_servers(), ["10.96.0.10"]);
        assert_eq!(dns.get_searches()[0], "team.svc.cluster.local");
        let mut p = pod();
        if let Some(spec) = p.spec.as_mut() {
            spec.host_network = Some(true);
        }
        assert_eq!(pod_hostname(&p, "node1"), "node1");
        assert_eq!(
            generate_sandbox_config(&p, 0, &s).get_hostname(),
            "",
            "no hostname in the node's UTS namespace"
        );
        let ns = namespace_options(&p);
        assert_eq!(ns.get_network(), api::NamespaceMode::NODE);
        assert!(pod_dns(&p, &s)
            .get_servers()
            .iter()
            .all(|x| x != "10.96.0.10"));
    }
}
