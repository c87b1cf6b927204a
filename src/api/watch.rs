//! The watch decoder: turns a watch response body (one JSON object per line,
//! `{"type":"ADDED","object":{...}}`) into [`WatchEvent`]s, reading one line at a time so a
//! long watch never sits in memory. Runs on the thread that consumes the watch (e.g.
//! `source-apiserver`), which blocks in `next()` until the server sends the next line.
//!
//! A line that does not decode yields one `ApiError::Decode` naming the event number and byte
//! offset, and the stream ends there: the caller restarts the watch from the last
//! resourceVersion it saw. A read error ends it the same way with `ApiError::Transport`.

use std::io::{BufRead, BufReader, Read};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, ApiStatus, WatchEvent, WatchStream};

/// The longest line accepted (a single object in etcd is limited to about 1.5 MiB; 16 MiB
/// leaves room and still bounds memory).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Decodes a watch body read from `reader`. `what` describes the watch in errors
/// (e.g. `"watch /api/v1/pods"`).
pub fn decode_watch<T: DeserializeOwned + 'static>(
    reader: impl Read + Send + 'static,
    what: String,
) -> WatchStream<T> {
    Box::new(WatchDecoder::<T, _> {
        reader: BufReader::new(reader),
        what,
        offset: 0,
        events: 0,
        done: false,
        line: Vec::new(),
        _type: std::marker::PhantomData,
    })
}

/// The iterator behind [`decode_watch`].
struct WatchDecoder<T, R> {
    reader: BufReader<R>,
    what: String,
    /// Byte offset of the next line in the body, for error messages.
    offset: u64,
    /// Events (non-blank lines) read so far.
    events: u64,
    /// Set after EOF or the first error: the stream is over.
    done: bool,
    /// The line buffer, reused between lines.
    line: Vec<u8>,
    _type: std::marker::PhantomData<fn() -> T>,
}

/// One line as sent: the event type and the raw object.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: Value,
}

/// The `meta/v1 Status` fields read from error bodies and `ERROR` events.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StatusBody {
    /// `kind`: `Status` for a real Status object.
    pub kind: String,
    /// `code`.
    pub code: u16,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

impl StatusBody {
    /// Decodes a Status from JSON bytes; `None` unless it is an object of kind `Status`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<StatusBody> {
        serde_json::from_slice::<StatusBody>(bytes)
            .ok()
            .filter(|s| s.kind == "Status")
    }

    /// The fields the kubelet acts on.
    pub(crate) fn into_status(self) -> ApiStatus {
        ApiStatus {
            code: self.code,
            reason: self.reason,
            message: self.message,
        }
    }
}

impl<T: DeserializeOwned, R: Read> Iterator for WatchDecoder<T, R> {
    type Item = Result<WatchEvent<T>, ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let start = self.offset;
            self.line.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.line);
            let n = match read {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(n) => n,
                Err(e) => return Some(Err(self.fail_io(start, e))),
            };
            self.offset += n as u64;
            if self.line.len() > MAX_LINE_BYTES {
                let message = format!("line longer than {MAX_LINE_BYTES} bytes");
                return Some(Err(self.fail_decode(start, message)));
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.events += 1;
            let event = decode_line(&self.line);
            return Some(event.map_err(|message| self.fail_decode(start, message)));
        }
        None
    }
}

impl<T, R> WatchDecoder<T, R> {
    fn fail_decode(&mut self, start: u64, message: String) -> ApiError {
        self.done = true;
        let number = self.events.max(1);
        ApiError::Decode {
            what: format!("{} event #{number} (byte offset {start})", self.what),
            message,
        }
    }

    fn fail_io(&mut self, start: u64, e: std::io::Error) -> ApiError {
        self.done = true;
        ApiError::Transport {
            verb: "WATCH",
            path: self.what.clone(),
            message: format!("reading event at byte offset {start}: {e}"),
            timeout: matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
        }
    }
}

