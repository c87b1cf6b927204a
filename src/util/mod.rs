//! Small helpers shared by several subsystems.

pub mod backoff;
pub mod expansion;
pub mod http;
pub mod metrics;

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
