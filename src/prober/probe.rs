//! Running one probe (upstream `prober/prober.go`): `exec` through CRI ExecSync, `httpGet`
//! (success 200-399, redirects followed within the same host), `tcpSocket` (a connect) and
//! `grpc` (`grpc.health.v1.Health/Check`). Runs on a prober pool thread, bounded by the
//! probe's timeout.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};

use crate::cri::RuntimeService;
use crate::types::resolve_port;
use crate::util::http;

use super::health::HealthCheckRequest;
use super::health::HealthCheckResponse_ServingStatus as ServingStatus;
use super::health_grpc::HealthClient;
use super::ProbeResult;

/// `User-Agent` of HTTP probes, as upstream (`kube-probe/<major>.<minor>`).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";
/// Longest body read from an HTTP probe (upstream 10 KiB).
const BODY_LIMIT: usize = 10 * 1024;
/// Redirects followed, as Go's client.
const MAX_REDIRECTS: usize = 10;

/// The outcome of one run and what to say about it (event text on failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Success, failure, or unknown (the probe could not be run).
    pub result: ProbeResult,
    /// Output or reason.
    pub output: String,
}

impl Outcome {
    fn success(output: impl Into<String>) -> Self {
        Outcome {
            result: ProbeResult::Success,
            output: output.into(),
        }
    }
    fn failure(output: impl Into<String>) -> Self {
        Outcome {
            result: ProbeResult::Failure,
            output: output.into(),
        }
    }
}

/// Everything one run needs.
pub struct Target<'a> {
    /// The runtime (exec probes).
    pub runtime: &'a Arc<dyn RuntimeService>,
    /// The container's spec (named ports).
    pub container: &'a Container,
    /// Its runtime id.
    pub container_id: &'a str,
    /// The pod IP, the default host.
    pub pod_ip: Option<&'a str>,
}

/// Runs `probe` once.
pub fn run(probe: &Probe, target: &Target<'_>, timeout: Duration) -> Outcome {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match target.runtime.exec_sync(target.container_id, &cmd, timeout) {
            Ok(resp) => {
                let mut output = String::from_utf8_lossy(resp.get_stdout()).into_owned();
                output.push_str(&String::from_utf8_lossy(resp.get_stderr()));
                if resp.get_exit_code() == 0 {
                    Outcome::success(output)
                } else {
                    Outcome::failure(output)
                }
            }
            Err(e) if e.to_string().contains("DeadlineExceeded") => {
                Outcome::failure(format!("command {cmd:?} timed out"))
            }
            Err(e) => Outcome {
                result: ProbeResult::Unknown,
                output: e.to_string(),
            },
        };
    }
    let host = |h: Option<&String>| -> Option<String> {
        h.filter(|h| !h.is_empty())
            .cloned()
            .or_else(|| target.pod_ip.map(str::to_string))
    };
    if let Some(get) = &probe.http_get {
        let Some(host) = host(get.host.as_ref()) else {
            return Outcome::failure("the pod has no IP yet");
        };
        let port = match resolve_port(&get.port, target.container) {
            Ok(p) => p,
            Err(e) => return Outcome::failure(e),
        };
        let tls = get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let headers: Vec<(String, String)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        return http_probe(
            &HttpTarget {
                host: &host,
                port,
                tls,
            },
            &path,
            &headers,
            timeout,
        );
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(host) = host(tcp.host.as_ref()) else {
            return Outcome::failure("the pod has no IP yet");
        };
        let port = match resolve_port(&tcp.port, target.container) {
            Ok(p) => p,
            Err(e) => return Outcome::failure(e),
        };
        let addr = match resolve(&host, port) {
            Ok(a) => a,
            Err(e) => return Outcome::failure(e),
        };
        return match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => Outcome::success(""),
            Err(e) => Outcome::failure(format!("dial tcp {addr}: {e}")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let Some(host) = target.pod_ip else {
            return Outcome::failure("the pod has no IP yet");
        };
        let Ok(port) = u16::try_from(grpc.port) else {
            return Outcome::failure(format!("invalid port number: {}", grpc.port));
        };
        return grpc_probe(
            host,
            port,
            grpc.service.as_deref().unwrap_or_default(),
            timeout,
        );
    }
    Outcome {
        result: ProbeResult::Unknown,
        output: "the probe has no exec, httpGet, tcpSocket or grpc action".into(),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host.trim_start_matches('[').trim_end_matches(']'), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))
}

/// Where an HTTP probe goes.
#[derive(Debug, Clone, Copy)]
pub struct HttpTarget<'a> {
    /// Host name or IP.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// HTTPS (certificate not verified).
    pub tls: bool,
}

/// GET with redirects followed to the same host (a redirect elsewhere counts as success,
/// as upstream).
pub fn http_probe(
    target: &HttpTarget<'_>,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let host = target.host;
    let mut path = path.to_string();
    let mut port = target.port;
    let mut tls = target.tls;
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    for _ in 0..=MAX_REDIRECTS {
        let resp = http::get(&http::HttpGet {
            host,
            port,
            path: &path,
            headers,
            user_agent: PROBE_USER_AGENT,
            timeout,
            body_limit: BODY_LIMIT,
            tls,
        });
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Outcome::failure(format!(
                    "Get \"{}://{host}:{port}{path}\": {e}",
                    scheme(tls)
                ))
            }
        };
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        match resp.status {
            200..=299 => return Outcome::success(body),
            300..=399 => {
                let Some(location) = resp.location.clone() else {
                    return Outcome::success(body);
                };
                match redirect_target(&location, host, port, tls) {
                    Some((t, p, next)) => {
                        tls = t;
                        port = p;
                        path = next;
                    }
                    // Another host: not followed, and not a failure.
                    None => {
                        return Outcome::success(format!(
                            "Probe terminated redirects, Response body: {body}"
                        ))
                    }
                }
            }
            code => return Outcome::failure(format!("HTTP probe failed with statuscode: {code}")),
        }
    }
    Outcome::failure("stopped after 10 redirects")
}

