//! This machine's facts for node status, read from the host's files the way cAdvisor does
//! for the upstream kubelet: CPU count, memory and hugepages capacity, the size of the
//! filesystem holding `--root-dir`, machine-id, system UUID, boot id, kernel version and OS
//! image. The kubelet reads them at start-up on the main thread ([`read_machine_info`]) and
//! hands them to the `node-status` thread through `NodeStatusInputs`.
//!
//! Every reader takes `root`, the host's `/`, so tests point it at a fixture directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::quantity::binary_si;

/// Reading a machine fact failed.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file did not hold what was expected.
    #[error("parsing {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// `statvfs` on the root dir failed.
    #[error("statvfs {}: {source}", path.display())]
    Statvfs {
        /// The directory.
        path: PathBuf,
        /// The errno.
        source: rustix::io::Errno,
    },
}

/// One hugepage size and how many pages of it the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugePages {
    /// Page size in KiB (2048 for 2Mi pages).
    pub page_size_kib: u64,
    /// `nr_hugepages`.
    pub pages: u64,
}

impl HugePages {
    /// The resource name, `hugepages-2Mi`, `hugepages-1Gi`.
    pub fn resource_name(&self) -> String {
        let size = i64::try_from(self.page_size_kib.saturating_mul(1024)).unwrap_or(i64::MAX);
        format!("hugepages-{}", binary_si(size).0)
    }

    /// Bytes held in pages of this size.
    pub fn capacity_bytes(&self) -> u64 {
        self.page_size_kib
            .saturating_mul(1024)
            .saturating_mul(self.pages)
    }
}

/// What node status reports about the machine (upstream cAdvisor `MachineInfo` plus the
/// version facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// Online logical CPUs.
    pub num_cores: u32,
    /// `MemTotal` in bytes.
    pub memory_capacity_bytes: u64,
    /// Hugepage pools, by size (may be empty).
    pub hugepages: Vec<HugePages>,
    /// Size of the filesystem holding the root dir; `None` when unknown, which keeps the
    /// node NotReady (upstream reports the capacity missing).
    pub ephemeral_storage_bytes: Option<u64>,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// DMI product UUID, or the fallbacks cAdvisor uses (machine-id on plain VMs).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of os-release.
    pub os_image: String,
    /// `linux`.
    pub operating_system: String,
    /// Go's name of this binary's architecture (`amd64`, `arm64`).
    pub architecture: String,
}

impl Default for MachineInfo {
    fn default() -> Self {
        MachineInfo {
            num_cores: 0,
            memory_capacity_bytes: 0,
            hugepages: Vec::new(),
            ephemeral_storage_bytes: None,
            machine_id: String::new(),
            system_uuid: String::new(),
            boot_id: String::new(),
            kernel_version: String::new(),
            os_image: String::new(),
            operating_system: go_os().to_string(),
            architecture: go_arch().to_string(),
        }
    }
}

/// Reads every fact. CPU and memory are required; the ids and versions fall back to empty
/// strings (logged), and a failing `statvfs` leaves the ephemeral storage unknown.
pub fn read_machine_info(root: &Path, root_dir: &Path) -> Result<MachineInfo, MachineError> {
    let ephemeral_storage_bytes = match filesystem_capacity(root_dir) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            log::error!("Failed to get the root dir filesystem capacity: {e}");
            None
        }
    };
    Ok(MachineInfo {
        num_cores: read_num_cores(root)?,
        memory_capacity_bytes: read_memory_capacity(root)?,
        hugepages: read_hugepages(root)?,
        ephemeral_storage_bytes,
        machine_id: or_empty("machine-id", read_machine_id(root)),
        system_uuid: or_empty("system UUID", read_system_uuid(root)),
        boot_id: or_empty("boot id", read_boot_id(root)),
        kernel_version: or_empty("kernel version", read_kernel_version(root)),
        os_image: read_os_image(root),
        operating_system: go_os().to_string(),
        architecture: go_arch().to_string(),
    })
}

