//! Client-side configuration for talking to the double: a kubeconfig file with inline
//! credentials (for kubectl and the kubelet) and a rustls `ClientConfig` (for tests using
//! reqwest directly).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::tls::{Identity, Pki};

/// A kubeconfig with one cluster, user and context (all named `apiserver-double`, the user
/// named after its certificate's CN), credentials inline as base64 `*-data` fields.
pub fn render(server_url: &str, ca_pem: &str, identity: &Identity, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: apiserver-double
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: {user:?}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: apiserver-double
  context:
    cluster: apiserver-double
    user: {user:?}
    namespace: default
current-context: apiserver-double
preferences: {{}}
",
        ca = base64(ca_pem.as_bytes()),
        cert = base64(identity.cert_pem.as_bytes()),
        key = base64(identity.key_pem.as_bytes()),
    )
}

/// A kubeconfig whose user authenticates with a bearer `token` (a bootstrap token).
pub fn render_token(server_url: &str, ca_pem: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: tls-bootstrap-token-user
  user:
    token: {token}
contexts:
- name: tls-bootstrap-token-user@kubernetes
  context:
    cluster: kubernetes
    user: tls-bootstrap-token-user
current-context: tls-bootstrap-token-user@kubernetes
",
        ca = base64(ca_pem.as_bytes()),
    )
}

/// Standard base64 with padding (RFC 4648), as kubeconfig `*-data` fields expect.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let bytes = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let bits = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A rustls client config with the ring provider that trusts the double's CA and presents
/// `identity` (or no client certificate).
pub fn client_config(pki: &Pki, identity: Option<&Identity>) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(pki.ca_der())
        .expect("the CA certificate is valid");
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let cert = CertificateDer::from_pem_slice(identity.cert_pem.as_bytes())
                .expect("issued certificate PEM");
            let key =
                PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("issued key PEM");
            builder
                .with_client_auth_cert(vec![cert], key)
                .expect("issued certificate and key match")
        }
    }
}
