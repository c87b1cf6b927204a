//! Small helpers shared by several subsystems.

pub mod backoff;
pub mod base64;
pub mod capped;
pub mod decode;
pub mod duration;
pub mod expansion;
pub mod http;
pub mod metrics;
pub mod node_selector;
pub mod sd_notify;
pub mod tls;
pub mod x509;

/// Writes `data` to `path` readable and writable by the owner only (mode 0600), replacing
/// any earlier file through a rename so no reader sees half a file.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Writes `data` to `path` with `mode`: into `<path>.tmp` first, synced, then renamed over
/// `path`, so a full disk or a crash leaves either the old file or the new one, never half.
pub fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// The process's one gRPC environment: a single completion-queue thread (`grpc-0`) shared by
/// the CRI client, the pod-resources server, CSI driver clients and gRPC probes. Each
/// environment costs a thread that wakes even when idle, so there is only one.
pub fn grpc_env() -> std::sync::Arc<grpcio::Environment> {
    static ENV: std::sync::OnceLock<std::sync::Arc<grpcio::Environment>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(ENV.get_or_init(|| {
        std::sync::Arc::new(
            grpcio::EnvBuilder::new()
                .cq_count(1)
                .name_prefix("grpc")
                .build(),
        )
    }))
}

/// Calls a kubelet gRPC server has asked gRPC core for ahead of time. grpcio's default is
/// 1,024, a context of about 300 bytes each that stays allocated for the server's life; the
/// kubelet's servers (pod-resources, device-plugin registration) see a few calls at a time. A
/// call that arrives while every slot is taken waits in gRPC core until a handler finishes
/// and its slot is asked for again.
pub const GRPC_SERVER_SLOTS: usize = 16;

/// A gRPC server builder on the process's environment, with [`GRPC_SERVER_SLOTS`].
pub fn grpc_server_builder() -> grpcio::ServerBuilder {
    grpcio::ServerBuilder::new(grpc_env()).requests_slot_per_cq(GRPC_SERVER_SLOTS)
}

/// Waits until `fd` is readable (a listener has a connection waiting) or `timeout` passes;
/// whether it is readable. A loop that must also notice a stop calls this instead of
/// polling a non-blocking accept, so an idle listener costs a wake-up per `timeout`.
pub fn wait_readable(fd: &impl std::os::fd::AsFd, timeout: std::time::Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// Shuts a gRPC server down, waiting at most `wait` for calls in flight; whether it finished.
pub fn shutdown_grpc(server: &mut grpcio::Server, wait: std::time::Duration) -> bool {
    let mut shutdown = Box::pin(server.shutdown());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if std::future::Future::poll(shutdown.as_mut(), &mut cx).is_ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}
