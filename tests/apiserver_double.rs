//! The API server test double against the API semantics the kubelet relies on (and that
//! kube-apiserver has): resourceVersions, Status errors, the status subresource, merge patch,
//! graceful deletion, selectors, watches (410, bookmarks, timeouts), fault injection,
//! authentication, and kubectl v1.32 as a real client.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::apiserver::client::Api;
use support::apiserver::{ApiServer, ApiServerConfig};
use support::{scratch_dir, wait_for};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "c", "image": "busybox:1.36" }] },
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    let items = list["items"].as_array().unwrap();
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[test]
fn create_get_and_list_with_field_selectors() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let (code, created) = api.call("POST", PODS, Some(pod("a", Some("node-a"))));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(
        created["status"],
        json!({ "phase": "Pending", "qosClass": "BestEffort" })
    );
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    let uid = created["metadata"]["uid"].as_str().unwrap();
    assert_eq!((uid.len(), &uid[14..15]), (36, "4"), "v4 UUID: {uid}");
    assert!(created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    api.call("POST", PODS, Some(pod("b", Some("node-b"))));
    api.call(
        "POST",
        "/api/v1/namespaces/kube-system/pods",
        Some(pod("c", None)),
    );

    let (code, got) = api.get(&format!("{PODS}/a"));
    assert_eq!((code, got["metadata"]["uid"].as_str()), (200, Some(uid)));
    let (_, all) = api.get("/api/v1/pods");
    assert_eq!(
        (all["kind"].as_str(), all["apiVersion"].as_str()),
        (Some("PodList"), Some("v1"))
    );
    assert_eq!(rv_of(&all), server.resource_version());
    assert_eq!(names(&all), ["a", "b", "c"]);
    assert!(
        all["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    let selected = |query: &str| api.get(&format!("/api/v1/pods?{query}")).1;
    assert_eq!(
        names(&selected("fieldSelector=spec.nodeName%3Dnode-a")),
        ["a"]
    );
    assert_eq!(names(&selected("fieldSelector=spec.nodeName%3D")), ["c"]);
    assert_eq!(
        names(&selected("fieldSelector=spec.nodeName!%3Dnode-a")),
        ["b", "c"]
    );
    assert_eq!(
        names(&selected("fieldSelector=metadata.namespace%3Dkube-system")),
        ["c"]
    );
    assert_eq!(
        names(&selected(
            "fieldSelector=metadata.name%3Db&resourceVersion=0"
        )),
        ["b"]
    );
    assert_eq!(names(&selected("labelSelector=app%3Dweb")).len(), 3);
    assert_eq!(names(&api.get(PODS).1), ["a", "b"]);
    let (code, status) = api.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx");
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(server.list_pods().len(), 3);
    assert_eq!(server.request_count("list", "pods"), 9);
}

#[test]
fn every_write_bumps_the_one_global_resource_version() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let mut last = server.resource_version();
    let writes = [
        ("POST", PODS.to_string(), pod("a", Some("n1"))),
        (
            "PATCH",
            format!("{PODS}/a"),
            json!({ "metadata": { "labels": { "x": "1" } } }),
        ),
        (
            "POST",
            "/api/v1/nodes".to_string(),
            json!({ "metadata": { "name": "n1" } }),
        ),
        (
            "PATCH",
            format!("{PODS}/a/status"),
            json!({ "status": { "phase": "Running" } }),
        ),
    ];
    for (method, path, body) in writes {
        let (code, object) = api.call(method, &path, Some(body));
        assert!(code < 300, "{method} {path}: {object}");
        assert_eq!(rv_of(&object), last + 1, "{method} {path}");
        last += 1;
    }
    assert_eq!(server.resource_version(), last);
}

#[test]
fn errors_are_status_objects_with_upstream_reasons() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let (_, created) = api.call("POST", PODS, Some(pod("a", None)));
    let reason = |(code, status): (u16, Value)| {
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["code"], code);
        (
            code,
            status["reason"].as_str().unwrap().to_string(),
            status["message"].clone(),
        )
    };
    let (code, why, message) = reason(api.call("POST", PODS, Some(pod("a", None))));
    assert_eq!((code, why.as_str()), (409, "AlreadyExists"));
    assert_eq!(message, "pods \"a\" already exists");
    let (code, why, message) = reason(api.get(&format!("{PODS}/nope")));
    assert_eq!(
        (code, why.as_str(), message.as_str()),
        (404, "NotFound", Some("pods \"nope\" not found"))
    );
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, why, _) = reason(api.call("PUT", &format!("{PODS}/a"), Some(stale)));
    assert_eq!((code, why.as_str()), (409, "Conflict"));
    let (code, why, _) = reason(api.get("/api/v1/serviceaccounts"));
    assert_eq!((code, why.as_str()), (404, "NotFound"));
    let (code, why, _) =
        reason(api.call("POST", "/api/v1/namespaces/nope/pods", Some(pod("b", None))));
    assert_eq!((code, why.as_str()), (404, "NotFound"));
    let response = api.send(
        "POST",
        PODS,
        "application/json",
        Some(json!("not an object")),
    );
    assert_eq!(response.status().as_u16(), 400);
    let response = api.send(
        "PATCH",
        &format!("{PODS}/a"),
        "application/json-patch+json",
        Some(json!([])),
    );
    assert_eq!(response.status().as_u16(), 415);
}

