//! `rkubelet`: parse flags and the config file, set up logging, run the kubelet, and turn the
//! outcome into an exit code (0 on a clean stop, 1 on any error). `rkubelet fake-runtime`
//! serves the in-memory fake runtime over CRI instead, and `rkubelet hollow` runs many
//! hollow nodes in one process.

use std::process::ExitCode;

use rkubelet::config::settings::KubeletConfig;
use structopt::StructOpt;

fn main() -> ExitCode {
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some("fake-runtime") => return fake_runtime(),
        Some("hollow") => return hollow(),
        _ => {}
    }
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
