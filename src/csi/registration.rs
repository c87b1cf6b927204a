//! The plugin watcher and the registered CSI drivers (upstream `pluginmanager` with its
//! CSI handler).
//!
//! One thread scans `<root-dir>/plugins_registry/` every second. A new socket is a plugin
//! asking to register: the watcher calls its `GetInfo`, checks that it is a CSI plugin
//! speaking a CSI version 1.x, calls the driver's `NodeGetInfo` at the endpoint it names,
//! records the driver in the node's objects ([`NodeInfoManager`]), keeps a client for it,
//! and answers `NotifyRegistrationStatus` with the outcome, as node-driver-registrar
//! expects. A registration that fails is answered with its error and tried again later. A
//! socket that disappears unregisters its driver. Pod volumes reach drivers through
//! [`CsiDrivers::client`]; a driver not registered (yet) fails the volume with upstream's
//! error and the volume is tried again.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use grpcio::{CallOption, ChannelBuilder, Environment};

use super::client::{grpc_target, CsiClient, NodeCapabilities};
use super::node_info::{DriverNodeInfo, NodeInfoManager};
use super::pluginregistration as reg;
use super::pluginregistration_grpc::RegistrationClient;
use super::CSI_PLUGIN_TYPE;

/// How often the registration directory is scanned.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of the registration calls (upstream dials with 10 s).
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed registration waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A registered driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The driver's name (`GetInfo`'s name, the CSIDriver object's name).
    pub name: String,
    /// The registration socket it came from.
    pub registration: PathBuf,
    /// What it reported in `NodeGetInfo`.
    pub info: DriverNodeInfo,
    /// Its node service.
    pub client: Arc<CsiClient>,
}

/// The CSI drivers registered on this node, by name.
pub struct CsiDrivers {
    env: Arc<Environment>,
    drivers: RwLock<HashMap<String, Driver>>,
    capabilities: RwLock<HashMap<String, NodeCapabilities>>,
}

impl std::fmt::Debug for CsiDrivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiDrivers").finish_non_exhaustive()
    }
}

impl Default for CsiDrivers {
    fn default() -> Self {
        Self::new()
    }
}

impl CsiDrivers {
    /// No drivers yet. Clients use the process's gRPC environment.
    pub fn new() -> Self {
        CsiDrivers {
            env: crate::util::grpc_env(),
            drivers: RwLock::new(HashMap::new()),
            capabilities: RwLock::new(HashMap::new()),
        }
    }

    /// The client of driver `name`, or upstream's error when it is not registered.
    pub fn client(&self, name: &str) -> Result<Arc<CsiClient>, String> {
        self.drivers
            .read()
            .ok()
            .and_then(|d| d.get(name).map(|d| Arc::clone(&d.client)))
            .ok_or_else(|| {
                format!("driver name {name} not found in the list of registered CSI drivers")
            })
    }

    /// The node capabilities of driver `name`, asked once per registration.
    pub fn capabilities(&self, name: &str) -> Result<NodeCapabilities, String> {
        if let Some(caps) = self
            .capabilities
            .read()
            .ok()
            .and_then(|c| c.get(name).copied())
        {
            return Ok(caps);
        }
        let caps = self
            .client(name)?
            .node_capabilities()
            .map_err(|e| e.to_string())?;
        if let Ok(mut all) = self.capabilities.write() {
            all.insert(name.to_string(), caps);
        }
        Ok(caps)
    }

    /// The registered drivers' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .drivers
            .read()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn insert(&self, driver: Driver) {
        if let Ok(mut caps) = self.capabilities.write() {
            caps.remove(&driver.name);
        }
        if let Ok(mut drivers) = self.drivers.write() {
            drivers.insert(driver.name.clone(), driver);
        }
    }

