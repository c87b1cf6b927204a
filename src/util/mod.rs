//! Small helpers shared by several subsystems.

pub mod backoff;
pub mod base64;
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
