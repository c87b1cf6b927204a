//! Where certificates live on disk, as upstream's file store keeps them in `--cert-dir`:
//! each issued certificate goes to `<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` (leaf, intermediates,
//! then the key; mode 0600), and the symlink `<prefix>-current.pem` names the one in use. The
//! symlink is switched by making `<prefix>-updated.pem` and renaming it over the current one,
//! so a kill at any instant leaves either the old or the new pair current, never neither.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{CertError, Pair};

/// The pair files of one certificate (`kubelet-client`, `kubelet-server`).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    prefix: String,
    /// Configured files tried when no pair is current (`tlsCertFile`/`tlsPrivateKeyFile`).
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl FileStore {
    /// The store of `<dir>/<prefix>-*.pem`.
    pub fn new(dir: &Path, prefix: &str) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            cert_file: None,
            key_file: None,
        }
    }

    /// Also falls back to these files when no pair is current yet.
    pub fn with_files(mut self, cert_file: Option<PathBuf>, key_file: Option<PathBuf>) -> Self {
        self.cert_file = cert_file;
        self.key_file = key_file;
        self
    }

    /// `<dir>/<prefix>-current.pem`, the path a kubeconfig names.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The pair in use: the current pair file, else the configured files, else
    /// `<prefix>.crt`/`<prefix>.key`.
    pub fn current(&self) -> Result<Pair, CertError> {
        let pair = self.current_path();
        if pair.exists() {
            return load_pair(&pair, &pair);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            if cert.exists() && key.exists() {
                return load_pair(cert, key);
            }
        }
        let cert = self.dir.join(format!("{}.crt", self.prefix));
        let key = self.dir.join(format!("{}.key", self.prefix));
        if cert.exists() && key.exists() {
            return load_pair(&cert, &key);
        }
        Err(CertError::Missing(pair))
    }

    /// Stores a newly issued pair and makes it current; returns it as loaded back.
    pub fn update(&self, cert_pem: &str, key_pem: &str) -> Result<Pair, CertError> {
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertError::File { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(file_err(&self.dir))?;
        let stamp = crate::clock::utc_stamp(SystemTime::now());
        let path = self.dir.join(format!("{}-{stamp}.pem", self.prefix));
        let mut data = cert_pem.trim_end().to_string();
        data.push('\n');
        data.push_str(key_pem.trim_end());
        data.push('\n');
        crate::util::write_private(&path, data.as_bytes()).map_err(file_err(&path))?;
        let pair = load_pair(&path, &path)?;
        let target = std::path::absolute(&path).map_err(file_err(&path))?;
        let updated = self.dir.join(format!("{}-updated.pem", self.prefix));
        let current = self.current_path();
        if let Ok(meta) = std::fs::symlink_metadata(&current) {
            if !meta.file_type().is_symlink() {
                return Err(CertError::Unusable {
                    what: current.display().to_string(),
                    why: "exists and is not a symlink; not replacing it".into(),
                });
            }
        }
        match std::fs::remove_file(&updated) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(&updated)(e)),
        }
        std::os::unix::fs::symlink(&target, &updated).map_err(file_err(&updated))?;
        std::fs::rename(&updated, &current).map_err(file_err(&current))?;
        log::info!("certificate {} is now current", path.display());
        Ok(pair)
    }
}

/// Reads a certificate chain and key (both may be the same file).
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Pair, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_bytes = read(cert_file)?;
    let key_bytes = if key_file == cert_file {
        cert_bytes.clone()
    } else {
        read(key_file)?
    };
    pair_from_pem(&cert_bytes, &key_bytes, &cert_file.display().to_string())
}

/// A pair from PEM text; `what` names its source in errors.
pub fn pair_from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Pair, CertError> {
    let unusable = |why: String| CertError::Unusable {
        what: what.to_string(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("certificate: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| unusable("no certificate".into()))?;
    let validity = crate::util::x509::validity(leaf)
        .ok_or_else(|| unusable("the certificate's validity cannot be read".into()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| unusable(format!("key: {e}")))?;
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let not_text = || unusable("not PEM text".into());
    let cert_text = pem_sections(cert_pem, "CERTIFICATE").ok_or_else(not_text)?;
    let key_text = pem_sections(key_pem, label).ok_or_else(not_text)?;
    Ok(Pair {
        cert_pem: cert_text,
        key_pem: key_text,
        validity,
    })
}

/// The PEM sections labelled `label` in `pem`, as written, one after the other.
fn pem_sections(pem: &[u8], label: &str) -> Option<String> {
    let mut text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = String::new();
    while let Some(start) = text.find(&begin) {
        let stop = start + text[start..].find(&end)? + end.len();
        out.push_str(&text[start..stop]);
        out.push('\n');
        text = &text[stop..];
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rkubelet-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn issued() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn update_writes_a_private_pair_file_and_switches_the_symlink() {
        let d = dir("update");
        let store = FileStore::new(&d, "kubelet-client");
        assert!(matches!(store.current(), Err(CertError::Missing(_))));
        let (cert, key) = issued();
        let pair = store.update(&cert, &key).unwrap();
        let link = std::fs::read_link(d.join("kubelet-client-current.pem")).unwrap();
        assert!(link.is_absolute(), "{link:?}");
        let name = link.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("kubelet-client-20") && name.len() == "kubelet-client-".len() + 23,
            "{name}"
        );
        let mode = std::fs::metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&link).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"));
        let current = store.current().unwrap();
        assert_eq!(current.validity, pair.validity);
        assert!(!d.join("kubelet-client-updated.pem").exists());

        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (cert2, key2) = issued();
        store.update(&cert2, &key2).unwrap();
        let link2 = std::fs::read_link(d.join("kubelet-client-current.pem")).unwrap();
        assert_ne!(link, link2);
        assert!(link.exists(), "the old pair is kept");
        assert_eq!(store.current().unwrap().cert_pem.trim(), cert2.trim());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn current_falls_back_to_configured_files_and_refuses_a_plain_current_file() {
        let d = dir("fallback");
        std::fs::create_dir_all(&d).unwrap();
        let (cert, key) = issued();
        std::fs::write(d.join("tls.crt"), &cert).unwrap();
        std::fs::write(d.join("tls.key"), &key).unwrap();
        let store = FileStore::new(&d, "kubelet-server")
            .with_files(Some(d.join("tls.crt")), Some(d.join("tls.key")));
        assert_eq!(store.current().unwrap().cert_pem.trim(), cert.trim());
        std::fs::write(d.join("kubelet-server-current.pem"), "junk").unwrap();
        let e = store.current().unwrap_err().to_string();
        assert!(e.contains("kubelet-server-current.pem"), "{e}");
        let e = store.update(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("not a symlink"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
