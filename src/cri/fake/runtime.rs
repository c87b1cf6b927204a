//! The runtime half of [`FakeRuntime`]: sandbox and container lifecycles with
//! containerd's semantics and error messages (see the parent module docs). The
//! `RuntimeService` calls are answered here for the runtime itself (version, status,
//! stats) and by [`sandbox`] and [`container`] for the rest.

use std::time::Duration;

use super::{labels_match, Call, FakeRuntime};
use crate::cri::api::{self, ContainerState};
use crate::cri::{CriError, RuntimeService};

mod container;
mod sandbox;

impl RuntimeService for FakeRuntime {
    fn version(&self, _api_version: &str) -> Result<api::VersionResponse, CriError> {
        let st = self.begin("Version", || Call::Version)?;
        let mut v = api::VersionResponse::new();
        v.version = "0.1.0".to_string();
        v.runtime_name = "fake-runtime".to_string();
        v.runtime_version = "1.0.0".to_string();
        v.runtime_api_version = st.api_version.clone();
        Ok(v)
    }

    fn status(&self, _verbose: bool) -> Result<api::StatusResponse, CriError> {
        let st = self.begin("Status", || Call::Status)?;
        let mut status = api::RuntimeStatus::new();
        status.conditions = st.conditions.clone().into();
        let mut resp = api::StatusResponse::new();
        resp.set_status(status);
        Ok(resp)
    }

    fn runtime_config(&self) -> Result<api::RuntimeConfigResponse, CriError> {
        let st = self.begin("RuntimeConfig", || Call::RuntimeConfig)?;
        let Some(driver) = st.cgroup_driver else {
            return Err(CriError::Rpc {
                method: "RuntimeConfig",
                code: crate::cri::RpcCode::Unimplemented,
                message: "unknown method RuntimeConfig".to_string(),
            });
        };
        let mut linux = api::LinuxRuntimeConfiguration::new();
        linux.set_cgroup_driver(driver);
        let mut resp = api::RuntimeConfigResponse::new();
        resp.set_linux(linux);
        Ok(resp)
    }

    fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        sandbox::run(self, config, runtime_handler)
    }

    fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        sandbox::stop(self, pod_sandbox_id)
    }

    fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        sandbox::remove(self, pod_sandbox_id)
    }

    fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse, CriError> {
        sandbox::status(self, pod_sandbox_id, verbose)
    }

    fn list_pod_sandbox(
        &self,
        filter: Option<&api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        sandbox::list(self, filter, None)
    }

    fn list_pod_sandbox_brief(
        &self,
        keep: &[&str],
    ) -> Result<std::sync::Arc<Vec<api::PodSandbox>>, CriError> {
        sandbox::list(self, None, Some(keep)).map(std::sync::Arc::new)
    }

    fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &api::ContainerConfig,
        _sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        container::create(self, pod_sandbox_id, config)
    }

    fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        container::start(self, container_id)
    }

    fn stop_container(&self, container_id: &str, timeout_secs: i64) -> Result<(), CriError> {
        container::stop(self, container_id, timeout_secs)
    }

    fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        container::remove(self, container_id)
    }

    fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        container::reopen_log(self, container_id)
    }

    fn list_containers(
        &self,
        filter: Option<&api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError> {
        container::list(self, filter, None)
    }

    fn list_containers_brief(
        &self,
        keep: &[&str],
    ) -> Result<std::sync::Arc<Vec<api::Container>>, CriError> {
        container::list(self, None, Some(keep)).map(std::sync::Arc::new)
    }

    fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse, CriError> {
        container::status(self, container_id, verbose)
    }

    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<api::ExecSyncResponse, CriError> {
        container::exec_sync(self, container_id, cmd)
    }

    /// Plausible figures for running containers: 1% of a core since the start and a
    /// working set between 4 and 8 MiB fixed by the id, a 4 KiB writable layer.
    fn list_pod_sandbox_stats(
        &self,
        filter: Option<&api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>, CriError> {
        let mut st = self.begin("ListPodSandboxStats", || Call::ListPodSandboxStats)?;
        let now = st.now();
        let wrap = |v: u64| {
            let mut w = api::UInt64Value::new();
            w.value = v;
            w
        };
        let out = st
            .sandboxes
            .values()
            .filter(|s| s.status.state == api::PodSandboxState::SANDBOX_READY)
            .filter(|s| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || f.id == s.status.id)
                        && labels_match(&f.label_selector, &s.status.labels)
                })
            })
            .map(|s| {
                let mut attrs = api::PodSandboxAttributes::new();
                attrs.id = s.status.id.clone();
                attrs.metadata = s.status.metadata.clone();
                attrs.labels = s.status.labels.clone();
                attrs.annotations = s.status.annotations.clone();
                // Counters that grow with the sandbox's age, as a real interface's do.
                let age_s = u64::try_from((now - s.status.created_at) / 1_000_000_000).unwrap_or(0);
                let mut eth0 = api::NetworkInterfaceUsage::new();
                eth0.name = "eth0".into();
                eth0.rx_bytes = Some(wrap(1000 * age_s)).into();
                eth0.rx_errors = Some(wrap(0)).into();
                eth0.tx_bytes = Some(wrap(500 * age_s)).into();
                eth0.tx_errors = Some(wrap(0)).into();
                let mut network = api::NetworkUsage::new();
                network.timestamp = now;
                network.default_interface = Some(eth0).into();
                let mut linux = api::LinuxPodSandboxStats::new();
                linux.network = Some(network).into();
                let mut stats = api::PodSandboxStats::new();
                stats.attributes = Some(attrs).into();
                stats.linux = Some(linux).into();
                stats
            })
            .collect();
        Ok(out)
    }

    fn list_container_stats(
        &self,
        filter: Option<&api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, CriError> {
        let st = self.begin("ListContainerStats", || Call::ListContainerStats)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let wrap = |v: u64| {
            let mut w = api::UInt64Value::new();
            w.value = v;
            w
        };
        let out = st
            .containers
            .values()
            .filter(|c| c.status.state == ContainerState::CONTAINER_RUNNING)
            .filter(|c| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || f.id == c.status.id)
                        && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.sandbox_id)
                        && labels_match(&f.label_selector, &c.status.labels)
                })
            })
            .map(|c| {
                let mut attrs = api::ContainerAttributes::new();
                attrs.id = c.status.id.clone();
                attrs.metadata = c.status.metadata.clone();
                attrs.labels = c.status.labels.clone();
                attrs.annotations = c.status.annotations.clone();
                let running_ns = u64::try_from(now - c.status.started_at).unwrap_or(0);
                let mut cpu = api::CpuUsage::new();
                cpu.timestamp = now;
                cpu.usage_core_nano_seconds = Some(wrap(running_ns / 100)).into();
                cpu.usage_nano_cores = Some(wrap(10_000_000)).into();
                let hash = c
                    .status
                    .id
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                let working_set = (4 << 20) + hash % (4 << 20);
                let mut memory = api::MemoryUsage::new();
                memory.timestamp = now;
                memory.working_set_bytes = Some(wrap(working_set)).into();
                memory.usage_bytes = Some(wrap(working_set + (1 << 20))).into();
                memory.rss_bytes = Some(wrap(working_set / 2)).into();
                let mut layer = api::FilesystemUsage::new();
                layer.timestamp = now;
                layer.used_bytes = Some(wrap(4096)).into();
                layer.inodes_used = Some(wrap(4)).into();
                let mut stats = api::ContainerStats::new();
                stats.attributes = Some(attrs).into();
                stats.cpu = Some(cpu).into();
                stats.memory = Some(memory).into();
                stats.writable_layer = Some(layer).into();
                stats
            })
            .collect();
        Ok(out)
    }
}

/// The setup the runtime's tests share.
#[cfg(test)]
mod fixtures {
    use crate::cri::api::{self, ContainerState};
    use crate::cri::fake::fixtures::sandbox_config;
    use crate::cri::{FakeRuntime, RuntimeService};

    pub(super) const IMAGE: &str = "docker.io/library/busybox:local";

    /// A fake with the test image on the node and one ready sandbox.
    pub(super) fn setup() -> (FakeRuntime, String, api::PodSandboxConfig) {
        let fake = FakeRuntime::new();
        fake.preload_image(IMAGE);
        let cfg = sandbox_config("web", "uid-1", 0);
        let sb = fake.run_pod_sandbox(&cfg, "runc").unwrap();
        (fake, sb, cfg)
    }

    pub(super) fn state(fake: &FakeRuntime, id: &str) -> ContainerState {
        fake.container_status(id, false).unwrap().get_status().state
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{setup, IMAGE};
    use super::*;
    use crate::cri::fake::fixtures::container_config;

    #[test]
    fn calls_are_typed() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        fake.start_container(&id).unwrap();
        fake.stop_container(&id, 5).unwrap();
        fake.remove_container(&id).unwrap();
        fake.stop_pod_sandbox(&sb).unwrap();
        fake.remove_pod_sandbox(&sb).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::RunPodSandbox {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    handler: "runc".into(),
                },
                Call::CreateContainer {
                    sandbox: sb.clone(),
                    name: "app".into()
                },
                Call::StartContainer(id.clone()),
                Call::StopContainer(id.clone()),
                Call::RemoveContainer(id.clone()),
                Call::StopPodSandbox(sb.clone()),
                Call::RemovePodSandbox(sb.clone()),
            ]
        );
    }
}
