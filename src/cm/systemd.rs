//! The systemd driver's side of the cgroup manager: a cgroup is a slice unit that systemd
//! creates (`StartTransientUnit`), limits (`SetUnitProperties`) and removes (`StopUnit`),
//! with the properties libcontainer gives the upstream kubelet's slices; and where systemd's
//! tree starts in each hierarchy, so the kubelet finds the slices' directories.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::dbus::{DbusError, Property, Systemd, Value};
use super::{CgroupLimits, CgroupName, CgroupVersion};
use crate::resources::{shares_to_weight, CPU_PERIOD_US};

/// `CPUQuotaPeriodUSec` exists from this systemd version on.
const CPU_QUOTA_PERIOD_SINCE: u32 = 242;

/// Where systemd's tree starts in each hierarchy: the cgroup of PID 1 (systemd) less its
/// `init.scope`, as libcontainer computes it. `/` on a host; a sub-tree when systemd runs in
/// a container without a cgroup namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SystemdRoots {
    /// v1 controller (or `""` for the v2 tree) → path.
    roots: HashMap<String, String>,
}

impl SystemdRoots {
    /// From `/proc/1/cgroup`.
    pub(super) fn read(path: &Path, version: CgroupVersion) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?, version))
    }

    pub(super) fn parse(text: &str, version: CgroupVersion) -> Self {
        let mut roots = HashMap::new();
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_end_matches('/');
            let path = path.strip_suffix("/init.scope").unwrap_or(path);
            let path = if path.is_empty() { "/" } else { path };
            match version {
                CgroupVersion::V2 if controllers.is_empty() => {
                    roots.insert(String::new(), path.to_string());
                }
                CgroupVersion::V1 if !controllers.is_empty() => {
                    for c in controllers.split(',') {
                        roots.insert(c.to_string(), path.to_string());
                    }
                }
                _ => {}
            }
        }
        SystemdRoots { roots }
    }

    /// The root in the hierarchy of `controller` (`None`: the v2 tree).
    pub(super) fn root(&self, controller: Option<&str>) -> &str {
        self.roots
            .get(controller.unwrap_or(""))
            .map_or("/", String::as_str)
    }
}

/// The slice unit of a cgroup and its parent slice (`-.slice` at the top), as the upstream
/// kubelet hands them to libcontainer.
pub(super) fn unit_and_parent(name: &CgroupName) -> (String, String) {
    let path = name.to_systemd();
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
    let parent = match dir.rsplit('/').next() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => "-.slice".to_string(),
    };
    (base.to_string(), parent)
}

/// libcontainer's `CPUQuotaPerSecUSec` for a quota: µs of CPU per second, rounded up to
/// whole 10 ms as systemd stores it.
pub(super) fn quota_per_sec_usec(quota: i64, period: i64) -> u64 {
    let per_sec = u64::try_from(quota.max(0)).unwrap_or(0) * 1_000_000
        / u64::try_from(period.max(1)).unwrap_or(1);
    per_sec.div_ceil(10_000) * 10_000
}

/// The unit properties that carry `limits` (libcontainer's `genV1ResourcesProperties` and
/// `genV2ResourcesProperties`).
pub(super) fn resource_properties(
    limits: &CgroupLimits,
    version: CgroupVersion,
    systemd_version: u32,
) -> Vec<Property> {
    let mut props = Vec::new();
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    if let Some(bytes) = limits.memory_bytes {
        let name = match version {
            CgroupVersion::V1 => "MemoryLimit",
            CgroupVersion::V2 => "MemoryMax",
        };
        props.push(Property::u64(name, u(bytes)));
    }
    if let Some(shares) = limits.cpu_shares {
        props.push(match version {
            CgroupVersion::V1 => Property::u64("CPUShares", u(shares)),
            CgroupVersion::V2 => Property::u64("CPUWeight", u(shares_to_weight(shares))),
        });
    }
    if let Some(quota) = limits.cpu_quota {
        if systemd_version >= CPU_QUOTA_PERIOD_SINCE {
            props.push(Property::u64("CPUQuotaPeriodUSec", u(CPU_PERIOD_US)));
        }
        props.push(Property::u64(
            "CPUQuotaPerSecUSec",
            quota_per_sec_usec(quota, CPU_PERIOD_US),
        ));
    }
    if let Some(pids) = limits.pids {
        props.push(Property::u64("TasksMax", u(pids)));
    }
    if let (Some(min), CgroupVersion::V2) = (limits.memory_min, version) {
        props.push(Property::u64("MemoryMin", u(min)));
    }
    props
}

/// Slices over one connection to systemd.
#[derive(Debug)]
pub(super) struct Slices {
    bus: Systemd,
    pub(super) roots: SystemdRoots,
}

impl Slices {
    pub(super) fn new(bus: Systemd, roots: SystemdRoots) -> Self {
        Slices { bus, roots }
    }

    /// Creates the slice of `name` with `limits` (adopting it when systemd has it already)
    /// and sets its limits.
    pub(super) fn create(
        &self,
        name: &CgroupName,
        limits: &CgroupLimits,
        version: CgroupVersion,
    ) -> Result<(), DbusError> {
        let (unit, parent) = unit_and_parent(name);
        let resources = resource_properties(limits, version, self.bus.version());
        let io_accounting = match version {
            CgroupVersion::V1 => "BlockIOAccounting",
            CgroupVersion::V2 => "IOAccounting",
        };
        let mut props = vec![
            Property {
                name: "Description",
                value: Value::Str(format!("libcontainer container {unit}")),
            },
            // A slice's parent follows from its name; Wants= orders it after the parent.
            Property {
                name: "Wants",
                value: Value::Strs(vec![parent]),
            },
            Property::bool("MemoryAccounting", true),
            Property::bool("CPUAccounting", true),
            Property::bool(io_accounting, true),
            Property::bool("TasksAccounting", true),
            Property::bool("DefaultDependencies", false),
        ];
        props.extend(resources.iter().cloned());
        let created = match self.bus.start_transient_unit(&unit, &props) {
            Err(DbusError::Job { result, .. }) if result == "failed" => {
                // A failed unit of that name blocks the start: clear it and try once more.
                self.bus.reset_failed_unit(&unit)?;
                self.bus.start_transient_unit(&unit, &props)?
            }
            other => other?,
        };
        if created {
            log::debug!("systemd created {unit}");
        } else {
            log::debug!("systemd has {unit} already; updating its limits");
        }
        if !resources.is_empty() {
            self.bus.set_unit_properties(&unit, &resources)?;
        }
        Ok(())
    }

    /// Sets `limits` on the slice of `name`.
    pub(super) fn update(
        &self,
        name: &CgroupName,
        limits: &CgroupLimits,
        version: CgroupVersion,
    ) -> Result<(), DbusError> {
        let (unit, _) = unit_and_parent(name);
        let resources = resource_properties(limits, version, self.bus.version());
        if resources.is_empty() {
            return Ok(());
        }
        self.bus.set_unit_properties(&unit, &resources)
    }

    /// Stops the slice of `name`.
    pub(super) fn stop(&self, name: &CgroupName) -> Result<(), DbusError> {
        let (unit, _) = unit_and_parent(name);
        self.bus.stop_unit(&unit)
    }
}
