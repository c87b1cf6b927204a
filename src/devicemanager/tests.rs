use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use super::*;
use crate::clock::FakeClock;

/// Checkpoints upstream kubelets wrote (v1.20 to recent, from public posts), one per line.
const UPSTREAM_CHECKPOINTS: &str = include_str!("testdata/upstream_checkpoints.jsonl");

#[test]
fn the_checksum_is_the_one_upstream_kubelets_write() {
    let mut checked = 0;
    for line in UPSTREAM_CHECKPOINTS.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let data: checkpoint::Data = serde_json::from_value(value["Data"].clone()).unwrap();
        assert_eq!(
            checksum::checksum(&data),
            value["Checksum"].as_u64().unwrap(),
            "{}",
            checksum::spew_text(&data)
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn an_upstream_checkpoint_is_read_and_a_changed_one_is_refused() {
    let dir = tempdir();
    let path = dir.join(checkpoint::FILE_NAME);
    let line = UPSTREAM_CHECKPOINTS
        .lines()
        .find(|l| l.contains("\"-1\""))
        .unwrap();
    std::fs::write(&path, line).unwrap();
    let data = checkpoint::read(&path).unwrap().unwrap();
    let entry = &data.pod_device_entries.as_ref().unwrap()[0];
    assert_eq!(entry.container_name, "check");
    assert_eq!(
        entry.device_ids.as_ref().unwrap()[&-1],
        vec!["tegra".to_string()]
    );
    let response =
        dp::ContainerAllocateResponse::parse_from_bytes(entry.alloc_resp.as_ref().unwrap())
            .unwrap();
    assert_eq!(response.get_envs()["NVIDIA_VISIBLE_DEVICES"], "tegra");

    std::fs::write(&path, line.replace("tegra", "tegrb")).unwrap();
    let err = checkpoint::read(&path).unwrap_err().to_string();
    assert!(err.contains("checkpoint is corrupted"), "{err}");
    assert!(checkpoint::read(&dir.join("none")).unwrap().is_none());
    std::fs::write(&path, "{").unwrap();
    assert!(checkpoint::read(&path)
        .unwrap_err()
        .to_string()
        .contains("not a device manager checkpoint"));
}

#[test]
fn written_checkpoints_read_back_with_nil_and_empty_kept_apart() {
    let dir = tempdir();
    let path = dir.join(checkpoint::FILE_NAME);
    for data in [
        checkpoint::Data::default(),
        checkpoint::Data {
            pod_device_entries: Some(vec![checkpoint::PodDevicesEntry {
                pod_uid: "u".into(),
                container_name: "c".into(),
                resource_name: "example.com/dev".into(),
                device_ids: Some([(-1, vec!["b".into(), "a".into()]), (1, vec![])].into()),
                alloc_resp: Some(Vec::new()),
            }]),
            registered_devices: Some(BTreeMap::new()),
        },
    ] {
        checkpoint::write(&path, &data).unwrap();
        assert_eq!(checkpoint::read(&path).unwrap().unwrap(), data);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(r#""DeviceIDs":{"-1":["b","a"],"1":[]},"AllocResp":"""#),
        "{text}"
    );
}

/// No pod finished.
fn none() -> HashSet<String> {
    HashSet::new()
}

fn tempdir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rkubelet-devices-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plugin that answers from memory and records what it was asked.
#[derive(Default)]
struct FakePlugin {
    allocations: Mutex<Vec<Vec<String>>>,
    pre_starts: Mutex<Vec<Vec<String>>>,
    preferred: Option<Vec<String>>,
    fail_allocate: bool,
}

impl PluginApi for FakePlugin {
    fn allocate(&self, ids: &[String]) -> Result<dp::ContainerAllocateResponse, String> {
        if self.fail_allocate {
            return Err("Unavailable: plugin is busy".into());
        }
        self.allocations.lock().unwrap().push(ids.to_vec());
        let mut r = dp::ContainerAllocateResponse::new();
        r.mut_envs().insert("DEVICES".into(), ids.join(","));
        r.mut_annotations()
            .insert("example.com/devices".into(), ids.join(","));
        for id in ids {
            let mut d = dp::DeviceSpec::new();
            d.set_container_path(format!("/dev/{id}"));
            d.set_host_path("/dev/null".into());
            d.set_permissions("rw".into());
            r.mut_devices().push(d);
        }
        let mut m = dp::Mount::new();
        m.set_container_path("/usr/local/dev-tools".into());
        m.set_host_path("/opt/dev-tools".into());
        m.set_read_only(true);
        r.mut_mounts().push(m);
        let mut cdi = dp::CDIDevice::new();
        cdi.set_name(format!("example.com/dev={}", ids.join("+")));
        r.mut_cdi_devices().push(cdi);
        Ok(r)
    }

    fn preferred_allocation(
        &self,
        _available: &BTreeSet<String>,
        _must_include: &BTreeSet<String>,
        _size: usize,
    ) -> Result<BTreeSet<String>, String> {
        self.preferred
            .clone()
            .map(|p| p.into_iter().collect())
            .ok_or_else(|| "Unimplemented".into())
    }

    fn pre_start(&self, ids: &[String]) -> Result<(), String> {
        self.pre_starts.lock().unwrap().push(ids.to_vec());
        Ok(())
    }
}

const RES: &str = "example.com/dev";

fn device(id: &str, healthy: bool, numa: Option<i64>) -> dp::Device {
    let mut d = dp::Device::new();
    d.set_ID(id.into());
    d.set_health(if healthy { "Healthy" } else { "Unhealthy" }.into());
    if let Some(n) = numa {
        let mut node = dp::NUMANode::new();
        node.set_ID(n);
        d.mut_topology().mut_nodes().push(node);
    }
    d
}

fn options(preferred: bool, pre_start: bool) -> dp::DevicePluginOptions {
    let mut o = dp::DevicePluginOptions::new();
    o.set_get_preferred_allocation_available(preferred);
    o.set_pre_start_required(pre_start);
    o
}

fn pod(uid: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "namespace": "default", "uid": uid},
        "spec": spec,
    }))
    .unwrap()
}

