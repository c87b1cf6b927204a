//! The gRPC side of device plugins: the kubelet's `Registration` service, and a client per
//! registered plugin whose `ListAndWatch` stream a thread of its own follows.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use grpcio::{CallOption, ChannelBuilder, RpcContext, RpcStatus, RpcStatusCode, UnarySink};

use super::deviceplugin as dp;
use super::deviceplugin_grpc::{self as dp_grpc, DevicePluginClient};
use super::{extended_resource_problem, DeviceError, DeviceManager, KUBELET_SOCKET, VERSION};

/// How long a registered plugin's socket may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of `Allocate` and `GetPreferredAllocation` (upstream sets none; a plugin that
/// never answers must not hold admission for good).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of `PreStartContainer` (upstream's `KubeletPreStartContainerRPCTimeoutInSecs`).
const PRE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls the manager makes to a plugin.
pub trait PluginApi: Send + Sync {
    /// `Allocate` for one container's devices.
    fn allocate(&self, ids: &[String]) -> Result<dp::ContainerAllocateResponse, String>;
    /// `GetPreferredAllocation`: `size` devices out of `available`, with `must_include`.
    fn preferred_allocation(
        &self,
        available: &BTreeSet<String>,
        must_include: &BTreeSet<String>,
        size: usize,
    ) -> Result<BTreeSet<String>, String>;
    /// `PreStartContainer` for the devices of a container about to start.
    fn pre_start(&self, ids: &[String]) -> Result<(), String>;
}

/// A plugin reached over its socket.
struct GrpcPlugin {
    client: DevicePluginClient,
}

