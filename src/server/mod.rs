//! The kubelet API (upstream `pkg/kubelet/server`): the authenticated HTTPS server on
//! `address:port` (default 0.0.0.0:10250) that `kubectl logs/exec/attach/port-forward`
//! reach through the API server and that monitoring scrapes, the unauthenticated read-only
//! port, and the pod-resources gRPC socket.
//!
//! Threads: one accept thread per listener and an elastic, bounded pool of handler threads
//! (`http.rs`); streams (followed logs, exec, port-forward) hold one handler thread each.
//! Handlers read snapshots through [`HostInterface`] and never block the sync loop.

pub mod auth;
pub mod cadvisor;
pub mod claim_stats;
pub mod http;
pub mod logs;
pub mod podresources;
pub mod pool;
pub mod stats;
pub mod streaming;
pub mod summary;
pub mod tls;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use self::auth::{Auth, AuthnSettings, AuthzSettings, Refusal};
use self::http::{After, ChunkedWriter, Conn, Handler, Request, Response};
use self::logs::LogOptions;
use crate::config::settings::KubeletConfig;

/// Handler threads of the authenticated server at most.
pub const MAX_HANDLERS: usize = 128;
/// Handler threads of the read-only server at most.
const MAX_READ_ONLY_HANDLERS: usize = 32;

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The TLS set-up failed.
    #[error("kubelet API TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// A setting was invalid.
    #[error("{setting}: {why}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        why: String,
    },
    /// A thread could not be started.
    #[error("starting the {name} thread: {source}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A request the host could not answer, with the status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// 404.
    NotFound(String),
    /// 400.
    BadRequest(String),
    /// 500.
    Internal(String),
}

impl HostError {
    fn response(&self) -> Response {
        match self {
            HostError::NotFound(m) => Response::text(404, format!("{m}\n")),
            HostError::BadRequest(m) => Response::text(400, format!("{m}\n")),
            HostError::Internal(m) => Response::text(500, format!("{m}\n")),
        }
    }
}

/// A container's log file and how to tell whether it is still being written.
pub struct LogSource {
    /// The CRI log file.
    pub path: PathBuf,
    /// Whether the container is still running (checked while following).
    pub running: Box<dyn Fn() -> bool + Send>,
}

/// Which streams an exec or attach carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `input`.
    pub stdin: bool,
    /// `output`.
    pub stdout: bool,
    /// `error`.
    pub stderr: bool,
    /// `tty`.
    pub tty: bool,
}

/// What the server needs from the kubelet (upstream `HostInterface`).
pub trait HostInterface: Send + Sync {
    /// The node's name.
    fn node_name(&self) -> String;
    /// The pods bound to the node, with their latest status (`/pods`).
    fn pods(&self) -> Vec<Pod>;
    /// The pods the runtime has, built from its containers (`/runningpods/`).
    fn running_pods(&self) -> Result<Vec<Pod>, HostError>;
    /// The configuration in effect (`/configz`).
    fn configz(&self) -> serde_json::Value;
    /// Health checks (`/healthz`).
    fn healthz(&self) -> &[crate::healthz::Check];
    /// The log of a container (or of its previous attempt).
    fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, HostError>;
    /// A streaming URL running `command` in a container.
    fn exec_url(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
        streams: StreamOptions,
    ) -> Result<String, HostError>;
    /// A streaming URL attached to a container.
    fn attach_url(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        streams: StreamOptions,
    ) -> Result<String, HostError>;
    /// A streaming URL forwarding ports of a pod.
    fn port_forward_url(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
    ) -> Result<String, HostError>;
    /// Runs `command` in a container and returns its output (`/run`).
    fn run_in_container(
        &self,
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        command: &[String],
    ) -> Result<Vec<u8>, HostError>;
    /// The Summary API document (`/stats/summary`).
    fn summary(&self, only_cpu_and_memory: bool) -> Result<serde_json::Value, HostError>;
    /// `/metrics` in Prometheus text format.
    fn metrics(&self) -> String;
    /// `/metrics/probes`.
    fn probe_metrics(&self) -> String;
    /// `/metrics/resource`.
    fn resource_metrics(&self) -> String;
    /// `/metrics/cadvisor`.
    fn cadvisor_metrics(&self) -> String;
    /// The device manager, for the pod-resources API (none: no devices to report).
    fn devices(&self) -> Option<Arc<crate::devicemanager::DeviceManager>> {
        None
    }
}

/// Where and how the servers listen, from the configuration.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `enableServer`.
    pub enabled: bool,
    /// `address:port`.
    pub addr: SocketAddr,
    /// `address:readOnlyPort`, when the read-only port is on.
    pub read_only_addr: Option<SocketAddr>,
    /// TLS.
    pub tls: tls::TlsSettings,
    /// Authentication.
    pub authn: AuthnSettings,
    /// Authorization.
    pub authz: AuthzSettings,
    /// `streamingConnectionIdleTimeout`.
    pub stream_idle_timeout: Duration,
    /// The pod-resources socket.
    pub pod_resources_socket: PathBuf,
}