    /// Removes driver `name` if it came from `registration`; returns whether it did.
    fn remove(&self, name: &str, registration: &Path) -> bool {
        let Ok(mut drivers) = self.drivers.write() else {
            return false;
        };
        if drivers
            .get(name)
            .is_some_and(|d| d.registration == registration)
        {
            drivers.remove(name);
            if let Ok(mut caps) = self.capabilities.write() {
                caps.remove(name);
            }
            return true;
        }
        false
    }

    /// A client for `endpoint` on the shared gRPC environment.
    fn connect(&self, endpoint: &str) -> CsiClient {
        CsiClient::connect(Arc::clone(&self.env), endpoint)
    }
}

/// One socket in the registration directory, as the watcher knows it.
enum Seen {
    /// Registered as this driver.
    Registered(String),
    /// Failed; tried again at this time.
    Failed(Instant),
}

/// The thread watching `plugins_registry`.
pub struct PluginWatcher {
    handle: JoinHandle<()>,
}

impl PluginWatcher {
    /// Starts watching `dir` (created if missing, mode 0750), registering drivers into
    /// `drivers` and recording them through `node_info` (none: a standalone kubelet keeps
    /// no API objects). Returns when `stop` fires or is dropped.
    pub fn start(
        dir: &Path,
        drivers: Arc<CsiDrivers>,
        node_info: Option<NodeInfoManager>,
        stop: Receiver<()>,
    ) -> std::io::Result<PluginWatcher> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("plugin-watcher".into())
            .spawn(move || watch(&dir, &drivers, node_info.as_ref(), &stop))?;
        Ok(PluginWatcher { handle })
    }

    /// The thread, to join once its stop channel fired.
    pub fn into_handle(self) -> JoinHandle<()> {
        self.handle
    }
}

