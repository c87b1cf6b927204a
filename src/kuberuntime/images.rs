//! Making sure a container's image is present before it is created (upstream `EnsureImageExists`):
//! pull policy with upstream defaults, pull back-off, and the waiting reasons users see
//! (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`).

use std::sync::{Condvar, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::cri::api;
use crate::events::EventType;

use super::{RuntimeManager, StartFailure};

/// Limits how many image pulls run at once (upstream `serializeImagePulls` and
/// `maxParallelImagePulls`). Only pulls wait here: a container whose image is present never
/// queues behind another pod's pull.
#[derive(Debug)]
pub struct PullGate {
    /// `None`: unlimited.
    limit: Option<usize>,
    running: Mutex<usize>,
    freed: Condvar,
}

/// Holds one pull slot until dropped.
pub struct PullSlot<'a>(&'a PullGate);

impl PullGate {
    /// One pull at a time when `serialize`, else at most `max_parallel` (unlimited when unset).
    pub fn new(serialize: bool, max_parallel: Option<u32>) -> Self {
        let limit = if serialize {
            Some(1)
        } else {
            max_parallel
                .filter(|n| *n > 0)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        PullGate {
            limit,
            running: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits for a slot.
    pub fn acquire(&self) -> PullSlot<'_> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.limit.is_some_and(|l| *running >= l) {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        PullSlot(self)
    }
}

impl Drop for PullSlot<'_> {
    fn drop(&mut self) {
        let mut running = self
            .0
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// The registry host (and path) an image is pulled from: `docker.io/library/busybox` for
/// `busybox`, `registry.example:5000/team/app` for `registry.example:5000/team/app:v1`.
fn image_location(image: &str) -> String {
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

    /// Returns the image reference to create `container` from, pulling it if the policy says so.
    pub(super) fn ensure_image(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, StartFailure> {
        let image = container.image.clone().unwrap_or_default();
        let mut spec = api::ImageSpec::new();
        spec.set_image(image.clone());
        let present = match self.images.image_status(&spec, false) {
            Ok(found) => found.map(|img| img.get_id().to_string()),
            Err(e) => {
                return Err(StartFailure::new(
                    "ErrImageInspect",
                    format!("Failed to inspect image \"{image}\": {e}"),
                ))
            }
        };
        let policy = pull_policy(container);
        match (policy, present) {
            ("Never", Some(id)) | ("IfNotPresent", Some(id)) => {
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(id);
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

        let key = (crate::types::uid_of(pod), image.clone());
        let now = self.clock.wall();
        let in_backoff = self
            .pull_backoff
            .lock()
            .map(|b| b.is_in_backoff_since(&key, now, now))
            .unwrap_or(false);
        if in_backoff {
            let message = format!("Back-off pulling image \"{image}\"");
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
        let credentials = self.pull_secrets(pod, &image);
        let _slot = self.pull_gate.acquire();
        let started = self.clock.now();
        // Each matching credential in turn, then anonymously when none matched.
        let mut result = Err(None);
        for auth in &credentials {
            match self
                .images
                .pull_image(&spec, Some(auth), Some(sandbox_config))
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
                .pull_image(&spec, None, Some(sandbox_config))
                .map_err(Some);
        }
        drop(_slot);
        let result = result
            .map_err(|e| e.map_or_else(|| "no credentials tried".to_string(), |e| e.to_string()));
        match result {
            Ok(image_ref) => {
                let took = self.clock.now().saturating_duration_since(started);
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took:?}"),
                );
                Ok(image_ref)
            }
            Err(e) => {
                if let Ok(mut b) = self.pull_backoff.lock() {
                    b.next(&key, self.clock.wall());
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
                Err(StartFailure::new("ErrImagePull", e))
            }
        }
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
    fn pull_gate_serializes_or_limits() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (gate, want) in [
            (PullGate::new(true, None), 1),
            (PullGate::new(false, Some(2)), 2),
        ] {
            let now = AtomicUsize::new(0);
            let peak = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        let _slot = gate.acquire();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
            assert!(peak.load(Ordering::SeqCst) <= want);
        }
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
