//! Flags with no setting of their own: their values are laid over the file configuration
//! (`raw`), where the server reads its address, ports, TLS files, authentication and
//! authorization, the kubelet its QoS cgroup layout, registration its taints, provider ID
//! and whether to register at all, node status its image count, the certificate manager
//! whether to rotate, the log manager when, and the eviction manager its thresholds.

use std::path::PathBuf;

use super::merger::Merger;
use crate::config::error::ConfigError;
use crate::config::flags::KubeletFlags;
use crate::config::kubelet_config::validate::check_range;
use crate::config::kubelet_config::KubeletConfiguration;

/// Writes each of these flags that was given into `raw`, over the file's value; a value out
/// of its field's range is an error naming the flag.
pub(super) fn lay_flags_over_raw(
    m: &Merger,
    flags: &mut KubeletFlags,
    raw: &mut KubeletConfiguration,
) -> Result<(), ConfigError> {
    m.pick(
        flags.cgroups_per_qos.take(),
        "--cgroups-per-qos",
        &mut raw.cgroups_per_qos,
        "cgroupsPerQOS",
    );
    m.pick(
        flags.cgroup_root.take(),
        "--cgroup-root",
        &mut raw.cgroup_root,
        "cgroupRoot",
    );
    m.pick(
        flags.address.take(),
        "--address",
        &mut raw.address,
        "address",
    );
    m.pick(flags.port.take(), "--port", &mut raw.port, "port");
    m.pick(
        flags.register_with_taints.pop().map(|list| list.0),
        "--register-with-taints",
        &mut raw.register_with_taints,
        "registerWithTaints",
    );
    m.pick(
        flags.provider_id.take(),
        "--provider-id",
        &mut raw.provider_id,
        "providerID",
    );
    if let Some((images, origin)) = m.pick(
        flags.node_status_max_images.take(),
        "--node-status-max-images",
        &mut raw.node_status_max_images,
        "nodeStatusMaxImages",
    ) {
        check_range(origin, i64::from(images), -1, i64::from(i32::MAX))?;
    }
    if let Some((files, origin)) = m.pick(
        flags.container_log_max_files.take(),
        "--container-log-max-files",
        &mut raw.container_log_max_files,
        "containerLogMaxFiles",
    ) {
        check_range(origin, i64::from(files), 2, i64::from(i32::MAX))?;
    }
    if let Some((size, origin)) = m.pick(
        flags.container_log_max_size.take(),
        "--container-log-max-size",
        &mut raw.container_log_max_size,
        "containerLogMaxSize",
    ) {
        match crate::quantity::parse_value(&size) {
            Ok(bytes) if bytes >= 0 => {}
            Ok(_) => return Err(origin.invalid(&size, "must not be negative")),
            Err(e) => return Err(origin.invalid(&size, e.to_string())),
        }
    }
    let mut eviction_origins = std::collections::BTreeMap::new();
    let picks = [
        (
            m.pick(
                flags.eviction_hard.take().map(|m| m.0),
                "--eviction-hard",
                &mut raw.eviction_hard,
                "evictionHard",
            ),
            "evictionHard",
        ),
        (
            m.pick(
                flags.eviction_soft.take().map(|m| m.0),
                "--eviction-soft",
                &mut raw.eviction_soft,
                "evictionSoft",
            ),
            "evictionSoft",
        ),
        (
            m.pick(
                flags.eviction_soft_grace_period.take().map(|m| m.0),
                "--eviction-soft-grace-period",
                &mut raw.eviction_soft_grace_period,
                "evictionSoftGracePeriod",
            ),
            "evictionSoftGracePeriod",
        ),
        (
            m.pick(
                flags.eviction_minimum_reclaim.take().map(|m| m.0),
                "--eviction-minimum-reclaim",
                &mut raw.eviction_minimum_reclaim,
                "evictionMinimumReclaim",
            ),
            "evictionMinimumReclaim",
        ),
    ];
    for (picked, field) in picks {
        if let Some((_, origin)) = picked {
            eviction_origins.insert(field, origin);
        }
    }
    m.pick(
        flags.eviction_pressure_transition_period.take(),
        "--eviction-pressure-transition-period",
        &mut raw.eviction_pressure_transition_period,
        "evictionPressureTransitionPeriod",
    );
    m.pick(
        flags.eviction_max_pod_grace_period.take(),
        "--eviction-max-pod-grace-period",
        &mut raw.eviction_max_pod_grace_period,
        "evictionMaxPodGracePeriod",
    );
    m.pick(
        flags.local_storage_capacity_isolation.take(),
        "--local-storage-capacity-isolation",
        &mut raw.local_storage_capacity_isolation,
        "localStorageCapacityIsolation",
    );
    // Thresholds relate several settings (a soft threshold needs its grace period), so they
    // are checked once the flags are in; the error names the flag or file that set the
    // faulty one.
    if let Err(e) = crate::eviction::EvictionConfig::from_config(raw) {
        let origin = eviction_origins
            .remove(e.setting())
            .unwrap_or_else(|| m.file_origin(e.setting()));
        return Err(origin.invalid(e.signal(), e.to_string()));
    }
    m.pick(
        flags.register_node.take(),
        "--register-node",
        &mut raw.register_node,
        "registerNode",
    );
    m.pick(
        flags.rotate_certificates.take(),
        "--rotate-certificates",
        &mut raw.rotate_certificates,
        "rotateCertificates",
    );
    m.pick(
        flags.read_only_port.take(),
        "--read-only-port",
        &mut raw.read_only_port,
        "readOnlyPort",
    );
    let path_text = |p: Option<PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
    m.pick(
        path_text(flags.tls_cert_file.take()),
        "--tls-cert-file",
        &mut raw.tls_cert_file,
        "tlsCertFile",
    );
    m.pick(
        path_text(flags.tls_private_key_file.take()),
        "--tls-private-key-file",
        &mut raw.tls_private_key_file,
        "tlsPrivateKeyFile",
    );
    m.pick(
        path_text(flags.client_ca_file.take()),
        "--client-ca-file",
        &mut raw.authentication.x509.client_ca_file,
        "authentication.x509.clientCAFile",
    );
    m.pick(
        flags.anonymous_auth.take(),
        "--anonymous-auth",
        &mut raw.authentication.anonymous.enabled,
        "authentication.anonymous.enabled",
    );
    m.pick(
        flags.authentication_token_webhook.take(),
        "--authentication-token-webhook",
        &mut raw.authentication.webhook.enabled,
        "authentication.webhook.enabled",
    );
    m.pick(
        flags.authorization_mode.take(),
        "--authorization-mode",
        &mut raw.authorization.mode,
        "authorization.mode",
    );
    Ok(())
}