fn call_error(e: grpcio::Error) -> String {
    match e {
        grpcio::Error::RpcFailure(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

impl PluginApi for GrpcPlugin {
    fn allocate(&self, ids: &[String]) -> Result<dp::ContainerAllocateResponse, String> {
        let mut container = dp::ContainerAllocateRequest::new();
        container.set_devices_ids(ids.to_vec().into());
        let mut req = dp::AllocateRequest::new();
        req.mut_container_requests().push(container);
        let mut resp = self
            .client
            .allocate_opt(&req, CallOption::default().timeout(CALL_TIMEOUT))
            .map_err(call_error)?;
        // One container asked, so one answer (upstream checks it is not empty).
        match resp.mut_container_responses().pop() {
            Some(r) if resp.get_container_responses().is_empty() => Ok(r),
            Some(_) => Err("more than one container in the allocation response".into()),
            None => Err("no containers return in allocation response".into()),
        }
    }

    fn preferred_allocation(
        &self,
        available: &BTreeSet<String>,
        must_include: &BTreeSet<String>,
        size: usize,
    ) -> Result<BTreeSet<String>, String> {
        let mut container = dp::ContainerPreferredAllocationRequest::new();
        container.set_available_deviceIDs(available.iter().cloned().collect());
        container.set_must_include_deviceIDs(must_include.iter().cloned().collect());
        container.set_allocation_size(i32::try_from(size).unwrap_or(i32::MAX));
        let mut req = dp::PreferredAllocationRequest::new();
        req.mut_container_requests().push(container);
        let resp = self
            .client
            .get_preferred_allocation_opt(&req, CallOption::default().timeout(CALL_TIMEOUT))
            .map_err(call_error)?;
        Ok(resp
            .get_container_responses()
            .iter()
            .flat_map(|r| r.get_deviceIDs().iter().cloned())
            .collect())
    }

    fn pre_start(&self, ids: &[String]) -> Result<(), String> {
        let mut req = dp::PreStartContainerRequest::new();
        req.set_devices_ids(ids.to_vec().into());
        self.client
            .pre_start_container_opt(&req, CallOption::default().timeout(PRE_START_TIMEOUT))
            .map(|_| ())
            .map_err(call_error)
    }
}

#[derive(Clone)]
struct Registration {
    manager: Weak<DeviceManager>,
}

impl dp_grpc::Registration for Registration {
    fn register(&mut self, ctx: RpcContext, req: dp::RegisterRequest, sink: UnarySink<dp::Empty>) {
        let refuse = |ctx: &RpcContext, sink: UnarySink<dp::Empty>, message: String| {
            log::warn!("device manager: registration refused: {message}");
            let status = RpcStatus::with_message(RpcStatusCode::UNKNOWN, message);
            ctx.spawn(async move {
                let _ = sink.fail(status).await;
            });
        };
        let Some(manager) = self.manager.upgrade() else {
            return refuse(&ctx, sink, "the kubelet is shutting down".into());
        };
        let (resource, socket) = match manager.check_registration(&req) {
            Ok(checked) => checked,
            Err(message) => return refuse(&ctx, sink, message),
        };
        // As upstream, the plugin is reached and asked for its options before the answer,
        // so a plugin that cannot be reached learns it did not register. This runs on the
        // completion queue without blocking it.
        ctx.spawn(async move {
            let outcome = match connect(&socket).await {
                Ok((client, options)) => manager.start_plugin(&resource, client, options),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    let _ = sink.success(dp::Empty::new()).await;
                }
                Err(message) => {
                    log::warn!("device manager: registration of {resource} failed: {message}");
                    let status = RpcStatus::with_message(RpcStatusCode::UNKNOWN, message);
                    let _ = sink.fail(status).await;
                }
            }
        });
    }
}

/// Connects to a plugin's socket and asks for its options (upstream `PluginConnected`).
async fn connect(
    socket: &std::path::Path,
) -> Result<(DevicePluginClient, dp::DevicePluginOptions), String> {
    let channel =
        ChannelBuilder::new(crate::util::grpc_env()).connect(&format!("unix:{}", socket.display()));
    if !channel.wait_for_connected(CONNECT_TIMEOUT).await {
        return Err(format!(
            "failed to dial device plugin: {} did not answer within {CONNECT_TIMEOUT:?}",
            socket.display()
        ));
    }
    let client = DevicePluginClient::new(channel);
    let options = client
        .get_device_plugin_options_async_opt(
            &dp::Empty::new(),
            CallOption::default().timeout(CALL_TIMEOUT),
        )
        .map_err(|e| format!("failed to get device plugin options: {}", call_error(e)))?
        .await
        .map_err(|e| format!("failed to get device plugin options: {}", call_error(e)))?;
    Ok((client, options))
}

/// Serves `Registration` on the manager's `kubelet.sock`.
pub(super) fn serve_registration(
    manager: &Arc<DeviceManager>,
) -> Result<grpcio::Server, DeviceError> {
    let socket = manager.dir().join(KUBELET_SOCKET);
    let fail = |why: String| DeviceError::Serve {
        path: socket.display().to_string(),
        why,
    };
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let service = dp_grpc::create_registration(Registration {
        manager: Arc::downgrade(manager),
    });
    let mut server = crate::util::grpc_server_builder()
        .register_service(service)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    server
        .add_listening_port(
            format!("unix:{}", socket.display()),
            grpcio::ServerCredentials::insecure(),
        )
        .map_err(|e| fail(e.to_string()))?;
    server.start();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(e.to_string()))?;
    log::info!(
        "device manager: serving plugin registration on {}",
        socket.display()
    );
    Ok(server)
}

impl DeviceManager {
    /// Checks a registration (upstream `Register`): the API version, the resource name and
    /// the socket's name. Returns the resource and the plugin's socket.
    pub fn check_registration(
        &self,
        req: &dp::RegisterRequest,
    ) -> Result<(String, std::path::PathBuf), String> {
        if req.get_version() != VERSION {
            return Err(format!(
                "requested API version {:?} is not supported by kubelet. Supported version is {VERSION:?}",
                req.get_version()
            ));
        }
        let resource = req.get_resource_name().to_string();
        if let Some(why) = extended_resource_problem(&resource) {
            return Err(format!("the ResourceName {resource:?} is invalid: {why}"));
        }
        let endpoint = req.get_endpoint();
        let plain_name = !endpoint.is_empty()
            && !endpoint.contains('/')
            && endpoint != "."
            && endpoint != ".."
            && endpoint != KUBELET_SOCKET;
        if !plain_name {
            return Err(format!(
                "the endpoint {endpoint:?} is not a socket name in {}",
                self.dir().display()
            ));
        }
        Ok((resource, self.dir().join(endpoint)))
    }

    /// Records a plugin that answered and follows its devices on a thread of its own.
    fn start_plugin(
        self: &Arc<Self>,
        resource: &str,
        client: DevicePluginClient,
        options: dp::DevicePluginOptions,
    ) -> Result<(), String> {
        let plugin = Arc::new(GrpcPlugin {
            client: client.clone(),
        });
        let generation = self.add_plugin(resource, options, plugin);
        let manager = Arc::clone(self);
        let name = resource.to_string();
        let started = std::thread::Builder::new()
            .name("device-plugin".into())
            .spawn(move || manager.follow_plugin(&name, generation, &client));
        if let Err(e) = started {
            self.plugin_stopped(resource, generation);
            return Err(format!("starting the plugin's thread: {e}"));
        }
        Ok(())
    }

    /// Follows a plugin's `ListAndWatch` stream until it ends (upstream `runEndpoint`).
    fn follow_plugin(&self, resource: &str, generation: u64, client: &DevicePluginClient) {
        match client.list_and_watch(&dp::Empty::new()) {
            Ok(mut stream) => loop {
                match futures_executor::block_on(stream.next()) {
                    Some(Ok(update)) => {
                        if !self.update_devices(resource, generation, update.get_devices()) {
                            // A newer registration of the resource took over.
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        log::warn!("device manager: {resource} ListAndWatch: {}", call_error(e));
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => log::warn!("device manager: {resource} ListAndWatch: {}", call_error(e)),
        }
        self.plugin_stopped(resource, generation);
    }
}
