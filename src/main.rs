//! `rkubelet`: parse flags and the config file, set up logging, run the kubelet, and turn the
//! outcome into an exit code (0 on a clean stop, 1 on any error). `rkubelet fake-runtime`
//! serves the in-memory fake runtime over CRI instead, and `rkubelet hollow` runs many
//! hollow nodes in one process.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use rkubelet::config::settings::KubeletConfig;
use structopt::StructOpt;

fn main() -> ExitCode {
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some("fake-runtime") => return fake_runtime(),
        Some("hollow") => return hollow(),
        _ => {}
    }
    let malloc = tune_malloc();
    let config = match KubeletConfig::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let text = e.to_string();
            if code == 0 {
                println!("{}", text.trim_end());
            } else if text.starts_with("error:") {
                eprintln!("{text}");
            } else {
                eprintln!("rkubelet: {text}");
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_filter()))
        .format_timestamp_micros()
        .init();
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    match malloc {
        Malloc::Tuned => log::info!("malloc: GLIBC_TUNABLES={MALLOC_TUNABLES} (set by rkubelet)"),
        Malloc::Caller(value) => {
            log::info!("malloc: GLIBC_TUNABLES={value:?} set by the caller, left as given")
        }
        Malloc::Failed(e) => {
            log::warn!("malloc: executing rkubelet again with GLIBC_TUNABLES={MALLOC_TUNABLES} failed ({e}); glibc's defaults are used")
        }
        Malloc::NotGlibc => {}
    }
    // One TLS crypto provider for the whole process (see Cargo.toml). Installing fails only
    // if one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_open_file_limit();
    match rkubelet::app::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("rkubelet: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// glibc's malloc settings the kubelet runs with, each measured at rest with 110 pods
/// (`cargo bench --bench containerd_pods`):
/// - `arena_max=1`: one arena for all threads. By default glibc gives each thread that
///   allocates an arena of its own, up to eight per core, and what a thread frees stays in
///   its arena; across the kubelet's ~40 threads that kept about 1.2 MiB more resident. The
///   threads mostly wait on the runtime and the API server, so they hardly ever contend for
///   the one arena.
/// - `tcache_count=0`, `mxfast=0`: no per-thread caches of freed chunks and no fast bins, so a
///   freed chunk merges with its free neighbours at once instead of being held for a later
///   allocation of its size.
/// - `top_pad=0`: the heap grows by what is asked, not 128 KiB more; setting it also keeps
///   the trim and mmap thresholds at 128 KiB instead of rising after each large free, so the
///   freed top of the heap goes back to the system.
///
/// The last three together take the heap at rest from about 4.6 to 3.7-4.2 MiB, with no
/// measurable change in CPU.
const MALLOC_TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0:\
                               glibc.malloc.mxfast=0:glibc.malloc.top_pad=0";
/// Marks the kubelet executed again by [`tune_malloc`].
const TUNED_MARK: &str = "RKUBELET_MALLOC_TUNED";

enum Malloc {
    /// Running with [`MALLOC_TUNABLES`].
    Tuned,
    /// The caller set GLIBC_TUNABLES (to this).
    Caller(OsString),
    /// Executing again failed; running with glibc's defaults.
    Failed(std::io::Error),
    /// Not linked against glibc.
    NotGlibc,
}

/// glibc reads its tunables once, when a program starts, from `GLIBC_TUNABLES`. Unless the
/// caller set that variable (even to nothing), the kubelet executes itself again with
/// [`MALLOC_TUNABLES`]: the same file, arguments and process, before any thread exists. In
/// the new image both variables are taken out of the environment again, so the programs the
/// kubelet runs (mount, credential and CSI helpers) get the caller's environment.
fn tune_malloc() -> Malloc {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Malloc::NotGlibc;
    }
    if let Some(name) = std::env::var_os(TUNED_MARK) {
        std::env::remove_var(TUNED_MARK);
        std::env::remove_var("GLIBC_TUNABLES");
        // The kernel names a process after the file it executes, and the file executed again
        // is the binary itself even when the kubelet was started through a link
        // (`/usr/bin/kubelet`): the name it was started under comes back, for `ps`, `pgrep`
        // and `killall`.
        if let Ok(name) = std::ffi::CString::new(name.into_vec()) {
            let _ = rustix::thread::set_name(&name);
        }
        return Malloc::Tuned;
    }
    if let Some(value) = std::env::var_os("GLIBC_TUNABLES") {
        return Malloc::Caller(value);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Malloc::Failed(e),
    };
    let mut name = std::fs::read("/proc/self/comm").unwrap_or_default();
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
        .env(TUNED_MARK, OsString::from_vec(name))
        .exec();
    Malloc::Failed(err)
}

/// Raises the soft limit of open files to the hard one, as the Go runtime does at the start
/// of every Go kubelet: a node's sockets, log files and watches outgrow the usual soft
/// limit of 1024 long before the hard one.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    // `None` is unlimited, which the kernel refuses for open files: left as it is.
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                log::warn!("raising the open file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// `rkubelet fake-runtime ...`.
fn fake_runtime() -> ExitCode {
    let args = match rkubelet::fake_runtime::FakeRuntimeArgs::from_iter_safe(
        std::env::args_os().skip(1),
    ) {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
    };
    let level = match args.v {
        0 => "info",
        1..=3 => "debug",
        _ => "trace",
    };
    env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string()))
        .format_timestamp_micros()
        .init();
    match rkubelet::fake_runtime::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("rkubelet fake-runtime: {e}");
            ExitCode::from(1)
        }
    }
}

/// `rkubelet hollow ...`.
fn hollow() -> ExitCode {
    let args = match rkubelet::hollow::HollowArgs::from_iter_safe(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
    };
    // Hundreds of kubelets logging every pod change would drown the progress lines.
    let level = match args.v {
        0 => "warn,rkubelet::hollow=info",
        1 => "info",
        2..=3 => "debug",
        _ => "trace",
    };
    env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string()))
        .format_timestamp_micros()
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match rkubelet::hollow::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("rkubelet hollow: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
