//! Watches of the API server test double: only later events from a resourceVersion, 410
//! `Expired` from a compacted one, bookmarks and `timeoutSeconds`, and field selectors
//! followed as objects move in and out of them.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::client::{pod, Api, PODS};
use support::apiserver::{ApiServer, ApiServerConfig};

#[test]
fn watch_from_a_resource_version_sends_only_later_events() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    api.call("POST", PODS, Some(pod("before", Some("n1"))));
    let from = server.resource_version();
    api.call("POST", PODS, Some(pod("after", Some("n1"))));
    api.call(
        "DELETE",
        &format!("{PODS}/after?gracePeriodSeconds=0"),
        None,
    );
    let watch = api.watch(&format!(
        "/api/v1/pods?watch=1&resourceVersion={from}&timeoutSeconds=1"
    ));
    // A pod deleted with grace 0 is first updated to say so, then removed, as upstream.
    let expected = [
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "after"),
    ]
    .map(|(t, n)| (t.to_string(), n.to_string()));
    assert_eq!(watch.drain(), expected);
    let watch = api.watch(&format!("{PODS}?watch=true&timeoutSeconds=1"));
    let names: Vec<_> = watch
        .drain()
        .into_iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    assert_eq!(
        names,
        ["ADDED before"],
        "no resourceVersion: current objects first"
    );
}

#[test]
fn watch_from_a_compacted_resource_version_gets_410_expired() {
    let server = ApiServer::start_with(ApiServerConfig {
        event_window: 3,
        ..ApiServerConfig::default()
    });
    let api = Api::new(&server);
    for name in ["a", "b", "c", "d"] {
        api.call("POST", PODS, Some(pod(name, None)));
    }
    let mut watch = api.watch("/api/v1/pods?watch=1&resourceVersion=2&timeoutSeconds=5");
    let event = watch.next_event().unwrap();
    assert_eq!(event["type"], "ERROR");
    let status = &event["object"];
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    assert_eq!(status["message"], "too old resource version: 2 (4)");
    assert!(
        watch.next_event().is_none(),
        "the stream ends after the error"
    );
    server.compact();
    let now = server.resource_version();
    let mut watch = api.watch(&format!("/api/v1/pods?watch=1&resourceVersion={}", now - 1));
    assert_eq!(watch.next_event().unwrap()["object"]["code"], 410);
    let watch = api.watch(&format!(
        "/api/v1/pods?watch=1&resourceVersion={now}&timeoutSeconds=1"
    ));
    assert!(
        watch.drain().is_empty(),
        "the current version is still watchable"
    );
}

#[test]
fn watches_send_bookmarks_and_end_at_timeout_seconds() {
    let server = ApiServer::start_with(ApiServerConfig {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerConfig::default()
    });
    let api = Api::new(&server);
    api.call("POST", PODS, Some(pod("a", None)));
    let rv = server.resource_version();
    let started = Instant::now();
    let query =
        format!("{PODS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1");
    let events = api.watch(&query).drain();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert!(events.len() >= 3, "{events:?}");
    for (kind, version) in events {
        assert_eq!((kind.as_str(), version), ("BOOKMARK", rv.to_string()));
    }
    let plain = api.watch(&format!(
        "{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=1"
    ));
    assert!(plain.drain().is_empty(), "no bookmarks unless allowed");
}

#[test]
fn watch_field_selectors_follow_objects_in_and_out() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let rv = server.resource_version();
    api.call("POST", PODS, Some(pod("other", Some("node-b"))));
    api.call("POST", PODS, Some(pod("later", None)));
    server.bind_pod("default", "later", "node-a").unwrap();
    api.call(
        "PATCH",
        &format!("{PODS}/later/status"),
        Some(json!({ "status": { "phase": "Running" } })),
    );
    let selector = "fieldSelector=spec.nodeName%3Dnode-a,status.phase!%3DSucceeded";
    api.call(
        "PATCH",
        &format!("{PODS}/later/status"),
        Some(json!({ "status": { "phase": "Succeeded" } })),
    );
    let query = format!("/api/v1/pods?watch=1&{selector}&resourceVersion={rv}&timeoutSeconds=1");
    let events: Vec<_> = api
        .watch(&query)
        .drain()
        .into_iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    assert_eq!(events, ["ADDED later", "MODIFIED later", "DELETED later"]);
}
