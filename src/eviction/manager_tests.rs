use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::clock::FakeClock;
use crate::events::FakeRecorder;
use crate::eviction::decide::Observation;
use crate::eviction::stats::{ContainerUsage, NodeSample, PodUsage, StatsError};
use crate::quantity::ThresholdValue;
use crate::types::PodUid;

/// Stats scripted by the test.
#[derive(Default)]
struct ScriptedStats {
    node: Mutex<NodeSample>,
    pods: Mutex<HashMap<PodUid, PodUsage>>,
    /// What the node looks like after a reclaim (when set).
    after_reclaim: Mutex<Option<NodeSample>>,
}

impl ScriptedStats {
    fn set_available(&self, signal: Signal, available: i64) {
        self.node.lock().unwrap().observations.insert(
            signal,
            Observation {
                available,
                capacity: 1 << 30,
            },
        );
    }
}

impl StatsSource for ScriptedStats {
    fn node(&self) -> NodeSample {
        self.node.lock().unwrap().clone()
    }
    fn pods(
        &self,
        pods: &[Arc<Pod>],
        _disk_for: &dyn Fn(&Pod) -> bool,
    ) -> Result<HashMap<PodUid, PodUsage>, StatsError> {
        let all = self.pods.lock().unwrap();
        Ok(pods
            .iter()
            .filter_map(|p| {
                let uid = uid_of(p);
                all.get(&uid).map(|u| (uid, u.clone()))
            })
            .collect())
    }
}

/// Records what the manager asks of the kubelet.
#[derive(Default)]
struct RecordingHost {
    pods: Mutex<Vec<Arc<Pod>>>,
    evicted: Mutex<Vec<(String, i64, Termination)>>,
    reclaims: Mutex<u32>,
    stats: Mutex<Option<Arc<ScriptedStats>>>,
}

impl EvictionHost for RecordingHost {
    fn active_pods(&self) -> Vec<Arc<Pod>> {
        self.pods.lock().unwrap().clone()
    }
    fn evict_pod(&self, pod: &Arc<Pod>, grace_seconds: i64, termination: Termination) {
        self.evicted
            .lock()
            .unwrap()
            .push((pod_key(pod), grace_seconds, termination));
        self.pods
            .lock()
            .unwrap()
            .retain(|p| uid_of(p) != uid_of(pod));
    }
    fn pod_cleaned_up(&self, _pod: &Pod) -> bool {
        true
    }
    fn delete_unused_containers(&self) -> Result<(), String> {
        *self.reclaims.lock().unwrap() += 1;
        Ok(())
    }
    fn delete_unused_images(&self) -> Result<u64, String> {
        if let Some(stats) = self.stats.lock().unwrap().as_ref() {
            if let Some(after) = stats.after_reclaim.lock().unwrap().take() {
                *stats.node.lock().unwrap() = after;
            }
        }
        Ok(0)
    }
}

fn pod(name: &str, memory_request: Option<&str>) -> Arc<Pod> {
    let resources = memory_request.map(|r| ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".to_string(), Quantity(r.into()))])),
        ..Default::default()
    });
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

struct Fixture {
    manager: Manager,
    stats: Arc<ScriptedStats>,
    host: RecordingHost,
    clock: Arc<FakeClock>,
    recorder: Arc<FakeRecorder>,
}

fn fixture(thresholds: Vec<Threshold>) -> Fixture {
    let stats = Arc::new(ScriptedStats::default());
    let clock = Arc::new(FakeClock::new());
    let recorder = Arc::new(FakeRecorder::default());
    let manager = Manager::new(
        EvictionConfig {
            thresholds,
            pressure_transition_period: Duration::from_secs(30),
            max_pod_grace_period_seconds: 0,
            local_storage_isolation: true,
            monitoring_period: MONITORING_PERIOD,
        },
        "node-a",
        clock.clone(),
        stats.clone(),
        recorder.clone(),
        Arc::new(NodePressure::default()),
    );
    let host = RecordingHost::default();
    *host.stats.lock().unwrap() = Some(stats.clone());
    Fixture {
        manager,
        stats,
        host,
        clock,
        recorder,
    }
}

