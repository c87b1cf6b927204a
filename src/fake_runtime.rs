//! `rkubelet fake-runtime`: the in-memory fake runtime served as a CRI v1 endpoint, for
//! kubemark-style hollow nodes (one normal `rkubelet` per fake runtime) and for exercising
//! the real gRPC client. Runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use structopt::StructOpt;

use crate::cri::{FakeCriServer, FakeRuntime};
use crate::util::duration::GoDuration;

/// Flags of `rkubelet fake-runtime`.
#[derive(Debug, StructOpt)]
#[structopt(
    name = "rkubelet fake-runtime",
    about = "Serve an in-memory CRI v1 runtime (RuntimeService and ImageService) on a unix socket"
)]
pub struct FakeRuntimeArgs {
    /// Endpoint to serve: unix:///path/to.sock or /path/to.sock
    #[structopt(long)]
    pub listen: String,

    /// Network sandboxes get their IPs from
    #[structopt(long, default_value = "10.88.0.0/16")]
    pub pod_cidr: String,

    /// How long each image pull takes, e.g. 2s
    #[structopt(long, default_value = "0s")]
    pub pull_delay: GoDuration,

    /// Exit code ExecSync reports (exec probes and hooks)
    #[structopt(long, default_value = "0")]
    pub exec_exit_code: i32,

    /// Output ExecSync reports
    #[structopt(long, default_value = "")]
    pub exec_stdout: String,

    /// gRPC server threads (a pull holds one for its delay)
    #[structopt(long, default_value = "4")]
    pub threads: usize,

    /// Log verbosity (0-5)
    #[structopt(short = "v", long = "v", default_value = "0")]
    pub v: u8,
}

/// The socket path of a `--listen` endpoint.
fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .unwrap_or(endpoint)
        .to_string();
    if !path.starts_with('/') {
        return Err(format!(
            "--listen {endpoint:?}: expected unix:///absolute/path.sock or an absolute path"
        ));
    }
    Ok(PathBuf::from(path))
}

/// The fake runtime set up from the flags.
pub fn runtime(args: &FakeRuntimeArgs) -> Result<Arc<FakeRuntime>, String> {
    let rt = Arc::new(FakeRuntime::without_call_log());
    rt.allow_any_image();
    rt.set_pod_network(&args.pod_cidr)
        .map_err(|e| format!("--pod-cidr {e}"))?;
    rt.set_pull_delay(args.pull_delay.to_std().unwrap_or_default());
    rt.set_exec_result(args.exec_stdout.as_bytes(), b"", args.exec_exit_code);
    Ok(rt)
}

/// Runs `rkubelet fake-runtime` until SIGTERM or SIGINT.
pub fn run(args: &FakeRuntimeArgs) -> Result<(), String> {
    let socket = socket_path(&args.listen)?;
    let rt = runtime(args)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    let server = FakeCriServer::start(rt, &socket, args.threads)?;
    log::info!(
        "fake CRI runtime serving on unix://{} (pod network {}, pull delay {})",
        socket.display(),
        args.pod_cidr,
        crate::util::duration::format_duration(args.pull_delay)
    );
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: stopping the fake runtime");
    }
    server.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_endpoints_must_be_absolute_unix_paths() {
        assert_eq!(
            socket_path("unix:///run/fake.sock").unwrap(),
            PathBuf::from("/run/fake.sock")
        );
        assert_eq!(
            socket_path("/run/f.sock").unwrap(),
            PathBuf::from("/run/f.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("relative.sock").is_err());
    }

    #[test]
    fn flags_configure_the_runtime_and_bad_ones_are_named() {
        let args = FakeRuntimeArgs::from_iter_safe([
            "fake-runtime",
            "--listen=/x.sock",
            "--pod-cidr=10.244.0.0/24",
            "--pull-delay=1s",
        ])
        .unwrap();
        let rt = runtime(&args).unwrap();
        assert_eq!(rt.pull_delay(), std::time::Duration::from_secs(1));
        let bad =
            FakeRuntimeArgs::from_iter_safe(["fake-runtime", "--listen=/x", "--pod-cidr=1.2.3"])
                .unwrap();
        let Err(e) = runtime(&bad) else {
            panic!("a bad --pod-cidr was accepted")
        };
        assert!(e.starts_with("--pod-cidr"), "{e}");
    }
}
