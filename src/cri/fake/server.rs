//! The in-memory fake runtime served over CRI v1 gRPC (`rkubelet fake-runtime`), so that a
//! normal `rkubelet` (or any CRI client) drives it through the real grpcio client, as a
//! kubemark-style hollow node does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, UnarySink};

use super::FakeRuntime;
use crate::cri::api_grpc;
use crate::cri::{api, CriError, ImageService, RpcCode, RuntimeService};

/// The RuntimeService and ImageService of one fake runtime.
#[derive(Clone)]
pub struct FakeCri(pub Arc<FakeRuntime>);

fn status_of(e: &CriError) -> RpcStatus {
    let (code, message) = match e {
        CriError::NotFound { message, .. } => (RpcStatusCode::NOT_FOUND, message.clone()),
        CriError::Unavailable { message, .. } => (RpcStatusCode::UNAVAILABLE, message.clone()),
        CriError::DeadlineExceeded { .. } => (RpcStatusCode::DEADLINE_EXCEEDED, e.to_string()),
        CriError::Rpc { code, message, .. } => {
            let code = match code {
                RpcCode::Canceled => RpcStatusCode::CANCELLED,
                RpcCode::InvalidArgument => RpcStatusCode::INVALID_ARGUMENT,
                RpcCode::DeadlineExceeded => RpcStatusCode::DEADLINE_EXCEEDED,
                RpcCode::NotFound => RpcStatusCode::NOT_FOUND,
                RpcCode::AlreadyExists => RpcStatusCode::ALREADY_EXISTS,
                RpcCode::PermissionDenied => RpcStatusCode::PERMISSION_DENIED,
                RpcCode::ResourceExhausted => RpcStatusCode::RESOURCE_EXHAUSTED,
                RpcCode::FailedPrecondition => RpcStatusCode::FAILED_PRECONDITION,
                RpcCode::Aborted => RpcStatusCode::ABORTED,
                RpcCode::OutOfRange => RpcStatusCode::OUT_OF_RANGE,
                RpcCode::Unimplemented => RpcStatusCode::UNIMPLEMENTED,
                RpcCode::Internal => RpcStatusCode::INTERNAL,
                RpcCode::Unavailable => RpcStatusCode::UNAVAILABLE,
                _ => RpcStatusCode::UNKNOWN,
            };
            (code, message.clone())
        }
        other => (RpcStatusCode::UNKNOWN, other.to_string()),
    };
    RpcStatus::with_message(code, message)
}

/// Answers a call with `result`.
fn reply<T: Send + 'static>(ctx: &RpcContext, sink: UnarySink<T>, result: Result<T, CriError>) {
    match result {
        Ok(resp) => ctx.spawn(async move {
            let _ = sink.success(resp).await;
        }),
        Err(e) => {
            let status = status_of(&e);
            ctx.spawn(async move {
                let _ = sink.fail(status).await;
            });
        }
    }
}

impl api_grpc::RuntimeService for FakeCri {
    fn version(
        &mut self,
        ctx: RpcContext,
        req: api::VersionRequest,
        sink: UnarySink<api::VersionResponse>,
    ) {
        reply(&ctx, sink, self.0.version(&req.version));
    }

    fn status(
        &mut self,
        ctx: RpcContext,
        req: api::StatusRequest,
        sink: UnarySink<api::StatusResponse>,
    ) {
        reply(&ctx, sink, self.0.status(req.verbose));
    }

    fn runtime_config(
        &mut self,
        ctx: RpcContext,
        _req: api::RuntimeConfigRequest,
        sink: UnarySink<api::RuntimeConfigResponse>,
    ) {
        reply(&ctx, sink, self.0.runtime_config());
    }

    fn run_pod_sandbox(
        &mut self,
        ctx: RpcContext,
        req: api::RunPodSandboxRequest,
        sink: UnarySink<api::RunPodSandboxResponse>,
    ) {
        let result = self
            .0
            .run_pod_sandbox(req.get_config(), &req.runtime_handler)
            .map(|id| {
                let mut r = api::RunPodSandboxResponse::new();
                r.pod_sandbox_id = id;
                r
            });
        reply(&ctx, sink, result);
    }

    fn stop_pod_sandbox(
        &mut self,
        ctx: RpcContext,
        req: api::StopPodSandboxRequest,
        sink: UnarySink<api::StopPodSandboxResponse>,
    ) {
        let result = self
            .0
            .stop_pod_sandbox(&req.pod_sandbox_id)
            .map(|()| api::StopPodSandboxResponse::new());
        reply(&ctx, sink, result);
    }

