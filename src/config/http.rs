//! The static pod source for `--manifest-url` (upstream `config/http.go`), run on thread
//! `source-http`.
//!
//! Every `http_check_frequency` the URL is fetched (GET with the `--manifest-url-header`
//! headers, 10 s timeout). The body holds a `Pod`, a `PodList` or a `List` of pods; one bad pod
//! rejects the whole body. As upstream: a body identical to the last one is not decoded again
//! and sends nothing; a non-200 answer, a transport error or a bad body is logged with the URL
//! and sends nothing, so the last good state stands; an empty 200 body sends an empty `Set`.
//!
//! The blocking client needs a rustls crypto provider installed by the binary's `main`
//! (`rustls-no-provider`); without one, [`HttpSource::new`] returns an error instead of
//! letting reqwest panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver, Sender};
use log::{debug, error, info};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::manifest::{ManifestError, ManifestSource, MAX_MANIFEST_BYTES};
use crate::config::mux::send_or_stop;
use crate::config::static_pod::decode_static_pods;
use crate::config::update::{PodOperation, PodUpdate, HTTP_SOURCE};

/// Timeout of one fetch, connection included (upstream's client timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// After this many failures in a row, failures are logged at debug only (upstream: 3).
const LOUD_FAILURES: u32 = 3;

