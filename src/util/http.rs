//! A minimal blocking HTTP/1.1 GET over a plain TCP or TLS connection, for lifecycle hooks
//! and probes (upstream uses Go's `net/http` with keep-alives off, and for HTTPS does not
//! verify the certificate). One request per connection, `Connection: close`, the body read
//! up to a limit. Runs on the caller's thread; every step is bounded by the timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, cut at the limit given.
    pub body: Vec<u8>,
    /// The `Location` header, for redirects.
    pub location: Option<String>,
}

/// A request to make.
#[derive(Debug, Clone)]
pub struct HttpGet<'a> {
    /// Host name or IP literal.
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// Extra headers; a `Host` header here replaces the default one.
    pub headers: &'a [(String, String)],
    /// `User-Agent` (`kube-probe/1.33`, `kube-lifecycle/1.33`).
    pub user_agent: &'a str,
    /// Bound for connect, write and read together.
    pub timeout: Duration,
    /// Longest body kept.
    pub body_limit: usize,
    /// HTTPS, without certificate verification.
    pub tls: bool,
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TLS client session to `host` that accepts any certificate.
fn tls_session(host: &str) -> io::Result<rustls::ClientConnection> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(
            crate::util::tls::AcceptAnyServerCert(provider),
        ))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS server name {host:?}: {e}"),
        )
    })?;
    rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| io::Error::other(format!("TLS session: {e}")))
}

/// Sends the GET and reads the answer. Errors carry the address.
pub fn get(req: &HttpGet<'_>) -> io::Result<HttpResponse> {
    for (k, v) in req.headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header {k:?} is not a valid header"),
            ));
        }
    }
    if req.path.contains(['\r', '\n', ' ']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} is not a valid request path", req.path),
        ));
    }
    let deadline = Instant::now() + req.timeout;
    let host_for_addr = req.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host_for_addr, req.port).to_socket_addrs()?.collect();
    let addr = addrs.first().copied().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address for {}", req.host),
        )
    })?;
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timeout")))
    };
    let tcp = TcpStream::connect_timeout(&addr, left("connect")?)?;
    tcp.set_write_timeout(Some(left("write")?))?;
    tcp.set_read_timeout(Some(left("read")?))?;
    let mut stream = if req.tls {
        Conn::Tls(Box::new(rustls::StreamOwned::new(
            tls_session(req.host)?,
            tcp,
        )))
    } else {
        Conn::Plain(tcp)
    };
    let path = if req.path.starts_with('/') {
        req.path.to_string()
    } else {
        format!("/{}", req.path)
    };
    let host_header = if addr.is_ipv6() && !req.host.starts_with('[') && req.host.contains(':') {
        format!("[{}]:{}", req.host, req.port)
    } else {
        format!("{}:{}", req.host, req.port)
    };
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {host_header}\r\n"));
    }
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        head.push_str(&format!("User-Agent: {}\r\n", req.user_agent));
    }
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        head.push_str("Accept: */*\r\n");
    }
    for (k, v) in req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        stream.tcp().set_read_timeout(Some(left("read")?))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        if raw.len() > 64 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head longer than 64 KiB",
            ));
        }
    };
    let head = String::from_utf8_lossy(&raw[..header_end]).into_owned();
    let status = parse_status_line(head.lines().next().unwrap_or_default())?;
    let content_length = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let location = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    let want = content_length.unwrap_or(usize::MAX).min(req.body_limit);
    let mut body: Vec<u8> = raw[header_end..].to_vec();
    while body.len() < want {
        let Ok(timeout) = left("read") else { break };
        stream.tcp().set_read_timeout(Some(timeout))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            // The head arrived: a slow or endless body does not fail the request.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        }
    }
    body.truncate(req.body_limit);
    Ok(HttpResponse {
        status,
        body,
        location,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_status_line(line: &str) -> io::Result<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/") && (100..=999).contains(&code) => Ok(code),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed HTTP status line {line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = conn.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        (port, handle)
    }

    fn request(port: u16, headers: &[(String, String)]) -> io::Result<HttpResponse> {
        get(&HttpGet {
            host: "127.0.0.1",
            port,
            path: "healthz?x=1",
            headers,
            user_agent: "kube-probe/1.33",
            timeout: Duration::from_secs(5),
            body_limit: 4,
            tls: false,
        })
    }

    #[test]
    fn sends_the_request_and_reads_status_and_a_limited_body() {
        let (port, server) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nnot yet");
        let headers = vec![("X-Custom".to_string(), "yes".to_string())];
        let resp = request(port, &headers).unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.body, b"not ");
        let sent = server.join().unwrap();
        assert!(sent.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{sent}");
        assert!(
            sent.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{sent}"
        );
        assert!(sent.contains("User-Agent: kube-probe/1.33\r\n"), "{sent}");
        assert!(sent.contains("X-Custom: yes\r\n"), "{sent}");
    }

    #[test]
    fn https_does_not_verify_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = tls.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        let resp = get(&HttpGet {
            host: "127.0.0.1",
            port,
            path: "/",
            headers: &[],
            user_agent: "kube-probe/1.33",
            timeout: Duration::from_secs(5),
            body_limit: 100,
            tls: true,
        })
        .unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, b"ok".as_slice()));
        server.join().unwrap();
    }

    #[test]
    fn refused_connections_and_garbage_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(request(port, &[]).is_err());
        let (port, server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = request(port, &[]).unwrap_err();
        assert!(
            err.to_string().contains("malformed HTTP status line"),
            "{err}"
        );
        server.join().unwrap();
        let bad = vec![("X".to_string(), "a\r\nInjected: 1".to_string())];
        let err = request(1, &bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
}