    fn remove_pod_sandbox(
        &mut self,
        ctx: RpcContext,
        req: api::RemovePodSandboxRequest,
        sink: UnarySink<api::RemovePodSandboxResponse>,
    ) {
        let result = self
            .0
            .remove_pod_sandbox(&req.pod_sandbox_id)
            .map(|()| api::RemovePodSandboxResponse::new());
        reply(&ctx, sink, result);
    }

    fn pod_sandbox_status(
        &mut self,
        ctx: RpcContext,
        req: api::PodSandboxStatusRequest,
        sink: UnarySink<api::PodSandboxStatusResponse>,
    ) {
        reply(
            &ctx,
            sink,
            self.0.pod_sandbox_status(&req.pod_sandbox_id, req.verbose),
        );
    }

    fn list_pod_sandbox(
        &mut self,
        ctx: RpcContext,
        req: api::ListPodSandboxRequest,
        sink: UnarySink<api::ListPodSandboxResponse>,
    ) {
        let result = self.0.list_pod_sandbox(req.filter.as_ref()).map(|items| {
            let mut r = api::ListPodSandboxResponse::new();
            r.items = items.into();
            r
        });
        reply(&ctx, sink, result);
    }

    fn create_container(
        &mut self,
        ctx: RpcContext,
        req: api::CreateContainerRequest,
        sink: UnarySink<api::CreateContainerResponse>,
    ) {
        let result = self
            .0
            .create_container(
                &req.pod_sandbox_id,
                req.get_config(),
                req.get_sandbox_config(),
            )
            .map(|id| {
                let mut r = api::CreateContainerResponse::new();
                r.container_id = id;
                r
            });
        reply(&ctx, sink, result);
    }

    fn start_container(
        &mut self,
        ctx: RpcContext,
        req: api::StartContainerRequest,
        sink: UnarySink<api::StartContainerResponse>,
    ) {
        let result = self
            .0
            .start_container(&req.container_id)
            .map(|()| api::StartContainerResponse::new());
        reply(&ctx, sink, result);
    }

    fn stop_container(
        &mut self,
        ctx: RpcContext,
        req: api::StopContainerRequest,
        sink: UnarySink<api::StopContainerResponse>,
    ) {
        let result = self
            .0
            .stop_container(&req.container_id, req.timeout)
            .map(|()| api::StopContainerResponse::new());
        reply(&ctx, sink, result);
    }

    fn remove_container(
        &mut self,
        ctx: RpcContext,
        req: api::RemoveContainerRequest,
        sink: UnarySink<api::RemoveContainerResponse>,
    ) {
        let result = self
            .0
            .remove_container(&req.container_id)
            .map(|()| api::RemoveContainerResponse::new());
        reply(&ctx, sink, result);
    }

    fn list_containers(
        &mut self,
        ctx: RpcContext,
        req: api::ListContainersRequest,
        sink: UnarySink<api::ListContainersResponse>,
    ) {
        let result = self.0.list_containers(req.filter.as_ref()).map(|items| {
            let mut r = api::ListContainersResponse::new();
            r.containers = items.into();
            r
        });
        reply(&ctx, sink, result);
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

    fn update_container_resources(
        &mut self,
        ctx: RpcContext,
        _req: api::UpdateContainerResourcesRequest,
        sink: UnarySink<api::UpdateContainerResourcesResponse>,
    ) {
        reply(&ctx, sink, Ok(api::UpdateContainerResourcesResponse::new()));
    }

    fn reopen_container_log(
        &mut self,
        ctx: RpcContext,
        req: api::ReopenContainerLogRequest,
        sink: UnarySink<api::ReopenContainerLogResponse>,
    ) {
        let result = self
            .0
            .reopen_container_log(&req.container_id)
            .map(|()| api::ReopenContainerLogResponse::new());
        reply(&ctx, sink, result);
    }

    fn exec_sync(
        &mut self,
        ctx: RpcContext,
        req: api::ExecSyncRequest,
        sink: UnarySink<api::ExecSyncResponse>,
    ) {
        let timeout = std::time::Duration::from_secs(u64::try_from(req.timeout).unwrap_or(0));
        let cmd: Vec<String> = req.cmd.to_vec();
        reply(
            &ctx,
            sink,
            self.0.exec_sync(&req.container_id, &cmd, timeout),
        );
    }

    fn list_container_stats(
        &mut self,
        ctx: RpcContext,
        req: api::ListContainerStatsRequest,
        sink: UnarySink<api::ListContainerStatsResponse>,
    ) {
        let result = self
            .0
            .list_container_stats(req.filter.as_ref())
            .map(|stats| {
                let mut r = api::ListContainerStatsResponse::new();
                r.stats = stats.into();
                r
            });
        reply(&ctx, sink, result);
    }

    fn list_pod_sandbox_stats(
        &mut self,
        ctx: RpcContext,
        req: api::ListPodSandboxStatsRequest,
        sink: UnarySink<api::ListPodSandboxStatsResponse>,
    ) {
        let result = self
            .0
            .list_pod_sandbox_stats(req.filter.as_ref())
            .map(|stats| {
                let mut r = api::ListPodSandboxStatsResponse::new();
                r.stats = stats.into();
                r
            });
        reply(&ctx, sink, result);
    }
}

impl api_grpc::ImageService for FakeCri {
    fn list_images(
        &mut self,
        ctx: RpcContext,
        req: api::ListImagesRequest,
        sink: UnarySink<api::ListImagesResponse>,
    ) {
        let result = self.0.list_images(req.filter.as_ref()).map(|images| {
            let mut r = api::ListImagesResponse::new();
            r.images = images.into();
            r
        });
        reply(&ctx, sink, result);
    }

