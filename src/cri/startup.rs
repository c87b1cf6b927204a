//! Start-up handshake with the container runtime, run once on the main thread
//! before the kubelet's loops start: wait (with backoff) until the runtime
//! answers `Version`, check it serves CRI v1, and log its conditions.

use std::time::{Duration, Instant};

use log::{info, warn};

use super::{api, CriError, RpcCode, RuntimeService};
use crate::util::backoff::Exponential;

/// The only CRI version rkubelet speaks.
const CRI_VERSION: &str = "v1";
/// First pause between `Version` attempts.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between `Version` attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Waits up to `max_wait` for the runtime to answer `Version`, retrying with
/// exponential backoff (250 ms doubling to 5 s) and logging each failure at warn.
///
/// Then checks the runtime serves CRI `v1` ([`CriError::UnsupportedVersion`]
/// if not, including a runtime without the `runtime.v1` service, which answers
/// `Unimplemented`; that is not retried) and logs the `Status` conditions
/// (RuntimeReady, NetworkReady, ...): info when true, warn when false. A failed
/// `Status` call is only logged: the runtime is up, and node status keeps
/// polling conditions later. Returns the runtime's `Version` answer, or the last
/// error when `max_wait` ran out.
pub fn wait_for_runtime(
    runtime: &dyn RuntimeService,
    max_wait: Duration,
) -> Result<api::VersionResponse, CriError> {
    wait_for_runtime_with(runtime, max_wait, &std::thread::sleep)
}

/// [`wait_for_runtime`] with the pause injected, so tests do not sleep.
fn wait_for_runtime_with(
    runtime: &dyn RuntimeService,
    max_wait: Duration,
    sleep: &dyn Fn(Duration),
) -> Result<api::VersionResponse, CriError> {
    let version = wait_for_version(runtime, max_wait, sleep)?;
    if version.runtime_api_version != CRI_VERSION {
        return Err(CriError::UnsupportedVersion {
            got: version.runtime_api_version,
        });
    }
    info!(
        "Container runtime {} {} serves CRI {}",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    match runtime.status(false) {
        Ok(status) => log_conditions(&status),
        Err(e) => warn!("Container runtime status unavailable: {e}"),
    }
    Ok(version)
}

/// Calls `Version` until it succeeds or `max_wait` is spent.
fn wait_for_version(
    runtime: &dyn RuntimeService,
    max_wait: Duration,
    sleep: &dyn Fn(Duration),
) -> Result<api::VersionResponse, CriError> {
    let start = Instant::now();
    // Time spent sleeping; with a real sleep this never exceeds the elapsed
    // time, with an injected one it stands in for it.
    let mut slept = Duration::ZERO;
    let mut backoff = Exponential::new(INITIAL_BACKOFF, MAX_BACKOFF);
    let mut attempt = 1u32;
    loop {
        let err = match runtime.version(CRI_VERSION) {
            Ok(version) => return Ok(version),
            Err(e) => e,
        };
        if err.code() == Some(RpcCode::Unimplemented) {
            return Err(CriError::UnsupportedVersion {
                got: format!("no runtime.v1 service: {err}"),
            });
        }
        let spent = start.elapsed().max(slept);
        let Some(left) = max_wait.checked_sub(spent).filter(|d| !d.is_zero()) else {
            warn!("Container runtime not ready after {attempt} attempts in {spent:?}, giving up: {err}");
            return Err(err);
        };
        let pause = backoff.next_delay().min(left);
        warn!("Container runtime not ready (attempt {attempt}), retrying in {pause:?}: {err}");
        sleep(pause);
        slept += pause;
        attempt += 1;
    }
}

/// Logs each runtime condition; the two required ones are flagged when missing.
fn log_conditions(status: &api::StatusResponse) {
    let conditions = status
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for required in ["RuntimeReady", "NetworkReady"] {
        if !conditions.iter().any(|c| c.field_type == required) {
            warn!("Container runtime did not report condition {required}");
        }
    }
    for c in conditions {
        if c.status {
            info!("Container runtime condition {}=true", c.field_type);
        } else {
            warn!(
                "Container runtime condition {}=false reason={:?} message={:?}",
                c.field_type, c.reason, c.message
            );
        }
    }
}

/// Attempts at `RuntimeConfig` before its error ends start-up, and the pause between them.
const RUNTIME_CONFIG_ATTEMPTS: u32 = 3;
const RUNTIME_CONFIG_PAUSE: Duration = Duration::from_secs(2);

/// The cgroup driver the runtime reports through CRI `RuntimeConfig` (upstream
/// `getCgroupDriverFromCRI`, 1.31 on): `Ok(None)` when the runtime does not implement the
/// call (older runtimes) or reports no Linux section; other errors are retried three times,
/// 2 s apart, as the runtime may still be starting.
pub fn runtime_cgroup_driver(
    runtime: &dyn RuntimeService,
) -> Result<Option<&'static str>, CriError> {
    runtime_cgroup_driver_with(runtime, &std::thread::sleep)
}