#[test]
fn status_subresource_and_main_resource_change_separate_parts() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    api.call("POST", PODS, Some(pod("a", Some("n1"))));
    let main_patch =
        json!({ "metadata": { "labels": { "tier": "1" } }, "status": { "phase": "Failed" } });
    let (_, patched) = api.call("PATCH", &format!("{PODS}/a"), Some(main_patch));
    assert_eq!(patched["metadata"]["labels"]["tier"], "1");
    assert_eq!(
        patched["status"]["phase"], "Pending",
        "main resource keeps status"
    );
    let status_patch =
        json!({ "metadata": { "labels": { "tier": "2" } }, "status": { "phase": "Running" } });
    let (_, patched) = api.call("PATCH", &format!("{PODS}/a/status"), Some(status_patch));
    assert_eq!(
        patched["metadata"]["labels"]["tier"], "1",
        "status keeps the rest"
    );
    assert_eq!(patched["status"]["phase"], "Running");
    let mut put = patched.clone();
    put["status"]["podIP"] = json!("10.0.0.5");
    put["spec"]["nodeName"] = json!("elsewhere");
    let (code, updated) = api.call("PUT", &format!("{PODS}/a/status"), Some(put));
    assert_eq!(
        (code, &updated["status"]["podIP"]),
        (200, &json!("10.0.0.5"))
    );
    assert_eq!(updated["spec"]["nodeName"], "n1");
    let spec_change = json!({ "spec": { "restartPolicy": "Never" } });
    let (code, status) = api.call("PATCH", &format!("{PODS}/a"), Some(spec_change));
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(server.request_count("patch", "pods/status"), 1);
}

#[test]
fn merge_patch_follows_rfc_7386_and_noop_patches_keep_the_version() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let mut body = pod("a", Some("n1"));
    body["metadata"]["annotations"] = json!({ "keep": "1", "drop": "2" });
    api.call("POST", PODS, Some(body));
    let patch = json!({ "metadata": { "annotations": { "drop": null, "new": "3" } } });
    let (_, patched) = api.call("PATCH", &format!("{PODS}/a"), Some(patch.clone()));
    assert_eq!(
        patched["metadata"]["annotations"],
        json!({ "keep": "1", "new": "3" })
    );
    let (_, again) = api.call("PATCH", &format!("{PODS}/a"), Some(patch));
    assert_eq!(
        rv_of(&again),
        rv_of(&patched),
        "a no-op patch writes nothing"
    );
    let stale = json!({ "metadata": { "resourceVersion": "1" }, "status": { "phase": "Running" } });
    assert_eq!(
        api.call("PATCH", &format!("{PODS}/a/status"), Some(stale))
            .0,
        409
    );
    let wrong_uid = json!({ "metadata": { "uid": "nope" }, "status": { "phase": "Running" } });
    assert_eq!(
        api.call("PATCH", &format!("{PODS}/a/status"), Some(wrong_uid))
            .0,
        409
    );
}

