//! One certificate request, as client-go's `util/certificate/csr` makes it: an ECDSA P-256
//! key, a PKCS#10 request for the template's subject and names, a
//! `certificates.k8s.io/v1` CertificateSigningRequest for the template's signer and usages,
//! then a watch on that object until the signer puts a certificate in its status (or an
//! approver denies it, the signer fails it, the wait times out or stop fires).
//!
//! The issued certificate must be for our key: a request created earlier under the same
//! name by someone else cannot hand us a certificate we hold no key for.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::CertError;
use crate::api::{CsrClient, WatchEvent};
use crate::util::backoff::Exponential;

/// Usages of a kubelet client certificate with an ECDSA key (upstream adds key encipherment
/// only for RSA keys).
pub const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
/// Usages of a kubelet serving certificate with an ECDSA key.
pub const SERVING_USAGES: &[&str] = &["digital signature", "server auth"];

/// What to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// CN (`system:node:<node>`).
    pub common_name: String,
    /// O values (`system:nodes`).
    pub organizations: Vec<String>,
    /// DNS subject alternative names (serving certificates).
    pub dns_names: Vec<String>,
    /// IP subject alternative names (serving certificates).
    pub ips: Vec<IpAddr>,
    /// `spec.signerName`.
    pub signer: &'static str,
    /// `spec.usages`.
    pub usages: &'static [&'static str],
}

/// How the CertificateSigningRequest is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// A name derived from the key, subject and usages, so a retry after a crash finds the
    /// request it made before (bootstrap: `node-csr-<digest>`).
    Digested,
    /// `metadata.generateName` (rotation: `csr-`).
    Generate(&'static str),
}

/// A new ECDSA P-256 private key.
pub fn new_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| CertError::Generate {
        what: "private key",
        why: e.to_string(),
    })
}

