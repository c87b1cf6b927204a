//! HTTP/1.1 for the kubelet API: connections (plain or TLS), request heads read within a
//! deadline (TLS reads bounded by it too), responses whole or chunked. The threads that
//! accept and serve connections are in `pool.rs`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::{ServerConnection, StreamOwned};

/// Largest request head accepted (upstream's `MaxHeaderBytes`).
pub const MAX_HEAD: usize = 1 << 20;
/// Largest request body read (the kubelet API takes no large bodies).
const MAX_BODY: usize = 1 << 20;
/// Time a client has to finish the TLS handshake and send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection, plain or TLS.
pub enum Conn {
    /// Plain TCP (read-only port, healthz).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    /// The TCP socket under the connection.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// The verified client certificate chain, if the client sent one.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s
                .conn
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect()),
        }
    }

    /// Sets the read timeout of the socket.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(timeout)
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

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The decoded path.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// Header names (lower case) and values in order.
    pub headers: Vec<(String, String)>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The client's address.
    pub remote: Option<SocketAddr>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `name`.
    pub fn query_all(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether query parameter `name` is true as Go's `strconv.ParseBool` reads it
    /// (`1`, `t`, `T`, `true`, `True`, `TRUE`).
    pub fn query_flag(&self, name: &str) -> bool {
        matches!(
            self.query(name),
            Some("1" | "t" | "T" | "true" | "True" | "TRUE")
        )
    }
}

/// A response with a complete body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Extra header lines (`Name: value`).
    pub headers: Vec<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `response` with a `Content-Length`.
pub fn write_response(
    conn: &mut impl Write,
    response: &Response,
    method: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
    );
    for h in &response.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    conn.write_all(&out)?;
    conn.flush()
}

/// A chunked response body: the head is written by [`ChunkedWriter::start`], each `write`
/// sends one chunk, [`ChunkedWriter::finish`] the last one.
pub struct ChunkedWriter<'a, W: Write> {
    out: &'a mut W,
}

impl<'a, W: Write> ChunkedWriter<'a, W> {
    /// Writes a 200 head with chunked transfer encoding.
    pub fn start(out: &'a mut W, content_type: &str) -> io::Result<Self> {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nX-Content-Type-Options: nosniff\r\n\r\n"
        );
        out.write_all(head.as_bytes())?;
        out.flush()?;
        Ok(ChunkedWriter { out })
    }

    /// Writes the terminating chunk.
    pub fn finish(self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }
}

impl<W: Write> Write for ChunkedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut chunk = format!("{:x}\r\n", buf.len()).into_bytes();
        chunk.extend_from_slice(buf);
        chunk.extend_from_slice(b"\r\n");
        self.out.write_all(&chunk)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What the handler wants done with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close it (the handler wrote a response that ends with the connection, or took it
    /// over for a stream).
    Close,
}

/// Serves requests; `handle` writes the whole response to `conn`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, request: &Request, conn: &mut Conn) -> io::Result<After>;
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a request target into its decoded path and query parameters.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    (percent_decode(path, false), query)
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection (or sent nothing) before a request.
    Closed,
    /// The head was larger than [`MAX_HEAD`].
    TooLarge,
    /// The body was larger than the limit.
    BodyTooLarge,
    /// The head or body did not parse.
    Malformed(String),
    /// A socket error or timeout.
    Io(io::Error),
}

