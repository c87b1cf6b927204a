//! Eviction signals and thresholds (upstream `eviction/api/types.go` and
//! `ParseThresholdConfig`): what the `evictionHard`, `evictionSoft`,
//! `evictionSoftGracePeriod` and `evictionMinimumReclaim` settings mean, parsed once at
//! start-up into a list the manager checks every pass.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::quantity::{QuantityError, ThresholdValue};

/// A resource the kubelet watches (upstream `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`: capacity minus the node's working set.
    MemoryAvailable,
    /// `nodefs.available`: free bytes of the root dir's filesystem.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: free inodes there.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes of the runtime's image filesystem.
    ImageFsAvailable,
    /// `imagefs.inodesFree`: free inodes there.
    ImageFsInodesFree,
    /// `pid.available`: process ids left before the kernel's limit.
    PidAvailable,
}

/// A node condition eviction reports (and admission reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeCondition {
    /// `MemoryPressure`.
    MemoryPressure,
    /// `DiskPressure`.
    DiskPressure,
    /// `PIDPressure`.
    PidPressure,
}

impl NodeCondition {
    /// The condition's type in the Node's status.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::MemoryPressure => "MemoryPressure",
            NodeCondition::DiskPressure => "DiskPressure",
            NodeCondition::PidPressure => "PIDPressure",
        }
    }
}

impl Signal {
    /// Every signal, in the order upstream reclaims them when several are met: memory
    /// first, then disk, then process ids.
    pub const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The signal's name in configuration (`memory.available`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The signal named `name`, if rkubelet implements it.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The node condition a met threshold of this signal sets.
    pub fn condition(self) -> NodeCondition {
        match self {
            Signal::MemoryAvailable => NodeCondition::MemoryPressure,
            Signal::PidAvailable => NodeCondition::PidPressure,
            _ => NodeCondition::DiskPressure,
        }
    }

    /// The resource an eviction for this signal reclaims, as upstream names it in messages
    /// (`memory`, `ephemeral-storage`, `inodes`, `pids`).
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// Whether the signal counts bytes (printed as `BinarySI`) rather than a number of
    /// things (inodes, pids; printed as `DecimalSI`).
    pub fn counts_bytes(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::NodeFsAvailable | Signal::ImageFsAvailable
        )
    }
}

/// One threshold: the signal is met when what is available falls below `value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// The level (`100Mi` or `10%` of capacity).
    pub value: ThresholdValue,
    /// How long the threshold must hold before pods are evicted; zero for a hard threshold.
    pub grace_period: Duration,
    /// Once met, the threshold stays met until this much more than `value` is available.
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    /// A hard threshold: evict at once, with no pod grace period.
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }

    /// The threshold in the signal's unit for a resource of `capacity` (upstream
    /// `GetThresholdQuantity`).
    pub fn quantity(&self, capacity: i64) -> i64 {
        self.value.amount(capacity)
    }

    /// The minimum reclaim in the signal's unit (zero without one).
    pub fn min_reclaim_quantity(&self, capacity: i64) -> i64 {
        self.min_reclaim.map_or(0, |m| m.amount(capacity))
    }
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    /// A signal rkubelet does not know or does not implement.
    #[error("{setting}: unsupported eviction signal {signal}")]
    UnsupportedSignal {
        /// `evictionHard`, `evictionSoft`, ...
        setting: &'static str,
        /// The key given.
        signal: String,
    },
    /// A value that is not a quantity or a percentage.
    #[error("{setting}: {signal}: {source}")]
    Quantity {
        /// The setting.
        setting: &'static str,
        /// The signal whose value is wrong.
        signal: String,
        /// Why.
        source: QuantityError,
    },
    /// A negative quantity or a percentage outside 0..=100.
    #[error("{setting}: {signal}: {reason}")]
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// The signal.
        signal: String,
        /// Why.
        reason: String,
    },
    /// A soft threshold without a grace period, or a grace period that does not parse.
    #[error("{setting}: {reason}")]
    GracePeriod {
        /// `evictionSoft` (no grace period) or `evictionSoftGracePeriod`.
        setting: &'static str,
        /// The signal.
        signal: String,
        /// Why.
        reason: String,
    },
}

impl ThresholdError {
    /// The setting (`evictionHard`, ...) that is wrong.
    pub fn setting(&self) -> &'static str {
        match self {
            ThresholdError::UnsupportedSignal { setting, .. }
            | ThresholdError::Quantity { setting, .. }
            | ThresholdError::OutOfRange { setting, .. }
            | ThresholdError::GracePeriod { setting, .. } => setting,
        }
    }

    /// The signal whose entry is wrong.
    pub fn signal(&self) -> &str {
        match self {
            ThresholdError::UnsupportedSignal { signal, .. }
            | ThresholdError::Quantity { signal, .. }
            | ThresholdError::OutOfRange { signal, .. }
            | ThresholdError::GracePeriod { signal, .. } => signal,
        }
    }
}

