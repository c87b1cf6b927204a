//! What a process holds, read from `/proc`: resident memory, threads (also by role, from
//! their names), open file descriptors.

use std::collections::BTreeMap;
use std::fmt;

/// One reading of a process.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub threads: usize,
    pub fds: usize,
    /// Threads by role: the name with a trailing number or `-<n>` dropped (`pod-worker-3`
    /// counts as `pod-worker`).
    pub roles: BTreeMap<String, usize>,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rss={} KiB threads={} fds={} roles={:?}",
            self.rss_kib, self.threads, self.fds, self.roles
        )
    }
}

/// Reads `pid`, or `None` when it is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut roles = BTreeMap::new();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        threads += 1;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        *roles.entry(role(comm.trim())).or_insert(0) += 1;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Sample {
        rss_kib: field("VmRSS:")?,
        threads,
        fds,
        roles,
    })
}

/// A thread's role from its name.
fn role(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed.trim_end_matches(['-', '_', '.', ' ']);
    if trimmed.is_empty() {
        name.to_string()
    } else {
        trimmed.to_string()
    }
}
