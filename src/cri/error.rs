//! `CriError`: every failure of a CRI call, from the remote (grpcio) client or
//! the fake, with the RPC name and the runtime's own message.
//!
//! Errors that carry a gRPC status print like Go gRPC errors,
//! `rpc error: code = Unknown desc = <runtime message>`, because users and tools
//! match on that text in events and pod statuses (for example
//! `Failed to pull image "x": rpc error: code = NotFound desc = failed to pull and unpack image ...`).
//! Which errors are worth an immediate retry is decided in one place,
//! [`CriError::is_retriable`].

use std::fmt;
use std::time::Duration;

/// A gRPC status code, spelled as Go's `codes.Code` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcCode {
    /// The call was cancelled (usually by the caller).
    Canceled,
    /// The runtime failed without a more specific code (containerd's default).
    Unknown,
    /// The request is malformed.
    InvalidArgument,
    /// The deadline passed before the call completed.
    DeadlineExceeded,
    /// The object (sandbox, container, image) does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A quota or size limit was hit.
    ResourceExhausted,
    /// The object is not in the state the call needs.
    FailedPrecondition,
    /// A concurrency conflict.
    Aborted,
    /// An argument is out of range.
    OutOfRange,
    /// The runtime does not implement the RPC (or the service).
    Unimplemented,
    /// An invariant broke inside the runtime or gRPC.
    Internal,
    /// The runtime cannot be reached right now.
    Unavailable,
    /// Unrecoverable data loss.
    DataLoss,
    /// The caller is not authenticated.
    Unauthenticated,
    /// A code outside the 1..=16 range.
    Other(i32),
}

impl RpcCode {
    /// The code for a numeric gRPC status (0, OK, is mapped to `Other(0)`).
    pub fn from_i32(code: i32) -> RpcCode {
        match code {
            1 => RpcCode::Canceled,
            2 => RpcCode::Unknown,
            3 => RpcCode::InvalidArgument,
            4 => RpcCode::DeadlineExceeded,
            5 => RpcCode::NotFound,
            6 => RpcCode::AlreadyExists,
            7 => RpcCode::PermissionDenied,
            8 => RpcCode::ResourceExhausted,
            9 => RpcCode::FailedPrecondition,
            10 => RpcCode::Aborted,
            11 => RpcCode::OutOfRange,
            12 => RpcCode::Unimplemented,
            13 => RpcCode::Internal,
            14 => RpcCode::Unavailable,
            15 => RpcCode::DataLoss,
            16 => RpcCode::Unauthenticated,
            other => RpcCode::Other(other),
        }
    }
}

impl fmt::Display for RpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RpcCode::Canceled => "Canceled",
            RpcCode::Unknown => "Unknown",
            RpcCode::InvalidArgument => "InvalidArgument",
            RpcCode::DeadlineExceeded => "DeadlineExceeded",
            RpcCode::NotFound => "NotFound",
            RpcCode::AlreadyExists => "AlreadyExists",
            RpcCode::PermissionDenied => "PermissionDenied",
            RpcCode::ResourceExhausted => "ResourceExhausted",
            RpcCode::FailedPrecondition => "FailedPrecondition",
            RpcCode::Aborted => "Aborted",
            RpcCode::OutOfRange => "OutOfRange",
            RpcCode::Unimplemented => "Unimplemented",
            RpcCode::Internal => "Internal",
            RpcCode::Unavailable => "Unavailable",
            RpcCode::DataLoss => "DataLoss",
            RpcCode::Unauthenticated => "Unauthenticated",
            RpcCode::Other(n) => return write!(f, "Code({n})"),
        };
        f.write_str(name)
    }
}

