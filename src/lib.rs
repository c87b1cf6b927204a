//! rkubelet: a Kubernetes node agent built from OS threads and channels. See DESIGN in the
//! README for how the pieces fit: pod sources → PodConfig mux → sync loop → pod workers →
//! runtime manager → CRI.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod app;
pub mod certificate;
pub mod clock;
pub mod cm;
pub mod config;
pub mod credential_provider;
pub mod cri;
pub mod csi;
pub mod devicemanager;
pub mod events;
pub mod eviction;
pub mod fake_runtime;
pub mod healthz;
pub mod hollow;
pub mod kubelet;
pub mod kuberuntime;
pub mod log_manager;
pub mod mirror;
pub mod nodestatus;
pub mod pleg;
pub mod pod_manager;
pub mod pod_sync;
pub mod pod_workers;
pub mod prober;
pub mod quantity;
pub mod resources;
pub mod server;
pub mod status;
pub mod types;
pub mod util;
pub mod version;
pub mod volume;
pub mod waiters;
