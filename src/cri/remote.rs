//! `RemoteRuntime`: the blocking grpcio client for a CRI v1 runtime (containerd,
//! CRI-O) on a unix socket, implementing both [`RuntimeService`] and
//! [`ImageService`].
//!
//! Calls run on the caller's thread; the channel is driven by the process's one grpcio
//! `Environment` ([`crate::util::grpc_env`], thread `grpc-0`). Build a second client for
//! `--image-service-endpoint` when it differs.
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
//!
//! This file holds the client, its channel and the mapping of every call's outcome (error,
//! metrics, log); the calls of each service are in [`runtime`] and [`image`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder};
use log::trace;

use super::api_grpc::{ImageServiceClient, RuntimeServiceClient};
use super::brief::LastListing;
use super::{api, CriError};

mod image;
mod runtime;

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
    /// The last brief `ListPodSandbox`, handed out again while nothing changes.
    last_sandboxes: Mutex<Option<LastListing<api::PodSandbox>>>,
    /// The last brief `ListContainers`, likewise.
    last_containers: Mutex<Option<LastListing<api::Container>>>,
}

impl RemoteRuntime {
    /// Builds a client for `endpoint` (`unix:///path/to.sock` or `/path/to.sock`).
    /// The connection is made lazily by the first call; use
    /// [`wait_for_runtime`](super::wait_for_runtime) to wait for the runtime.
    pub fn connect(endpoint: &str, request_timeout: Duration) -> Result<Self, CriError> {
        let target = parse_endpoint(endpoint)?;
        let channel = ChannelBuilder::new(crate::util::grpc_env())
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
            last_sandboxes: Mutex::new(None),
            last_containers: Mutex::new(None),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::{api, ImageService, RuntimeService};

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
    fn brief_listings_over_grpc_are_the_full_ones_cut_down() {
        let dir = SocketDir::new("brief");
        let socket = dir.0.join("cri.sock");
        let fake = std::sync::Arc::new(crate::cri::FakeRuntime::new());
        fake.preload_image("busybox");
        let server = crate::cri::FakeCriServer::start(fake.clone(), &socket, 1).unwrap();
        let rt =
            RemoteRuntime::connect(&socket.display().to_string(), Duration::from_secs(5)).unwrap();
        let mut sandbox = api::PodSandboxConfig::new();
        sandbox.mut_metadata().name = "web".into();
        sandbox.mut_metadata().uid = "u1".into();
        sandbox.mut_metadata().namespace = "team".into();
        sandbox
            .labels
            .insert("io.kubernetes.pod.uid".into(), "u1".into());
        sandbox.labels.insert("app".into(), "web".into());
        sandbox.annotations.insert("seen".into(), "now".into());
        let sandbox_id = rt.run_pod_sandbox(&sandbox, "").unwrap();
        let mut config = api::ContainerConfig::new();
        config.mut_metadata().name = "app".into();
        config.mut_image().image = "busybox".into();
        config
            .labels
            .insert("io.kubernetes.pod.uid".into(), "u1".into());
        config.labels.insert("other".into(), "x".into());
        config
            .annotations
            .insert("io.kubernetes.container.hash".into(), "1".into());
        let container_id = rt.create_container(&sandbox_id, &config, &sandbox).unwrap();

        let keep = ["io.kubernetes.pod.uid"];
        let full = rt.list_containers(None).unwrap();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].labels.len(), 2, "{:?}", full[0]);
        let brief = rt.list_containers_brief(&keep).unwrap();
        let expected: Vec<_> = full
            .iter()
            .map(|c| crate::cri::brief::brief_container(c, &keep))
            .collect();
        assert_eq!(*brief, expected);
        // The fake runtime's own brief listing (the hollow nodes') is the same.
        assert_eq!(*fake.list_containers_brief(&keep).unwrap(), expected);
        assert_eq!(brief[0].labels.len(), 1);
        assert_eq!(brief[0].pod_sandbox_id, sandbox_id);
        // Nothing changed: the same listing; started: listed anew.
        let again = rt.list_containers_brief(&keep).unwrap();
        assert!(std::sync::Arc::ptr_eq(&brief, &again));
        rt.start_container(&container_id).unwrap();
        let started = rt.list_containers_brief(&keep).unwrap();
        assert_eq!(started[0].state, api::ContainerState::CONTAINER_RUNNING);

        let full = rt.list_pod_sandbox(None).unwrap();
        let brief = rt.list_pod_sandbox_brief(&keep).unwrap();
        let expected: Vec<_> = full
            .iter()
            .map(|s| crate::cri::brief::brief_sandbox(s, &keep))
            .collect();
        assert_eq!(*brief, expected);
        assert_eq!(*fake.list_pod_sandbox_brief(&keep).unwrap(), expected);
        let again = rt.list_pod_sandbox_brief(&keep).unwrap();
        assert!(std::sync::Arc::ptr_eq(&brief, &again));
        rt.stop_pod_sandbox(&sandbox_id).unwrap();
        let stopped = rt.list_pod_sandbox_brief(&keep).unwrap();
        assert_eq!(stopped[0].state, api::PodSandboxState::SANDBOX_NOTREADY);
        assert_eq!(brief[0].get_metadata().get_namespace(), "team");
        server.stop();
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
