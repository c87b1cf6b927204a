//! Who may do what on the API server test double: authentication by client certificate or
//! bearer token; ConfigMaps, Secrets, TokenRequests, PersistentVolumeClaims and
//! PersistentVolumes, with the node authorizer's limits on what a node may read (through the
//! library's REST client); NodeRestriction on what a node
//! may write; kubeadm's RBAC and the registry strategy for CertificateSigningRequests.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::apiserver::client::{names, pod, rv_of, Api, PODS};
use support::apiserver::{ApiServer, ApiServerConfig};
use support::scratch_dir;

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

/// A PEM CSR for `cn` in `org`, base64 as `spec.request` carries it.
fn csr_request(cn: &str, org: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    rkubelet::util::base64::encode(pem.as_bytes())
}

#[test]
fn certificate_signing_requests_follow_kubeadms_rbac_and_the_registry_strategy() {
    const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let server = ApiServer::start_with(ApiServerConfig {
        auto_approve_node_client: false,
        ..ApiServerConfig::default()
    });
    let node = Api::with_tls(&server, server.tls_client_config_for("system:node:node1"));
    let body = |name: &str, expiration: Option<i64>| {
        let mut csr = json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": csr_request("system:node:node1", "system:nodes"),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
                "username": "someone-else",
            },
            "status": {"certificate": "Zm9v"},
        });
        if let Some(secs) = expiration {
            csr["spec"]["expirationSeconds"] = json!(secs);
        }
        csr
    };
    // The requester is recorded from the credentials, whatever the body says; status is
    // dropped; any name will do (upstream validates none).
    let (code, created) = node.call("POST", CSRS, Some(body("node-csr-Mixed_Case", None)));
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["username"], "system:node:node1");
    assert_eq!(
        created["spec"]["groups"],
        json!(["system:nodes", "system:authenticated"])
    );
    assert!(created["status"]["certificate"].is_null(), "{created}");
    let (code, status) = node.call("POST", CSRS, Some(body("short", Some(300))));
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.expirationSeconds"),
        "{status}"
    );

    // A node may not approve, not even its own request; an administrator may.
    let approval = |api: &Api| {
        let mut csr = created.clone();
        csr["status"] = json!({"conditions": [{
            "type": "Approved", "status": "True", "reason": "Test", "message": "approved",
        }]});
        api.call(
            "PUT",
            &format!("{CSRS}/node-csr-Mixed_Case/approval"),
            Some(csr),
        )
    };
    let (code, status) = approval(&node);
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains(
            "User \"system:node:node1\" cannot update resource \"certificatesigningrequests/approval\""
        ),
        "{status}"
    );
    let (code, approved) = approval(&Api::new(&server));
    assert_eq!(code, 200, "{approved}");
    // The signer has issued it by the time it is read back.
    let (code, issued) = node.get(&format!("{CSRS}/node-csr-Mixed_Case"));
    assert_eq!(code, 200);
    assert!(issued["status"]["certificate"].is_string(), "{issued}");
    // A node may not delete CSRs.
    let (code, _) = node.call("DELETE", &format!("{CSRS}/node-csr-Mixed_Case"), None);
    assert_eq!(code, 403);
}

