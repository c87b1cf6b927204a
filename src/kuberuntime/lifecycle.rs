//! Container lifecycle hooks (upstream `pkg/kubelet/lifecycle/handlers.go`): `postStart`
//! right after a container starts, `preStop` before it is stopped. A handler is an `exec`
//! (CRI `ExecSync` in the container), an `httpGet` (to the pod IP unless `host` is set) or a
//! `sleep`. Runs on the pod worker that starts or stops the container, bounded by a timeout.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use crate::cri::RuntimeService;
use crate::types::resolve_port;
use crate::util::http;

use super::labels::{pod_name, pod_namespace};

/// `User-Agent` of HTTP hooks, as upstream (`kube-lifecycle/<major>.<minor>`).
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.33";

/// Upstream's description of a pod in hook messages: `name_namespace(uid)`.
fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod_name(pod),
        pod_namespace(pod),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Runs one handler; `Err` holds the message upstream puts in the event.
pub fn run_handler(
    runtime: &dyn RuntimeService,
    container_id: &str,
    pod: &Pod,
    container: &Container,
    handler: &LifecycleHandler,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let shown = format!("{cmd:?}");
        let fail = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ({shown}) for Container \"{}\" in Pod \"{}\" failed - error: {error}, message: {:?}",
                container.name,
                pod_desc(pod),
                output
            )
        };
        let resp = runtime
            .exec_sync(container_id, &cmd, timeout)
            .map_err(|e| fail(e.to_string(), ""))?;
        if resp.get_exit_code() != 0 {
            let mut output = String::from_utf8_lossy(resp.get_stdout()).into_owned();
            output.push_str(&String::from_utf8_lossy(resp.get_stderr()));
            return Err(fail(
                format!(
                    "command '{}' exited with {}: {output}",
                    cmd.join(" "),
                    resp.get_exit_code()
                ),
                &output,
            ));
        }
        return Ok(());
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let fail = |error: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container \"{}\" in Pod \"{}\" failed - error: {error}",
                container.name,
                pod_desc(pod)
            )
        };
        let tls = get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let host = get
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| pod_ip.map(str::to_string))
            .ok_or_else(|| fail("the pod has no IP yet".into()))?;
        let port = resolve_port(&get.port, container).map_err(fail)?;
        let headers: Vec<(String, String)> = get
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        http::get(&http::HttpGet {
            host: &host,
            port,
            path: &path,
            headers: &headers,
            user_agent: HOOK_USER_AGENT,
            timeout,
            body_limit: 10 * 1024,
            tls,
        })
        .map_err(|e| fail(e.to_string()))?;
        // As upstream, any answer counts: only failing to get one is an error.
        return Ok(());
    }
    if let Some(sleep) = &handler.sleep {
        let secs = u64::try_from(sleep.seconds).unwrap_or(0);
        std::thread::sleep(Duration::from_secs(secs).min(timeout));
        return Ok(());
    }
    Err(format!(
        "Lifecycle hook for Container \"{}\" in Pod \"{}\" has no exec, httpGet or sleep action",
        container.name,
        pod_desc(pod)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::FakeRuntime;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::io::{Read, Write};

    fn pod() -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("team".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn exec_hook_failure_names_command_container_pod_and_output() {
        let rt = FakeRuntime::new();
        let image = rt.preload_image("docker.io/library/busybox:local");
        let mut sandbox_config = crate::cri::api::PodSandboxConfig::new();
        sandbox_config.mut_metadata().set_name("web".into());
        sandbox_config.mut_metadata().set_uid("u1".into());
        sandbox_config.mut_metadata().set_namespace("team".into());
        let sandbox = rt.run_pod_sandbox(&sandbox_config, "").unwrap();
        let mut config = crate::cri::api::ContainerConfig::new();
        config.mut_metadata().set_name("app".into());
        config.mut_image().set_image(image);
        let id = rt
            .create_container(&sandbox, &config, &sandbox_config)
            .unwrap();
        rt.start_container(&id).unwrap();
        rt.set_exec_result(b"bad config\n", b"", 2);
        let handler = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["/bin/check".into(), "-q".into()]),
            }),
            ..Default::default()
        };
        let err = run_handler(
            &rt,
            &id,
            &pod(),
            &container(),
            &handler,
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            err.starts_with(
                "Exec lifecycle hook ([\"/bin/check\", \"-q\"]) for Container \"app\" in Pod \"web_team(u1)\" failed - error: command '/bin/check -q' exited with 2: bad config"
            ),
            "{err}"
        );
        rt.set_exec_result(b"", b"", 0);
        assert!(run_handler(
            &rt,
            &id,
            &pod(),
            &container(),
            &handler,
            None,
            Duration::from_secs(1)
        )
        .is_ok());
    }

    #[test]
    fn http_hook_goes_to_the_pod_ip_and_named_port_and_fails_when_nothing_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let mut c = container();
        c.ports.as_mut().unwrap()[0].container_port = i32::from(port);
        let handler = LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/shutdown".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rt = FakeRuntime::new();
        run_handler(
            &rt,
            "c1",
            &pod(),
            &c,
            &handler,
            Some("127.0.0.1"),
            Duration::from_secs(5),
        )
        .expect("any answer counts");
        let sent = server.join().unwrap();
        assert!(sent.starts_with("GET /shutdown HTTP/1.1"), "{sent}");
        assert!(sent.contains("User-Agent: kube-lifecycle/1.33"), "{sent}");
        let err = run_handler(
            &rt,
            "c1",
            &pod(),
            &c,
            &handler,
            Some("127.0.0.1"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.starts_with("HTTP lifecycle hook (/shutdown) for Container \"app\" in Pod \"web_team(u1)\" failed - error: "), "{err}");
    }
}
