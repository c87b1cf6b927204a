//! TLS for the REST client: a rustls 0.23 client configuration built from the kubeconfig's
//! CA, client certificate and key, `tls-server-name` and `insecure-skip-tls-verify`, always on
//! the ring provider (so it works whether or not `main` installed a process default). With no
//! CA and verification on, reqwest's own set-up with the platform's roots is used instead.

use std::sync::Arc;

use reqwest::blocking::ClientBuilder;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::kubeconfig::RestConfig;
use super::ApiError;
use crate::util::tls::AcceptAnyServerCert;

/// Sets up TLS on `builder` for `config`.
pub(crate) fn configure(
    builder: ClientBuilder,
    config: &RestConfig,
) -> Result<ClientBuilder, ApiError> {
    if let Some(tls) = tls_config(config)? {
        return Ok(builder.tls_backend_preconfigured(tls));
    }
    // reqwest's own TLS set-up (platform roots) needs a process default provider.
    if CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let (Some(cert), Some(key)) = (&config.client_cert_pem, &config.client_key_pem) else {
        return Ok(builder);
    };
    let mut pem = cert.clone();
    pem.push(b'\n');
    pem.extend_from_slice(key);
    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
        ApiError::Config(format!(
            "{}: client certificate and key: {e}",
            config.server
        ))
    })?;
    Ok(builder.identity(identity))
}

/// The rustls configuration for `config`, or `None` to let reqwest set up TLS with the
/// platform's roots (no CA configured and verification on).
fn tls_config(config: &RestConfig) -> Result<Option<rustls::ClientConfig>, ApiError> {
    let cfg_err = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::Config(format!("{}: {what}: {e}", config.server))
    };
    if config.ca_pem.is_none() && !config.insecure_skip_tls_verify {
        if config.tls_server_name.is_some() {
            let e = "needs certificate-authority or certificate-authority-data";
            return Err(cfg_err("tls-server-name", &e));
        }
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err("TLS versions", &e))?;
    let builder = if config.insecure_skip_tls_verify {
        log::warn!(
            "{}: insecure-skip-tls-verify is set: the server's certificate is not checked",
            config.server
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider.clone())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(config.ca_pem.as_deref().unwrap_or_default()) {
            let cert = cert.map_err(|e| cfg_err("certificate authority", &e))?;
            roots
                .add(cert)
                .map_err(|e| cfg_err("certificate authority", &e))?;
        }
        if roots.is_empty() {
            return Err(cfg_err(
                "certificate authority",
                &"no PEM certificate found",
            ));
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| cfg_err("certificate authority", &e))?;
        match &config.tls_server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| cfg_err("tls-server-name", &e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(FixedServerName {
                        inner: verifier,
                        name,
                    }))
            }
            None => builder.with_webpki_verifier(verifier),
        }
    };
    let tls = match (&config.client_cert_pem, &config.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cfg_err("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| cfg_err("client key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cfg_err("client certificate", &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(tls))
}

/// Verifies the server certificate against `tls-server-name` instead of the URL's host
/// (e.g. a server reached by IP whose certificate names `kubernetes`).
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A CA and a leaf certificate for `DNS:kubernetes` (server and client auth), valid
    //! 2000-2100, made once with the openssl command line for these tests.
    pub(crate) const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBaTCCAQ+gAwIBAgIBATAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBya3ViZWxl
dC10ZXN0LWNhMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAbMRkw
FwYDVQQDDBBya3ViZWxldC10ZXN0LWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEQGEIMtrUMiPcvnVNFeRbrtqWlNnp7EbJ9Df4r3XeRttDdJK3ZoFBpRTs2c4p
Yei3WWuLPQ+cHvyUiu5b3lUpdaNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAgQwHQYDVR0OBBYEFOafRPCYb5mgkUsscBvm2R83r/ffMAoGCCqGSM49
BAMCA0gAMEUCIGZtXxCO+3q2DCjn5WKG66nvEK9U5qTOlw1hMep12LW3AiEAvcub
rZDKqwHbyThzXBk1WPIhMGorYTSvInug2y84rN4=
-----END CERTIFICATE-----
";
    pub(crate) const LEAF_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBtjCCAVygAwIBAgIBAjAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBya3ViZWxl
dC10ZXN0LWNhMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAVMRMw
EQYDVQQDDAprdWJlcm5ldGVzMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYWTN
R9tKg8vpBuZsFY0ABb952NGXMjdvYiERtkiw/oMRHoT4bU2Ktemc7MiFrtRxfDPB
y2KJL5sbDUuZQ0gCBKOBlDCBkTAJBgNVHRMEAjAAMA4GA1UdDwEB/wQEAwIHgDAd
BgNVHSUEFjAUBggrBgEFBQcDAQYIKwYBBQUHAwIwFQYDVR0RBA4wDIIKa3ViZXJu
ZXRlczAfBgNVHSMEGDAWgBTmn0TwmG+ZoJFLLHAb5tkfN6/33zAdBgNVHQ4EFgQU
fPRDqJ7SGq1lol/MnT3vTKncWhQwCgYIKoZIzj0EAwIDSAAwRQIhAJqILpt9xBJT
++wKZhn8Ay38BbodKL/Nj16G31j004AnAiAG2NzJCBR8dIBt2uPXQdkY6D6ihMtT
/FMIxkpSppO7TQ==
-----END CERTIFICATE-----
";
    pub(crate) const LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBdsWdcCNzS6w0xgl
azhXbQ3qvYYCBdwUkcf2YDuCft6hRANCAARhZM1H20qDy+kG5mwVjQAFv3nY0Zcy
N29iIRG2SLD+gxEehPhtTYq16ZzsyIWu1HF8M8HLYokvmxsNS5lDSAIE
-----END PRIVATE KEY-----
";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn tls_settings_are_validated() {
        let base = RestConfig {
            server: "https://h".into(),
            ..RestConfig::default()
        };
        let cases = [
            (
                RestConfig {
                    tls_server_name: Some("k".into()),
                    ..base.clone()
                },
                "tls-server-name",
            ),
            (
                RestConfig {
                    ca_pem: Some(b"junk".to_vec()),
                    ..base.clone()
                },
                "no PEM certificate found",
            ),
            (
                RestConfig {
                    insecure_skip_tls_verify: true,
                    client_cert_pem: Some(LEAF_PEM.into()),
                    client_key_pem: Some(b"junk".to_vec()),
                    ..base.clone()
                },
                "client key",
            ),
        ];
        for (config, want) in cases {
            let err = configure(reqwest::blocking::Client::builder(), &config).unwrap_err();
            assert!(
                matches!(&err, ApiError::Config(m) if m.contains(want)),
                "{err}"
            );
        }
        assert!(
            tls_config(&base).unwrap().is_none(),
            "no CA: reqwest's platform roots"
        );
    }
}
