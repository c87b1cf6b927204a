//! The nested types of `KubeletConfiguration` (`authentication`, `authorization`, `logging`,
//! `tracing`, ...), with upstream's camelCase names. Like the top level, every struct rejects
//! unknown fields, and leaf values are `Option` so "unset" stays distinguishable from zero.

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::util::duration::{parse_duration, GoDuration};

/// `authentication`: how requests to the kubelet's HTTPS server are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAuthentication {
    /// `x509`: client certificate authentication.
    pub x509: KubeletX509Authentication,
    /// `webhook`: bearer tokens checked through TokenReview.
    pub webhook: KubeletWebhookAuthentication,
    /// `anonymous`: whether requests without credentials are let through as `system:anonymous`.
    pub anonymous: KubeletAnonymousAuthentication,
}

/// `authentication.x509`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletX509Authentication {
    /// `clientCAFile`: PEM bundle of CAs whose client certificates are accepted.
    #[serde(rename = "clientCAFile", skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// `authentication.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletWebhookAuthentication {
    /// `enabled` (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `cacheTTL`: how long TokenReview results are cached (default 2m).
    #[serde(rename = "cacheTTL", skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<GoDuration>,
}

/// `authentication.anonymous`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAnonymousAuthentication {
    /// `enabled` (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `authorization`: how authenticated requests to the kubelet's server are authorized.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletAuthorization {
    /// `mode`: `AlwaysAllow` or `Webhook` (SubjectAccessReview; the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `webhook`: caching of SubjectAccessReview answers.
    pub webhook: KubeletWebhookAuthorization,
}

/// `authorization.webhook`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletWebhookAuthorization {
    /// `cacheAuthorizedTTL` (default 5m).
    #[serde(rename = "cacheAuthorizedTTL", skip_serializing_if = "Option::is_none")]
    pub cache_authorized_ttl: Option<GoDuration>,
    /// `cacheUnauthorizedTTL` (default 30s).
    #[serde(
        rename = "cacheUnauthorizedTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_unauthorized_ttl: Option<GoDuration>,
}

/// `logging`: component-base `LoggingConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfiguration {
    /// `format`: `text` (default) or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `flushFrequency`: nanoseconds as an integer, or a duration string (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_frequency: Option<TimeOrMetaDuration>,
    /// `verbosity`: klog `-v` level (default 0); `--v` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<u32>,
    /// `vmodule`: per-file verbosity overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmodule: Option<Vec<VModuleItem>>,
    /// `options`: format-specific options (alpha upstream).
    pub options: FormatOptions,
}

/// One `logging.vmodule` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VModuleItem {
    /// `filePattern`: a base file name or glob.
    pub file_pattern: String,
    /// `verbosity` for matching files.
    pub verbosity: u32,
}

/// `logging.options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormatOptions {
    /// `text`: options of the text format.
    pub text: OutputRoutingOptions,
    /// `json`: options of the JSON format.
    pub json: OutputRoutingOptions,
}

/// `logging.options.text` / `logging.options.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutputRoutingOptions {
    /// `splitStream`: errors to stderr, info to stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_stream: Option<bool>,
    /// `infoBufferSize`: a resource quantity such as `"0"` or `"64Ki"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_buffer_size: Option<String>,
}

/// `logging.flushFrequency`, which upstream accepts either as integer nanoseconds or as a
/// duration string, and writes back in the form it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeOrMetaDuration {
    /// The duration.
    pub duration: GoDuration,
    /// Whether it was written as a string (and so is written back as one).
    pub serialize_as_string: bool,
}

impl Serialize for TimeOrMetaDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.serialize_as_string {
            self.duration.serialize(serializer)
        } else {
            serializer.serialize_i64(self.duration.as_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for TimeOrMetaDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimeOrMetaDurationVisitor)
    }
}

/// Integer nanoseconds or a Go duration string.
struct TimeOrMetaDurationVisitor;

impl de::Visitor<'_> for TimeOrMetaDurationVisitor {
    type Value = TimeOrMetaDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("integer nanoseconds or a Go duration string such as \"5s\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(TimeOrMetaDuration {
            duration: GoDuration::from_nanos(v),
            serialize_as_string: false,
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let nanos = i64::try_from(v).map_err(|_| E::custom("duration out of range"))?;
        self.visit_i64(nanos)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(TimeOrMetaDuration {
            duration: parse_duration(v).map_err(E::custom)?,
            serialize_as_string: true,
        })
    }
}

/// `tracing`: OpenTelemetry export.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingConfiguration {
    /// `endpoint` of the OTLP gRPC collector (upstream default localhost:4317).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `samplingRatePerMillion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_rate_per_million: Option<i32>,
}

/// `memorySwap`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MemorySwapConfiguration {
    /// `swapBehavior`: `""`, `NoSwap` or `LimitedSwap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_behavior: Option<String>,
}

/// `crashLoopBackOff`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CrashLoopBackOffConfig {
    /// `maxContainerRestartPeriod`: cap of the restart back-off, 1s to 300s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_container_restart_period: Option<GoDuration>,
}

/// One `shutdownGracePeriodByPodPriority` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ShutdownGracePeriodByPodPriority {
    /// `priority`: lower bound of the priority range this entry covers.
    pub priority: i32,
    /// `shutdownGracePeriodSeconds` for pods in that range.
    pub shutdown_grace_period_seconds: i64,
}

/// One `reservedMemory` entry: memory kept from the memory manager on a NUMA node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryReservation {
    /// `numaNode`.
    pub numa_node: i32,
    /// `limits`: resource name to quantity (`memory: 1Gi`).
    pub limits: BTreeMap<String, String>,
}

/// One `registerWithTaints` entry (core/v1 `Taint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    /// `key`.
    pub key: String,
    /// `value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `effect`: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// `timeAdded`: must stay unset in the kubelet's configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

/// `userNamespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UserNamespaces {
    /// `idsPerPod`: UIDs/GIDs mapped per pod, a multiple of 65536 (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_per_pod: Option<i64>,
}