#[test]
fn strategic_merge_patch_merges_lists_by_key_as_kube_apiserver() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    api.call("POST", PODS, Some(pod("a", Some("n1"))));
    let smp = "application/strategic-merge-patch+json";
    let send = |body: Value| {
        let response = api.send("PATCH", &format!("{PODS}/a/status"), smp, Some(body));
        let code = response.status().as_u16();
        (
            code,
            serde_json::from_slice::<Value>(&response.bytes().unwrap()).unwrap(),
        )
    };
    let (code, patched) = send(json!({ "status": { "conditions": [
        { "type": "Ready", "status": "False" }, { "type": "lb.example/ready", "status": "False" }] } }));
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["status"]["phase"], "Pending");
    // The kubelet's patch names only its own conditions: the other one survives.
    let (code, patched) = send(json!({ "status": {
        "$setElementOrder/conditions": [{ "type": "Ready" }],
        "conditions": [{ "type": "Ready", "status": "True" }] } }));
    assert_eq!(code, 200, "{patched}");
    assert_eq!(
        patched["status"]["conditions"],
        json!([{ "type": "Ready", "status": "True" }, { "type": "lb.example/ready", "status": "False" }])
    );
    // Deletion of one element by its key.
    let (_, patched) = send(json!({ "status": { "conditions": [
        { "$patch": "delete", "type": "lb.example/ready" }] } }));
    assert_eq!(patched["status"]["conditions"].as_array().unwrap().len(), 1);
    // What kube-apiserver refuses: unknown directives, elements without their merge key,
    // and a patch list that $setElementOrder does not cover.
    for bad in [
        json!({ "status": { "$unknown": 1 } }),
        json!({ "status": { "conditions": [{ "status": "True" }] } }),
        json!({ "status": { "$setElementOrder/conditions": [{ "type": "Ready" }],
            "conditions": [{ "type": "Other", "status": "True" }] } }),
    ] {
        assert_eq!(send(bad.clone()).0, 400, "{bad}");
    }
}

#[test]
fn graceful_pod_deletion_then_grace_zero_removes() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let mut body = pod("a", Some("n1"));
    body["spec"]["terminationGracePeriodSeconds"] = json!(20);
    api.call("POST", PODS, Some(body));
    let (code, deleting) = api.call("DELETE", &format!("{PODS}/a"), None);
    assert_eq!(code, 200);
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 20);
    let stored = server
        .get_pod("default", "a")
        .expect("still there while terminating");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let created = stored.metadata.creation_timestamp.unwrap().0.as_second();
    let deadline = stored.metadata.deletion_timestamp.unwrap().0.as_second();
    assert!((now - created).abs() <= 5, "creationTimestamp is now");
    assert!(
        (deadline - now - 20).abs() <= 5,
        "deletionTimestamp is now + grace"
    );
    let longer = json!({ "gracePeriodSeconds": 60 });
    let (_, unchanged) = api.call("DELETE", &format!("{PODS}/a"), Some(longer));
    assert_eq!(
        unchanged["metadata"]["deletionGracePeriodSeconds"], 20,
        "grace only shortens"
    );
    let (code, _) = api.call("DELETE", &format!("{PODS}/a?gracePeriodSeconds=0"), None);
    assert_eq!(code, 200);
    assert_eq!(api.get(&format!("{PODS}/a")).0, 404);
    api.call("POST", PODS, Some(pod("unscheduled", None)));
    api.call("DELETE", &format!("{PODS}/unscheduled"), None);
    assert!(server.get_pod("default", "unscheduled").is_none());
    api.call(
        "POST",
        "/api/v1/nodes",
        Some(json!({ "metadata": { "name": "n1" } })),
    );
    let (code, status) = api.call("DELETE", "/api/v1/nodes/n1", None);
    assert_eq!((code, status["status"].as_str()), (200, Some("Success")));
}

#[test]
fn delete_preconditions_must_match() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let (_, created) = api.call("POST", PODS, Some(pod("a", None)));
    let uid = created["metadata"]["uid"].clone();
    for preconditions in [json!({ "uid": "other" }), json!({ "resourceVersion": "1" })] {
        let options = json!({ "preconditions": preconditions });
        let (code, status) = api.call("DELETE", &format!("{PODS}/a"), Some(options));
        assert_eq!(
            (code, status["reason"].as_str()),
            (409, Some("Conflict")),
            "{status}"
        );
    }
    let options = json!({ "gracePeriodSeconds": 0, "preconditions": { "uid": uid } });
    assert_eq!(
        api.call("DELETE", &format!("{PODS}/a"), Some(options)).0,
        200
    );
    assert!(server.get_pod("default", "a").is_none());
}

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

