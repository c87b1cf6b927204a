//! Pod volumes (upstream `pkg/kubelet/volumemanager`, `pkg/volume`).
//!
//! - [`manager`]: the volume manager a pod worker calls on every sync of a pod: sets up and
//!   refreshes its volumes, gives each container its CRI mounts, tears down what is gone.
//! - [`sources`]: ConfigMaps and Secrets through a TTL cache, bound service-account tokens.
//! - [`projection`]: which files a configMap, secret, downwardAPI or projected volume holds.
//! - [`atomic_writer`]: projects such a file set into a directory so that readers never see
//!   a half-written set (upstream `pkg/volume/util/atomic_writer.go`).
//! - [`etc_hosts`]: the kubelet-managed `/etc/hosts` of a pod (upstream
//!   `managedHostsFileContent` in `pkg/kubelet/kubelet_pods.go`).
//! - [`host_path`]: the `hostPath.type` checks (upstream `pkg/volume/hostpath`).
//! - [`mount`]: tmpfs mounts for memory-backed volumes, and mount-table queries for teardown.
//! - CSI volumes are set up by the manager through the drivers of [`crate::csi`].

pub mod atomic_writer;
pub mod claims;
pub mod error;
pub mod etc_hosts;
pub mod host_path;
pub mod manager;
pub mod mount;
pub mod ownership;
pub mod projection;
pub mod sources;

pub use atomic_writer::{AtomicWriter, FileProjection};
pub use error::VolumeError;
pub use manager::{
    ClaimVolume, CsiRef, MountError, PodVolumes, VolumeManager, VolumeSettings, VolumeUsage,
};
pub use projection::NodeResources;

/// Scratch directories for this module's tests, removed on drop.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A fresh directory under the system temp dir, unique per process and call.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new(tag: &str) -> TestDir {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("rkubelet-volume-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create test dir");
            TestDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
