//! The kubelet's certificates at start-up (upstream `buildKubeletClientConfig` and the
//! serving certificate manager): TLS bootstrap before the API client is built, then one
//! rotation thread for the client certificate (`rotateCertificates`) and one for the serving
//! certificate (`serverTLSBootstrap`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use super::AppError;
use crate::api::{CsrClient, RestClient};
use crate::certificate::bootstrap::{self, client_template, CLIENT_PREFIX};
use crate::certificate::csr::{Template, SERVING_USAGES};
use crate::certificate::manager::{Rotation, ROTATION_WAIT};
use crate::certificate::store::{pair_from_pem, FileStore};
use crate::certificate::{node_user, CertError, Pair, NODES_GROUP, SERVING_SIGNER};
use crate::config::settings::KubeletConfig;
use crate::server::tls::ServingCert;

/// The prefix of the serving certificate's pair files.
const SERVING_PREFIX: &str = "kubelet-server";

/// With `--bootstrap-kubeconfig`, makes sure `--kubeconfig` holds a usable node identity,
/// asking for one with the bootstrap credentials if it does not.
pub fn bootstrap(config: &KubeletConfig, stop: &Receiver<()>) -> Result<(), AppError> {
    let Some(bootstrap_kubeconfig) = &config.bootstrap_kubeconfig else {
        return Ok(());
    };
    let Some(kubeconfig) = &config.kubeconfig else {
        return Err(AppError::Certificate(CertError::Unusable {
            what: "--bootstrap-kubeconfig".into(),
            why: "needs --kubeconfig, the file the node's own credentials are written to".into(),
        }));
    };
    bootstrap::load_client_cert(
        kubeconfig,
        bootstrap_kubeconfig,
        &config.cert_dir,
        &config.node_name,
        stop,
    )?;
    Ok(())
}

/// With `rotateCertificates`, starts thread `cert-rotation-client`, which renews the client
/// certificate of `rest` and swaps it in. The pair in use is the current one of
/// `<cert-dir>/kubelet-client-current.pem`, else the kubeconfig's.
pub fn start_client_rotation(
    config: &KubeletConfig,
    rest: &Arc<RestClient>,
    stop: &Receiver<()>,
) -> Result<Option<JoinHandle<()>>, AppError> {
    if config.raw.rotate_certificates != Some(true) {
        return Ok(None);
    }
    let Some(kubeconfig) = &config.kubeconfig else {
        return Ok(None);
    };
    let store = FileStore::new(&config.cert_dir, CLIENT_PREFIX);
    let from_kubeconfig = || -> Option<Pair> {
        let rest = crate::api::kubeconfig::load(kubeconfig).ok()?;
        let what = kubeconfig.display().to_string();
        pair_from_pem(
            rest.client_cert_pem.as_ref()?,
            rest.client_key_pem.as_ref()?,
            &what,
        )
        .ok()
    };
    let current = match store.current() {
        Ok(pair) => {
            rest.set_client_certificate(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())?;
            Some(pair)
        }
        Err(_) => from_kubeconfig(),
    };
    if current.is_none() {
        log::warn!(
            "rotateCertificates: {} has no client certificate; asking for one with its credentials",
            kubeconfig.display()
        );
    }
    let fallback = match &config.bootstrap_kubeconfig {
        Some(path) => Some(bootstrap_client(path)?),
        None => None,
    };
    let target = Arc::clone(rest);
    let node = config.node_name.clone();
    let rotation = Rotation {
        name: "client",
        store,
        template: Box::new(move || Some(client_template(&node))),
        client: Arc::clone(rest) as Arc<dyn CsrClient>,
        fallback,
        on_rotated: Box::new(move |pair| {
            if let Err(e) =
                target.set_client_certificate(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())
            {
                log::error!("using the rotated client certificate: {e}");
            }
        }),
        wait: ROTATION_WAIT,
    };
    let handle = rotation
        .start(current, stop.clone())
        .map_err(|source| AppError::Thread {
            name: "cert-rotation-client",
            source,
        })?;
    Ok(Some(handle))
}

