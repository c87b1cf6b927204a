//! The image half of [`FakeRuntime`]: images on the node, pulls from a pretend
//! registry, and containerd-style reference normalization.

use super::{hex64, unknown, Call, FakeRuntime, State};
use crate::cri::{api, CriError, ImageService};

impl State {
    /// The image on the node with this id, tag or digest.
    pub(super) fn find_image(&self, reference: &str) -> Option<&api::Image> {
        if reference.starts_with("sha256:") {
            return self.images.get(reference);
        }
        let name = normalize_image(reference);
        self.images
            .values()
            .find(|i| i.repo_tags.contains(&name) || i.repo_digests.contains(&name))
    }

    /// Records `name` (normalized) as present on the node; returns the image id.
    pub(super) fn store_image(&mut self, name: &str) -> String {
        let id = format!("sha256:{}", hex64(fnv1a(name.as_bytes())));
        let image = self.images.entry(id.clone()).or_insert_with(|| {
            let mut i = api::Image::new();
            i.id = id.clone();
            i.size = 1_000_000 + fnv1a(name.as_bytes()) % 100_000_000;
            let mut spec = api::ImageSpec::new();
            spec.image = id.clone();
            i.set_spec(spec);
            i
        });
        if !image.repo_tags.contains(&name.to_string()) {
            image.repo_tags.push(name.to_string());
            let repo = name.rsplit_once(':').map_or(name, |(repo, _)| repo);
            let digest = hex64(fnv1a(name.as_bytes()).rotate_left(17));
            image.repo_digests.push(format!("{repo}@sha256:{digest}"));
        }
        id
    }
}

/// FNV-1a, 64-bit: a stable hash for image ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Fully qualifies an image reference the way containerd does
/// (`busybox` → `docker.io/library/busybox:latest`); ids are kept as they are.
pub(super) fn normalize_image(image: &str) -> String {
    if image.starts_with("sha256:") {
        return image.to_string();
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let mut full = match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            name.to_string()
        }
        Some(_) => format!("docker.io/{name}"),
        None => format!("docker.io/library/{name}"),
    };
    if let Some(rest) = full.strip_prefix("docker.io/") {
        if !rest.contains('/') {
            full = format!("docker.io/library/{rest}");
        }
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None if full
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':')) =>
        {
            full
        }
        None => format!("{full}:latest"),
    }
}

impl ImageService for FakeRuntime {
    fn list_images(&self, filter: Option<&api::ImageFilter>) -> Result<Vec<api::Image>, CriError> {
        let st = self.begin("ListImages", || Call::ListImages)?;
        let wanted = filter
            .map(|f| f.get_image().image.as_str())
            .unwrap_or_default();
        if !wanted.is_empty() {
            return Ok(st.find_image(wanted).cloned().into_iter().collect());
        }
        Ok(st.images.values().cloned().collect())
    }

    fn image_status(
        &self,
        image: &api::ImageSpec,
        _verbose: bool,
    ) -> Result<Option<api::Image>, CriError> {
        let st = self.begin("ImageStatus", || Call::ImageStatus(image.image.clone()))?;
        Ok(st.find_image(&image.image).cloned())
    }

    fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        _sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let delay = self.pull_delay();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = self.begin("PullImage", || Call::PullImage(image.image.clone()))?;
        let name = normalize_image(&image.image);
        let given = auth.map(|a| (a.username.clone(), a.password.clone()));
        st.pull_auths.push((image.image.clone(), given.clone()));
        let needed = st
            .registry_auth
            .iter()
            .find(|(prefix, _, _)| name.starts_with(prefix.as_str()))
            .map(|(_, u, p)| (u.clone(), p.clone()));
        if needed.is_some() && needed != given {
            return Err(unknown("PullImage", format!(
                "failed to pull and unpack image {name:?}: failed to resolve reference {name:?}: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"
            )));
        }
        if !st.available.contains(&name) && !self.any_image() {
            return Err(unknown("PullImage", format!(
                "failed to pull and unpack image {name:?}: failed to resolve reference {name:?}: {name}: not found"
            )));
        }
        Ok(st.store_image(&name))
    }

    fn remove_image(&self, image: &api::ImageSpec) -> Result<(), CriError> {
        let mut st = self.begin("RemoveImage", || Call::RemoveImage(image.image.clone()))?;
        let id = st.find_image(&image.image).map(|i| i.id.clone());
        if let Some(id) = id {
            st.images.remove(&id);
        }
        Ok(())
    }

    fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, CriError> {
        let mut st = self.begin("ImageFsInfo", || Call::ImageFsInfo)?;
        let mut usage = api::FilesystemUsage::new();
        usage.timestamp = st.now();
        usage.mut_fs_id().mountpoint =
            "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".to_string();
        usage.mut_used_bytes().value = st.images.values().map(|i| i.size).sum();
        usage.mut_inodes_used().value = st.images.len() as u64 * 100;
        let mut resp = api::ImageFsInfoResponse::new();
        resp.image_filesystems.push(usage);
        Ok(resp)
    }
}