impl ServerSettings {
    /// Reads the server settings from the kubelet configuration.
    pub fn from_config(config: &KubeletConfig) -> Result<ServerSettings, ServerError> {
        let raw = &config.raw;
        let address = raw.address.as_deref().unwrap_or("0.0.0.0");
        let ip: IpAddr = address.parse().map_err(|_| ServerError::Setting {
            setting: "address",
            why: format!("{address:?} is not an IP address"),
        })?;
        let port = |setting: &'static str, value: Option<i32>, default: i32| {
            u16::try_from(value.unwrap_or(default)).map_err(|_| ServerError::Setting {
                setting,
                why: format!("{} is not a port number", value.unwrap_or(default)),
            })
        };
        let main_port = port("port", raw.port, 10250)?;
        let read_only = port("readOnlyPort", raw.read_only_port, 0)?;
        let mut hostnames = vec![config.node_name.clone()];
        hostnames.extend(config.node_ips.iter().map(ToString::to_string));
        if let Some(ip) = config.node_ip {
            hostnames.push(ip.to_string());
        }
        hostnames.push("localhost".into());
        hostnames.push("127.0.0.1".into());
        hostnames.dedup();
        let duration = |d: Option<&crate::util::duration::GoDuration>, default: u64| {
            d.and_then(|d| d.to_std())
                .unwrap_or(Duration::from_secs(default))
        };
        let authn = &raw.authentication;
        let authz = &raw.authorization;
        let mode = authz.mode.as_deref().unwrap_or("Webhook");
        let webhook_authz = match mode {
            "Webhook" => true,
            "AlwaysAllow" => false,
            other => {
                return Err(ServerError::Setting {
                    setting: "authorization.mode",
                    why: format!("{other:?} is not one of Webhook, AlwaysAllow"),
                })
            }
        };
        Ok(ServerSettings {
            enabled: raw.enable_server.unwrap_or(true),
            addr: SocketAddr::new(ip, main_port),
            read_only_addr: (read_only != 0).then(|| SocketAddr::new(ip, read_only)),
            tls: tls::TlsSettings {
                serving: None,
                cert_file: raw.tls_cert_file.as_ref().map(PathBuf::from),
                key_file: raw.tls_private_key_file.as_ref().map(PathBuf::from),
                cert_dir: config.cert_dir.clone(),
                hostnames,
                min_version: raw.tls_min_version.clone(),
                cipher_suites: raw.tls_cipher_suites.clone().unwrap_or_default(),
                client_ca_file: authn
                    .x509
                    .client_ca_file
                    .as_ref()
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
            },
            authn: AuthnSettings {
                anonymous: authn.anonymous.enabled.unwrap_or(false),
                webhook: authn.webhook.enabled.unwrap_or(true),
                cache_ttl: duration(authn.webhook.cache_ttl.as_ref(), 120),
            },
            authz: AuthzSettings {
                webhook: webhook_authz,
                allowed_ttl: duration(authz.webhook.cache_authorized_ttl.as_ref(), 300),
                denied_ttl: duration(authz.webhook.cache_unauthorized_ttl.as_ref(), 30),
            },
            stream_idle_timeout: duration(raw.streaming_connection_idle_timeout.as_ref(), 4 * 3600),
            pod_resources_socket: config.root_dir.join("pod-resources").join("kubelet.sock"),
        })
    }
}

/// The kubelet API's request handler.
pub struct KubeletServer {
    host: Arc<dyn HostInterface>,
    /// `None` on the read-only port: no authentication, a few read-only paths.
    auth: Option<Auth>,
    stream_idle_timeout: Duration,
}

impl KubeletServer {
    /// The authenticated handler.
    pub fn new(host: Arc<dyn HostInterface>, auth: Auth, stream_idle_timeout: Duration) -> Self {
        KubeletServer {
            host,
            auth: Some(auth),
            stream_idle_timeout,
        }
    }

    /// The read-only handler (`/pods`, `/healthz`, `/stats/summary` and the metrics).
    pub fn read_only(host: Arc<dyn HostInterface>) -> Self {
        KubeletServer {
            host,
            auth: None,
            stream_idle_timeout: Duration::ZERO,
        }
    }

