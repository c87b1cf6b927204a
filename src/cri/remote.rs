//! `RemoteRuntime`: the blocking grpcio client for a CRI v1 runtime (containerd,
//! CRI-O) on a unix socket, implementing both [`RuntimeService`] and
//! [`ImageService`].
//!
//! Calls run on the caller's thread; each `RemoteRuntime` owns one grpcio
//! `Environment` whose single completion-queue thread (`cri-grpc-0`) drives the
//! channel. Build a second one for `--image-service-endpoint` when it differs.
//!
//! Every call carries a deadline:
//! - mutating calls: the request timeout (`--runtime-request-timeout`, 2m by
//!   default); `RunPodSandbox` twice that, as upstream (sandbox set-up includes
//!   CNI, which can be slow);
//! - reads (`Version`, `Status`, `*Status`, `List*`, `ImageFsInfo`):
//!   `min(request timeout, 10s)`, so a wedged runtime stalls PLEG, probes and
//!   node status for seconds, not minutes;
//! - `StopContainer`: request timeout + the grace period;
//! - `ExecSync`: request timeout + the command timeout (request timeout alone
//!   when the command timeout is 0);
//! - `PullImage`: `max(request timeout, 30 min)`. Upstream sets no deadline on
//!   pulls, since a large image on a slow link legitimately takes many minutes,
//!   and containerd itself aborts a pull that makes no progress for 5 minutes
//!   (`image_pull_progress_timeout`). We keep a generous backstop so a pod
//!   worker thread can never be parked forever on a runtime that stopped
//!   answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};
use log::trace;

use super::api;
use super::api_grpc::{ImageServiceClient, RuntimeServiceClient};
use super::{CriError, ImageService, RuntimeService};

/// Upper bound on the deadline of read-only calls.
const READ_TIMEOUT_CAP: Duration = Duration::from_secs(10);
/// Lower bound on the deadline of `PullImage` (see the module docs).
const PULL_TIMEOUT_FLOOR: Duration = Duration::from_secs(30 * 60);
/// Largest response accepted: a `ListContainers` on a busy node is big. Same as upstream.
const MAX_RECV_MESSAGE_BYTES: i32 = 16 * 1024 * 1024;
/// Reconnect backoff after the socket goes away (runtime restart), as upstream.
const INITIAL_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Cap on the reconnect backoff, as upstream, so a restarted runtime is seen within seconds.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(3);

/// A CRI v1 runtime reached over gRPC on a unix socket.
pub struct RemoteRuntime {
    /// The endpoint as configured, for log lines.
    endpoint: String,
    /// `runtime.v1.RuntimeService` stub on the shared channel.
    runtime: RuntimeServiceClient,
    /// `runtime.v1.ImageService` stub on the same channel.
    images: ImageServiceClient,
    /// Deadline for mutating calls; the base of every other deadline.
    request_timeout: Duration,
}

impl RemoteRuntime {
    /// Builds a client for `endpoint` (`unix:///path/to.sock` or `/path/to.sock`).
    /// The connection is made lazily by the first call; use
    /// [`wait_for_runtime`](super::wait_for_runtime) to wait for the runtime.
    pub fn connect(endpoint: &str, request_timeout: Duration) -> Result<Self, CriError> {
        let target = parse_endpoint(endpoint)?;
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("cri-grpc")
                .build(),
        );
        let channel = ChannelBuilder::new(env)
            .max_receive_message_len(MAX_RECV_MESSAGE_BYTES)
            .initial_reconnect_backoff(INITIAL_RECONNECT_BACKOFF)
            .max_reconnect_backoff(MAX_RECONNECT_BACKOFF)
            .connect(&target);
        log::info!(
            "CRI endpoint {endpoint} (gRPC target {target}), request timeout {request_timeout:?}"
        );
        Ok(RemoteRuntime {
            endpoint: endpoint.to_string(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            request_timeout,
        })
    }

    /// The endpoint this client was built for.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Deadline for read-only calls.
    fn read_timeout(&self) -> Duration {
        self.request_timeout.min(READ_TIMEOUT_CAP)
    }

    /// Runs one RPC with deadline `timeout`, maps its error and logs its duration.
    fn call<T>(
        &self,
        method: &'static str,
        timeout: Duration,
        rpc: impl FnOnce(CallOption) -> grpcio::Result<T>,
    ) -> Result<T, CriError> {
        let start = Instant::now();
        let result = rpc(CallOption::default().timeout(timeout));
        let took = start.elapsed();
        record_operation(method, took, result.is_ok());
        match result {
            Ok(resp) => {
                trace!("CRI {method} ok in {took:?} (endpoint {})", self.endpoint);
                Ok(resp)
            }
            Err(e) => {
                let err = CriError::from_grpc(method, timeout, e);
                trace!(
                    "CRI {method} failed in {took:?} (endpoint {}): {err}",
                    self.endpoint
                );
                Err(err)
            }
        }
    }
}