/// Where a same-host redirect goes: `(tls, port, path)`; `None` for another host.
fn redirect_target(
    location: &str,
    host: &str,
    port: u16,
    tls: bool,
) -> Option<(bool, u16, String)> {
    if location.starts_with('/') {
        return Some((tls, port, location.to_string()));
    }
    let (tls, rest, default_port) = match location.strip_prefix("https://") {
        Some(rest) => (true, rest, 443),
        None => (false, location.strip_prefix("http://")?, 80),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (h, p) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    (h == host).then_some((tls, p, path))
}

fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let env = crate::util::grpc_env();
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let channel = grpcio::ChannelBuilder::new(env).connect(&target);
    let client = HealthClient::new(channel);
    let mut req = HealthCheckRequest::new();
    req.set_service(service.to_string());
    let opt = grpcio::CallOption::default().timeout(timeout);
    match client.check_opt(&req, opt) {
        Ok(resp) if resp.get_status() == ServingStatus::SERVING => Outcome::success("SERVING"),
        Ok(resp) => Outcome::failure(format!(
            "service unhealthy (responded with \"{:?}\")",
            resp.get_status()
        )),
        Err(grpcio::Error::RpcFailure(s))
            if s.code() == grpcio::RpcStatusCode::DEADLINE_EXCEEDED =>
        {
            Outcome::failure(format!(
                "timeout: health rpc did not complete within {timeout:?}"
            ))
        }
        Err(e) => Outcome::failure(format!(
            "timeout: failed to connect service \"{target}\" within {timeout:?}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct HealthServer(Arc<std::sync::atomic::AtomicBool>);

    impl super::super::health_grpc::Health for HealthServer {
        fn check(
            &mut self,
            ctx: grpcio::RpcContext,
            req: HealthCheckRequest,
            sink: grpcio::UnarySink<super::super::health::HealthCheckResponse>,
        ) {
            let mut resp = super::super::health::HealthCheckResponse::new();
            let serving = self.0.load(std::sync::atomic::Ordering::SeqCst)
                && (req.get_service().is_empty() || req.get_service() == "db");
            resp.set_status(if serving {
                ServingStatus::SERVING
            } else {
                ServingStatus::NOT_SERVING
            });
            ctx.spawn(async move {
                let _ = sink.success(resp).await;
            });
        }
    }

    #[test]
    fn grpc_probe_follows_the_servers_status() {
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let env = Arc::new(grpcio::Environment::new(1));
        let service = super::super::health_grpc::create_health(HealthServer(serving.clone()));
        let mut server = grpcio::ServerBuilder::new(env)
            .register_service(service)
            .build()
            .unwrap();
        let port = server
            .add_listening_port("127.0.0.1:0", grpcio::ServerCredentials::insecure())
            .unwrap();
        server.start();
        let t = Duration::from_secs(5);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "", t),
            Outcome::success("SERVING")
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "db", t).result,
            ProbeResult::Success
        );
        let other = grpc_probe("127.0.0.1", port, "cache", t);
        assert_eq!(
            other,
            Outcome::failure("service unhealthy (responded with \"NOT_SERVING\")")
        );
        serving.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "", t).result,
            ProbeResult::Failure
        );
        let _ = futures_shutdown(server);
        let closed = grpc_probe("127.0.0.1", port, "", Duration::from_secs(1));
        assert_eq!(closed.result, ProbeResult::Failure, "{closed:?}");
    }

    /// Shuts the test server down, waiting at most a few seconds.
    fn futures_shutdown(mut server: grpcio::Server) -> bool {
        crate::util::shutdown_grpc(&mut server, Duration::from_secs(5))
    }

    #[test]
    fn redirects_within_the_host_only() {
        assert_eq!(
            redirect_target("/next", "10.0.0.1", 80, false),
            Some((false, 80, "/next".into()))
        );
        assert_eq!(
            redirect_target("http://10.0.0.1:8080/x?y=1", "10.0.0.1", 80, false),
            Some((false, 8080, "/x?y=1".into()))
        );
        assert_eq!(
            redirect_target("http://example.com/x", "10.0.0.1", 80, false),
            None
        );
        assert_eq!(
            redirect_target("https://10.0.0.1/x", "10.0.0.1", 80, false),
            Some((true, 443, "/x".into()))
        );
    }

    #[test]
    fn http_probe_success_range_and_failure_text() {
        use std::io::{Read, Write};
        let serve = |answer: &'static str| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let (mut c, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                c.write_all(answer.as_bytes()).unwrap();
            });
            port
        };
        let t = Duration::from_secs(5);
        let http = |port| HttpTarget {
            host: "127.0.0.1",
            port,
            tls: false,
        };
        let ok = serve("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            http_probe(&http(ok), "/", &[], t).result,
            ProbeResult::Success
        );
        let bad = serve("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            http_probe(&http(bad), "/", &[], t),
            Outcome::failure("HTTP probe failed with statuscode: 503")
        );
        let away = serve("HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            http_probe(&http(away), "/", &[], t).result,
            ProbeResult::Success
        );
    }
}
