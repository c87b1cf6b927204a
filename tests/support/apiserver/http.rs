//! Minimal HTTP/1.1 over any byte stream: request heads parsed with `httparse`, bodies by
//! `Content-Length`, keep-alive, plain responses and chunked streams for watches. Used by
//! the connection threads of `server.rs`; no TLS knowledge here.

use std::io::{self, Read, Write};

use serde_json::Value;

use super::status::ApiError;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    query: Vec<(String, String)>,
    /// Headers with lower-case names.
    headers: Vec<(String, String)>,
    /// The body (empty if none).
    pub body: Vec<u8>,
    /// Whether the client lets the connection stay open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// A header's value (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's first value.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every query parameter, in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// Every header (lower-case names), in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// A boolean query parameter (`true` or `1`).
    pub fn query_flag(&self, key: &str) -> bool {
        matches!(self.query(key), Some("true" | "1"))
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    /// Not HTTP, or not a request the double accepts: answer 400 and close.
    Malformed(String),
    /// The socket failed or timed out.
    Io(io::Error),
}

/// Reads one request. `buf` carries bytes read past the previous request.
pub fn read_request(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let request = head_to_request(&parsed)?;
                buf.drain(..head_len);
                return read_body(stream, buf, request);
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ReadError::Malformed("request head too large".into()))
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ReadError::Malformed(format!("bad request head: {e}"))),
        }
        if fill(stream, buf)? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

fn fill(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).map_err(ReadError::Io)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn head_to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, ReadError> {
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|te| te != "identity") {
        return Err(ReadError::Malformed(
            "chunked request bodies are not supported; send Content-Length".into(),
        ));
    }
    let keep_alive = parsed.version == Some(1) && header("connection").as_deref() != Some("close");
    Ok(Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: parse_query(query),
        headers,
        body: Vec::new(),
        keep_alive,
    })
}

fn read_body(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    mut request: Request,
) -> Result<Request, ReadError> {
    let length = match request.header("content-length") {
        None => 0,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Malformed(format!("bad Content-Length {text:?}")))?,
    };
    if length > MAX_BODY {
        return Err(ReadError::Malformed("request body too large".into()));
    }
    while buf.len() < length {
        if fill(stream, buf)? == 0 {
            return Err(ReadError::Closed);
        }
    }
    request.body = buf.drain(..length).collect();
    Ok(request)
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (space) of a query component; bad escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A complete (non-streaming) response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub code: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Headers beyond the standard ones.
    pub extra_headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub fn json(code: u16, body: &Value) -> Response {
        Response::json_as(code, body, "application/json")
    }

    /// A JSON body with a specific `Content-Type` (tables).
    pub fn json_as(code: u16, body: &Value, content_type: &str) -> Response {
        Response {
            code,
            content_type: content_type.to_string(),
            extra_headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    /// A plain-text body (health checks).
    pub fn text(code: u16, body: &str) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8".to_string(),
            extra_headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A `Status` error; 429 also says `Retry-After: 1`.
    pub fn error(error: &ApiError) -> Response {
        let mut response = Response::json(error.code, &error.to_status());
        if error.code == 429 {
            response
                .extra_headers
                .push(("Retry-After", "1".to_string()));
        }
        response
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a complete response.
pub fn write_response(
    out: &mut impl Write,
    response: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n",
        response.code,
        reason_phrase(response.code),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&response.body)?;
    out.flush()
}

/// Starts a chunked `200` response (a watch stream).
pub fn start_chunked(out: &mut impl Write, content_type: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n"
    );
    out.write_all(head.as_bytes())?;
    out.flush()
}

/// Sends one chunk and flushes it to the client.
pub fn write_chunk(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(()); // an empty chunk would end the stream
    }
    out.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    out.write_all(data)?;
    out.write_all(b"\r\n")?;
    out.flush()
}

/// Ends a chunked response; the connection can carry the next request.
pub fn finish_chunked(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}
