//! An in-process kubelet joined to the API server test double over the in-memory fake
//! runtime: what `app::run` assembles for `--kubeconfig`, with the runtime swapped for the
//! fake. Used by the cluster integration tests and the cluster benchmark.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rkubelet::api::services::ServiceInformer;
use rkubelet::api::KubeClient;
use rkubelet::app::certificates;
use rkubelet::app::{make_pod_sources, make_rest_client, new_main_kubelet, start_kubelet};
use rkubelet::clock::{Clock, RealClock};
use rkubelet::config::settings::KubeletConfig;
use rkubelet::cri::FakeRuntime;
use rkubelet::events::{ApiRecorder, Recorder};
use rkubelet::kubelet::node_status::{start_node_threads, KubeletNodeStatus, NodeStatusDeps};
use rkubelet::kubelet::{Bootstrap, Deps, Kubelet, KubeletError};

use super::apiserver::ApiServer;

/// The node name the in-process kubelet registers as.
pub const NODE: &str = "node1";

/// A running in-process kubelet.
pub struct ClusterNode {
    /// The kubelet (its tables, for tests that look inside).
    pub kubelet: Arc<Kubelet>,
    stop: Option<crossbeam_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    sync_loop: Option<JoinHandle<Result<(), KubeletError>>>,
}

impl ClusterNode {
    /// Starts a kubelet for node [`NODE`] with its files under `dir`.
    pub fn start(dir: &Path, server: &ApiServer, runtime: &Arc<FakeRuntime>) -> ClusterNode {
        Self::start_with_max_pods(dir, server, runtime, 110)
    }

    /// Like [`start`](ClusterNode::start) with `--max-pods`.
    pub fn start_with_max_pods(
        dir: &Path,
        server: &ApiServer,
        runtime: &Arc<FakeRuntime>,
        max_pods: u32,
    ) -> ClusterNode {
        Self::start_with(
            dir,
            server,
            runtime,
            &[format!("--max-pods={max_pods}")],
            false,
        )
    }

    /// Like [`start`](ClusterNode::start), also serving the kubelet API, the read-only port
    /// and the pod-resources socket as `extra_args` configure them.
    pub fn start_serving(
        dir: &Path,
        server: &ApiServer,
        runtime: &Arc<FakeRuntime>,
        extra_args: &[String],
    ) -> ClusterNode {
        Self::start_with(dir, server, runtime, extra_args, true)
    }

    /// Like [`start`](ClusterNode::start) with extra kubelet flags.
    pub fn start_with_args(
        dir: &Path,
        server: &ApiServer,
        runtime: &Arc<FakeRuntime>,
        extra_args: &[String],
    ) -> ClusterNode {
        Self::start_with(dir, server, runtime, extra_args, false)
    }

    fn start_with(
        dir: &Path,
        server: &ApiServer,
        runtime: &Arc<FakeRuntime>,
        extra_args: &[String],
        serve: bool,
    ) -> ClusterNode {
        let kubeconfig = dir.join("kubeconfig");
        let bootstraps = extra_args
            .iter()
            .any(|a| a.starts_with("--bootstrap-kubeconfig"));
        if !bootstraps {
            server
                .write_kubeconfig(&kubeconfig, &format!("system:node:{NODE}"))
                .unwrap();
        }
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let mut args = vec![
            "rkubelet".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--pod-manifest-path={}", dir.join("manifests").display()),
            format!("--root-dir={}", dir.join("root").display()),
            format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
            format!("--hostname-override={NODE}"),
            "--node-ip=127.0.0.1".into(),
            "--resolv-conf=".into(),
        ];
        if !extra_args.iter().any(|a| a.starts_with("--eviction-hard")) {
            // As the e2e harness: a shared machine's full disk must not turn these tests
            // into eviction tests.
            args.push(
                "--eviction-hard=memory.available<1Mi,nodefs.available<1%,imagefs.available<1%"
                    .into(),
            );
        }
        args.extend(extra_args.iter().cloned());
        let config = Arc::new(KubeletConfig::from_args(args.iter().map(Into::into)).unwrap());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        certificates::bootstrap(&config, &stop_rx).unwrap();
        let rest = make_rest_client(&config).unwrap().expect("client");
        let rotation = certificates::start_client_rotation(&config, &rest, &stop_rx).unwrap();
        let client: Arc<dyn KubeClient> = rest.clone();
        let mut sources = make_pod_sources(&config, Some(client.clone()), &stop_rx).unwrap();
        sources.threads.extend(rotation);
        let clock: Arc<dyn Clock> = Arc::new(RealClock);
        let (recorder, events) =
            ApiRecorder::start(client.clone(), clock.clone(), NODE, stop_rx.clone()).unwrap();
        sources.threads.push(events);
        let recorder: Arc<dyn Recorder> = recorder;
        let services = ServiceInformer::new(client.clone());
        sources
            .threads
            .push(services.start(stop_rx.clone()).unwrap());
        let deps = Deps {
            runtime: runtime.clone(),
            images: runtime.clone(),
            clock: clock.clone(),
            recorder: recorder.clone(),
            runtime_name: "fake".into(),
            sources_ready: sources.sources_ready.clone(),
            api: Some(client.clone()),
            tmpfs: false,
            host_cgroups: false,
            shared_pod_work: None,
            waiters: None,
            services: Some(services),
        };
        let kubelet = new_main_kubelet(config.clone(), deps).unwrap();
        let source = Arc::new(KubeletNodeStatus::new(
            &config,
            NodeStatusDeps {
                runtime: runtime.clone(),
                images: runtime.clone(),
                pleg: kubelet.pleg().clone(),
                recorder,
                runtime_name: "fake".into(),
                runtime_version: "0.1.0".into(),
                node: Arc::clone(kubelet.node_record()),
                pressure: Arc::clone(kubelet.node_pressure()),
                runtime_manager: Some(Arc::clone(kubelet.runtime_manager())),
            },
        ));
        sources
            .threads
            .extend(start_node_threads(&config, client, clock, source, &stop_rx).unwrap());
        kubelet.birth_cry();
        if serve {
            let node_ips = kubelet.node_record().node_ips().to_vec();
            let rotation =
                certificates::start_serving_rotation(&config, Some(&rest), node_ips, &stop_rx)
                    .unwrap();
            let serving = rotation.map(|r| {
                sources.threads.push(r.thread);
                r.cert
            });
            sources
                .threads
                .extend(kubelet.listen_and_serve(&stop_rx, serving).unwrap());
            sources
                .threads
                .extend(kubelet.listen_and_serve_read_only(&stop_rx).unwrap());
            sources
                .threads
                .extend(kubelet.listen_and_serve_pod_resources(&stop_rx).unwrap());
        }
        let sync_loop = start_kubelet(kubelet.clone(), sources.updates, stop_rx).unwrap();
        ClusterNode {
            kubelet,
            stop: Some(stop_tx),
            threads: sources.threads,
            sync_loop: Some(sync_loop),
        }
    }

    /// Stops every thread (bounded wait for the pod watch).
    pub fn stop(mut self) {
        self.stop.take();
        // The pod watch may sit in a blocking read; the double closes it on request.
        for t in self.threads.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(s) = self.sync_loop.take() {
            s.join().unwrap().unwrap();
        }
    }
}
