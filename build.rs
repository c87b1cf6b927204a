//! Generates the CRI v1 messages and grpcio stubs from `proto/api.proto`, those of the
//! gRPC health protocol (`proto/health.proto`) that gRPC probes call, and those of the
//! pod-resources API the kubelet serves (`proto/podresources.proto`), and those of the CSI
//! node plugins it drives (`proto/csi.proto`) and of the plugin registration they use
//! (`proto/pluginregistration.proto`), and those of the device plugin API it serves and calls
//! (`proto/deviceplugin.proto`).
//!
//! The pure-Rust proto parser of rust-protobuf 2.x drops `service` blocks, so
//! this runs the real `protoc` shipped in `protoc-bin-vendored` to get a
//! descriptor set, then feeds it to rust-protobuf's and grpcio's generators.
//! The output lands in `OUT_DIR` as `<name>.rs` and `<name>_grpc.rs`, cleaned
//! up so that `include!` accepts it (no inner attributes or inner doc
//! comments); `src/cri/mod.rs` puts the lint allowances on the enclosing
//! modules instead.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use protobuf::descriptor::FileDescriptorSet;
use protobuf::Message;

/// Proto files under `proto/` to generate Rust code for.
const PROTOS: &[&str] = &[
    "api.proto",
    "health.proto",
    "podresources.proto",
    "csi.proto",
    "pluginregistration.proto",
    "deviceplugin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_dir = manifest_dir.join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
        generate(&proto_dir, proto, &out_dir)?;
    }
    pack_relocations();
    Ok(())
}

/// Links the statically linked kubelet (see `.cargo/config.toml`) with its relative
/// relocations packed (`DT_RELR`, glibc 2.36 and binutils 2.38 on): a static position-
/// independent binary relocates itself at start, and the table it reads stays resident; packed,
/// it is a few KiB instead of about 400 KiB. The static glibc linked in must be one that reads
/// the packed form, so older ones (and a dynamically linked build, which must still run with
/// an older glibc) are left as they are.
fn pack_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let is_static_gnu = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("CARGO_CFG_TARGET_FEATURE")
            .split(',')
            .any(|feature| feature == "crt-static");
    if is_static_gnu && glibc_version().is_some_and(|version| version >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc, whose static library the binary is linked with, from
/// `getconf GNU_LIBC_VERSION` (`glibc 2.36`).
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Runs protoc on `proto_dir/file`, then writes the messages and the grpcio
/// stubs for it into `out_dir`.
fn generate(proto_dir: &Path, file: &str, out_dir: &Path) -> Result<(), Box<dyn Error>> {
    let descriptor_path = out_dir.join(format!("{file}.desc"));
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let status = Command::new(&protoc)
        .arg("--include_imports")
        .arg(format!(
            "--descriptor_set_out={}",
            descriptor_path.display()
        ))
        .arg(format!("--proto_path={}", proto_dir.display()))
        .arg(format!("--proto_path={}", include.display()))
        .arg(proto_dir.join(file))
        .status()?;
    if !status.success() {
        return Err(format!("{} failed on {file}: {status}", protoc.display()).into());
    }

    let bytes = fs::read(&descriptor_path)?;
    let set = FileDescriptorSet::parse_from_bytes(&bytes)?;
    let descriptors = set.get_file().to_vec();
    let to_generate = vec![file.to_string()];

    // The lite runtime: messages encode, decode, compare and print (`Debug`), without
    // rust-protobuf's reflection tables and text format, which nothing here reads and which
    // made up a large part of the binary's code.
    let customize = protobuf_codegen::Customize {
        lite_runtime: Some(true),
        ..Default::default()
    };
    let messages = protobuf_codegen::gen(&descriptors, &to_generate, &customize);
    let services = grpcio_compiler::codegen::gen(&descriptors, &to_generate);
    for result in messages.into_iter().chain(services) {
        let text = String::from_utf8(result.content)?;
        fs::write(out_dir.join(&result.name), includable(&text))?;
    }
    Ok(())
}

/// Drops the lines `include!` rejects: inner attributes (`#![...]`) and inner
/// doc comments (`//!`). The generators write each of them on one line.
fn includable(generated: &str) -> String {
    let mut out = String::with_capacity(generated.len());
    for line in generated.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#![") || trimmed.starts_with("//!") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
