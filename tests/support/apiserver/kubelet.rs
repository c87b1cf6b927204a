//! What the double does for and through kubelets, as kube-apiserver does:
//! - `tokenreviews` and `subjectaccessreviews` (the kubelet API's webhook authentication and
//!   authorization): tokens registered with [`Reviews::accept_token`] authenticate; a user is
//!   allowed when it is in `system:masters` or was allowed with [`Reviews::allow`], for every
//!   `nodes` subresource or only the named ones;
//! - the pod subresources `log`, `exec`, `attach` and `portforward`: the request is forwarded
//!   to the kubelet of the pod's node (its InternalIP and `daemonEndpoints.kubeletEndpoint`
//!   port), authenticated with the client certificate `kube-apiserver-kubelet-client`
//!   (group `system:masters`) and without checking the kubelet's serving certificate (the
//!   API server's default without `--kubelet-certificate-authority`; the verifier is the
//!   crate's own `insecure-skip-tls-verify` one). Upgraded connections
//!   are spliced both ways until either side closes.

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{json, Value};

use super::http::Request;
use super::resources::Resource;
use super::server::{Conn, Shared};
use super::status::ApiError;

/// Registered tokens and authorization decisions.
#[derive(Debug, Default)]
pub struct Reviews {
    tokens: Mutex<HashMap<String, (String, Vec<String>)>>,
    /// (user, subresource); subresource `*` allows all.
    allowed: Mutex<HashSet<(String, String)>>,
    /// Every SubjectAccessReview asked: (user, verb, subresource).
    asked: Mutex<Vec<(String, String, String)>>,
}

impl Reviews {
    /// TokenReview accepts `token` as `user` in `groups`.
    pub fn accept_token(&self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        self.tokens
            .lock()
            .unwrap()
            .insert(token.into(), (user.into(), groups));
    }

    /// SubjectAccessReview allows `user` the `nodes` subresources named (all with `*`).
    pub fn allow(&self, user: &str, subresources: &[&str]) {
        let mut allowed = self.allowed.lock().unwrap();
        for s in subresources {
            allowed.insert((user.into(), s.to_string()));
        }
    }

    /// The reviews asked so far: (user, verb, subresource).
    pub fn asked(&self) -> Vec<(String, String, String)> {
        self.asked.lock().unwrap().clone()
    }