#[test]
fn faults_fail_stall_and_close() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    server.fail_next(2, 500);
    for _ in 0..2 {
        let (code, status) = api.get(PODS);
        assert_eq!(
            (code, status["reason"].as_str()),
            (500, Some("InternalError"))
        );
    }
    assert_eq!(api.get(PODS).0, 200);
    server.fail_next(1, 429);
    let response = api.send("GET", PODS, "", None);
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    server.set_stall(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(api.get(PODS).0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.set_stall(Duration::ZERO);

    let mut watch = api.watch(&format!(
        "{PODS}?watch=1&resourceVersion={}",
        server.resource_version()
    ));
    wait_for(Duration::from_secs(5), || {
        (server.open_watches() == 1).then_some(())
    })
    .unwrap();
    server.inject_raw_watch_line(b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\"}}");
    assert_eq!(watch.next_event().unwrap()["object"]["kind"], "Pod");
    server.close_watches();
    assert!(
        watch.next_event().is_none(),
        "close_watches ends the stream"
    );
    wait_for(Duration::from_secs(5), || {
        (server.open_watches() == 0).then_some(())
    })
    .unwrap();
}

#[test]
fn going_down_refuses_connections_until_it_comes_back() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let mut watch = api.watch(&format!("{PODS}?watch=1"));
    assert_eq!(api.get("/version").0, 200);
    server.go_down();
    assert!(watch.next_event().is_none(), "open watches are dropped");
    assert!(TcpStream::connect(server.addr()).is_err());
    assert!(api
        .http
        .get(format!("{}/version", api.base))
        .send()
        .is_err());
    server.come_back();
    let (code, version) = api.get("/version");
    assert_eq!(
        (code, version["gitVersion"].as_str()),
        (200, Some("v1.32.0"))
    );
    let addr = server.addr();
    let _watch = api.watch(&format!("{PODS}?watch=1"));
    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stop is prompt with a watch open"
    );
    assert!(TcpStream::connect(addr).is_err(), "stopped");
}

#[test]
fn malformed_requests_get_400_and_the_double_keeps_serving() {
    let server = ApiServer::start();
    let mut plain = TcpStream::connect(server.addr()).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = plain.read(&mut [0u8; 64]); // the TLS handshake fails; the server closes
    let tls = rustls::ClientConnection::new(
        Arc::new(server.tls_client_config()),
        "127.0.0.1".try_into().unwrap(),
    )
    .unwrap();
    let mut conn = rustls::StreamOwned::new(tls, TcpStream::connect(server.addr()).unwrap());
    conn.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"reason\":\"BadRequest\""), "{answer}");
    assert_eq!(Api::new(&server).get(PODS).0, 200);
}

#[test]
fn requests_need_a_client_certificate_or_the_token() {
    let server = ApiServer::start_with(ApiServerConfig {
        bearer_token: Some("s3cret".into()),
        ..ApiServerConfig::default()
    });
    let anonymous = Api::with_tls(&server, server.tls_client_config_anonymous());
    let (code, status) = anonymous.get(PODS);
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let with_token = |token: &str| {
        let url = format!("{}{PODS}", anonymous.base);
        anonymous
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((with_token("s3cret"), with_token("wrong")), (200, 401));
    assert_eq!(Api::new(&server).get(PODS).0, 200);
}

#[test]
fn leases_events_namespaces_and_discovery() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let lease = json!({
        "metadata": { "name": "n1" },
        "spec": { "holderIdentity": "n1", "leaseDurationSeconds": 40 },
    });
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1";
    assert_eq!(
        api.call("PUT", path, Some(lease)).0,
        201,
        "PUT creates a lease"
    );
    let renew = json!({ "spec": { "renewTime": "2024-01-01T00:00:00.000000Z" } });
    assert_eq!(api.call("PATCH", path, Some(renew)).0, 200);
    let lease = server.get_lease("kube-node-lease", "n1").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("n1"));
    let event = json!({
        "metadata": { "generateName": "a." },
        "involvedObject": { "kind": "Pod", "name": "a" },
        "reason": "Started",
    });
    assert_eq!(
        api.call("POST", "/api/v1/namespaces/default/events", Some(event))
            .0,
        201
    );
    assert_eq!(server.events()[0].reason.as_deref(), Some("Started"));
    let (_, namespaces) = api.get("/api/v1/namespaces");
    assert_eq!(
        names(&namespaces),
        ["default", "kube-node-lease", "kube-system"]
    );
    let (_, resources) = api.get("/api/v1");
    let listed: Vec<_> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in [
        "pods",
        "pods/status",
        "nodes",
        "nodes/status",
        "events",
        "namespaces",
    ] {
        assert!(listed.contains(&name), "{name} in {listed:?}");
    }
    let (_, groups) = api.get("/apis");
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "coordination.k8s.io/v1"
    );
}

