//! Flags with no setting of their own: their values are laid over the file configuration
//! (`raw`), where the server reads its address, ports, TLS files, authentication and
//! authorization, the kubelet its QoS cgroup layout, registration its taints, provider ID
//! and whether to register at all, node status its image count, the certificate manager
//! whether to rotate, and the log manager when.

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
