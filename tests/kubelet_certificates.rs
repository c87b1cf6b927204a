//! The kubelet's certificates against the API server double acting as a kubeadm cluster
//! (bootstrap tokens, CSR RBAC, the node-client auto-approver and the kubelet signers): TLS
//! bootstrap from a token kubeconfig, restarts with and without it, an expired identity
//! bootstrapped again, a denied request, client certificate rotation while the node keeps
//! working, and the serving certificate swapped in once approved.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::cri::FakeRuntime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::apiserver::{ApiServer, ApiServerConfig};
use support::cluster::{ClusterNode, NODE};
use support::{free_port, scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "abcdef.0123456789abcdef";

fn fake() -> Arc<FakeRuntime> {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image(IMAGE);
    rt
}

fn api_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "app".into(),
                image: Some(IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn runs(server: &ApiServer, name: &str) -> bool {
    server.create_pod(api_pod(name)).unwrap();
    wait_for(WAIT, || {
        let phase = server.get_pod("default", name)?.status?.phase?;
        (phase == "Running").then_some(())
    })
    .is_some()
}

fn double(signing: Duration, auto_approve: bool) -> ApiServer {
    ApiServer::start_with(ApiServerConfig {
        bootstrap_tokens: vec![TOKEN.to_string()],
        auto_approve_node_client: auto_approve,
        csr_signing_duration: signing,
        ..Default::default()
    })
}

/// The files of one node: bootstrap kubeconfig, the kubeconfig bootstrap writes, cert dir.
struct Files {
    dir: PathBuf,
    bootstrap: PathBuf,
    kubeconfig: PathBuf,
    cert_dir: PathBuf,
}

impl Files {
    fn new(name: &str, server: &ApiServer) -> Files {
        let dir = scratch_dir(&format!("certs-{name}"));
        let bootstrap = dir.join("bootstrap-kubelet.conf");
        server
            .write_bootstrap_kubeconfig(&bootstrap, TOKEN)
            .unwrap();
        Files {
            kubeconfig: dir.join("kubeconfig"),
            cert_dir: dir.join("root/pki"),
            bootstrap,
            dir,
        }
    }

    /// Flags as kubeadm's drop-in passes them, plus a config file with `config` lines.
    fn args(&self, config: &str) -> Vec<String> {
        let path = self.dir.join("config.yaml");
        let text = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{config}"
        );
        std::fs::write(&path, text).unwrap();
        vec![
            format!("--bootstrap-kubeconfig={}", self.bootstrap.display()),
            format!("--config={}", path.display()),
        ]
    }

    fn current(&self) -> PathBuf {
        self.cert_dir.join("kubelet-client-current.pem")
    }

    fn client_pairs(&self) -> Vec<PathBuf> {
        let mut pairs: Vec<PathBuf> = std::fs::read_dir(&self.cert_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("kubelet-client-")
                    && name.ends_with(".pem")
                    && name != "kubelet-client-current.pem"
            })
            .collect();
        pairs.sort();
        pairs
    }
}

fn csrs_of(server: &ApiServer, signer: &str) -> Vec<Value> {
    server
        .csrs()
        .into_iter()
        .filter(|c| c["spec"]["signerName"] == signer)
        .collect()
}

fn client_csrs(server: &ApiServer) -> Vec<Value> {
    csrs_of(server, "kubernetes.io/kube-apiserver-client-kubelet")
}