fn asking(uid: &str, count: u32) -> Pod {
    pod(
        uid,
        serde_json::json!({"containers": [{"name": "app", "image": "busybox",
            "resources": {"limits": {RES: count.to_string()}}}]}),
    )
}

struct Setup {
    dir: PathBuf,
    clock: Arc<FakeClock>,
    manager: DeviceManager,
    plugin: Arc<FakePlugin>,
}

fn setup(plugin: FakePlugin, opts: dp::DevicePluginOptions, devices: &[dp::Device]) -> Setup {
    let dir = tempdir();
    let clock = Arc::new(FakeClock::new());
    let manager = DeviceManager::new(&dir, clock.clone()).unwrap();
    let plugin = Arc::new(plugin);
    let generation = manager.add_plugin(RES, opts, plugin.clone());
    assert!(manager.update_devices(RES, generation, devices));
    Setup {
        dir,
        clock,
        manager,
        plugin,
    }
}

fn three_devices() -> Vec<dp::Device> {
    vec![
        device("d1", true, None),
        device("d2", true, Some(1)),
        device("d3", false, None),
    ]
}

#[test]
fn capacity_counts_every_device_and_allocatable_the_healthy_ones() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let cap = s.manager.capacity();
    assert_eq!(cap.capacity[RES], 3);
    assert_eq!(cap.allocatable[RES], 2);
    assert!(cap.removed.is_empty());
}

#[test]
fn a_plugin_that_goes_away_leaves_its_devices_unhealthy_then_capacity_zero() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let generation = s.manager.state().resources[RES].generation;
    s.manager.plugin_stopped(RES, generation);
    let cap = s.manager.capacity();
    assert_eq!((cap.capacity[RES], cap.allocatable[RES]), (3, 0));
    s.clock.step(ENDPOINT_GRACE);
    let cap = s.manager.capacity();
    assert!(!cap.capacity.contains_key(RES));
    assert_eq!(cap.removed, vec![RES.to_string()]);
    // It registers again: back, and no longer reported removed.
    let generation = s
        .manager
        .add_plugin(RES, options(false, false), s.plugin.clone());
    assert!(s
        .manager
        .update_devices(RES, generation, &three_devices()[..1]));
    let cap = s.manager.capacity();
    assert_eq!((cap.capacity[RES], cap.allocatable[RES]), (1, 1));
    assert!(cap.removed.is_empty());
}