#[test]
fn claims_and_volumes_follow_the_node_authorizer_graph() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use rkubelet::api::KubeClient;

    let server = ApiServer::start();
    let api = Api::new(&server);
    let claim = |name: &str| -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap()
    };
    let volume = |name: &str| -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/tmp/x"}}}))
        .unwrap()
    };
    for (c, v) in [
        ("data", "pv-data"),
        ("web-scratch", "pv-scratch"),
        ("other", "pv-other"),
    ] {
        let created = server.create_persistent_volume_claim(claim(c)).unwrap();
        assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
        server.create_persistent_volume(volume(v)).unwrap();
        server.bind_claim("default", c, v).unwrap();
    }
    let bound = server
        .get_persistent_volume_claim("default", "data")
        .unwrap();
    assert_eq!(bound.spec.unwrap().volume_name.as_deref(), Some("pv-data"));
    assert_eq!(bound.status.unwrap().phase.as_deref(), Some("Bound"));
    let (code, pv) = api.get("/api/v1/persistentvolumes/pv-data");
    assert_eq!(code, 200, "{pv}");
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    let (_, discovery) = api.get("/api/v1");
    let entries = discovery["resources"].as_array().unwrap();
    let entry = |name: &str| entries.iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(entry("persistentvolumeclaims")["namespaced"], json!(true));
    assert_eq!(
        entry("persistentvolumeclaims")["shortNames"],
        json!(["pvc"])
    );
    assert_eq!(entry("persistentvolumes")["namespaced"], json!(false));

    let mut web = pod("web", Some("node-a"));
    web["spec"]["volumes"] = json!([
        {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
    ]);
    assert_eq!(api.call("POST", PODS, Some(web)).0, 201);
    let dir = scratch_dir("claims-authz");
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "system:node:node-a")
        .unwrap();
    let config = rkubelet::api::kubeconfig::load(&kubeconfig).unwrap();
    let client = rkubelet::api::RestClient::new(config, 0.0, 0, Duration::from_secs(10)).unwrap();
    // Claims its pods reference (by name, or `<pod>-<volume>` for an ephemeral volume), and
    // the volumes those claims are bound to.
    assert!(client
        .get_persistent_volume_claim("default", "data")
        .is_ok());
    assert!(client
        .get_persistent_volume_claim("default", "web-scratch")
        .is_ok());
    let got = client.get_persistent_volume("pv-data").unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some("pv-data"));
    assert!(client.get_persistent_volume("pv-scratch").is_ok());
    // Nothing else.
    let denied = client
        .get_persistent_volume_claim("default", "other")
        .unwrap_err();
    assert_eq!(denied.code(), Some(403), "{denied}");
    assert!(denied
        .to_string()
        .contains("no relationship found between node 'node-a' and this object"));
    let denied = client.get_persistent_volume("pv-other").unwrap_err();
    assert_eq!(denied.code(), Some(403), "{denied}");
    assert!(
        denied
            .to_string()
            .contains("persistentvolumes \"pv-other\" is forbidden")
            && denied.to_string().contains("at the cluster scope"),
        "{denied}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csi_objects_follow_the_node_authorizer_and_the_registries() {
    const STORAGE: &str = "/apis/storage.k8s.io/v1";
    let server = ApiServer::start();
    let admin = Api::new(&server);
    let node = Api::with_tls(&server, server.tls_client_config_for("system:node:node-a"));

    // CSIDriver defaults; any node may read drivers.
    let (code, driver) = admin.call(
        "POST",
        &format!("{STORAGE}/csidrivers"),
        Some(json!({"metadata": {"name": "d.example.com"}, "spec": {}})),
    );
    assert_eq!(code, 201, "{driver}");
    assert_eq!(driver["spec"]["attachRequired"], true);
    assert_eq!(driver["spec"]["podInfoOnMount"], false);
    assert_eq!(
        driver["spec"]["volumeLifecycleModes"],
        json!(["Persistent"])
    );
    assert_eq!(driver["spec"]["fsGroupPolicy"], "ReadWriteOnceWithFSType");
    assert_eq!(
        node.get(&format!("{STORAGE}/csidrivers/d.example.com")).0,
        200
    );

    // A node writes only the CSINode of its own name, and a valid one.
    let csi_node = |name: &str, drivers: Value| json!({"metadata": {"name": name}, "spec": {"drivers": drivers}});
    let (code, body) = node.call(
        "POST",
        &format!("{STORAGE}/csinodes"),
        Some(csi_node("node-b", json!([]))),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("can only access CSINode with the same name as the requesting node"),
        "{body}"
    );
    let (code, body) = node.call(
        "POST",
        &format!("{STORAGE}/csinodes"),
        Some(csi_node("node-a", json!([{"name": "d.example.com"}]))),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("spec.drivers[0].nodeID: Required value: nodeID must be provided"),
        "{body}"
    );
    let (code, created) = node.call(
        "POST",
        &format!("{STORAGE}/csinodes"),
        Some(csi_node(
            "node-a",
            json!([{"name": "d.example.com", "nodeID": "n-a"}]),
        )),
    );
    assert_eq!(code, 201, "{created}");
    let mut updated = created.clone();
    updated["spec"]["drivers"] = json!([]);
    let (code, body) = node.call("PUT", &format!("{STORAGE}/csinodes/node-a"), Some(updated));
    assert_eq!(code, 200, "{body}");
    let (code, _) = admin.call(
        "POST",
        &format!("{STORAGE}/csinodes"),
        Some(csi_node("node-b", json!([]))),
    );
    assert_eq!(code, 201);
    let (code, body) = node.get(&format!("{STORAGE}/csinodes/node-b"));
    assert_eq!(code, 403, "{body}");

    // VolumeAttachments: only those naming the node.
    for (name, target) in [("csi-a", "node-a"), ("csi-b", "node-b")] {
        let (code, body) = admin.call(
            "POST",
            &format!("{STORAGE}/volumeattachments"),
            Some(
                json!({"metadata": {"name": name}, "spec": {"attacher": "d.example.com",
                "nodeName": target, "source": {"persistentVolumeName": "pv"}}}),
            ),
        );
        assert_eq!(code, 201, "{body}");
    }
    assert_eq!(
        node.get(&format!("{STORAGE}/volumeattachments/csi-a")).0,
        200
    );
    let (code, body) = node.get(&format!("{STORAGE}/volumeattachments/csi-b"));
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "volumeattachments.storage.k8s.io \"csi-b\" is forbidden: User \"system:node:node-a\" cannot get resource \"volumeattachments\" in API group \"storage.k8s.io\" at the cluster scope: no relationship found between node 'node-a' and this object"
    );

    // Claims and volumes are validated as the registries do.
    let (code, body) = admin.call(
        "POST",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        Some(json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}})),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .ends_with("spec.accessModes: Required value: at least 1 access mode is required"));
    let (code, body) = admin.call(
        "POST",
        "/api/v1/persistentvolumes",
        Some(
            json!({"metadata": {"name": "pv"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"]}}),
        ),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .ends_with("spec: Required value: must specify a volume type"));
}