/// The eviction settings as given in the configuration (after flags and defaults).
#[derive(Debug, Clone, Default)]
pub struct ThresholdSettings<'a> {
    /// `evictionHard`.
    pub hard: Option<&'a BTreeMap<String, String>>,
    /// `evictionSoft`.
    pub soft: Option<&'a BTreeMap<String, String>>,
    /// `evictionSoftGracePeriod`.
    pub soft_grace_period: Option<&'a BTreeMap<String, String>>,
    /// `evictionMinimumReclaim`.
    pub minimum_reclaim: Option<&'a BTreeMap<String, String>>,
    /// `mergeDefaultEvictionSettings`: signals missing from `evictionHard` keep their
    /// defaults instead of being off.
    pub merge_defaults: bool,
}

/// Upstream's default `evictionHard` on Linux.
pub const DEFAULT_EVICTION_HARD: [(&str, &str); 5] = [
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// The default `evictionHard` as a map.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    DEFAULT_EVICTION_HARD
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Parses one threshold value: `None` for `0%` or `100%` (upstream treats both as "no
/// threshold", the way to switch a default off).
fn parse_value(
    setting: &'static str,
    signal: &str,
    text: &str,
) -> Result<Option<ThresholdValue>, ThresholdError> {
    let value = ThresholdValue::parse(text).map_err(|source| ThresholdError::Quantity {
        setting,
        signal: signal.to_string(),
        source,
    })?;
    let out_of_range = |reason: String| ThresholdError::OutOfRange {
        setting,
        signal: signal.to_string(),
        reason,
    };
    match value {
        ThresholdValue::Percentage(p) if p < 0.0 => Err(out_of_range(format!(
            "eviction percentage threshold {signal} must be >= 0%: {text}"
        ))),
        ThresholdValue::Percentage(p) if p > 1.0 => Err(out_of_range(format!(
            "eviction percentage threshold {signal} must be <= 100%: {text}"
        ))),
        ThresholdValue::Percentage(p) if p == 0.0 || p == 1.0 => Ok(None),
        ThresholdValue::Quantity(q) if q <= 0 => Err(out_of_range(format!(
            "eviction threshold {signal} must be positive: {text}"
        ))),
        other => Ok(Some(other)),
    }
}

fn signal_of(setting: &'static str, name: &str) -> Result<Signal, ThresholdError> {
    Signal::parse(name).ok_or_else(|| ThresholdError::UnsupportedSignal {
        setting,
        signal: name.to_string(),
    })
}

/// Parses the settings into thresholds (upstream `ParseThresholdConfig`), hard ones first.
/// A soft threshold needs a grace period; minimum reclaims attach to every threshold of
/// their signal.
pub fn parse_thresholds(
    settings: &ThresholdSettings<'_>,
) -> Result<Vec<Threshold>, ThresholdError> {
    let defaults = default_eviction_hard();
    let hard = match settings.hard {
        None => defaults,
        Some(given) if settings.merge_defaults => {
            let mut merged = defaults;
            merged.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged
        }
        Some(given) => given.clone(),
    };
    let mut reclaim: BTreeMap<Signal, ThresholdValue> = BTreeMap::new();
    for (name, text) in settings.minimum_reclaim.into_iter().flatten() {
        let signal = signal_of("evictionMinimumReclaim", name)?;
        let value = ThresholdValue::parse(text).map_err(|source| ThresholdError::Quantity {
            setting: "evictionMinimumReclaim",
            signal: name.clone(),
            source,
        })?;
        let reason = match value {
            ThresholdValue::Percentage(p) if p <= 0.0 => Some(format!(
                "eviction percentage minimum reclaim {name} must be positive: {text}"
            )),
            ThresholdValue::Quantity(q) if q < 0 => Some(format!(
                "negative eviction minimum reclaim specified for {name}"
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(ThresholdError::OutOfRange {
                setting: "evictionMinimumReclaim",
                signal: name.clone(),
                reason,
            });
        }
        reclaim.insert(signal, value);
    }
    let mut out = Vec::new();
    for (name, text) in &hard {
        let signal = signal_of("evictionHard", name)?;
        if let Some(value) = parse_value("evictionHard", name, text)? {
            out.push(Threshold {
                signal,
                value,
                grace_period: Duration::ZERO,
                min_reclaim: reclaim.get(&signal).copied(),
            });
        }
    }
    let mut grace: BTreeMap<Signal, Duration> = BTreeMap::new();
    for (name, text) in settings.soft_grace_period.into_iter().flatten() {
        let signal = signal_of("evictionSoftGracePeriod", name)?;
        let period = crate::util::duration::parse_duration(text).map_err(|e| {
            ThresholdError::GracePeriod {
                setting: "evictionSoftGracePeriod",
                signal: name.clone(),
                reason: format!("{name}: {e}"),
            }
        })?;
        let Some(period) = period.to_std().filter(|p| !p.is_zero()) else {
            return Err(ThresholdError::GracePeriod {
                setting: "evictionSoftGracePeriod",
                signal: name.clone(),
                reason: format!(
                    "invalid eviction grace period specified: {text}, must be a positive value"
                ),
            });
        };
        grace.insert(signal, period);
    }
    for (name, text) in settings.soft.into_iter().flatten() {
        let signal = signal_of("evictionSoft", name)?;
        let Some(value) = parse_value("evictionSoft", name, text)? else {
            continue;
        };
        let Some(&grace_period) = grace.get(&signal) else {
            return Err(ThresholdError::GracePeriod {
                setting: "evictionSoft",
                signal: name.clone(),
                reason: format!(
                    "grace period must be specified for the soft eviction threshold {name}"
                ),
            });
        };
        out.push(Threshold {
            signal,
            value,
            grace_period,
            min_reclaim: reclaim.get(&signal).copied(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_settings_give_the_default_hard_thresholds() {
        let t = parse_thresholds(&ThresholdSettings::default()).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.signal.as_str()).collect();
        assert_eq!(
            names,
            [
                "imagefs.available",
                "imagefs.inodesFree",
                "memory.available",
                "nodefs.available",
                "nodefs.inodesFree"
            ]
        );
        assert!(t.iter().all(Threshold::is_hard));
        let memory = t
            .iter()
            .find(|t| t.signal == Signal::MemoryAvailable)
            .unwrap();
        assert_eq!(memory.quantity(1 << 30), 100 << 20);
        let nodefs = t
            .iter()
            .find(|t| t.signal == Signal::NodeFsAvailable)
            .unwrap();
        assert_eq!(nodefs.quantity(1000), 100);
    }

    #[test]
    fn a_partial_eviction_hard_replaces_the_defaults_unless_merged() {
        let given = map(&[("memory.available", "1Gi")]);
        let only = parse_thresholds(&ThresholdSettings {
            hard: Some(&given),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].value, ThresholdValue::Quantity(1 << 30));
        let merged = parse_thresholds(&ThresholdSettings {
            hard: Some(&given),
            merge_defaults: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(merged.len(), 5);
        let memory = merged
            .iter()
            .find(|t| t.signal == Signal::MemoryAvailable)
            .unwrap();
        assert_eq!(memory.value, ThresholdValue::Quantity(1 << 30));
    }

    #[test]
    fn zero_and_full_percentages_switch_a_threshold_off() {
        let given = map(&[("nodefs.available", "0%"), ("imagefs.available", "100%")]);
        let t = parse_thresholds(&ThresholdSettings {
            hard: Some(&given),
            ..Default::default()
        })
        .unwrap();
        assert!(t.is_empty(), "{t:?}");
    }

    #[test]
    fn soft_thresholds_need_a_grace_period_and_take_minimum_reclaims() {
        let hard = map(&[("memory.available", "100Mi")]);
        let soft = map(&[("memory.available", "300Mi")]);
        let err = parse_thresholds(&ThresholdSettings {
            hard: Some(&hard),
            soft: Some(&soft),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("grace period must be specified"),
            "{err}"
        );
        let grace = map(&[("memory.available", "1m30s")]);
        let reclaim = map(&[("memory.available", "50Mi")]);
        let t = parse_thresholds(&ThresholdSettings {
            hard: Some(&hard),
            soft: Some(&soft),
            soft_grace_period: Some(&grace),
            minimum_reclaim: Some(&reclaim),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].is_hard());
        assert_eq!(t[1].grace_period, Duration::from_secs(90));
        assert!(t
            .iter()
            .all(|t| t.min_reclaim == Some(ThresholdValue::Quantity(50 << 20))));
    }

    #[test]
    fn bad_settings_name_the_setting_and_signal() {
        let cases = [
            (
                map(&[("memory.free", "1Gi")]),
                "evictionHard: unsupported eviction signal memory.free",
            ),
            (
                map(&[("memory.available", "lots")]),
                "evictionHard: memory.available:",
            ),
            (map(&[("nodefs.available", "120%")]), "must be <= 100%"),
            (map(&[("nodefs.available", "-5%")]), "must be >= 0%"),
            (map(&[("memory.available", "-1Gi")]), "must be positive"),
            (map(&[("memory.available", "0")]), "must be positive"),
        ];
        for (given, want) in cases {
            let err = parse_thresholds(&ThresholdSettings {
                hard: Some(&given),
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }
}
