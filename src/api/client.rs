//! The REST client: [`RestClient`] implements [`KubeClient`] over a blocking reqwest client
//! with rustls (ring provider, no OpenSSL; see `tls.rs`). It is shared (`Arc`) by every thread
//! that talks to the API server: the pod source's watch, the status manager, node status and
//! lease, events. Each call blocks only its own thread.
//!
//! Each request goes through the client's token bucket, carries a timeout, and is retried with
//! exponential backoff only when retrying can help: 429 (honouring `Retry-After`), 5xx, and
//! connection failures (other transport failures only for requests other than POST, which
//! may have been applied). Error responses are decoded from their `meta/v1 Status` body.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::kubeconfig::RestConfig;
use super::rate_limit::RateLimiter;
use super::request::{
    core_path, json_body, lease_path, list_query, namespace_of, node_path, status_from_body,
    transport_error, Body, JSON,
};
use super::stats::{Counters, Op, RequestStats};
use super::watch::decode_watch;
use super::{ApiError, ApiStatus, DeleteOptions, KubeClient, List, ListOptions, WatchStream};
use crate::util::backoff::Exponential;

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a watch response may take beyond its server-side `timeoutSeconds`.
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// Bound of a watch without `timeoutSeconds`: the API server ends those after at most twice
/// its `--min-request-timeout` (1800 s by default).
const WATCH_DEFAULT_BOUND_SECS: u64 = 3600;
/// How often a `tokenFile` is re-read, to pick up rotated tokens.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);

/// When and how often failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubled after each.
    pub initial_backoff: Duration,
    /// Cap of the doubling wait.
    pub max_backoff: Duration,
    /// Tries in all, the first included.
    pub max_tries: u32,
    /// Cap of a server's `Retry-After`.
    pub max_retry_after: Duration,
    /// No retry starts if it would begin later than this after the first try.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_tries: 5,
            max_retry_after: Duration::from_secs(10),
            max_total: Duration::from_secs(60),
        }
    }
}

/// The bearer token, re-read from its file at most once per [`TOKEN_REFRESH`].
struct TokenSource {
    file: Option<PathBuf>,
    /// The token and when it was last read from `file`.
    cached: Mutex<(Option<String>, Instant)>,
}

impl TokenSource {
    fn bearer(&self) -> Option<String> {
        let (token, read_at) = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(file) = &self.file else {
            return token;
        };
        if read_at.elapsed() < TOKEN_REFRESH {
            return token;
        }
        // Read without the lock held; two threads may both read, which is harmless.
        let fresh = match std::fs::read_to_string(file) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                let file = file.display();
                log::warn!("re-reading token file {file}: {e}; keeping the previous token");
                None
            }
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fresh) = fresh {
            cached.0 = Some(fresh);
        }
        cached.1 = Instant::now();
        cached.0.clone()
    }
}

