//! The sandbox calls of [`FakeRuntime`]: run, stop, remove, status and list, with containerd's
//! name reservations, pod addresses and errors.

use crate::cri::api::{self, PodSandboxState};
use crate::cri::fake::{
    labels_match, not_found, unknown, Call, FakeRuntime, Sandbox, POD_UID_LABEL,
};
use crate::cri::CriError;

/// `RunPodSandbox`: reserves the name, gives the pod an address unless it uses the node's
/// network, and leaves the sandbox READY.
pub(super) fn run(
    fake: &FakeRuntime,
    config: &api::PodSandboxConfig,
    runtime_handler: &str,
) -> Result<String, CriError> {
    const M: &str = "RunPodSandbox";
    let meta = config.get_metadata();
    let mut st = fake.begin(M, || Call::RunPodSandbox {
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        handler: runtime_handler.to_string(),
    })?;
    if config.metadata.is_none() {
        return Err(unknown(M, "sandbox config must include metadata".into()));
    }
    let name = format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    );
    if let Some(holder) = st.sandbox_names.get(&name) {
        return Err(unknown(
            M,
            format!(
                "failed to reserve sandbox name {name:?}: name {name:?} is reserved for {holder:?}"
            ),
        ));
    }
    let namespaces = config
        .get_linux()
        .get_security_context()
        .get_namespace_options();
    let ip = if namespaces.network == api::NamespaceMode::NODE {
        None
    } else {
        Some(st.alloc_ip().ok_or_else(|| {
            unknown(
                M,
                "failed to setup network for sandbox: no IP addresses available in the pod network"
                    .into(),
            )
        })?)
    };
    let id = st.new_id();
    let mut status = api::PodSandboxStatus::new();
    status.id = id.clone();
    status.set_metadata(meta.clone());
    status.state = PodSandboxState::SANDBOX_READY;
    status.created_at = st.now();
    let mut network = api::PodSandboxNetworkStatus::new();
    network.ip = ip.map(|ip| st.ip_string(ip)).unwrap_or_default();
    status.set_network(network);
    let mut ns = api::Namespace::new();
    ns.set_options(namespaces.clone());
    status.mut_linux().set_namespaces(ns);
    status.labels = config.labels.clone();
    status.annotations = config.annotations.clone();
    status.runtime_handler = runtime_handler.to_string();
    st.sandbox_names.insert(name.clone(), id.clone());
    let sandbox = Sandbox {
        status,
        name,
        ip,
        log_directory: config.log_directory.clone(),
    };
    if let Some(uid) = config.labels.get(POD_UID_LABEL) {
        st.by_pod
            .entry(uid.clone())
            .or_default()
            .sandboxes
            .insert(id.clone());
    }
    st.sandboxes.insert(id.clone(), sandbox);
    Ok(id)
}

/// `StopPodSandbox`: kills the running containers (137), releases the address, NOTREADY.
pub(super) fn stop(fake: &FakeRuntime, pod_sandbox_id: &str) -> Result<(), CriError> {
    let mut st = fake.begin("StopPodSandbox", || {
        Call::StopPodSandbox(pod_sandbox_id.to_string())
    })?;
    if !st.sandboxes.contains_key(pod_sandbox_id) {
        return Err(not_found("StopPodSandbox", "sandbox", pod_sandbox_id));
    }
    st.stop_sandbox_containers(pod_sandbox_id);
    let ip = st.sandboxes.get_mut(pod_sandbox_id).and_then(|s| {
        s.status.state = PodSandboxState::SANDBOX_NOTREADY;
        s.status.mut_network().ip.clear();
        s.ip.take()
    });
    if let Some(ip) = ip {
        st.ips_in_use.remove(&ip);
    }
    Ok(())
}

/// `RemovePodSandbox`: removes a stopped sandbox with its containers and their names.
pub(super) fn remove(fake: &FakeRuntime, pod_sandbox_id: &str) -> Result<(), CriError> {
    let mut st = fake.begin("RemovePodSandbox", || {
        Call::RemovePodSandbox(pod_sandbox_id.to_string())
    })?;
    let Some(sandbox) = st.sandboxes.get(pod_sandbox_id) else {
        return Ok(());
    };
    if sandbox.status.state == PodSandboxState::SANDBOX_READY {
        return Err(unknown(
            "RemovePodSandbox",
            format!("sandbox container {pod_sandbox_id:?} is not fully stopped"),
        ));
    }
    let st = &mut *st;
    let mut removed = Vec::new();
    st.containers.retain(|_, c| {
        let keep = c.sandbox_id != pod_sandbox_id;
        if !keep {
            st.container_names.remove(&c.name);
            st.stop_grace.remove(&c.status.id);
            removed.push((c.status.labels.clone(), c.status.id.clone()));
        }
        keep
    });
    for (labels, id) in removed {
        st.unindex(&labels, &id, false);
    }
    if let Some(sandbox) = st.sandboxes.remove(pod_sandbox_id) {
        st.sandbox_names.remove(&sandbox.name);
        st.unindex(&sandbox.status.labels, pod_sandbox_id, true);
        if let Some(ip) = sandbox.ip {
            st.ips_in_use.remove(&ip);
        }
    }
    Ok(())
}