fn bootstrap_client(path: &Path) -> Result<Arc<dyn CsrClient>, AppError> {
    let config = crate::api::kubeconfig::load(path)?;
    let client = RestClient::new(config, 5.0, 10, crate::api::client::DEFAULT_TIMEOUT)?;
    Ok(Arc::new(client))
}

/// The template of the serving certificate: the node name as DNS name and the node's IPs
/// (upstream asks for the node's Hostname, InternalDNS and ExternalDNS addresses as names and
/// its InternalIP and ExternalIP addresses as IPs).
pub fn serving_template(node_name: &str, node_ips: &[IpAddr]) -> Template {
    let mut ips = node_ips.to_vec();
    ips.sort();
    ips.dedup();
    Template {
        common_name: node_user(node_name),
        organizations: vec![NODES_GROUP.to_string()],
        dns_names: vec![node_name.to_string()],
        ips,
        signer: SERVING_SIGNER,
        usages: SERVING_USAGES,
    }
}

/// The kubelet API's rotated serving certificate and the thread that renews it.
pub struct ServingRotation {
    pub cert: Arc<ServingCert>,
    pub thread: JoinHandle<()>,
}

/// With `serverTLSBootstrap` (and an API server), the kubelet API's serving certificate and
/// thread `cert-rotation-serving`, which asks for a certificate from
/// `kubernetes.io/kubelet-serving` (at once if none is stored) and swaps each new one in.
/// Until the first is issued the configured or self-signed certificate is served.
pub fn start_serving_rotation(
    config: &KubeletConfig,
    rest: Option<&Arc<RestClient>>,
    node_ips: Vec<IpAddr>,
    stop: &Receiver<()>,
) -> Result<Option<ServingRotation>, AppError> {
    let Some(rest) = rest.filter(|_| config.raw.server_tls_bootstrap == Some(true)) else {
        return Ok(None);
    };
    let settings = crate::server::ServerSettings::from_config(config)
        .map_err(crate::kubelet::KubeletError::from)?;
    let store = FileStore::new(&config.cert_dir, SERVING_PREFIX);
    let current = store.current().ok();
    let serving = match &current {
        Some(pair) => {
            let what = store.current_path();
            ServingCert::new(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), &what)
        }
        None => {
            let (cert, key) = crate::server::tls::serving_files(&settings.tls).map_err(|e| {
                crate::kubelet::KubeletError::from(crate::server::ServerError::from(e))
            })?;
            let read = |p: &Path| {
                std::fs::read(p).map_err(|source| CertError::File {
                    path: p.to_path_buf(),
                    source,
                })
            };
            ServingCert::new(&read(&cert)?, &read(&key)?, &cert)
        }
    }
    .map_err(|e| crate::kubelet::KubeletError::from(crate::server::ServerError::from(e)))?;
    let serving = Arc::new(serving);
    let target = Arc::clone(&serving);
    let what = store.current_path();
    let template = serving_template(&config.node_name, &node_ips);
    let rotation = Rotation {
        name: "serving",
        store,
        template: Box::new(move || Some(template.clone())),
        client: Arc::clone(rest) as Arc<dyn CsrClient>,
        fallback: None,
        on_rotated: Box::new(move |pair| {
            if let Err(e) = target.set(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), &what) {
                log::error!("serving the rotated certificate: {e}");
            }
        }),
        wait: ROTATION_WAIT,
    };
    let thread = rotation
        .start(current, stop.clone())
        .map_err(|source| AppError::Thread {
            name: "cert-rotation-serving",
            source,
        })?;
    Ok(Some(ServingRotation {
        cert: serving,
        thread,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_templates_name_the_node_and_its_ips_once() {
        let ips: Vec<IpAddr> = vec![
            "10.0.0.6".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "10.0.0.6".parse().unwrap(),
        ];
        let t = serving_template("node-a", &ips);
        assert_eq!(t.common_name, "system:node:node-a");
        assert_eq!(t.organizations, ["system:nodes"]);
        assert_eq!(t.dns_names, ["node-a"]);
        assert_eq!(
            t.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "10.0.0.6".parse().unwrap()
            ]
        );
        assert_eq!(t.signer, "kubernetes.io/kubelet-serving");
        assert_eq!(t.usages, ["digital signature", "server auth"]);
    }
}
