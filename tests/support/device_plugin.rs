//! A device plugin for the tests, speaking the real `deviceplugin/v1beta1` API: it serves
//! `DevicePlugin` on its own socket in the kubelet's `device-plugins` directory and registers
//! through the kubelet's `kubelet.sock`, as real plugins do. Like them it watches
//! `kubelet.sock`: when a restarted kubelet makes a new one (and removes the plugin's socket),
//! it serves again and registers again.
//!
//! Each device `<id>` is handed out as the device node `/dev/<id>` (the host's `/dev/zero`,
//! `rw`), the env `TEST_DEVICES=<ids>`, a read-only mount of the plugin's `tools`
//! directory at `/opt/test-device-tools` and the annotation `test.device/ids`. Every call
//! is recorded.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use grpcio::{
    ChannelBuilder, RpcContext, ServerBuilder, ServerCredentials, ServerStreamingSink, UnarySink,
    WriteFlags,
};
use rkubelet::devicemanager::deviceplugin as dp;
use rkubelet::devicemanager::deviceplugin_grpc;

/// One call the kubelet made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `Allocate` for one container's devices.
    Allocate(Vec<String>),
    /// `PreStartContainer`.
    PreStart(Vec<String>),
    /// `GetPreferredAllocation`: available, size.
    Preferred(Vec<String>, i32),
    /// `ListAndWatch` opened.
    ListAndWatch,
}

#[derive(Clone)]
struct Shared {
    resource: String,
    tools: PathBuf,
    devices: Arc<Mutex<BTreeMap<String, bool>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Senders of the open `ListAndWatch` streams.
    watchers: Arc<Mutex<Vec<crossbeam_channel::Sender<()>>>>,
    pre_start: bool,
}

impl Shared {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn list(&self) -> dp::ListAndWatchResponse {
        let mut resp = dp::ListAndWatchResponse::new();
        for (id, healthy) in self.devices.lock().unwrap().iter() {
            let mut d = dp::Device::new();
            d.set_ID(id.clone());
            d.set_health(if *healthy { "Healthy" } else { "Unhealthy" }.into());
            resp.mut_devices().push(d);
        }
        resp
    }
}

/// A running test plugin.
pub struct TestDevicePlugin {
    shared: Shared,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl TestDevicePlugin {
    /// Starts a plugin for `resource` with `devices` (id, healthy) in the kubelet's
    /// `plugins_dir`, registering once the kubelet serves there. `pre_start`: it asks for
    /// `PreStartContainer`. Its tools directory is `tools_dir`.
    pub fn start(
        resource: &str,
        devices: &[(&str, bool)],
        plugins_dir: &Path,
        tools_dir: &Path,
        pre_start: bool,
    ) -> TestDevicePlugin {
        std::fs::create_dir_all(tools_dir).unwrap();
        std::fs::write(tools_dir.join("README"), "test device tools\n").unwrap();
        let shared = Shared {
            resource: resource.to_string(),
            tools: tools_dir.to_path_buf(),
            devices: Arc::new(Mutex::new(
                devices.iter().map(|(id, h)| (id.to_string(), *h)).collect(),
            )),
            calls: Arc::new(Mutex::new(Vec::new())),
            watchers: Arc::new(Mutex::new(Vec::new())),
            pre_start,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let shared = shared.clone();
            let stop = Arc::clone(&stop);
            let dir = plugins_dir.to_path_buf();
            std::thread::spawn(move || serve_and_register(&shared, &dir, &stop))
        };
        TestDevicePlugin {
            shared,
            stop,
            watcher: Some(watcher),
        }
    }

    /// The calls so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Marks a device healthy or not and tells every open stream.
    pub fn set_health(&self, id: &str, healthy: bool) {
        self.shared
            .devices
            .lock()
            .unwrap()
            .insert(id.to_string(), healthy);
        self.shared
            .watchers
            .lock()
            .unwrap()
            .retain(|tx| tx.send(()).is_ok());
    }

    /// Stops serving (the kubelet's stream ends) and registering.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.watcher.take() {
            h.join().unwrap();
        }
    }
}