/// `PodSandboxStatus`.
pub(super) fn status(
    fake: &FakeRuntime,
    pod_sandbox_id: &str,
    verbose: bool,
) -> Result<api::PodSandboxStatusResponse, CriError> {
    let mut st = fake.begin("PodSandboxStatus", || {
        Call::PodSandboxStatus(pod_sandbox_id.to_string())
    })?;
    let now = st.now();
    let sandbox = st
        .sandboxes
        .get(pod_sandbox_id)
        .ok_or_else(|| not_found("PodSandboxStatus", "sandbox", pod_sandbox_id))?;
    let mut resp = api::PodSandboxStatusResponse::new();
    resp.set_status(sandbox.status.clone());
    resp.timestamp = now;
    if verbose {
        let info = format!(
            "{{\"runtimeHandler\":{:?}}}",
            sandbox.status.runtime_handler
        );
        resp.info.insert("info".to_string(), info);
    }
    Ok(resp)
}

/// `ListPodSandbox`, through the pod index when the filter names a pod.
/// `ListPodSandbox`; with `brief`, as a brief listing keeping those labels (see
/// [`crate::cri::brief`]).
pub(super) fn list(
    fake: &FakeRuntime,
    filter: Option<&api::PodSandboxFilter>,
    brief: Option<&[&str]>,
) -> Result<Vec<api::PodSandbox>, CriError> {
    let st = fake.begin("ListPodSandbox", || Call::ListPodSandbox)?;
    let matches = |s: &api::PodSandboxStatus| {
        filter.is_none_or(|f| {
            (f.id.is_empty() || f.id == s.id)
                && f.state.as_ref().is_none_or(|v| v.state == s.state)
                && labels_match(&f.label_selector, &s.labels)
        })
    };
    let candidates: Vec<&Sandbox> = match st.pod_candidates(filter.map(|f| &f.label_selector)) {
        Some(index) => index
            .sandboxes
            .iter()
            .filter_map(|id| st.sandboxes.get(id))
            .collect(),
        None if filter.is_some_and(|f| f.label_selector.contains_key(POD_UID_LABEL)) => Vec::new(),
        None => st.sandboxes.values().collect(),
    };
    let items = candidates
        .into_iter()
        .map(|s| &s.status)
        .filter(|s| matches(s))
        .map(|s| {
            let mut p = api::PodSandbox::new();
            p.id = s.id.clone();
            p.metadata = s.metadata.clone();
            p.state = s.state;
            p.created_at = s.created_at;
            if let Some(keep) = brief {
                p.labels = crate::cri::brief::kept_labels(&s.labels, keep);
                return p;
            }
            p.labels = s.labels.clone();
            p.annotations = s.annotations.clone();
            p.runtime_handler = s.runtime_handler.clone();
            p
        })
        .collect();
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{setup, state, IMAGE};
    use crate::cri::api::{self, ContainerState, PodSandboxState};
    use crate::cri::fake::fixtures::{container_config, sandbox_config};
    use crate::cri::{FakeRuntime, RpcCode, RuntimeService};

    #[test]
    fn sandbox_lifecycle() {
        let (fake, sb, cfg) = setup();
        let status = fake.pod_sandbox_status(&sb, false).unwrap();
        let s = status.get_status();
        assert_eq!(s.state, PodSandboxState::SANDBOX_READY);
        assert_eq!(s.get_metadata().name, "web");
        assert_eq!(s.runtime_handler, "runc");
        assert!(s.get_network().ip.starts_with("10.88."));
        assert!(status.timestamp >= s.created_at);

        let c1 = fake
            .create_container(&sb, &container_config("a", IMAGE), &cfg)
            .unwrap();
        let c2 = fake
            .create_container(&sb, &container_config("b", IMAGE), &cfg)
            .unwrap();
        fake.start_container(&c1).unwrap();

        let err = fake.remove_pod_sandbox(&sb).unwrap_err();
        assert!(err.to_string().contains("is not fully stopped"), "{err}");

        fake.stop_pod_sandbox(&sb).unwrap();
        fake.stop_pod_sandbox(&sb).unwrap(); // idempotent
        let s = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(s.get_status().state, PodSandboxState::SANDBOX_NOTREADY);
        let c1s = fake.container_status(&c1, false).unwrap();
        assert_eq!(c1s.get_status().state, ContainerState::CONTAINER_EXITED);
        assert_eq!(c1s.get_status().exit_code, 137);
        assert_eq!(state(&fake, &c2), ContainerState::CONTAINER_CREATED);

        // No new containers in a stopped sandbox, and created ones cannot start.
        let err = fake
            .create_container(&sb, &container_config("c", IMAGE), &cfg)
            .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        let err = fake.start_container(&c2).unwrap_err();
        assert!(err.to_string().contains("is not running"), "{err}");

        fake.remove_pod_sandbox(&sb).unwrap();
        assert!(fake.list_containers(None).unwrap().is_empty());
        assert!(fake
            .pod_sandbox_status(&sb, false)
            .unwrap_err()
            .is_not_found());
        fake.remove_pod_sandbox(&sb).unwrap(); // idempotent
        assert!(fake.stop_pod_sandbox(&sb).unwrap_err().is_not_found());
    }

    #[test]
    fn names_are_reserved_until_removal() {
        let (fake, sb, cfg) = setup();
        let err = fake.run_pod_sandbox(&cfg, "").unwrap_err();
        assert_eq!(err.code(), Some(RpcCode::Unknown));
        let text = err.to_string();
        assert!(
            text.contains("failed to reserve sandbox name \"web_default_uid-1_0\""),
            "{text}"
        );
        assert!(text.contains(&sb), "{text}");
        let next = fake
            .run_pod_sandbox(&sandbox_config("web", "uid-1", 1), "")
            .unwrap();

        let c = container_config("app", IMAGE);
        let id = fake.create_container(&next, &c, &cfg).unwrap();
        let err = fake.create_container(&next, &c, &cfg).unwrap_err();
        assert!(
            err.to_string()
                .contains("failed to reserve container name \"app_web_default_uid-1_0\""),
            "{err}"
        );
        fake.remove_container(&id).unwrap();
        fake.create_container(&next, &c, &cfg).unwrap();

        fake.stop_pod_sandbox(&sb).unwrap();
        fake.remove_pod_sandbox(&sb).unwrap();
        fake.run_pod_sandbox(&cfg, "").unwrap();
    }

    #[test]
    fn host_network_sandbox_has_no_ip() {
        let fake = FakeRuntime::new();
        let mut cfg = sandbox_config("host", "u", 0);
        cfg.mut_linux()
            .mut_security_context()
            .mut_namespace_options()
            .network = api::NamespaceMode::NODE;
        let sb = fake.run_pod_sandbox(&cfg, "").unwrap();
        let status = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(status.get_status().get_network().ip, "");
        let ns = status
            .get_status()
            .get_linux()
            .get_namespaces()
            .get_options();
        assert_eq!(ns.network, api::NamespaceMode::NODE);
    }

    #[test]
    fn sandbox_filters() {
        let fake = FakeRuntime::new();
        let a = fake
            .run_pod_sandbox(&sandbox_config("a", "ua", 0), "")
            .unwrap();
        let b = fake
            .run_pod_sandbox(&sandbox_config("b", "ub", 0), "")
            .unwrap();
        fake.stop_pod_sandbox(&b).unwrap();
        let ids = |f: &api::PodSandboxFilter| -> Vec<String> {
            fake.list_pod_sandbox(Some(f))
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(fake.list_pod_sandbox(None).unwrap().len(), 2);
        assert_eq!(ids(&api::PodSandboxFilter::new()).len(), 2);

        let mut f = api::PodSandboxFilter::new();
        f.id = a.clone();
        assert_eq!(ids(&f), vec![a.clone()]);

        let mut f = api::PodSandboxFilter::new();
        f.mut_state().state = PodSandboxState::SANDBOX_READY;
        assert_eq!(ids(&f), vec![a.clone()]);
        f.mut_state().state = PodSandboxState::SANDBOX_NOTREADY;
        assert_eq!(ids(&f), vec![b.clone()]);

        let mut f = api::PodSandboxFilter::new();
        f.label_selector
            .insert("io.kubernetes.pod.uid".into(), "ub".into());
        assert_eq!(ids(&f), vec![b.clone()]);
        f.label_selector.insert("other".into(), "x".into());
        assert!(ids(&f).is_empty());

        let mut f = api::PodSandboxFilter::new();
        f.id = a.clone();
        f.mut_state().state = PodSandboxState::SANDBOX_NOTREADY;
        assert!(ids(&f).is_empty(), "fields are ANDed");
    }

    #[test]
    fn sandbox_can_die_under_the_kubelet() {
        let (fake, sb, _) = setup();
        assert!(fake.set_sandbox_not_ready(&sb));
        assert!(!fake.set_sandbox_not_ready("nope"));
        let s = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(s.get_status().state, PodSandboxState::SANDBOX_NOTREADY);
    }
}