/// Decodes one base64url (no padding) JWT segment.
fn base64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

#[test]
fn configmaps_secrets_and_token_requests() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use rkubelet::api::KubeClient;

    let server = ApiServer::start();
    let api = Api::new(&server);
    let cms = "/api/v1/namespaces/default/configmaps";
    let cm = json!({ "metadata": { "name": "cfg" }, "data": { "a": "1" } });
    let (code, created) = api.call("POST", cms, Some(cm.clone()));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["kind"], "ConfigMap");
    assert_eq!(api.call("POST", cms, Some(cm)).0, 409);
    let (code, got) = api.get(&format!("{cms}/cfg"));
    assert_eq!((code, &got["data"]["a"]), (200, &json!("1")));
    let mut update = got.clone();
    update["data"]["a"] = json!("2");
    let (code, updated) = api.call("PUT", &format!("{cms}/cfg"), Some(update));
    assert_eq!(code, 200, "{updated}");
    assert!(rv_of(&updated) > rv_of(&got));
    let (code, stale) = api.call("PUT", &format!("{cms}/cfg"), Some(got));
    assert_eq!(code, 409, "{stale}");
    assert_eq!(api.get(&format!("{cms}/none")).0, 404);
    assert_eq!(names(&api.get(cms).1), ["cfg"]);
    let stored = server.get_config_map("default", "cfg").unwrap();
    assert_eq!(stored.data.clone().unwrap()["a"], "2");
    let mut typed = stored;
    typed.data.as_mut().unwrap().insert("b".into(), "3".into());
    let typed = server.update_config_map(typed).unwrap();
    assert_eq!(typed.data.unwrap().len(), 2);
    let other: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "other" } })).unwrap();
    server.create_config_map(other).unwrap();
    let (_, discovery) = api.get("/api/v1");
    let entries = discovery["resources"].as_array().unwrap();
    let entry = |name: &str| entries.iter().find(|r| r["name"] == name).cloned();
    assert_eq!(entry("configmaps").unwrap()["shortNames"], json!(["cm"]));
    assert_eq!(entry("secrets").unwrap()["kind"], "Secret");
    assert_eq!(
        entry("serviceaccounts/token").unwrap()["kind"],
        "TokenRequest"
    );

    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "s", "namespace": "kube-system" },
        "stringData": { "password": "hunter2" },
    }))
    .unwrap();
    server.create_secret(secret).unwrap();
    let (code, got) = api.get("/api/v1/namespaces/kube-system/secrets/s");
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["data"]["password"], "aHVudGVyMg==");
    assert_eq!(got["type"], "Opaque");
    assert!(got.get("stringData").is_none());

    let token_path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let (_, web) = api.call("POST", PODS, Some(pod("web", Some("node-a"))));
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": ["vault"],
            "expirationSeconds": 1200,
            "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": "web" },
        },
    });
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (code, answer) = api.call("POST", token_path, Some(request));
    assert_eq!(code, 201, "{answer}");
    let token = answer["status"]["token"].as_str().unwrap();
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "{token}");
    let claims: Value = serde_json::from_slice(&base64url_decode(segments[1])).unwrap();
    assert_eq!(claims["aud"], json!(["vault"]));
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 1200..=before + 1202).contains(&exp), "{claims}");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        web["metadata"]["uid"]
    );
    assert!(answer["status"]["expirationTimestamp"].is_string());
    let short = json!({ "spec": { "expirationSeconds": 599 } });
    let (code, status) = api.call("POST", token_path, Some(short));
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(server.token_requests(), 1);
    assert_eq!(server.request_count("create", "serviceaccounts/token"), 2);

    // The library's REST client against the same routes.
    let dir = scratch_dir("configmaps-secrets-tokens");
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "system:node:node-a")
        .unwrap();
    let config = rkubelet::api::kubeconfig::load(&kubeconfig).unwrap();
    let client = rkubelet::api::RestClient::new(config, 0.0, 0, Duration::from_secs(10)).unwrap();
    // The node authorizer: nothing a pod on node-a references yet.
    let denied = client.get_config_map("default", "cfg").unwrap_err();
    assert_eq!(denied.code(), Some(403), "{denied}");
    assert!(
        denied
            .to_string()
            .contains("no relationship found between node 'node-a' and this object"),
        "{denied}"
    );
    let mut uses = pod("uses", Some("node-a"));
    uses["spec"]["serviceAccountName"] = json!("sa");
    uses["spec"]["volumes"] = json!([
        { "name": "a", "configMap": { "name": "cfg" } },
        { "name": "b", "projected": { "sources": [{ "configMap": { "name": "none" } }] } },
    ]);
    let (code, uses) = api.call("POST", PODS, Some(uses));
    assert_eq!(code, 201, "{uses}");
    let cm = client.get_config_map("default", "cfg").unwrap();
    assert_eq!(cm.data.unwrap()["b"], "3");
    assert!(client
        .get_config_map("default", "none")
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        client.get_secret("kube-system", "s").unwrap_err().code(),
        Some(403)
    );
    let mut holder = pod("holder", Some("node-a"));
    holder["metadata"]["namespace"] = json!("kube-system");
    holder["spec"]["volumes"] = json!([{ "name": "s", "secret": { "secretName": "s" } }]);
    let (code, holder) = api.call("POST", "/api/v1/namespaces/kube-system/pods", Some(holder));
    assert_eq!(code, 201, "{holder}");
    let secret = client.get_secret("kube-system", "s").unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"hunter2");
    // Tokens: only for a pod of this node running as that service account.
    let unbound: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": ["api"] } })).unwrap();
    assert_eq!(
        client
            .create_token("default", "sa", &unbound)
            .unwrap_err()
            .code(),
        Some(403)
    );
    let request: TokenRequest = serde_json::from_value(json!({ "spec": {
        "audiences": ["api"],
        "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": "uses",
                            "uid": uses["metadata"]["uid"] },
    }}))
    .unwrap();
    assert_eq!(
        client
            .create_token("default", "default", &request)
            .unwrap_err()
            .code(),
        Some(403),
        "the pod runs as sa, not default"
    );
    let answer = client.create_token("default", "sa", &request).unwrap();
    let status = answer.status.unwrap();
    let exp = status.expiration_timestamp.0.as_second();
    assert!((before + 3600..=before + 3700).contains(&exp), "{exp}");
    assert!(!status.token.is_empty());
    let stats = client.stats();
    assert_eq!(stats.count("GET", "configmaps"), 3);
    assert_eq!(stats.count("GET", "secrets"), 2);
    assert_eq!(stats.count("POST", "serviceaccounts/token"), 3);
    assert_eq!(server.token_requests(), 2);
}