/// Counts a CRI call in the kubelet's runtime operation metrics, named as upstream names
/// them (`run_podsandbox`, `pull_image`, ...).
fn record_operation(method: &'static str, took: Duration, ok: bool) {
    let op = operation_type(method);
    let metrics = crate::util::metrics::kubelet();
    metrics.runtime_operations.inc(&[&op]);
    metrics.runtime_durations.observe(&[&op], took);
    if !ok {
        metrics.runtime_errors.inc(&[&op]);
    }
}

/// `RunPodSandbox` → `run_podsandbox`, `ListContainerStats` → `list_container_stats`.
fn operation_type(method: &str) -> String {
    let method = method.replace("PodSandbox", "Podsandbox");
    let mut out = String::with_capacity(method.len() + 4);
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Turns a CRI endpoint into a gRPC target: `unix:///abs/path` and `/abs/path`
/// are accepted, anything else (tcp, npipe, relative paths) is not.
fn parse_endpoint(endpoint: &str) -> Result<String, CriError> {
    let invalid = |reason: String| CriError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    if endpoint.is_empty() {
        return Err(invalid("the endpoint is empty".to_string()));
    }
    if endpoint.contains('\0') {
        return Err(invalid("the endpoint contains a NUL byte".to_string()));
    }
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.starts_with('/') {
        endpoint
    } else if let Some((scheme, _)) = endpoint.split_once("://") {
        return Err(invalid(format!(
            "scheme {scheme:?} is not supported, only unix sockets (unix:///path/to.sock)"
        )));
    } else {
        return Err(invalid(
            "expected unix:///path/to.sock or an absolute socket path".to_string(),
        ));
    };
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "the socket path {path:?} must be absolute"
        )));
    }
    Ok(format!("unix://{path}"))
}

/// The CRI timeout in whole seconds for a `Duration`, rounding a fraction up
/// so that a sub-second timeout does not become 0 (no limit).
fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
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
}