/// Reads one request head (and any body, discarded) from `conn` before `deadline`. Bytes
/// read past the head are kept in `carry` for the next request.
pub fn read_request(
    conn: &mut Conn,
    carry: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Request, ReadError> {
    let mut buf = std::mem::take(carry);
    let mut chunk = [0u8; 4096];
    // Where the search for the end of the head resumes (no rescans of a growing head).
    let mut scanned = 0;
    loop {
        let found = find_head_end(&buf[scanned..]).map(|end| scanned + end);
        scanned = buf.len().saturating_sub(3);
        if let Some(end) = found {
            let (request, body_len) = parse_head(&buf[..end])?;
            let mut rest = buf.split_off(end);
            if body_len > MAX_BODY {
                return Err(ReadError::BodyTooLarge);
            }
            while rest.len() < body_len {
                let n = read_before(conn, &mut chunk, deadline)?;
                if n == 0 {
                    return Err(ReadError::Closed);
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            *carry = rest.split_off(body_len);
            return Ok(request);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        let n = read_before(conn, &mut chunk, deadline)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn read_before(conn: &mut Conn, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadError> {
    match conn {
        Conn::Plain(s) => {
            s.set_read_timeout(Some(time_left(deadline)?))
                .map_err(ReadError::Io)?;
            s.read(buf).map_err(ReadError::Io)
        }
        Conn::Tls(s) => tls_read_before(s, buf, deadline).map_err(ReadError::Io),
    }
}

fn time_left(deadline: Instant) -> Result<Duration, ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Io(io::ErrorKind::TimedOut.into()));
    }
    Ok(left)
}

/// Reads plaintext, driving the handshake, with every socket wait bounded by `deadline`
/// (rustls' own stream keeps reading while a client trickles bytes, whatever the
/// deadline).
fn tls_read_before(
    s: &mut StreamOwned<ServerConnection, TcpStream>,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<usize> {
    let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
    loop {
        match s.conn.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock)?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        s.sock.set_read_timeout(Some(left))?;
        let n = match s.conn.read_tls(&mut s.sock) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        };
        if let Err(e) = s.conn.process_new_packets() {
            // Send the alert describing the failure, if any, then give up.
            let _ = s.conn.write_tls(&mut s.sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if n == 0 {
            // End of stream: the reader now says whether it was clean.
            return match s.conn.reader().read(buf) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            };
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a request head (through its blank line): the request and the length of the body
/// that follows.
pub fn parse_head(head: &[u8]) -> Result<(Request, usize), ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ReadError::Malformed("partial head".into())),
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    }
    let method = parsed.method.unwrap_or("GET").to_string();
    let target = parsed.path.unwrap_or("/").to_string();
    let http10 = parsed.version == Some(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let keep_alive = if http10 {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Malformed(
            "chunked request bodies are not accepted".into(),
        ));
    }
    let body_len = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Malformed(format!("bad Content-Length {v:?}")))?,
        None => 0,
    };
    let (path, query) = split_target(&target);
    Ok((
        Request {
            method,
            target,
            path,
            query,
            headers,
            keep_alive,
            remote: None,
        },
        body_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_decoded_path_and_query() {
        let (path, query) = split_target(
            "/containerLogs/ns/p%20x/c?tailLines=1&follow&sinceTime=2026-01-01T00%3A00%3A00Z&a=b+c",
        );
        assert_eq!(path, "/containerLogs/ns/p x/c");
        assert_eq!(
            query,
            vec![
                ("tailLines".to_string(), "1".to_string()),
                ("follow".to_string(), String::new()),
                ("sinceTime".to_string(), "2026-01-01T00:00:00Z".to_string()),
                ("a".to_string(), "b c".to_string()),
            ]
        );
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn heads_parse_with_keep_alive_and_reject_bad_lengths() {
        let (r, len) =
            parse_head(b"GET /pods HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
                .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), len),
            ("GET", "/pods", 0)
        );
        assert!(r.keep_alive);
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        let (r, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let (_, len) = parse_head(b"POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(len, 12);
        assert!(matches!(
            parse_head(b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"\x01\x02 nonsense\r\n\r\n"),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn chunked_writer_frames_chunks() {
        let mut out = Vec::new();
        let mut w = ChunkedWriter::start(&mut out, "text/plain").unwrap();
        w.write_all(b"hello").unwrap();
        w.write_all(b"").unwrap();
        w.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
    }
}