    fn check(&self, request: &Request, conn: &Conn) -> Result<(), Response> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let certs = conn.peer_certificates();
        let user = auth
            .authenticate(request, certs.as_deref())
            .map_err(refusal_response)?;
        auth.authorize(&user, request).map_err(|r| {
            if let Refusal::Forbidden(m) = &r {
                log::info!("kubelet API: {m} for {} {}", request.method, request.path);
            }
            refusal_response(r)
        })
    }

    fn route(&self, request: &Request, conn: &mut Conn) -> io::Result<After> {
        let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method.as_str();
        let read = matches!(method, "GET" | "HEAD");
        let respond = |conn: &mut Conn, r: Response| {
            http::write_response(conn, &r, method, request.keep_alive)?;
            Ok(After::KeepAlive)
        };
        let read_only = self.auth.is_none();
        match segments.as_slice() {
            ["healthz", ..] if read => {
                let (code, body) = crate::healthz::respond(self.host.healthz(), &request.target);
                respond(conn, Response::text(code, body))
            }
            ["pods"] if read => respond(conn, Response::json(200, &pod_list(self.host.pods()))),
            ["stats", "summary"] if read || method == "POST" => {
                let only = request.query_flag("only_cpu_and_memory");
                match self.host.summary(only) {
                    Ok(doc) => respond(conn, Response::json(200, &doc)),
                    Err(e) => respond(conn, e.response()),
                }
            }
            ["metrics"] if read => respond(conn, metrics_response(self.host.metrics())),
            ["metrics", "probes"] if read => {
                respond(conn, metrics_response(self.host.probe_metrics()))
            }
            ["metrics", "resource"] if read => {
                respond(conn, metrics_response(self.host.resource_metrics()))
            }
            ["metrics", "cadvisor"] if read => {
                respond(conn, metrics_response(self.host.cadvisor_metrics()))
            }
            _ if read_only => respond(conn, Response::text(404, "404 page not found\n")),
            ["runningpods"] if read => match self.host.running_pods() {
                Ok(pods) => respond(conn, Response::json(200, &pod_list(pods))),
                Err(e) => respond(conn, e.response()),
            },
            ["configz"] if read => respond(
                conn,
                Response::json(200, &json!({"kubeletconfig": self.host.configz()})),
            ),
            ["containerLogs", ns, pod, container] if read => {
                self.container_logs(request, conn, ns, pod, container)
            }
            ["exec", ns, pod, rest @ ..] if matches!(method, "GET" | "POST") => {
                let Some((uid, container)) = uid_and_container(rest) else {
                    return respond(conn, Response::text(404, "404 page not found\n"));
                };
                let command: Vec<String> = request
                    .query_all("command")
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                if command.is_empty() {
                    return respond(conn, Response::text(400, "missing command\n"));
                }
                let url =
                    self.host
                        .exec_url(ns, pod, uid, container, &command, stream_options(request));
                self.proxy(request, conn, url)
            }
            ["attach", ns, pod, rest @ ..] if matches!(method, "GET" | "POST") => {
                let Some((uid, container)) = uid_and_container(rest) else {
                    return respond(conn, Response::text(404, "404 page not found\n"));
                };
                let url = self
                    .host
                    .attach_url(ns, pod, uid, container, stream_options(request));
                self.proxy(request, conn, url)
            }
            ["portForward", ns, pod, rest @ ..]
                if matches!(method, "GET" | "POST") && rest.len() <= 1 =>
            {
                let url = self.host.port_forward_url(ns, pod, rest.first().copied());
                self.proxy(request, conn, url)
            }
            ["run", ns, pod, rest @ ..] if method == "POST" => {
                let Some((uid, container)) = uid_and_container(rest) else {
                    return respond(conn, Response::text(404, "404 page not found\n"));
                };
                let command: Vec<String> = request
                    .query("cmd")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if command.is_empty() {
                    return respond(conn, Response::text(400, "missing cmd\n"));
                }
                match self
                    .host
                    .run_in_container(ns, pod, uid, container, &command)
                {
                    Ok(out) => respond(
                        conn,
                        Response {
                            status: 200,
                            content_type: "text/plain; charset=utf-8",
                            headers: Vec::new(),
                            body: out,
                        },
                    ),
                    Err(e) => respond(conn, e.response()),
                }
            }
            _ => respond(conn, Response::text(404, "404 page not found\n")),
        }
    }

    fn container_logs(
        &self,
        request: &Request,
        conn: &mut Conn,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> io::Result<After> {
        let fail = |conn: &mut Conn, r: Response| {
            http::write_response(conn, &r, &request.method, request.keep_alive)?;
            Ok(After::KeepAlive)
        };
        let options = match LogOptions::from_request(request) {
            Ok(o) => o,
            Err(why) => return fail(conn, Response::text(400, format!("{why}\n"))),
        };
        let source = match self
            .host
            .container_log(namespace, pod, container, options.previous)
        {
            Ok(s) => s,
            Err(e) => return fail(conn, e.response()),
        };
        if !source.path.exists() || request.method == "HEAD" {
            // A container that has not written anything yet has no file: an empty log.
            return fail(conn, Response::text(200, ""));
        }
        // While following, a peek on the socket tells whether the client went away.
        let probe = conn.tcp().try_clone()?;
        probe.set_read_timeout(Some(std::time::Duration::from_millis(1)))?;
        let client_gone = move || {
            let mut byte = [0u8; 1];
            match probe.peek(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ),
            }
        };
        let mut chunked = ChunkedWriter::start(conn, "text/plain")?;
        let mut body = io::BufWriter::with_capacity(16 * 1024, &mut chunked);
        let result = logs::write_logs(
            &source.path,
            &options,
            &mut body,
            &*source.running,
            &client_gone,
        );
        let flushed = body.flush();
        drop(body);
        match result.and(flushed) {
            Ok(()) => {
                chunked.finish()?;
                Ok(After::KeepAlive)
            }
            Err(e) => {
                log::debug!("containerLogs {namespace}/{pod}/{container}: {e}");
                Ok(After::Close)
            }
        }
    }

    fn proxy(
        &self,
        request: &Request,
        conn: &mut Conn,
        url: Result<String, HostError>,
    ) -> io::Result<After> {
        match url {
            Ok(url) => {
                streaming::proxy(request, conn, &url, self.stream_idle_timeout)?;
                Ok(After::Close)
            }
            Err(e) => {
                http::write_response(conn, &e.response(), &request.method, false)?;
                Ok(After::Close)
            }
        }
    }
}

