//! A CSI driver for the tests: the real CSI v1 Identity and Node services on a unix socket,
//! registered with the kubelet through `plugins_registry` exactly as node-driver-registrar
//! does (a `pluginregistration.v1` server on `<root>/plugins_registry/<name>-reg.sock` that
//! names the driver's socket and records `NotifyRegistrationStatus`).
//!
//! Volumes are directories under the driver's own directory (`volumes/<volume id>`):
//! `NodeStageVolume` bind-mounts a volume's directory on the staging path,
//! `NodePublishVolume` bind-mounts the staging path (or, without staging, the volume's
//! directory) on the target, read-only when asked. Both are idempotent, as the spec asks.
//! `NodeGetVolumeStats` reports fixed totals (1 GiB, 1000 inodes) and the bytes of the
//! volume's files, so a test can tell its figures from a statfs. Every call is recorded
//! with what the kubelet sent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, UnarySink};
use rkubelet::csi::csi;
use rkubelet::csi::csi_grpc;
use rkubelet::csi::pluginregistration as reg;
use rkubelet::csi::pluginregistration_grpc;
use rkubelet::volume::mount::{is_mount_point, mount_bind, unmount};

/// Total bytes every volume reports.
pub const VOLUME_BYTES: i64 = 1 << 30;
/// Total inodes every volume reports.
pub const VOLUME_INODES: i64 = 1000;

/// One call the kubelet made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    /// `NodeStageVolume`, `NodePublishVolume`, ...
    pub method: &'static str,
    /// The volume ID.
    pub volume_id: String,
    /// The target (publish, unpublish) or staging path (stage, unstage).
    pub path: String,
    /// The staging path a publish named.
    pub staging_path: String,
    /// The volume context.
    pub context: BTreeMap<String, String>,
    /// The publish context.
    pub publish_context: BTreeMap<String, String>,
    /// The secrets.
    pub secrets: BTreeMap<String, String>,
    /// `readonly` of a publish.
    pub readonly: bool,
    /// `volume_mount_group` of the capability.
    pub mount_group: String,
}

/// What the driver offers.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The driver's name.
    pub name: String,
    /// The node ID `NodeGetInfo` answers.
    pub node_id: String,
    /// `max_volumes_per_node`.
    pub max_volumes: i64,
    /// Topology segments of the node.
    pub topology: BTreeMap<String, String>,
    /// `STAGE_UNSTAGE_VOLUME`.
    pub stage: bool,
    /// `VOLUME_MOUNT_GROUP`.
    pub mount_group: bool,
    /// The CSI versions `GetInfo` lists.
    pub versions: Vec<String>,
}

impl DriverOptions {
    /// A driver named `name` with staging, stats and a zone topology.
    pub fn new(name: &str) -> Self {
        DriverOptions {
            name: name.to_string(),
            node_id: format!("{name}-node-1"),
            max_volumes: 8,
            topology: [("topology.csi.test/zone".to_string(), "zone-a".to_string())]
                .into_iter()
                .collect(),
            stage: true,
            mount_group: false,
            versions: vec!["1.0.0".into()],
        }
    }
}

#[derive(Clone)]
struct Shared {
    options: DriverOptions,
    dir: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
    notified: Arc<Mutex<Vec<(bool, String)>>>,
}

/// A running test driver.
pub struct TestCsiDriver {
    shared: Shared,
    /// The driver's socket.
    pub endpoint: PathBuf,
    /// The registration socket in `plugins_registry`.
    pub registration: PathBuf,
    servers: Vec<grpcio::Server>,
}