/// Why the URL source could not be built or one poll yielded nothing.
#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    /// No rustls crypto provider is installed (the binary's `main` installs one).
    #[error("no rustls crypto provider installed; cannot build the HTTP client for {url}")]
    NoCryptoProvider {
        /// The manifest URL.
        url: String,
    },
    /// A `--manifest-url-header` name or value is not valid in HTTP.
    #[error("invalid manifest URL header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Whether the name or a value was rejected.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for {url}: {source}")]
    Client {
        /// The manifest URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// The URL is malformed.
    #[error("invalid manifest URL {url:?}: {source}")]
    InvalidUrl {
        /// The manifest URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// Connecting, sending or receiving failed (includes the timeout).
    #[error("{url}: request failed: {source}")]
    Request {
        /// The manifest URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// Reading the body failed.
    #[error("{url}: cannot read body: {source}")]
    Body {
        /// The manifest URL.
        url: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server answered other than 200 OK.
    #[error("{url}: {status}")]
    Status {
        /// The manifest URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The body holds no usable pods.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl HttpSourceError {
    /// Network, status and body problems may go away on the next poll; configuration
    /// problems will not.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            HttpSourceError::Request { .. }
                | HttpSourceError::Body { .. }
                | HttpSourceError::Status { .. }
                | HttpSourceError::Manifest(_)
        )
    }
}

/// The `--manifest-url` source. Owns its state; moved into its thread by `start`.
pub struct HttpSource {
    url: String,
    headers: HeaderMap,
    node_name: String,
    check_frequency: Duration,
    client: reqwest::blocking::Client,
    /// The last 200 body; an identical body is not decoded or sent again (upstream `s.data`).
    last_body: Option<Vec<u8>>,
    /// Failures in a row, to quieten the log after a few.
    failures: u32,
}

impl HttpSource {
    /// A source polling `url` with `headers` every `check_frequency` (upstream
    /// `httpCheckFrequency`, 20 s by default; at least one second).
    pub fn new(
        url: &str,
        headers: &BTreeMap<String, Vec<String>>,
        node_name: &str,
        check_frequency: Duration,
    ) -> Result<Self, HttpSourceError> {
        let mut header_map = HeaderMap::new();
        for (name, values) in headers {
            let invalid = |reason| HttpSourceError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("bad name"))?;
            for value in values {
                let value = HeaderValue::from_str(value).map_err(|_| invalid("bad value"))?;
                header_map.append(header.clone(), value);
            }
        }
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(HttpSourceError::NoCryptoProvider { url: url.into() });
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| HttpSourceError::Client {
                url: url.into(),
                source,
            })?;
        client
            .get(url)
            .build()
            .map_err(|source| HttpSourceError::InvalidUrl {
                url: url.into(),
                source,
            })?;
        Ok(HttpSource {
            url: url.to_string(),
            headers: header_map,
            node_name: node_name.to_string(),
            check_frequency: check_frequency.max(Duration::from_secs(1)),
            client,
            last_body: None,
            failures: 0,
        })
    }

    /// Spawns thread `source-http` running [`run`](HttpSource::run).
    pub fn start(
        self,
        updates: Sender<PodUpdate>,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("source-http".into())
            .spawn(move || self.run(updates, stop))
    }

    /// Polls now and on every tick, sending `Set`s to `updates` until `stop` fires or the mux
    /// is gone. A poll in flight when stop fires finishes first (at most [`REQUEST_TIMEOUT`]).
    pub fn run(mut self, updates: Sender<PodUpdate>, stop: Receiver<()>) {
        info!("polling manifest URL url={}", self.url);
        let ticker = tick(self.check_frequency);
        loop {
            if let Some(update) = self.poll_and_log() {
                if !send_or_stop(&updates, update, &stop) {
                    break;
                }
            }
            select! {
                recv(stop) -> _ => break,
                recv(ticker) -> _ => {}
            }
        }
        info!("stopped polling manifest URL url={}", self.url);
    }

    /// [`poll_once`](HttpSource::poll_once), logging failures: the first few at error, then
    /// at debug until a poll succeeds again.
    fn poll_and_log(&mut self) -> Option<PodUpdate> {
        match self.poll_once() {
            Ok(update) => {
                if self.failures > 0 {
                    info!("read pods from manifest URL again url={}", self.url);
                    self.failures = 0;
                }
                update
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures <= LOUD_FAILURES {
                    error!("failed to read pods from manifest URL: {e}");
                } else {
                    debug!("failed to read pods from manifest URL: {e}");
                }
                None
            }
        }
    }

    /// One fetch: `Ok(Some(Set))` when the body changed and decoded, `Ok(None)` when it is
    /// unchanged, `Err` when nothing usable came back (the last state stands).
    pub fn poll_once(&mut self) -> Result<Option<PodUpdate>, HttpSourceError> {
        let url = &self.url;
        let response = self
            .client
            .get(url)
            .headers(self.headers.clone())
            .send()
            .map_err(|source| HttpSourceError::Request {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let mut body = Vec::new();
        response
            .take(MAX_MANIFEST_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|source| HttpSourceError::Body {
                url: url.clone(),
                source,
            })?;
        if status != reqwest::StatusCode::OK {
            return Err(HttpSourceError::Status {
                url: url.clone(),
                status,
            });
        }
        if self.last_body.as_ref() == Some(&body) {
            return Ok(None);
        }
        self.last_body = Some(body);
        let body = self.last_body.as_deref().unwrap_or_default();
        let pods = if body.is_empty() {
            info!("zero-length body from manifest URL, no pods url={url}");
            Vec::new()
        } else {
            let source = ManifestSource::Url(url.clone());
            decode_static_pods(body, &self.node_name, &source)?
        };
        debug!("manifest URL pods changed url={url} pods={}", pods.len());
        Ok(Some(PodUpdate {
            pods: pods.into_iter().map(Arc::new).collect(),
            op: PodOperation::Set,
            source: HTTP_SOURCE.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    use super::*;
    use crate::config::update::CONFIG_SOURCE_ANNOTATION;

    /// Tests install the provider the binary's `main` would.
    fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    /// A loopback server answering one connection per canned response, in order, then
    /// exiting; gives up after 10 s. Returns the URL and a handle yielding the request heads.
    fn serve(responses: Vec<(u16, String)>) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/pods", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut heads = Vec::new();
            for (code, body) in responses {
                let mut stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => return heads,
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8_lossy(&head).to_lowercase());
                let reply = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
            heads
        });
        (url, handle)
    }

    fn pod(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n\
             spec: {{containers: [{{name: app, image: i}}]}}\n"
        )
    }

    fn names(update: &PodUpdate) -> Vec<String> {
        update
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn polls_pods_lists_errors_and_keeps_state() {
        install_crypto();
        let list = "apiVersion: v1\nkind: PodList\nitems:\n\
                    - {metadata: {name: a}, spec: {containers: [{name: c, image: i}]}}\n\
                    - {metadata: {name: b}, spec: {containers: [{name: c, image: i}]}}\n";
        let (url, server) = serve(vec![
            (200, pod("web")),
            (200, pod("web")),
            (404, "not found".into()),
            (200, "kind: Pod\n".into()),
            (200, list.into()),
            (200, String::new()),
        ]);
        let headers = BTreeMap::from([("X-Token".to_string(), vec!["abc".to_string()])]);
        let mut src = HttpSource::new(&url, &headers, "Node-1", Duration::from_secs(20)).unwrap();

        let update = src.poll_once().unwrap().unwrap();
        assert_eq!(
            (update.op, update.source.as_str()),
            (PodOperation::Set, HTTP_SOURCE)
        );
        assert_eq!(names(&update), ["web-node-1"]);
        let pod = &update.pods[0];
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[CONFIG_SOURCE_ANNOTATION],
            "http"
        );
        assert_eq!(pod.spec.as_ref().unwrap().tolerations, None);

        assert!(
            src.poll_once().unwrap().is_none(),
            "same body: nothing sent"
        );
        let err = src.poll_once().unwrap_err();
        assert!(matches!(err, HttpSourceError::Status { .. }), "{err}");
        assert!(err.to_string().starts_with(&url), "{err}");
        let err = src.poll_once().unwrap_err();
        assert!(err.to_string().contains(&url), "{err}");
        assert!(err.is_retriable());
        assert_eq!(
            names(&src.poll_once().unwrap().unwrap()),
            ["a-node-1", "b-node-1"]
        );
        assert!(
            src.poll_once().unwrap().unwrap().pods.is_empty(),
            "empty body: empty Set"
        );

        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 6);
        assert!(heads[0].contains("x-token: abc"), "{}", heads[0]);
    }

    #[test]
    fn connection_refused_is_a_retriable_error() {
        install_crypto();
        let url = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/pods", listener.local_addr().unwrap())
        };
        let mut src = HttpSource::new(&url, &BTreeMap::new(), "n", Duration::ZERO).unwrap();
        let err = src.poll_once().unwrap_err();
        assert!(matches!(err, HttpSourceError::Request { .. }), "{err}");
        assert!(err.is_retriable());
    }

    #[test]
    fn bad_configuration_is_rejected_up_front() {
        install_crypto();
        let bad_name = BTreeMap::from([("bad header".to_string(), vec!["v".to_string()])]);
        let err = HttpSource::new("http://127.0.0.1:1/", &bad_name, "n", Duration::ZERO);
        assert!(matches!(err, Err(HttpSourceError::InvalidHeader { .. })));
        let err = HttpSource::new("not a url", &BTreeMap::new(), "n", Duration::ZERO);
        assert!(matches!(err, Err(HttpSourceError::InvalidUrl { .. })));
    }

    #[test]
    fn thread_sends_the_first_set_and_stops() {
        install_crypto();
        let (url, server) = serve(vec![(200, pod("web"))]);
        let src = HttpSource::new(&url, &BTreeMap::new(), "n", Duration::from_secs(60)).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let handle = src.start(tx, stop).unwrap();
        let update = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(names(&update), ["web-n"]);
        drop(stop_tx);
        handle.join().unwrap();
        server.join().unwrap();
    }
}
