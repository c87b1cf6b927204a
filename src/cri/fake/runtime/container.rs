//! The container calls of [`FakeRuntime`]: create, start, stop, remove, status, list and
//! `ExecSync`, with containerd's states, exit codes, name reservations and errors.

use std::time::{Duration, Instant};

use crate::cri::api::{self, ContainerState, PodSandboxState};
use crate::cri::fake::{
    exit, labels_match, not_found, unknown, Call, Container, FakeRuntime, State, POD_UID_LABEL,
};
use crate::cri::CriError;

/// `CreateContainer`: needs a READY sandbox and the image on the node; reserves the name.
pub(super) fn create(
    fake: &FakeRuntime,
    pod_sandbox_id: &str,
    config: &api::ContainerConfig,
) -> Result<String, CriError> {
    const M: &str = "CreateContainer";
    let meta = config.get_metadata();
    let mut st = fake.begin(M, || Call::CreateContainer {
        sandbox: pod_sandbox_id.to_string(),
        name: meta.name.clone(),
    })?;
    if config.metadata.is_none() {
        return Err(unknown(M, "container config must include metadata".into()));
    }
    let sandbox = st
        .sandboxes
        .get(pod_sandbox_id)
        .ok_or_else(|| CriError::NotFound {
            method: M,
            message: format!("failed to find sandbox id {pod_sandbox_id:?}: not found"),
        })?;
    if sandbox.status.state != PodSandboxState::SANDBOX_READY {
        return Err(CriError::NotFound {
            method: M,
            message: format!("failed to get sandbox container task: no running task found: task {pod_sandbox_id} not found: not found"),
        });
    }
    let pod = sandbox.status.get_metadata();
    let name = format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    );
    let log_path = if config.log_path.is_empty() {
        String::new()
    } else {
        format!(
            "{}/{}",
            sandbox.log_directory.trim_end_matches('/'),
            config.log_path
        )
    };
    let image_name = &config.get_image().image;
    let image = st
        .find_image(image_name)
        .cloned()
        .ok_or_else(|| CriError::NotFound {
            method: M,
            message: format!("failed to resolve image {image_name:?}: not found"),
        })?;
    if let Some(holder) = st.container_names.get(&name) {
        return Err(unknown(
            M,
            format!(
            "failed to reserve container name {name:?}: name {name:?} is reserved for {holder:?}"
        ),
        ));
    }
    let id = st.new_id();
    let mut status = api::ContainerStatus::new();
    status.id = id.clone();
    status.set_metadata(meta.clone());
    status.state = ContainerState::CONTAINER_CREATED;
    status.created_at = st.now();
    let mut spec = api::ImageSpec::new();
    spec.image = image
        .repo_tags
        .first()
        .cloned()
        .unwrap_or_else(|| image.id.clone());
    status.set_image(spec);
    status.image_ref = image
        .repo_digests
        .first()
        .cloned()
        .unwrap_or_else(|| image.id.clone());
    status.image_id = image.id;
    status.labels = config.labels.clone();
    status.annotations = config.annotations.clone();
    status.mounts = config.mounts.clone();
    status.log_path = log_path;
    st.container_names.insert(name.clone(), id.clone());
    let container = Container {
        status,
        sandbox_id: pod_sandbox_id.to_string(),
        name,
        image_spec: config.get_image().clone(),
        planned_exit: None,
        config: fake.record_calls.then(|| Box::new(config.clone())),
    };
    if let Some(uid) = config.labels.get(POD_UID_LABEL) {
        st.by_pod
            .entry(uid.clone())
            .or_default()
            .containers
            .insert(id.clone());
    }
    st.containers.insert(id.clone(), container);
    Ok(id)
}

