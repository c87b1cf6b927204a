//! The kubelet as the kubelet API server sees it: [`HostInterface`], the trait the server
//! defines, implemented over the running kubelet (desired pods and their statuses, the
//! runtime's view of pods and containers, log files, streaming URLs from CRI, and metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Kubelet;
use crate::config::settings::KubeletConfig;
use crate::cri::{api, RuntimeService};
use crate::kuberuntime::logs::{container_log_relative_path, pod_log_dir};
use crate::kuberuntime::{ContainerState, RuntimePodStatus};
use crate::server::stats::StatsProvider;
use crate::server::{HostError, HostInterface, LogSource, StreamOptions};
use crate::types::PodUid;
use crate::util::metrics::{self, Exposition};

/// The kubelet as the server sees it.
pub struct KubeletHost {
    kubelet: Arc<Kubelet>,
    config: Arc<KubeletConfig>,
    checks: Vec<crate::healthz::Check>,
    stats: StatsProvider,
}

impl KubeletHost {
    /// Wraps `kubelet`; `checks` answer `/healthz`.
    pub fn new(
        kubelet: Arc<Kubelet>,
        config: Arc<KubeletConfig>,
        checks: Vec<crate::healthz::Check>,
    ) -> KubeletHost {
        let runtime_manager = kubelet.runtime_manager();
        let stats = StatsProvider::new(
            Arc::clone(runtime_manager.runtime()),
            Arc::clone(runtime_manager.images()),
            &config.node_name,
            &config.root_dir,
            &config.pod_logs_dir,
        );
        KubeletHost {
            kubelet,
            config,
            checks,
            stats,
        }
    }

    fn runtime(&self) -> &Arc<dyn RuntimeService> {
        self.kubelet.runtime_manager().runtime()
    }

    /// The desired pod `namespace/name` (and UID, when given).
    fn find_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Arc<Pod>, HostError> {
        self.kubelet
            .desired_pods()
            .into_iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
                    && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u))
            })
            .ok_or_else(|| HostError::NotFound(format!("pod {name:?} does not exist")))
    }

    fn runtime_status(&self, pod: &Pod) -> Result<RuntimePodStatus, HostError> {
        let uid = PodUid(pod.metadata.uid.clone().unwrap_or_default());
        self.kubelet
            .runtime_manager()
            .get_pod_status(&uid)
            .map_err(|e| HostError::Internal(format!("reading the pod's containers: {e}")))
    }

    /// The running container `container` of a pod.
    fn running_container(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        container: &str,
    ) -> Result<String, HostError> {
        let pod = self.find_pod(namespace, name, uid)?;
        let status = self.runtime_status(&pod)?;
        match status.latest(container) {
            Some(c) if c.state == ContainerState::Running => Ok(c.id.0.clone()),
            Some(c) => Err(HostError::BadRequest(format!(
                "container {container:?} in pod {name:?} is not running (id {})",
                c.id.0
            ))),
            None => Err(HostError::NotFound(format!(
                "container not found ({container:?})"
            ))),
        }
    }

    /// The runtime id in `lastState.terminated.containerID` of a container's status:
    /// `None` when the pod has no status yet, `Some(None)` when there is no last state.
    fn last_terminated_id(&self, pod: &Pod, container: &str) -> Option<Option<String>> {
        let uid = PodUid(pod.metadata.uid.clone().unwrap_or_default());
        let status = self.kubelet.status_manager().get(&uid)?;
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        let id = statuses
            .filter(|s| s.name == container)
            .find_map(|s| {
                s.last_state
                    .as_ref()?
                    .terminated
                    .as_ref()?
                    .container_id
                    .clone()
            })
            .map(|id| {
                id.split_once("://")
                    .map_or(id.clone(), |(_, raw)| raw.to_string())
            });
        Some(id)
    }

    fn running_gauges(&self) -> Option<(u64, BTreeMap<&'static str, u64>)> {
        let pods = self.kubelet.runtime_manager().list_running_pods().ok()?;
        let running_pods = pods
            .iter()
            .filter(|p| p.sandboxes.iter().any(|(_, ready)| *ready))
            .count() as u64;
        let mut states = BTreeMap::new();
        for c in pods.iter().flat_map(|p| &p.containers) {
            let state = match c.state {
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
                ContainerState::Unknown => "unknown",
            };
            *states.entry(state).or_insert(0) += 1;
        }
        Some((running_pods, states))
    }

    fn probe_exposition(&self, e: &mut Exposition) {
        e.family(
            "prober_probe_total",
            "[ALPHA] Cumulative number of a liveness, readiness or startup probe for a container by result.",
            "counter",
        );
        let names = [
            "probe_type",
            "result",
            "container",
            "pod",
            "namespace",
            "pod_uid",
        ];
        for (series, count) in self.kubelet.probe_metrics().series() {
            let values = [
                series.0.to_string(),
                series.1.to_string(),
                series.2,
                series.3,
                series.4,
                series.5,
            ];
            e.sample("prober_probe_total", &names, &values, count as f64);
        }
    }
}