/// A CSR's `spec.usages`, sorted.
fn sorted_usages(csr: &Value) -> Vec<&str> {
    let mut usages: Vec<&str> = csr["spec"]["usages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    usages.sort();
    usages
}

fn issued(csr: &Value) -> bool {
    csr["status"]["certificate"].is_string()
}

fn lease_renewed_since(server: &ApiServer, since: SystemTime) -> bool {
    server
        .get_lease("kube-node-lease", NODE)
        .and_then(|l| l.spec?.renew_time)
        .is_some_and(|t| {
            let since = since.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            t.0.as_millisecond() > since.as_millis() as i64
        })
}

#[test]
fn a_token_kubeconfig_becomes_a_node_identity_that_survives_restarts() {
    let server = double(Duration::from_secs(365 * 24 * 3600), true);
    let files = Files::new("bootstrap", &server);
    let rt = fake();
    let args = files.args("");
    let node = ClusterNode::start_with_args(&files.dir, &server, &rt, &args);

    // One CSR, made by the bootstrap identity, for this node, with upstream's shape.
    let csrs = client_csrs(&server);
    assert_eq!(csrs.len(), 1, "{csrs:#?}");
    let csr = &csrs[0];
    assert!(issued(csr), "{csr:#}");
    assert_eq!(csr["spec"]["username"], "system:bootstrap:abcdef");
    assert_eq!(sorted_usages(csr), ["client auth", "digital signature"]);
    let name = csr["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("node-csr-"), "{name}");

    // The pair file (0600), the symlink to it and a kubeconfig pointing at the symlink.
    let pairs = files.client_pairs();
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let mode = std::fs::metadata(&pairs[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", pairs[0].display());
    let text = std::fs::read_to_string(&pairs[0]).unwrap();
    assert!(text.contains("-----BEGIN CERTIFICATE-----"), "{text}");
    assert!(text.contains("PRIVATE KEY-----"), "{text}");
    let link = std::fs::read_link(files.current()).unwrap();
    assert_eq!(link.file_name(), pairs[0].file_name());
    let kubeconfig = std::fs::read_to_string(&files.kubeconfig).unwrap();
    let current = files.current().display().to_string();
    assert!(
        kubeconfig.contains(&format!("client-certificate: {current}"))
            && kubeconfig.contains(&format!("client-key: {current}")),
        "{kubeconfig}"
    );
    assert!(!kubeconfig.contains(TOKEN), "{kubeconfig}");
    assert!(
        !files.cert_dir.join("kubelet-client.key.tmp").exists(),
        "the bootstrap key is kept only until the pair is written"
    );

    // The new identity is the node: it registers and runs pods.
    assert!(wait_for(WAIT, || server.get_node(NODE)).is_some());
    assert!(runs(&server, "first"));
    node.stop();

    // A restart with a valid identity does not bootstrap again, even with the token file
    // gone (kubeadm removes bootstrap-kubelet.conf after the join).
    std::fs::remove_file(&files.bootstrap).unwrap();
    let node = ClusterNode::start_with_args(&files.dir, &server, &rt, &args);
    assert!(runs(&server, "second"));
    assert_eq!(client_csrs(&server).len(), 1);
    assert_eq!(files.client_pairs(), pairs);
    node.stop();
}

#[test]
fn the_bootstrap_identity_may_only_ask_for_certificates() {
    let server = double(Duration::from_secs(3600), true);
    let files = Files::new("forbidden", &server);
    // The bootstrap kubeconfig used as the node's own: the node cannot even register.
    let config = rkubelet::api::kubeconfig::load(&files.bootstrap).unwrap();
    let client = rkubelet::api::RestClient::new(config, 5.0, 10, Duration::from_secs(5)).unwrap();
    let err = rkubelet::api::KubeClient::get_node(&client, NODE).unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    assert!(
        err.to_string()
            .contains("User \"system:bootstrap:abcdef\" cannot get resource \"nodes\""),
        "{err}"
    );
    let everything = rkubelet::api::ListOptions::default();
    let err = rkubelet::api::KubeClient::list_pods(&client, &everything).unwrap_err();
    assert_eq!(err.code(), Some(403), "{err}");
    // An unknown token is no identity at all.
    let stranger = files.dir.join("stranger.conf");
    server
        .write_bootstrap_kubeconfig(&stranger, "zzzzzz.0123456789abcdef")
        .unwrap();
    let config = rkubelet::api::kubeconfig::load(&stranger).unwrap();
    let client = rkubelet::api::RestClient::new(config, 5.0, 10, Duration::from_secs(5)).unwrap();
    let err = rkubelet::api::CsrClient::get_csr(&client, "any").unwrap_err();
    assert_eq!(err.code(), Some(401), "{err}");
}

#[test]
fn an_expired_node_certificate_is_bootstrapped_again_at_start() {
    // The shortest validity the rotation deadline leaves room for; rotation is off here.
    let server = double(Duration::from_secs(4), true);
    let files = Files::new("expired", &server);
    let rt = fake();
    let args = files.args("");
    let node = ClusterNode::start_with_args(&files.dir, &server, &rt, &args);
    assert!(wait_for(WAIT, || server.get_node(NODE)).is_some());
    node.stop();
    let first = files.client_pairs();
    assert_eq!(first.len(), 1);
    std::thread::sleep(Duration::from_secs(5));

    let node = ClusterNode::start_with_args(&files.dir, &server, &rt, &args);
    let csrs = client_csrs(&server);
    assert_eq!(csrs.len(), 2, "{csrs:#?}");
    assert!(csrs
        .iter()
        .all(|c| c["spec"]["username"] == "system:bootstrap:abcdef" && issued(c)));
    let second = files.client_pairs();
    assert_eq!(second.len(), 2, "{second:?}");
    let link = std::fs::read_link(files.current()).unwrap();
    assert_eq!(link.file_name(), second[1].file_name());
    node.stop();
}

#[test]
fn a_denied_request_fails_the_bootstrap_with_the_reason() {
    let server = double(Duration::from_secs(3600), false);
    let files = Files::new("denied", &server);
    let (_stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (kubeconfig, bootstrap, cert_dir) = (
        files.kubeconfig.clone(),
        files.bootstrap.clone(),
        files.cert_dir.clone(),
    );
    let bootstrap = std::thread::spawn(move || {
        rkubelet::certificate::bootstrap::load_client_cert(
            &kubeconfig,
            &bootstrap,
            &cert_dir,
            NODE,
            &stop_rx,
        )
    });
    let name = wait_for(WAIT, || {
        let csr = client_csrs(&server).pop()?;
        Some(csr["metadata"]["name"].as_str()?.to_string())
    })
    .expect("the kubelet asks for a certificate");
    // Pending: nothing is written yet.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!bootstrap.is_finished());
    assert!(!files.kubeconfig.exists());
    server.deny_csr(&name).unwrap();
    let deadline = Instant::now() + WAIT;
    while !bootstrap.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = bootstrap.join().unwrap().unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("is denied"), "{err}");
    assert!(err.contains("KubectlDeny"), "{err}");
    assert!(!files.kubeconfig.exists());
    assert!(!files.current().exists());
}

#[test]
fn client_certificates_rotate_before_they_expire_while_the_node_keeps_working() {
    // Certificates valid 12 s: each is renewed 8.4 to 10.8 s after it was issued.
    let server = double(Duration::from_secs(12), true);
    let files = Files::new("rotation", &server);
    let rt = fake();
    let args = files.args("rotateCertificates: true\n");
    let started = Instant::now();
    let node = ClusterNode::start_with_args(&files.dir, &server, &rt, &args);
    assert!(wait_for(WAIT, || server.get_node(NODE)).is_some());
    assert!(runs(&server, "before"));

    // Three issued client CSRs: the bootstrap one and two renewals by the node itself.
    wait_for(Duration::from_secs(40), || {
        (files.client_pairs().len() >= 3).then_some(())
    })
    .expect("two rotations within 40 s");
    let csrs = client_csrs(&server);
    assert!(csrs.iter().filter(|c| issued(c)).count() >= 3, "{csrs:#?}");
    let (by_bootstrap, by_node): (Vec<&Value>, Vec<&Value>) = csrs
        .iter()
        .partition(|c| c["spec"]["username"] == "system:bootstrap:abcdef");
    assert_eq!(by_bootstrap.len(), 1, "{csrs:#?}");
    for csr in &by_node {
        assert_eq!(
            csr["spec"]["username"],
            format!("system:node:{NODE}"),
            "{csr:#}"
        );
        let name = csr["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("csr-"), "{name}");
    }
    let link = std::fs::read_link(files.current()).unwrap();
    let pairs = files.client_pairs();
    assert!(pairs.len() >= 3, "{pairs:?}");
    let in_use = pairs.iter().position(|p| p.file_name() == link.file_name());
    assert!(in_use.is_some_and(|i| i >= 2), "{link:?} in {pairs:?}");

    // The first certificate expired long ago: the node still renews its lease and runs new
    // pods, so every API connection uses a renewed certificate.
    assert!(started.elapsed() > Duration::from_secs(14));
    let now = SystemTime::now();
    assert!(
        wait_for(WAIT, || lease_renewed_since(&server, now).then_some(())).is_some(),
        "the lease is renewed after the rotations"
    );
    assert!(runs(&server, "after"));
    node.stop();
}

/// Whether a TLS client trusting only `ca_pem` completes a handshake with `addr` and gets an
/// HTTP answer.
fn trusted_by(addr: SocketAddr, ca_pem: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    if text.starts_with("HTTP/1.1 ") {
        Ok(())
    } else {
        Err(format!("no HTTP answer: {text:?}"))
    }
}

#[test]
fn the_serving_certificate_is_requested_and_served_once_approved() {
    let server = double(Duration::from_secs(3600), true);
    let files = Files::new("serving", &server);
    std::fs::write(files.dir.join("client-ca.crt"), server.ca_pem()).unwrap();
    let rt = fake();
    let port = free_port();
    let mut args = files.args("serverTLSBootstrap: true\n");
    args.extend([
        "--address=127.0.0.1".to_string(),
        format!("--port={port}"),
        "--read-only-port=0".to_string(),
        format!(
            "--client-ca-file={}",
            files.dir.join("client-ca.crt").display()
        ),
    ]);
    let node = ClusterNode::start_serving(&files.dir, &server, &rt, &args);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Serving CSRs wait for a human; until then the self-signed certificate is served.
    let csr = wait_for(WAIT, || {
        csrs_of(&server, "kubernetes.io/kubelet-serving").pop()
    })
    .expect("a serving CSR");
    assert_eq!(csr["spec"]["username"], format!("system:node:{NODE}"));
    assert_eq!(sorted_usages(&csr), ["digital signature", "server auth"]);
    assert!(!issued(&csr));
    let err = trusted_by(addr, &server.ca_pem()).unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    server
        .approve_csr(csr["metadata"]["name"].as_str().unwrap())
        .unwrap();
    let swapped = wait_for(WAIT, || trusted_by(addr, &server.ca_pem()).ok());
    assert!(swapped.is_some(), "the approved certificate is served");
    let mode = std::fs::metadata(files.cert_dir.join("kubelet-server-current.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    node.stop();
}
