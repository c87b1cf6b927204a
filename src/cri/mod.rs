//! The Container Runtime Interface (CRI v1): generated protobuf messages and
//! grpcio stubs, the two service traits the kubelet codes against, and their
//! implementations.
//!
//! - [`RuntimeService`] / [`ImageService`]: the calls rkubelet makes, blocking
//!   and `&self`, safe to share between threads (pod workers, PLEG, probes, GC).
//! - [`RemoteRuntime`]: the grpcio client for containerd / CRI-O over a unix
//!   socket; every call carries a deadline.
//! - [`FakeRuntime`]: an in-memory runtime that behaves like containerd as seen
//!   through CRI, for tests and hollow nodes.
//! - [`wait_for_runtime`]: the start-up handshake (Version with backoff, then Status).
//!
//! Nothing here owns a thread of its own except grpcio's completion-queue
//! thread inside each [`RemoteRuntime`]; calls run on the caller's thread.
//!
//! Generated types live in [`api`] (messages, rust-protobuf 2.x) and
//! [`api_grpc`] (clients and server traits, grpcio).

pub mod brief;
mod error;
mod fake;
mod remote;
mod startup;

pub use error::{CriError, RpcCode};
pub use fake::server::FakeCriServer;
pub use fake::{Call, FakeRuntime, EXIT_AFTER_ANNOTATION, EXIT_CODE_ANNOTATION};
pub use remote::RemoteRuntime;
pub use startup::{runtime_cgroup_driver, wait_for_runtime};

use std::sync::Arc;
use std::time::Duration;

/// CRI v1 messages (package `runtime.v1`), generated from `proto/api.proto` by build.rs.
#[allow(
    warnings,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/api.rs"));
}

/// grpcio clients (`RuntimeServiceClient`, `ImageServiceClient`) and server
/// traits for CRI v1, generated from `proto/api.proto` by build.rs.
#[allow(
    warnings,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod api_grpc {
    include!(concat!(env!("OUT_DIR"), "/api_grpc.rs"));
}

