//! `rkubelet fake-runtime` and a normal `rkubelet` as two processes: pods run through the
//! real grpcio CRI client, annotated containers exit with their code (a crash loop, a
//! completed pod), and the fake answers a CRI client of its own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rkubelet::cri::{api, RemoteRuntime, RuntimeService};
use support::{free_port, scratch_dir, wait_for};

const WAIT: Duration = Duration::from_secs(30);
/// What the kubelet sets GLIBC_TUNABLES to when the caller has not.
const MALLOC_TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0:\
                               glibc.malloc.mxfast=0:glibc.malloc.top_pad=0";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn pod_manifest(name: &str, policy: &str, annotations: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  uid: uid-{name}\n"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (k, v) in annotations {
            out.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    out.push_str(&format!(
        "spec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: registry.example/app:1\n"
    ));
    out
}

fn containers(rt: &RemoteRuntime, pod: &str) -> Vec<api::Container> {
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), pod.into());
    rt.list_containers(Some(&f)).unwrap_or_default()
}

#[test]
fn rkubelet_runs_pods_on_a_fake_runtime_in_another_process() {
    let dir: PathBuf = scratch_dir("fake-runtime");
    let socket = dir.join("fake.sock");
    let _fake = spawn(
        &[
            "fake-runtime".into(),
            format!("--listen=unix://{}", socket.display()),
            "--pod-cidr=10.99.0.0/16".into(),
            "--pull-delay=300ms".into(),
        ],
        &dir.join("fake.log"),
    );
    wait_for(WAIT, || socket.exists().then_some(())).expect("fake runtime socket");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        pod_manifest("web", "Always", &[]),
    )
    .unwrap();
    std::fs::write(
        manifests.join("crash.yaml"),
        pod_manifest(
            "crash",
            "Always",
            &[
                ("rkubelet.io/fake-exit-after", "1s"),
                ("rkubelet.io/fake-exit-code", "1"),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        manifests.join("job.yaml"),
        pod_manifest("job", "Never", &[("rkubelet.io/fake-exit-after", "1s")]),
    )
    .unwrap();
    let log = dir.join("rkubelet.log");
    let _kubelet = spawn(
        &[
            format!("--container-runtime-endpoint=unix://{}", socket.display()),
            format!("--pod-manifest-path={}", manifests.display()),
            format!("--root-dir={}", dir.join("root").display()),
            format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
            "--hostname-override=fake-node".into(),
            "--address=127.0.0.1".into(),
            format!("--port={}", free_port()),
            "--cgroups-per-qos=false".into(),
            "--resolv-conf=".into(),
        ],
        &log,
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let phase = |pod: &str, phase: &str| {
        let wanted = format!("status: phase={phase}");
        text()
            .lines()
            .any(|l| l.contains(&format!("pod=\"default/{pod}-fake-node\"")) && l.contains(&wanted))
    };
    let rt = RemoteRuntime::connect(&format!("unix://{}", socket.display()), WAIT).unwrap();

    // A plain pod reaches Running, with an IP from the fake's pod network.
    wait_for(WAIT, || phase("web", "Running").then_some(()))
        .unwrap_or_else(|| panic!("web never Running:\n{}", text()));
    let running: Vec<_> = containers(&rt, "web-fake-node")
        .into_iter()
        .filter(|c| c.state == api::ContainerState::CONTAINER_RUNNING)
        .collect();
    assert_eq!(running.len(), 1);
    let sandboxes = rt.list_pod_sandbox(None).unwrap();
    let web = sandboxes
        .iter()
        .find(|s| s.get_metadata().name == "web-fake-node")
        .unwrap();
    let ip = rt.pod_sandbox_status(&web.id, false).unwrap();
    assert!(
        ip.get_status().get_network().ip.starts_with("10.99."),
        "{ip:?}"
    );

    // A container annotated to exit 1 after a second is restarted, then backed off.
    wait_for(WAIT, || {
        containers(&rt, "crash-fake-node")
            .iter()
            .any(|c| c.get_metadata().attempt >= 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("crash never restarted:\n{}", text()));
    wait_for(WAIT, || text().contains("CrashLoopBackOff").then_some(()))
        .unwrap_or_else(|| panic!("no CrashLoopBackOff:\n{}", text()));

    // A Never pod whose container exits 0 completes.
    wait_for(WAIT, || phase("job", "Succeeded").then_some(()))
        .unwrap_or_else(|| panic!("job never Succeeded:\n{}", text()));
}

#[test]
fn a_notify_unit_hears_ready_then_the_watchdog_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir: PathBuf = scratch_dir("fake-runtime-notify");
    let (_fake, socket) = standalone_fake_runtime(&dir);
    let notify_path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager.set_read_timeout(Some(WAIT)).unwrap();
    let log = dir.join("rkubelet.log");
    // Started through a link, as a package installs it (/usr/bin/kubelet -> rkubelet).
    let link = dir.join("kubelet");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rkubelet"), &link).unwrap();
    let kubelet = Proc(
        Command::new(&link)
            .args(standalone_args(&dir, &socket))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "1000000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let next = || {
        let mut buf = [0u8; 256];
        let n = manager
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}):\n{}", log_text()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    // The kubelet executed itself again with its malloc setting, in the same process (the
    // one systemd watches) and under the name it was started with.
    let pid = kubelet.0.id();
    // glibc up to 2.38 splits GLIBC_TUNABLES in place as it reads it at start, so in the
    // process's initial environment the colons between the settings become NULs; later
    // releases leave the string whole. Either form is the setting.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let whole = format!("GLIBC_TUNABLES={MALLOC_TUNABLES}");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let want: Vec<String> = MALLOC_TUNABLES
        .split(':')
        .enumerate()
        .map(|(i, t)| {
            if i == 0 {
                format!("GLIBC_TUNABLES={t}")
            } else {
                t.to_string()
            }
        })
        .collect();
    assert!(
        vars.contains(&whole.as_bytes())
            || vars
                .windows(want.len())
                .any(|w| w.iter().zip(&want).all(|(v, t)| *v == t.as_bytes())),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "kubelet");
    assert!(
        log_text().contains(&format!(
            "malloc: GLIBC_TUNABLES={MALLOC_TUNABLES} (set by rkubelet)"
        )),
        "{}",
        log_text()
    );
    // Fed at half of WATCHDOG_USEC while the health checks pass.
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    let warned = log_text();
    assert!(
        warned.contains("without effect in rkubelet: --fail-swap-on=false"),
        "{warned}"
    );
    drop(kubelet);
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
}

/// A fake runtime serving on `dir`/fake.sock, and an empty static pod directory beside it for
/// [`standalone_args`].
fn standalone_fake_runtime(dir: &Path) -> (Proc, PathBuf) {
    let socket = dir.join("fake.sock");
    let fake = spawn(
        &[
            "fake-runtime".into(),
            format!("--listen=unix://{}", socket.display()),
        ],
        &dir.join("fake.log"),
    );
    wait_for(WAIT, || socket.exists().then_some(())).expect("fake runtime socket");
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    (fake, socket)
}

/// A standalone kubelet on the fake runtime at `socket`, with static pods from `dir`.
fn standalone_args(dir: &Path, socket: &Path) -> Vec<String> {
    vec![
        format!("--container-runtime-endpoint=unix://{}", socket.display()),
        format!("--pod-manifest-path={}", dir.join("manifests").display()),
        format!("--root-dir={}", dir.join("root").display()),
        format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
        "--hostname-override=notify-node".into(),
        "--address=127.0.0.1".into(),
        format!("--port={}", free_port()),
        "--cgroups-per-qos=false".into(),
        "--resolv-conf=".into(),
        "--fail-swap-on=false".into(),
    ]
}

#[test]
fn glibc_tunables_set_by_the_caller_are_left_as_given() {
    let dir: PathBuf = scratch_dir("fake-runtime-tunables");
    let (_fake, socket) = standalone_fake_runtime(&dir);
    let log = dir.join("rkubelet.log");
    let kubelet = Proc(
        Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(standalone_args(&dir, &socket))
            .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=3")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(WAIT, || {
        log_text()
            .contains(r#"malloc: GLIBC_TUNABLES="glibc.malloc.arena_max=3" set by the caller, left as given"#)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no malloc line:\n{}", log_text()));
    let environ = std::fs::read(format!("/proc/{}/environ", kubelet.0.id())).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(vars.contains(&&b"GLIBC_TUNABLES=glibc.malloc.arena_max=3"[..]));
    assert!(!vars.iter().any(|v| v.starts_with(b"RKUBELET_MALLOC_TUNED")));
}

#[test]
fn version_prints_the_line_kubeadm_parses_before_reading_any_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(["--config=/nonexistent/config.yaml", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "Kubernetes v1.33.0+rkubelet-{}\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let unknown = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
}