fn runtime_cgroup_driver_with(
    runtime: &dyn RuntimeService,
    sleep: &dyn Fn(Duration),
) -> Result<Option<&'static str>, CriError> {
    let mut attempt = 1;
    let config = loop {
        match runtime.runtime_config() {
            Ok(config) => break config,
            Err(e) if e.code() == Some(RpcCode::Unimplemented) => {
                info!(
                    "The runtime does not implement CRI RuntimeConfig: the cgroup driver \
                     comes from the kubelet's configuration"
                );
                return Ok(None);
            }
            Err(e) if attempt < RUNTIME_CONFIG_ATTEMPTS => {
                warn!("CRI RuntimeConfig (attempt {attempt}): {e}");
                attempt += 1;
                sleep(RUNTIME_CONFIG_PAUSE);
            }
            Err(e) => return Err(e),
        }
    };
    if !config.has_linux() {
        return Ok(None);
    }
    Ok(Some(match config.get_linux().get_cgroup_driver() {
        api::CgroupDriver::SYSTEMD => "systemd",
        api::CgroupDriver::CGROUPFS => "cgroupfs",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::FakeRuntime;
    use std::cell::RefCell;

    fn unavailable() -> CriError {
        CriError::Unavailable {
            method: "Version",
            message: "connection refused".into(),
        }
    }

    #[test]
    fn retries_with_backoff_until_the_runtime_answers() {
        let fake = FakeRuntime::new();
        for _ in 0..6 {
            fake.inject_error("Version", unavailable());
        }
        let pauses = RefCell::new(Vec::new());
        let v = wait_for_runtime_with(&fake, Duration::from_secs(60), &|d| {
            pauses.borrow_mut().push(d)
        })
        .unwrap();
        assert_eq!(v.runtime_api_version, "v1");
        let ms: Vec<u128> = pauses.borrow().iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 4000, 5000]);
        let calls = fake.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| **c == crate::cri::Call::Version)
                .count(),
            7
        );
        assert_eq!(calls.last(), Some(&crate::cri::Call::Status));
    }

    #[test]
    fn gives_up_after_max_wait_with_the_last_error() {
        let fake = FakeRuntime::new();
        for _ in 0..100 {
            fake.inject_error("Version", unavailable());
        }
        let pauses = RefCell::new(Vec::new());
        let err = wait_for_runtime_with(&fake, Duration::from_secs(3), &|d| {
            pauses.borrow_mut().push(d)
        })
        .unwrap_err();
        assert!(matches!(err, CriError::Unavailable { .. }), "{err:?}");
        let total: Duration = pauses.borrow().iter().sum();
        assert_eq!(total, Duration::from_secs(3));
        // 250 + 500 + 1000 + the 1250 left.
        assert_eq!(pauses.borrow().len(), 4);
    }

    #[test]
    fn rejects_other_api_versions() {
        let fake = FakeRuntime::new();
        fake.set_version("v1alpha2");
        let err = wait_for_runtime_with(&fake, Duration::from_secs(1), &|_| {}).unwrap_err();
        match err {
            CriError::UnsupportedVersion { got } => assert_eq!(got, "v1alpha2"),
            other => panic!("{other:?}"),
        }
        assert!(!fake.calls().contains(&crate::cri::Call::Status));
    }

    #[test]
    fn unimplemented_service_is_not_retried() {
        let fake = FakeRuntime::new();
        fake.inject_error(
            "Version",
            CriError::from_status(
                "Version",
                RpcCode::Unimplemented,
                "unknown service runtime.v1.RuntimeService",
                Duration::from_secs(10),
            ),
        );
        let err = wait_for_runtime_with(&fake, Duration::from_secs(60), &|_| {
            panic!("must not retry")
        })
        .unwrap_err();
        assert!(
            matches!(err, CriError::UnsupportedVersion { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn status_failure_is_only_logged() {
        let fake = FakeRuntime::new();
        fake.set_condition(
            "NetworkReady",
            false,
            "NetworkPluginNotReady",
            "cni config uninitialized",
        );
        fake.inject_error("Status", unavailable());
        let v = wait_for_runtime_with(&fake, Duration::from_secs(1), &|_| {}).unwrap();
        assert_eq!(v.runtime_api_version, "v1");
        // With the condition false and Status working, it still succeeds.
        let v = wait_for_runtime_with(&fake, Duration::from_secs(1), &|_| {}).unwrap();
        assert_eq!(v.runtime_api_version, "v1");
    }

    #[test]
    fn cgroup_driver_comes_from_runtime_config_when_implemented() {
        let fake = FakeRuntime::new();
        assert_eq!(runtime_cgroup_driver_with(&fake, &|_| {}).unwrap(), None);
        fake.set_cgroup_driver(Some(api::CgroupDriver::SYSTEMD));
        assert_eq!(
            runtime_cgroup_driver_with(&fake, &|_| {}).unwrap(),
            Some("systemd")
        );
        fake.set_cgroup_driver(Some(api::CgroupDriver::CGROUPFS));
        // Transient errors are retried; a third one ends start-up.
        let slept = RefCell::new(0);
        fake.inject_error("RuntimeConfig", unavailable());
        fake.inject_error("RuntimeConfig", unavailable());
        let driver = runtime_cgroup_driver_with(&fake, &|_| *slept.borrow_mut() += 1).unwrap();
        assert_eq!((driver, *slept.borrow()), (Some("cgroupfs"), 2));
        for _ in 0..3 {
            fake.inject_error("RuntimeConfig", unavailable());
        }
        assert!(runtime_cgroup_driver_with(&fake, &|_| {}).is_err());
    }
}