#[test]
fn a_replaced_plugins_stream_stops_counting() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let old = s.manager.state().resources[RES].generation;
    let new = s
        .manager
        .add_plugin(RES, options(false, false), s.plugin.clone());
    assert!(!s.manager.update_devices(RES, old, &[]));
    s.manager.plugin_stopped(RES, old);
    assert!(s.manager.update_devices(RES, new, &three_devices()));
    assert_eq!(s.manager.capacity().allocatable[RES], 2);
}

#[test]
fn admission_gives_healthy_free_devices_and_rejects_when_there_are_too_few() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    s.manager.allocate(&asking("p1", 1), &none()).unwrap();
    assert_eq!(
        *s.plugin.allocations.lock().unwrap(),
        vec![vec!["d1".to_string()]]
    );
    let err = s.manager.allocate(&asking("p2", 2), &none()).unwrap_err();
    assert_eq!(
        err,
        "Allocate failed due to requested number of devices unavailable for example.com/dev. Requested: 2, Available: 1, which is unexpected"
    );
    s.manager.allocate(&asking("p3", 1), &none()).unwrap();
    assert_eq!(
        s.manager.container_devices("p3", "app"),
        vec![(RES.to_string(), [(1, vec!["d2".to_string()])].into())]
    );
    // Admitting a pod again (a restart) keeps its devices and asks the plugin nothing.
    s.manager.allocate(&asking("p1", 1), &none()).unwrap();
    assert_eq!(s.plugin.allocations.lock().unwrap().len(), 2);
    // p1 finished: its device goes back.
    let finished: HashSet<String> = ["p1".to_string()].into();
    s.manager.allocate(&asking("p4", 1), &finished).unwrap();
    assert_eq!(
        s.manager.container_devices("p4", "app")[0].1[&-1],
        vec!["d1"]
    );
    assert!(s.manager.container_devices("p1", "app").is_empty());
}

#[test]
fn a_resource_no_plugin_registered_is_left_to_the_other_checks() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let other = pod(
        "p",
        serde_json::json!({"containers": [{"name": "app",
            "resources": {"limits": {"example.com/other": "1"}}}]}),
    );
    s.manager.allocate(&other, &none()).unwrap();
    assert!(s.plugin.allocations.lock().unwrap().is_empty());
}

#[test]
fn a_failed_allocate_rejects_the_pod_and_holds_nothing() {
    let s = setup(
        FakePlugin {
            fail_allocate: true,
            ..Default::default()
        },
        options(false, false),
        &three_devices(),
    );
    let err = s.manager.allocate(&asking("p1", 2), &none()).unwrap_err();
    assert!(err.starts_with("Allocate failed due to device plugin example.com/dev Allocate: Unavailable: plugin is busy"), "{err}");
    assert!(s.manager.container_devices("p1", "app").is_empty());
    assert_eq!(s.manager.state().in_use(RES).len(), 0);
}

#[test]
fn the_plugins_preferred_devices_are_taken_when_they_are_valid() {
    let s = setup(
        FakePlugin {
            preferred: Some(vec!["d2".into()]),
            ..Default::default()
        },
        options(true, false),
        &three_devices(),
    );
    s.manager.allocate(&asking("p1", 1), &none()).unwrap();
    assert_eq!(
        *s.plugin.allocations.lock().unwrap(),
        vec![vec!["d2".to_string()]]
    );
    // An answer naming an unhealthy device is not taken.
    let s = setup(
        FakePlugin {
            preferred: Some(vec!["d3".into()]),
            ..Default::default()
        },
        options(true, false),
        &three_devices(),
    );
    s.manager.allocate(&asking("p1", 1), &none()).unwrap();
    assert_eq!(
        *s.plugin.allocations.lock().unwrap(),
        vec![vec!["d1".to_string()]]
    );
}

