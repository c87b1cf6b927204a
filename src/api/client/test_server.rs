//! A one-thread HTTP/1.1 server on 127.0.0.1 for the client's unit tests: it answers
//! successive connections with scripted replies (JSON, a gated chunked stream, or a stall),
//! over TLS when asked, and hands back the requests it saw. Also the tests' client settings.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{RestClient, RetryPolicy};
use crate::api::RestConfig;

/// What the test server sends back on one connection.
pub(super) enum Reply {
    /// Status code, extra header lines (each ending in CRLF), JSON body.
    Json(u16, &'static str, String),
    /// A chunked body: the first chunk, then the rest once the gate opens (or is dropped).
    Chunked(Vec<&'static str>, mpsc::Receiver<()>),
    /// Read the request, then say nothing until the gate opens (or is dropped).
    Stall(mpsc::Receiver<()>),
}

/// One request as the server saw it.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Seen {
    /// The value of header `name` (lowercase).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 serving `replies` on successive connections,
/// TLS when `tls` is set. It stops after the last reply or 10 s without a connection.
pub(super) fn serve(
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

/// Retries with millisecond waits.
pub(super) fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// A client of `url` with a bearer token, unlimited rate and [`fast_retries`].
pub(super) fn client(url: &str) -> RestClient {
    let config = RestConfig {
        server: format!("{url}/"),
        bearer_token: Some("tok".into()),
        ..RestConfig::default()
    };
    RestClient::new(config, 0.0, 1, Duration::from_secs(5))
        .unwrap()
        .with_retry_policy(fast_retries())
}

/// A `meta/v1 Status` failure body.
pub(super) fn status_json(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
    .to_string()
}

/// A pod as the server returns it, at resourceVersion 7.
pub(super) const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"ns","resourceVersion":"7"}}"#;
