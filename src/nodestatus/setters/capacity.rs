//! The node's capacity and allocatable (upstream `MachineInfo`), with the machine ids that
//! setter also reports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{node_info_mut, status_mut};
use crate::nodestatus::NodeStatusInputs;
use crate::quantity::{binary_si, decimal_si, milli_si};

/// An amount of one resource the kubelet owns, with the format the API prints it in.
#[derive(Debug, Clone, Copy)]
enum Amount {
    /// Millicores, `DecimalSI` (`2`, `1500m`).
    Millis(i64),
    /// A count, `DecimalSI` (`110`).
    Count(i64),
    /// Bytes, `BinarySI` (`24684084Ki`).
    Bytes(i64),
}

impl Amount {
    fn value(self) -> i64 {
        match self {
            Amount::Millis(v) | Amount::Count(v) | Amount::Bytes(v) => v,
        }
    }

    /// Less `reserved`, never below zero (upstream clamps negative allocatable).
    fn minus(self, reserved: i64) -> Amount {
        let v = self.value().saturating_sub(reserved).max(0);
        match self {
            Amount::Millis(_) => Amount::Millis(v),
            Amount::Count(_) => Amount::Count(v),
            Amount::Bytes(_) => Amount::Bytes(v),
        }
    }

    fn quantity(self) -> Quantity {
        match self {
            Amount::Millis(v) => milli_si(v),
            Amount::Count(v) => decimal_si(v),
            Amount::Bytes(v) => binary_si(v),
        }
    }
}

