//! How the REST client forms requests and reads failures: URL paths, query strings and
//! percent-encoding, JSON bodies with their content types, and the errors made from failed
//! exchanges (a `meta/v1 Status` body, or the HTTP code and body text; transport failures).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::stats::Op;
use super::watch::StatusBody;
use super::{ApiError, ApiStatus, ListOptions};

/// How much of a non-Status error body goes into the error message.
const MAX_ERROR_BODY: usize = 1024;
pub(crate) const JSON: &str = "application/json";
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";

/// A request body and its content type.
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: Vec<u8>,
}

/// Serialises a request body: a strategic merge patch for PATCH (as upstream's kubelet
/// patches pods, nodes and events), plain JSON otherwise.
pub(crate) fn json_body<B: Serialize>(op: Op, path: &str, body: &B) -> Result<Body, ApiError> {
    let content_type = if op.http_verb() == "PATCH" {
        STRATEGIC_MERGE_PATCH
    } else {
        JSON
    };
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Decode {
        what: format!("encoding the body of {} {path}", op.http_verb()),
        message: e.to_string(),
    })?;
    Ok(Body {
        content_type,
        bytes,
    })
}

pub(crate) fn transport_error(verb: &'static str, path: &str, e: &reqwest::Error) -> ApiError {
    // reqwest's own text is terse; the source chain says what failed ("Connection refused").
    let mut message = if e.is_connect() {
        "connect: ".to_string()
    } else {
        String::new()
    };
    message.push_str(&e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::Transport {
        verb,
        path: path.to_string(),
        message,
        timeout: e.is_timeout(),
    }
}

/// The Status in an error body, or one made from the HTTP code and the body text.
pub(crate) fn status_from_body(code: u16, body: &[u8]) -> ApiStatus {
    if let Some(status) = StatusBody::from_slice(body) {
        let mut status = status.into_status();
        if status.code == 0 {
            status.code = code;
        }
        return status;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
    let text = text.trim();
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    ApiStatus {
        code,
        reason: reason.to_string(),
        message: if text.is_empty() {
            format!("the server responded with HTTP {code}")
        } else {
            text.to_string()
        },
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string (with its `?`) of a list or watch.
pub(crate) fn list_query(opts: &ListOptions, watch: bool) -> String {
    let mut parts = Vec::new();
    if watch {
        parts.push("watch=true".to_string());
    }
    if let Some(s) = &opts.field_selector {
        parts.push(format!("fieldSelector={}", encode(s)));
    }
    if let Some(s) = &opts.label_selector {
        parts.push(format!("labelSelector={}", encode(s)));
    }
    if let Some(rv) = &opts.resource_version {
        parts.push(format!("resourceVersion={}", encode(rv)));
    }
    if let Some(t) = opts.timeout_seconds {
        parts.push(format!("timeoutSeconds={t}"));
    }
    if opts.allow_watch_bookmarks {
        parts.push("allowWatchBookmarks=true".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `/api/v1/namespaces/{ns}/{resource}` plus `/{name}` when given.
pub(crate) fn core_path(namespace: &str, resource: &str, name: Option<&str>) -> String {
    let base = format!("/api/v1/namespaces/{}/{resource}", encode(namespace));
    name.map_or_else(|| base.clone(), |n| format!("{base}/{}", encode(n)))
}

pub(crate) fn lease_path(namespace: &str, name: Option<&str>) -> String {
    let ns = encode(namespace);
    let base = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    name.map_or_else(|| base.clone(), |n| format!("{base}/{}", encode(n)))
}

pub(crate) fn node_path(name: &str) -> String {
    format!("/api/v1/nodes/{}", encode(name))
}

/// The object's namespace, `default` when unset.
pub(crate) fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_only() {
        assert_eq!(encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(encode("a=b,c d/é"), "a%3Db%2Cc%20d%2F%C3%A9");
    }

    #[test]
    fn error_bodies() {
        let check = |code: u16, body: &[u8], want: (u16, &str, &str)| {
            let s = status_from_body(code, body);
            assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), want);
        };
        let status = br#"{"kind":"Status","code":409,"reason":"Conflict","message":"m"}"#;
        check(409, status, (409, "Conflict", "m"));
        check(404, b"not here\n", (404, "NotFound", "not here"));
        check(
            502,
            b"",
            (502, "Unknown", "the server responded with HTTP 502"),
        );
        let no_code = br#"{"kind":"Status","reason":"InternalError"}"#;
        check(500, no_code, (500, "InternalError", ""));
    }

    #[test]
    fn list_queries_and_paths() {
        assert_eq!(list_query(&ListOptions::default(), false), "");
        let opts = ListOptions {
            timeout_seconds: Some(9),
            ..ListOptions::default()
        };
        assert_eq!(list_query(&opts, true), "?watch=true&timeoutSeconds=9");
        assert_eq!(
            core_path("ns", "events", Some("a.b")),
            "/api/v1/namespaces/ns/events/a.b"
        );
        assert_eq!(
            lease_path("l", None),
            "/apis/coordination.k8s.io/v1/namespaces/l/leases"
        );
        assert_eq!(node_path("n 1"), "/api/v1/nodes/n%201");
        assert_eq!(namespace_of(&ObjectMeta::default()), "default");
    }
}