/// Decodes one line into an event, or says why not.
fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<WatchEvent<T>, String> {
    let raw: RawEvent = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    // On failure the line is read again to find the field at fault (`util::decode`).
    let again = || {
        serde_json::from_slice::<RawEvent>(line)
            .map(|raw| raw.object)
            .unwrap_or(Value::Null)
    };
    let object = |v: Value| {
        crate::util::decode::from_value::<T>(v, again)
            .map_err(|e| format!("{} object: {e}", raw.kind))
    };
    match raw.kind.as_str() {
        "ADDED" => object(raw.object).map(WatchEvent::Added),
        "MODIFIED" => object(raw.object).map(WatchEvent::Modified),
        "DELETED" => object(raw.object).map(WatchEvent::Deleted),
        "BOOKMARK" => raw
            .object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(|rv| WatchEvent::Bookmark {
                resource_version: rv.to_string(),
            })
            .ok_or_else(|| "BOOKMARK without metadata.resourceVersion".to_string()),
        "ERROR" => serde_json::from_value::<StatusBody>(raw.object)
            .map(|s| WatchEvent::Error(s.into_status()))
            .map_err(|e| format!("ERROR object: {e}")),
        other => Err(format!("unknown event type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn decode(body: &'static [u8]) -> Vec<Result<WatchEvent<Pod>, ApiError>> {
        decode_watch::<Pod>(body, "watch /api/v1/pods".into())
            .take(100)
            .collect()
    }

    fn pod_name(ev: &WatchEvent<Pod>) -> Option<&str> {
        match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
                p.metadata.name.as_deref()
            }
            _ => None,
        }
    }

    #[test]
    fn decodes_each_event_type_and_skips_blank_lines() {
        let body = br#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"1"}}}

{"type":"MODIFIED","object":{"metadata":{"name":"b"}}}
   
{"type":"DELETED","object":{"metadata":{"name":"c"}}}
{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"42"}}}
"#;
        let events: Vec<_> = decode(body).into_iter().map(Result::unwrap).collect();
        assert_eq!(events.len(), 4);
        assert!(matches!(events[0], WatchEvent::Added(_)));
        assert!(matches!(events[1], WatchEvent::Modified(_)));
        assert!(matches!(events[2], WatchEvent::Deleted(_)));
        let names: Vec<_> = events.iter().map(pod_name).collect();
        assert_eq!(names, [Some("a"), Some("b"), Some("c"), None]);
        assert_eq!(
            events[3],
            WatchEvent::Bookmark {
                resource_version: "42".into()
            }
        );
    }

    #[test]
    fn error_event_carries_status_410_gone() {
        let body = br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}
"#;
        let events = decode(body);
        assert_eq!(events.len(), 1);
        match &events[0] {
            Ok(WatchEvent::Error(s)) => {
                assert_eq!(s.code, 410);
                assert_eq!(s.reason, "Expired");
                assert_eq!(s.message, "too old resource version: 1 (5)");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn complete_final_line_without_newline_is_an_event() {
        let events = decode(br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], Ok(WatchEvent::Added(_))));
    }

    #[test]
    fn truncated_final_line_is_one_error_then_end() {
        let body = br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}
{"type":"MODIFIED","object":{"metad"#;
        let events = decode(body);
        assert_eq!(events.len(), 2);
        assert!(events[0].is_ok());
        let msg = events[1].as_ref().unwrap_err().to_string();
        assert!(
            msg.starts_with("watch /api/v1/pods event #2 (byte offset 52): decoding response:"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_line_ends_the_stream() {
        let body = br#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}
not json
{"type":"ADDED","object":{"metadata":{"name":"b"}}}
"#;
        let events = decode(body);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[1], Err(ApiError::Decode { what, .. }) if what.ends_with("event #2 (byte offset 52)"))
        );
    }

    #[test]
    fn wrong_object_shape_and_unknown_type_are_errors() {
        for body in [
            &br#"{"type":"ADDED","object":{"metadata":{"name":7}}}"#[..],
            &br#"{"type":"SURPRISE","object":{}}"#[..],
            &br#"{"type":"BOOKMARK","object":{"metadata":{}}}"#[..],
            &br#"{"object":{}}"#[..],
        ] {
            let events: Vec<_> = decode_watch::<Pod>(body, "w".into()).collect();
            assert_eq!(events.len(), 1);
            assert!(
                matches!(events[0], Err(ApiError::Decode { .. })),
                "{events:?}"
            );
        }
    }

    #[test]
    fn huge_line_is_refused_without_reading_past_the_limit() {
        // A reader that produces an endless line: the decoder must stop at the limit.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'x');
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut stream = decode_watch::<Pod>(Endless(0), "w".into());
        let first = stream.next().unwrap();
        let msg = first.unwrap_err().to_string();
        assert!(msg.contains("line longer than 16777216 bytes"), "{msg}");
        assert!(stream.next().is_none());
    }

    #[test]
    fn read_error_is_a_transport_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled"))
            }
        }
        let events: Vec<_> = decode_watch::<Pod>(Broken, "w".into()).collect();
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0],
            Err(ApiError::Transport { timeout: true, .. })
        ));
    }

    #[test]
    fn status_body_needs_kind_status() {
        let s = StatusBody::from_slice(
            br#"{"kind":"Status","code":404,"reason":"NotFound","message":"m"}"#,
        )
        .unwrap();
        assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
        assert!(StatusBody::from_slice(b"<html>").is_none());
        assert!(StatusBody::from_slice(br#"{"kind":"Pod"}"#).is_none());
    }
}