/// The key in `path` if it holds a usable one, else a new key written there (mode 0600), so
/// a request that fails is retried with the same key after a restart.
pub fn load_or_generate_key(path: &std::path::Path) -> Result<KeyPair, CertError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        match KeyPair::from_pem(&text) {
            Ok(key) => return Ok(key),
            Err(e) => log::warn!(
                "{}: not a usable private key ({e}); making a new one",
                path.display()
            ),
        }
    }
    let key = new_key()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CertError::File {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::util::write_private(path, key.serialize_pem().as_bytes()).map_err(|source| {
        CertError::File {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(key)
}

/// The PEM PKCS#10 request of `template` signed with `key`.
pub fn request_pem(template: &Template, key: &KeyPair) -> Result<String, CertError> {
    let generate = |e: rcgen::Error| CertError::Generate {
        what: "certificate signing request",
        why: e.to_string(),
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for org in &template.organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str());
    }
    params
        .distinguished_name
        .push(DnType::CommonName, template.common_name.as_str());
    for name in &template.dns_names {
        let name = name.clone().try_into().map_err(generate)?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &template.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let request = params.serialize_request(key).map_err(generate)?;
    request.pem().map_err(generate)
}

/// Upstream's name of a bootstrap request (`node-csr-<digest>`): a SHA-512/256 over the
/// public key, CN, organizations and usages, each base64url-encoded and ended by `|` (not in
/// that alphabet, so two inputs cannot run into each other).
pub fn digested_name(public_key_info: &[u8], template: &Template) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512_256);
    let mut write = |data: &[u8]| {
        ctx.update(crate::util::base64::encode_url(data).as_bytes());
        ctx.update(b"|");
    };
    write(public_key_info);
    write(template.common_name.as_bytes());
    for org in &template.organizations {
        write(org.as_bytes());
    }
    for usage in template.usages {
        write(usage.as_bytes());
    }
    format!(
        "node-csr-{}",
        crate::util::base64::encode_url(ctx.finish().as_ref())
    )
}

/// Asks for a certificate for `key` and waits up to `timeout` for it: the issued chain, PEM.
pub fn request_certificate(
    client: &dyn CsrClient,
    template: &Template,
    key: &KeyPair,
    naming: &Naming,
    timeout: Duration,
    stop: &Receiver<()>,
) -> Result<String, CertError> {
    let deadline = Instant::now() + timeout;
    let spki = key.subject_public_key_info();
    let request = request_pem(template, key)?;
    let mut meta = ObjectMeta::default();
    match naming {
        Naming::Digested => meta.name = Some(digested_name(&spki, template)),
        Naming::Generate(prefix) => meta.generate_name = Some((*prefix).to_string()),
    }
    let csr = CertificateSigningRequest {
        metadata: meta,
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: template.signer.to_string(),
            usages: Some(template.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = create(client, &csr, deadline, stop)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    log::info!(
        "certificate signing request {name} created (signer {}, {}); waiting for it to be issued",
        template.signer,
        template.common_name
    );
    let pem = wait_for_certificate(client, &name, deadline, timeout, stop)?;
    let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| CertError::Unusable {
            what: format!("certificate signing request {name}"),
            why: "the issued certificate is not PEM".into(),
        })?;
    if crate::util::x509::public_key_info(&leaf) != Some(spki.as_slice()) {
        return Err(CertError::Unusable {
            what: format!("certificate signing request {name}"),
            why: "the issued certificate is not for this node's key".into(),
        });
    }
    // A request taken over may carry a certificate issued long ago.
    let now = std::time::SystemTime::now();
    if crate::util::x509::validity(&leaf).is_none_or(|v| now > v.not_after) {
        return Err(CertError::Unusable {
            what: format!("certificate signing request {name}"),
            why: "the issued certificate has expired; delete the request to ask again".into(),
        });
    }
    log::info!("certificate signing request {name} is issued");
    Ok(pem)
}

/// Creates the request, retrying what may pass later; an existing request of the same
/// (digested) name is taken over: its certificate is checked against our key at the end.
fn create(
    client: &dyn CsrClient,
    csr: &CertificateSigningRequest,
    deadline: Instant,
    stop: &Receiver<()>,
) -> Result<CertificateSigningRequest, CertError> {
    let mut backoff = Exponential::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let mut err = match client.create_csr(csr) {
            Ok(created) => return Ok(created),
            Err(e) => e,
        };
        if let (Some(409), Some(name)) = (err.code(), &csr.metadata.name) {
            match client.get_csr(name) {
                Ok(existing) => {
                    if existing.spec.signer_name != csr.spec.signer_name
                        || existing.spec.usages != csr.spec.usages
                    {
                        return Err(CertError::Unusable {
                            what: format!("certificate signing request {name}"),
                            why: "exists with another signer or other usages".into(),
                        });
                    }
                    log::info!("certificate signing request {name} exists already; waiting on it");
                    return Ok(existing);
                }
                // Read again after the back-off below.
                Err(e) if e.is_retriable() => err = e,
                Err(e) => return Err(e.into()),
            }
        }
        let wait = backoff.next_delay();
        if !err.is_retriable() || Instant::now() + wait > deadline {
            return Err(err.into());
        }
        log::warn!("creating a certificate signing request: {err}; retrying in {wait:?}");
        if !matches!(
            stop.recv_timeout(wait),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        ) {
            return Err(CertError::Stopped(String::new()));
        }
    }
}

/// What a request's status says.
enum Verdict {
    Issued(String),
    Pending,
    Refused(CertError),
}

fn verdict(name: &str, csr: &CertificateSigningRequest) -> Verdict {
    let Some(status) = &csr.status else {
        return Verdict::Pending;
    };
    for c in status.conditions.iter().flatten() {
        let verdict = match c.type_.as_str() {
            "Denied" => "is denied",
            "Failed" => "failed",
            _ => continue,
        };
        return Verdict::Refused(CertError::Refused {
            name: name.to_string(),
            verdict,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    match &status.certificate {
        Some(cert) if !cert.0.is_empty() => {
            Verdict::Issued(String::from_utf8_lossy(&cert.0).into_owned())
        }
        _ => Verdict::Pending,
    }
}

/// Reads the request, then watches it, until it has a verdict or `deadline` passes.
fn wait_for_certificate(
    client: &dyn CsrClient,
    name: &str,
    deadline: Instant,
    timeout: Duration,
    stop: &Receiver<()>,
) -> Result<String, CertError> {
    let stopped = || !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty));
    let mut backoff = Exponential::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut approved_logged = false;
    while Instant::now() < deadline {
        if stopped() {
            return Err(CertError::Stopped(name.to_string()));
        }
        let read = client.get_csr(name).map(|csr| {
            let rv = csr.metadata.resource_version.clone().unwrap_or_default();
            (csr, rv)
        });
        let (csr, rv) = match read {
            Ok(read) => read,
            Err(e) if e.code() == Some(404) => {
                return Err(CertError::Unusable {
                    what: format!("certificate signing request {name}"),
                    why: "was deleted before it was issued".into(),
                })
            }
            Err(e) => {
                let wait = backoff
                    .next_delay()
                    .min(deadline.saturating_duration_since(Instant::now()));
                log::warn!("reading certificate signing request {name}: {e}; retrying in {wait:?}");
                if !matches!(
                    stop.recv_timeout(wait),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                ) {
                    return Err(CertError::Stopped(name.to_string()));
                }
                continue;
            }
        };
        let mut current = csr;
        // Each watch is short, so stop and the deadline are seen within a minute.
        let left = deadline.saturating_duration_since(Instant::now());
        let secs = u32::try_from(left.as_secs().clamp(1, 60)).unwrap_or(60);
        let mut events = match verdict(name, &current) {
            Verdict::Pending => Some(client.watch_csr(name, &rv, secs)),
            _ => None,
        };
        let watch_began = Instant::now();
        // A watch that fails, or ends at once (a proxy closing it), is retried after a
        // back-off that the stop cuts short.
        let pause = |backoff: &mut Exponential| {
            let wait = backoff.next_delay().min(left);
            !matches!(
                stop.recv_timeout(wait),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            )
        };
        loop {
            match verdict(name, &current) {
                Verdict::Issued(pem) => return Ok(pem),
                Verdict::Refused(e) => return Err(e),
                Verdict::Pending => {}
            }
            if !approved_logged && is_approved(&current) {
                approved_logged = true;
                log::info!("certificate signing request {name} is approved, waiting to be issued");
            }
            let Some(Ok(stream)) = events.as_mut() else {
                if let Some(Err(e)) = events.take() {
                    log::warn!("watching certificate signing request {name}: {e}");
                    if pause(&mut backoff) {
                        return Err(CertError::Stopped(name.to_string()));
                    }
                }
                break;
            };
            match stream.next() {
                Some(Ok(WatchEvent::Added(csr) | WatchEvent::Modified(csr))) => current = csr,
                Some(Ok(WatchEvent::Deleted(_))) => {
                    return Err(CertError::Unusable {
                        what: format!("certificate signing request {name}"),
                        why: "was deleted before it was issued".into(),
                    })
                }
                Some(Ok(WatchEvent::Bookmark { .. })) => {}
                Some(Ok(WatchEvent::Error(status))) => {
                    log::debug!(
                        "watching certificate signing request {name}: {}",
                        status.message
                    );
                    break;
                }
                Some(Err(e)) => {
                    log::debug!("watching certificate signing request {name}: {e}");
                    if pause(&mut backoff) {
                        return Err(CertError::Stopped(name.to_string()));
                    }
                    break;
                }
                None => {
                    if watch_began.elapsed() < Duration::from_secs(1) && pause(&mut backoff) {
                        return Err(CertError::Stopped(name.to_string()));
                    }
                    break;
                }
            }
            if stopped() {
                return Err(CertError::Stopped(name.to_string()));
            }
        }
    }
    Err(CertError::Timeout {
        name: name.to_string(),
        waited: timeout,
    })
}

fn is_approved(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Approved")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_template() -> Template {
        Template {
            common_name: "system:node:node-1".into(),
            organizations: vec!["system:nodes".into()],
            dns_names: vec![],
            ips: vec![],
            signer: super::super::CLIENT_SIGNER,
            usages: CLIENT_USAGES,
        }
    }

    #[test]
    fn digested_names_depend_on_key_subject_and_usages() {
        let t = client_template();
        let a = digested_name(b"key-a", &t);
        assert!(a.starts_with("node-csr-"), "{a}");
        assert_eq!(a.len(), "node-csr-".len() + 43, "32 bytes, unpadded");
        assert_eq!(a, digested_name(b"key-a", &t));
        assert_ne!(a, digested_name(b"key-b", &t));
        let mut other = t.clone();
        other.common_name = "system:node:node-2".into();
        assert_ne!(a, digested_name(b"key-a", &other));
        other = t.clone();
        other.usages = SERVING_USAGES;
        assert_ne!(a, digested_name(b"key-a", &other));
    }

    #[test]
    fn requests_carry_subject_and_names() {
        let key = new_key().unwrap();
        let mut t = client_template();
        t.dns_names = vec!["node-1".into()];
        t.ips = vec!["10.0.0.5".parse().unwrap()];
        let pem = request_pem(&t, &key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );
        t.dns_names = vec!["n\u{f6}de".into()];
        assert!(request_pem(&t, &key).is_err());
    }

    #[test]
    fn a_key_file_is_reused_when_usable() {
        let dir = std::env::temp_dir().join(format!("rkubelet-csr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("kubelet-client.key.tmp");
        let first = load_or_generate_key(&path).unwrap();
        let again = load_or_generate_key(&path).unwrap();
        assert_eq!(first.public_key_raw(), again.public_key_raw());
        std::fs::write(&path, "garbage").unwrap();
        let fresh = load_or_generate_key(&path).unwrap();
        assert_ne!(first.public_key_raw(), fresh.public_key_raw());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