/// A blocking Kubernetes REST client. Share it behind an `Arc`; every method blocks the
/// calling thread only, and no lock is held while a request is in flight.
pub struct RestClient {
    http: reqwest::blocking::Client,
    /// Base URL without a trailing slash.
    server: String,
    token: TokenSource,
    limiter: RateLimiter,
    timeout: Duration,
    retry: RetryPolicy,
    counters: Counters,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// Builds a client for `config`, limited to `qps` requests a second with bursts of `burst`
    /// (`qps` ≤ 0: unlimited), each request bounded by `timeout` (watches by their
    /// `timeoutSeconds` plus 30 s).
    pub fn new(
        config: RestConfig,
        qps: f32,
        burst: u32,
        timeout: Duration,
    ) -> Result<RestClient, ApiError> {
        let builder = reqwest::blocking::Client::builder()
            .user_agent(concat!("rkubelet/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout);
        let http = super::tls::configure(builder, &config)?
            .build()
            .map_err(|e| {
                ApiError::Config(format!("{}: building the client: {e}", config.server))
            })?;
        Ok(RestClient {
            http,
            server: config.server.trim_end_matches('/').to_string(),
            token: TokenSource {
                file: config.token_file,
                cached: Mutex::new((config.bearer_token, Instant::now())),
            },
            limiter: RateLimiter::new(qps, burst),
            timeout,
            retry: RetryPolicy::default(),
            counters: Counters::default(),
        })
    }

    /// Replaces the retry policy (tests shorten the waits).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The API server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }

    /// Sends one call, retrying as the policy allows; returns the successful response.
    fn send(
        &self,
        op: Op,
        path: &str,
        query: &str,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<Response, ApiError> {
        self.counters.call(op);
        let first = Instant::now();
        let mut backoff = Exponential::new(self.retry.initial_backoff, self.retry.max_backoff);
        let mut tries = 0;
        loop {
            tries += 1;
            self.limiter.acquire();
            let err = match self.try_once(op, path, query, body.as_ref(), timeout) {
                Ok(resp) => return Ok(resp),
                Err(err) => err,
            };
            let delay = backoff.next_delay();
            let (may_retry, wait) = match &err {
                ApiError::Status { retry_after, .. } => (
                    err.is_retriable(),
                    retry_after.map_or(delay, |s| {
                        Duration::from_secs(s).min(self.retry.max_retry_after)
                    }),
                ),
                // A POST that failed after connecting may have been applied: not repeated.
                ApiError::Transport { message, .. } => (
                    op.http_verb() != "POST" || message.starts_with("connect"),
                    delay,
                ),
                ApiError::Decode { .. } | ApiError::Config(_) => (false, delay),
            };
            let too_late = first.elapsed() + wait > self.retry.max_total;
            if !may_retry || tries >= self.retry.max_tries || too_late {
                return Err(err);
            }
            log::debug!("{err}; retry {tries} in {wait:?}");
            self.counters.retry();
            std::thread::sleep(wait);
        }
    }

    /// One HTTP exchange: a 2xx response, or the error it came to.
    fn try_once(
        &self,
        op: Op,
        path: &str,
        query: &str,
        body: Option<&Body>,
        timeout: Duration,
    ) -> Result<Response, ApiError> {
        let verb = op.http_verb();
        let method = Method::from_bytes(verb.as_bytes()).unwrap_or(Method::GET);
        let url = format!("{}{path}{query}", self.server);
        let mut request = self.http.request(method, &url).timeout(timeout);
        request = request.header(ACCEPT, JSON);
        if let Some(token) = self.token.bearer() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, body.content_type);
            request = request.body(body.bytes.clone());
        }
        let started = Instant::now();
        let result = request.send();
        let took = started.elapsed();
        let resp = result.map_err(|e| {
            log::trace!("{verb} {path}{query} failed after {took:?}: {e}");
            transport_error(verb, path, &e)
        })?;
        let code = resp.status().as_u16();
        log::trace!("{verb} {path}{query} {code} in {took:?}");
        if resp.status().is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().map_err(|e| transport_error(verb, path, &e))?;
        Err(ApiError::Status {
            verb,
            path: path.to_string(),
            status: status_from_body(code, &bytes),
            retry_after,
        })
    }

    /// Sends a call and decodes its JSON response.
    fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        query: &str,
        body: Option<Body>,
    ) -> Result<T, ApiError> {
        let resp = self.send(op, path, query, body, self.timeout)?;
        let verb = op.http_verb();
        let bytes = resp.bytes().map_err(|e| transport_error(verb, path, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            what: format!("{verb} {path}"),
            message: e.to_string(),
        })
    }

    /// A GET of one object.
    fn get<T: DeserializeOwned>(&self, op: Op, path: &str) -> Result<T, ApiError> {
        self.call(op, path, "", None)
    }

    /// A write with a JSON body (see [`json_body`]), decoding the object returned.
    fn write<T: DeserializeOwned, B: Serialize>(
        &self,
        op: Op,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(op, path, "", Some(json_body(op, path, body)?))
    }
}

/// The parts of a list response the kubelet uses.
#[derive(Deserialize)]
struct ListBody<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
    #[serde(default)]
    metadata: ListMeta,
}