fn bytes(v: u64) -> Amount {
    Amount::Bytes(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Machine ids, capacity and allocatable (upstream `MachineInfo`): cpu, memory, hugepages,
/// pods and ephemeral-storage; allocatable = capacity − systemReserved − kubeReserved − hard
/// eviction threshold, and memory also less every hugepage pool. Capacity entries the kubelet
/// does not own (extended resources) are kept and copied to allocatable unchanged, but for
/// those of device plugins: all their devices in capacity, the healthy ones in allocatable,
/// and 0 in both once a plugin is gone for good.
pub fn machine_info(node: &mut Node, inputs: &NodeStatusInputs) {
    let m = &inputs.machine;
    let status = status_mut(node);
    let info = node_info_mut(status);
    info.machine_id.clone_from(&m.machine_id);
    info.system_uuid.clone_from(&m.system_uuid);
    info.boot_id.clone_from(&m.boot_id);

    let cores = i64::from(m.num_cores);
    let max_pods = i64::from(inputs.max_pods);
    let pods = match inputs.pods_per_core {
        0 => max_pods,
        per_core => (cores * i64::from(per_core)).min(max_pods),
    };
    let mut owned: BTreeMap<String, Amount> = BTreeMap::new();
    owned.insert("cpu".into(), Amount::Millis(cores * 1000));
    owned.insert("memory".into(), bytes(m.memory_capacity_bytes));
    owned.insert("pods".into(), Amount::Count(pods));
    if let Some(storage) = m.ephemeral_storage_bytes {
        owned.insert("ephemeral-storage".into(), bytes(storage));
    }
    for pool in &m.hugepages {
        owned.insert(pool.resource_name(), bytes(pool.capacity_bytes()));
    }

    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    for (name, amount) in &owned {
        capacity.insert(name.clone(), amount.quantity());
    }
    let devices = &inputs.devices;
    for (name, count) in &devices.capacity {
        capacity.insert(name.clone(), decimal_si(*count));
    }
    for name in &devices.removed {
        capacity.insert(name.clone(), decimal_si(0));
    }
    let r = &inputs.reservation;
    let reserved = |name: &str, cap: i64| -> i64 {
        let (sys, kube) = (&r.system_reserved, &r.kube_reserved);
        match name {
            "cpu" => sys.cpu_millis.saturating_add(kube.cpu_millis),
            "memory" => sys
                .memory_bytes
                .saturating_add(kube.memory_bytes)
                .saturating_add(r.eviction_memory_available.map_or(0, |t| t.amount(cap))),
            "ephemeral-storage" => sys
                .ephemeral_storage_bytes
                .saturating_add(kube.ephemeral_storage_bytes)
                .saturating_add(r.eviction_nodefs_available.map_or(0, |t| t.amount(cap))),
            _ => 0,
        }
    };
    let hugepages: i64 = m
        .hugepages
        .iter()
        .map(|p| bytes(p.capacity_bytes()).value())
        .fold(0, i64::saturating_add);
    let allocatable: BTreeMap<String, Quantity> = capacity
        .iter()
        .map(|(name, cap)| {
            let value = match owned.get(name) {
                Some(amount) => {
                    let mut a = amount.minus(reserved(name, amount.value()));
                    if name == "memory" {
                        a = a.minus(hugepages);
                    }
                    a.quantity()
                }
                None => match devices.allocatable.get(name) {
                    Some(healthy) => decimal_si(*healthy),
                    None if devices.removed.contains(name) => decimal_si(0),
                    None => cap.clone(),
                },
            };
            (name.clone(), value)
        })
        .collect();
    status.allocatable = Some(allocatable);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::setters::fixtures::{apply, reference_inputs, status};
    use crate::nodestatus::{AllocatableReservation, Reserved};

    fn quantities(map: &Option<BTreeMap<String, Quantity>>) -> Vec<(String, String)> {
        map.as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn capacity_and_allocatable_match_reference_node() {
        let node = apply(machine_info, &reference_inputs());
        let s = status(&node);
        assert_eq!(
            quantities(&s.capacity),
            pairs(&[
                ("cpu", "2"),
                ("ephemeral-storage", "264212084Ki"),
                ("hugepages-1Gi", "0"),
                ("hugepages-2Mi", "0"),
                ("memory", "24684084Ki"),
                ("pods", "110"),
            ])
        );
        assert_eq!(
            quantities(&s.allocatable),
            pairs(&[
                ("cpu", "2"),
                ("ephemeral-storage", "243497856212"),
                ("hugepages-1Gi", "0"),
                ("hugepages-2Mi", "0"),
                ("memory", "24581684Ki"),
                ("pods", "110"),
            ])
        );
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.machine_id, "3d1219c7c4c5404aaa1f6d2a48adfda4");
        assert_eq!(info.boot_id, "2ce5c0d8-6426-4a48-ab5a-4318a073de9d");
    }

    #[test]
    fn allocatable_arithmetic() {
        struct Case {
            name: &'static str,
            reservation: AllocatableReservation,
            hugepages_1g: u64,
            pods_per_core: u32,
            want: &'static [(&'static str, &'static str)],
        }
        let reserved = Reserved {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 30,
            pids: 0,
        };
        let cases = [
            Case {
                name: "no reservation, no eviction",
                reservation: AllocatableReservation {
                    eviction_memory_available: None,
                    eviction_nodefs_available: None,
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[
                    ("cpu", "2"),
                    ("ephemeral-storage", "264212084Ki"),
                    ("memory", "24684084Ki"),
                ],
            },
            Case {
                name: "system + kube reserved",
                reservation: AllocatableReservation {
                    system_reserved: reserved,
                    kube_reserved: Reserved {
                        cpu_millis: 100,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[
                    ("cpu", "1400m"),
                    ("ephemeral-storage", "242424114388"),
                    ("memory", "23533108Ki"),
                ],
            },
            Case {
                name: "hugepages come out of memory, pods per core",
                reservation: AllocatableReservation::default(),
                hugepages_1g: 2,
                pods_per_core: 10,
                want: &[
                    ("hugepages-1Gi", "2Gi"),
                    ("memory", "22484532Ki"),
                    ("pods", "20"),
                ],
            },
            Case {
                name: "never negative",
                reservation: AllocatableReservation {
                    system_reserved: Reserved {
                        cpu_millis: 5000,
                        memory_bytes: i64::MAX,
                        ephemeral_storage_bytes: 0,
                        pids: 0,
                    },
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[("cpu", "0"), ("memory", "0")],
            },
        ];
        for case in cases {
            let mut inputs = reference_inputs();
            inputs.reservation = case.reservation;
            inputs.machine.hugepages[1].pages = case.hugepages_1g;
            inputs.pods_per_core = case.pods_per_core;
            let node = apply(machine_info, &inputs);
            let alloc = status(&node).allocatable.as_ref().unwrap();
            for (name, want) in case.want {
                assert_eq!(alloc[*name].0, *want, "{}: {name}", case.name);
            }
        }
    }

    #[test]
    fn device_plugin_resources_count_all_devices_and_allocate_the_healthy_ones() {
        let mut node = Node::default();
        status_mut(&mut node).capacity = Some(
            [
                ("example.com/gone".to_string(), Quantity("2".into())),
                ("example.com/other".to_string(), Quantity("7".into())),
            ]
            .into_iter()
            .collect(),
        );
        let mut inputs = reference_inputs();
        inputs.devices = crate::devicemanager::DeviceCapacity {
            capacity: [("example.com/gpu".to_string(), 3)].into(),
            allocatable: [("example.com/gpu".to_string(), 1)].into(),
            removed: vec!["example.com/gone".to_string()],
        };
        machine_info(&mut node, &inputs);
        let s = status(&node);
        let (cap, alloc) = (
            s.capacity.as_ref().unwrap(),
            s.allocatable.as_ref().unwrap(),
        );
        assert_eq!(cap["example.com/gpu"].0, "3");
        assert_eq!(alloc["example.com/gpu"].0, "1");
        assert_eq!(cap["example.com/gone"].0, "0");
        assert_eq!(alloc["example.com/gone"].0, "0");
        // Set by someone else: kept as it is.
        assert_eq!(alloc["example.com/other"].0, "7");
    }

    #[test]
    fn foreign_capacity_is_kept_and_storage_may_be_unknown() {
        let mut node = Node::default();
        status_mut(&mut node).capacity = Some(
            [("example.com/gpu".to_string(), Quantity("4".into()))]
                .into_iter()
                .collect(),
        );
        let mut inputs = reference_inputs();
        inputs.machine.ephemeral_storage_bytes = None;
        machine_info(&mut node, &inputs);
        let s = status(&node);
        assert_eq!(s.capacity.as_ref().unwrap()["example.com/gpu"].0, "4");
        assert_eq!(s.allocatable.as_ref().unwrap()["example.com/gpu"].0, "4");
        assert!(!s
            .capacity
            .as_ref()
            .unwrap()
            .contains_key("ephemeral-storage"));
    }
}