fn hard(signal: Signal, bytes: i64) -> Threshold {
    Threshold {
        signal,
        value: ThresholdValue::Quantity(bytes),
        grace_period: Duration::ZERO,
        min_reclaim: None,
    }
}

fn usage(working_set: u64) -> PodUsage {
    PodUsage {
        containers: vec![ContainerUsage {
            name: "c".into(),
            memory_working_set: Some(working_set),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn memory_pressure_evicts_the_pod_most_over_its_request_and_reports_the_condition() {
    let f = fixture(vec![hard(Signal::MemoryAvailable, 100 << 20)]);
    let calm = pod("calm", Some("1Gi"));
    let hungry = pod("hungry", Some("10Mi"));
    let mut critical = (*pod("static", None)).clone();
    critical.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_string(),
        "file".to_string(),
    )]));
    let critical = Arc::new(critical);
    *f.host.pods.lock().unwrap() = vec![calm.clone(), hungry.clone(), critical.clone()];
    f.stats.pods.lock().unwrap().extend([
        (uid_of(&calm), usage(100 << 20)),
        (uid_of(&hungry), usage(300 << 20)),
        (uid_of(&critical), usage(900 << 20)),
    ]);
    f.stats.set_available(Signal::MemoryAvailable, 500 << 20);
    assert!(f.manager.synchronize(&f.host).is_empty());
    assert!(f.manager.pressure().conditions().is_empty());

    f.stats.set_available(Signal::MemoryAvailable, 50 << 20);
    let evicted = f.manager.synchronize(&f.host);
    assert_eq!(evicted.len(), 1);
    assert!(f.manager.pressure().has(NodeCondition::MemoryPressure));
    let (key, grace, termination) = f.host.evicted.lock().unwrap()[0].clone();
    assert_eq!(key, "default/hungry");
    assert_eq!(grace, IMMEDIATE_GRACE_PERIOD_SECONDS);
    assert_eq!(termination.reason, "Evicted");
    assert!(termination.disruption_target);
    assert_eq!(
        termination.message,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Container c was using 300Mi, request is 10Mi, has larger consumption of memory. "
    );
    let events = f.recorder.events();
    assert!(events
        .iter()
        .any(|e| e.reason == "Evicted" && e.object == "default/hungry"));
    assert!(
        events
            .iter()
            .any(|e| e.reason == "EvictionThresholdMet"
                && e.message == "Attempting to reclaim memory")
    );
    // No memory node-level reclaim exists.
    assert_eq!(*f.host.reclaims.lock().unwrap(), 0);

    // The static pod is never chosen, even when it is the only one left over its request.
    f.host
        .pods
        .lock()
        .unwrap()
        .retain(|p| uid_of(p) != uid_of(&calm));
    assert!(f.manager.synchronize(&f.host).is_empty());
    assert_eq!(f.host.evicted.lock().unwrap().len(), 1);

    // Pressure gone: the condition stays for the transition period, then clears.
    f.stats.set_available(Signal::MemoryAvailable, 900 << 20);
    f.clock.step(Duration::from_secs(10));
    f.manager.synchronize(&f.host);
    assert!(f.manager.pressure().has(NodeCondition::MemoryPressure));
    f.clock.step(Duration::from_secs(25));
    f.manager.synchronize(&f.host);
    assert!(f.manager.pressure().conditions().is_empty());
}

#[test]
fn disk_pressure_reclaims_images_first_and_evicts_nobody_when_that_suffices() {
    let f = fixture(vec![hard(Signal::ImageFsAvailable, 1 << 20)]);
    let p = pod("web", None);
    *f.host.pods.lock().unwrap() = vec![p];
    f.stats.set_available(Signal::ImageFsAvailable, 1000);
    let mut after = f.stats.node();
    after.observations.insert(
        Signal::ImageFsAvailable,
        Observation {
            available: 10 << 20,
            capacity: 1 << 30,
        },
    );
    *f.stats.after_reclaim.lock().unwrap() = Some(after);
    assert!(f.manager.synchronize(&f.host).is_empty());
    assert_eq!(*f.host.reclaims.lock().unwrap(), 1);
    assert!(f.host.evicted.lock().unwrap().is_empty());
    // Nothing more to reclaim: a pod goes.
    f.stats.set_available(Signal::ImageFsAvailable, 1000);
    assert_eq!(f.manager.synchronize(&f.host).len(), 1);
}