impl ImageService for RemoteRuntime {
    fn list_images(&self, filter: Option<&api::ImageFilter>) -> Result<Vec<api::Image>, CriError> {
        let mut req = api::ListImagesRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListImages", self.read_timeout(), |opt| {
            self.images.list_images_opt(&req, opt)
        })?;
        Ok(resp.images.into_vec())
    }

    fn image_status(
        &self,
        image: &api::ImageSpec,
        verbose: bool,
    ) -> Result<Option<api::Image>, CriError> {
        let mut req = api::ImageStatusRequest::new();
        req.set_image(image.clone());
        req.verbose = verbose;
        let resp = self.call("ImageStatus", self.read_timeout(), |opt| {
            self.images.image_status_opt(&req, opt)
        })?;
        let image = resp.image.into_option();
        if image.as_ref().is_some_and(|i| i.id.is_empty()) {
            return Err(CriError::InvalidResponse {
                method: "ImageStatus",
                field: "image.id",
            });
        }
        Ok(image)
    }

    fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut req = api::PullImageRequest::new();
        req.set_image(image.clone());
        if let Some(auth) = auth {
            req.set_auth(auth.clone());
        }
        if let Some(config) = sandbox_config {
            req.set_sandbox_config(config.clone());
        }
        let deadline = self.request_timeout.max(PULL_TIMEOUT_FLOOR);
        let resp = self.call("PullImage", deadline, |opt| {
            self.images.pull_image_opt(&req, opt)
        })?;
        if resp.image_ref.is_empty() {
            return Err(CriError::InvalidResponse {
                method: "PullImage",
                field: "image_ref",
            });
        }
        Ok(resp.image_ref)
    }

    fn remove_image(&self, image: &api::ImageSpec) -> Result<(), CriError> {
        let mut req = api::RemoveImageRequest::new();
        req.set_image(image.clone());
        self.call("RemoveImage", self.request_timeout, |opt| {
            self.images.remove_image_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, CriError> {
        let req = api::ImageFsInfoRequest::new();
        self.call("ImageFsInfo", self.read_timeout(), |opt| {
            self.images.image_fs_info_opt(&req, opt)
        })
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
    fn operations_are_named_as_upstream() {
        for (method, op) in [
            ("RunPodSandbox", "run_podsandbox"),
            ("ListPodSandbox", "list_podsandbox"),
            ("PodSandboxStatus", "podsandbox_status"),
            ("ListContainerStats", "list_container_stats"),
            ("ImageFsInfo", "image_fs_info"),
            ("Version", "version"),
        ] {
            assert_eq!(operation_type(method), op);
        }
    }

    #[test]
    fn endpoints() {
        let ok = [
            (
                "unix:///run/containerd/containerd.sock",
                "unix:///run/containerd/containerd.sock",
            ),
            ("/run/crio/crio.sock", "unix:///run/crio/crio.sock"),
            ("unix:/run/x.sock", "unix:///run/x.sock"),
        ];
        for (endpoint, target) in ok {
            assert_eq!(
                parse_endpoint(endpoint).ok().as_deref(),
                Some(target),
                "{endpoint}"
            );
        }
        let bad = [
            "",
            "tcp://127.0.0.1:1234",
            "npipe:////./pipe/containerd",
            "unix://relative/path.sock",
            "run/containerd.sock",
            "unix:///run/x\0.sock",
        ];
        for endpoint in bad {
            match parse_endpoint(endpoint) {
                Err(CriError::InvalidEndpoint { endpoint: e, .. }) => assert_eq!(e, endpoint),
                other => panic!("{endpoint:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_endpoint_names_it() {
        let err = RemoteRuntime::connect("tcp://10.0.0.1:10010", Duration::from_secs(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("tcp://10.0.0.1:10010"), "{err}");
        assert!(err.contains("\"tcp\""), "{err}");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(3001)), 4);
    }

    #[test]
    fn missing_socket_is_unavailable_and_retriable() {
        let dir = std::env::temp_dir().join(format!("rkubelet-cri-test-{}", std::process::id()));
        let sock = dir.join("absent.sock");
        let endpoint = format!("unix://{}", sock.display());
        let rt = RemoteRuntime::connect(&endpoint, Duration::from_secs(2)).unwrap();
        assert_eq!(rt.endpoint(), endpoint);
        let err = rt.version("v1").unwrap_err();
        assert!(err.is_retriable(), "{err:?}");
        assert_eq!(err.method(), Some("Version"));
        let err = rt.list_images(None).unwrap_err();
        assert!(err.is_retriable(), "{err:?}");
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

    /// A CRI gRPC server on a unix socket backed by a `FakeRuntime`, serving
    /// the few RPCs these tests need (the rest answer Unimplemented).
    mod server {
        use std::sync::Arc;

        use grpcio::{RpcContext, RpcStatus, ServerBuilder, ServerCredentials, UnarySink};

        use crate::cri::api;
        use crate::cri::api_grpc;
        use crate::cri::{CriError, FakeRuntime, ImageService, RuntimeService};

        #[derive(Clone)]
        pub struct Served(pub Arc<FakeRuntime>);

        fn reply<T: Send + 'static>(ctx: &RpcContext, sink: UnarySink<T>, r: Result<T, CriError>) {
            let status = |e: CriError| {
                let code = match e.code() {
                    Some(crate::cri::RpcCode::NotFound) => grpcio::RpcStatusCode::NOT_FOUND,
                    _ => grpcio::RpcStatusCode::UNKNOWN,
                };
                let message = match e {
                    CriError::Rpc { message, .. } | CriError::NotFound { message, .. } => message,
                    other => other.to_string(),
                };
                RpcStatus::with_message(code, message)
            };
            match r {
                Ok(resp) => ctx.spawn(async move {
                    let _ = sink.success(resp).await;
                }),
                Err(e) => {
                    let st = status(e);
                    ctx.spawn(async move {
                        let _ = sink.fail(st).await;
                    })
                }
            }
        }

        impl api_grpc::RuntimeService for Served {
            fn version(
                &mut self,
                ctx: RpcContext,
                req: api::VersionRequest,
                sink: UnarySink<api::VersionResponse>,
            ) {
                reply(&ctx, sink, self.0.version(&req.version));
            }
            fn run_pod_sandbox(
                &mut self,
                ctx: RpcContext,
                req: api::RunPodSandboxRequest,
                sink: UnarySink<api::RunPodSandboxResponse>,
            ) {
                let r = self
                    .0
                    .run_pod_sandbox(req.get_config(), &req.runtime_handler);
                let r = r.map(|id| {
                    let mut resp = api::RunPodSandboxResponse::new();
                    resp.pod_sandbox_id = id;
                    resp
                });
                reply(&ctx, sink, r);
            }
            fn list_pod_sandbox(
                &mut self,
                ctx: RpcContext,
                req: api::ListPodSandboxRequest,
                sink: UnarySink<api::ListPodSandboxResponse>,
            ) {
                let r = self.0.list_pod_sandbox(req.filter.as_ref()).map(|items| {
                    let mut resp = api::ListPodSandboxResponse::new();
                    resp.items = items.into();
                    resp
                });
                reply(&ctx, sink, r);
            }
            fn container_status(
                &mut self,
                ctx: RpcContext,
                req: api::ContainerStatusRequest,
                sink: UnarySink<api::ContainerStatusResponse>,
            ) {
                reply(
                    &ctx,
                    sink,
                    self.0.container_status(&req.container_id, req.verbose),
                );
            }
        }

        impl api_grpc::ImageService for Served {
            fn pull_image(
                &mut self,
                ctx: RpcContext,
                req: api::PullImageRequest,
                sink: UnarySink<api::PullImageResponse>,
            ) {
                let r = self
                    .0
                    .pull_image(req.get_image(), None, None)
                    .map(|image_ref| {
                        let mut resp = api::PullImageResponse::new();
                        resp.image_ref = image_ref;
                        resp
                    });
                reply(&ctx, sink, r);
            }
        }

        /// Starts serving `fake` on `socket`; dropping the server stops it.
        pub fn serve(fake: Arc<FakeRuntime>, socket: &str) -> grpcio::Server {
            let env = Arc::new(
                grpcio::EnvBuilder::new()
                    .cq_count(1)
                    .name_prefix("test-cri")
                    .build(),
            );
            let served = Served(fake);
            let mut server = ServerBuilder::new(env)
                .register_service(api_grpc::create_runtime_service(served.clone()))
                .register_service(api_grpc::create_image_service(served))
                .build()
                .unwrap();
            server
                .add_listening_port(format!("unix:{socket}"), ServerCredentials::insecure())
                .unwrap();
            server.start();
            server
        }
    }

    /// A private directory for a test socket, removed on drop.
    struct SocketDir(std::path::PathBuf);

    impl SocketDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("rkubelet-cri-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            SocketDir(dir)
        }

        fn socket(&self) -> String {
            self.0.join("cri.sock").display().to_string()
        }
    }

    impl Drop for SocketDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn round_trip_through_grpc() {
        let dir = SocketDir::new("roundtrip");
        let sock = dir.socket();
        let fake = std::sync::Arc::new(crate::cri::FakeRuntime::new());
        fake.add_image("busybox");
        let _server = server::serve(fake.clone(), &sock);
        let rt = RemoteRuntime::connect(&sock, Duration::from_secs(5)).unwrap();

        let v = rt.version("v1").unwrap();
        assert_eq!(v.runtime_api_version, "v1");
        assert_eq!(v.runtime_name, "fake-runtime");

        let mut config = api::PodSandboxConfig::new();
        config.mut_metadata().name = "web".into();
        config.mut_metadata().uid = "u1".into();
        config.labels.insert("app".into(), "web".into());
        let id = rt.run_pod_sandbox(&config, "").unwrap();
        let mut filter = api::PodSandboxFilter::new();
        filter.label_selector.insert("app".into(), "web".into());
        let listed = rt.list_pod_sandbox(Some(&filter)).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);

        // containerd-style errors keep their code and text across the wire.
        let err = rt.container_status("nope", false).unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "rpc error: code = NotFound desc = an error occurred when try to find container \"nope\": not found"
        );
        let err = rt
            .pull_image(
                &{
                    let mut s = api::ImageSpec::new();
                    s.image = "nginx".into();
                    s
                },
                None,
                None,
            )
            .unwrap_err();
        assert!(err.to_string().starts_with("rpc error: code = Unknown desc = failed to pull and unpack image \"docker.io/library/nginx:latest\""), "{err}");
        let mut spec = api::ImageSpec::new();
        spec.image = "busybox".into();
        assert!(rt
            .pull_image(&spec, None, None)
            .unwrap()
            .starts_with("sha256:"));

        // RPCs the server does not implement come back as Unimplemented.
        let err = rt.status(false).unwrap_err();
        assert_eq!(err.code(), Some(crate::cri::RpcCode::Unimplemented));
        assert_eq!(err.method(), Some("Status"));
    }

    #[test]
    fn slow_runtime_hits_the_read_deadline() {
        let dir = SocketDir::new("slow");
        let sock = dir.socket();
        let fake = std::sync::Arc::new(crate::cri::FakeRuntime::new());
        let _server = server::serve(fake.clone(), &sock);
        let rt = RemoteRuntime::connect(&sock, Duration::from_millis(200)).unwrap();
        assert!(rt.version("v1").is_ok());
        fake.set_call_delay(Duration::from_millis(600));
        let err = rt.version("v1").unwrap_err();
        match &err {
            CriError::DeadlineExceeded {
                method, timeout, ..
            } => {
                assert_eq!((*method, *timeout), ("Version", Duration::from_millis(200)));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.is_retriable());
        fake.set_call_delay(Duration::ZERO);
    }
}
