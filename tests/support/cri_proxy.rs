//! A CRI proxy for fault tests: a gRPC server on a unix socket that passes every unary
//! `RuntimeService` and `ImageService` call to a real runtime as raw bytes, and holds chosen
//! calls (by method, and optionally by a string their request carries, such as a pod name)
//! until the test releases them. A held call goes to the runtime only when released, so a
//! caller that gave up at its deadline sees the call take effect later, as with a runtime
//! that is slow rather than down.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use grpcio::{
    CallOption, ChannelBuilder, Client, GrpcSlice, Marshaller, MessageReader, Method, MethodType,
    RpcContext, RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, ServiceBuilder,
    UnarySink,
};

/// The unary RPCs passed through (streaming ones are answered UNIMPLEMENTED by the server).
const RUNTIME_RPCS: &[&str] = &[
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
];
const IMAGE_RPCS: &[&str] = &[
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// How long a released call may take at the runtime.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

// The marshaller's signature is grpcio's `SerializeFn<Vec<u8>>`.
#[allow(clippy::ptr_arg)]
fn ser_raw(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.clone());
    Ok(())
}

fn de_raw(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(out)
}

/// Messages as raw bytes, for calls passed through unread.
pub const RAW: Marshaller<Vec<u8>> = Marshaller {
    ser: ser_raw,
    de: de_raw,
};

fn raw_method(name: &'static str) -> Method<Vec<u8>, Vec<u8>> {
    Method {
        ty: MethodType::Unary,
        name,
        req_mar: RAW,
        resp_mar: RAW,
    }
}

/// A rule: calls of `method` (its short name, `RunPodSandbox`) whose request holds `marker`.
#[derive(Clone, Debug)]
struct Hold {
    method: String,
    marker: Vec<u8>,
}

#[derive(Default)]
struct State {
    holds: Vec<Hold>,
    /// Bumped by `release`: held calls with an older generation go on.
    generation: u64,
    /// Calls held so far, by method.
    held: Vec<String>,
    /// Calls passed so far, by method.
    passed: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    backend: Client,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while a hold matches the call, then records it as passed.
    fn wait_turn(&self, method: &str, request: &[u8]) {
        let mut state = self.lock();
        let matches = |s: &State| {
            s.holds.iter().any(|h| {
                h.method == method
                    && (h.marker.is_empty()
                        || request.windows(h.marker.len()).any(|w| w == h.marker))
            })
        };
        if matches(&state) {
            state.held.push(method.to_string());
            let generation = state.generation;
            while state.generation == generation && matches(&state) {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        state.passed.push(method.to_string());
    }
}

pub struct CriProxy {
    shared: Arc<Shared>,
    server: grpcio::Server,
    socket: PathBuf,
}

impl CriProxy {
    /// Serves on `socket`, passing calls to the runtime at `backend` (`unix://...`).
    pub fn start(socket: &Path, backend: &str) -> CriProxy {
        let _ = std::fs::remove_file(socket);
        let env = rkubelet::util::grpc_env();
        let channel = ChannelBuilder::new(env.clone()).connect(backend);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            backend: Client::new(channel),
        });
        let mut builder = ServerBuilder::new(env);
        for (service, rpcs) in [
            ("runtime.v1.RuntimeService", RUNTIME_RPCS),
            ("runtime.v1.ImageService", IMAGE_RPCS),
        ] {
            let mut svc = ServiceBuilder::new();
            for rpc in rpcs {
                let full: &'static str = Box::leak(format!("/{service}/{rpc}").into_boxed_str());
                let method = raw_method(full);
                let shared = Arc::clone(&shared);
                let short = rpc.to_string();
                svc = svc.add_unary_handler(
                    &method,
                    move |_ctx: RpcContext<'_>, req: Vec<u8>, sink: UnarySink<Vec<u8>>| {
                        let (shared, short) = (Arc::clone(&shared), short.clone());
                        // Off the completion queue: a held call must not hold the others.
                        std::thread::spawn(move || forward(&shared, full, &short, req, sink));
                    },
                );
            }
            builder = builder.register_service(svc.build());
        }
        let mut server = builder.build().unwrap();
        server
            .add_listening_port(
                format!("unix://{}", socket.display()),
                ServerCredentials::insecure(),
            )
            .unwrap();
        server.start();
        CriProxy {
            shared,
            server,
            socket: socket.to_path_buf(),
        }
    }

    /// The endpoint to give the kubelet.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Holds every later call of `method` whose request carries `marker` (any, when empty).
    pub fn hold(&self, method: &str, marker: &str) {
        self.shared.lock().holds.push(Hold {
            method: method.to_string(),
            marker: marker.as_bytes().to_vec(),
        });
    }

    /// Ends every hold; the held calls go on to the runtime.
    pub fn release(&self) {
        let mut state = self.shared.lock();
        state.holds.clear();
        state.generation += 1;
        self.shared.changed.notify_all();
    }

    /// How many calls of `method` were held so far.
    pub fn held(&self, method: &str) -> usize {
        self.shared
            .lock()
            .held
            .iter()
            .filter(|m| *m == method)
            .count()
    }

    /// How many calls of `method` went to the runtime so far.
    pub fn passed(&self, method: &str) -> usize {
        self.shared
            .lock()
            .passed
            .iter()
            .filter(|m| *m == method)
            .count()
    }
}

fn forward(
    shared: &Shared,
    full: &'static str,
    short: &str,
    req: Vec<u8>,
    sink: UnarySink<Vec<u8>>,
) {
    shared.wait_turn(short, &req);
    let method = raw_method(full);
    let answer = shared.backend.unary_call(
        &method,
        &req,
        CallOption::default().timeout(FORWARD_TIMEOUT),
    );
    // The caller may have given up meanwhile: its sink then fails, which is fine.
    let _ = match answer {
        Ok(resp) => futures_executor::block_on(sink.success(resp)),
        Err(grpcio::Error::RpcFailure(status)) => futures_executor::block_on(sink.fail(status)),
        Err(e) => futures_executor::block_on(sink.fail(RpcStatus::with_message(
            RpcStatusCode::UNAVAILABLE,
            format!("proxy: {e}"),
        ))),
    };
}

impl Drop for CriProxy {
    fn drop(&mut self) {
        self.release();
        let _ = futures_executor::block_on(self.server.shutdown());
    }
}
