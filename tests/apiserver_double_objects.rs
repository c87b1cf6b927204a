//! The API server test double's objects as kube-apiserver keeps them: create, get and list
//! with field and label selectors, the one global resourceVersion, `Status` errors with
//! upstream's reasons, pods stored with the v1 defaults, and leases, events, namespaces and
//! discovery.

mod support;

use serde_json::{json, Value};
use support::apiserver::client::{names, pod, rv_of, Api, PODS};
use support::apiserver::ApiServer;

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
    assert_eq!(
        names(&selected(
            "labelSelector=app%20in%20%28web%2Cdb%29%2C%21tier"
        )),
        ["a", "b", "c"]
    );
    assert_eq!(names(&api.get(PODS).1), ["a", "b"]);
    let (code, status) = api.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx");
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    assert_eq!(server.list_pods().len(), 3);
    assert_eq!(server.request_count("list", "pods"), 10);
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
