//! The kubelet API of an in-process kubelet (fake runtime) joined to the API server double:
//! authentication (client certificates, TokenReview, anonymous refused) and authorization
//! (SubjectAccessReview with upstream's path mapping) table-driven over the paths, the
//! endpoints' answers, the read-only port, the pod-resources socket, and the server staying
//! responsive under many concurrent and stalled clients.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::cri::FakeRuntime;
use rkubelet::server::podresources::{podresources, podresources_grpc};
use support::apiserver::ApiServer;
use support::cluster::{ClusterNode, NODE};
use support::kubelet_api::{parse_prometheus, plain_get, request, sample, Auth};
use support::{free_port, scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const WAIT: Duration = Duration::from_secs(20);

fn api_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![
                Container {
                    name: "app".into(),
                    image: Some(IMAGE.into()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    ..Default::default()
                },
                Container {
                    name: "helper".into(),
                    image: Some(IMAGE.into()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Node {
    server: ApiServer,
    node: Option<ClusterNode>,
    dir: PathBuf,
    addr: SocketAddr,
    read_only: SocketAddr,
}

impl Node {
    fn start(name: &str) -> Node {
        let dir = scratch_dir(&format!("server-{name}"));
        let server = ApiServer::start();
        std::fs::write(dir.join("client-ca.crt"), server.ca_pem()).unwrap();
        let rt = Arc::new(FakeRuntime::new());
        rt.add_image(IMAGE);
        let (port, ro) = (free_port(), free_port());
        let args = [
            "--address=127.0.0.1".to_string(),
            format!("--port={port}"),
            format!("--read-only-port={ro}"),
            format!("--client-ca-file={}", dir.join("client-ca.crt").display()),
        ];
        let node = ClusterNode::start_serving(&dir, &server, &rt, &args);
        Node {
            server,
            node: Some(node),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            read_only: SocketAddr::from(([127, 0, 0, 1], ro)),
            dir,
        }
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.join("root/pki")
    }

    fn get(&self, path: &str, auth: Auth<'_>) -> support::kubelet_api::Reply {
        request(self.addr, &self.cert_dir(), "GET", path, auth)
    }

    fn wait_running(&self, name: &str) {
        wait_for(WAIT, || {
            let phase = self.server.get_pod("default", name)?.status?.phase;
            (phase.as_deref() == Some("Running")).then_some(())
        })
        .expect("pod Running in the API");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(n) = self.node.take() {
            self.server.close_watches();
            n.stop();
        }
        self.server.stop();
    }
}

const PATHS: &[(&str, &str)] = &[
    ("/pods", "pods"),
    ("/runningpods/", "pods"),
    ("/configz", "configz"),
    ("/healthz", "healthz"),
    ("/stats/summary", "stats"),
    ("/metrics", "metrics"),
    ("/metrics/probes", "metrics"),
    ("/metrics/resource", "metrics"),
    ("/containerLogs/default/web/app", "proxy"),
];

#[test]
fn authentication_and_authorization_table_over_the_paths() {
    let n = Node::start("auth");
    n.server.create_pod(api_pod("web")).unwrap();
    n.wait_running("web");
    // Tokens the TokenReview double knows; what SubjectAccessReview allows.
    n.server.accept_token("good-token", "alice", &["devs"]);
    n.server
        .accept_token("metrics-token", "scraper", &["monitoring"]);
    n.server
        .allow_kubelet_access("scraper", &["metrics", "stats"]);
    let admin = n.server.issue_client_cert("kube-apiserver-kubelet-client");
    let other_node = n.server.issue_client_cert("system:node:other");
    for (path, sub) in PATHS {
        // A certificate from the client CA in group system:masters: allowed everywhere.
        let r = n.get(path, Auth::Cert(&admin));
        assert_eq!(
            r.status,
            200,
            "{path} with the admin certificate: {}",
            r.text()
        );
        // Nothing at all: 401.
        let r = n.get(path, Auth::None);
        assert_eq!(r.status, 401, "{path} anonymous: {}", r.text());
        assert_eq!(r.text(), "Unauthorized");
        // A token TokenReview rejects: 401.
        let r = n.get(path, Auth::Token("forged"));
        assert_eq!(r.status, 401, "{path} bad token");
        // A valid token whose user may do nothing: 403 naming the subresource tried last.
        let r = n.get(path, Auth::Token("good-token"));
        assert_eq!(r.status, 403, "{path} alice");
        let fallback = if matches!(*sub, "pods" | "configz" | "healthz") {
            "proxy"
        } else {
            sub
        };
        assert_eq!(
            r.text(),
            format!("Forbidden (user=alice, verb=get, resource=nodes, subresource={fallback})")
        );
        // A certificate whose user is denied: 403.
        let r = n.get(path, Auth::Cert(&other_node));
        assert_eq!(r.status, 403, "{path} other node");
        // A token allowed metrics and stats only.
        let r = n.get(path, Auth::Token("metrics-token"));
        let expected = if matches!(*sub, "metrics" | "stats") {
            200
        } else {
            403
        };
        assert_eq!(r.status, expected, "{path} scraper: {}", r.text());
    }
    // Upstream's attributes reached the review: the fine-grained subresource first, then proxy.
    let asked = n.server.access_reviews();
    for wanted in [
        ("alice", "get", "pods"),
        ("alice", "get", "proxy"),
        ("scraper", "get", "metrics"),
    ] {
        assert!(
            asked
                .iter()
                .any(|(u, v, s)| (u.as_str(), v.as_str(), s.as_str()) == wanted),
            "{wanted:?} not in {asked:?}"
        );
    }
    // Decisions and token reviews are cached: asking again sends no new review.
    let before = n.server.access_reviews().len();
    let r = n.get("/metrics", Auth::Token("metrics-token"));
    assert_eq!(r.status, 200);
    assert_eq!(n.server.access_reviews().len(), before, "cached decision");
    // Bad input gets a clear answer and the server carries on.
    let r = n.get(
        "/containerLogs/default/web/app?tailLines=x",
        Auth::Cert(&admin),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("tailLines"), "{}", r.text());
    let r = n.get("/containerLogs/default/nope/app", Auth::Cert(&admin));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = n.get("/no/such/path", Auth::Cert(&admin));
    assert_eq!(r.status, 404);
    let r = request(n.addr, &n.cert_dir(), "DELETE", "/pods", Auth::Cert(&admin));
    assert_eq!(r.status, 404);
}

#[test]
fn endpoints_answer_with_upstream_shapes_and_the_read_only_port_serves_without_auth() {
    let n = Node::start("endpoints");
    n.server.create_pod(api_pod("web")).unwrap();
    n.wait_running("web");
    let admin = n.server.issue_client_cert("kube-apiserver-kubelet-client");
    let auth = Auth::Cert(&admin);

    let pods = n.get("/pods", auth).json();
    assert_eq!(pods["kind"], "PodList");
    let web = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "web")
        .expect("web in /pods");
    assert_eq!(web["status"]["phase"], "Running");

    let running = n.get("/runningpods/", auth).json();
    let names: Vec<&str> = running["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["web"]);

    let configz = n.get("/configz", auth).json();
    assert_eq!(configz["kubeletconfig"]["kind"], "KubeletConfiguration");
    assert_eq!(configz["kubeletconfig"]["authorization"]["mode"], "Webhook");

    let healthz = n.get("/healthz?verbose", auth);
    assert_eq!(healthz.status, 200);
    assert!(
        healthz.text().contains("[+]syncloop ok"),
        "{}",
        healthz.text()
    );

    // Summary: every running pod with its containers and non-zero memory.
    let summary = n.get("/stats/summary", auth).json();
    assert_eq!(summary["node"]["nodeName"], NODE);
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    let pods = summary["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "{summary}");
    assert_eq!(pods[0]["podRef"]["name"], "web");
    assert!(pods[0]["memory"]["workingSetBytes"].as_u64().unwrap() > 0);
    assert_eq!(pods[0]["containers"].as_array().unwrap().len(), 2);

    let metrics = n.get("/metrics", auth);
    assert!(
        metrics.head.contains("text/plain; version=0.0.4"),
        "{}",
        metrics.head
    );
    let samples = parse_prometheus(&metrics.text());
    assert_eq!(sample(&samples, "kubelet_running_pods"), Some(1.0));
    assert_eq!(
        sample(
            &samples,
            "kubelet_running_containers{container_state=\"running\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&samples, "kubelet_node_name{node=\"node1\"}"),
        Some(1.0)
    );
    assert!(sample(&samples, "kubelet_started_pods_total").unwrap() >= 1.0);
    assert!(
        sample(
            &samples,
            "kubelet_started_containers_total{container_type=\"container\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(sample(&samples, "kubelet_pod_start_duration_seconds_count").unwrap() >= 1.0);
    assert!(
        sample(
            &samples,
            "kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(&samples, "kubelet_pleg_relist_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&samples, "process_resident_memory_bytes").unwrap() > 0.0);
    let text = metrics.text();
    for family in [
        "kubelet_runtime_operations_total",
        "kubelet_runtime_operations_duration_seconds",
        "kubelet_runtime_operations_errors_total",
        "kubelet_pleg_relist_interval_seconds",
        "prober_probe_total",
        "process_cpu_seconds_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    let resource = parse_prometheus(&n.get("/metrics/resource", auth).text());
    assert_eq!(sample(&resource, "scrape_error"), Some(0.0));
    assert!(
        sample(
            &resource,
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(
        sample(
            &resource,
            "container_memory_working_set_bytes{container=\"app\""
        )
        .unwrap()
            > 0.0
    );

    // The read-only port: /pods, /healthz, /stats/summary without any credentials, and
    // nothing else.
    let ro = plain_get(n.read_only, "/pods");
    assert_eq!(ro.status, 200);
    assert_eq!(ro.json()["kind"], "PodList");
    assert_eq!(plain_get(n.read_only, "/healthz").text(), "ok");
    assert_eq!(plain_get(n.read_only, "/stats/summary").status, 200);
    assert_eq!(plain_get(n.read_only, "/configz").status, 404);
    assert_eq!(plain_get(n.read_only, "/runningpods/").status, 404);

    // The pod-resources socket, mode 0600, lists the pod and its containers.
    let socket = n.dir.join("root/pod-resources/kubelet.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let list = pod_resources(&socket);
    let web = list
        .get_pod_resources()
        .iter()
        .find(|p| p.get_name() == "web")
        .expect("web in List");
    assert_eq!(web.get_namespace(), "default");
    let mut containers: Vec<&str> = web.get_containers().iter().map(|c| c.get_name()).collect();
    containers.sort();
    assert_eq!(containers, vec!["app", "helper"]);
}

fn pod_resources(socket: &Path) -> podresources::ListPodResourcesResponse {
    let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let channel = grpcio::ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()));
    let client = podresources_grpc::PodResourcesListerClient::new(channel);
    let opt = grpcio::CallOption::default().timeout(Duration::from_secs(10));
    let list = client
        .list_opt(&podresources::ListPodResourcesRequest::new(), opt.clone())
        .unwrap();
    let mut get = podresources::GetPodResourcesRequest::new();
    get.pod_name = "web".into();
    get.pod_namespace = "default".into();
    let one = client.get_opt(&get, opt.clone()).unwrap();
    assert_eq!(one.get_pod_resources().get_containers().len(), 2);
    get.pod_name = "missing".into();
    let err = client.get_opt(&get, opt.clone()).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    client
        .get_allocatable_resources_opt(&podresources::AllocatableResourcesRequest::new(), opt)
        .unwrap();
    // Four times as many calls as the server asks gRPC core for ahead of time, in rounds of
    // 4 at once (the server refuses more than 8 at once): every slot a call used is asked for
    // again, so the calls beyond the slots are answered too.
    const AT_ONCE: usize = 4;
    for _ in 0..rkubelet::util::GRPC_SERVER_SLOTS * 4 / AT_ONCE {
        let barrier = Arc::new(std::sync::Barrier::new(AT_ONCE));
        let answered: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (client, barrier) = (client.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let opt = grpcio::CallOption::default().timeout(Duration::from_secs(10));
                    client
                        .list_opt(&podresources::ListPodResourcesRequest::new(), opt)
                        .map(|l| l.get_pod_resources().len())
                })
            })
            .collect();
        for call in answered {
            let pods = call.join().unwrap().expect("a List is answered");
            assert_eq!(pods, list.get_pod_resources().len());
        }
    }
    list
}

#[test]
fn many_concurrent_and_stalled_clients_do_not_hold_up_pods() {
    let n = Node::start("load");
    n.server.create_pod(api_pod("web")).unwrap();
    n.wait_running("web");
    let admin = n.server.issue_client_cert("kube-apiserver-kubelet-client");
    // 50 clients that connect and never finish their request.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(n.addr).unwrap();
        // Half a TLS record header: the handshake can never complete.
        s.write_all(&[0x16, 0x03]).unwrap();
        stalled.push(s);
    }
    // 200 concurrent /healthz requests.
    let cert_dir = n.cert_dir();
    let healthz: Vec<_> = (0..200)
        .map(|_| {
            let (addr, dir, id) = (n.addr, cert_dir.clone(), admin.clone());
            std::thread::spawn(move || {
                request(addr, &dir, "GET", "/healthz", Auth::Cert(&id)).status
            })
        })
        .collect();
    let started = Instant::now();
    let pods = n.get("/pods", Auth::Cert(&admin));
    let took = started.elapsed();
    assert_eq!(pods.status, 200);
    eprintln!("/pods answered in {took:?} beside 200 /healthz requests and 50 stalled clients");
    assert!(
        took < Duration::from_secs(1),
        "/pods took {took:?} with stalled clients connected"
    );
    for h in healthz {
        assert_eq!(h.join().unwrap(), 200);
    }
    eprintln!("all 200 /healthz answered after {:?}", started.elapsed());
    // The stalled clients are dropped once the head deadline passes.
    let mut s = stalled.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 64];
    let closed = loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break true,
            // An alert before the close.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "a stalled client is disconnected");
    drop(stalled);
}
