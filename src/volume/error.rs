//! The volume module's error type: every failure carries the path it concerns.
//!
//! Callers (the volume manager's reconciler, `sync_pod`) log the error against the
//! pod and decide with [`VolumeError::is_retriable`] whether the next sync should try
//! again or whether only a spec change can fix it.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A failure while preparing, projecting into, or tearing down a pod volume.
#[derive(Debug, Error)]
pub enum VolumeError {
    /// A payload path for the [`AtomicWriter`](super::atomic_writer::AtomicWriter)
    /// breaks the projection rules (absolute, contains `..`, too long).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending relative path as given in the payload.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A filesystem operation on `path` failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing (`"create directory"`, `"write file"`, ...).
        op: &'static str,
        /// The path the operation was applied to.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A hostPath exists but is not of the kind its `type` demands.
    #[error("hostPath type check failed: {} is not a {expected}", path.display())]
    HostPathType {
        /// The host path that was checked.
        path: PathBuf,
        /// Upstream's description of the wanted kind (`directory`, `socket file`, ...).
        expected: &'static str,
    },
    /// The hostPath `type` string is not one the API defines.
    #[error("{kind} is an invalid volume type")]
    InvalidHostPathType {
        /// The unknown type string.
        kind: String,
    },
    /// `mount(2)` of a tmpfs on `target` failed.
    #[error("mount tmpfs on {}: {source}", target.display())]
    Mount {
        /// The directory we tried to mount on.
        target: PathBuf,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// A key a volume lists in `items` is missing from its object (and the volume is not
    /// optional); the object may still get the key, so this is retried.
    #[error("{what}: key \"{key}\" not found")]
    MissingKey {
        /// `configmap "name"` or `secret "name"`.
        what: String,
        /// The missing key.
        key: String,
    },
    /// A downward API field path rkubelet does not support.
    #[error("unsupported downward API field path \"{path}\"")]
    UnsupportedField {
        /// The field path.
        path: String,
    },
    /// A ConfigMap or Secret a volume needs does not exist (and the volume is not optional).
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `configmap` or `secret`, as upstream words it.
        kind: &'static str,
        /// The object's name.
        name: String,
    },
    /// Reading an object or asking for a token failed at the API server (403 from the node
    /// authorizer, an outage...).
    #[error("{what}: {source}")]
    Api {
        /// `configmap "name"`, `token for serviceaccount "name"`...
        what: String,
        /// The API error.
        #[source]
        source: Box<crate::api::ApiError>,
    },
    /// A volume needs an API object but this kubelet runs without an API server.
    #[error("{what}: no API server is configured (--kubeconfig)")]
    NoApiServer {
        /// What was needed.
        what: String,
    },
    /// The TokenRequest answer is unusable.
    #[error("{what}: {reason}")]
    BadToken {
        /// Which token.
        what: String,
        /// What is wrong with the answer.
        reason: &'static str,
    },
    /// A claim volume cannot be used yet (claim missing, not bound, being deleted, not the
    /// pod's; its volume missing or bound elsewhere): upstream's populator error.
    #[error("{message}")]
    ClaimNotReady {
        /// Upstream's words (`error processing PVC ns/name: PVC is not bound`).
        message: String,
    },
    /// A PersistentVolume cannot be mounted here (its node affinity excludes this node).
    #[error("{message}")]
    MountCheck {
        /// Upstream's event text.
        message: String,
    },
    /// `mount(2)` binding `source` on `target` failed.
    #[error("bind mount {} on {}: {source}", from.display(), target.display())]
    BindMount {
        /// What is mounted.
        from: PathBuf,
        /// Where.
        target: PathBuf,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// A volume operation runs in the background (a CSI driver call, waiting for the
    /// volume to be attached): the pod waits, without an event, as upstream's reconciler.
    #[error("{message}")]
    InProgress {
        /// What is awaited.
        message: String,
        /// Waiting for the volume to be attached (not for a driver call).
        unattached: bool,
        /// Waited longer than upstream's mount timeout (2 minutes): the pod gets
        /// upstream's `timed out waiting for the condition` event.
        timed_out: bool,
    },
    /// A CSI driver or a CSI check failed (`rpc error: code = ... desc = ...`, a driver
    /// that is not registered, a lifecycle mode the driver does not allow).
    #[error("{message}")]
    Csi {
        /// Upstream's words.
        message: String,
    },
    /// `umount(2)` of `target` failed, even with the lazy-detach fallback.
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        /// The mount point we tried to detach.
        target: PathBuf,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    /// Builds an [`VolumeError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VolumeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether trying again on a later sync can succeed without a spec change.
    ///
    /// Invalid payload paths and unknown hostPath types are spec errors. A type
    /// mismatch is retried as upstream does: the path may be created by someone
    /// else (a socket appears when its daemon starts). Mount failures from missing
    /// privileges will not heal by themselves.
    pub fn is_retriable(&self) -> bool {
        match self {
            VolumeError::InvalidPath { .. } | VolumeError::InvalidHostPathType { .. } => false,
            VolumeError::HostPathType { .. } | VolumeError::MissingKey { .. } => true,
            VolumeError::UnsupportedField { .. } | VolumeError::NoApiServer { .. } => false,
            VolumeError::NotFound { .. } | VolumeError::Api { .. } => true,
            VolumeError::BadToken { .. } => true,
            VolumeError::ClaimNotReady { .. } | VolumeError::MountCheck { .. } => true,
            VolumeError::InProgress { .. } | VolumeError::Csi { .. } => true,
            VolumeError::BindMount { source, .. } => {
                source.kind() != io::ErrorKind::PermissionDenied
            }
            VolumeError::Io { source, .. } => source.kind() != io::ErrorKind::PermissionDenied,
            VolumeError::Mount { source, .. } | VolumeError::Unmount { source, .. } => {
                source.kind() != io::ErrorKind::PermissionDenied
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_context() {
        let err = VolumeError::HostPathType {
            path: PathBuf::from("/x"),
            expected: "directory",
        };
        assert_eq!(
            err.to_string(),
            "hostPath type check failed: /x is not a directory"
        );
        let err = VolumeError::io(
            "write file",
            "/a/b",
            io::Error::new(io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(err.to_string(), "write file /a/b: gone");
        let err = VolumeError::InvalidHostPathType { kind: "Dir".into() };
        assert_eq!(err.to_string(), "Dir is an invalid volume type");
    }

    #[test]
    fn retriable_classification() {
        let cases = [
            (
                VolumeError::InvalidPath {
                    path: "/abs".into(),
                    reason: "must be relative path",
                },
                false,
            ),
            (VolumeError::InvalidHostPathType { kind: "x".into() }, false),
            (
                VolumeError::HostPathType {
                    path: "/s".into(),
                    expected: "socket file",
                },
                true,
            ),
            (
                VolumeError::Mount {
                    target: "/m".into(),
                    source: io::Error::from(io::ErrorKind::PermissionDenied),
                },
                false,
            ),
            (
                VolumeError::Unmount {
                    target: "/m".into(),
                    source: io::Error::other("busy"),
                },
                true,
            ),
            (VolumeError::io("read", "/r", io::Error::other("eio")), true),
        ];
        for (err, want) in cases {
            assert_eq!(err.is_retriable(), want, "{err}");
        }
    }
}
