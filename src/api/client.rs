//! The REST client: [`RestClient`] implements [`KubeClient`] over a blocking reqwest client
//! with rustls (ring provider, no OpenSSL; see `tls.rs`). It is shared (`Arc`) by every thread
//! that talks to the API server: the pod source's watch, the status manager, node status and
//! lease, events. Each call blocks only its own thread.
//!
//! Each request goes through the client's token bucket, carries a timeout, and is retried with
//! exponential backoff only when retrying can help: 429 (honouring `Retry-After`), 5xx, and
//! connection failures (other transport failures only for requests other than POST, which
//! may have been applied). Error responses are decoded from their `meta/v1 Status` body.
//!
//! This file holds the client and its retrying HTTP core; the verbs are in `verbs.rs`, the
//! bearer token in `token.rs`.

mod csr;
#[cfg(test)]
mod test_server;
mod token;
mod verbs;

use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kubeconfig::RestConfig;
use super::rate_limit::RateLimiter;
use super::request::{json_body, status_from_body, transport_error, Body, JSON};
use super::stats::{Counters, Op, RequestStats};
use super::ApiError;
use crate::util::backoff::Exponential;
use token::TokenSource;

/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A blocking Kubernetes REST client. Share it behind an `Arc`; every method blocks the
/// calling thread only, and no lock is held while a request is in flight.
pub struct RestClient {
    /// Replaced whole when the client certificate rotates: calls in flight (a watch) keep
    /// the connection they have, new calls connect with the new certificate.
    http: RwLock<reqwest::blocking::Client>,
    /// What `http` was built from, kept to rebuild it with a new client certificate.
    config: RestConfig,
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
        let http = http_client(&config, timeout)?;
        Ok(RestClient {
            http: RwLock::new(http),
            server: config.server.trim_end_matches('/').to_string(),
            token: TokenSource::new(config.token_file.clone(), config.bearer_token.clone()),
            config,
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

    /// Authenticates new connections with another client certificate (PEM chain and key),
    /// as after a certificate rotation. Connections in use keep the certificate they were
    /// opened with until they end.
    pub fn set_client_certificate(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), ApiError> {
        let mut config = self.config.clone();
        config.client_cert_pem = Some(cert_pem.to_vec());
        config.client_key_pem = Some(key_pem.to_vec());
        let http = http_client(&config, self.timeout)?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        Ok(())
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
        let http = self.http.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut request = http.request(method, &url).timeout(timeout);
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
        // Through a `Value`, as everywhere: one copy of each type's decoder in the binary.
        crate::util::decode::from_slice(&bytes).map_err(|e| ApiError::Decode {
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

/// The HTTP client for `config`, each request bounded by `timeout` unless it says otherwise.
fn http_client(
    config: &RestConfig,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, ApiError> {
    let builder = reqwest::blocking::Client::builder()
        .user_agent(concat!("rkubelet/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout);
    super::tls::configure(builder, config)?
        .build()
        .map_err(|e| ApiError::Config(format!("{}: building the client: {e}", config.server)))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::{mpsc, Arc};

    use k8s_openapi::api::core::v1::Event;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::test_server::{client, fast_retries, serve, status_json, Reply, POD};
    use super::*;
    use crate::api::tls::fixtures::{CA_PEM, LEAF_KEY, LEAF_PEM};
    use crate::api::KubeClient;

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