    /// Answers a TokenReview.
    pub fn token_review(&self, mut review: Value) -> Value {
        let token = review["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let found = self.tokens.lock().unwrap().get(&token).cloned();
        review["status"] = match found {
            Some((user, groups)) => json!({
                "authenticated": true,
                "user": {"username": user, "groups": groups},
            }),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        review
    }

    /// Answers a SubjectAccessReview.
    pub fn subject_access_review(&self, mut review: Value) -> Value {
        let spec = &review["spec"];
        let user = spec["user"].as_str().unwrap_or_default().to_string();
        let groups: Vec<String> = spec["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let attrs = &spec["resourceAttributes"];
        let verb = attrs["verb"].as_str().unwrap_or_default().to_string();
        let sub = attrs["subresource"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.asked
            .lock()
            .unwrap()
            .push((user.clone(), verb, sub.clone()));
        let allowed = groups.iter().any(|g| g == "system:masters") || {
            let a = self.allowed.lock().unwrap();
            a.contains(&(user.clone(), "*".into())) || a.contains(&(user.clone(), sub.clone()))
        };
        review["status"] = if allowed {
            json!({"allowed": true})
        } else {
            json!({"allowed": false, "reason": format!("user {user} may not use nodes/{sub}")})
        };
        review
    }
}

/// The client configuration the double uses towards kubelets.
pub fn kubelet_client_config(shared: &Shared) -> Result<Arc<ClientConfig>, ApiError> {
    let identity = shared
        .pki
        .issue_client("kube-apiserver-kubelet-client")
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(&e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(&e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(rkubelet::api::AcceptAnyServerCert(provider)))
        .with_client_auth_cert(chain, key)
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok(Arc::new(config))
}

/// The kubelet path and query for pod subresource `sub` of `pod`.
fn kubelet_target(request: &Request, pod: &Value, sub: &str) -> Result<String, ApiError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let container = match request.query("container") {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].to_string(),
        None if sub == "portforward" => String::new(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let mut query: Vec<String> = Vec::new();
    for (k, v) in request.query_pairs() {
        let mapped = match (sub, k.as_str()) {
            (_, "container") => continue,
            ("exec" | "attach", "stdin") => "input",
            ("exec" | "attach", "stdout") => "output",
            ("exec" | "attach", "stderr") => "error",
            (_, other) => other,
        };
        let value = match (sub, mapped) {
            ("exec" | "attach", "input" | "output" | "error" | "tty") if v == "true" => "1",
            _ => v.as_str(),
        };
        query.push(format!("{mapped}={}", encode(value)));
    }
    let path = match sub {
        "log" => format!("/containerLogs/{ns}/{name}/{container}"),
        "exec" => format!("/exec/{ns}/{name}/{container}"),
        "attach" => format!("/attach/{ns}/{name}/{container}"),
        _ => format!("/portForward/{ns}/{name}"),
    };
    Ok(if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    })
}

fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Where the kubelet of `node` listens.
fn kubelet_address(node: &Value) -> Option<String> {
    let ip = node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64()?;
    Some(format!("{ip}:{port}"))
}

/// Forwards a pod subresource request to the pod's kubelet. `Ok(())` once the answer (or
/// the spliced stream) is over; the client connection must then close.
pub fn proxy(
    shared: &Shared,
    request: &Request,
    namespace: &str,
    name: &str,
    sub: &str,
    client: &mut Conn,
) -> Result<(), ApiError> {
    let pod = shared
        .store
        .get(&(Resource::Pods, namespace.into(), name.into()))
        .ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = shared
        .store
        .get(&(Resource::Nodes, String::new(), node_name.clone()))
        .ok_or_else(|| ApiError::not_found(Resource::Nodes, &node_name))?;
    let addr = kubelet_address(&node)
        .ok_or_else(|| ApiError::internal(&format!("node {node_name} has no kubelet address")))?;
    let target = kubelet_target(request, &pod, sub)?;
    let config = kubelet_client_config(shared)?;
    let unavailable =
        |e: io::Error| ApiError::internal(&format!("error dialing the kubelet {addr}: {e}"));
    let socket = TcpStream::connect(&addr).map_err(unavailable)?;
    let _ = socket.set_nodelay(true);
    let server_name =
        ServerName::try_from("kubelet").map_err(|e| ApiError::internal(&e.to_string()))?;
    let conn = ClientConnection::new(config, server_name)
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let mut kubelet = StreamOwned::new(conn, socket);
    let mut head = format!("{} {target} HTTP/1.1\r\nHost: {addr}\r\n", request.method);
    let upgrade = request.header("upgrade").is_some();
    for (k, v) in request.headers() {
        if matches!(
            k.as_str(),
            "host" | "authorization" | "content-length" | "connection"
        ) {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(if upgrade {
        "Connection: Upgrade\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut relay = || -> io::Result<()> {
        kubelet.write_all(head.as_bytes())?;
        kubelet.flush()?;
        splice(client, &mut kubelet)
    };
    if let Err(e) = relay() {
        log::debug!("apiserver double: proxy to kubelet {addr}: {e}");
    }
    Ok(())
}

/// Copies both ways until the kubelet closes (or the client goes away).
fn splice(
    client: &mut Conn,
    kubelet: &mut StreamOwned<ClientConnection, TcpStream>,
) -> io::Result<()> {
    let poll = Some(Duration::from_millis(10));
    client.sock.set_read_timeout(poll)?;
    kubelet.sock.set_read_timeout(poll)?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut client_open = true;
    let waiting = |e: &io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    loop {
        if client_open {
            match client.read(&mut buf) {
                Ok(0) => client_open = false,
                Ok(n) => {
                    kubelet.write_all(&buf[..n])?;
                    kubelet.flush()?;
                }
                Err(e) if waiting(&e) => {}
                Err(_) => client_open = false,
            }
        }
        match kubelet.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                client.write_all(&buf[..n])?;
                client.flush()?;
            }
            Err(e) if waiting(&e) => {
                if !client_open {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
