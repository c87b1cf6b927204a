//! A node whose cgroups systemd owns, for the systemd cgroup driver tests: a real systemd
//! as PID 1 of its own PID and mount namespaces (`systemd-ns.sh`) and a containerd inside
//! them with runc's systemd cgroup driver. The kubelet runs inside them too (see
//! [`SystemdNode::launch`]), as it would on a systemd host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::e2e::Launch;

pub struct SystemdNode {
    /// Scratch directory: systemd's log and PID file, the containerd base.
    pub base: PathBuf,
    /// systemd's PID (host view).
    pub pid: u32,
    /// The containerd's CRI endpoint.
    pub endpoint: String,
}

fn script(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl SystemdNode {
    /// Starts systemd and, inside its namespaces, a containerd with `SystemdCgroup = true`.
    pub fn start(name: &str) -> SystemdNode {
        // Short: the containerd socket path must fit a unix socket address.
        let base = PathBuf::from(format!("/var/tmp/rk-sd-{name}"));
        let pid: u32 = run(
            Command::new("bash")
                .arg(script("tests/support/systemd-ns.sh"))
                .arg("start")
                .arg(&base),
            "starting systemd",
        )
        .parse()
        .unwrap();
        let mut node = SystemdNode {
            base,
            pid,
            endpoint: String::new(),
        };
        let socket = run(
            node.enter()
                .arg("env")
                .arg("RKUBELET_CONTAINERD_SYSTEMD_CGROUP=true")
                .arg("bash")
                .arg(script("packaging/containerd.sh"))
                .arg("start")
                .arg(node.base.join("containerd")),
            "starting containerd in the systemd namespaces",
        );
        let socket = socket.lines().last().unwrap_or_default().to_string();
        node.endpoint = format!("unix://{socket}");
        node
    }

    /// `nsenter` into systemd's PID and mount namespaces, ready for the command to run.
    pub fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-p", "-m", "--"]);
        cmd
    }

    /// How the kubelet runs here: on this containerd, inside systemd's namespaces.
    pub fn launch(&self) -> Launch {
        Launch {
            endpoint: self.endpoint.clone(),
            wrapper: ["nsenter", "-t", &self.pid.to_string(), "-p", "-m", "--"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// `systemctl show -p ...` of a unit, as a map.
    pub fn show(&self, unit: &str, properties: &[&str]) -> BTreeMap<String, String> {
        let out: Output = self
            .enter()
            .args(["systemctl", "show", unit, "-p", &properties.join(",")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Where systemd's tree starts in the hierarchy of `controller` (`None`: v2), host view.
    pub fn cgroup_root(&self, controller: Option<&str>) -> PathBuf {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).unwrap();
        let path = text
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, list, path) = (f.next()?, f.next()?, f.next()?);
                let hit = match controller {
                    Some(c) => list.split(',').any(|x| x == c),
                    None => list.is_empty(),
                };
                hit.then(|| path.trim_end_matches("/init.scope").to_string())
            })
            .next()
            .unwrap_or_default();
        let mount = match controller {
            Some(c) => Path::new("/sys/fs/cgroup").join(c),
            None if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                PathBuf::from("/sys/fs/cgroup")
            }
            None => PathBuf::from("/sys/fs/cgroup/unified"),
        };
        mount.join(path.trim_start_matches('/'))
    }
}

impl Drop for SystemdNode {
    fn drop(&mut self) {
        // containerd's PID file holds its PID inside the namespace: stop it from there.
        let _ = self
            .enter()
            .arg("bash")
            .arg(script("packaging/containerd.sh"))
            .arg("stop")
            .arg(self.base.join("containerd"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("bash")
            .arg(script("tests/support/systemd-ns.sh"))
            .arg("stop")
            .arg(&self.base)
            .status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
