//! A blocking client for one CSI driver's Identity and Node services over its unix socket,
//! each call bounded by a deadline. Errors read as upstream's (`rpc error: code = ...
//! desc = ...`), since they end up in pod events.

use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Environment, RpcStatusCode};

use super::csi;
use super::csi_grpc::{IdentityClient, NodeClient};

/// Deadline of the node operations (upstream's `csiTimeout`).
pub const CSI_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of the cheap queries (capabilities, info, stats).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call to a driver.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rpc error: code = {code} desc = {message}")]
pub struct CsiError {
    /// gRPC status code name (`Unavailable`, `Internal`, `DeadlineExceeded`...).
    pub code: String,
    /// The driver's message, or the transport's.
    pub message: String,
}

impl CsiError {
    fn from_grpc(e: grpcio::Error) -> CsiError {
        match e {
            grpcio::Error::RpcFailure(status) => CsiError {
                code: code_name(status.code()),
                message: status.message().to_string(),
            },
            other => CsiError {
                code: "Unknown".into(),
                message: other.to_string(),
            },
        }
    }

    /// Whether the driver does not implement the method.
    pub fn is_unimplemented(&self) -> bool {
        self.code == "Unimplemented"
    }
}

/// Go's names of the gRPC status codes, as `status.Error` prints them.
fn code_name(code: RpcStatusCode) -> String {
    let name = match code {
        RpcStatusCode::OK => "OK",
        RpcStatusCode::CANCELLED => "Canceled",
        RpcStatusCode::INVALID_ARGUMENT => "InvalidArgument",
        RpcStatusCode::DEADLINE_EXCEEDED => "DeadlineExceeded",
        RpcStatusCode::NOT_FOUND => "NotFound",
        RpcStatusCode::ALREADY_EXISTS => "AlreadyExists",
        RpcStatusCode::PERMISSION_DENIED => "PermissionDenied",
        RpcStatusCode::RESOURCE_EXHAUSTED => "ResourceExhausted",
        RpcStatusCode::FAILED_PRECONDITION => "FailedPrecondition",
        RpcStatusCode::ABORTED => "Aborted",
        RpcStatusCode::OUT_OF_RANGE => "OutOfRange",
        RpcStatusCode::UNIMPLEMENTED => "Unimplemented",
        RpcStatusCode::INTERNAL => "Internal",
        RpcStatusCode::UNAVAILABLE => "Unavailable",
        RpcStatusCode::DATA_LOSS => "DataLoss",
        RpcStatusCode::UNAUTHENTICATED => "Unauthenticated",
        _ => "Unknown",
    };
    name.to_string()
}

/// What the driver's node service can do (`NodeGetCapabilities`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCapabilities {
    /// `STAGE_UNSTAGE_VOLUME`: volumes are staged once per node before publishing.
    pub stage_unstage: bool,
    /// `GET_VOLUME_STATS`.
    pub volume_stats: bool,
    /// `VOLUME_MOUNT_GROUP`: the driver applies the pod's fsGroup itself.
    pub mount_group: bool,
}

/// A driver's Identity and Node services.
#[derive(Clone)]
pub struct CsiClient {
    endpoint: String,
    identity: IdentityClient,
    node: NodeClient,
}

impl std::fmt::Debug for CsiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The gRPC target of a socket path or `unix://` URL.
pub fn grpc_target(endpoint: &str) -> String {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    format!("unix:{path}")
}

impl CsiClient {
    /// A client for the driver at `endpoint` (a socket path or `unix://` URL); the
    /// connection is made by the first call.
    pub fn connect(env: Arc<Environment>, endpoint: &str) -> CsiClient {
        let channel = ChannelBuilder::new(env).connect(&grpc_target(endpoint));
        CsiClient {
            endpoint: endpoint.to_string(),
            identity: IdentityClient::new(channel.clone()),
            node: NodeClient::new(channel),
        }
    }