#[test]
fn an_init_containers_devices_pass_to_the_app_container() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let p = pod(
        "p1",
        serde_json::json!({
            "initContainers": [{"name": "init", "resources": {"limits": {RES: "1"}}}],
            "containers": [{"name": "app", "resources": {"limits": {RES: "2"}}}],
        }),
    );
    s.manager.allocate(&p, &none()).unwrap();
    let allocations = s.plugin.allocations.lock().unwrap().clone();
    assert_eq!(
        allocations,
        vec![vec!["d1".to_string()], vec!["d1".into(), "d2".into()]]
    );
}

#[test]
fn run_options_carry_the_plugins_answer_and_pre_start_is_called() {
    let s = setup(
        FakePlugin::default(),
        options(false, true),
        &three_devices(),
    );
    let p = asking("p1", 2);
    s.manager.allocate(&p, &none()).unwrap();
    let container = &p.spec.as_ref().unwrap().containers[0];
    let opts = s.manager.run_options(&p, container).unwrap();
    assert_eq!(
        *s.plugin.pre_starts.lock().unwrap(),
        vec![vec!["d1".to_string(), "d2".into()]]
    );
    assert_eq!(
        opts.envs,
        vec![("DEVICES".to_string(), "d1,d2".to_string())]
    );
    let paths: Vec<&str> = opts
        .devices
        .iter()
        .map(|d| d.get_container_path())
        .collect();
    assert_eq!(paths, ["/dev/d1", "/dev/d2"]);
    assert_eq!(opts.mounts.len(), 1);
    assert!(opts.mounts[0].get_readonly());
    assert_eq!(opts.cdi_devices, vec!["example.com/dev=d1+d2".to_string()]);

    let mut config = crate::cri::api::ContainerConfig::new();
    config
        .mut_annotations()
        .insert("example.com/devices".into(), "kubelet's".into());
    let mut volume = crate::cri::api::Mount::new();
    volume.set_container_path("/data".into());
    config.mut_mounts().push(volume);
    opts.apply(&mut config);
    assert_eq!(config.get_annotations()["example.com/devices"], "kubelet's");
    let mounts: Vec<&str> = config
        .get_mounts()
        .iter()
        .map(|m| m.get_container_path())
        .collect();
    assert_eq!(mounts, ["/usr/local/dev-tools", "/data"]);
    assert_eq!(config.get_devices().len(), 2);
    assert_eq!(
        config.get_CDI_devices()[0].get_name(),
        "example.com/dev=d1+d2"
    );
}

#[test]
fn a_restarted_manager_gives_the_same_devices_from_the_checkpoint() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let p = asking("p1", 1);
    s.manager.allocate(&p, &none()).unwrap();
    let container = &p.spec.as_ref().unwrap().containers[0];
    let before = s.manager.run_options(&p, container).unwrap();

    let restarted = DeviceManager::new(&s.dir, s.clock.clone()).unwrap();
    // Until the plugin registers again the resource has no devices to give: a container
    // that is not running is not admitted (a node reboot), one still running keeps its own.
    assert_eq!(restarted.capacity().capacity[RES], 0);
    let err = restarted.allocate(&p, &none()).unwrap_err();
    assert!(
        err.contains(
            "no healthy devices present; cannot allocate unhealthy devices example.com/dev"
        ),
        "{err}"
    );
    restarted.set_running_containers([("p1".to_string(), "app".to_string())].into());
    restarted.allocate(&p, &none()).unwrap();
    assert_eq!(restarted.run_options(&p, container).unwrap(), before);
    assert_eq!(s.plugin.allocations.lock().unwrap().len(), 1);
    // A new pod cannot take the held device once the plugin is back.
    let plugin = Arc::new(FakePlugin::default());
    let generation = restarted.add_plugin(RES, options(false, false), plugin.clone());
    restarted.update_devices(RES, generation, &three_devices());
    restarted.allocate(&asking("p2", 1), &none()).unwrap();
    assert_eq!(
        *plugin.allocations.lock().unwrap(),
        vec![vec!["d2".to_string()]]
    );
}

