//! Writes to the API server test double as kube-apiserver applies them: the status
//! subresource split, JSON merge patch (RFC 7386) and strategic merge patch, graceful pod
//! deletion, delete preconditions and finalizers.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::apiserver::client::{pod, rv_of, Api, PODS};
use support::apiserver::ApiServer;

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