/// kubectl, or a clear failure if the machine lacks it.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let binary = Path::new("/usr/bin/kubectl");
    assert!(
        binary.exists(),
        "kubectl v1.32 is expected at /usr/bin/kubectl (preinstalled on the test machines)"
    );
    let mut command = Command::new(binary);
    let cache = kubeconfig.with_file_name("kubectl-cache");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args);
    command.stdin(Stdio::null());
    command
}

fn run_kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kubectl_gets_and_deletes() {
    let server = ApiServer::start();
    let dir = scratch_dir("apiserver-kubectl");
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "kubernetes-admin")
        .unwrap();
    let api = Api::new(&server);
    let node = json!({
        "metadata": { "name": "n1" },
        "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
    });
    api.call("POST", "/api/v1/nodes", Some(node));
    for name in ["web", "quick", "gone"] {
        api.call("POST", PODS, Some(pod(name, Some("n1"))));
    }
    let nodes = run_kubectl(&kubeconfig, &["get", "nodes"]);
    assert!(
        nodes.lines().nth(1).unwrap().starts_with("n1 ") && nodes.contains("Ready"),
        "{nodes}"
    );
    let pods = run_kubectl(&kubeconfig, &["get", "pods"]);
    assert!(pods.contains("web") && pods.contains("Pending"), "{pods}");
    let list: Value = serde_json::from_str(&run_kubectl(
        &kubeconfig,
        &["get", "pods", "-A", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(names(&list), ["gone", "quick", "web"]);

    let out = run_kubectl(&kubeconfig, &["delete", "pod", "quick", "--wait=false"]);
    assert!(out.contains("pod \"quick\" deleted"), "{out}");
    assert!(server
        .get_pod("default", "quick")
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    let out = run_kubectl(
        &kubeconfig,
        &["delete", "pod", "gone", "--grace-period=0", "--force"],
    );
    assert!(
        out.contains("deleted") && server.get_pod("default", "gone").is_none(),
        "{out}"
    );

    // With wait, kubectl watches until the pod is gone: play the kubelet's final delete.
    let mut child = kubectl(&kubeconfig, &["delete", "pod", "web", "--timeout=20s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watching = wait_for(Duration::from_secs(15), || {
        (server.open_watches() > 0).then_some(())
    });
    server.delete_pod("default", "web", Some(0)).unwrap();
    let status = wait_for(Duration::from_secs(15), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(watching.is_some(), "kubectl delete never watched");
    assert!(status.unwrap().success(), "kubectl delete with wait failed");
    assert!(server.get_pod("default", "web").is_none());
}

/// A mirror pod of node `n1` as the kubelet creates it, owned by the Node with `uid`.
fn mirror_pod(owner_uid: &str) -> Value {
    json!({"metadata": {"name": "static-n1", "namespace": "default",
            "annotations": {"kubernetes.io/config.mirror": "h"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                "uid": owner_uid, "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn node_restriction_limits_what_a_node_may_write() {
    let server = ApiServer::start();
    let admin = Api::new(&server);
    let node = Api::with_tls(&server, server.tls_client_config_for("system:node:n1"));
    let (code, created) = node.call(
        "POST",
        "/api/v1/nodes",
        Some(json!({"metadata": {"name": "n1",
        "labels": {"kubernetes.io/os": "linux"}},
        "spec": {"taints": [{"key": "registering", "effect": "NoSchedule"}]}})),
    );
    assert_eq!(code, 201, "taints at registration are fine: {created}");
    let node_uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    // Mirror pods: only with the Node as controller owner and the mirror annotation.
    let mut not_controller = mirror_pod(&node_uid);
    not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    let (code, status) = node.call("POST", PODS, Some(not_controller));
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "pods \"static-n1\" is forbidden: node \"n1\" can only create pods with a controller owner reference set to itself"
    );
    let (code, status) = node.call("POST", PODS, Some(mirror_pod("some-old-uid")));
    assert_eq!(code, 403, "{status}");
    assert!(status["message"].as_str().unwrap().contains("UID mismatch"));
    let mut plain = mirror_pod(&node_uid);
    plain["metadata"]["annotations"] = json!({});
    assert_eq!(node.call("POST", PODS, Some(plain)).0, 403);
    for (field, value) in [
        ("serviceAccountName", json!("default")),
        (
            "volumes",
            json!([{"name": "s", "secret": {"secretName": "x"}}]),
        ),
        (
            "volumes",
            json!([{"name": "c", "configMap": {"name": "x"}}]),
        ),
        (
            "volumes",
            json!([{"name": "p", "persistentVolumeClaim": {"claimName": "x"}}]),
        ),
    ] {
        let mut pod = mirror_pod(&node_uid);
        pod["spec"][field] = value;
        let (code, status) = node.call("POST", PODS, Some(pod));
        assert_eq!(code, 403, "{field}: {status}");
    }
    let (code, created) = node.call("POST", PODS, Some(mirror_pod(&node_uid)));
    assert_eq!(code, 201, "{created}");

    // Pods: status and deletion only for pods bound to the node; no other writes.
    admin.call("POST", PODS, Some(pod("mine", Some("n1"))));
    admin.call("POST", PODS, Some(pod("theirs", Some("n2"))));
    let status = json!({"status": {"phase": "Running"}});
    assert_eq!(
        node.call(
            "PATCH",
            &format!("{PODS}/mine/status"),
            Some(status.clone())
        )
        .0,
        200
    );
    let (code, answer) = node.call("PATCH", &format!("{PODS}/theirs/status"), Some(status));
    assert_eq!(code, 403, "{answer}");
    assert_eq!(
        node.call(
            "PATCH",
            &format!("{PODS}/mine"),
            Some(json!({"metadata": {"labels": {"a": "b"}}}))
        )
        .0,
        403
    );
    assert_eq!(node.call("DELETE", &format!("{PODS}/theirs"), None).0, 403);
    assert_eq!(node.call("DELETE", &format!("{PODS}/mine"), None).0, 200);

    // Its own Node: no restricted labels, no taint changes; never another Node.
    let restricted = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "a"}}});
    let (code, answer) = node.call("PATCH", "/api/v1/nodes/n1", Some(restricted));
    assert_eq!(code, 403, "{answer}");
    let role = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
    assert_eq!(node.call("PATCH", "/api/v1/nodes/n1", Some(role)).0, 403);
    let allowed = json!({"metadata": {"labels": {"example.com/team": "a",
        "topology.kubernetes.io/zone": "z1"}}});
    assert_eq!(node.call("PATCH", "/api/v1/nodes/n1", Some(allowed)).0, 200);
    let taints = json!({"spec": {"taints": []}});
    assert_eq!(node.call("PATCH", "/api/v1/nodes/n1", Some(taints)).0, 403);
    admin.call(
        "POST",
        "/api/v1/nodes",
        Some(json!({"metadata": {"name": "n2"}})),
    );
    let (code, answer) = node.call(
        "PATCH",
        "/api/v1/nodes/n2/status",
        Some(json!({"status": {"phase": "x"}})),
    );
    assert_eq!(code, 403, "{answer}");
    assert_eq!(
        answer["message"],
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
    );

    // Leases: its own, in kube-node-lease.
    let lease = |name: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name}, "spec": {"holderIdentity": name}})
    };
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    assert_eq!(node.call("POST", leases, Some(lease("n1"))).0, 201);
    assert_eq!(node.call("POST", leases, Some(lease("n2"))).0, 403);
    let elsewhere = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    assert_eq!(node.call("POST", elsewhere, Some(lease("n1"))).0, 403);
}

