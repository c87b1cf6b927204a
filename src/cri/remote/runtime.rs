//! `runtime.v1.RuntimeService` over [`RemoteRuntime`]: one request per call, each with
//! its deadline (see the parent module docs), and the checks that a response carries what
//! CRI says is always set.

use std::sync::Arc;
use std::time::Duration;

use super::RemoteRuntime;
use crate::cri::{api, brief, CriError, RuntimeService};

/// `ListPodSandbox` with the response left undecoded, for [`brief::sandboxes`].
const LIST_POD_SANDBOX_RAW: grpcio::Method<api::ListPodSandboxRequest, Vec<u8>> =
    raw_method("/runtime.v1.RuntimeService/ListPodSandbox");

/// `ListContainers` with the response left undecoded, for [`brief::containers`].
const LIST_CONTAINERS_RAW: grpcio::Method<api::ListContainersRequest, Vec<u8>> =
    raw_method("/runtime.v1.RuntimeService/ListContainers");

/// The unary method `name` with a protobuf request and the response's bytes left as they
/// came.
const fn raw_method<Req: protobuf::Message>(name: &'static str) -> grpcio::Method<Req, Vec<u8>> {
    grpcio::Method {
        ty: grpcio::MethodType::Unary,
        name,
        req_mar: grpcio::Marshaller {
            ser: grpcio::pb_ser,
            de: grpcio::pb_de,
        },
        resp_mar: grpcio::Marshaller {
            ser: never_sent,
            de: raw_response,
        },
    }
}

/// A response's bytes as they came.
fn raw_response(reader: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
    let size = reader.len();
    brief::read_all(reader, size).map_err(|e| grpcio::Error::Codec(Box::new(e)))
}

/// A client sends requests only: the response half of a method is never serialised here.
fn never_sent(_: &Vec<u8>, _: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    Err(grpcio::Error::Codec(
        "a CRI client does not send responses".into(),
    ))
}

/// The CRI timeout in whole seconds for a `Duration`, rounding a fraction up
/// so that a sub-second timeout does not become 0 (no limit).
fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// One kind of brief listing: its undecoded method and request, the last listing kept, and
/// how to decode it.
struct BriefListing<'a, Req, T> {
    method: &'a grpcio::Method<Req, Vec<u8>>,
    request: Req,
    last: &'a std::sync::Mutex<Option<brief::LastListing<T>>>,
    state: u64,
    decode: brief::Decode<T>,
}

impl RemoteRuntime {
    /// Makes the listing call and decodes it briefly, handing out the last listing again
    /// while nothing changed ([`brief::listing`]).
    fn list_brief<Req, T>(
        &self,
        name: &'static str,
        listing: BriefListing<'_, Req, T>,
        keep: &[&str],
    ) -> Result<Arc<Vec<T>>, CriError> {
        self.call(name, self.read_timeout(), |opt| {
            let raw = self
                .runtime
                .client
                .unary_call(listing.method, &listing.request, opt)?;
            let mut last = listing.last.lock().unwrap_or_else(|e| e.into_inner());
            brief::listing(&mut last, &raw, keep, listing.state, listing.decode)
                .map_err(|e| grpcio::Error::Codec(Box::new(e)))
        })
    }
}

impl RuntimeService for RemoteRuntime {
    fn version(&self, api_version: &str) -> Result<api::VersionResponse, CriError> {
        let mut req = api::VersionRequest::new();
        req.version = api_version.to_string();
        let resp = self.call("Version", self.read_timeout(), |opt| {
            self.runtime.version_opt(&req, opt)
        })?;
        let missing = [
            ("version", &resp.version),
            ("runtime_name", &resp.runtime_name),
            ("runtime_version", &resp.runtime_version),
            ("runtime_api_version", &resp.runtime_api_version),
        ]
        .into_iter()
        .find(|(_, value)| value.is_empty());
        if let Some((field, _)) = missing {
            return Err(CriError::InvalidResponse {
                method: "Version",
                field,
            });
        }
        Ok(resp)
    }

    fn status(&self, verbose: bool) -> Result<api::StatusResponse, CriError> {
        let mut req = api::StatusRequest::new();
        req.verbose = verbose;
        self.call("Status", self.read_timeout(), |opt| {
            self.runtime.status_opt(&req, opt)
        })
    }

    fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        let mut req = api::RunPodSandboxRequest::new();
        req.set_config(config.clone());
        req.runtime_handler = runtime_handler.to_string();
        let timeout = self.request_timeout.saturating_mul(2);
        let resp = self.call("RunPodSandbox", timeout, |opt| {
            self.runtime.run_pod_sandbox_opt(&req, opt)
        })?;
        if resp.pod_sandbox_id.is_empty() {
            return Err(CriError::InvalidResponse {
                method: "RunPodSandbox",
                field: "pod_sandbox_id",
            });
        }
        Ok(resp.pod_sandbox_id)
    }

    fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let mut req = api::StopPodSandboxRequest::new();
        req.pod_sandbox_id = pod_sandbox_id.to_string();
        self.call("StopPodSandbox", self.request_timeout, |opt| {
            self.runtime.stop_pod_sandbox_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let mut req = api::RemovePodSandboxRequest::new();
        req.pod_sandbox_id = pod_sandbox_id.to_string();
        self.call("RemovePodSandbox", self.request_timeout, |opt| {
            self.runtime.remove_pod_sandbox_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse, CriError> {
        let mut req = api::PodSandboxStatusRequest::new();
        req.pod_sandbox_id = pod_sandbox_id.to_string();
        req.verbose = verbose;
        let resp = self.call("PodSandboxStatus", self.read_timeout(), |opt| {
            self.runtime.pod_sandbox_status_opt(&req, opt)
        })?;
        if let Some(status) = resp.status.as_ref() {
            verify_sandbox_status(status)?;
        }
        Ok(resp)
    }

    fn list_pod_sandbox(
        &self,
        filter: Option<&api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        let mut req = api::ListPodSandboxRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListPodSandbox", self.read_timeout(), |opt| {
            self.runtime.list_pod_sandbox_opt(&req, opt)
        })?;
        Ok(resp.items.into_vec())
    }

    fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut req = api::CreateContainerRequest::new();
        req.pod_sandbox_id = pod_sandbox_id.to_string();
        req.set_config(config.clone());
        req.set_sandbox_config(sandbox_config.clone());
        let resp = self.call("CreateContainer", self.request_timeout, |opt| {
            self.runtime.create_container_opt(&req, opt)
        })?;
        if resp.container_id.is_empty() {
            return Err(CriError::InvalidResponse {
                method: "CreateContainer",
                field: "container_id",
            });
        }
        Ok(resp.container_id)
    }

    fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        let mut req = api::StartContainerRequest::new();
        req.container_id = container_id.to_string();
        self.call("StartContainer", self.request_timeout, |opt| {
            self.runtime.start_container_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn stop_container(&self, container_id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut req = api::StopContainerRequest::new();
        req.container_id = container_id.to_string();
        req.timeout = timeout_secs.max(0);
        let grace = Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        let deadline = self.request_timeout.saturating_add(grace);
        self.call("StopContainer", deadline, |opt| {
            self.runtime.stop_container_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let mut req = api::RemoveContainerRequest::new();
        req.container_id = container_id.to_string();
        self.call("RemoveContainer", self.request_timeout, |opt| {
            self.runtime.remove_container_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn list_containers(
        &self,
        filter: Option<&api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError> {
        let mut req = api::ListContainersRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListContainers", self.read_timeout(), |opt| {
            self.runtime.list_containers_opt(&req, opt)
        })?;
        Ok(resp.containers.into_vec())
    }

    fn list_pod_sandbox_brief(&self, keep: &[&str]) -> Result<Arc<Vec<api::PodSandbox>>, CriError> {
        let listing = BriefListing {
            method: &LIST_POD_SANDBOX_RAW,
            request: api::ListPodSandboxRequest::new(),
            last: &self.last_sandboxes,
            state: brief::SANDBOX_STATE_FIELD,
            decode: brief::sandboxes,
        };
        self.list_brief("ListPodSandbox", listing, keep)
    }

    fn list_containers_brief(&self, keep: &[&str]) -> Result<Arc<Vec<api::Container>>, CriError> {
        let listing = BriefListing {
            method: &LIST_CONTAINERS_RAW,
            request: api::ListContainersRequest::new(),
            last: &self.last_containers,
            state: brief::CONTAINER_STATE_FIELD,
            decode: brief::containers,
        };
        self.list_brief("ListContainers", listing, keep)
    }

    fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse, CriError> {
        let mut req = api::ContainerStatusRequest::new();
        req.container_id = container_id.to_string();
        req.verbose = verbose;
        let resp = self.call("ContainerStatus", self.read_timeout(), |opt| {
            self.runtime.container_status_opt(&req, opt)
        })?;
        if let Some(status) = resp.status.as_ref() {
            verify_container_status(status)?;
        }
        Ok(resp)
    }

    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse, CriError> {
        let mut req = api::ExecSyncRequest::new();
        req.container_id = container_id.to_string();
        req.cmd = cmd.to_vec().into();
        req.timeout = ceil_secs(timeout);
        let deadline = self.request_timeout.saturating_add(timeout);
        self.call("ExecSync", deadline, |opt| {
            self.runtime.exec_sync_opt(&req, opt)
        })
    }

    fn exec(&self, request: &api::ExecRequest) -> Result<String, CriError> {
        let resp = self.call("Exec", self.request_timeout, |opt| {
            self.runtime.exec_opt(request, opt)
        })?;
        Ok(resp.url)
    }

    fn attach(&self, request: &api::AttachRequest) -> Result<String, CriError> {
        let resp = self.call("Attach", self.request_timeout, |opt| {
            self.runtime.attach_opt(request, opt)
        })?;
        Ok(resp.url)
    }

    fn port_forward(&self, request: &api::PortForwardRequest) -> Result<String, CriError> {
        let resp = self.call("PortForward", self.request_timeout, |opt| {
            self.runtime.port_forward_opt(request, opt)
        })?;
        Ok(resp.url)
    }

    fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        let mut req = api::ReopenContainerLogRequest::new();
        req.container_id = container_id.to_string();
        self.call("ReopenContainerLog", self.request_timeout, |opt| {
            self.runtime.reopen_container_log_opt(&req, opt)
        })?;
        Ok(())
    }

    fn list_container_stats(
        &self,
        filter: Option<&api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, CriError> {
        let mut req = api::ListContainerStatsRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListContainerStats", self.request_timeout, |opt| {
            self.runtime.list_container_stats_opt(&req, opt)
        })?;
        Ok(resp.stats.into_vec())
    }

    fn runtime_config(&self) -> Result<api::RuntimeConfigResponse, CriError> {
        let req = api::RuntimeConfigRequest::new();
        self.call("RuntimeConfig", self.read_timeout(), |opt| {
            self.runtime.runtime_config_opt(&req, opt)
        })
    }

    fn list_pod_sandbox_stats(
        &self,
        filter: Option<&api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>, CriError> {
        let mut req = api::ListPodSandboxStatsRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListPodSandboxStats", self.request_timeout, |opt| {
            self.runtime.list_pod_sandbox_stats_opt(&req, opt)
        })?;
        Ok(resp.stats.into_vec())
    }
}

/// Rejects a sandbox status missing what CRI says is always set.
fn verify_sandbox_status(status: &api::PodSandboxStatus) -> Result<(), CriError> {
    let field = if status.id.is_empty() {
        "status.id"
    } else if status.metadata.is_none() {
        "status.metadata"
    } else if status.created_at == 0 {
        "status.created_at"
    } else {
        return Ok(());
    };
    Err(CriError::InvalidResponse {
        method: "PodSandboxStatus",
        field,
    })
}

/// Rejects a container status missing what CRI says is always set.
fn verify_container_status(status: &api::ContainerStatus) -> Result<(), CriError> {
    let field = if status.id.is_empty() {
        "status.id"
    } else if status.metadata.is_none() {
        "status.metadata"
    } else if status.created_at == 0 {
        "status.created_at"
    } else if status.image.is_none() {
        "status.image"
    } else {
        return Ok(());
    };
    Err(CriError::InvalidResponse {
        method: "ContainerStatus",
        field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn status_verification() {
        let mut s = api::PodSandboxStatus::new();
        assert!(verify_sandbox_status(&s).is_err());
        s.id = "abc".into();
        s.set_metadata(api::PodSandboxMetadata::new());
        s.created_at = 1;
        assert!(verify_sandbox_status(&s).is_ok());

        let mut c = api::ContainerStatus::new();
        c.id = "abc".into();
        c.set_metadata(api::ContainerMetadata::new());
        c.created_at = 1;
        match verify_container_status(&c) {
            Err(CriError::InvalidResponse { field, .. }) => assert_eq!(field, "status.image"),
            other => panic!("{other:?}"),
        }
        c.set_image(api::ImageSpec::new());
        assert!(verify_container_status(&c).is_ok());
    }
}