fn or_empty(what: &str, value: Result<String, MachineError>) -> String {
    value.unwrap_or_else(|e| {
        log::warn!("Failed to read the {what}: {e}");
        String::new()
    })
}

/// Online CPUs from `/sys/devices/system/cpu/online` (`0-3,6`), else the `processor` lines
/// of `/proc/cpuinfo`.
pub fn read_num_cores(root: &Path) -> Result<u32, MachineError> {
    let online = root.join("sys/devices/system/cpu/online");
    if let Ok(text) = read_trimmed(&online) {
        if let Some(n) = parse_cpu_list(&text).filter(|n| *n > 0) {
            return Ok(n);
        }
        log::warn!("Unparsable {}: {text:?}", online.display());
    }
    let cpuinfo = root.join("proc/cpuinfo");
    let text = read(&cpuinfo)?;
    let count = text
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count();
    match u32::try_from(count) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(parse_error(&cpuinfo, "no processor entries")),
    }
}

/// Counts the CPUs of a kernel cpu list (`0-3,6,8-9` → 7).
fn parse_cpu_list(text: &str) -> Option<u32> {
    text.split(',').try_fold(0u32, |acc, part| {
        let n = match part.trim().split_once('-') {
            Some((a, b)) => b
                .parse::<u32>()
                .ok()?
                .checked_sub(a.parse().ok()?)?
                .checked_add(1)?,
            None => part.trim().parse::<u32>().map(|_| 1).ok()?,
        };
        acc.checked_add(n)
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn read_memory_capacity(root: &Path) -> Result<u64, MachineError> {
    let path = root.join("proc/meminfo");
    let text = read(&path)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .ok_or_else(|| parse_error(&path, "no MemTotal"))?;
    let mut fields = line.split_whitespace();
    let kib: u64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| parse_error(&path, "MemTotal is not a number"))?;
    match fields.next() {
        Some("kB") | None => Ok(kib.saturating_mul(1024)),
        Some(unit) => Err(parse_error(&path, &format!("MemTotal unit {unit}"))),
    }
}

/// Hugepage pools from `/sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages`, sorted by
/// size. No directory means no pools.
pub fn read_hugepages(root: &Path) -> Result<Vec<HugePages>, MachineError> {
    let dir = root.join("sys/kernel/mm/hugepages");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(MachineError::Read { path: dir, source }),
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| MachineError::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(size) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let nr = entry.path().join("nr_hugepages");
        let pages = read_trimmed(&nr)?
            .parse()
            .map_err(|_| parse_error(&nr, "not a number"))?;
        pools.push(HugePages {
            page_size_kib: size,
            pages,
        });
    }
    pools.sort_by_key(|p| p.page_size_kib);
    Ok(pools)
}

/// Bytes of the filesystem holding `path` (`f_blocks × f_frsize`, as cAdvisor reports the
/// root filesystem's capacity).
pub fn filesystem_capacity(path: &Path) -> Result<u64, MachineError> {
    let st = rustix::fs::statvfs(path).map_err(|source| MachineError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// `/etc/machine-id`, else `/var/lib/dbus/machine-id` (cAdvisor's `--machine_id_file`).
pub fn read_machine_id(root: &Path) -> Result<String, MachineError> {
    first_of(root, &["etc/machine-id", "var/lib/dbus/machine-id"])
}

/// The system UUID in cAdvisor's order: DMI `product_uuid`, the device-tree `system-id` and
/// `vm,uuid` (POWER), then `/etc/machine-id` (s390x, and any VM without DMI, which is why the
/// reference node reports its machine-id here).
pub fn read_system_uuid(root: &Path) -> Result<String, MachineError> {
    first_of(
        root,
        &[
            "sys/class/dmi/id/product_uuid",
            "proc/device-tree/system-id",
            "proc/device-tree/vm,uuid",
            "etc/machine-id",
        ],
    )
    .map(|id| {
        id.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()
    })
}

/// `/proc/sys/kernel/random/boot_id`.
pub fn read_boot_id(root: &Path) -> Result<String, MachineError> {
    read_trimmed(&root.join("proc/sys/kernel/random/boot_id"))
}

/// `/proc/sys/kernel/osrelease`, the kernel release `uname -r` shows.
pub fn read_kernel_version(root: &Path) -> Result<String, MachineError> {
    read_trimmed(&root.join("proc/sys/kernel/osrelease"))
}

/// `PRETTY_NAME` of `/etc/os-release` (else `/usr/lib/os-release`) without quotes; `Linux`
/// when neither names one, as cAdvisor.
pub fn read_os_image(root: &Path) -> String {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(root.join(p)).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".to_string())
}

/// Go's `GOOS` for this build (`linux`).
pub fn go_os() -> &'static str {
    std::env::consts::OS
}

/// Go's `GOARCH` for this build, as node labels and `nodeInfo.architecture` carry it.
pub fn go_arch() -> &'static str {
    go_arch_name(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

/// Maps a Rust architecture name onto Go's (`x86_64` → `amd64`, `aarch64` → `arm64`).
pub fn go_arch_name(rust_arch: &'static str, little_endian: bool) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if little_endian => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if little_endian => "mips64le",
        other => other,
    }
}

fn first_of(root: &Path, candidates: &[&str]) -> Result<String, MachineError> {
    let mut last = None;
    for candidate in candidates {
        match read_trimmed(&root.join(candidate)) {
            Ok(value) if !value.is_empty() => return Ok(value),
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| parse_error(&root.join(candidates.join(",")), "all empty")))
}

fn read(path: &Path) -> Result<String, MachineError> {
    fs::read_to_string(path).map_err(|source| MachineError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_trimmed(path: &Path) -> Result<String, MachineError> {
    read(path).map(|s| s.trim().to_string())
}

fn parse_error(path: &Path, reason: &str) -> MachineError {
    MachineError::Parse {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh fixture directory under the temp dir, removed on drop.
    pub(crate) struct Fixture(pub PathBuf);

    impl Fixture {
        pub(crate) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "rkubelet-nodestatus-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Fixture(dir)
        }

        pub(crate) fn write(&self, rel: &str, content: &str) -> &Self {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
            self
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cpu_count_from_online_list_or_cpuinfo() {
        let cases: &[(Option<&str>, Option<&str>, Option<u32>)] = &[
            (Some("0-1\n"), None, Some(2)),
            (Some("0-3,6,8-9\n"), None, Some(7)),
            (Some("0\n"), None, Some(1)),
            (
                None,
                Some("processor\t: 0\nfoo : x\n\nprocessor\t: 1\n"),
                Some(2),
            ),
            (Some("garbage"), Some("processor : 0\n"), Some(1)),
            (None, Some("model name : x\n"), None),
            (None, None, None),
        ];
        for (i, (online, cpuinfo, want)) in cases.iter().enumerate() {
            let f = Fixture::new(&format!("cpu{i}"));
            if let Some(o) = online {
                f.write("sys/devices/system/cpu/online", o);
            }
            if let Some(c) = cpuinfo {
                f.write("proc/cpuinfo", c);
            }
            assert_eq!(read_num_cores(&f.0).ok(), *want, "case {i}");
        }
    }

    #[test]
    fn memory_capacity_in_bytes() {
        let f = Fixture::new("mem");
        f.write(
            "proc/meminfo",
            "MemTotal:       24684084 kB\nMemFree:        20853508 kB\n",
        );
        let bytes = read_memory_capacity(&f.0).unwrap();
        assert_eq!(bytes, 24684084 * 1024);
        assert_eq!(binary_si(bytes as i64).0, "24684084Ki");
        f.write("proc/meminfo", "MemFree: 1 kB\n");
        assert!(matches!(
            read_memory_capacity(&f.0),
            Err(MachineError::Parse { .. })
        ));
    }

    #[test]
    fn hugepages_pools() {
        let f = Fixture::new("huge");
        assert_eq!(read_hugepages(&f.0).unwrap(), vec![]);
        f.write(
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "0\n",
        )
        .write(
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "2\n",
        );
        let pools = read_hugepages(&f.0).unwrap();
        let names: Vec<_> = pools
            .iter()
            .map(|p| (p.resource_name(), p.capacity_bytes()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("hugepages-2Mi".to_string(), 0),
                ("hugepages-1Gi".to_string(), 2 << 30)
            ]
        );
    }

    #[test]
    fn ids_and_versions() {
        let f = Fixture::new("ids");
        f.write("etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
            .write(
                "proc/sys/kernel/random/boot_id",
                "2ce5c0d8-6426-4a48-ab5a-4318a073de9d\n",
            )
            .write("proc/sys/kernel/osrelease", "6.18.44-fc-v669\n")
            .write(
                "etc/os-release",
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            );
        assert_eq!(
            read_machine_id(&f.0).unwrap(),
            "3d1219c7c4c5404aaa1f6d2a48adfda4"
        );
        // No DMI: the machine-id, as the reference node shows.
        assert_eq!(
            read_system_uuid(&f.0).unwrap(),
            "3d1219c7c4c5404aaa1f6d2a48adfda4"
        );
        f.write("proc/device-tree/vm,uuid", "abc-def\0");
        assert_eq!(read_system_uuid(&f.0).unwrap(), "abc-def");
        f.write(
            "sys/class/dmi/id/product_uuid",
            "EC2A1B2C-0000-1111-2222-333344445555\n",
        );
        assert_eq!(
            read_system_uuid(&f.0).unwrap(),
            "EC2A1B2C-0000-1111-2222-333344445555"
        );
        assert_eq!(
            read_boot_id(&f.0).unwrap(),
            "2ce5c0d8-6426-4a48-ab5a-4318a073de9d"
        );
        assert_eq!(read_kernel_version(&f.0).unwrap(), "6.18.44-fc-v669");
        assert_eq!(read_os_image(&f.0), "Debian GNU/Linux 12 (bookworm)");
        let empty = Fixture::new("ids-empty");
        assert_eq!(read_os_image(&empty.0), "Linux");
        assert!(read_machine_id(&empty.0).is_err());
        empty.write("var/lib/dbus/machine-id", "dbus-id\n");
        assert_eq!(read_machine_id(&empty.0).unwrap(), "dbus-id");
    }

    #[test]
    fn whole_machine_from_fixture() {
        let f = Fixture::new("whole");
        f.write("sys/devices/system/cpu/online", "0-1\n")
            .write("proc/meminfo", "MemTotal: 1024 kB\n")
            .write("etc/machine-id", "m\n");
        let info = read_machine_info(&f.0, &f.0).unwrap();
        assert_eq!(info.num_cores, 2);
        assert_eq!(info.memory_capacity_bytes, 1 << 20);
        assert_eq!(info.system_uuid, "m");
        assert_eq!(info.boot_id, "");
        assert!(info.ephemeral_storage_bytes.unwrap_or(0) > 0);
        assert_eq!(info.operating_system, "linux");
        let missing = read_machine_info(&f.0, &f.0.join("does-not-exist")).unwrap();
        assert_eq!(missing.ephemeral_storage_bytes, None);
    }

    #[test]
    fn go_architecture_names() {
        let cases = [
            ("x86_64", true, "amd64"),
            ("aarch64", true, "arm64"),
            ("x86", true, "386"),
            ("powerpc64", true, "ppc64le"),
            ("powerpc64", false, "ppc64"),
            ("s390x", false, "s390x"),
            ("riscv64", true, "riscv64"),
        ];
        for (rust, le, go) in cases {
            assert_eq!(go_arch_name(rust, le), go);
        }
    }
}
