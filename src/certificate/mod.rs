//! Certificates the kubelet asks the API server for through CertificateSigningRequests
//! (upstream `pkg/kubelet/certificate` and client-go's `util/certificate`):
//!
//! - `bootstrap.rs`: TLS bootstrap. With only a bootstrap-token kubeconfig, get a client
//!   certificate for `system:node:<node>` and write the `--kubeconfig` that uses it, before
//!   anything else talks to the API server.
//! - `manager.rs`: rotation. A thread per certificate (client, and serving with
//!   `serverTLSBootstrap`) renews it at a random point in 70 to 90% of its lifetime and hands
//!   the new pair to whoever uses it (the API client, the kubelet API's TLS), without a restart.
//! - `csr.rs`: the request itself. Make a key, build the PKCS#10 request, create the
//!   CertificateSigningRequest and watch it until it is issued, denied, failed or timed out.
//! - `store.rs`: the files. `<prefix>-<timestamp>.pem` (certificate and key, mode 0600) and
//!   the symlink `<prefix>-current.pem`, switched atomically, in `--cert-dir`.

pub mod bootstrap;
pub mod csr;
pub mod manager;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use crate::api::ApiError;
use crate::util::x509::Validity;

/// Signer of kubelet client certificates (`CN=system:node:<node>`, `O=system:nodes`).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of kubelet serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The group every node's certificate names.
pub const NODES_GROUP: &str = "system:nodes";

/// The user name of a node.
pub fn node_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}

/// A certificate (chain, PEM) with its private key (PEM) and when the leaf is valid.
#[derive(Clone)]
pub struct Pair {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
    /// The leaf's validity.
    pub validity: Validity,
}

impl std::fmt::Debug for Pair {
    /// The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// What can go wrong getting or keeping a certificate; each names the file, request or
/// setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file or an issued certificate held no usable certificate or key.
    #[error("{what}: {why}")]
    Unusable {
        /// The file or request.
        what: String,
        /// What was wrong.
        why: String,
    },
    /// No certificate is stored yet.
    #[error("no certificate in {0}")]
    Missing(PathBuf),
    /// An API call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The signer or an approver refused the request.
    #[error("certificate signing request {name} {verdict}, reason: {reason}, message: {message}")]
    Refused {
        /// The CertificateSigningRequest.
        name: String,
        /// `is denied` or `failed`.
        verdict: &'static str,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The certificate was not issued in time.
    #[error("timed out after {waited:?} waiting for certificate signing request {name} to be issued (is it approved?)")]
    Timeout {
        /// The CertificateSigningRequest.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Stop was asked for while waiting.
    #[error("stopped while waiting for certificate signing request {0}")]
    Stopped(String),
    /// Making a key or a request failed.
    #[error("generating a {what}: {why}")]
    Generate {
        /// `private key`, `certificate signing request`.
        what: &'static str,
        /// The generator's error.
        why: String,
    },
}