impl Handler for KubeletServer {
    fn handle(&self, request: &Request, conn: &mut Conn) -> io::Result<After> {
        if let Err(response) = self.check(request, conn) {
            http::write_response(conn, &response, &request.method, request.keep_alive)?;
            return Ok(After::KeepAlive);
        }
        self.route(request, conn)
    }
}

fn refusal_response(r: Refusal) -> Response {
    match r {
        Refusal::Unauthorized => Response::text(401, "Unauthorized"),
        Refusal::Forbidden(m) => Response::text(403, m),
        Refusal::Error(m) => Response::text(500, m),
    }
}

fn metrics_response(text: String) -> Response {
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
        body: text.into_bytes(),
    }
}

/// `{container}` or `{uid}/{container}`.
fn uid_and_container<'a>(rest: &[&'a str]) -> Option<(Option<&'a str>, &'a str)> {
    match rest {
        [container] => Some((None, container)),
        [uid, container] => Some((Some(uid), container)),
        _ => None,
    }
}

fn stream_options(request: &Request) -> StreamOptions {
    StreamOptions {
        stdin: request.query_flag("input"),
        stdout: request.query_flag("output"),
        stderr: request.query_flag("error"),
        tty: request.query_flag("tty"),
    }
}

/// A `v1.PodList`.
fn pod_list(pods: Vec<Pod>) -> serde_json::Value {
    json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods,
    })
}

/// Starts the authenticated server (upstream `ListenAndServeKubeletServer`).
pub fn listen_and_serve(
    settings: &ServerSettings,
    host: Arc<dyn HostInterface>,
    api: Option<Arc<dyn crate::api::KubeClient>>,
    stop: Receiver<()>,
) -> Result<pool::Server, ServerError> {
    let tls = tls::server_config(&settings.tls)?;
    let auth = Auth::new(
        &host.node_name(),
        settings.authn.clone(),
        settings.authz.clone(),
        api,
    );
    let listener = TcpListener::bind(settings.addr).map_err(|source| ServerError::Listen {
        addr: settings.addr,
        source,
    })?;
    let handler = Arc::new(KubeletServer::new(host, auth, settings.stream_idle_timeout));
    let server = pool::serve(
        "kubelet-server",
        listener,
        Some(tls),
        handler,
        MAX_HANDLERS,
        stop,
    )
    .map_err(|source| ServerError::Thread {
        name: "kubelet-server",
        source,
    })?;
    log::info!("kubelet API serving on https://{}", server.addr);
    Ok(server)
}

/// Starts the read-only server (upstream `ListenAndServeKubeletReadOnlyServer`).
pub fn listen_and_serve_read_only(
    addr: SocketAddr,
    host: Arc<dyn HostInterface>,
    stop: Receiver<()>,
) -> Result<pool::Server, ServerError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| ServerError::Listen { addr, source })?;
    let handler = Arc::new(KubeletServer::read_only(host));
    let server = pool::serve(
        "kubelet-read-only",
        listener,
        None,
        handler,
        MAX_READ_ONLY_HANDLERS,
        stop,
    )
    .map_err(|source| ServerError::Thread {
        name: "kubelet-read-only",
        source,
    })?;
    log::info!("kubelet read-only API serving on http://{}", server.addr);
    Ok(server)
}