/// `StartContainer`: a CREATED container in a READY sandbox runs, with its exit planned
/// when its pod asks for one.
pub(super) fn start(fake: &FakeRuntime, container_id: &str) -> Result<(), CriError> {
    const M: &str = "StartContainer";
    let mut st = match fake.begin(M, || Call::StartContainer(container_id.to_string())) {
        Ok(st) => st,
        // As containerd: a start that failed in the runtime leaves the container exited
        // (StartError, 128); one that never reached it (the connection) leaves it created.
        Err(e) => {
            let reached = !matches!(
                e,
                CriError::Unavailable { .. } | CriError::DeadlineExceeded { .. }
            );
            if reached {
                let mut st = fake.lock();
                let now = st.now();
                if let Some(c) = st.containers.get_mut(container_id) {
                    exit(&mut c.status, now, 128, "StartError");
                    c.status.message = e.to_string();
                }
            }
            return Err(e);
        }
    };
    let now = st.now();
    let st = &mut *st;
    let c = st
        .containers
        .get_mut(container_id)
        .ok_or_else(|| not_found(M, "container", container_id))?;
    if c.status.state != ContainerState::CONTAINER_CREATED {
        return Err(unknown(M, format!(
            "failed to set starting state for container {container_id:?}: container is in {:?} state",
            c.status.state
        )));
    }
    let ready = st
        .sandboxes
        .get(&c.sandbox_id)
        .is_some_and(|s| s.status.state == PodSandboxState::SANDBOX_READY);
    if !ready {
        return Err(unknown(
            M,
            format!("sandbox container {:?} is not running", c.sandbox_id),
        ));
    }
    c.status.state = ContainerState::CONTAINER_RUNNING;
    c.status.started_at = now;
    st.plan_exit(container_id, now);
    Ok(())
}

/// `StopContainer`: exit 143 (SIGTERM) within a grace period, 137 (SIGKILL) without one or,
/// once the period is waited out, for a container that ignores SIGTERM.
pub(super) fn stop(
    fake: &FakeRuntime,
    container_id: &str,
    timeout_secs: i64,
) -> Result<(), CriError> {
    let mut st = fake.begin("StopContainer", || {
        Call::StopContainer(container_id.to_string())
    })?;
    st.stop_grace.insert(container_id.to_string(), timeout_secs);
    let ignores_sigterm = st.ignores_sigterm(container_id);
    let running = |st: &State| {
        st.containers
            .get(container_id)
            .is_some_and(|c| c.status.state == ContainerState::CONTAINER_RUNNING)
    };
    if !st.containers.contains_key(container_id) {
        return Err(not_found("StopContainer", "container", container_id));
    }
    if ignores_sigterm && timeout_secs > 0 && running(&st) {
        // SIGTERM is ignored: the stop waits out the grace period (or a concurrent stop
        // with a shorter one, or an exit of the container's own), then SIGKILLs.
        let grace = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
        let deadline = Instant::now() + grace.min(Duration::from_secs(3600));
        while running(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = fake
                .exited
                .wait_timeout(st, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            st.run_planned_exits();
        }
    }
    let now = st.now();
    if let Some(c) = st.containers.get_mut(container_id) {
        if c.status.state == ContainerState::CONTAINER_RUNNING {
            // SIGTERM (143) within a grace period, SIGKILL (137) without one (or when
            // SIGTERM was ignored).
            let code = if timeout_secs > 0 && !ignores_sigterm {
                143
            } else {
                137
            };
            exit(&mut c.status, now, code, "Error");
            fake.exited.notify_all();
        }
    }
    Ok(())
}

/// `RemoveContainer`: unknown ids are not an error.
pub(super) fn remove(fake: &FakeRuntime, container_id: &str) -> Result<(), CriError> {
    let mut st = fake.begin("RemoveContainer", || {
        Call::RemoveContainer(container_id.to_string())
    })?;
    if let Some(c) = st.containers.remove(container_id) {
        st.container_names.remove(&c.name);
        st.stop_grace.remove(container_id);
        st.unindex(&c.status.labels, container_id, false);
    }
    Ok(())
}

/// `ReopenContainerLog`: as containerd, only for a running container. The fake writes no
/// log files, so there is nothing to reopen beyond the checks.
pub(super) fn reopen_log(fake: &FakeRuntime, container_id: &str) -> Result<(), CriError> {
    const M: &str = "ReopenContainerLog";
    let st = fake.begin(M, || Call::ReopenContainerLog(container_id.to_string()))?;
    let c = st
        .containers
        .get(container_id)
        .ok_or_else(|| not_found(M, "container", container_id))?;
    if c.status.state != ContainerState::CONTAINER_RUNNING {
        return Err(unknown(M, "container is not running".to_string()));
    }
    Ok(())
}

/// `ListContainers`, through the pod index when the filter names a pod.
/// `ListContainers`; with `brief`, as a brief listing keeping those labels (see
/// [`crate::cri::brief`]).
pub(super) fn list(
    fake: &FakeRuntime,
    filter: Option<&api::ContainerFilter>,
    brief: Option<&[&str]>,
) -> Result<Vec<api::Container>, CriError> {
    let st = fake.begin("ListContainers", || Call::ListContainers)?;
    let matches = |c: &Container| {
        filter.is_none_or(|f| {
            (f.id.is_empty() || f.id == c.status.id)
                && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.sandbox_id)
                && f.state.as_ref().is_none_or(|v| v.state == c.status.state)
                && labels_match(&f.label_selector, &c.status.labels)
        })
    };
    let candidates: Vec<&Container> = match st.pod_candidates(filter.map(|f| &f.label_selector)) {
        Some(index) => index
            .containers
            .iter()
            .filter_map(|id| st.containers.get(id))
            .collect(),
        None if filter.is_some_and(|f| f.label_selector.contains_key(POD_UID_LABEL)) => Vec::new(),
        None => st.containers.values().collect(),
    };
    let items = candidates
        .into_iter()
        .filter(|c| matches(c))
        .map(|c| {
            let s = &c.status;
            let mut out = api::Container::new();
            out.id = s.id.clone();
            out.pod_sandbox_id = c.sandbox_id.clone();
            out.metadata = s.metadata.clone();
            out.state = s.state;
            out.created_at = s.created_at;
            if let Some(keep) = brief {
                out.labels = crate::cri::brief::kept_labels(&s.labels, keep);
                return out;
            }
            out.set_image(c.image_spec.clone());
            out.image_ref = s.image_id.clone();
            out.image_id = s.image_id.clone();
            out.labels = s.labels.clone();
            out.annotations = s.annotations.clone();
            out
        })
        .collect();
    Ok(items)
}

