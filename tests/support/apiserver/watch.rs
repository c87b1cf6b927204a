//! Watch streams, on the connection thread that received `?watch=1`: one JSON event per line
//! in a chunked `200` response, like kube-apiserver's watch cache. From no resourceVersion (or
//! `0`) the current objects come first as synthetic ADDED events; from resourceVersion R only
//! changes after R, or a single ERROR event with a 410 `Expired` Status when R is older than
//! the retained window. Selectors apply to the object before and after each change, so an
//! object leaving the selection is sent as DELETED. The stream ends at `timeoutSeconds`, on
//! `close_watches`, when the server goes down or stops, or when the client hangs up.

use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{finish_chunked, start_chunked, write_chunk, Request};
use super::meta::metadata_mut;
use super::resources::Resource;
use super::selectors::Filter;
use super::server::{Conn, Shared};
use super::status::ApiError;
use super::store::{Change, ChangeType};

/// Longest sleep between checks of the stop conditions.
const POLL: Duration = Duration::from_millis(250);

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Synthetic ADDED events for the current objects, then live changes.
    Current,
    /// Changes after this resourceVersion.
    After(u64),
}

/// A validated watch request.
pub struct WatchParams {
    resource: Resource,
    filter: Filter,
    start: Start,
    timeout: Duration,
    bookmarks: bool,
}

impl WatchParams {
    /// Reads `resourceVersion`, `timeoutSeconds` and `allowWatchBookmarks`.
    pub fn from_request(
        shared: &Shared,
        request: &Request,
        resource: Resource,
        filter: Filter,
    ) -> Result<WatchParams, ApiError> {
        let start = match request.query("resourceVersion").unwrap_or("") {
            "" | "0" => Start::Current,
            rv => Start::After(rv.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}"))
            })?),
        };
        let timeout = match request.query("timeoutSeconds") {
            None => shared.config.default_watch_timeout,
            Some(secs) => Duration::from_secs(secs.parse().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds: Invalid value: {secs:?}"))
            })?),
        };
        Ok(WatchParams {
            resource,
            filter,
            start,
            timeout,
            bookmarks: request.query_flag("allowWatchBookmarks"),
        })
    }
}

fn send(conn: &mut Conn, event: &Value) -> io::Result<()> {
    write_chunk(conn, format!("{event}\n").as_bytes())
}

/// Streams the watch until one of its end conditions.
pub fn serve(shared: &Shared, conn: &mut Conn, params: WatchParams) -> io::Result<()> {
    let _open = shared.faults.watch_opened();
    let generation = shared.faults.watch_generation();
    let mut raw_mark = shared.faults.raw_line_mark();
    let deadline = Instant::now() + params.timeout;
    let bookmark_interval = shared.config.bookmark_interval;
    let mut next_bookmark = Instant::now() + bookmark_interval;
    start_chunked(conn, "application/json")?;
    let mut last = match params.start {
        Start::After(rv) => rv,
        Start::Current => {
            let (objects, rv) = shared.store.list(params.resource, None);
            for object in objects.into_iter().filter(|o| params.filter.matches(o)) {
                send(conn, &json!({ "type": "ADDED", "object": object }))?;
            }
            rv
        }
    };
    loop {
        let closed = shared.faults.watch_generation() != generation;
        if closed || shared.is_closing() || Instant::now() >= deadline {
            break;
        }
        let (lines, mark) = shared.faults.raw_lines_after(raw_mark);
        raw_mark = mark;
        for line in lines {
            write_chunk(conn, &line)?;
        }
        match shared.store.changes_since(last) {
            Err(horizon) => {
                let status = ApiError::expired(last, horizon).to_status();
                send(conn, &json!({ "type": "ERROR", "object": status }))?;
                break;
            }
            Ok((changes, reached)) => {
                for change in changes {
                    if let Some(event) = event_for(&params, &change) {
                        send(conn, &event)?;
                    }
                }
                last = reached;
            }
        }
        if params.bookmarks && Instant::now() >= next_bookmark {
            send(conn, &bookmark(params.resource, last))?;
            next_bookmark = Instant::now() + bookmark_interval;
        }
        if client_gone(&conn.sock) {
            return Err(io::Error::new(ErrorKind::ConnectionAborted, "client gone"));
        }
        let mut wake = deadline.min(Instant::now() + POLL);
        if params.bookmarks {
            wake = wake.min(next_bookmark);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        shared.store.wait_for_change(last, wait);
    }
    finish_chunked(conn)
}

/// The event a watcher with this filter sees for `change`, if any.
fn event_for(params: &WatchParams, change: &Change) -> Option<Value> {
    if change.resource != params.resource {
        return None;
    }
    let matches_now = change.change != ChangeType::Deleted && params.filter.matches(&change.object);
    let matched_before = change
        .prev
        .as_ref()
        .is_some_and(|prev| params.filter.matches(prev));
    let (kind, object) = match (matches_now, matched_before) {
        (true, false) => ("ADDED", change.object.clone()),
        (true, true) => ("MODIFIED", change.object.clone()),
        (false, true) => {
            // Upstream sends the previous content at the change's resourceVersion.
            let mut object = change.prev.clone().unwrap_or(Value::Null);
            if object.is_object() {
                metadata_mut(&mut object)
                    .insert("resourceVersion".into(), json!(change.rv.to_string()));
            }
            ("DELETED", object)
        }
        (false, false) => return None,
    };
    Some(json!({ "type": kind, "object": object }))
}

fn bookmark(resource: Resource, rv: u64) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
        },
    })
}

/// Whether the client closed its side. During a watch a client sends nothing, so any
/// readable data (a TLS close_notify) or EOF means it is gone.
fn client_gone(socket: &TcpStream) -> bool {
    if socket.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let gone = match socket.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = socket.set_nonblocking(false);
    gone
}
