//! A small HTTPS client for the kubelet API in tests: trusts the kubelet's serving CA
//! (from `<cert-dir>/kubelet.crt`), optionally presents a client certificate or a bearer
//! token, sends one request per connection and decodes `Content-Length` and chunked
//! bodies. Also a checker for the Prometheus text format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::apiserver::Identity;

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Nothing.
    None,
    /// A client certificate.
    Cert(&'a Identity),
    /// `Authorization: Bearer`.
    Token(&'a str),
}

/// The TLS client config trusting the kubelet's self-signed CA in `cert_dir`.
pub fn client_config(cert_dir: &Path, identity: Option<&Identity>) -> Arc<ClientConfig> {
    let pem = std::fs::read(cert_dir.join("kubelet.crt")).expect("kubelet.crt");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Head lines.
    pub head: String,
    /// Decoded body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `method path` over TLS to `addr` and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    cert_dir: &Path,
    method: &str,
    path: &str,
    auth: Auth<'_>,
) -> Reply {
    let identity = match auth {
        Auth::Cert(id) => Some(id),
        _ => None,
    };
    let config = client_config(cert_dir, identity);
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, socket);
    let token = match auth {
        Auth::Token(t) => format!("Authorization: Bearer {t}\r\n"),
        _ => String::new(),
    };
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{token}Connection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    parse_reply(&raw)
}

/// Sends `GET path` over plain HTTP (the read-only port).
pub fn plain_get(addr: SocketAddr, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

/// Splits a raw answer into status, head and decoded body.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let rest = &raw[end + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply { status, head, body }
}

/// Decodes a chunked body (as much as is complete).
pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&data[i + 2..i + 2 + size]);
        data = &data[(i + 4 + size).min(data.len())..];
    }
    out
}

/// Checks that `text` is Prometheus text format and returns its samples as
/// (name with labels, value).
pub fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            if let Some(t) = comment.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type in {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

/// The value of the first sample whose series starts with `prefix`.
pub fn sample(samples: &[(String, f64)], prefix: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| *v)
}