/// A failed CRI call, or a CRI endpoint or runtime we cannot use.
///
/// `method` is the CRI RPC name (`"RunPodSandbox"`, `"PullImage"`, ...).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CriError {
    /// The `--container-runtime-endpoint` (or image endpoint) is not usable.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The runtime answered with a gRPC status not covered by the variants below.
    #[error("rpc error: code = {code} desc = {message}")]
    Rpc {
        /// The CRI RPC.
        method: &'static str,
        /// The status code.
        code: RpcCode,
        /// The runtime's message, verbatim.
        message: String,
    },
    /// The object named in the call does not exist (status `NotFound`).
    #[error("rpc error: code = NotFound desc = {message}")]
    NotFound {
        /// The CRI RPC.
        method: &'static str,
        /// The runtime's message, verbatim.
        message: String,
    },
    /// The runtime cannot be reached: socket missing, runtime restarting, connection dropped.
    #[error("rpc error: code = Unavailable desc = {message}")]
    Unavailable {
        /// The CRI RPC.
        method: &'static str,
        /// gRPC's or the runtime's message.
        message: String,
    },
    /// The call did not finish within its deadline. Prints Go's wording
    /// (`context deadline exceeded`) followed by the deadline.
    #[error(
        "rpc error: code = DeadlineExceeded desc = context deadline exceeded (timeout {timeout:?})"
    )]
    DeadlineExceeded {
        /// The CRI RPC.
        method: &'static str,
        /// The deadline the call carried.
        timeout: Duration,
    },
    /// The runtime does not serve CRI v1.
    #[error("the container runtime does not serve CRI v1 (it reports {got:?})")]
    UnsupportedVersion {
        /// The API version the runtime reported, or a note on what it lacks.
        got: String,
    },
    /// The runtime answered, but left a field empty that CRI says must be set.
    #[error("invalid {method} response from the runtime: {field} is not set")]
    InvalidResponse {
        /// The CRI RPC.
        method: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A request or response could not be encoded or decoded.
    #[error("{method}: cannot encode or decode the message: {message}")]
    Codec {
        /// The CRI RPC.
        method: &'static str,
        /// The codec's message.
        message: String,
    },
    /// gRPC failed locally without a status (call setup, shut-down queue, ...).
    #[error("{method}: grpc failure: {message}")]
    Transport {
        /// The CRI RPC.
        method: &'static str,
        /// grpcio's description.
        message: String,
    },
}

impl CriError {
    /// The error for a gRPC status `code` with the runtime's `message`: statuses
    /// callers branch on get their own variant, the rest become `Rpc`.
    /// `timeout` is the deadline the call carried (kept for `DeadlineExceeded`,
    /// whose message is always gRPC's own and is dropped).
    pub fn from_status(
        method: &'static str,
        code: RpcCode,
        message: impl Into<String>,
        timeout: Duration,
    ) -> CriError {
        let message = message.into();
        match code {
            RpcCode::NotFound => CriError::NotFound { method, message },
            RpcCode::Unavailable => CriError::Unavailable { method, message },
            RpcCode::DeadlineExceeded => CriError::DeadlineExceeded { method, timeout },
            code => CriError::Rpc {
                method,
                code,
                message,
            },
        }
    }

    /// Maps any grpcio error of a call to `method` (made with deadline
    /// `timeout`) into a `CriError`. The one place grpcio errors are interpreted.
    pub fn from_grpc(method: &'static str, timeout: Duration, err: grpcio::Error) -> CriError {
        match err {
            grpcio::Error::RpcFailure(status) | grpcio::Error::RpcFinished(Some(status)) => {
                let code = RpcCode::from_i32(status.code().into());
                CriError::from_status(method, code, status.message(), timeout)
            }
            // The stream ended without a status: the connection went away.
            grpcio::Error::RpcFinished(None) | grpcio::Error::RemoteStopped => {
                CriError::Unavailable {
                    method,
                    message: "connection closed before the call finished".to_string(),
                }
            }
            grpcio::Error::Codec(e) => CriError::Codec {
                method,
                message: e.to_string(),
            },
            other => CriError::Transport {
                method,
                message: other.to_string(),
            },
        }
    }

