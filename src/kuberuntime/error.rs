//! How the runtime manager fails: [`SyncError`] for what stops a sync early, and
//! [`StartFailure`] for one container that could not be started (its waiting reason).

use std::path::PathBuf;

use crate::cri::CriError;

/// Why a container could not be started, with the waiting reason users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// Upstream waiting reason: `ErrImagePull`, `CrashLoopBackOff`, `CreateContainerError`...
    pub reason: String,
    /// Details.
    pub message: String,
}

impl StartFailure {
    /// A failure with a reason and message.
    pub fn new(reason: &str, message: String) -> Self {
        StartFailure {
            reason: reason.to_string(),
            message,
        }
    }
}

/// Errors of a sync that stop it early (container start failures are reported per container).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A CRI call failed.
    #[error("pod {pod}: {op}: {source}")]
    Cri {
        /// `namespace/name`.
        pod: String,
        /// What was being done.
        op: &'static str,
        /// The runtime's error.
        #[source]
        source: CriError,
    },
    /// A volume could not be set up; the pod waits in ContainerCreating and is retried.
    #[error("pod {pod}: {source}")]
    Volume {
        /// `namespace/name`.
        pod: String,
        /// The volume and its error.
        #[source]
        source: crate::volume::MountError,
    },
    /// Volumes of a type this kubelet does not implement: the pod waits in
    /// ContainerCreating, nothing of it starts.
    #[error("pod {pod}: {}", self.event_message())]
    UnsupportedVolumes {
        /// `namespace/name`.
        pod: String,
        /// `(volume name, volume type)`.
        volumes: Vec<(String, &'static str)>,
    },
    /// The pod's RuntimeClass cannot be resolved; its sandbox is not created.
    #[error("pod {pod}: {message}")]
    RuntimeClass {
        /// `namespace/name`.
        pod: String,
        /// Upstream's wording (`runtimeclasses.node.k8s.io "x" not found`).
        message: String,
    },
    /// The step panicked (a bug): logged with the pod and retried like a failure.
    #[error("pod {pod}: panicked: {message}")]
    Panic {
        /// `namespace/name`.
        pod: String,
        /// The panic's message.
        message: String,
    },
    /// Preparing files on disk failed.
    #[error("pod {pod}: creating {path}: {source}")]
    Io {
        /// `namespace/name`.
        pod: String,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SyncError {
    /// The `FailedMount` message for unsupported volumes, in upstream's words for volumes
    /// that never mount; empty for other errors.
    pub fn event_message(&self) -> String {
        let SyncError::UnsupportedVolumes { volumes, .. } = self else {
            return String::new();
        };
        let names: Vec<&str> = volumes.iter().map(|(n, _)| n.as_str()).collect();
        let kinds: Vec<String> = volumes.iter().map(|(n, k)| format!("{n} ({k})")).collect();
        format!(
            "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[{}]: volume type not supported by this kubelet: {}",
            names.join(" "),
            names.join(" "),
            kinds.join(", ")
        )
    }

    /// Whether retrying later can help.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Cri { source, .. } => source.is_retriable(),
            SyncError::Io { .. } | SyncError::Panic { .. } | SyncError::RuntimeClass { .. } => true,
            SyncError::Volume { source, .. } => source.source.is_retriable(),
            // Only a newer kubelet (or a changed spec) can mount them.
            SyncError::UnsupportedVolumes { .. } => false,
        }
    }
}
