//! `runtime.v1.ImageService` over [`RemoteRuntime`]: listing, status, pulls (with their
//! long deadline, see the parent module docs) and removal of images.

use super::{RemoteRuntime, PULL_TIMEOUT_FLOOR};
use crate::cri::{api, CriError, ImageService};

impl ImageService for RemoteRuntime {
    fn list_images(&self, filter: Option<&api::ImageFilter>) -> Result<Vec<api::Image>, CriError> {
        let mut req = api::ListImagesRequest::new();
        if let Some(filter) = filter {
            req.set_filter(filter.clone());
        }
        let resp = self.call("ListImages", self.read_timeout(), |opt| {
            self.images.list_images_opt(&req, opt)
        })?;
        Ok(resp.images.into_vec())
    }

    fn image_status(
        &self,
        image: &api::ImageSpec,
        verbose: bool,
    ) -> Result<Option<api::Image>, CriError> {
        let mut req = api::ImageStatusRequest::new();
        req.set_image(image.clone());
        req.verbose = verbose;
        let resp = self.call("ImageStatus", self.read_timeout(), |opt| {
            self.images.image_status_opt(&req, opt)
        })?;
        let image = resp.image.into_option();
        if image.as_ref().is_some_and(|i| i.id.is_empty()) {
            return Err(CriError::InvalidResponse {
                method: "ImageStatus",
                field: "image.id",
            });
        }
        Ok(image)
    }

    fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut req = api::PullImageRequest::new();
        req.set_image(image.clone());
        if let Some(auth) = auth {
            req.set_auth(auth.clone());
        }
        if let Some(config) = sandbox_config {
            req.set_sandbox_config(config.clone());
        }
        let deadline = self.request_timeout.max(PULL_TIMEOUT_FLOOR);
        let resp = self.call("PullImage", deadline, |opt| {
            self.images.pull_image_opt(&req, opt)
        })?;
        if resp.image_ref.is_empty() {
            return Err(CriError::InvalidResponse {
                method: "PullImage",
                field: "image_ref",
            });
        }
        Ok(resp.image_ref)
    }

    fn remove_image(&self, image: &api::ImageSpec) -> Result<(), CriError> {
        let mut req = api::RemoveImageRequest::new();
        req.set_image(image.clone());
        self.call("RemoveImage", self.request_timeout, |opt| {
            self.images.remove_image_opt(&req, opt)
        })
        .map(|_| ())
    }

    fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, CriError> {
        let req = api::ImageFsInfoRequest::new();
        self.call("ImageFsInfo", self.read_timeout(), |opt| {
            self.images.image_fs_info_opt(&req, opt)
        })
    }
}