#[test]
fn admission_under_pressure_follows_upstream() {
    let f = fixture(vec![
        hard(Signal::MemoryAvailable, 100 << 20),
        hard(Signal::NodeFsAvailable, 100 << 20),
    ]);
    let best_effort = pod("be", None);
    let burstable = pod("burst", Some("10Mi"));
    f.stats.set_available(Signal::MemoryAvailable, 1 << 20);
    f.stats.set_available(Signal::NodeFsAvailable, 1 << 30);
    f.manager.synchronize(&f.host);
    let rejected = f.manager.admit(&best_effort).unwrap_err();
    assert_eq!(rejected.reason, "Evicted");
    assert_eq!(
        rejected.message,
        "The node had condition: [MemoryPressure]. "
    );
    assert!(f.manager.admit(&burstable).is_ok());
    let mut tolerant = (*best_effort).clone();
    tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/memory-pressure".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert!(f.manager.admit(&tolerant).is_ok());

    f.stats.set_available(Signal::NodeFsAvailable, 1);
    f.manager.synchronize(&f.host);
    let rejected = f.manager.admit(&burstable).unwrap_err();
    assert_eq!(
        rejected.message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    let mut critical = (*burstable).clone();
    critical.spec.as_mut().unwrap().priority = Some(2_000_001_000);
    assert!(f.manager.admit(&critical).is_ok());
}

#[test]
fn pods_over_local_storage_limits_are_evicted_before_thresholds_count() {
    let f = fixture(vec![hard(Signal::MemoryAvailable, 100 << 20)]);
    let mut limited = (*pod("scratchy", None)).clone();
    limited.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "ephemeral-storage".to_string(),
            Quantity("1Mi".into()),
        )])),
        ..Default::default()
    });
    let limited = Arc::new(limited);
    let other = pod("other", None);
    *f.host.pods.lock().unwrap() = vec![other.clone(), limited.clone()];
    f.stats.pods.lock().unwrap().insert(
        uid_of(&limited),
        PodUsage {
            containers: vec![ContainerUsage {
                name: "c".into(),
                rootfs_bytes: 2 << 20,
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    f.stats.set_available(Signal::MemoryAvailable, 1);
    let evicted = f.manager.synchronize(&f.host);
    assert_eq!(evicted.len(), 1);
    assert_eq!(uid_of(&evicted[0]), uid_of(&limited));
    let (_, grace, termination) = f.host.evicted.lock().unwrap()[0].clone();
    assert_eq!(grace, 1);
    assert!(!termination.disruption_target);
    assert_eq!(
        termination.message,
        "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. "
    );
}

#[test]
fn soft_evictions_use_the_smaller_of_the_maximum_and_the_pods_own_grace_period() {
    let mut f = fixture(vec![Threshold {
        signal: Signal::MemoryAvailable,
        value: ThresholdValue::Quantity(100 << 20),
        grace_period: Duration::from_secs(60),
        min_reclaim: None,
    }]);
    let mut p = (*pod("slow", None)).clone();
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(120);
    let p = Arc::new(p);
    assert_eq!(
        f.manager.soft_grace_period(&p),
        120,
        "0 means the pod's own"
    );
    f.manager.config.max_pod_grace_period_seconds = 45;
    assert_eq!(f.manager.soft_grace_period(&p), 45);
    *f.host.pods.lock().unwrap() = vec![p];
    f.stats.set_available(Signal::MemoryAvailable, 1);
    assert!(
        f.manager.synchronize(&f.host).is_empty(),
        "grace period not over"
    );
    assert!(f.manager.pressure().has(NodeCondition::MemoryPressure));
    f.clock.step(Duration::from_secs(61));
    assert_eq!(f.manager.synchronize(&f.host).len(), 1);
    assert_eq!(f.host.evicted.lock().unwrap()[0].1, 45);
}