impl FakeRuntime {
    /// Makes pulls of references starting with `prefix` (normalized, as
    /// `docker.io/library/...`) fail unless they come with `username` and `password`, as a
    /// private registry's do.
    pub fn require_pull_credentials(&self, prefix: &str, username: &str, password: &str) {
        self.lock()
            .registry_auth
            .push((prefix.into(), username.into(), password.into()));
    }

    /// Every pull so far: the image and the user and password it came with.
    pub fn pull_auths(&self) -> Vec<(String, Option<(String, String)>)> {
        self.lock().pull_auths.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::RpcCode;

    fn spec(image: &str) -> api::ImageSpec {
        let mut s = api::ImageSpec::new();
        s.image = image.to_string();
        s
    }

    #[test]
    fn normalization() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox:local", "docker.io/library/busybox:local"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("registry.k8s.io/pause:3.6", "registry.k8s.io/pause:3.6"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("quay.io/org/app@sha256:abcd", "quay.io/org/app@sha256:abcd"),
            ("sha256:0123", "sha256:0123"),
        ];
        for (given, want) in cases {
            assert_eq!(normalize_image(given), want, "{given}");
        }
    }

    #[test]
    fn pull_of_an_unavailable_image_fails_like_containerd() {
        let fake = FakeRuntime::new();
        let err = fake
            .pull_image(&spec("nosuch:1.0"), None, None)
            .unwrap_err();
        assert_eq!(err.code(), Some(RpcCode::Unknown));
        assert!(!err.is_retriable());
        assert_eq!(
            err.to_string(),
            "rpc error: code = Unknown desc = failed to pull and unpack image \
             \"docker.io/library/nosuch:1.0\": failed to resolve reference \
             \"docker.io/library/nosuch:1.0\": docker.io/library/nosuch:1.0: not found"
        );
        assert_eq!(fake.image_status(&spec("nosuch:1.0"), false).unwrap(), None);
        assert_eq!(
            fake.calls(),
            vec![
                Call::PullImage("nosuch:1.0".into()),
                Call::ImageStatus("nosuch:1.0".into())
            ]
        );
    }

    #[test]
    fn pulled_images_are_listed_found_and_removed() {
        let fake = FakeRuntime::new();
        fake.add_image("busybox");
        assert_eq!(fake.image_status(&spec("busybox"), false).unwrap(), None);
        let id = fake.pull_image(&spec("busybox"), None, None).unwrap();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        // Pulling again gives the same reference.
        assert_eq!(
            fake.pull_image(&spec("docker.io/library/busybox:latest"), None, None)
                .unwrap(),
            id
        );

        for reference in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox",
            id.as_str(),
        ] {
            let image = fake.image_status(&spec(reference), false).unwrap().unwrap();
            assert_eq!(image.id, id, "{reference}");
            assert_eq!(
                image.repo_tags.to_vec(),
                vec!["docker.io/library/busybox:latest"]
            );
            assert!(image.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
            assert!(image.size > 0);
        }
        let digest = fake.list_images(None).unwrap()[0].repo_digests[0].clone();
        assert!(fake.image_status(&spec(&digest), false).unwrap().is_some());

        let mut filter = api::ImageFilter::new();
        filter.set_image(spec("busybox"));
        assert_eq!(fake.list_images(Some(&filter)).unwrap().len(), 1);
        filter.set_image(spec("nginx"));
        assert!(fake.list_images(Some(&filter)).unwrap().is_empty());

        fake.remove_image(&spec("busybox")).unwrap();
        fake.remove_image(&spec("busybox")).unwrap(); // idempotent
        assert!(fake.list_images(None).unwrap().is_empty());
    }

    #[test]
    fn preloaded_images_need_no_pull_and_count_in_fs_info() {
        let fake = FakeRuntime::new();
        let pause = fake.preload_image("registry.k8s.io/pause:3.6");
        let busybox = fake.preload_image("docker.io/library/busybox:local");
        assert_ne!(pause, busybox);
        // Present on the node, but no registry has it.
        assert!(fake
            .pull_image(&spec("registry.k8s.io/pause:3.6"), None, None)
            .is_err());
        let images = fake.list_images(None).unwrap();
        assert_eq!(images.len(), 2);
        let info = fake.image_fs_info().unwrap();
        let fs = &info.get_image_filesystems()[0];
        assert_eq!(
            fs.get_used_bytes().value,
            images.iter().map(|i| i.size).sum::<u64>()
        );
        assert!(fs.timestamp > 0);
        assert!(!fs.get_fs_id().mountpoint.is_empty());
    }
}
