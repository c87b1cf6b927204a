//! Making sure a container's image is present before it is created (upstream `EnsureImageExists`):
//! pull policy with upstream defaults, pull back-off, and the waiting reasons users see
//! (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`). The decision runs on the pod
//! worker; the pull itself runs on a waiter thread ([`RuntimeManager::pull`]) and its result
//! waits here for the pod's next sync.

use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::cri::api;
use crate::events::EventType;

use super::{RuntimeManager, StartFailure};

/// How many image pulls may run at once (upstream `serializeImagePulls` and
/// `maxParallelImagePulls`): one when serialized, else the maximum (unlimited when unset).
/// The waiters enforce it; a pull waiting for its turn holds no thread.
pub fn pull_limit(serialize: bool, max_parallel: Option<u32>) -> Option<usize> {
    if serialize {
        Some(1)
    } else {
        max_parallel
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// An image pull a sync hands to the waiters.
#[derive(Debug, Clone)]
pub struct PullWork {
    /// The container the image is for.
    pub container: String,
    /// The image as the container names it.
    pub image: String,
    spec: api::ImageSpec,
    sandbox_config: api::PodSandboxConfig,
    /// The pod's matching `imagePullSecrets`, most specific first.
    credentials: Vec<api::AuthConfig>,
    /// When the pull was asked for (the event gives the time including the wait for a slot).
    asked_at: std::time::Instant,
}

/// Where a container's image stands.
pub enum ImageReady {
    /// Present: the reference to create the container from, and the image as `ImageStatus`
    /// just reported it (its user, for `runAsNonRoot`), when it was asked.
    Present(String, Option<Box<api::Image>>),
    /// It must be pulled first (on the waiters).
    Pull(Box<PullWork>),
}

/// The registry host (and path) an image is pulled from: `docker.io/library/busybox` for
/// `busybox`, `registry.example:5000/team/app` for `registry.example:5000/team/app:v1`.
pub(crate) fn image_location(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// A credential key (`https://index.docker.io/v1/`, `registry.example:5000`,
/// `registry.example/team`) in the form [`image_location`] gives.
fn normalize_registry_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        k => k
            .strip_prefix("index.docker.io/")
            .map_or_else(|| k.to_string(), |rest| format!("docker.io/{rest}")),
    }
}

/// Whether a credential for `key` applies to `location`: same host, and the key's path (if
/// any) is a prefix of the image's path at a `/` boundary.
fn registry_matches(key: &str, location: &str) -> bool {
    location == key
        || location
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The CRI credentials in `imagePullSecrets` that apply to `image`, most specific first
/// (`kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` secrets).
pub fn pull_credentials(image: &str, secrets: &[Secret]) -> Vec<api::AuthConfig> {
    let location = image_location(image);
    let mut found: Vec<(usize, api::AuthConfig)> = Vec::new();
    for secret in secrets {
        let data = secret.data.as_ref();
        let entries = if let Some(json) = data.and_then(|d| d.get(".dockerconfigjson")) {
            serde_json::from_slice::<serde_json::Value>(&json.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(json) = data.and_then(|d| d.get(".dockercfg")) {
            serde_json::from_slice::<serde_json::Value>(&json.0).ok()
        } else {
            None
        };
        let Some(serde_json::Value::Object(entries)) = entries else {
            continue;
        };
        for (key, entry) in entries {
            let key = normalize_registry_key(&key);
            if !registry_matches(&key, &location) {
                continue;
            }
            let text = |field: &str| {
                entry
                    .get(field)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut auth = api::AuthConfig::new();
            auth.set_username(text("username"));
            auth.set_password(text("password"));
            auth.set_auth(text("auth"));
            auth.set_identity_token(text("identitytoken"));
            auth.set_registry_token(text("registrytoken"));
            auth.set_server_address(key.clone());
            found.push((key.len(), auth));
        }
    }
    found.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    found.into_iter().map(|(_, a)| a).collect()
}

/// Pull policy as upstream defaults it: `Always` for `:latest` or untagged images (without a
/// digest), `IfNotPresent` otherwise.
pub fn pull_policy(container: &Container) -> &str {
    if let Some(p) = container.image_pull_policy.as_deref() {
        return p;
    }
    let image = container.image.as_deref().unwrap_or_default();
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

impl RuntimeManager {
    /// The pod's `imagePullSecrets` credentials for `image`; a secret that cannot be read is
    /// reported and skipped, as upstream does.
    fn pull_secrets(&self, pod: &Pod, image: &str) -> Vec<api::AuthConfig> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let names = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|r| Some(r.name.clone()).filter(|n| !n.is_empty()));
        let mut secrets = Vec::new();
        for name in names {
            match self.volumes.objects().secret(namespace, &name, false) {
                Ok(Some(s)) => secrets.push(s),
                Ok(None) => log::warn!(
                    "pod=\"{namespace}/{}\" imagePullSecret \"{name}\" not found, pulling without it",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                Err(e) => {
                    self.recorder.pod_event(
                        pod,
                        EventType::Warning,
                        "FailedToRetrieveImagePullSecret",
                        format!("Unable to retrieve some image pull secrets ({name}); attempting to pull the image may not succeed: {e}"),
                    );
                }
            }
        }
        pull_credentials(image, &secrets)
    }

    /// Returns the image reference to create `container` from, or the pull to wait for
    /// first, as the policy says (upstream `EnsureImageExists`). A pull that finished since
    /// the last sync is used once; a failed one holds further pulls back (10 s doubling to
    /// 5 min since the last failure, upstream `IsInBackOffSinceUpdate`).
    pub(super) fn ensure_image(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<ImageReady, StartFailure> {
        let image = container.image.clone().unwrap_or_default();
        let mut spec = api::ImageSpec::new();
        spec.set_image(image.clone());
        let key = (crate::types::uid_of(pod), image.clone());
        if let Some(image_ref) = self.take_pulled(&key) {
            return Ok(ImageReady::Present(image_ref, None));
        }
        let present = match self.images.image_status(&spec, false) {
            Ok(found) => found,
            Err(e) => {
                return Err(StartFailure::new(
                    "ErrImageInspect",
                    format!("Failed to inspect image \"{image}\": {e}"),
                ))
            }
        };
        let policy = pull_policy(container);
        match (policy, present) {
            ("Never", Some(image_found)) | ("IfNotPresent", Some(image_found)) => {
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                let id = image_found.get_id().to_string();
                return Ok(ImageReady::Present(id, Some(Box::new(image_found))));
            }
            ("Never", None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                return Err(StartFailure::new("ErrImageNeverPull", message));
            }
            _ => {}
        }

        let now = self.clock.wall();
        let backoff = self
            .pulls
            .lock()
            .ok()
            .filter(|p| p.backoff.is_in_backoff_since_update(&key, now))
            .map(|p| p.last_error.get(&key).cloned());
        if let Some(last_error) = backoff {
            let mut message = format!("Back-off pulling image \"{image}\"");
            if let Some(e) = last_error {
                message.push_str(&format!(": ErrImagePull: {e}"));
            }
            self.recorder
                .pod_event(pod, EventType::Normal, "BackOff", message.clone());
            return Err(StartFailure::new("ImagePullBackOff", message));
        }

        self.recorder.pod_event(
            pod,
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        Ok(ImageReady::Pull(Box::new(PullWork {
            container: container.name.clone(),
            credentials: self.pull_secrets(pod, &image),
            image,
            spec,
            sandbox_config: sandbox_config.clone(),
            asked_at: self.clock.now(),
        })))
    }

    /// The reference of an image pulled for this pod since its last sync, taken once.
    fn take_pulled(&self, key: &(crate::types::PodUid, String)) -> Option<String> {
        self.pulls.lock().ok()?.pulled.remove(key)
    }

    /// Pulls an image (on a waiter thread): each matching credential in turn, then
    /// anonymously when none matched. Success is kept for the pod's next sync; a failure is
    /// recorded as the container's `ErrImagePull` and starts (or grows) the pull back-off.
    /// Returns whether the pull succeeded.
    pub(super) fn pull(&self, pod: &Pod, work: PullWork) -> bool {
        let PullWork {
            container,
            image,
            spec,
            sandbox_config,
            credentials,
            asked_at,
        } = work;
        let started = self.clock.now();
        // The plugins run here, on the waiter thread: a slow plugin holds no pod worker.
        let mut credentials = credentials;
        if let Some(providers) = &self.settings.credential_providers {
            credentials.extend(providers.credentials(&image));
        }
        let mut result = Err(None);
        for auth in &credentials {
            match self
                .images
                .pull_image(&spec, Some(auth), Some(&sandbox_config))
            {
                Ok(r) => {
                    result = Ok(r);
                    break;
                }
                Err(e) => result = Err(Some(e)),
            }
        }
        if credentials.is_empty() {
            result = self
                .images
                .pull_image(&spec, None, Some(&sandbox_config))
                .map_err(Some);
        }
        let result = result
            .map_err(|e| e.map_or_else(|| "no credentials tried".to_string(), |e| e.to_string()));
        let uid = crate::types::uid_of(pod);
        let key = (uid.clone(), image.clone());
        match result {
            Ok(image_ref) => {
                let now = self.clock.now();
                let took = now.saturating_duration_since(started);
                let with_wait = now.saturating_duration_since(asked_at);
                let size = self.image_size(&image_ref);
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {took:?} ({with_wait:?} including waiting). Image size: {size} bytes."
                    ),
                );
                if let Ok(mut pulls) = self.pulls.lock() {
                    pulls.backoff.gc(self.clock.wall());
                    pulls.last_error.remove(&key);
                    pulls.pulled.insert(key, image_ref);
                }
                true
            }
            Err(e) => {
                if let Ok(mut pulls) = self.pulls.lock() {
                    pulls.backoff.next(&key, self.clock.wall());
                    pulls.last_error.insert(key, e.clone());
                }
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {e}"),
                );
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull".to_string(),
                );
                log::warn!(
                    "pod=\"{}\" container={container} failed to pull image {image}: {e}",
                    crate::types::pod_key(pod)
                );
                self.set_start_failure(
                    &uid,
                    &container,
                    Some(StartFailure::new("ErrImagePull", e)),
                );
                false
            }
        }
    }

    /// The size the runtime reports for an image (0 when it cannot say).
    fn image_size(&self, image_ref: &str) -> u64 {
        let mut spec = api::ImageSpec::new();
        spec.set_image(image_ref.to_string());
        match self.images.image_status(&spec, false) {
            Ok(Some(image)) => image.get_size(),
            _ => 0,
        }
    }
}

/// Image pulls of the runtime manager's pods: back-off, the last error and finished pulls
/// waiting for their pod's next sync.
#[derive(Debug)]
pub(super) struct Pulls {
    /// Pull back-off per (pod, image): the ImagePullBackOff delay.
    pub(super) backoff: crate::util::backoff::Backoff<(crate::types::PodUid, String)>,
    /// The last failure per (pod, image), shown with the back-off.
    pub(super) last_error: std::collections::HashMap<(crate::types::PodUid, String), String>,
    /// Image references pulled for a pod, used by its next sync.
    pub(super) pulled: std::collections::HashMap<(crate::types::PodUid, String), String>,
}

impl Pulls {
    pub(super) fn new() -> Self {
        Pulls {
            backoff: crate::util::backoff::Backoff::new(
                super::RESTART_BACKOFF_INITIAL,
                super::RESTART_BACKOFF_MAX,
            ),
            last_error: std::collections::HashMap::new(),
            pulled: std::collections::HashMap::new(),
        }
    }

    /// Entries held for all pods: back-offs, last errors, pulls done.
    pub(super) fn len(&self) -> usize {
        self.backoff.len() + self.last_error.len() + self.pulled.len()
    }

    /// Forgets everything of a pod.
    pub(super) fn forget(&mut self, uid: &crate::types::PodUid) {
        self.backoff.retain(|(u, _)| u != uid);
        self.last_error.retain(|(u, _), _| u != uid);
        self.pulled.retain(|(u, _), _| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn docker_secret(key: &str, json: serde_json::Value) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(json.to_string().into_bytes()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn image_locations_default_to_docker_hub() {
        assert_eq!(image_location("busybox"), "docker.io/library/busybox");
        assert_eq!(image_location("busybox:1.36"), "docker.io/library/busybox");
        assert_eq!(image_location("team/app@sha256:ab"), "docker.io/team/app");
        assert_eq!(
            image_location("registry.example:5000/team/app:v1"),
            "registry.example:5000/team/app"
        );
        assert_eq!(image_location("localhost/app"), "localhost/app");
    }

    #[test]
    fn pull_secrets_match_the_registry_most_specific_first() {
        let secrets = vec![
            docker_secret(
                ".dockerconfigjson",
                serde_json::json!({"auths": {
                    "https://index.docker.io/v1/": {"username": "hub", "password": "p1"},
                    "registry.example:5000": {"auth": "dTpw"},
                    "registry.example:5000/team": {"username": "team", "password": "p2"},
                    "other.example": {"username": "x", "password": "y"}
                }}),
            ),
            docker_secret(
                ".dockercfg",
                serde_json::json!({"registry.example:5000": {"username": "old", "password": "p3"}}),
            ),
        ];
        let users = |image: &str| -> Vec<String> {
            pull_credentials(image, &secrets)
                .iter()
                .map(|a| format!("{}{}", a.get_username(), a.get_auth()))
                .collect()
        };
        assert_eq!(users("busybox:1.36"), ["hub"]);
        assert_eq!(
            users("registry.example:5000/team/app:v1"),
            ["team", "dTpw", "old"]
        );
        assert_eq!(users("registry.example:5000/teams/app"), ["dTpw", "old"]);
        assert!(users("quay.io/app").is_empty());
        assert_eq!(
            pull_credentials("busybox", &secrets)[0].get_server_address(),
            "docker.io"
        );
    }

    #[test]
    fn pull_limit_serializes_or_limits() {
        assert_eq!(pull_limit(true, Some(5)), Some(1));
        assert_eq!(pull_limit(false, Some(2)), Some(2));
        assert_eq!(pull_limit(false, Some(0)), None);
        assert_eq!(pull_limit(false, None), None);
    }

    #[test]
    fn default_pull_policy_as_upstream() {
        let cases = [
            ("busybox", None, "Always"),
            ("busybox:latest", None, "Always"),
            ("busybox:1.36", None, "IfNotPresent"),
            ("localhost:5000/busybox", None, "Always"),
            ("localhost:5000/busybox:v1", None, "IfNotPresent"),
            ("busybox@sha256:abcd", None, "IfNotPresent"),
            ("busybox:1.36", Some("Always"), "Always"),
            ("busybox", Some("Never"), "Never"),
        ];
        for (image, set, want) in cases {
            let c = Container {
                name: "c".into(),
                image: Some(image.into()),
                image_pull_policy: set.map(str::to_string),
                ..Default::default()
            };
            assert_eq!(pull_policy(&c), want, "{image} {set:?}");
        }
    }
}