fn watch(
    dir: &Path,
    drivers: &CsiDrivers,
    node_info: Option<&NodeInfoManager>,
    stop: &Receiver<()>,
) {
    log::info!("plugin watcher: watching {}", dir.display());
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut csi_node_ready = node_info.is_none();
    loop {
        if !csi_node_ready {
            match node_info.map(NodeInfoManager::init) {
                Some(Err(e)) => log::debug!("plugin watcher: CSINode not initialized yet: {e}"),
                _ => csi_node_ready = true,
            }
        }
        let sockets = scan(dir);
        for socket in &sockets {
            let due = match seen.get(socket) {
                Some(Seen::Registered(_)) => false,
                Some(Seen::Failed(at)) => Instant::now() >= *at,
                None => true,
            };
            if due && csi_node_ready {
                let state = match register(socket, drivers, node_info) {
                    Ok(name) => Seen::Registered(name),
                    Err(()) => Seen::Failed(Instant::now() + RETRY_AFTER),
                };
                seen.insert(socket.clone(), state);
            }
        }
        seen.retain(|socket, state| {
            if sockets.contains(socket) {
                return true;
            }
            if let Seen::Registered(name) = state {
                unregister(name, socket, drivers, node_info);
            }
            false
        });
        match stop.recv_timeout(SCAN_INTERVAL) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// The sockets in `dir` (hidden files skipped, as upstream skips them).
fn scan(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sockets: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect();
    sockets.sort();
    sockets
}

/// Registers the plugin behind `socket`; its registrar is told the outcome either way.
fn register(
    socket: &Path,
    drivers: &CsiDrivers,
    node_info: Option<&NodeInfoManager>,
) -> Result<String, ()> {
    let channel = ChannelBuilder::new(Arc::clone(&drivers.env))
        .connect(&grpc_target(&socket.to_string_lossy()));
    let registrar = RegistrationClient::new(channel);
    let options = || CallOption::default().timeout(REGISTRATION_TIMEOUT);
    let info = match registrar.get_info_opt(&reg::InfoRequest::new(), options()) {
        Ok(info) => info,
        Err(e) => {
            log::warn!(
                "plugin watcher: GetInfo of {} failed: {e}",
                socket.display()
            );
            return Err(());
        }
    };
    let result = accept(socket, &info, drivers, node_info);
    let mut status = reg::RegistrationStatus::new();
    status.set_plugin_registered(result.is_ok());
    if let Err(e) = &result {
        log::warn!(
            "plugin watcher: registration of plugin {:?} at {} failed: {e}",
            info.get_name(),
            socket.display()
        );
        status.set_error(e.clone());
    }
    if let Err(e) = registrar.notify_registration_status_opt(&status, options()) {
        log::warn!(
            "plugin watcher: NotifyRegistrationStatus to {} failed: {e}",
            socket.display()
        );
    }
    result.map_err(drop)
}

/// Validates and registers one plugin (upstream's CSI handler `ValidatePlugin` then
/// `RegisterPlugin`).
fn accept(
    socket: &Path,
    info: &reg::PluginInfo,
    drivers: &CsiDrivers,
    node_info: Option<&NodeInfoManager>,
) -> Result<String, String> {
    let name = info.get_name();
    if info.get_field_type() != CSI_PLUGIN_TYPE {
        return Err(format!(
            "no handler registered for plugin type: {}",
            info.get_field_type()
        ));
    }
    if name.is_empty() {
        return Err("plugin name is empty".into());
    }
    if !info.get_supported_versions().iter().any(|v| supported(v)) {
        return Err(format!(
            "validation failed for CSI Driver {name} at endpoint {}: none of the CSI versions reported by this driver are supported",
            info.get_endpoint()
        ));
    }
    let endpoint = match info.get_endpoint() {
        "" => socket.to_string_lossy().into_owned(),
        endpoint => endpoint.to_string(),
    };
    let client = drivers.connect(&endpoint);
    let answer = client.node_info().map_err(|e| {
        format!("error during CSI NodeGetInfo() call for driver {name} at endpoint {endpoint}: {e}")
    })?;
    let node = DriverNodeInfo {
        driver: name.to_string(),
        node_id: answer.get_node_id().to_string(),
        max_volumes: answer.get_max_volumes_per_node(),
        topology: answer
            .get_accessible_topology()
            .get_segments()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    if node.node_id.is_empty() {
        return Err(format!(
            "error during CSI NodeGetInfo() call for driver {name}: node ID is empty"
        ));
    }
    if let Some(manager) = node_info {
        manager
            .install(&node)
            .map_err(|e| format!("error updating CSI node info for driver {name}: {e}"))?;
    }
    log::info!(
        "plugin watcher: registered CSI driver {name} at {endpoint} (node ID {:?})",
        node.node_id
    );
    drivers.insert(Driver {
        name: name.to_string(),
        registration: socket.to_path_buf(),
        info: node,
        client: Arc::new(client),
    });
    Ok(name.to_string())
}

/// Whether a CSI version string (`1.0.0`, `v1.5.0`, `1`) is one of the 1.x versions
/// this kubelet speaks.
fn supported(version: &str) -> bool {
    let version = version.trim().trim_start_matches('v');
    let major = version.split('.').next().unwrap_or_default();
    major == "1"
}

fn unregister(
    name: &str,
    socket: &Path,
    drivers: &CsiDrivers,
    node_info: Option<&NodeInfoManager>,
) {
    if !drivers.remove(name, socket) {
        return;
    }
    log::info!(
        "plugin watcher: CSI driver {name} unregistered ({} is gone)",
        socket.display()
    );
    if let Some(manager) = node_info {
        if let Err(e) = manager.uninstall(name) {
            log::warn!("plugin watcher: removing CSI driver {name} from the node's objects: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_csi_1_x_is_supported() {
        assert!(supported("1.0.0"));
        assert!(supported("v1.9.0"));
        assert!(supported("1"));
        assert!(!supported("0.3.0"));
        assert!(!supported("2.0.0"));
        assert!(!supported(""));
    }

    #[test]
    fn unknown_drivers_fail_with_upstreams_words() {
        let drivers = CsiDrivers::new();
        assert_eq!(
            drivers.client("x.example.com").unwrap_err(),
            "driver name x.example.com not found in the list of registered CSI drivers"
        );
        assert!(drivers.names().is_empty());
    }
}
