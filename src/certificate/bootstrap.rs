//! TLS bootstrap (upstream `pkg/kubelet/certificate/bootstrap`): turn a bootstrap-token
//! kubeconfig into a node identity, once, before the kubelet talks to the API server.
//!
//! When the `--kubeconfig` file is missing, unreadable, or its client certificate is expired
//! (or absent), and `--bootstrap-kubeconfig` is set:
//! 1. take the private key of the stored pair if there is one, else the key cached in
//!    `<cert-dir>/kubelet-client.key.tmp` (made and written there if missing, so a request
//!    that fails is retried with the same key, under the same digested name, after a restart);
//! 2. with the bootstrap credentials, create a CertificateSigningRequest for
//!    `CN=system:node:<node>, O=system:nodes` (signer
//!    `kubernetes.io/kube-apiserver-client-kubelet`, usages digital signature and client
//!    auth) and wait up to an hour for it to be issued;
//! 3. store the pair as `<cert-dir>/kubelet-client-<timestamp>.pem` and point
//!    `kubelet-client-current.pem` at it, then remove the cached key;
//! 4. write `--kubeconfig` (mode 0600) with the bootstrap kubeconfig's server and CA and the
//!    `kubelet-client-current.pem` symlink as client certificate and key, so a later rotation
//!    needs no kubeconfig change and a restart needs no token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Receiver;
use rcgen::KeyPair;

use super::csr::{self, Naming, Template, CLIENT_USAGES};
use super::store::FileStore;
use super::{node_user, CertError, CLIENT_SIGNER, NODES_GROUP};
use crate::api::{RestClient, RestConfig};

/// How long bootstrap waits for its certificate (upstream: one hour).
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(3600);
/// The key cached while a bootstrap request is pending.
const TMP_KEY_FILE: &str = "kubelet-client.key.tmp";
/// The prefix of the client certificate's pair files.
pub const CLIENT_PREFIX: &str = "kubelet-client";

/// The template of a node's client certificate.
pub fn client_template(node_name: &str) -> Template {
    Template {
        common_name: node_user(node_name),
        organizations: vec![NODES_GROUP.to_string()],
        dns_names: Vec::new(),
        ips: Vec::new(),
        signer: CLIENT_SIGNER,
        usages: CLIENT_USAGES,
    }
}

