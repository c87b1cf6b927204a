//! The metric families of `/metrics/cadvisor`, in cAdvisor's order (by name), and the
//! machine figures.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{container_id, HostPaths, Row, RuntimeView};
use crate::util::metrics::Exposition;

/// The six labels of every container metric, by name.
fn base_labels(r: &Row) -> BTreeMap<&'static str, String> {
    let e = r.entry.clone().unwrap_or_default();
    let (namespace, pod) = match (&r.entry, &r.pod) {
        (Some(_), _) => (e.namespace.clone(), e.pod.clone()),
        (None, Some((ns, name))) => (ns.clone(), name.clone()),
        _ => (String::new(), String::new()),
    };
    let name = match &r.entry {
        Some(_) => {
            r.id.rsplit('/')
                .next()
                .and_then(container_id)
                .unwrap_or_default()
                .to_string()
        }
        None => String::new(),
    };
    BTreeMap::from([
        ("container", e.container),
        ("id", r.id.clone()),
        ("image", e.image),
        ("name", name),
        ("namespace", namespace),
        ("pod", pod),
    ])
}

type Sampler<'a> = &'a dyn Fn(&Row) -> Vec<(Vec<(&'static str, String)>, f64)>;

fn family(e: &mut Exposition, rows: &[Row], name: &str, help: &str, kind: &str, f: Sampler) {
    e.family(name, help, kind);
    for r in rows {
        for (extra, value) in f(r) {
            let mut labels = base_labels(r);
            labels.extend(extra);
            let names: Vec<&str> = labels.keys().copied().collect();
            let values: Vec<String> = labels.into_values().collect();
            e.sample(name, &names, &values, value);
        }
    }
}

fn one(v: Option<f64>) -> Vec<(Vec<(&'static str, String)>, f64)> {
    v.map(|v| vec![(Vec::new(), v)]).unwrap_or_default()
}

fn bytes(v: Option<u64>) -> Vec<(Vec<(&'static str, String)>, f64)> {
    one(v.map(|v| v as f64))
}

/// Whether the CFS quota is set (cAdvisor's condition for the throttling figures).
fn has_quota(r: &Row) -> bool {
    r.stats.quota.is_some_and(|q| q > 0)
}

pub(super) fn emit_all(e: &mut Exposition, rows: &[Row], rt: &RuntimeView, now: f64) {
    family(
        e,
        rows,
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        "counter",
        &|r| {
            if has_quota(r) {
                bytes(r.stats.periods)
            } else {
                Vec::new()
            }
        },
    );
    family(
        e,
        rows,
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        "counter",
        &|r| {
            if has_quota(r) {
                bytes(r.stats.throttled_periods)
            } else {
                Vec::new()
            }
        },
    );
    family(
        e,
        rows,
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        "counter",
        &|r| {
            if has_quota(r) {
                one(r.stats.throttled_seconds)
            } else {
                Vec::new()
            }
        },
    );
    family(
        e,
        rows,
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        "counter",
        &|r| one(r.stats.cpu_system),
    );
    family(
        e,
        rows,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        &|r| match r.stats.cpu_total {
            Some(v) if v > 0.0 => vec![(vec![("cpu", "total".to_string())], v)],
            _ => Vec::new(),
        },
    );
    family(
        e,
        rows,
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        "counter",
        &|r| one(r.stats.cpu_user),
    );
    family(
        e,
        rows,
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        "gauge",
        &|r| bytes(Some(r.stats.fds)),
    );
    let image_fs = rt.image_fs.and_then(|i| rt.filesystems.get(i)).cloned();
    let fs = |r: &Row, used: bool| -> Vec<(Vec<(&'static str, String)>, f64)> {
        if r.id == "/" {
            return rt
                .filesystems
                .iter()
                .map(|(dev, u, c)| {
                    (
                        vec![("device", dev.clone())],
                        if used { *u } else { *c } as f64,
                    )
                })
                .collect();
        }
        match (&r.entry, &image_fs) {
            (Some(entry), Some((dev, _, capacity))) => entry
                .writable_layer
                .map(|u| {
                    vec![(
                        vec![("device", dev.clone())],
                        if used { u } else { *capacity } as f64,
                    )]
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    family(
        e,
        rows,
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        "gauge",
        &|r| fs(r, false),
    );
    family(
        e,
        rows,
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read",
        "counter",
        &|r| {
            r.stats
                .io
                .iter()
                .map(|(d, read, _)| (vec![("device", d.clone())], *read as f64))
                .collect()
        },
    );
    family(
        e,
        rows,
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        "gauge",
        &|r| fs(r, true),
    );
    family(
        e,
        rows,
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written",
        "counter",
        &|r| {
            r.stats
                .io
                .iter()
                .map(|(d, _, w)| (vec![("device", d.clone())], *w as f64))
                .collect()
        },
    );
    family(
        e,
        rows,
        "container_last_seen",
        "Last time a container was seen by the exporter",
        "gauge",
        &|_| one(Some(now.floor())),
    );
    family(
        e,
        rows,
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        &|r| bytes(r.stats.cache),
    );
    family(
        e,
        rows,
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        "counter",
        &|r| bytes(r.stats.failcnt),
    );
    family(
        e,
        rows,
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        "counter",
        &|r| {
            let mut out = Vec::new();
            for (kind, v) in [
                ("pgfault", r.stats.pgfault),
                ("pgmajfault", r.stats.pgmajfault),
            ] {
                let Some(v) = v else { continue };
                for scope in ["container", "hierarchy"] {
                    out.push((
                        vec![
                            ("failure_type", kind.to_string()),
                            ("scope", scope.to_string()),
                        ],
                        v as f64,
                    ));
                }
            }
            out
        },
    );
    family(
        e,
        rows,
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        "gauge",
        &|r| bytes(r.stats.mapped_file),
    );
    family(
        e,
        rows,
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
        "gauge",
        &|r| bytes(r.stats.max_usage),
    );
    family(
        e,
        rows,
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        &|r| bytes(r.stats.rss),
    );
    family(
        e,
        rows,
        "container_memory_swap",
        "Container swap usage in bytes.",
        "gauge",
        &|r| bytes(r.stats.swap),
    );
    family(
        e,
        rows,
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        &|r| bytes(r.stats.usage),
    );
    family(
        e,
        rows,
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        &|r| bytes(r.stats.working_set),
    );
    let net: [(&str, &str, usize); 8] = [
        (
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
            0,
        ),
        (
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
            2,
        ),
        (
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
            3,
        ),
        (
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
            1,
        ),
        (
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
            8,
        ),
        (
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
            10,
        ),
        (
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
            11,
        ),
        (
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
            9,
        ),
    ];
    for (name, help, column) in net {
        family(e, rows, name, help, "counter", &|r| {
            r.stats
                .net
                .iter()
                .map(|(iface, v)| (vec![("interface", iface.clone())], v[column] as f64))
                .collect()
        });
    }
    family(
        e,
        rows,
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        "counter",
        &|r| bytes(r.stats.oom_kills),
    );
    family(
        e,
        rows,
        "container_processes",
        "Number of processes running inside the container.",
        "gauge",
        &|r| bytes(Some(r.stats.processes)),
    );
    family(
        e,
        rows,
        "container_sockets",
        "Number of open sockets for the container.",
        "gauge",
        &|r| bytes(Some(r.stats.sockets)),
    );
    family(
        e,
        rows,
        "container_spec_cpu_period",
        "CPU period of the container.",
        "gauge",
        &|r| bytes(r.stats.period),
    );
    family(
        e,
        rows,
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        "gauge",
        &|r| {
            if has_quota(r) {
                one(r.stats.quota.map(|q| q as f64))
            } else {
                Vec::new()
            }
        },
    );
    family(
        e,
        rows,
        "container_spec_cpu_shares",
        "CPU share of the container.",
        "gauge",
        &|r| bytes(r.stats.shares),
    );
    family(
        e,
        rows,
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        "gauge",
        &|r| bytes(r.stats.memory_limit),
    );
    family(
        e,
        rows,
        "container_spec_memory_reservation_limit_bytes",
        "Memory reservation limit for the container.",
        "gauge",
        &|r| bytes(r.stats.reservation),
    );
    family(
        e,
        rows,
        "container_spec_memory_swap_limit_bytes",
        "Memory swap limit for the container.",
        "gauge",
        &|r| bytes(r.stats.swap_limit),
    );
    family(
        e,
        rows,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
        &|r| one(r.created),
    );
    family(
        e,
        rows,
        "container_tasks_state",
        "Number of tasks in given state",
        "gauge",
        &|r| {
            [
                "sleeping",
                "running",
                "stopped",
                "uninterruptible",
                "iowaiting",
            ]
            .iter()
            .zip(r.stats.tasks)
            .map(|(state, n)| (vec![("state", (*state).to_string())], n as f64))
            .collect()
        },
    );
    family(
        e,
        rows,
        "container_threads",
        "Number of threads running inside the container",
        "gauge",
        &|r| bytes(r.stats.threads),
    );
    family(
        e,
        rows,
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        "gauge",
        &|r| bytes(r.stats.threads_max),
    );
}

/// `cadvisor_version_info` and the `machine_*` figures.
pub(super) fn machine(e: &mut Exposition, host: &HostPaths) {
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let kernel = read(host.proc_dir.join("sys/kernel/osrelease"));
    let os = read(host.etc_dir.join("os-release"))
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    e.family(
        "cadvisor_version_info",
        "A metric with a constant '1' value labeled by kernel version, OS version, docker version, cadvisor version & cadvisor revision.",
        "gauge",
    );
    e.sample(
        "cadvisor_version_info",
        &[
            "cadvisorRevision",
            "cadvisorVersion",
            "dockerVersion",
            "kernelVersion",
            "osVersion",
        ],
        &[String::new(), String::new(), String::new(), kernel, os],
        1.0,
    );
    let ids = [
        read(host.proc_dir.join("sys/kernel/random/boot_id")),
        read(host.etc_dir.join("machine-id")),
        read(host.sys_dir.join("class/dmi/id/product_uuid")),
    ];
    let names = ["boot_id", "machine_id", "system_uuid"];
    let cpuinfo = read(host.proc_dir.join("cpuinfo"));
    let mut logical = 0u64;
    let mut cores = std::collections::BTreeSet::new();
    let mut sockets = std::collections::BTreeSet::new();
    let mut socket = String::new();
    for line in cpuinfo.lines() {
        let (k, v) = line
            .split_once(':')
            .map_or((line.trim(), ""), |(k, v)| (k.trim(), v.trim()));
        match k {
            "processor" => logical += 1,
            "physical id" => {
                socket = v.to_string();
                sockets.insert(socket.clone());
            }
            "core id" => {
                cores.insert((socket.clone(), v.to_string()));
            }
            _ => {}
        }
    }
    let memory = read(host.proc_dir.join("meminfo"))
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let figures = [
        (
            "machine_cpu_cores",
            "Number of logical CPU cores.",
            Some(logical),
        ),
        (
            "machine_cpu_physical_cores",
            "Number of physical CPU cores.",
            Some(cores.len().max(1) as u64),
        ),
        (
            "machine_cpu_sockets",
            "Number of CPU sockets.",
            Some(sockets.len().max(1) as u64),
        ),
        (
            "machine_memory_bytes",
            "Amount of memory installed on the machine.",
            memory,
        ),
    ];
    for (name, help, v) in figures {
        e.family(name, help, "gauge");
        if let Some(v) = v {
            e.sample(name, &names, &ids, v as f64);
        }
    }
}
