//! TLS for the kubelet API: the serving certificate (`tlsCertFile`/`tlsPrivateKeyFile`, or
//! a self-signed pair made once in the cert dir as upstream does), `tlsMinVersion` and
//! `tlsCipherSuites`, and client certificates checked against
//! `authentication.x509.clientCAFile`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

/// Errors building the TLS set-up; each names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file held no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// A setting was not valid.
    #[error("{setting}: {why}")]
    Setting {
        /// The setting (`tlsCipherSuites`, ...).
        setting: &'static str,
        /// What was wrong.
        why: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed serving certificate: {0}")]
    Generate(String),
}

/// The serving certificate, replaceable while the server runs (a rotated
/// `serverTLSBootstrap` certificate): each new handshake gets the one set last.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl ServingCert {
    /// A serving certificate from a PEM chain and key; `what` names their source in errors.
    pub fn new(cert_pem: &[u8], key_pem: &[u8], what: &Path) -> Result<ServingCert, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&provider, cert_pem, key_pem, what)?;
        Ok(ServingCert {
            current: RwLock::new(Arc::new(key)),
            provider,
        })
    }

    /// Serves `cert_pem`/`key_pem` from the next handshake on.
    pub fn set(&self, cert_pem: &[u8], key_pem: &[u8], what: &Path) -> Result<(), TlsError> {
        let key = certified_key(&self.provider, cert_pem, key_pem, what)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// A chain and key checked to belong together.
fn certified_key(
    provider: &CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &Path,
) -> Result<CertifiedKey, TlsError> {
    let pem_err = |why: String| TlsError::Pem {
        path: what.to_path_buf(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_err(e.to_string()))?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|e| pem_err(e.to_string()))?;
    Ok(certified)
}

/// What the TLS set-up is built from.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// A serving certificate kept fresh at run time; served instead of the files when set.
    pub serving: Option<Arc<ServingCert>>,
    /// `tlsCertFile`.
    pub cert_file: Option<PathBuf>,
    /// `tlsPrivateKeyFile`.
    pub key_file: Option<PathBuf>,
    /// Where the self-signed pair lives (`--cert-dir`).
    pub cert_dir: PathBuf,
    /// Names and addresses for a self-signed certificate.
    pub hostnames: Vec<String>,
    /// `tlsMinVersion`.
    pub min_version: Option<String>,
    /// `tlsCipherSuites` (Go names).
    pub cipher_suites: Vec<String>,
    /// `authentication.x509.clientCAFile`.
    pub client_ca_file: Option<PathBuf>,
}

/// The serving certificate files: the configured ones, or `kubelet.crt`/`kubelet.key` in
/// the cert dir, generated on first use.
pub fn serving_files(settings: &TlsSettings) -> Result<(PathBuf, PathBuf), TlsError> {
    match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => return Ok((cert.clone(), key.clone())),
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::Setting {
                setting: "tlsCertFile",
                why: "tlsCertFile and tlsPrivateKeyFile must be set together".into(),
            })
        }
        (None, None) => {}
    }
    let cert = settings.cert_dir.join("kubelet.crt");
    let key = settings.cert_dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let (cert_pem, key_pem) = self_signed(&settings.hostnames)?;
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::File { path, source }
    };
    std::fs::create_dir_all(&settings.cert_dir).map_err(file_err(&settings.cert_dir))?;
    crate::util::write_private(&key, key_pem.as_bytes()).map_err(file_err(&key))?;
    crate::util::write_atomic(&cert, cert_pem.as_bytes(), 0o644).map_err(file_err(&cert))?;
    log::info!(
        "wrote a self-signed serving certificate to {} (valid for {})",
        cert.display(),
        settings.hostnames.join(", ")
    );
    Ok((cert, key))
}

/// A CA and a serving certificate signed by it for `hostnames` (DNS names or IPs), valid
/// for a year: the PEM of the certificate followed by the CA, and the key.
pub fn self_signed(hostnames: &[String]) -> Result<(String, String), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let host = hostnames
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let now = std::time::SystemTime::now();
    let stamp = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let year = Duration::from_secs(365 * 24 * 3600);
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now.into();
    ca_params.not_after = (now + year).into();
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(g)?).map_err(g)?;

    let mut params = CertificateParams::new(hostnames.to_vec()).map_err(g)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{host}@{stamp}"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = now.into();
    params.not_after = (now + year).into();
    let key = KeyPair::generate().map_err(g)?;
    let cert = params.signed_by(&key, &ca).map_err(g)?;
    Ok((format!("{}{}", cert.pem(), ca.pem()), key.serialize_pem()))
}

