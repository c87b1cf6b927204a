//! End-to-end tests: the real `rkubelet` binary against a real containerd. They need the
//! containerd that `tests/run.sh` starts (its endpoint in `RKUBELET_E2E_CRI_ENDPOINT`) and the
//! local test images, so they are ignored by a plain `cargo test`; `tests/run.sh` runs them
//! with `--include-ignored`. They share one containerd, so they run one at a time.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rkubelet::cri::{api, RuntimeService};
use support::cri::{clean_runtime, endpoint, runtime};
use support::{manifest, scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const NODE: &str = "e2e-node";
static SERIAL: Mutex<()> = Mutex::new(());

struct Rkubelet {
    child: Child,
    dir: PathBuf,
}

impl Rkubelet {
    fn start(dir: &Path, extra: &[&str]) -> Rkubelet {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("rkubelet.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .args(args(dir))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Rkubelet {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until `n` containers of the pod run.
    fn wait_running(&self, pod: &str, n: usize) {
        wait_for(START, || (running(pod).len() == n).then_some(()))
            .unwrap_or_else(|| panic!("pod {pod} did not run:\n{}", self.log()));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rkubelet.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and the exit status once it exited (bounded).
    fn terminate(mut self) -> (Option<i32>, Duration) {
        let start = Instant::now();
        self.signal("-TERM");
        let status = wait_for(Duration::from_secs(15), || self.child.try_wait().unwrap());
        (status.and_then(|s| s.code()), start.elapsed())
    }

    fn kill9(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Rkubelet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(dir: &Path) -> Vec<String> {
    vec![
        format!("--container-runtime-endpoint={}", endpoint()),
        format!("--pod-manifest-path={}", dir.join("manifests").display()),
        format!("--root-dir={}", dir.join("root").display()),
        format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
        format!("--hostname-override={NODE}"),
        "--address=127.0.0.1".into(),
        format!("--port={}", support::free_port()),
        "--file-check-frequency=20s".into(),
        "-v".into(),
        "1".into(),
    ]
}

/// The log directory of the one pod a test ran.
fn only_pod_log_dir(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("logs/pods"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests").join(file), text).unwrap();
}

fn containers_of(pod: &str) -> Vec<api::Container> {
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), format!("{pod}-{NODE}"));
    runtime().list_containers(Some(&f)).unwrap()
}

fn sandboxes_of(pod: &str) -> Vec<api::PodSandbox> {
    let mut f = api::PodSandboxFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), format!("{pod}-{NODE}"));
    runtime().list_pod_sandbox(Some(&f)).unwrap()
}

fn running(pod: &str) -> Vec<api::Container> {
    containers_of(pod)
        .into_iter()
        .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
        .collect()
}

fn ids(cs: &[api::Container]) -> Vec<String> {
    let mut v: Vec<String> = cs.iter().map(|c| c.get_id().to_string()).collect();
    v.sort();
    v
}

const START: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn two_container_pod_runs_logs_and_is_removed_with_its_manifest() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-two");
    write(
        &dir,
        "two.yaml",
        &manifest(
            "two",
            "Always",
            &[
                ("a", IMAGE, "echo hello-from-a; sleep 1000"),
                ("b", IMAGE, "echo hello-from-b; sleep 1000"),
            ],
        ),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("two", 2);

    // The healthz endpoint kubeadm polls answers on 127.0.0.1:10248.
    let healthz = wait_for(Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:10248").ok()?;
        s.write_all(b"GET /healthz?verbose HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .unwrap_or_else(|| panic!("no healthz answer:\n{}", kubelet.log()));
    assert!(healthz.starts_with("HTTP/1.1 200 OK"), "{healthz}");
    assert!(healthz.contains("[+]syncloop ok"), "{healthz}");

    // (a) each container's log file holds its output, in CRI log format, plus the symlinks.
    let pod_dir = only_pod_log_dir(&dir);
    assert!(pod_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("default_two-{NODE}_")));
    for c in ["a", "b"] {
        let path = pod_dir.join(c).join("0.log");
        let text = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains(&format!("hello-from-{c}")))
        })
        .unwrap_or_else(|| panic!("no output in {}", path.display()));
        assert!(text.contains(" stdout F "), "CRI log format: {text}");
    }
    let links = std::fs::read_dir(dir.join("logs/containers"))
        .unwrap()
        .count();
    assert_eq!(links, 2);

    // (b) deleting the manifest stops and removes the sandbox and containers within 10 s.
    let removed_at = Instant::now();
    std::fs::remove_file(dir.join("manifests/two.yaml")).unwrap();
    wait_for(Duration::from_secs(10), || {
        (containers_of("two").is_empty() && sandboxes_of("two").is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("not removed in 10 s:\n{}", kubelet.log()));
    eprintln!("removed in {:?}", removed_at.elapsed());
    let (code, took) = kubelet.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "SIGTERM exit took {took:?}");
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn malformed_manifest_is_reported_by_name_and_the_good_pod_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-malformed");
    write(
        &dir,
        "good.yaml",
        &manifest("good", "Always", &[("app", IMAGE, "sleep 1000")]),
    );
    write(
        &dir,
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n",
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("good", 1);
    let log = kubelet.log();
    assert!(
        log.contains("broken.yaml"),
        "the bad file is named in the log:\n{log}"
    );
    assert_eq!(kubelet.terminate().0, Some(0));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn kill_9_and_restart_keeps_the_same_containers() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-restart");
    write(
        &dir,
        "keep.yaml",
        &manifest(
            "keep",
            "Always",
            &[("a", IMAGE, "sleep 1000"), ("b", IMAGE, "sleep 1000")],
        ),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("keep", 2);
    let before = ids(&containers_of("keep"));
    let sandboxes = sandboxes_of("keep").len();
    kubelet.kill9();

    let kubelet = Rkubelet::start(&dir, &[]);
    // Several sync, PLEG and housekeeping rounds.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        ids(&containers_of("keep")),
        before,
        "same containers, none new:\n{}",
        kubelet.log()
    );
    assert_eq!(ids(&running("keep")), before, "all still running");
    assert_eq!(sandboxes_of("keep").len(), sandboxes);
    // SIGTERM: exit 0 within 5 s, pods keep running.
    let (code, took) = kubelet.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(ids(&running("keep")), before);
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn exited_container_under_always_restarts_with_attempt_1() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-exit");
    write(
        &dir,
        "exit.yaml",
        &manifest("exit", "Always", &[("app", IMAGE, "sleep 2; exit 3")]),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    let again = wait_for(START, || {
        running("exit")
            .into_iter()
            .find(|c| c.get_metadata().get_attempt() == 1)
    });
    assert!(again.is_some(), "no attempt 1:\n{}", kubelet.log());
    let attempt0 = containers_of("exit")
        .into_iter()
        .find(|c| c.get_metadata().get_attempt() == 0);
    assert_eq!(
        attempt0.map(|c| c.get_state()),
        Some(api::ContainerState::CONTAINER_EXITED)
    );
    assert_eq!(kubelet.terminate().0, Some(0));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn unpullable_image_reports_err_image_pull_and_other_pods_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-pull");
    write(
        &dir,
        "fine.yaml",
        &manifest("fine", "Always", &[("app", IMAGE, "sleep 1000")]),
    );
    write(
        &dir,
        "nopull.yaml",
        &manifest(
            "nopull",
            "Always",
            &[("app", "example.invalid/nope:1", "sleep 1000")],
        ),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("fine", 1);
    wait_for(START, || {
        kubelet.log().contains("ErrImagePull").then_some(())
    })
    .unwrap_or_else(|| panic!("no ErrImagePull in the log:\n{}", kubelet.log()));
    // The next attempts wait out the pull back-off (10 s, doubling).
    wait_for(START, || {
        kubelet
            .log()
            .contains("Back-off pulling image \"example.invalid/nope:1\"")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no ImagePullBackOff in the log:\n{}", kubelet.log()));
    // The status is recorded just after the event.
    wait_for(START, || {
        kubelet
            .log()
            .contains("app=waiting(ImagePullBackOff)")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no ImagePullBackOff status:\n{}", kubelet.log()));
    let log = kubelet.log();
    assert!(log.contains("nopull-e2e-node"), "{log}");
    assert!(containers_of("nopull").is_empty());
    assert_eq!(kubelet.terminate().0, Some(0));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn run_once_exits_0_for_good_pods_and_non_zero_for_a_bad_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-runonce");
    write(
        &dir,
        "one.yaml",
        &manifest("once", "Always", &[("app", IMAGE, "sleep 1000")]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(args(&dir))
        .arg("--runonce")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("default/once-{NODE}\tstarted")),
        "{stdout}"
    );

    write(
        &dir,
        "two.yaml",
        &manifest(
            "badonce",
            "Always",
            &[("app", "example.invalid/nope:1", "sleep 1000")],
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(args(&dir))
        .arg("--runonce")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("default/badonce-{NODE}\tfailed")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("default/once-{NODE}\tstarted")),
        "{stdout}"
    );
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn empty_dirs_are_shared_memory_ones_are_tmpfs_and_nothing_remains_after_removal() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-volumes");
    let host_dir = dir.join("host-data");
    write(
        &dir,
        "vols.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: vols
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: shared
    emptyDir: {{}}
  - name: mem
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
  - name: host
    hostPath:
      path: {host}
      type: DirectoryOrCreate
  containers:
  - name: writer
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello > /shared/msg; echo mem > /mem/m; echo host > /host/h; sleep 1000"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: mem, mountPath: /mem}}
    - {{name: host, mountPath: /host}}
  - name: reader
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while ! test -f /from-writer/msg; do sleep 0.2; done; echo read: $(cat /from-writer/msg); grep -q ' /mem tmpfs ' /proc/mounts || true; sleep 1000"]
    volumeMounts:
    - {{name: shared, mountPath: /from-writer}}
"#,
            host = host_dir.display()
        ),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("vols", 2);

    // The reader sees what the writer wrote into the shared emptyDir.
    let pod_dir = only_pod_log_dir(&dir);
    let reader_log = pod_dir.join("reader/0.log");
    wait_for(Duration::from_secs(15), || {
        std::fs::read_to_string(&reader_log)
            .ok()
            .filter(|t| t.contains("read: hello"))
    })
    .unwrap_or_else(|| panic!("reader did not see the shared file:\n{}", kubelet.log()));
    let uid = pod_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .rsplit('_')
        .next()
        .unwrap()
        .to_string();
    let volumes = dir.join("root/pods").join(&uid).join("volumes");
    let mem = volumes.join("kubernetes.io~empty-dir/mem");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mem_line = mounts
        .lines()
        .find(|l| l.contains(&*mem.to_string_lossy()))
        .unwrap_or_else(|| panic!("no tmpfs at {}", mem.display()));
    assert!(mem_line.contains(" - tmpfs "), "{mem_line}");
    assert_eq!(std::fs::read_to_string(mem.join("m")).unwrap(), "mem\n");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("h")).unwrap(),
        "host\n"
    );
    assert!(dir.join("root/pods").join(&uid).join("etc-hosts").is_file());

    // Deleting the manifest leaves nothing of the pod under the root dir and no mount behind.
    std::fs::remove_file(dir.join("manifests/vols.yaml")).unwrap();
    wait_for(Duration::from_secs(15), || {
        (!dir.join("root/pods").join(&uid).exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("pod directory left behind:\n{}", kubelet.log()));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*dir.join("root").to_string_lossy()),
        "a mount leaked"
    );
    assert!(host_dir.join("h").is_file(), "hostPath data stays");
    assert_eq!(kubelet.terminate().0, Some(0));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn bad_host_path_type_keeps_the_pod_waiting_with_a_clear_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    let dir = scratch_dir("e2e-hostpath");
    write(
        &dir,
        "hp.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hp\nspec:\n  volumes:\n  - name: s\n    hostPath:\n      path: /etc/hostname\n      type: Directory\n  containers:\n  - name: app\n    image: {IMAGE}\n    command: [\"sleep\", \"1000\"]\n    volumeMounts:\n    - {{name: s, mountPath: /s}}\n"
        ),
    );
    let kubelet = Rkubelet::start(&dir, &[]);
    wait_for(START, || {
        kubelet
            .log()
            .contains("hostPath type check failed: /etc/hostname is not a directory")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no clear error:\n{}", kubelet.log()));
    assert!(kubelet.log().contains("FailedMount"));
    assert!(containers_of("hp").is_empty());
    assert_eq!(kubelet.terminate().0, Some(0));
}

/// `ctr` against the test containerd, in the CRI's namespace.
fn ctr(args: &[&str]) -> std::process::Output {
    let sock = endpoint();
    let sock = sock.trim_start_matches("unix://").to_string();
    Command::new("ctr")
        .args(["--address", &sock, "-n", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr comes with containerd")
}

fn images_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("RKUBELET_IMAGES_DIR").unwrap_or_else(|_| "/var/tmp/rkubelet-images".into()),
    )
}

/// Imports one of the test image tarballs unless containerd has it already.
fn ensure_image(name: &str, tarball: &str) {
    if image_present(name) {
        return;
    }
    let path = images_dir().join(tarball);
    let out = ctr(&["images", "import", &path.to_string_lossy()]);
    assert!(
        out.status.success(),
        "importing {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image_present(name: &str) -> bool {
    use rkubelet::cri::ImageService;
    let mut spec = api::ImageSpec::new();
    spec.set_image(name.into());
    runtime().image_status(&spec, false).unwrap().is_some()
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn changing_a_static_pods_image_recreates_only_that_container() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    ensure_image("docker.io/library/busybox:other", "busybox-other.tar");
    let dir = scratch_dir("e2e-image-change");
    // As upstream, a manifest without a uid gets one from its content, so any edit replaces
    // the whole pod; with a uid of its own the pod stays and only the changed container is
    // recreated.
    let containers = |b_image: &str| {
        manifest(
            "change",
            "Always",
            &[("a", IMAGE, "sleep 1000"), ("b", b_image, "sleep 1000")],
        )
        .replacen("metadata:\n", "metadata:\n  uid: e2e-change-uid\n", 1)
    };
    write(&dir, "change.yaml", &containers(IMAGE));
    let kubelet = Rkubelet::start(&dir, &[]);
    kubelet.wait_running("change", 2);
    let by_name = || -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = running("change")
            .iter()
            .map(|c| {
                (
                    c.get_metadata().get_name().to_string(),
                    c.get_id().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = by_name();
    write(
        &dir,
        "change.yaml",
        &containers("docker.io/library/busybox:other"),
    );
    let after = wait_for(START, || {
        let now = by_name();
        (now.len() == 2 && now[1].1 != before[1].1).then_some(now)
    })
    .unwrap_or_else(|| panic!("b was not recreated:\n{}", kubelet.log()));
    assert_eq!(after[0], before[0], "a untouched");
    let b_status = runtime().container_status(&after[1].1, false).unwrap();
    let old_status = runtime().container_status(&before[1].1, false);
    assert_ne!(
        b_status.get_status().get_image_ref(),
        old_status
            .map(|s| s.get_status().get_image_ref().to_string())
            .unwrap_or_default(),
        "b runs the new image"
    );
    assert_eq!(kubelet.terminate().0, Some(0));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn image_gc_removes_an_unused_image_and_keeps_the_ones_in_use() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    clean_runtime();
    ensure_image("docker.io/library/gc-victim:1", "gc-victim.tar");
    let dir = scratch_dir("e2e-image-gc");
    write(
        &dir,
        "user.yaml",
        &manifest("user", "Always", &[("app", IMAGE, "sleep 1000")]),
    );
    // Any usage is above a 1% high threshold: everything unused goes.
    std::fs::write(
        dir.join("config.yaml"),
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         imageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 3s\n",
    )
    .unwrap();
    let config = format!("--config={}", dir.join("config.yaml").display());
    let kubelet = Rkubelet::start(&dir, &[config.as_str(), "--image-gc-period=2s"]);
    kubelet.wait_running("user", 1);
    wait_for(START, || {
        (!image_present("docker.io/library/gc-victim:1")).then_some(())
    })
    .unwrap_or_else(|| panic!("unused image not collected:\n{}", kubelet.log()));
    assert!(image_present(IMAGE), "the image in use is kept");
    assert!(
        image_present("registry.k8s.io/pause:3.6"),
        "the sandbox image is kept"
    );
    assert!(kubelet.log().contains("image GC"), "{}", kubelet.log());
    assert_eq!(kubelet.terminate().0, Some(0));
    // busybox:other was unused too: give it back for the other tests.
    ensure_image("docker.io/library/busybox:other", "busybox-other.tar");
}
