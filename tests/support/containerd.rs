//! A containerd of a test's own (`packaging/containerd.sh` with a base of its own), for
//! tests that kill it: `kill -9` of the daemon alone (its shims and containers go on, as when
//! containerd crashes on a node) and a start again with the same config and state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub struct OwnContainerd {
    base: PathBuf,
    /// `unix://<socket>`.
    pub endpoint: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/containerd.sh")
}

impl OwnContainerd {
    /// Starts a containerd under `base` (a short absolute path: its socket must fit a unix
    /// socket address), with the test images imported.
    pub fn start(base: &Path) -> OwnContainerd {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(base)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "containerd.sh start {}",
            base.display()
        );
        let socket = String::from_utf8(out.stdout).unwrap();
        let socket = socket.lines().last().unwrap().trim().to_string();
        OwnContainerd {
            base: base.to_path_buf(),
            endpoint: format!("unix://{socket}"),
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.base.join("containerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `kill -9` of the daemon alone; returns once it is gone.
    pub fn kill9(&self) {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        wait_for(Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .expect("containerd gone after kill -9");
    }

    /// Starts the daemon again on its config and state (what was running goes on), and
    /// waits until CRI answers.
    pub fn restart(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("containerd.log"))
            .unwrap();
        let child = Command::new("setsid")
            .arg("containerd")
            .arg("--config")
            .arg(self.base.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.base.join("containerd.pid"), child.id().to_string()).unwrap();
        // Reaped whenever it ends (at `containerd.sh stop`), so it never lingers as a zombie.
        let mut child = child;
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let endpoint = self.endpoint.clone();
        wait_for(Duration::from_secs(30), move || {
            let rt = super::cri::runtime_timeout(&endpoint, Duration::from_secs(2));
            rkubelet::cri::RuntimeService::status(&rt, false)
                .ok()
                .filter(|s| {
                    s.get_status()
                        .get_conditions()
                        .iter()
                        .all(|c| c.get_status())
                })
        })
        .expect("containerd answers CRI after its restart");
    }
}

impl Drop for OwnContainerd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.base)
            .stdout(Stdio::null())
            .status();
    }
}