/// Pod sandbox and container lifecycle calls of a CRI runtime
/// (`runtime.v1.RuntimeService`). Names and semantics follow CRI; methods
/// block until the runtime answers or the call's deadline passes.
pub trait RuntimeService: Send + Sync {
    /// Runtime name and version, and the CRI version it serves.
    fn version(&self, api_version: &str) -> Result<api::VersionResponse, CriError>;
    /// Runtime conditions (RuntimeReady, NetworkReady, ...).
    fn status(&self, verbose: bool) -> Result<api::StatusResponse, CriError>;
    /// Creates and starts a sandbox; returns its id.
    fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError>;
    /// Stops the sandbox and every container in it.
    fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError>;
    /// Removes a stopped sandbox and its containers; unknown ids are not an error.
    fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError>;
    /// Status of one sandbox; `NotFound` when it does not exist.
    fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse, CriError>;
    /// Sandboxes matching `filter` (all when `None`).
    fn list_pod_sandbox(
        &self,
        filter: Option<&api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError>;
    /// Creates a container in a ready sandbox; returns its id.
    fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, CriError>;
    /// Starts a created container.
    fn start_container(&self, container_id: &str) -> Result<(), CriError>;
    /// Stops a container; stopping one that is not running is not an error.
    /// timeout_secs is the grace period given to the runtime (CRI StopContainerRequest.timeout).
    fn stop_container(&self, container_id: &str, timeout_secs: i64) -> Result<(), CriError>;
    /// Removes a container (stopping it first if needed); unknown ids are not an error.
    fn remove_container(&self, container_id: &str) -> Result<(), CriError>;
    /// Containers matching `filter` (all when `None`).
    fn list_containers(
        &self,
        filter: Option<&api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError>;
    /// Every sandbox, decoded for a relist ([`brief`]): id, metadata, state, creation time
    /// and only the labels named in `keep`. By default the full listing, cut down; a runtime
    /// may hand out the same `Arc` again while it lists the same sandboxes in the same states.
    fn list_pod_sandbox_brief(&self, keep: &[&str]) -> Result<Arc<Vec<api::PodSandbox>>, CriError> {
        let full = self.list_pod_sandbox(None)?;
        let brief = full.iter().map(|s| brief::brief_sandbox(s, keep));
        Ok(Arc::new(brief.collect()))
    }
    /// Every container, decoded for a relist ([`brief`]): id, sandbox id, metadata, state,
    /// creation time and only the labels named in `keep`. By default the full listing, cut
    /// down; a runtime may hand out the same `Arc` again while it lists the same containers
    /// in the same states.
    fn list_containers_brief(&self, keep: &[&str]) -> Result<Arc<Vec<api::Container>>, CriError> {
        let full = self.list_containers(None)?;
        let brief = full.iter().map(|c| brief::brief_container(c, keep));
        Ok(Arc::new(brief.collect()))
    }
    /// Status of one container; `NotFound` when it does not exist.
    fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse, CriError>;
    /// Runs `cmd` in a running container and waits at most `timeout` for it.
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse, CriError>;
    /// A URL on the runtime's streaming server that runs a command in a container.
    fn exec(&self, request: &api::ExecRequest) -> Result<String, CriError> {
        let _ = request;
        Err(unimplemented("Exec"))
    }
    /// A URL on the runtime's streaming server attached to a container's process.
    fn attach(&self, request: &api::AttachRequest) -> Result<String, CriError> {
        let _ = request;
        Err(unimplemented("Attach"))
    }
    /// A URL on the runtime's streaming server forwarding ports of a sandbox.
    fn port_forward(&self, request: &api::PortForwardRequest) -> Result<String, CriError> {
        let _ = request;
        Err(unimplemented("PortForward"))
    }
    /// Asks the runtime to reopen a running container's log file at its log path, after
    /// the kubelet renamed the file away to rotate it.
    fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        let _ = container_id;
        Err(unimplemented("ReopenContainerLog"))
    }
    /// CPU, memory and writable-layer usage of containers matching `filter`.
    fn list_container_stats(
        &self,
        filter: Option<&api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, CriError> {
        let _ = filter;
        Err(unimplemented("ListContainerStats"))
    }
    /// The runtime's own configuration (its cgroup driver); runtimes older than CRI's
    /// `RuntimeConfig` answer Unimplemented.
    fn runtime_config(&self) -> Result<api::RuntimeConfigResponse, CriError> {
        Err(unimplemented("RuntimeConfig"))
    }
    /// Pod-level usage (network counters among it) of sandboxes matching `filter`; runtimes
    /// without it answer Unimplemented.
    fn list_pod_sandbox_stats(
        &self,
        filter: Option<&api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>, CriError> {
        let _ = filter;
        Err(unimplemented("ListPodSandboxStats"))
    }
}

/// The error of an RPC a runtime does not offer.
fn unimplemented(method: &'static str) -> CriError {
    CriError::Rpc {
        method,
        code: RpcCode::Unimplemented,
        message: format!("{method} is not implemented by this runtime"),
    }
}

/// Image calls of a CRI runtime (`runtime.v1.ImageService`).
pub trait ImageService: Send + Sync {
    /// Images on the node matching `filter` (all when `None`).
    fn list_images(&self, filter: Option<&api::ImageFilter>) -> Result<Vec<api::Image>, CriError>;
    /// Ok(None) when the runtime does not have the image.
    fn image_status(
        &self,
        image: &api::ImageSpec,
        verbose: bool,
    ) -> Result<Option<api::Image>, CriError>;
    /// Returns the image reference (id or digest) the runtime reports.
    fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String, CriError>;
    /// Removes an image; removing one that is not there is not an error.
    fn remove_image(&self, image: &api::ImageSpec) -> Result<(), CriError>;
    /// Usage of the image filesystem(s).
    fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, CriError>;
}
