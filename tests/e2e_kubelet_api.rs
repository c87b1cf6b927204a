//! End-to-end kubelet API through kubectl: logs, exec, port-forward, metrics and the
//! summary.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double,
//! driven with the real `kubectl`. Ignored in a plain `cargo test` (they need the containerd
//! `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::e2e::{main_status, pod, wait_phase, Cluster, SERIAL};
use support::wait_for;

/// Lines of a running command's stdout, as they come.
fn line_reader(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn kubelet_api_logs_exec_port_forward_metrics_and_summary_through_kubectl() {
    use support::kubelet_api::{parse_prometheus, request, sample, Auth};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-api");
    c.wait_ready_node();
    c.server
        .create_pod(pod(
            "talker",
            "echo first; echo second; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
            1,
        ))
        .unwrap();
    let mut crasher = pod("crasher", "echo run-$(date +%s%N); sleep 2; exit 1", 1);
    crasher.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    c.server.create_pod(crasher).unwrap();
    c.server
        .create_pod(pod(
            "web",
            "mkdir -p /www; echo hello-through-port-forward > /www/index.html; httpd -f -p 8080 -h /www",
            1,
        ))
        .unwrap();
    for name in ["talker", "web"] {
        wait_phase(&c, name, "Running", Duration::from_secs(60));
    }

    // Logs through the API server's pods/log, as `kubectl logs` reads them.
    let logs = wait_for(Duration::from_secs(30), || {
        let out = c.kubectl(&["logs", "talker"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("tick-2").then_some(text)
    })
    .unwrap_or_else(|| panic!("no logs:\n{}", c.log()));
    assert!(logs.starts_with("first\nsecond\ntick-1\n"), "{logs}");
    let tail = c.kubectl(&["logs", "talker", "--tail=1"]);
    let tail = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert_eq!(tail.lines().count(), 1, "{tail:?}");
    assert!(tail.starts_with("tick-"), "{tail:?}");
    let stamped = c.kubectl(&["logs", "talker", "--tail=1", "--timestamps"]);
    let stamped = String::from_utf8_lossy(&stamped.stdout).into_owned();
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{stamped:?}"
    );
    assert!(text.starts_with("tick-"), "{stamped:?}");
    // follow: lines written after the request began arrive while it is open.
    let mut follow = c
        .kubectl_command(&["logs", "-f", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut follow);
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("first followed line");
    let n = |l: &str| l.trim_start_matches("tick-").parse::<u64>().unwrap();
    let mut later = Vec::new();
    while later.len() < 2 {
        later.push(
            lines
                .recv_timeout(Duration::from_secs(10))
                .expect("new lines arrive while following"),
        );
    }
    assert!(
        n(&later[1]) > n(&later[0]) && n(&later[0]) > n(&first),
        "{first} {later:?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    // previous: the attempt before a restart.
    wait_for(Duration::from_secs(60), || {
        let restarts = main_status(&c, "crasher")?.restart_count;
        (restarts >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("crasher never restarted:\n{}", c.log()));
    let previous = c.kubectl(&["logs", "crasher", "--previous"]);
    let previous_text = String::from_utf8_lossy(&previous.stdout).into_owned();
    assert!(
        previous_text.starts_with("run-"),
        "{previous_text:?} {}",
        String::from_utf8_lossy(&previous.stderr)
    );

    // exec through the API server, the kubelet's streaming proxy and containerd.
    let out = c.kubectl(&["exec", "talker", "--", "echo", "hi"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let out = c.kubectl(&["exec", "talker", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit codes come back");

    // port-forward to busybox httpd in the pod.
    let local = support::free_port();
    let mut forward = c
        .kubectl_command(&["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut forward);
    let ready = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("port-forward started");
    assert!(ready.contains("Forwarding from"), "{ready}");
    let body = wait_for(Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("hello-through-port-forward").then_some(out)
    });
    let _ = forward.kill();
    let _ = forward.wait();
    let body = body.unwrap_or_else(|| panic!("no answer through port-forward:\n{}", c.log()));
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");

    // /metrics and /stats/summary, read as the API server reads them.
    let identity = c.server.issue_client_cert("kube-apiserver-kubelet-client");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c.port));
    let cert_dir = c.dir.join("root/pki");
    let metrics = request(addr, &cert_dir, "GET", "/metrics", Auth::Cert(&identity));
    assert_eq!(metrics.status, 200);
    let samples = parse_prometheus(&metrics.text());
    assert!(sample(&samples, "kubelet_running_pods").unwrap() >= 2.0);
    assert!(
        sample(
            &samples,
            "kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        sample(
            &samples,
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"create_container\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(sample(&samples, "kubelet_pod_start_duration_seconds_count").unwrap() >= 2.0);
    assert!(sample(&samples, "kubelet_pleg_relist_interval_seconds_count").unwrap() >= 1.0);
    assert!(sample(&samples, "process_cpu_seconds_total").unwrap() > 0.0);
    let summary = request(
        addr,
        &cert_dir,
        "GET",
        "/stats/summary",
        Auth::Cert(&identity),
    )
    .json();
    for name in ["talker", "web"] {
        let pod = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {summary}"));
        let memory = pod["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
        assert!(memory > 0, "{name}: {pod}");
        let cpu = pod["containers"][0]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(cpu > 0, "{name}: {pod}");
        // The sandbox's network counters, from CRI ListPodSandboxStats.
        assert_eq!(pod["network"]["name"], "eth0", "{name}: {pod}");
        assert!(
            pod["network"]["rxBytes"].as_u64().unwrap_or(0) > 0,
            "{name}: {pod}"
        );
        let time = pod["network"]["time"].as_str().unwrap_or_default();
        assert!(!time.starts_with("1970"), "{name}: {pod}");
    }
    assert!(
        summary["node"]["runtime"]["imageFs"]["usedBytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    // /metrics/cadvisor: from the cgroup files and CRI, with cAdvisor's names and labels.
    let cadvisor = request(
        addr,
        &cert_dir,
        "GET",
        "/metrics/cadvisor",
        Auth::Cert(&identity),
    );
    assert_eq!(cadvisor.status, 200);
    let text = cadvisor.text();
    let samples = parse_prometheus(&text);
    assert_eq!(sample(&samples, "container_scrape_error"), Some(0.0));
    assert!(sample(&samples, "machine_cpu_cores").unwrap() >= 1.0);
    let of = |metric: &str, pod: &str, container: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|(s, _)| {
                s.starts_with(&format!("{metric}{{"))
                    && s.contains(&format!("container=\"{container}\""))
                    && s.contains(&format!("pod=\"{pod}\""))
                    && s.contains("namespace=\"default\"")
            })
            .map(|(_, v)| *v)
            .collect()
    };
    for pod in ["talker", "web"] {
        let cpu = of("container_cpu_usage_seconds_total", pod, "app");
        assert!(cpu.len() == 1 && cpu[0] > 0.0, "{pod} cpu {cpu:?}:\n{text}");
        for metric in [
            "container_memory_working_set_bytes",
            "container_memory_usage_bytes",
            "container_memory_rss",
        ] {
            let v = of(metric, pod, "app");
            assert!(v.len() == 1 && v[0] > 0.0, "{pod} {metric} {v:?}:\n{text}");
        }
        // The pod cgroup's row (no container) and the sandbox's network counters.
        assert_eq!(of("container_memory_working_set_bytes", pod, "").len(), 2);
        let rx = of("container_network_receive_bytes_total", pod, "");
        assert!(rx.len() == 1 && rx[0] > 0.0, "{pod} rx {rx:?}:\n{text}");
        assert_eq!(of("container_threads", pod, "app").len(), 1);
    }
    assert!(
        text.contains("container_cpu_usage_seconds_total{container=\"\",cpu=\"total\",id=\"/\"")
    );
}

/// The files in a pod's log directory for container `app`, by name.
fn log_files(c: &Cluster, pod: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(c.dir.join("logs/pods")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("default_{pod}_"))
        })
        .filter_map(|e| std::fs::read_dir(e.path().join("app")).ok())
        .flat_map(|dir| dir.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn container_logs_are_rotated_at_the_size_limit_and_kubectl_logs_follows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = support::scratch_dir("e2e-log-rotation-config");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         containerLogMaxSize: 1Mi\ncontainerLogMaxFiles: 2\ncontainerLogMonitorInterval: 3s\n",
    )
    .unwrap();
    let flag = format!("--config={}", config.display());
    let c = Cluster::start_with("e2e-log-rotation", &[&flag]);
    c.wait_ready_node();
    // After 4 s (the follower is reading by then), six chunks of 1 MiB, 2 s apart, then a
    // fresh line every second.
    let script = "sleep 4; for n in 1 2 3 4 5 6; do yes \"chunk-$n-$(printf %0990d 0)\" | head -n 1024; sleep 2; done; \
                  i=0; while true; do i=$((i+1)); echo fresh-$i; sleep 1; done";
    c.server.create_pod(pod("logger", script, 1)).unwrap();
    wait_phase(&c, "logger", "Running", Duration::from_secs(60));
    let mut follow = c
        .kubectl_command(&["logs", "-f", "logger"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut follow);

    // The chunks are written and rotated away; two files at most at every look.
    let mut most = 0;
    let mut rotated_seen = false;
    let fresh = wait_for(Duration::from_secs(60), || {
        let files = log_files(&c, "logger");
        most = most.max(files.len());
        rotated_seen |= files.iter().any(|f| f.starts_with("0.log."));
        let out = c.kubectl(&["logs", "logger", "--tail=1"]);
        let tail = String::from_utf8_lossy(&out.stdout).into_owned();
        (tail.starts_with("fresh-") && rotated_seen).then_some(tail)
    })
    .unwrap_or_else(|| panic!("no fresh line after a rotation:\n{}", c.log()));
    assert_eq!(fresh.lines().count(), 1, "{fresh:?}");
    assert!(most <= 2, "more than containerLogMaxFiles files: {most}");
    let files = log_files(&c, "logger");
    assert!(
        files.len() <= 2 && files.contains(&"0.log".to_string()),
        "{files:?}"
    );
    assert!(
        c.log().contains("container log rotation: rotated"),
        "{}",
        c.log()
    );

    // The follower saw every chunk and the fresh lines, across the rotations.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        if let Some(chunk) = line
            .strip_prefix("chunk-")
            .and_then(|l| l.split('-').next())
        {
            seen.insert(chunk.to_string());
        }
        if line.starts_with("fresh-") {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let want: std::collections::BTreeSet<String> = (1..=6).map(|n| n.to_string()).collect();
    assert_eq!(seen, want, "kubectl logs -f lost chunks across a rotation");
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn kubectl_debug_attaches_to_an_ephemeral_container_that_sees_the_targets_processes() {
    use std::io::Write;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-debug");
    c.wait_ready_node();
    c.server
        .create_pod(pod("target", "exec sleep 424242", 1))
        .unwrap();
    wait_phase(&c, "target", "Running", Duration::from_secs(60));

    // `kubectl debug -i --target`: the ephemeral container joins app's process namespace,
    // and kubectl attaches to its stdin and stdout.
    let mut debug = c
        .kubectl_command(&[
            "debug",
            "-i",
            "target",
            "--image=docker.io/library/busybox:local",
            "--image-pull-policy=IfNotPresent",
            "--target=app",
            "-c",
            "debugger",
            "--",
            "sh",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be installed (/usr/bin/kubectl)");
    let lines = line_reader(&mut debug);
    let mut stdin = debug.stdin.take().unwrap();
    // Asked until the attach carries it through (kubectl attaches once the container runs).
    let mut seen = String::new();
    let found = wait_for(Duration::from_secs(60), || {
        let _ = stdin.write_all(b"ps -o pid,args | grep -v grep | grep sleep\n");
        let _ = stdin.flush();
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            seen.push_str(&line);
            seen.push('\n');
        }
        seen.contains("sleep 424242").then_some(())
    });
    let _ = stdin.write_all(b"exit\n");
    drop(stdin);
    let status = wait_for(Duration::from_secs(30), || debug.try_wait().ok().flatten());
    if status.is_none() {
        let _ = debug.kill();
    }
    let output = debug.wait_with_output().unwrap();
    assert!(
        found.is_some(),
        "the debug container sees the target's sleep:\n{seen}\nkubectl: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        c.log()
    );

    // The API shows it: a status of its own, exited once the shell exited, never restarted.
    let exited = wait_for(Duration::from_secs(30), || {
        let pod = c.server.get_pod("default", "target")?;
        let status = pod.status?.ephemeral_container_statuses?;
        let debugger = status.iter().find(|s| s.name == "debugger")?.clone();
        debugger
            .state
            .as_ref()?
            .terminated
            .as_ref()
            .map(|t| (t.exit_code, debugger.restart_count, debugger.ready))
    });
    assert_eq!(exited, Some((0, 0, false)), "{}", c.log());
    std::thread::sleep(Duration::from_secs(3));
    let pod = c.server.get_pod("default", "target").unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let debugger = &status.ephemeral_container_statuses.unwrap()[0];
    assert!(
        debugger.state.as_ref().unwrap().terminated.is_some(),
        "not restarted"
    );
    // The app container was left alone.
    assert_eq!(status.container_statuses.unwrap()[0].restart_count, 0);

    // Its log is kubectl's, as any container's.
    let logs = c.kubectl(&["logs", "target", "-c", "debugger"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("sleep 424242"),
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );

    // `kubectl debug node/...`: the pod it makes (legacy profile): the host's PID, IPC and
    // network namespaces and its root at /host, never restarted. Created here through the
    // double, which reads JSON only (kubectl posts this pod as protobuf).
    let name = "node-debugger-e2e-cluster-node-x1";
    let script = "cat /host/etc/hostname; readlink /proc/self/ns/pid; echo debug-done";
    let debugger: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": support::e2e::NODE,
            "hostIPC": true, "hostNetwork": true, "hostPID": true,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
            "containers": [{
                "name": "debugger", "image": support::e2e::IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "stdin": true, "tty": false,
                "volumeMounts": [{"name": "host-root", "mountPath": "/host"}],
            }],
        },
    }))
    .unwrap();
    c.server.create_pod(debugger).unwrap();
    wait_phase(&c, name, "Succeeded", Duration::from_secs(60));
    let logs = c.kubectl(&["logs", name]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert!(logs.contains(hostname.trim()), "{logs}");
    assert!(
        logs.contains(&host_pid_ns.to_string_lossy().to_string()),
        "the host's PID namespace: {logs}"
    );

    // The API refuses a target that does not exist.
    let nowhere = c.kubectl(&[
        "debug",
        "target",
        "--image=docker.io/library/busybox:local",
        "--target=nope",
        "-c",
        "lost",
        "--",
        "true",
    ]);
    assert!(
        String::from_utf8_lossy(&nowhere.stderr).contains("targetContainerName"),
        "{}",
        String::from_utf8_lossy(&nowhere.stderr)
    );
}