/// The rustls server configuration for the kubelet API.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_err = |path: &Path, why: String| TlsError::Pem {
        path: path.to_path_buf(),
        why,
    };
    let serving = match &settings.serving {
        Some(serving) => Arc::clone(serving),
        None => {
            let (cert_file, key_file) = serving_files(settings)?;
            let cert_pem = read(&cert_file)?;
            let key_pem = read(&key_file)?;
            Arc::new(ServingCert::new(&cert_pem, &key_pem, &cert_file)?)
        }
    };
    let provider = Arc::new(provider(&settings.cipher_suites)?);
    let versions = versions(settings.min_version.as_deref())?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Setting {
            setting: "tlsCipherSuites",
            why: e.to_string(),
        })?;
    let builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca_file)?) {
                let cert = cert.map_err(|e| pem_err(ca_file, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| pem_err(ca_file, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(pem_err(ca_file, "no CA certificate in the file".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| pem_err(ca_file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn versions(
    min: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TlsError> {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min.unwrap_or("") {
        "" | "VersionTLS12" => Ok(&BOTH),
        "VersionTLS10" | "VersionTLS11" => {
            log::warn!("tlsMinVersion {min:?}: TLS below 1.2 is not offered; using VersionTLS12");
            Ok(&BOTH)
        }
        "VersionTLS13" => Ok(&ONLY_13),
        other => Err(TlsError::Setting {
            setting: "tlsMinVersion",
            why: format!(
                "{other:?} is not one of VersionTLS10, VersionTLS11, VersionTLS12, VersionTLS13"
            ),
        }),
    }
}

/// The ring provider with TLS 1.2 suites limited to `names` (Go names, as upstream's
/// `tlsCipherSuites`; as in Go, the list does not restrict TLS 1.3 suites).
fn provider(names: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let all = provider.cipher_suites.clone();
    let mut chosen: Vec<SupportedCipherSuite> = all
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .copied()
        .collect();
    for name in names {
        let found = all.iter().find(|s| {
            matches!(s, SupportedCipherSuite::Tls12(_)) && format!("{:?}", s.suite()) == *name
                || go_tls13_name(s) == Some(name.as_str())
        });
        match found {
            Some(s) if !chosen.contains(s) => chosen.push(*s),
            Some(_) => {}
            None => {
                return Err(TlsError::Setting {
                    setting: "tlsCipherSuites",
                    why: format!("unsupported cipher suite {name:?}"),
                })
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

fn go_tls13_name(suite: &SupportedCipherSuite) -> Option<&'static str> {
    match suite {
        SupportedCipherSuite::Tls13(_) => match format!("{:?}", suite.suite()).as_str() {
            "TLS13_AES_128_GCM_SHA256" => Some("TLS_AES_128_GCM_SHA256"),
            "TLS13_AES_256_GCM_SHA384" => Some("TLS_AES_256_GCM_SHA384"),
            "TLS13_CHACHA20_POLY1305_SHA256" => Some("TLS_CHACHA20_POLY1305_SHA256"),
            _ => None,
        },
        SupportedCipherSuite::Tls12(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_is_made_once_and_serves() {
        let dir = std::env::temp_dir().join(format!("rkubelet-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = TlsSettings {
            cert_dir: dir.join("pki"),
            hostnames: vec!["node-a".into(), "127.0.0.1".into()],
            ..TlsSettings::default()
        };
        let (cert, key) = serving_files(&settings).unwrap();
        let first = std::fs::read(&cert).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, _) = serving_files(&settings).unwrap();
        assert_eq!(std::fs::read(again).unwrap(), first, "generated only once");
        let chain: Vec<_> = CertificateDer::pem_slice_iter(&first)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "certificate and its CA");
        let subject = crate::util::x509::subject(&chain[0]).unwrap();
        assert!(subject.common_name.starts_with("node-a@"), "{subject:?}");
        server_config(&settings).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(versions(Some("VersionTLS13")).unwrap().len() == 1);
        let e = versions(Some("TLS1.3")).unwrap_err().to_string();
        assert!(e.starts_with("tlsMinVersion:"), "{e}");
        let p = provider(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        assert_eq!(
            p.cipher_suites.len(),
            4,
            "three TLS 1.3 suites and the named one"
        );
        let e = provider(&["TLS_RSA_WITH_RC4_128_SHA".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TLS_RSA_WITH_RC4_128_SHA"), "{e}");
    }
}
