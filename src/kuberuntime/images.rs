//! Making sure a container's image is present before it is created (upstream `EnsureImageExists`):
//! pull policy with upstream defaults, pull back-off, and the waiting reasons users see
//! (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`).

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::api;
use crate::events::EventType;

use super::{RuntimeManager, StartFailure};

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
        let started = self.clock.now();
        match self.images.pull_image(&spec, None, Some(sandbox_config)) {
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
                Err(StartFailure::new("ErrImagePull", e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