/// `ContainerStatus`.
pub(super) fn status(
    fake: &FakeRuntime,
    container_id: &str,
    verbose: bool,
) -> Result<api::ContainerStatusResponse, CriError> {
    let st = fake.begin("ContainerStatus", || {
        Call::ContainerStatus(container_id.to_string())
    })?;
    let c = st
        .containers
        .get(container_id)
        .ok_or_else(|| not_found("ContainerStatus", "container", container_id))?;
    let mut resp = api::ContainerStatusResponse::new();
    resp.set_status(c.status.clone());
    if verbose {
        let info = format!("{{\"sandboxID\":{:?}}}", c.sandbox_id);
        resp.info.insert("info".to_string(), info);
    }
    Ok(resp)
}

/// `ExecSync`: the preset result, in a RUNNING container only.
pub(super) fn exec_sync(
    fake: &FakeRuntime,
    container_id: &str,
    cmd: &[String],
) -> Result<api::ExecSyncResponse, CriError> {
    let st = fake.begin("ExecSync", || Call::ExecSync {
        container: container_id.to_string(),
        cmd: cmd.to_vec(),
    })?;
    let c = st
        .containers
        .get(container_id)
        .ok_or_else(|| not_found("ExecSync", "container", container_id))?;
    if c.status.state != ContainerState::CONTAINER_RUNNING {
        return Err(unknown(
            "ExecSync",
            format!("container is in {:?} state", c.status.state),
        ));
    }
    Ok(st.exec_result.clone())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::{setup, state, IMAGE};
    use crate::cri::api::{self, ContainerState};
    use crate::cri::fake::fixtures::{container_config, sandbox_config};
    use crate::cri::{Call, FakeRuntime, RpcCode, RuntimeService};

    #[test]
    fn annotated_containers_exit_by_themselves_with_their_code() {
        let fake = FakeRuntime::new();
        fake.allow_any_image();
        fake.set_pod_network("10.244.7.0/24").unwrap();
        let mut cfg = sandbox_config("job", "uid-job", 0);
        cfg.annotations
            .insert(crate::cri::EXIT_AFTER_ANNOTATION.into(), "200ms".into());
        cfg.annotations
            .insert(crate::cri::EXIT_CODE_ANNOTATION.into(), "1".into());
        cfg.annotations.insert(
            format!("{}.side", crate::cri::EXIT_AFTER_ANNOTATION),
            "1h".into(),
        );
        let sb = fake.run_pod_sandbox(&cfg, "").unwrap();
        let ip = fake
            .pod_sandbox_status(&sb, false)
            .unwrap()
            .get_status()
            .get_network()
            .ip
            .clone();
        assert!(ip.starts_with("10.244.7."), "{ip}");
        let mut image = api::ImageSpec::new();
        image.image = "registry.example/any:1".into();
        crate::cri::ImageService::pull_image(&fake, &image, None, None).unwrap();
        let main = fake
            .create_container(
                &sb,
                &container_config("main", "registry.example/any:1"),
                &cfg,
            )
            .unwrap();
        let side = fake
            .create_container(
                &sb,
                &container_config("side", "registry.example/any:1"),
                &cfg,
            )
            .unwrap();
        fake.start_container(&main).unwrap();
        fake.start_container(&side).unwrap();
        assert_eq!(state(&fake, &main), ContainerState::CONTAINER_RUNNING);
        std::thread::sleep(Duration::from_millis(300));
        let status = fake.container_status(&main, false).unwrap();
        let s = status.get_status();
        assert_eq!(s.state, ContainerState::CONTAINER_EXITED);
        assert_eq!((s.exit_code, s.reason.as_str()), (1, "Error"));
        assert!(s.finished_at - s.started_at >= 200_000_000);
        assert_eq!(
            state(&fake, &side),
            ContainerState::CONTAINER_RUNNING,
            "own override"
        );
        assert!(fake.set_pod_network("10.0.0.0/31").is_err());
        assert!(fake.set_pod_network("nonsense").is_err());
    }

    #[test]
    fn container_lifecycle() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_CREATED);
        let status = fake.container_status(&id, true).unwrap();
        let s = status.get_status();
        assert_eq!(s.log_path, "/var/log/pods/default_web_uid-1/app/0.log");
        assert_eq!(s.get_image().image, IMAGE);
        assert!(s.image_id.starts_with("sha256:"));
        assert!(s.image_ref.contains("@sha256:"));
        assert_eq!(s.labels.get("io.kubernetes.container.name").unwrap(), "app");
        assert!(status.info.contains_key("info"));

        fake.start_container(&id).unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_RUNNING);
        let err = fake.start_container(&id).unwrap_err();
        assert_eq!(err.code(), Some(RpcCode::Unknown));
        assert!(
            err.to_string()
                .contains("container is in CONTAINER_RUNNING state"),
            "{err}"
        );

        fake.stop_container(&id, 30).unwrap();
        let status = fake.container_status(&id, false).unwrap();
        assert_eq!(status.get_status().state, ContainerState::CONTAINER_EXITED);
        assert_eq!(status.get_status().exit_code, 143);
        assert_eq!(status.get_status().reason, "Error");
        assert_eq!(fake.stop_grace_period(&id), Some(30));
        fake.stop_container(&id, 0).unwrap(); // already stopped: fine
        assert_eq!(
            fake.container_status(&id, false)
                .unwrap()
                .get_status()
                .exit_code,
            143
        );

        fake.remove_container(&id).unwrap();
        fake.remove_container(&id).unwrap(); // idempotent
        assert!(fake
            .container_status(&id, false)
            .unwrap_err()
            .is_not_found());
        assert!(fake.start_container(&id).unwrap_err().is_not_found());
        assert!(fake.stop_container(&id, 0).unwrap_err().is_not_found());
    }

    #[test]
    fn stopping_a_created_container_leaves_it_created() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        fake.stop_container(&id, 0).unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_CREATED);
    }

    #[test]
    fn list_containers_mirrors_the_config() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        let listed = fake.list_containers(None).unwrap();
        assert_eq!(listed.len(), 1);
        let c = &listed[0];
        assert_eq!(
            (c.id.as_str(), c.pod_sandbox_id.as_str()),
            (id.as_str(), sb.as_str())
        );
        assert_eq!(c.get_metadata().name, "app");
        assert_eq!(c.get_image().image, IMAGE);
        assert!(c.image_ref.starts_with("sha256:"));
        assert_eq!(c.image_ref, c.image_id);
    }

    #[test]
    fn create_needs_metadata_sandbox_and_image() {
        let (fake, sb, cfg) = setup();
        let err = fake
            .run_pod_sandbox(&api::PodSandboxConfig::new(), "")
            .unwrap_err();
        assert!(err.to_string().contains("must include metadata"), "{err}");
        let err = fake
            .create_container("missing", &container_config("app", IMAGE), &cfg)
            .unwrap_err();
        assert!(err.is_not_found());
        let err = fake
            .create_container(&sb, &container_config("app", "nginx"), &cfg)
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string()
                .contains("failed to resolve image \"nginx\""),
            "{err}"
        );
        let err = fake
            .create_container(&sb, &api::ContainerConfig::new(), &cfg)
            .unwrap_err();
        assert!(err.to_string().contains("must include metadata"), "{err}");
    }

    #[test]
    fn container_filters() {
        let (fake, sb1, cfg) = setup();
        let cfg2 = sandbox_config("other", "uid-2", 0);
        let sb2 = fake.run_pod_sandbox(&cfg2, "").unwrap();
        let c1 = fake
            .create_container(&sb1, &container_config("a", IMAGE), &cfg)
            .unwrap();
        let c2 = fake
            .create_container(&sb1, &container_config("b", IMAGE), &cfg)
            .unwrap();
        let mut cc3 = container_config("a", IMAGE);
        cc3.labels
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        let c3 = fake.create_container(&sb2, &cc3, &cfg2).unwrap();
        fake.start_container(&c2).unwrap();
        let ids = |f: &api::ContainerFilter| -> Vec<String> {
            let mut v: Vec<String> = fake
                .list_containers(Some(f))
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(ids(&api::ContainerFilter::new()).len(), 3);

        let mut f = api::ContainerFilter::new();
        f.pod_sandbox_id = sb1.clone();
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c2.clone()]));

        let mut f = api::ContainerFilter::new();
        f.mut_state().state = ContainerState::CONTAINER_RUNNING;
        assert_eq!(ids(&f), vec![c2.clone()]);
        f.mut_state().state = ContainerState::CONTAINER_CREATED;
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c3.clone()]));
        f.pod_sandbox_id = sb2.clone();
        assert_eq!(ids(&f), vec![c3.clone()]);

        let mut f = api::ContainerFilter::new();
        f.label_selector
            .insert("io.kubernetes.container.name".into(), "a".into());
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c3.clone()]));

        let mut f = api::ContainerFilter::new();
        f.id = c3.clone();
        assert_eq!(ids(&f), vec![c3.clone()]);
        f.id = "unknown".into();
        assert!(ids(&f).is_empty());

        // Per-pod listings go through the pod index, which follows removals.
        let mut f = api::ContainerFilter::new();
        f.label_selector
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        assert_eq!(ids(&f), vec![c3.clone()]);
        f.label_selector
            .insert("io.kubernetes.container.name".into(), "b".into());
        assert!(ids(&f).is_empty());
        f.label_selector.remove("io.kubernetes.container.name");
        fake.remove_container(&c3).unwrap();
        assert!(ids(&f).is_empty());
        fake.stop_pod_sandbox(&sb1).unwrap();
        fake.remove_pod_sandbox(&sb1).unwrap();
        f.label_selector.insert(
            "io.kubernetes.pod.uid".into(),
            cfg.get_metadata().uid.clone(),
        );
        assert!(ids(&f).is_empty());
        let mut sf = api::PodSandboxFilter::new();
        sf.label_selector
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        assert_eq!(fake.list_pod_sandbox(Some(&sf)).unwrap().len(), 1);
    }

    #[test]
    fn exec_sync_needs_a_running_container() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        let cmd = vec!["cat".to_string(), "/tmp/healthy".to_string()];
        let err = fake
            .exec_sync(&id, &cmd, Duration::from_secs(1))
            .unwrap_err();
        assert!(err.to_string().contains("CONTAINER_CREATED"), "{err}");
        fake.start_container(&id).unwrap();
        let ok = fake.exec_sync(&id, &cmd, Duration::from_secs(1)).unwrap();
        assert_eq!(ok.exit_code, 0);
        fake.set_exec_result(b"out", b"err", 1);
        let r = fake.exec_sync(&id, &cmd, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
            (&b"out"[..], &b"err"[..], 1)
        );
        assert!(fake.calls().contains(&Call::ExecSync {
            container: id.clone(),
            cmd
        }));
        assert!(fake
            .exec_sync("nope", &[], Duration::ZERO)
            .unwrap_err()
            .is_not_found());
    }
}