    fn image_status(
        &mut self,
        ctx: RpcContext,
        req: api::ImageStatusRequest,
        sink: UnarySink<api::ImageStatusResponse>,
    ) {
        let result = self
            .0
            .image_status(req.get_image(), req.verbose)
            .map(|image| {
                let mut r = api::ImageStatusResponse::new();
                if let Some(image) = image {
                    r.set_image(image);
                }
                r
            });
        reply(&ctx, sink, result);
    }

    fn pull_image(
        &mut self,
        ctx: RpcContext,
        req: api::PullImageRequest,
        sink: UnarySink<api::PullImageResponse>,
    ) {
        let result = self
            .0
            .pull_image(
                req.get_image(),
                req.auth.as_ref(),
                req.sandbox_config.as_ref(),
            )
            .map(|image_ref| {
                let mut r = api::PullImageResponse::new();
                r.image_ref = image_ref;
                r
            });
        reply(&ctx, sink, result);
    }

    fn remove_image(
        &mut self,
        ctx: RpcContext,
        req: api::RemoveImageRequest,
        sink: UnarySink<api::RemoveImageResponse>,
    ) {
        let result = self
            .0
            .remove_image(req.get_image())
            .map(|()| api::RemoveImageResponse::new());
        reply(&ctx, sink, result);
    }

    fn image_fs_info(
        &mut self,
        ctx: RpcContext,
        _req: api::ImageFsInfoRequest,
        sink: UnarySink<api::ImageFsInfoResponse>,
    ) {
        reply(&ctx, sink, self.0.image_fs_info());
    }
}

/// A running fake runtime server.
pub struct FakeCriServer {
    server: grpcio::Server,
    socket: PathBuf,
}

impl FakeCriServer {
    /// Serves `runtime` on the unix socket `socket` (replacing a stale one). `threads`
    /// completion-queue threads serve calls; a pull blocks one for its delay.
    pub fn start(
        runtime: Arc<FakeRuntime>,
        socket: &Path,
        threads: usize,
    ) -> Result<FakeCriServer, String> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", socket.display())),
        }
        let env = Arc::new(
            grpcio::EnvBuilder::new()
                .cq_count(threads.max(1))
                .name_prefix("fake-cri")
                .build(),
        );
        let cri = FakeCri(runtime);
        let mut server = grpcio::ServerBuilder::new(env)
            .register_service(api_grpc::create_runtime_service(cri.clone()))
            .register_service(api_grpc::create_image_service(cri))
            .build()
            .map_err(|e| e.to_string())?;
        server
            .add_listening_port(
                format!("unix:{}", socket.display()),
                grpcio::ServerCredentials::insecure(),
            )
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        server.start();
        Ok(FakeCriServer {
            server,
            socket: socket.to_path_buf(),
        })
    }

    /// Shuts the server down (waiting up to 5 seconds) and removes the socket.
    pub fn stop(mut self) {
        crate::util::shutdown_grpc(&mut self.server, std::time::Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.socket);
    }
}