#[test]
fn a_lost_allocation_is_made_again_at_container_start() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let p = asking("p1", 1);
    let container = &p.spec.as_ref().unwrap().containers[0];
    let opts = s.manager.run_options(&p, container).unwrap();
    assert_eq!(opts.envs, vec![("DEVICES".to_string(), "d1".to_string())]);
}

#[test]
fn registrations_are_checked_as_upstream_checks_them() {
    let dir = tempdir();
    let manager = DeviceManager::new(&dir, Arc::new(FakeClock::new())).unwrap();
    let req = |version: &str, resource: &str, endpoint: &str| {
        let mut r = dp::RegisterRequest::new();
        r.set_version(version.into());
        r.set_resource_name(resource.into());
        r.set_endpoint(endpoint.into());
        r
    };
    let err = manager
        .check_registration(&req("v1alpha", RES, "dev.sock"))
        .unwrap_err();
    assert_eq!(
        err,
        "requested API version \"v1alpha\" is not supported by kubelet. Supported version is \"v1beta1\""
    );
    for bad in [
        "gpu",
        "kubernetes.io/gpu",
        "example.com/",
        "Example.com/gpu",
        "example.com/-gpu",
    ] {
        let err = manager
            .check_registration(&req("v1beta1", bad, "dev.sock"))
            .unwrap_err();
        assert!(
            err.starts_with(&format!("the ResourceName {bad:?} is invalid")),
            "{err}"
        );
    }
    for bad in ["", "../x.sock", "a/b.sock", "kubelet.sock"] {
        let err = manager
            .check_registration(&req("v1beta1", RES, bad))
            .unwrap_err();
        assert!(err.contains("is not a socket name"), "{err}");
    }
}

#[test]
fn stale_sockets_are_removed_at_start_and_the_checkpoint_kept() {
    let dir = tempdir();
    let plugins = dir.join("device-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(plugins.join("old.sock")).unwrap();
    std::fs::write(plugins.join("notes"), "x").unwrap();
    checkpoint::write(
        &plugins.join(checkpoint::FILE_NAME),
        &checkpoint::Data::default(),
    )
    .unwrap();
    let _ = DeviceManager::new(&dir, Arc::new(FakeClock::new())).unwrap();
    assert!(!plugins.join("old.sock").exists());
    assert!(plugins.join("notes").exists());
    assert!(plugins.join(checkpoint::FILE_NAME).exists());
}

#[test]
fn held_devices_that_turned_unhealthy_are_not_admitted_again() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let p = asking("p1", 1);
    s.manager.allocate(&p, &none()).unwrap();
    let generation = s.manager.state().resources[RES].generation;
    s.manager.update_devices(
        RES,
        generation,
        &[device("d1", false, None), device("d2", true, None)],
    );
    let err = s.manager.allocate(&p, &none()).unwrap_err();
    assert_eq!(
        err,
        "Allocate failed due to previously allocated devices are no longer healthy; cannot allocate unhealthy devices example.com/dev, which is unexpected"
    );
}

#[test]
fn an_allocation_the_checkpoint_cannot_hold_is_refused() {
    let s = setup(
        FakePlugin::default(),
        options(false, false),
        &three_devices(),
    );
    let path = s.dir.join("device-plugins").join(checkpoint::FILE_NAME);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir_all(path.join("in-the-way")).unwrap();
    let err = s.manager.allocate(&asking("p1", 1), &none()).unwrap_err();
    assert!(err.contains("writing the device checkpoint"), "{err}");
    assert!(s.manager.container_devices("p1", "app").is_empty());
    // Nothing stays reserved: once the disk is back the device can be given.
    std::fs::remove_dir_all(&path).unwrap();
    s.manager.allocate(&asking("p2", 2), &none()).unwrap();
}

#[test]
fn a_failed_preferred_allocation_rejects_as_upstream() {
    let s = setup(
        FakePlugin::default(),
        options(true, false),
        &three_devices(),
    );
    let err = s.manager.allocate(&asking("p1", 1), &none()).unwrap_err();
    assert!(
        err.contains("device plugin example.com/dev GetPreferredAllocation: Unimplemented"),
        "{err}"
    );
    assert_eq!(s.manager.state().in_use(RES).len(), 0);
}