impl HostInterface for KubeletHost {
    fn node_name(&self) -> String {
        self.config.node_name.clone()
    }

    fn pods(&self) -> Vec<Pod> {
        let statuses = self.kubelet.status_manager();
        self.kubelet
            .desired_pods()
            .into_iter()
            .map(|p| {
                let mut pod = (*p).clone();
                let uid = PodUid(pod.metadata.uid.clone().unwrap_or_default());
                if let Some(status) = statuses.get(&uid) {
                    pod.status = Some((*status).clone());
                }
                pod
            })
            .collect()
    }

    fn running_pods(&self) -> Result<Vec<Pod>, HostError> {
        let pods = self
            .kubelet
            .runtime_manager()
            .list_running_pods()
            .map_err(|e| HostError::Internal(format!("listing the runtime's pods: {e}")))?;
        Ok(pods
            .iter()
            .map(|p| {
                let mut names: Vec<String> = Vec::new();
                for c in &p.containers {
                    if !names.contains(&c.name) {
                        names.push(c.name.clone());
                    }
                }
                Pod {
                    metadata: ObjectMeta {
                        name: Some(p.name.clone()),
                        namespace: Some(p.namespace.clone()),
                        uid: Some(p.uid.0.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PodSpec {
                        containers: names
                            .into_iter()
                            .map(|name| Container {
                                name,
                                ..Container::default()
                            })
                            .collect(),
                        ..PodSpec::default()
                    }),
                    status: None,
                }
            })
            .collect())
    }

    fn configz(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config.raw).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("kind".into(), "KubeletConfiguration".into());
            map.insert("apiVersion".into(), "kubelet.config.k8s.io/v1beta1".into());
        }
        v
    }

    fn healthz(&self) -> &[crate::healthz::Check] {
        &self.checks
    }

    fn container_log(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, HostError> {
        let pod = self.find_pod(namespace, name, None)?;
        let in_spec = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == container)
                || s.ephemeral_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == container)
        });
        if !in_spec {
            return Err(HostError::BadRequest(format!(
                "container {container} is not valid for pod {name}"
            )));
        }
        let status = self.runtime_status(&pod)?;
        let mut attempts = status.containers.iter().filter(|c| c.name == container);
        let not_found = || {
            HostError::BadRequest(format!(
                "previous terminated container {container:?} in pod {name:?} not found"
            ))
        };
        let chosen = if previous {
            // As upstream: the container of the status's lastState.terminated (in a crash
            // loop that is the attempt that just exited).
            match self.last_terminated_id(&pod, container) {
                Some(Some(id)) => status
                    .containers
                    .iter()
                    .find(|c| c.id.0 == id)
                    .ok_or_else(not_found)?,
                Some(None) => return Err(not_found()),
                None => attempts.nth(1).ok_or_else(not_found)?,
            }
        } else {
            attempts.next().ok_or_else(|| {
                HostError::BadRequest(format!(
                    "container {container:?} in pod {name:?} is waiting to start: ContainerCreating"
                ))
            })?
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let path = pod_log_dir(&self.config.pod_logs_dir, namespace, name, &uid)
            .join(container_log_relative_path(container, chosen.restart_count));
        let runtime = Arc::clone(self.runtime());
        let id = chosen.id.0.clone();
        let running = chosen.state == ContainerState::Running;
        Ok(LogSource {
            path,
            running: Box::new(move || {
                running
                    && runtime
                        .container_status(&id, false)
                        .ok()
                        .and_then(|s| s.status.into_option())
                        .is_some_and(|s| s.state == api::ContainerState::CONTAINER_RUNNING)
            }),
        })
    }

    fn exec_url(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
        streams: StreamOptions,
    ) -> Result<String, HostError> {
        let id = self.running_container(namespace, pod, uid, container)?;
        let mut req = api::ExecRequest::new();
        req.container_id = id;
        req.cmd = command.to_vec().into();
        req.tty = streams.tty;
        req.stdin = streams.stdin;
        req.stdout = streams.stdout;
        req.stderr = streams.stderr && !streams.tty;
        self.runtime()
            .exec(&req)
            .map_err(|e| HostError::Internal(format!("exec: {e}")))
    }

    fn attach_url(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        streams: StreamOptions,
    ) -> Result<String, HostError> {
        let id = self.running_container(namespace, pod, uid, container)?;
        let mut req = api::AttachRequest::new();
        req.container_id = id;
        req.tty = streams.tty;
        req.stdin = streams.stdin;
        req.stdout = streams.stdout;
        req.stderr = streams.stderr && !streams.tty;
        self.runtime()
            .attach(&req)
            .map_err(|e| HostError::Internal(format!("attach: {e}")))
    }

    fn port_forward_url(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<String, HostError> {
        let pod = self.find_pod(namespace, name, uid)?;
        let status = self.runtime_status(&pod)?;
        let sandbox = status
            .latest_sandbox()
            .filter(|s| s.ready)
            .ok_or_else(|| HostError::BadRequest(format!("pod {name:?} has no running sandbox")))?;
        let mut req = api::PortForwardRequest::new();
        req.pod_sandbox_id = sandbox.id.clone();
        self.runtime()
            .port_forward(&req)
            .map_err(|e| HostError::Internal(format!("port-forward: {e}")))
    }

    fn run_in_container(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
    ) -> Result<Vec<u8>, HostError> {
        let id = self.running_container(namespace, pod, uid, container)?;
        let timeout = self
            .config
            .runtime_request_timeout
            .max(Duration::from_secs(1));
        let out = self
            .runtime()
            .exec_sync(&id, command, timeout)
            .map_err(|e| HostError::Internal(format!("run: {e}")))?;
        let mut bytes = out.stdout;
        bytes.extend_from_slice(&out.stderr);
        Ok(bytes)
    }

    fn summary(&self, only_cpu_and_memory: bool) -> Result<serde_json::Value, HostError> {
        let mut summary = self
            .stats
            .summary(only_cpu_and_memory)
            .map_err(HostError::Internal)?;
        if !only_cpu_and_memory {
            let claims = self
                .kubelet
                .runtime_manager()
                .volumes()
                .claim_volumes_with_usage();
            crate::server::claim_stats::label_claim_volumes(&mut summary, &claims);
        }
        serde_json::to_value(summary).map_err(|e| HostError::Internal(e.to_string()))
    }

    fn metrics(&self) -> String {
        let m = metrics::kubelet();
        let mut e = Exposition::default();
        e.family(
            "kubelet_node_name",
            "[ALPHA] The node's name. The count is always 1.",
            "gauge",
        );
        e.sample(
            "kubelet_node_name",
            &["node"],
            std::slice::from_ref(&self.config.node_name),
            1.0,
        );
        if let Some((pods, containers)) = self.running_gauges() {
            e.family(
                "kubelet_running_pods",
                "[ALPHA] Number of pods that have a running pod sandbox",
                "gauge",
            );
            e.sample("kubelet_running_pods", &[], &[], pods as f64);
            e.family(
                "kubelet_running_containers",
                "[ALPHA] Number of containers currently running",
                "gauge",
            );
            for (state, n) in containers {
                e.sample(
                    "kubelet_running_containers",
                    &["container_state"],
                    &[state.into()],
                    n as f64,
                );
            }
        }
        e.family(
            "kubelet_pod_start_duration_seconds",
            "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            "histogram",
        );
        e.histogram(
            "kubelet_pod_start_duration_seconds",
            &[],
            &[],
            &m.pod_start_duration,
        );
        e.histogram_vec(
            "kubelet_pod_worker_duration_seconds",
            "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            &["operation_type"],
            &m.pod_worker_duration,
        );
        let pleg = &self.kubelet.pleg().metrics;
        e.family(
            "kubelet_pleg_relist_duration_seconds",
            "[ALPHA] Duration in seconds for relisting pods in PLEG.",
            "histogram",
        );
        e.histogram(
            "kubelet_pleg_relist_duration_seconds",
            &[],
            &[],
            &pleg.relist_duration,
        );
        e.family(
            "kubelet_pleg_relist_interval_seconds",
            "[ALPHA] Interval in seconds between relisting in PLEG.",
            "histogram",
        );
        e.histogram(
            "kubelet_pleg_relist_interval_seconds",
            &[],
            &[],
            &pleg.relist_interval,
        );
        e.counter_vec(
            "kubelet_runtime_operations_total",
            "[ALPHA] Cumulative number of runtime operations by operation type.",
            &["operation_type"],
            &m.runtime_operations,
        );
        e.histogram_vec(
            "kubelet_runtime_operations_duration_seconds",
            "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
            &["operation_type"],
            &m.runtime_durations,
        );
        e.counter_vec(
            "kubelet_runtime_operations_errors_total",
            "[ALPHA] Cumulative number of runtime operation errors by operation type.",
            &["operation_type"],
            &m.runtime_errors,
        );
        e.family(
            "kubelet_started_pods_total",
            "[ALPHA] Cumulative number of pods started",
            "counter",
        );
        e.sample(
            "kubelet_started_pods_total",
            &[],
            &[],
            m.started_pods.get() as f64,
        );
        e.family(
            "kubelet_started_pods_errors_total",
            "[ALPHA] Cumulative number of errors when starting pods",
            "counter",
        );
        e.sample(
            "kubelet_started_pods_errors_total",
            &[],
            &[],
            m.started_pods_errors.get() as f64,
        );
        e.counter_vec(
            "kubelet_started_containers_total",
            "[ALPHA] Cumulative number of containers started",
            &["container_type"],
            &m.started_containers,
        );
        e.counter_vec(
            "kubelet_started_containers_errors_total",
            "[ALPHA] Cumulative number of errors when starting containers",
            &["container_type", "code"],
            &m.started_containers_errors,
        );
        e.counter_vec(
            "kubelet_evictions",
            "[ALPHA] Cumulative number of pod evictions by eviction signal",
            &["eviction_signal"],
            &m.evictions,
        );
        let claims = self
            .kubelet
            .runtime_manager()
            .volumes()
            .claim_volumes_with_usage();
        crate::server::claim_stats::claim_volume_metrics(&mut e, &claims);
        self.probe_exposition(&mut e);
        process_metrics(&mut e);
        e.finish()
    }

    fn probe_metrics(&self) -> String {
        let mut e = Exposition::default();
        self.probe_exposition(&mut e);
        e.finish()
    }

    fn resource_metrics(&self) -> String {
        self.stats.resource_metrics()
    }

    fn devices(&self) -> Option<Arc<crate::devicemanager::DeviceManager>> {
        self.kubelet.runtime_manager().devices().cloned()
    }

    fn cadvisor_metrics(&self) -> String {
        let tree = self.kubelet.runtime_manager().cgroups().map(|cm| {
            let (kubepods_id, mount, kubepods_dirs) = cm.kubepods_tree();
            crate::server::cadvisor::Tree {
                version: cm.version(),
                mount: mount.to_path_buf(),
                kubepods_id,
                kubepods_dirs,
            }
        });
        self.stats.cadvisor_metrics(
            tree.as_ref(),
            self.config.pod_infra_container_image.as_deref(),
        )
    }
}

/// The standard `process_*` metrics of this process, from `/proc/self`.
pub fn process_metrics(e: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    const HZ: f64 = 100.0;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        e.family(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
        );
        e.sample("process_cpu_seconds_total", &[], &[], (utime + stime) / HZ);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|k| k * 1024.0)
    };
    if let Some(rss) = kib("VmRSS:") {
        e.family(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
        );
        e.sample("process_resident_memory_bytes", &[], &[], rss);
    }
    if let Some(vm) = kib("VmSize:") {
        e.family(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
        );
        e.sample("process_virtual_memory_bytes", &[], &[], vm);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        e.family(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
        );
        e.sample("process_start_time_seconds", &[], &[], boot + start / HZ);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.family(
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
        );
        e.sample("process_open_fds", &[], &[], fds.count() as f64);
    }
    let max = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        });
    if let Some(max) = max {
        e.family(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
        );
        e.sample("process_max_fds", &[], &[], max);
    }
}
