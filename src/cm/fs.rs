//! Writing a cgroup's limit files, v1 and v2, as libcontainer's fs manager writes them for
//! both drivers (with systemd, after the unit's properties are set).

use std::io;
use std::path::Path;

use super::{CgroupLimits, CgroupVersion};
use crate::resources::{shares_to_weight, CPU_PERIOD_US};

/// v2: lets children of every ancestor of `rel` use the cpu, memory and pids controllers.
pub(super) fn enable_v2_controllers(mount: &Path, rel: &str) {
    let mut dir = mount.to_path_buf();
    for part in rel.trim_start_matches('/').split('/') {
        let control = dir.join("cgroup.subtree_control");
        if control.exists() {
            for c in ["+cpu", "+memory", "+pids"] {
                // A controller the parent lacks cannot be enabled; the limits of that
                // controller are then simply not applied.
                let _ = std::fs::write(&control, c);
            }
        }
        dir = dir.join(part);
    }
}

/// Writes `limits` into `dir`, the directory of one controller on v1 (`controller`) or
/// the cgroup's directory on v2.
pub(super) fn write_limits(
    version: CgroupVersion,
    controller: Option<&str>,
    dir: &Path,
    limits: &CgroupLimits,
) -> io::Result<()> {
    let write = |file: &str, value: String| {
        let path = dir.join(file);
        std::fs::write(&path, &value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value} to {}: {e}", path.display()),
            )
        })
    };
    // As libcontainer, only what is set is written: a new cgroup starts unlimited, and an
    // update leaves alone what it does not set.
    match (version, controller) {
        (CgroupVersion::V1, Some("cpu")) => {
            if let Some(shares) = limits.cpu_shares {
                write("cpu.shares", shares.to_string())?;
            }
            if let Some(quota) = limits.cpu_quota {
                write("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                write("cpu.cfs_quota_us", quota.to_string())?;
            }
        }
        (CgroupVersion::V1, Some("pids")) => {
            if let Some(pids) = limits.pids {
                write("pids.max", pids.to_string())?;
            }
        }
        (CgroupVersion::V1, Some("memory")) => {
            if let Some(bytes) = limits.memory_bytes {
                write("memory.limit_in_bytes", bytes.to_string())?;
            }
        }
        (CgroupVersion::V2, _) => {
            // A controller the parent does not pass down is not in `cgroup.controllers`;
            // its limit then cannot apply (logged), as on upstream's v2 path.
            let enabled = std::fs::read_to_string(dir.join("cgroup.controllers")).ok();
            let has = |controller: &str| {
                let on = enabled
                    .as_deref()
                    .is_none_or(|list| list.split_whitespace().any(|c| c == controller));
                if !on {
                    log::warn!(
                        "{}: the {controller} controller is not enabled, its limit is not set",
                        dir.display()
                    );
                }
                on
            };
            if let Some(shares) = limits.cpu_shares.filter(|_| has("cpu")) {
                write("cpu.weight", shares_to_weight(shares).to_string())?;
            }
            if let Some(quota) = limits.cpu_quota.filter(|_| has("cpu")) {
                write("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
            }
            if let Some(pids) = limits.pids.filter(|_| has("pids")) {
                write("pids.max", pids.to_string())?;
            }
            if let Some(bytes) = limits.memory_bytes.filter(|_| has("memory")) {
                write("memory.max", bytes.to_string())?;
            }
            if let Some(min) = limits.memory_min.filter(|_| has("memory")) {
                write("memory.min", min.to_string())?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Sends SIGKILL to every process in the cgroup directories `dirs` and their descendants,
/// as upstream's `tryKillingCgroupProcesses` does before a pod cgroup is destroyed. A
/// process the runtime lost track of (a start cut short leaves containerd with an exited
/// container whose task still runs) would otherwise hold the cgroup, and its pod's
/// sandbox, for good. Returns how many processes were signalled; a process that exits
/// first is not an error.
pub(super) fn kill_processes(dirs: &[std::path::PathBuf]) -> io::Result<usize> {
    let mut pids = std::collections::BTreeSet::new();
    for dir in dirs {
        collect_pids(dir, &mut pids);
    }
    // Never the kubelet itself, whatever cgroup it was started in.
    pids.remove(&std::process::id());
    let mut first_err = None;
    let mut signalled = 0;
    for pid in pids {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            Ok(()) => signalled += 1,
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                first_err.get_or_insert(io::Error::other(format!(
                    "killing process {} of cgroup {}: {e}",
                    pid.as_raw_nonzero(),
                    dirs.first()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                )));
            }
        }
    }
    first_err.map_or(Ok(signalled), Err)
}

/// Adds the processes of cgroup directory `dir` and of every cgroup below it.
fn collect_pids(dir: &Path, pids: &mut std::collections::BTreeSet<u32>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), pids);
        }
    }
}