impl TestCsiDriver {
    /// Starts the driver in `dir` (its socket and volumes) and registers it in
    /// `registry_dir` (the kubelet's `<root>/plugins_registry`).
    pub fn start(options: DriverOptions, dir: &Path, registry_dir: &Path) -> TestCsiDriver {
        std::fs::create_dir_all(dir.join("volumes")).unwrap();
        std::fs::create_dir_all(registry_dir).unwrap();
        let shared = Shared {
            options: options.clone(),
            dir: dir.to_path_buf(),
            calls: Arc::new(Mutex::new(Vec::new())),
            notified: Arc::new(Mutex::new(Vec::new())),
        };
        let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
        let endpoint = dir.join("csi.sock");
        let _ = std::fs::remove_file(&endpoint);
        let mut driver = ServerBuilder::new(Arc::clone(&env))
            .register_service(csi_grpc::create_identity(shared.clone()))
            .register_service(csi_grpc::create_node(shared.clone()))
            .build()
            .unwrap();
        driver
            .add_listening_port(
                format!("unix:{}", endpoint.display()),
                ServerCredentials::insecure(),
            )
            .unwrap();
        driver.start();
        let registration = registry_dir.join(format!("{}-reg.sock", options.name));
        let _ = std::fs::remove_file(&registration);
        let mut registrar = ServerBuilder::new(env)
            .register_service(pluginregistration_grpc::create_registration(Registrar {
                shared: shared.clone(),
                endpoint: endpoint.clone(),
            }))
            .build()
            .unwrap();
        registrar
            .add_listening_port(
                format!("unix:{}", registration.display()),
                ServerCredentials::insecure(),
            )
            .unwrap();
        registrar.start();
        TestCsiDriver {
            shared,
            endpoint,
            registration,
            servers: vec![driver, registrar],
        }
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The lifecycle calls (stage, publish, unpublish, unstage) so far for `volume_id`, in
    /// order.
    pub fn methods_for(&self, volume_id: &str) -> Vec<&'static str> {
        self.calls()
            .into_iter()
            .filter(|c| c.volume_id == volume_id && c.method != "NodeGetVolumeStats")
            .map(|c| c.method)
            .collect()
    }

    /// What the kubelet answered to registration, each time.
    pub fn notified(&self) -> Vec<(bool, String)> {
        self.shared.notified.lock().unwrap().clone()
    }

    /// A volume's backing directory.
    pub fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.shared.dir.join("volumes").join(volume_id)
    }

    /// Stops serving and removes the registration socket (the registrar going away).
    pub fn stop(mut self) {
        for server in &mut self.servers {
            let _ = futures_block(server.shutdown());
        }
        let _ = std::fs::remove_file(&self.registration);
    }
}

/// Runs a future to completion on this thread (grpcio's shutdown).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    let mut f = Box::pin(f);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn reply<T: Send + 'static>(ctx: &RpcContext, sink: UnarySink<T>, result: Result<T, String>) {
    match result {
        Ok(value) => ctx.spawn(async move {
            let _ = sink.success(value).await;
        }),
        Err(message) => ctx.spawn(async move {
            let status = RpcStatus::with_message(RpcStatusCode::INTERNAL, message);
            let _ = sink.fail(status).await;
        }),
    }
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Shared {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn volume_dir(&self, id: &str) -> PathBuf {
        self.dir.join("volumes").join(id)
    }
}

impl csi_grpc::Identity for Shared {
    fn get_plugin_info(
        &mut self,
        ctx: RpcContext,
        _req: csi::GetPluginInfoRequest,
        sink: UnarySink<csi::GetPluginInfoResponse>,
    ) {
        let mut answer = csi::GetPluginInfoResponse::new();
        answer.set_name(self.options.name.clone());
        answer.set_vendor_version("0.1.0".into());
        reply(&ctx, sink, Ok(answer));
    }

    fn probe(
        &mut self,
        ctx: RpcContext,
        _req: csi::ProbeRequest,
        sink: UnarySink<csi::ProbeResponse>,
    ) {
        reply(&ctx, sink, Ok(csi::ProbeResponse::new()));
    }
}