#[test]
fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let mut body = pod("held", Some("n1"));
    body["metadata"]["finalizers"] = json!(["example.com/keep"]);
    api.call("POST", PODS, Some(body));
    let path = format!("{PODS}/held?gracePeriodSeconds=0");
    assert_eq!(api.call("DELETE", &path, None).0, 200);
    let (code, held) = api.get(&format!("{PODS}/held"));
    assert_eq!(code, 200, "the finalizer keeps the pod");
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let patch = json!({"status": {"phase": "Failed"}});
    assert_eq!(
        api.call("PATCH", &format!("{PODS}/held/status"), Some(patch))
            .0,
        200
    );
    let release = json!({"metadata": {"finalizers": null}});
    assert_eq!(
        api.call("PATCH", &format!("{PODS}/held"), Some(release)).0,
        200
    );
    assert_eq!(
        api.get(&format!("{PODS}/held")).0,
        404,
        "gone with its last finalizer"
    );
}

#[test]
fn pods_are_stored_with_the_api_servers_defaults() {
    let server = ApiServer::start();
    let api = Api::new(&server);
    let body = json!({"metadata": {"name": "d"}, "spec": {"nodeName": "n1", "hostNetwork": true,
        "containers": [{"name": "c", "image": "busybox:1",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": "1"}},
            "livenessProbe": {"httpGet": {"port": 8080}},
            "env": [{"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                    {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}],
        "volumes": [{"name": "scratch"},
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}});
    let (code, stored) = api.call("POST", PODS, Some(body));
    assert_eq!(code, 201, "{stored}");
    let c = &stored["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        c["ports"][0],
        json!({"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"})
    );
    assert_eq!(c["resources"]["requests"], json!({"cpu": "1"}));
    let probe = &c["livenessProbe"];
    assert_eq!(
        (
            &probe["timeoutSeconds"],
            &probe["periodSeconds"],
            &probe["successThreshold"],
            &probe["failureThreshold"]
        ),
        (&json!(1), &json!(10), &json!(1), &json!(3))
    );
    assert_eq!(probe["httpGet"]["path"], "/");
    assert_eq!(probe["httpGet"]["scheme"], "HTTP");
    assert_eq!(c["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"], "0");
    assert_eq!(c["env"][1]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    let volumes = &stored["spec"]["volumes"];
    assert_eq!(volumes[0]["emptyDir"], json!({}));
    assert_eq!(volumes[1]["configMap"]["defaultMode"], 420);
    assert_eq!(volumes[2]["projected"]["defaultMode"], 420);
    assert_eq!(
        volumes[2]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    assert_eq!(stored["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(stored["spec"]["enableServiceLinks"], true);
}
