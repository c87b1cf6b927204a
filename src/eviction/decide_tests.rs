use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, Pod, PodSpec, ResourceRequirements, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::eviction::stats::{ContainerUsage, PodUsage, VolumeUsage};
use crate::quantity::ThresholdValue;

fn threshold(signal: Signal, bytes: i64, grace: u64, reclaim: Option<i64>) -> Threshold {
    Threshold {
        signal,
        value: ThresholdValue::Quantity(bytes),
        grace_period: Duration::from_secs(grace),
        min_reclaim: reclaim.map(ThresholdValue::Quantity),
    }
}

fn observed(signal: Signal, available: i64) -> Observations {
    BTreeMap::from([(
        signal,
        Observation {
            available,
            capacity: 1 << 40,
        },
    )])
}

fn pod(name: &str, priority: i32, memory_request: Option<&str>) -> Arc<Pod> {
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
            priority: Some(priority),
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

fn memory_usage(bytes: u64) -> PodUsage {
    PodUsage {
        containers: vec![ContainerUsage {
            name: "c".into(),
            memory_working_set: Some(bytes),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn a_met_threshold_stays_met_until_the_minimum_reclaim_is_free() {
    let t = [threshold(Signal::MemoryAvailable, 100, 0, Some(50))];
    let mut state = PressureState::default();
    let now = Instant::now();
    let period = Duration::from_secs(300);
    let a = state.assess(&t, &observed(Signal::MemoryAvailable, 90), period, now);
    assert_eq!(a.actionable, vec![0]);
    // Above the threshold but not by the minimum reclaim: still met.
    let a = state.assess(&t, &observed(Signal::MemoryAvailable, 120), period, now);
    assert_eq!(a.actionable, vec![0]);
    let a = state.assess(&t, &observed(Signal::MemoryAvailable, 151), period, now);
    assert!(a.actionable.is_empty());
    // A threshold never met is judged without the minimum reclaim.
    let mut fresh = PressureState::default();
    let a = fresh.assess(&t, &observed(Signal::MemoryAvailable, 120), period, now);
    assert!(a.actionable.is_empty());
}

#[test]
fn conditions_hold_for_the_transition_period_and_soft_thresholds_wait_their_grace() {
    let t = [threshold(Signal::NodeFsAvailable, 100, 60, None)];
    let mut state = PressureState::default();
    let start = Instant::now();
    let period = Duration::from_secs(30);
    let low = observed(Signal::NodeFsAvailable, 10);
    let a = state.assess(&t, &low, period, start);
    assert_eq!(
        a.conditions.into_iter().collect::<Vec<_>>(),
        [NodeCondition::DiskPressure]
    );
    assert!(
        a.actionable.is_empty(),
        "the soft grace period has not passed"
    );
    let a = state.assess(&t, &low, period, start + Duration::from_secs(60));
    assert_eq!(a.actionable, vec![0]);
    let high = observed(Signal::NodeFsAvailable, 1000);
    let a = state.assess(&t, &high, period, start + Duration::from_secs(70));
    assert!(a.actionable.is_empty());
    assert!(
        a.conditions.contains(&NodeCondition::DiskPressure),
        "held for the transition period"
    );
    let a = state.assess(&t, &high, period, start + Duration::from_secs(91));
    assert!(a.conditions.is_empty());
    // Met again: the grace period counts from the new observation.
    let a = state.assess(&t, &low, period, start + Duration::from_secs(100));
    assert!(a.actionable.is_empty());
}

#[test]
fn memory_comes_first_when_several_thresholds_are_met() {
    let t = [
        threshold(Signal::PidAvailable, 100, 0, None),
        threshold(Signal::NodeFsAvailable, 100, 0, None),
        threshold(Signal::MemoryAvailable, 100, 0, None),
    ];
    let mut obs = observed(Signal::PidAvailable, 1);
    obs.extend(observed(Signal::NodeFsAvailable, 1));
    obs.extend(observed(Signal::MemoryAvailable, 1));
    let a = PressureState::default().assess(&t, &obs, Duration::from_secs(1), Instant::now());
    assert_eq!(a.actionable, vec![2, 1, 0]);
    assert_eq!(
        conditions_text(&a.conditions),
        "[MemoryPressure DiskPressure PIDPressure]"
    );
}

#[test]
fn memory_ranking_puts_pods_over_their_requests_and_low_priority_first() {
    let over_small = pod("over-small", 0, Some("10Mi"));
    let under_big = pod("under-big", 0, Some("1Gi"));
    let over_big = pod("over-big", 0, Some("10Mi"));
    let low_priority = pod("low", -10, Some("1Gi"));
    let no_stats = pod("nostats", 1000, None);
    let usage: BTreeMap<&str, PodUsage> = BTreeMap::from([
        ("over-small", memory_usage(20 << 20)),
        ("under-big", memory_usage(500 << 20)),
        ("over-big", memory_usage(200 << 20)),
        ("low", memory_usage(1 << 20)),
    ]);
    let pods = [&over_small, &under_big, &over_big, &low_priority, &no_stats];
    let mut candidates: Vec<Candidate<'_>> = pods
        .iter()
        .map(|p| (*p, usage.get(p.metadata.name.as_deref().unwrap())))
        .collect();
    rank(&mut candidates, Signal::MemoryAvailable, false);
    let order: Vec<&str> = candidates
        .iter()
        .map(|(p, _)| p.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        order,
        ["nostats", "over-big", "over-small", "low", "under-big"]
    );
}

#[test]
fn the_eviction_message_names_the_threshold_and_the_containers_over_their_requests() {
    let t = threshold(Signal::MemoryAvailable, 100 << 20, 0, None);
    let p = pod("web", 0, Some("10Mi"));
    let obs = Observation {
        available: 50 << 20,
        capacity: 1 << 30,
    };
    let (message, annotations) =
        eviction_message(&t, Some(&obs), &p, Some(&memory_usage(64 << 20)));
    assert_eq!(
        message,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
         Container c was using 64Mi, request is 10Mi, has larger consumption of memory. "
    );
    assert_eq!(annotations["offending_containers"], "c");
    assert_eq!(annotations["offending_containers_usage"], "64Mi");
    assert_eq!(annotations["starved_resource"], "memory");
    let inodes = Threshold {
        signal: Signal::NodeFsInodesFree,
        value: ThresholdValue::Percentage(0.05),
        grace_period: Duration::ZERO,
        min_reclaim: None,
    };
    let obs = Observation {
        available: 1000,
        capacity: 100_000,
    };
    let (message, _) = eviction_message(&inodes, Some(&obs), &p, None);
    assert_eq!(
        message,
        "The node was low on resource: inodes. Threshold quantity: 5000, available: 1k. "
    );
}

fn limited_pod(volume_limit: Option<&str>, container_limit: Option<&str>) -> Pod {
    let limits = container_limit
        .map(|l| BTreeMap::from([("ephemeral-storage".to_string(), Quantity(l.into()))]));
    Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                resources: Some(ResourceRequirements {
                    limits,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: volume_limit.map(|l| Quantity(l.into())),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn disk(volume: u64, rootfs: u64, logs: u64) -> PodUsage {
    PodUsage {
        containers: vec![ContainerUsage {
            name: "app".into(),
            rootfs_bytes: rootfs,
            logs_bytes: logs,
            ..Default::default()
        }],
        volumes: vec![VolumeUsage {
            name: "scratch".into(),
            bytes: volume,
            inodes: 1,
            ephemeral: true,
        }],
        etc_hosts_bytes: 100,
        processes: None,
    }
}

#[test]
fn local_storage_limits_are_checked_in_upstream_order() {
    let p = limited_pod(Some("1Mi"), Some("4Mi"));
    let v = local_storage_violation(&p, &disk(2 << 20, 0, 0), false).unwrap();
    assert_eq!(v.kind, LocalStorageLimit::EmptyDir);
    assert_eq!(
        v.message,
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    assert_eq!(v.metric_signal(), "emptydirfs.limit");
    // The pod's total (volume + layer + logs + etc-hosts) over the containers' limits.
    let v = local_storage_violation(&p, &disk(1 << 20, 2 << 20, 1 << 20), false).unwrap();
    assert_eq!(v.kind, LocalStorageLimit::Pod);
    assert_eq!(
        v.message,
        "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. "
    );
    let unlimited_volume = limited_pod(None, Some("4Mi"));
    let v = local_storage_violation(&unlimited_volume, &disk(0, 3 << 20, 1 << 20), false);
    assert_eq!(v.unwrap().kind, LocalStorageLimit::Pod);
    // The pod's total counts writable layers wherever they live.
    let v = local_storage_violation(&unlimited_volume, &disk(0, 5 << 20, 0), true);
    assert_eq!(v.unwrap().kind, LocalStorageLimit::Pod);
    assert!(local_storage_violation(&p, &disk(1 << 20, 1 << 20, 1 << 20), false).is_none());
}

#[test]
fn the_container_check_names_the_limit_as_written() {
    // A pod limit the pod total does not reach, a container limit its layer and logs do.
    let mut p = limited_pod(None, Some("2M"));
    if let Some(spec) = p.spec.as_mut() {
        spec.containers.push(Container {
            name: "other".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "ephemeral-storage".to_string(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // The container's own check counts its layer only without a separate image fs.
    assert!(local_storage_violation(&p, &disk(0, 2_000_000, 1), true).is_none());
    let v = local_storage_violation(&p, &disk(0, 2_000_000, 1), false).unwrap();
    assert_eq!(v.kind, LocalStorageLimit::Container);
    assert_eq!(
        v.message,
        "Container app exceeded its local ephemeral storage limit \"2M\". "
    );
}

#[test]
fn static_mirror_and_system_critical_pods_are_critical() {
    let mut p = (*pod("web", 0, None)).clone();
    assert!(!is_critical_pod(&p));
    p.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_string(),
        "file".to_string(),
    )]));
    assert!(is_critical_pod(&p));
    let mut q = (*pod("dns", SYSTEM_CRITICAL_PRIORITY, None)).clone();
    assert!(is_critical_pod(&q));
    q.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY - 1);
    assert!(!is_critical_pod(&q));
}