impl csi_grpc::Node for Shared {
    fn node_get_info(
        &mut self,
        ctx: RpcContext,
        _req: csi::NodeGetInfoRequest,
        sink: UnarySink<csi::NodeGetInfoResponse>,
    ) {
        let mut answer = csi::NodeGetInfoResponse::new();
        answer.set_node_id(self.options.node_id.clone());
        answer.set_max_volumes_per_node(self.options.max_volumes);
        let mut topology = csi::Topology::new();
        topology.set_segments(
            self.options
                .topology
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        answer.set_accessible_topology(topology);
        self.record(Call {
            method: "NodeGetInfo",
            ..Call::default()
        });
        reply(&ctx, sink, Ok(answer));
    }

    fn node_get_capabilities(
        &mut self,
        ctx: RpcContext,
        _req: csi::NodeGetCapabilitiesRequest,
        sink: UnarySink<csi::NodeGetCapabilitiesResponse>,
    ) {
        use csi::NodeServiceCapability_RPC_Type as Rpc;
        let mut wanted = vec![Rpc::GET_VOLUME_STATS];
        if self.options.stage {
            wanted.push(Rpc::STAGE_UNSTAGE_VOLUME);
        }
        if self.options.mount_group {
            wanted.push(Rpc::VOLUME_MOUNT_GROUP);
        }
        let mut answer = csi::NodeGetCapabilitiesResponse::new();
        for kind in wanted {
            let mut rpc = csi::NodeServiceCapability_RPC::new();
            rpc.set_field_type(kind);
            let mut cap = csi::NodeServiceCapability::new();
            cap.set_rpc(rpc);
            answer.mut_capabilities().push(cap);
        }
        reply(&ctx, sink, Ok(answer));
    }

    fn node_stage_volume(
        &mut self,
        ctx: RpcContext,
        req: csi::NodeStageVolumeRequest,
        sink: UnarySink<csi::NodeStageVolumeResponse>,
    ) {
        self.record(Call {
            method: "NodeStageVolume",
            volume_id: req.get_volume_id().to_string(),
            path: req.get_staging_target_path().to_string(),
            context: sorted(req.get_volume_context()),
            publish_context: sorted(req.get_publish_context()),
            secrets: sorted(req.get_secrets()),
            mount_group: req
                .get_volume_capability()
                .get_mount()
                .get_volume_mount_group()
                .to_string(),
            ..Call::default()
        });
        let staging = PathBuf::from(req.get_staging_target_path());
        let source = self.volume_dir(req.get_volume_id());
        let result = (|| {
            if !staging.is_dir() {
                return Err(format!("staging path {} does not exist", staging.display()));
            }
            std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
            if !is_mount_point(&staging) {
                mount_bind(&source, &staging, false).map_err(|e| e.to_string())?;
            }
            Ok(csi::NodeStageVolumeResponse::new())
        })();
        reply(&ctx, sink, result);
    }

    fn node_unstage_volume(
        &mut self,
        ctx: RpcContext,
        req: csi::NodeUnstageVolumeRequest,
        sink: UnarySink<csi::NodeUnstageVolumeResponse>,
    ) {
        self.record(Call {
            method: "NodeUnstageVolume",
            volume_id: req.get_volume_id().to_string(),
            path: req.get_staging_target_path().to_string(),
            ..Call::default()
        });
        let staging = PathBuf::from(req.get_staging_target_path());
        let result = if is_mount_point(&staging) {
            unmount(&staging).map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        reply(
            &ctx,
            sink,
            result.map(|()| csi::NodeUnstageVolumeResponse::new()),
        );
    }

    fn node_publish_volume(
        &mut self,
        ctx: RpcContext,
        req: csi::NodePublishVolumeRequest,
        sink: UnarySink<csi::NodePublishVolumeResponse>,
    ) {
        self.record(Call {
            method: "NodePublishVolume",
            volume_id: req.get_volume_id().to_string(),
            path: req.get_target_path().to_string(),
            staging_path: req.get_staging_target_path().to_string(),
            context: sorted(req.get_volume_context()),
            publish_context: sorted(req.get_publish_context()),
            secrets: sorted(req.get_secrets()),
            readonly: req.get_readonly(),
            mount_group: req
                .get_volume_capability()
                .get_mount()
                .get_volume_mount_group()
                .to_string(),
        });
        let target = PathBuf::from(req.get_target_path());
        let staged = self.options.stage && !req.get_staging_target_path().is_empty();
        let source = if staged {
            PathBuf::from(req.get_staging_target_path())
        } else {
            let dir = self.volume_dir(req.get_volume_id());
            let _ = std::fs::create_dir_all(&dir);
            dir
        };
        let result = (|| {
            let parent = target.parent().ok_or("target has no parent")?;
            if !parent.is_dir() {
                return Err(format!("target parent {} does not exist", parent.display()));
            }
            if staged && !is_mount_point(&source) {
                return Err(format!("volume is not staged at {}", source.display()));
            }
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            if !is_mount_point(&target) {
                mount_bind(&source, &target, req.get_readonly()).map_err(|e| e.to_string())?;
            }
            Ok(csi::NodePublishVolumeResponse::new())
        })();
        reply(&ctx, sink, result);
    }

    fn node_unpublish_volume(
        &mut self,
        ctx: RpcContext,
        req: csi::NodeUnpublishVolumeRequest,
        sink: UnarySink<csi::NodeUnpublishVolumeResponse>,
    ) {
        self.record(Call {
            method: "NodeUnpublishVolume",
            volume_id: req.get_volume_id().to_string(),
            path: req.get_target_path().to_string(),
            ..Call::default()
        });
        let target = PathBuf::from(req.get_target_path());
        let result = (|| {
            if is_mount_point(&target) {
                unmount(&target).map_err(|e| e.to_string())?;
            }
            match std::fs::remove_dir(&target) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })();
        reply(
            &ctx,
            sink,
            result.map(|()| csi::NodeUnpublishVolumeResponse::new()),
        );
    }

    fn node_get_volume_stats(
        &mut self,
        ctx: RpcContext,
        req: csi::NodeGetVolumeStatsRequest,
        sink: UnarySink<csi::NodeGetVolumeStatsResponse>,
    ) {
        self.record(Call {
            method: "NodeGetVolumeStats",
            volume_id: req.get_volume_id().to_string(),
            path: req.get_volume_path().to_string(),
            staging_path: req.get_staging_target_path().to_string(),
            ..Call::default()
        });
        let used: i64 = std::fs::read_dir(self.volume_dir(req.get_volume_id()))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| i64::try_from(m.len()).unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        let files: i64 = std::fs::read_dir(self.volume_dir(req.get_volume_id()))
            .map(|d| i64::try_from(d.count()).unwrap_or(0))
            .unwrap_or(0);
        let mut answer = csi::NodeGetVolumeStatsResponse::new();
        for (unit, total, used) in [
            (csi::VolumeUsage_Unit::BYTES, VOLUME_BYTES, used),
            (csi::VolumeUsage_Unit::INODES, VOLUME_INODES, files),
        ] {
            let mut usage = csi::VolumeUsage::new();
            usage.set_unit(unit);
            usage.set_total(total);
            usage.set_used(used);
            usage.set_available(total - used);
            answer.mut_usage().push(usage);
        }
        reply(&ctx, sink, Ok(answer));
    }
}

#[derive(Clone)]
struct Registrar {
    shared: Shared,
    endpoint: PathBuf,
}

impl pluginregistration_grpc::Registration for Registrar {
    fn get_info(
        &mut self,
        ctx: RpcContext,
        _req: reg::InfoRequest,
        sink: UnarySink<reg::PluginInfo>,
    ) {
        let mut info = reg::PluginInfo::new();
        info.set_field_type("CSIPlugin".into());
        info.set_name(self.shared.options.name.clone());
        info.set_endpoint(self.endpoint.to_string_lossy().into_owned());
        info.set_supported_versions(self.shared.options.versions.clone().into());
        reply(&ctx, sink, Ok(info));
    }

    fn notify_registration_status(
        &mut self,
        ctx: RpcContext,
        req: reg::RegistrationStatus,
        sink: UnarySink<reg::RegistrationStatusResponse>,
    ) {
        self.shared
            .notified
            .lock()
            .unwrap()
            .push((req.get_plugin_registered(), req.get_error().to_string()));
        reply(&ctx, sink, Ok(reg::RegistrationStatusResponse::new()));
    }
}