/// Whether `kubeconfig` exists, loads, and carries a client certificate none of whose
/// certificates has expired (upstream `isClientConfigStillValid`); why not, when it is not.
pub fn kubeconfig_still_valid(kubeconfig: &Path) -> Result<(), String> {
    if !kubeconfig.exists() {
        return Err("it does not exist".into());
    }
    let config = crate::api::kubeconfig::load(kubeconfig).map_err(|e| e.to_string())?;
    let cert = config
        .client_cert_pem
        .ok_or_else(|| "it has no client certificate".to_string())?;
    let chain: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&cert)
        .collect::<Result<Vec<rustls::pki_types::CertificateDer<'_>>, _>>()
        .map_err(|e| format!("its client certificate: {e}"))?;
    if chain.is_empty() {
        return Err("its client certificate holds no certificate".into());
    }
    let now = SystemTime::now();
    for cert in &chain {
        let validity = crate::util::x509::validity(cert)
            .ok_or_else(|| "its client certificate cannot be read".to_string())?;
        if now > validity.not_after {
            return Err(format!(
                "part of its client certificate expired at {}",
                crate::types::api_time(validity.not_after)
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Makes sure `kubeconfig` holds a usable node identity, bootstrapping one with
/// `bootstrap_kubeconfig` if it does not (see the module docs).
pub fn load_client_cert(
    kubeconfig: &Path,
    bootstrap_kubeconfig: &Path,
    cert_dir: &Path,
    node_name: &str,
    stop: &Receiver<()>,
) -> Result<(), CertError> {
    match kubeconfig_still_valid(kubeconfig) {
        Ok(()) => {
            log::info!(
                "kubeconfig {} exists and is valid, skipping bootstrap",
                kubeconfig.display()
            );
            return Ok(());
        }
        Err(why) => log::info!(
            "kubeconfig {} is not usable ({why}); using bootstrap kubeconfig {} to get a client certificate",
            kubeconfig.display(),
            bootstrap_kubeconfig.display()
        ),
    }
    let bootstrap = crate::api::kubeconfig::load(bootstrap_kubeconfig)?;
    let client = RestClient::new(
        bootstrap.clone(),
        5.0,
        10,
        crate::api::client::DEFAULT_TIMEOUT,
    )?;
    let store = FileStore::new(cert_dir, CLIENT_PREFIX);
    let tmp_key = cert_dir.join(TMP_KEY_FILE);
    // The current key is asked for again while its certificate is valid, so that a request
    // made before a crash is found again under the same digested name. Once expired, the
    // request under that name holds the expired certificate: a new key makes a new request.
    let key = match store
        .current()
        .ok()
        .filter(|p| p.validity.contains(SystemTime::now()))
        .and_then(|p| KeyPair::from_pem(&p.key_pem).ok())
    {
        Some(key) => key,
        None => {
            log::info!("no valid private key and/or certificate found, reusing the cached key or making a new one");
            csr::load_or_generate_key(&tmp_key)?
        }
    };
    let cert_pem = csr::request_certificate(
        &client,
        &client_template(node_name),
        &key,
        &Naming::Digested,
        BOOTSTRAP_TIMEOUT,
        stop,
    )?;
    store.update(&cert_pem, &key.serialize_pem())?;
    match std::fs::remove_file(&tmp_key) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("removing {}: {e}", tmp_key.display()),
    }
    // The kubeconfig resolves relative paths against its own directory: name the pair file
    // absolutely, whatever --cert-dir was given as.
    let current = store.current_path();
    let current = std::path::absolute(&current).map_err(|source| CertError::File {
        path: current.clone(),
        source,
    })?;
    write_kubeconfig(&bootstrap, kubeconfig, &current)?;
    log::info!(
        "wrote kubeconfig {} with the node's client certificate",
        kubeconfig.display()
    );
    Ok(())
}

/// Writes a kubeconfig for `server` (and CA) of `bootstrap` that authenticates with the pair
/// file `pem_path` (upstream `writeKubeconfigFromBootstrapping`).
pub fn write_kubeconfig(
    bootstrap: &RestConfig,
    kubeconfig: &Path,
    pem_path: &Path,
) -> Result<(), CertError> {
    let mut cluster = serde_json::json!({ "server": bootstrap.server });
    if let Some(ca) = &bootstrap.ca_pem {
        cluster["certificate-authority-data"] = crate::util::base64::encode(ca).into();
    }
    if bootstrap.insecure_skip_tls_verify {
        cluster["insecure-skip-tls-verify"] = true.into();
    }
    if let Some(name) = &bootstrap.tls_server_name {
        cluster["tls-server-name"] = name.clone().into();
    }
    let pem = pem_path.display().to_string();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "default-cluster", "cluster": cluster }],
        "contexts": [{
            "name": "default-context",
            "context": { "cluster": "default-cluster", "namespace": "default", "user": "default-auth" },
        }],
        "current-context": "default-context",
        "preferences": {},
        "users": [{
            "name": "default-auth",
            "user": { "client-certificate": pem, "client-key": pem },
        }],
    });
    let text = serde_yaml_ng::to_string(&config).map_err(|e| CertError::Unusable {
        what: kubeconfig.display().to_string(),
        why: e.to_string(),
    })?;
    if let Some(dir) = kubeconfig.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| CertError::File {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    crate::util::write_private(kubeconfig, text.as_bytes()).map_err(|source| CertError::File {
        path: kubeconfig.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rkubelet-boot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn pair(not_after: (i32, u8, u8)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn the_written_kubeconfig_points_at_the_current_pair_and_is_private() {
        let d = dir("write");
        let store = FileStore::new(&d.join("pki"), CLIENT_PREFIX);
        let (cert, key) = pair((2090, 1, 1));
        store.update(&cert, &key).unwrap();
        let bootstrap = RestConfig {
            server: "https://10.0.0.1:6443".into(),
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            bearer_token: Some("abcdef.0123456789abcdef".into()),
            ..RestConfig::default()
        };
        let kubeconfig = d.join("kubelet.conf");
        write_kubeconfig(&bootstrap, &kubeconfig, &store.current_path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        assert!(!text.contains("abcdef"), "no token: {text}");
        let loaded = crate::api::kubeconfig::load(&kubeconfig).unwrap();
        assert_eq!(loaded.server, bootstrap.server);
        assert_eq!(loaded.ca_pem, bootstrap.ca_pem);
        assert_eq!(loaded.bearer_token, None);
        assert!(
            String::from_utf8_lossy(loaded.client_cert_pem.as_ref().unwrap())
                .contains("BEGIN CERTIFICATE")
        );
        assert!(kubeconfig_still_valid(&kubeconfig).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn expired_missing_and_tokens_only_kubeconfigs_are_not_valid() {
        let d = dir("valid");
        let kubeconfig = d.join("kubelet.conf");
        assert!(kubeconfig_still_valid(&kubeconfig)
            .unwrap_err()
            .contains("does not exist"));
        let store = FileStore::new(&d, CLIENT_PREFIX);
        let (cert, key) = pair((2021, 1, 1));
        store.update(&cert, &key).unwrap();
        let server = RestConfig {
            server: "https://10.0.0.1:6443".into(),
            ..RestConfig::default()
        };
        write_kubeconfig(&server, &kubeconfig, &store.current_path()).unwrap();
        let why = kubeconfig_still_valid(&kubeconfig).unwrap_err();
        assert!(why.contains("expired at 2021-01-01"), "{why}");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters: [{name: k, cluster: {server: 'https://x'}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {token: abc}}]\n",
        )
        .unwrap();
        assert!(kubeconfig_still_valid(&kubeconfig)
            .unwrap_err()
            .contains("no client certificate"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