impl KubeClient for RestClient {
    fn list_pods(&self, opts: &ListOptions) -> Result<List<Pod>, ApiError> {
        let query = list_query(opts, false);
        let list: ListBody<Pod> = self.call(Op::ListPods, "/api/v1/pods", &query, None)?;
        let resource_version = list.metadata.resource_version.unwrap_or_default();
        Ok(List {
            items: list.items,
            resource_version,
        })
    }

    fn watch_pods(&self, opts: &ListOptions) -> Result<WatchStream<Pod>, ApiError> {
        let path = "/api/v1/pods";
        let secs = opts
            .timeout_seconds
            .map_or(WATCH_DEFAULT_BOUND_SECS, u64::from);
        let timeout = Duration::from_secs(secs) + WATCH_GRACE;
        let resp = self.send(Op::WatchPods, path, &list_query(opts, true), None, timeout)?;
        Ok(decode_watch(resp, format!("watch {path}")))
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        self.get(Op::GetPod, &core_path(namespace, "pods", Some(name)))
    }

    fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let path = core_path(namespace_of(&pod.metadata), "pods", None);
        self.write(Op::CreatePod, &path, pod)
    }

    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(), ApiError> {
        let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(grace) = opts.grace_period_seconds {
            body["gracePeriodSeconds"] = grace.into();
        }
        if let Some(uid) = &opts.precondition_uid {
            body["preconditions"] = serde_json::json!({ "uid": uid });
        }
        // The answer (the pod being deleted, or a Status) is not needed.
        let path = core_path(namespace, "pods", Some(name));
        let body = json_body(Op::DeletePod, &path, &body)?;
        self.send(Op::DeletePod, &path, "", Some(body), self.timeout)
            .map(drop)
    }

    fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Pod, ApiError> {
        let path = format!("{}/status", core_path(namespace, "pods", Some(name)));
        self.write(Op::PatchPodStatus, &path, patch)
    }

    fn get_node(&self, name: &str) -> Result<Node, ApiError> {
        self.get(Op::GetNode, &node_path(name))
    }

    fn create_node(&self, node: &Node) -> Result<Node, ApiError> {
        self.write(Op::CreateNode, "/api/v1/nodes", node)
    }

    fn patch_node(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        self.write(Op::PatchNode, &node_path(name), patch)
    }

    fn patch_node_status(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        self.write(
            Op::PatchNodeStatus,
            &format!("{}/status", node_path(name)),
            patch,
        )
    }

    fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, ApiError> {
        self.get(Op::GetLease, &lease_path(namespace, Some(name)))
    }

    fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let path = lease_path(namespace_of(&lease.metadata), None);
        self.write(Op::CreateLease, &path, lease)
    }

    fn update_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let namespace = namespace_of(&lease.metadata);
        let Some(name) = lease.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            let message = "metadata.name: Required value".to_string();
            return Err(ApiError::Status {
                verb: "PUT",
                path: lease_path(namespace, None),
                status: ApiStatus {
                    code: 422,
                    reason: "Invalid".into(),
                    message,
                },
                retry_after: None,
            });
        };
        self.write(Op::UpdateLease, &lease_path(namespace, Some(name)), lease)
    }

    fn create_event(&self, event: &Event) -> Result<Event, ApiError> {
        let path = core_path(namespace_of(&event.metadata), "events", None);
        self.write(Op::CreateEvent, &path, event)
    }

    fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Result<Event, ApiError> {
        self.write(
            Op::PatchEvent,
            &core_path(namespace, "events", Some(name)),
            patch,
        )
    }

    fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ApiError> {
        self.get(
            Op::GetConfigMap,
            &core_path(namespace, "configmaps", Some(name)),
        )
    }

    fn get_secret(&self, namespace: &str, name: &str) -> Result<Secret, ApiError> {
        self.get(Op::GetSecret, &core_path(namespace, "secrets", Some(name)))
    }

    fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ApiError> {
        let path = core_path(namespace, "services", None);
        let list: ListBody<Service> = self.call(Op::ListServices, &path, "", None)?;
        Ok(list.items)
    }

    fn list_all_services(&self, opts: &ListOptions) -> Result<List<Service>, ApiError> {
        let query = list_query(opts, false);
        let list: ListBody<Service> =
            self.call(Op::ListAllServices, "/api/v1/services", &query, None)?;
        Ok(List {
            items: list.items,
            resource_version: list.metadata.resource_version.unwrap_or_default(),
        })
    }

    fn watch_services(&self, opts: &ListOptions) -> Result<WatchStream<Service>, ApiError> {
        let path = "/api/v1/services";
        let secs = opts
            .timeout_seconds
            .map_or(WATCH_DEFAULT_BOUND_SECS, u64::from);
        let timeout = Duration::from_secs(secs) + WATCH_GRACE;
        let query = list_query(opts, true);
        let resp = self.send(Op::WatchServices, path, &query, None, timeout)?;
        Ok(decode_watch(resp, format!("watch {path}")))
    }

    fn get_runtime_class(&self, name: &str) -> Result<RuntimeClass, ApiError> {
        let path = format!(
            "/apis/node.k8s.io/v1/runtimeclasses/{}",
            super::request::encode(name)
        );
        self.get(Op::GetRuntimeClass, &path)
    }

    fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, ApiError> {
        let sa_path = core_path(namespace, "serviceaccounts", Some(service_account));
        self.write(Op::CreateToken, &format!("{sa_path}/token"), request)
    }

    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError> {
        let path = "/apis/authentication.k8s.io/v1/tokenreviews";
        self.write(Op::CreateTokenReview, path, review)
    }

    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError> {
        let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        self.write(Op::CreateSubjectAccessReview, path, review)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    use crate::api::tls::fixtures::{CA_PEM, LEAF_KEY, LEAF_PEM};
    use crate::api::WatchEvent;

    /// What the test server sends back on one connection.
    enum Reply {
        /// Status code, extra header lines (each ending in CRLF), JSON body.
        Json(u16, &'static str, String),
        /// A chunked body: the first chunk, then the rest once the gate opens (or is dropped).
        Chunked(Vec<&'static str>, mpsc::Receiver<()>),
        /// Read the request, then say nothing until the gate opens (or is dropped).
        Stall(mpsc::Receiver<()>),
    }

    /// One request as the server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// A one-thread HTTP/1.1 server on 127.0.0.1 serving `replies` on successive connections,
    /// TLS when `tls` is set. It stops after the last reply or 10 s without a connection.
    fn serve(
        replies: Vec<Reply>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (String, JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in replies {
                let deadline = Instant::now() + Duration::from_secs(10);
                let tcp = loop {
                    match listener.accept() {
                        Ok((tcp, _)) => break tcp,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(_) => return seen,
                    }
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                match &tls {
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        let mut stream = rustls::StreamOwned::new(conn, tcp);
                        if let Some(s) = exchange(&mut stream, reply) {
                            seen.push(s);
                        }
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => {
                        let mut tcp = tcp;
                        if let Some(s) = exchange(&mut tcp, reply) {
                            seen.push(s);
                        }
                    }
                }
            }
            seen
        });
        (url, handle)
    }

    fn exchange<S: Read + Write>(stream: &mut S, reply: Reply) -> Option<Seen> {
        let seen = read_request(stream)?;
        match reply {
            Reply::Json(code, extra, body) => {
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).ok()?;
                stream.write_all(body.as_bytes()).ok()?;
            }
            Reply::Chunked(chunks, gate) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                stream.write_all(head.as_bytes()).ok()?;
                for (i, chunk) in chunks.iter().enumerate() {
                    if i == 1 {
                        let _ = gate.recv_timeout(Duration::from_secs(10));
                    }
                    stream
                        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                        .ok()?;
                    stream.flush().ok()?;
                }
                stream.write_all(b"0\r\n\r\n").ok()?;
            }
            Reply::Stall(gate) => {
                let _ = gate.recv_timeout(Duration::from_secs(10));
            }
        }
        stream.flush().ok()?;
        Some(seen)
    }

    fn read_request<S: Read>(stream: &mut S) -> Option<Seen> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?.to_string();
        let target = request_line.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
            body.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&body).to_string();
        Some(Seen {
            method,
            target,
            headers,
            body,
        })
    }

    fn fast_retries() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    fn client(url: &str) -> RestClient {
        let config = RestConfig {
            server: format!("{url}/"),
            bearer_token: Some("tok".into()),
            ..RestConfig::default()
        };
        RestClient::new(config, 0.0, 1, Duration::from_secs(5))
            .unwrap()
            .with_retry_policy(fast_retries())
    }

    fn status_json(code: u16, reason: &str, message: &str) -> String {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code})
        .to_string()
    }

    const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"ns","resourceVersion":"7"}}"#;

    #[test]
    fn not_found_status_is_decoded_and_headers_sent() {
        let body = status_json(404, "NotFound", "pods \"a\" not found");
        let (url, server) = serve(vec![Reply::Json(404, "", body)], None);
        let c = client(&url);
        let err = c.get_pod("ns", "a").unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert_eq!(
            err.to_string(),
            "GET /api/v1/namespaces/ns/pods/a: 404 (NotFound): pods \"a\" not found"
        );
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].target, "/api/v1/namespaces/ns/pods/a");
        assert_eq!(
            seen[0].header("user-agent"),
            Some(concat!("rkubelet/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(seen[0].header("authorization"), Some("Bearer tok"));
        assert_eq!(seen[0].header("accept"), Some("application/json"));
        assert_eq!(c.stats().retries, 0);
    }

    #[test]
    fn create_conflict_is_already_exists_and_not_retried() {
        let body = status_json(409, "AlreadyExists", "pods \"a\" already exists");
        let (url, server) = serve(vec![Reply::Json(409, "", body)], None);
        let c = client(&url);
        let pod: Pod = serde_json::from_str(POD).unwrap();
        let err = c.create_pod(&pod).unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        let seen = server.join().unwrap();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/api/v1/namespaces/ns/pods")
        );
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert!(seen[0].body.contains(r#""name":"a""#), "{}", seen[0].body);
        let stats = c.stats();
        assert_eq!(
            (stats.count("POST", "pods"), stats.writes(), stats.retries),
            (1, 1, 0)
        );
    }

    #[test]
    fn server_errors_are_retried_until_success() {
        let replies = vec![
            Reply::Json(500, "", "oops".into()),
            Reply::Json(503, "", status_json(503, "ServiceUnavailable", "etcd")),
            Reply::Json(200, "", POD.into()),
        ];
        let (url, server) = serve(replies, None);
        let c = client(&url);
        let pod = c.get_pod("ns", "a").unwrap();
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(server.join().unwrap().len(), 3);
        let stats = c.stats();
        assert_eq!(
            (stats.count("GET", "pods"), stats.retries, stats.total()),
            (1, 2, 1)
        );
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        let replies = vec![
            Reply::Json(
                429,
                "Retry-After: 1\r\n",
                status_json(429, "TooManyRequests", "slow down"),
            ),
            Reply::Json(200, "", POD.into()),
        ];
        let (url, server) = serve(replies, None);
        let c = client(&url);
        let started = Instant::now();
        c.get_pod("ns", "a").unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(server.join().unwrap().len(), 2);
        assert_eq!(c.stats().retries, 1);
    }

    #[test]
    fn bad_request_is_not_retried_and_plain_bodies_become_statuses() {
        let (url, server) = serve(vec![Reply::Json(400, "", "bad patch".into())], None);
        let c = client(&url);
        let err = c
            .patch_pod_status("ns", "a", &serde_json::json!({"status": {}}))
            .unwrap_err();
        match &err {
            ApiError::Status {
                verb, path, status, ..
            } => {
                assert_eq!(
                    (*verb, path.as_str()),
                    ("PATCH", "/api/v1/namespaces/ns/pods/a/status")
                );
                assert_eq!(
                    (status.code, status.reason.as_str(), status.message.as_str()),
                    (400, "BadRequest", "bad patch")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("content-type"),
            Some("application/strategic-merge-patch+json")
        );
        assert_eq!(c.stats().retries, 0);
    }

    #[test]
    fn list_encodes_selectors_and_returns_resource_version() {
        let body = r#"{"kind":"PodList","metadata":{"resourceVersion":"99"},"items":[{"metadata":{"name":"a"}}]}"#;
        let (url, server) = serve(vec![Reply::Json(200, "", body.into())], None);
        let c = client(&url);
        let opts = ListOptions {
            field_selector: Some("spec.nodeName=node 1,status.phase!=Failed".into()),
            label_selector: Some("app in (a,b)".into()),
            resource_version: Some("0".into()),
            ..ListOptions::default()
        };
        let list = c.list_pods(&opts).unwrap();
        assert_eq!(
            (list.items.len(), list.resource_version.as_str()),
            (1, "99")
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0].target,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode%201%2Cstatus.phase%21%3DFailed\
             &labelSelector=app%20in%20%28a%2Cb%29&resourceVersion=0"
        );
        assert_eq!(c.stats().count("LIST", "pods"), 1);
    }

    #[test]
    fn watch_streams_a_chunked_response() {
        let (open, gate) = mpsc::channel();
        let chunks = vec![
            "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"8\"}}}\n",
            "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":",
            "{\"name\":\"a\"}}}\n{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n",
            "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\",\"message\":\"too old\"}}\n",
        ];
        let (url, server) = serve(vec![Reply::Chunked(chunks, gate)], None);
        let c = client(&url);
        let opts = ListOptions {
            field_selector: Some("spec.nodeName=n1".into()),
            resource_version: Some("7".into()),
            timeout_seconds: Some(5),
            allow_watch_bookmarks: true,
            ..ListOptions::default()
        };
        let mut stream = c.watch_pods(&opts).unwrap();
        // The first event arrives while the server still holds back the rest.
        assert!(matches!(stream.next(), Some(Ok(WatchEvent::Added(_)))));
        open.send(()).unwrap();
        let rest: Vec<_> = stream.map(Result::unwrap).collect();
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert!(matches!(rest[0], WatchEvent::Modified(_)));
        assert_eq!(
            rest[1],
            WatchEvent::Bookmark {
                resource_version: "9".into()
            }
        );
        assert!(matches!(&rest[2], WatchEvent::Error(s) if s.code == 410 && s.reason == "Expired"));
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0].target,
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion=7&timeoutSeconds=5&allowWatchBookmarks=true"
        );
        assert_eq!(c.stats().count("WATCH", "pods"), 1);
    }

    #[test]
    fn stalled_server_times_out() {
        let (release, gate) = mpsc::channel();
        let (url, server) = serve(vec![Reply::Stall(gate)], None);
        let config = RestConfig {
            server: url,
            ..RestConfig::default()
        };
        let c = RestClient::new(config, 0.0, 1, Duration::from_millis(300))
            .unwrap()
            .with_retry_policy(RetryPolicy {
                max_tries: 1,
                ..fast_retries()
            });
        let started = Instant::now();
        let err = c.get_node("n1").unwrap_err();
        assert!(
            matches!(err, ApiError::Transport { timeout: true, .. }),
            "{err:?}"
        );
        assert!(err.is_retriable());
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(release);
        assert_eq!(server.join().unwrap()[0].target, "/api/v1/nodes/n1");
    }

    #[test]
    fn refused_connections_are_retried_then_reported() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(&format!("http://127.0.0.1:{port}"));
        let err = c.create_event(&Event::default()).unwrap_err();
        assert!(
            matches!(&err, ApiError::Transport { message, .. } if message.starts_with("connect")),
            "{err}"
        );
        assert_eq!(
            c.stats().retries,
            u64::from(RetryPolicy::default().max_tries) - 1
        );
    }

    #[test]
    fn delete_and_lease_paths_and_bodies() {
        let replies = vec![
            Reply::Json(200, "", POD.into()),
            Reply::Json(
                200,
                "",
                r#"{"metadata":{"name":"n1","namespace":"kube-node-lease"}}"#.into(),
            ),
        ];
        let (url, server) = serve(replies, None);
        let c = client(&url);
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some("u1".into()),
        };
        c.delete_pod("ns", "a", &opts).unwrap();
        let lease: Lease = serde_json::from_str(
            r#"{"metadata":{"name":"n1","namespace":"kube-node-lease","resourceVersion":"3"}}"#,
        )
        .unwrap();
        c.update_lease(&lease).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("DELETE", "/api/v1/namespaces/ns/pods/a")
        );
        let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(body["gracePeriodSeconds"], 0);
        assert_eq!(body["preconditions"]["uid"], "u1");
        assert_eq!(
            (seen[1].method.as_str(), seen[1].target.as_str()),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
            )
        );
        assert!(seen[1].body.contains(r#""resourceVersion":"3""#));
        let stats = c.stats();
        assert_eq!(
            (
                stats.count("DELETE", "pods"),
                stats.count("PUT", "leases"),
                stats.writes()
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn token_file_is_reread_after_a_minute() {
        let dir = std::env::temp_dir().join(format!("rkubelet-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "new\n").unwrap();
        let Some(long_ago) = Instant::now().checked_sub(TOKEN_REFRESH * 2) else {
            return; // The machine has been up for less than two minutes.
        };
        let source = TokenSource {
            file: Some(file.clone()),
            cached: Mutex::new((Some("old".into()), Instant::now())),
        };
        assert_eq!(source.bearer().as_deref(), Some("old"));
        source.cached.lock().unwrap().1 = long_ago;
        assert_eq!(source.bearer().as_deref(), Some("new"));
        std::fs::remove_file(&file).unwrap();
        source.cached.lock().unwrap().1 = long_ago;
        assert_eq!(
            source.bearer().as_deref(),
            Some("new"),
            "a failed re-read keeps the token"
        );
    }

    fn tls_server_config() -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CA_PEM.as_bytes()).unwrap())
            .unwrap();
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(LEAF_PEM.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(LEAF_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    fn tls_rest_config(url: String) -> RestConfig {
        RestConfig {
            server: url,
            ca_pem: Some(CA_PEM.into()),
            client_cert_pem: Some(LEAF_PEM.into()),
            client_key_pem: Some(LEAF_KEY.into()),
            tls_server_name: Some("kubernetes".into()),
            ..RestConfig::default()
        }
    }

    #[test]
    fn mutual_tls_with_ca_and_server_name() {
        let (url, server) = serve(
            vec![Reply::Json(200, "", POD.into())],
            Some(tls_server_config()),
        );
        let c = RestClient::new(tls_rest_config(url), 0.0, 1, Duration::from_secs(5)).unwrap();
        c.get_pod("ns", "a").unwrap();
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn tls_verification_fails_for_the_wrong_name_and_insecure_skips_it() {
        let (url, server) = serve(
            vec![
                Reply::Json(200, "", POD.into()),
                Reply::Json(200, "", POD.into()),
            ],
            Some(tls_server_config()),
        );
        // The certificate names `kubernetes`, not 127.0.0.1.
        let config = RestConfig {
            tls_server_name: None,
            ..tls_rest_config(url.clone())
        };
        let c = RestClient::new(config, 0.0, 1, Duration::from_secs(5))
            .unwrap()
            .with_retry_policy(RetryPolicy {
                max_tries: 1,
                ..fast_retries()
            });
        let err = c.get_pod("ns", "a").unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err}");
        let config = RestConfig {
            ca_pem: None,
            tls_server_name: None,
            insecure_skip_tls_verify: true,
            ..tls_rest_config(url)
        };
        let c = RestClient::new(config, 0.0, 1, Duration::from_secs(5)).unwrap();
        c.get_pod("ns", "a").unwrap();
        assert_eq!(
            server.join().unwrap().len(),
            1,
            "the refused handshake never reached a request"
        );
    }
}