    /// The socket this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn options(timeout: Duration) -> CallOption {
        CallOption::default().timeout(timeout)
    }

    /// `GetPluginInfo`: the driver's name and version.
    pub fn plugin_info(&self) -> Result<csi::GetPluginInfoResponse, CsiError> {
        self.identity
            .get_plugin_info_opt(
                &csi::GetPluginInfoRequest::new(),
                Self::options(QUERY_TIMEOUT),
            )
            .map_err(CsiError::from_grpc)
    }

    /// `NodeGetInfo`: the node's ID in the driver, its volume limit and topology.
    pub fn node_info(&self) -> Result<csi::NodeGetInfoResponse, CsiError> {
        self.node
            .node_get_info_opt(&csi::NodeGetInfoRequest::new(), Self::options(CSI_TIMEOUT))
            .map_err(CsiError::from_grpc)
    }

    /// `NodeGetCapabilities`.
    pub fn node_capabilities(&self) -> Result<NodeCapabilities, CsiError> {
        let answer = self
            .node
            .node_get_capabilities_opt(
                &csi::NodeGetCapabilitiesRequest::new(),
                Self::options(QUERY_TIMEOUT),
            )
            .map_err(CsiError::from_grpc)?;
        let mut caps = NodeCapabilities::default();
        for cap in answer.get_capabilities() {
            use csi::NodeServiceCapability_RPC_Type as Rpc;
            match cap.get_rpc().get_field_type() {
                Rpc::STAGE_UNSTAGE_VOLUME => caps.stage_unstage = true,
                Rpc::GET_VOLUME_STATS => caps.volume_stats = true,
                Rpc::VOLUME_MOUNT_GROUP => caps.mount_group = true,
                _ => {}
            }
        }
        Ok(caps)
    }

    /// `NodeStageVolume`.
    pub fn stage(&self, request: &csi::NodeStageVolumeRequest) -> Result<(), CsiError> {
        self.node
            .node_stage_volume_opt(request, Self::options(CSI_TIMEOUT))
            .map(drop)
            .map_err(CsiError::from_grpc)
    }

    /// `NodeUnstageVolume`.
    pub fn unstage(&self, volume_id: &str, staging_path: &str) -> Result<(), CsiError> {
        let mut request = csi::NodeUnstageVolumeRequest::new();
        request.set_volume_id(volume_id.to_string());
        request.set_staging_target_path(staging_path.to_string());
        self.node
            .node_unstage_volume_opt(&request, Self::options(CSI_TIMEOUT))
            .map(drop)
            .map_err(CsiError::from_grpc)
    }

    /// `NodePublishVolume`.
    pub fn publish(&self, request: &csi::NodePublishVolumeRequest) -> Result<(), CsiError> {
        self.node
            .node_publish_volume_opt(request, Self::options(CSI_TIMEOUT))
            .map(drop)
            .map_err(CsiError::from_grpc)
    }

    /// `NodeUnpublishVolume`.
    pub fn unpublish(&self, volume_id: &str, target_path: &str) -> Result<(), CsiError> {
        let mut request = csi::NodeUnpublishVolumeRequest::new();
        request.set_volume_id(volume_id.to_string());
        request.set_target_path(target_path.to_string());
        self.node
            .node_unpublish_volume_opt(&request, Self::options(CSI_TIMEOUT))
            .map(drop)
            .map_err(CsiError::from_grpc)
    }

    /// `NodeGetVolumeStats` of a published volume.
    pub fn volume_stats(
        &self,
        volume_id: &str,
        volume_path: &str,
        staging_path: &str,
    ) -> Result<csi::NodeGetVolumeStatsResponse, CsiError> {
        let mut request = csi::NodeGetVolumeStatsRequest::new();
        request.set_volume_id(volume_id.to_string());
        request.set_volume_path(volume_path.to_string());
        request.set_staging_target_path(staging_path.to_string());
        self.node
            .node_get_volume_stats_opt(&request, Self::options(QUERY_TIMEOUT))
            .map_err(CsiError::from_grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_errors_read_as_upstream() {
        assert_eq!(
            grpc_target("/var/lib/kubelet/plugins/x/csi.sock"),
            "unix:/var/lib/kubelet/plugins/x/csi.sock"
        );
        assert_eq!(grpc_target("unix:///run/csi.sock"), "unix:/run/csi.sock");
        let e = CsiError::from_grpc(grpcio::Error::RpcFailure(grpcio::RpcStatus::with_message(
            RpcStatusCode::INTERNAL,
            "mount failed".into(),
        )));
        assert_eq!(
            e.to_string(),
            "rpc error: code = Internal desc = mount failed"
        );
        assert!(!e.is_unimplemented());
    }
}
