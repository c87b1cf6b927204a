//! Flags with no setting of their own: their values are laid over the file configuration
//! (`raw`), where the server reads its address, ports, TLS files, authentication and
//! authorization, the kubelet its QoS cgroup layout, and registration its taints and
//! provider ID.

use std::path::PathBuf;

use super::merger::Merger;
use crate::config::flags::KubeletFlags;
use crate::config::kubelet_config::KubeletConfiguration;

/// Writes each of these flags that was given into `raw`, over the file's value.
pub(super) fn lay_flags_over_raw(
    m: &Merger,
    flags: &mut KubeletFlags,
    raw: &mut KubeletConfiguration,
) {
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
}