impl Drop for TestDevicePlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Serves on `<dir>/<name>.sock` and registers; again whenever `kubelet.sock` is new.
fn serve_and_register(shared: &Shared, dir: &Path, stop: &AtomicBool) {
    let name = shared.resource.replace('/', "-");
    let socket = dir.join(format!("{name}.sock"));
    let kubelet = dir.join("kubelet.sock");
    // A new socket may reuse the old one's inode number: its change time tells them apart.
    let mut registered_with: Option<(u64, i64, i64)> = None;
    let mut server: Option<grpcio::Server> = None;
    while !stop.load(Ordering::SeqCst) {
        let inode = std::fs::metadata(&kubelet)
            .ok()
            .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()));
        if inode.is_some() && inode != registered_with {
            if let Some(mut old) = server.take() {
                shared.watchers.lock().unwrap().clear();
                let _ = futures_executor::block_on(old.shutdown());
            }
            let _ = std::fs::remove_file(&socket);
            let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
            let mut s = ServerBuilder::new(Arc::clone(&env))
                .register_service(deviceplugin_grpc::create_device_plugin(Plugin {
                    shared: shared.clone(),
                }))
                .build()
                .unwrap();
            s.add_listening_port(
                format!("unix:{}", socket.display()),
                ServerCredentials::insecure(),
            )
            .unwrap();
            s.start();
            server = Some(s);
            let channel = ChannelBuilder::new(env).connect(&format!("unix:{}", kubelet.display()));
            let client = deviceplugin_grpc::RegistrationClient::new(channel);
            let mut req = dp::RegisterRequest::new();
            req.set_version("v1beta1".into());
            req.set_endpoint(format!("{name}.sock"));
            req.set_resource_name(shared.resource.clone());
            req.mut_options().set_pre_start_required(shared.pre_start);
            let call = grpcio::CallOption::default().timeout(Duration::from_secs(5));
            if client.register_opt(&req, call).is_ok() {
                registered_with = inode;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Ending the streams' threads drops their sinks, so the shutdown does not wait on them.
    shared.watchers.lock().unwrap().clear();
    if let Some(mut s) = server.take() {
        let _ = futures_executor::block_on(s.shutdown());
    }
    let _ = std::fs::remove_file(&socket);
}

#[derive(Clone)]
struct Plugin {
    shared: Shared,
}

impl deviceplugin_grpc::DevicePlugin for Plugin {
    fn get_device_plugin_options(
        &mut self,
        ctx: RpcContext,
        _req: dp::Empty,
        sink: UnarySink<dp::DevicePluginOptions>,
    ) {
        let mut options = dp::DevicePluginOptions::new();
        options.set_pre_start_required(self.shared.pre_start);
        ctx.spawn(async move {
            let _ = sink.success(options).await;
        });
    }

    fn list_and_watch(
        &mut self,
        _ctx: RpcContext,
        _req: dp::Empty,
        mut sink: ServerStreamingSink<dp::ListAndWatchResponse>,
    ) {
        self.shared.record(Call::ListAndWatch);
        let (tx, rx) = crossbeam_channel::unbounded();
        self.shared.watchers.lock().unwrap().push(tx);
        let shared = self.shared.clone();
        // The stream stays open on a thread of its own, sending the whole list on each change.
        std::thread::spawn(move || loop {
            let sent =
                futures_executor::block_on(sink.send((shared.list(), WriteFlags::default())));
            if sent.is_err() || rx.recv().is_err() {
                return;
            }
        });
    }

    fn get_preferred_allocation(
        &mut self,
        ctx: RpcContext,
        req: dp::PreferredAllocationRequest,
        sink: UnarySink<dp::PreferredAllocationResponse>,
    ) {
        let mut resp = dp::PreferredAllocationResponse::new();
        for c in req.get_container_requests() {
            self.shared.record(Call::Preferred(
                c.get_available_deviceIDs().to_vec(),
                c.get_allocation_size(),
            ));
            let mut r = dp::ContainerPreferredAllocationResponse::new();
            let size = usize::try_from(c.get_allocation_size()).unwrap();
            // The plugin prefers the last devices.
            let ids: Vec<String> = c
                .get_available_deviceIDs()
                .iter()
                .rev()
                .take(size)
                .cloned()
                .collect();
            r.set_deviceIDs(ids.into());
            resp.mut_container_responses().push(r);
        }
        ctx.spawn(async move {
            let _ = sink.success(resp).await;
        });
    }

    fn allocate(
        &mut self,
        ctx: RpcContext,
        req: dp::AllocateRequest,
        sink: UnarySink<dp::AllocateResponse>,
    ) {
        let mut resp = dp::AllocateResponse::new();
        for c in req.get_container_requests() {
            let ids = c.get_devices_ids().to_vec();
            self.shared.record(Call::Allocate(ids.clone()));
            let mut r = dp::ContainerAllocateResponse::new();
            r.mut_envs().insert("TEST_DEVICES".into(), ids.join(","));
            r.mut_annotations()
                .insert("test.device/ids".into(), ids.join(","));
            for id in &ids {
                let mut d = dp::DeviceSpec::new();
                d.set_container_path(format!("/dev/{id}"));
                d.set_host_path("/dev/zero".into());
                d.set_permissions("rw".into());
                r.mut_devices().push(d);
            }
            let mut m = dp::Mount::new();
            m.set_container_path("/opt/test-device-tools".into());
            m.set_host_path(self.shared.tools.display().to_string());
            m.set_read_only(true);
            r.mut_mounts().push(m);
            resp.mut_container_responses().push(r);
        }
        ctx.spawn(async move {
            let _ = sink.success(resp).await;
        });
    }

    fn pre_start_container(
        &mut self,
        ctx: RpcContext,
        req: dp::PreStartContainerRequest,
        sink: UnarySink<dp::PreStartContainerResponse>,
    ) {
        self.shared
            .record(Call::PreStart(req.get_devices_ids().to_vec()));
        ctx.spawn(async move {
            let _ = sink.success(dp::PreStartContainerResponse::new()).await;
        });
    }
}