    /// Whether repeating the same call soon, unchanged, may succeed.
    ///
    /// Yes for a runtime that is down, restarting, slow or briefly busy:
    /// `Unavailable`, `DeadlineExceeded`, and the statuses `ResourceExhausted`,
    /// `Aborted` and `Canceled`. No for everything that says the request or the
    /// object is wrong (`InvalidArgument`, `NotFound`, `AlreadyExists`,
    /// `FailedPrecondition`, `Unimplemented`, ...), and no for `Unknown`:
    /// containerd reports most real failures (a pull of a missing image, a
    /// reserved name, a failed `runc create`) as `Unknown`, and hammering it again
    /// at once does not help; the caller's own backoff (CrashLoopBackOff,
    /// ImagePullBackOff, the next sync) paces those.
    pub fn is_retriable(&self) -> bool {
        match self {
            CriError::Unavailable { .. } | CriError::DeadlineExceeded { .. } => true,
            CriError::Rpc { code, .. } => matches!(
                code,
                RpcCode::ResourceExhausted | RpcCode::Aborted | RpcCode::Canceled
            ),
            CriError::InvalidEndpoint { .. }
            | CriError::NotFound { .. }
            | CriError::UnsupportedVersion { .. }
            | CriError::InvalidResponse { .. }
            | CriError::Codec { .. }
            | CriError::Transport { .. } => false,
        }
    }

