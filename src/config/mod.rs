//! Configuration: command-line flags and the KubeletConfiguration file merged into validated
//! settings, and the pod sources (manifest directory, manifest URL) with the PodConfig mux
//! that merges them into one stream of pod updates.

pub mod apiserver;
pub mod file;
pub mod flags;
pub mod http;
pub mod kubelet_config;
pub mod manifest;
pub mod mux;
pub mod settings;
pub mod static_pod;
pub mod unimplemented;
pub mod update;
