//! The API server test double as a server: injected faults (failures, stalls, closed and
//! fed watches), going down and coming back, malformed requests, and kubectl v1.32 as a
//! real client.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::apiserver::client::{names, pod, Api, PODS};
use support::apiserver::ApiServer;
use support::{scratch_dir, wait_for};

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