    /// Whether the runtime said the sandbox, container or image does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::NotFound { .. })
    }

    /// The CRI RPC that failed; `None` for errors that are not about one call.
    pub fn method(&self) -> Option<&'static str> {
        match self {
            CriError::Rpc { method, .. }
            | CriError::NotFound { method, .. }
            | CriError::Unavailable { method, .. }
            | CriError::DeadlineExceeded { method, .. }
            | CriError::InvalidResponse { method, .. }
            | CriError::Codec { method, .. }
            | CriError::Transport { method, .. } => Some(method),
            CriError::UnsupportedVersion { .. } => Some("Version"),
            CriError::InvalidEndpoint { .. } => None,
        }
    }

    /// The gRPC status code, for errors that came with one.
    pub fn code(&self) -> Option<RpcCode> {
        match self {
            CriError::Rpc { code, .. } => Some(*code),
            CriError::NotFound { .. } => Some(RpcCode::NotFound),
            CriError::Unavailable { .. } => Some(RpcCode::Unavailable),
            CriError::DeadlineExceeded { .. } => Some(RpcCode::DeadlineExceeded),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpcio::{RpcStatus, RpcStatusCode};

    const T: Duration = Duration::from_secs(10);

    fn failure(code: RpcStatusCode, message: &str) -> grpcio::Error {
        grpcio::Error::RpcFailure(RpcStatus::with_message(code, message.to_string()))
    }

    #[test]
    fn display_reads_like_go_grpc() {
        let msg = "failed to pull and unpack image \"docker.io/library/x:latest\": failed to resolve reference";
        let err = CriError::from_grpc("PullImage", T, failure(RpcStatusCode::UNKNOWN, msg));
        assert_eq!(
            err.to_string(),
            format!("rpc error: code = Unknown desc = {msg}")
        );
        let err = CriError::from_grpc(
            "ContainerStatus",
            T,
            failure(RpcStatusCode::NOT_FOUND, "an error occurred: not found"),
        );
        assert_eq!(
            err.to_string(),
            "rpc error: code = NotFound desc = an error occurred: not found"
        );
        let err = CriError::from_status("Version", RpcCode::Other(42), "odd", T);
        assert_eq!(err.to_string(), "rpc error: code = Code(42) desc = odd");
        let err = CriError::from_status("Version", RpcCode::Canceled, "gone", T);
        assert_eq!(err.to_string(), "rpc error: code = Canceled desc = gone");
    }

    #[test]
    fn grpc_errors_map_to_variants() {
        let cases: Vec<(grpcio::Error, Option<RpcCode>, bool, bool)> = vec![
            // (error, code, retriable, not found)
            (
                failure(RpcStatusCode::UNAVAILABLE, "connect failed"),
                Some(RpcCode::Unavailable),
                true,
                false,
            ),
            (
                failure(RpcStatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"),
                Some(RpcCode::DeadlineExceeded),
                true,
                false,
            ),
            (
                failure(RpcStatusCode::RESOURCE_EXHAUSTED, "busy"),
                Some(RpcCode::ResourceExhausted),
                true,
                false,
            ),
            (
                failure(RpcStatusCode::ABORTED, "conflict"),
                Some(RpcCode::Aborted),
                true,
                false,
            ),
            (
                failure(RpcStatusCode::CANCELLED, "cancelled"),
                Some(RpcCode::Canceled),
                true,
                false,
            ),
            (
                failure(RpcStatusCode::UNKNOWN, "runc create failed"),
                Some(RpcCode::Unknown),
                false,
                false,
            ),
            (
                failure(RpcStatusCode::INVALID_ARGUMENT, "bad"),
                Some(RpcCode::InvalidArgument),
                false,
                false,
            ),
            (
                failure(RpcStatusCode::NOT_FOUND, "not found"),
                Some(RpcCode::NotFound),
                false,
                true,
            ),
            (
                failure(RpcStatusCode::ALREADY_EXISTS, "exists"),
                Some(RpcCode::AlreadyExists),
                false,
                false,
            ),
            (
                failure(RpcStatusCode::FAILED_PRECONDITION, "state"),
                Some(RpcCode::FailedPrecondition),
                false,
                false,
            ),
            (
                failure(RpcStatusCode::UNIMPLEMENTED, "unknown service"),
                Some(RpcCode::Unimplemented),
                false,
                false,
            ),
            (
                failure(RpcStatusCode::INTERNAL, "bug"),
                Some(RpcCode::Internal),
                false,
                false,
            ),
            (
                grpcio::Error::RpcFinished(Some(RpcStatus::new(RpcStatusCode::UNAVAILABLE))),
                Some(RpcCode::Unavailable),
                true,
                false,
            ),
            (
                grpcio::Error::RpcFinished(None),
                Some(RpcCode::Unavailable),
                true,
                false,
            ),
            (
                grpcio::Error::RemoteStopped,
                Some(RpcCode::Unavailable),
                true,
                false,
            ),
            (grpcio::Error::QueueShutdown, None, false, false),
            (grpcio::Error::Codec("truncated".into()), None, false, false),
        ];
        for (grpc, code, retriable, not_found) in cases {
            let shown = format!("{grpc:?}");
            let err = CriError::from_grpc("ListContainers", T, grpc);
            assert_eq!(err.code(), code, "{shown}");
            assert_eq!(err.is_retriable(), retriable, "{shown}");
            assert_eq!(err.is_not_found(), not_found, "{shown}");
            assert_eq!(err.method(), Some("ListContainers"), "{shown}");
        }
    }

    #[test]
    fn deadline_keeps_the_timeout() {
        let err = CriError::from_grpc(
            "StopContainer",
            Duration::from_secs(32),
            failure(RpcStatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"),
        );
        match &err {
            CriError::DeadlineExceeded { timeout, .. } => {
                assert_eq!(*timeout, Duration::from_secs(32))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded (timeout 32s)"
        );
    }

    #[test]
    fn errors_without_a_call() {
        let err = CriError::InvalidEndpoint {
            endpoint: "tcp://x".into(),
            reason: "only unix sockets are supported".into(),
        };
        assert_eq!(err.method(), None);
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("tcp://x"));
        let err = CriError::UnsupportedVersion {
            got: "v1alpha2".into(),
        };
        assert_eq!(err.method(), Some("Version"));
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("v1alpha2"));
    }

    #[test]
    fn code_numbers_round_trip() {
        for n in 1..=16 {
            let code = RpcCode::from_i32(n);
            assert!(!matches!(code, RpcCode::Other(_)), "{n}");
        }
        assert_eq!(RpcCode::from_i32(0), RpcCode::Other(0));
        assert_eq!(RpcCode::from_i32(2).to_string(), "Unknown");
    }
}
