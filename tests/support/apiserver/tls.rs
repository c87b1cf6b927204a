//! The double's PKI, made fresh at start-up with `rcgen`: a CA, a serving certificate for
//! 127.0.0.1 and localhost, and client certificates issued on demand (the CN is the user name,
//! `system:node:<name>` for kubelets). The rustls server config verifies any presented client
//! certificate against the CA; requests without one are let through TLS and answered 401 by
//! the router unless they carry the configured bearer token, as kube-apiserver does.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// A boxed set-up error (certificate generation or TLS configuration).
pub type SetupError = Box<dyn Error + Send + Sync>;

/// A client certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate, signed by the double's CA.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// The CA and the certificates issued from it.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    server_cert: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    /// Issued client certificates (DER) to their CN: the user name of a connection, found
    /// without parsing X.509 since only this CA's certificates pass the handshake.
    users: Mutex<HashMap<Vec<u8>, String>>,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
}

impl Pki {
    /// A new CA and serving certificate.
    pub fn generate() -> Result<Pki, SetupError> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rkubelet-test-apiserver-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut server_params);
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;
        Ok(Pki {
            ca,
            server_cert: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
            users: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The CA certificate, DER (for a client's root store).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// Issues a client certificate for user `cn` (organization `system:nodes` for
    /// `system:node:*` users, `system:masters` otherwise).
    pub fn issue_client(&self, cn: &str) -> Result<Identity, SetupError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let organization = if cn.starts_with("system:node:") {
            "system:nodes"
        } else {
            "system:masters"
        };
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cert.der().to_vec(), cn.to_string());
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a checked certificate request (see `csr.rs`) for `ttl` from now: the PEM
    /// certificate. Client certificates authenticate as their CN from then on.
    pub fn sign_csr(
        &self,
        parsed: super::csr::Parsed,
        signer: &str,
        ttl: std::time::Duration,
    ) -> Result<String, SetupError> {
        let (cn, params) = parsed.into_params(signer, ttl);
        let cert = params.signed_by(&self.ca)?;
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cert.der().to_vec(), cn);
        Ok(cert.pem())
    }

    /// The user name of a verified client certificate.
    pub fn user_of(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(cert.as_ref()).cloned()
    }

    /// The rustls server configuration (ring provider, HTTP/1.1 ALPN, optional client
    /// certificates verified against the CA).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_cert.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
