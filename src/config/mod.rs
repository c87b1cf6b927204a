//! Configuration: command-line flags and the KubeletConfiguration file merged into validated
//! settings, and the pod sources (API server, manifest directory, manifest URL) with the
//! PodConfig mux that merges them into one stream of pod updates.
//!
//! Settings are built in stages: [`flags`] parses the command line, [`kubelet_config`] reads
//! the file, and [`settings`] lays the flags over the file into `KubeletConfig`. All three
//! report an [`error::ConfigError`] that names where the bad value came from.

pub mod apiserver;
pub mod error;
pub mod file;
pub mod flags;
pub mod http;
pub mod kubelet_config;
pub mod manifest;
pub mod mux;
pub mod node_flags;
pub mod settings;
pub mod static_pod;
pub mod unimplemented;
pub mod update;
pub mod upstream_flags;
